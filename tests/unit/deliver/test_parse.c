/*
 * Unit tests of what the outbound side parses without a socket: reply
 * lines gathered into replies and the extensions of an EHLO reply
 * (deliver/reply.c), "mx-hosts" values and DNS MX answers (deliver/mx.c).
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static void
test_reply_lines(void **state)
{
	static const struct {
		const char	*name;
		const char	*lines[4];	/* NULL-terminated */
		int		 rc;		/* of the last line */
		int		 code;
		const char	*text;
	} cases[] = {
		{ "one line", { "250 2.0.0 ok" }, 1, 250, "250 2.0.0 ok" },
		{ "multi-line joined", { "250-mx.example", "250-SIZE 10",
		    "250 PIPELINING" }, 1, 250,
		    "250-mx.example 250-SIZE 10 250 PIPELINING" },
		{ "code alone", { "354" }, 1, 354, "354" },
		{ "more to come", { "220-hello" }, 0, 220, "220-hello" },
		{ "mixed codes", { "250-a", "550 b" }, -1, 0, NULL },
		{ "not a code", { "hello" }, -1, 0, NULL },
		{ "1xx", { "199 x" }, -1, 0, NULL },
		{ "no separator", { "2501" }, -1, 0, NULL },
		/* Kept as written: who shows it escapes it its own way. */
		{ "raw text", { "550 5.1.1 \x01\xff" }, 1, 550,
		    "550 5.1.1 \x01\xff" },
		{ "quotes, UTF-8, backslash", { "550-5.1.1 <\"j s\"@r.test>:",
		    "550 see caf\xc3\xa9 \\help" }, 1, 550,
		    "550-5.1.1 <\"j s\"@r.test>: 550 see caf\xc3\xa9 \\help" },
	};
	struct smtpc_reply r = { 0 };

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *why = NULL;
		int rc = 0;
		smtpc_reply_reset(&r);
		for (size_t k = 0; k < 4 && cases[i].lines[k] != NULL &&
		    rc == 0; k++)
			rc = smtpc_reply_line(&r, cases[i].lines[k],
			    strlen(cases[i].lines[k]) + 2, &why);
		if (rc != cases[i].rc || (rc == -1 && why == NULL) ||
		    (rc != -1 && (r.code != cases[i].code ||
		    strcmp(r.text, cases[i].text) != 0)))
			fail_msg("case \"%s\": got %d %d \"%s\"", cases[i].name,
			    rc, r.code, r.text);
	}
	/* A line that ends within 8 octets of the text's room: the next
	   one is cut off, not written into too small a rest. */
	char first[600];
	snprintf(first, sizeof(first), "250-%0502d", 0);
	smtpc_reply_reset(&r);
	assert_int_equal(smtpc_reply_line(&r, first, strlen(first) + 2,
	    &(const char *){ NULL }), 0);
	assert_int_equal(smtpc_reply_line(&r, "250 \x01 more", 14,
	    &(const char *){ NULL }), 1);
	assert_int_equal(strncmp(r.text, first, 506), 0);
	assert_true(strlen(r.text) < sizeof(r.text));
	/* A long reply's text is cut, never overrun. */
	smtpc_reply_reset(&r);
	for (int k = 0; k < 100; k++)
		assert_int_equal(smtpc_reply_line(&r, "250-xxxxxxxxxxxxxxxxxxx",
		    25, &(const char *){ NULL }), 0);
	assert_true(strlen(r.text) < sizeof(r.text));
	/* The cut, marked "...", is never inside a UTF-8 character. */
	snprintf(first, sizeof(first), "550 %0503d\xc3\xa9zz", 0);
	smtpc_reply_reset(&r);
	assert_int_equal(smtpc_reply_line(&r, first, strlen(first) + 2,
	    &(const char *){ NULL }), 1);
	assert_int_equal(strlen(r.text), 507 + 3);
	assert_string_equal(r.text + 505, "00...");
	util_buf_clear(&r.lines);
}

static void
test_caps(void **state)
{
	static const char ehlo[] = "250-mx.example PIPELINING\n"
	    "250-pipelining\n250-SIZE 1000\n250-AUTH=LOGIN\n"
	    "250-AUTH CRAM-MD5 plain\n250-8BITMIME\n250-SMTPUTF8\n"
	    "250 STARTTLS\n";
	struct smtpc_caps c;

	(void)state;
	smtpc_caps_parse(ehlo, strlen(ehlo), &c);
	assert_true(c.pipelining && c.starttls && c.eightbitmime &&
	    c.smtputf8 && c.auth_plain && c.auth_login && c.has_size);
	assert_int_equal(c.size_max, 1000);
	/* The greeting line announces nothing. */
	smtpc_caps_parse("250 STARTTLS\n", 13, &c);
	assert_false(c.starttls);
	smtpc_caps_parse("250-x\n250 SIZE\n", 15, &c);
	assert_true(c.has_size);
	assert_int_equal(c.size_max, 0);
	smtpc_caps_parse(NULL, 0, &c);
	assert_false(c.pipelining);
}

static void
test_mx_hosts_values(void **state)
{
	static const struct {
		const char	*name, *value;
		int		 rc;
		const char	*want;	/* "pref name port;..." */
	} cases[] = {
		{ "sorted", "20 b.test:2602, 10 127.0.0.1, [::1]:26", 0,
		    "0 ::1 26;10 127.0.0.1 25;20 b.test 2602;" },
		{ "bare IPv6", "::1", 0, "0 ::1 25;" },
		{ "an address, not a preference", "127.0.0.1 ", 0,
		    "0 127.0.0.1 25;" },
		{ "preference over 16 bits", "99999999999 a.test", -1, NULL },
		{ "preference 65536", "65536 a.test", -1, NULL },
		{ "port that wraps to 25", "a.test:4294967321", -1, NULL },
		{ "port with junk", "a.test:25x", -1, NULL },
		{ "port 0", "a.test:0", -1, NULL },
		{ "no host", "10 , ", -1, NULL },
		{ "unclosed bracket", "[::1:25", -1, NULL },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct deliver_mx_host *h = NULL;
		const char *err = NULL;
		char got[256] = "";
		size_t n = 0, o = 0;
		int rc = deliver_mx_hosts(cases[i].value, 25, &h, &n, &err);
		for (size_t k = 0; rc == 0 && k < n; k++)
			o += (size_t)snprintf(got + o, sizeof(got) - o,
			    "%d %s %d;", h[k].pref, h[k].name, h[k].port);
		if (rc != cases[i].rc || (rc == -1 && err == NULL) ||
		    (rc == 0 && strcmp(got, cases[i].want) != 0))
			fail_msg("case \"%s\": got %d \"%s\"", cases[i].name,
			    rc, got);
		free(h);
	}
}

static void
test_mx_answer(void **state)
{
	/* example.org MX 10 mx.example.org, MX 5 (compressed) example.org */
	static const unsigned char ans[] = {
	    0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0,
	    7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'o', 'r', 'g', 0, 0, 15,
	    0, 1,
	    0xc0, 12, 0, 15, 0, 1, 0, 0, 1, 44, 0, 7, 0, 10, 2, 'm', 'x',
	    0xc0, 12,
	    0xc0, 12, 0, 15, 0, 1, 0, 0, 1, 44, 0, 4, 0, 5, 0xc0, 12 };
	struct deliver_mx_host *h = NULL;
	size_t n = 0;

	(void)state;
	assert_int_equal(deliver_mx_answer(ans, sizeof(ans), &h, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(h[0].pref, 5);
	assert_string_equal(h[0].name, "example.org");
	assert_string_equal(h[1].name, "mx.example.org");
	free(h);
	/* Cut anywhere: malformed, or a header with no records. */
	for (size_t cut = 0; cut < sizeof(ans); cut++) {
		h = NULL;
		int rc = deliver_mx_answer(ans, cut, &h, &n);
		if (rc != -1)
			fail_msg("case \"cut at %zu\": got %d", cut, rc);
		free(h);
	}
}

/*
 * 33 MX records, the best (preference 1) listed last: the 32 most
 * preferred are kept, not the first 32 listed; and an answer with the TC
 * bit is not taken for the whole set.
 */
static void
test_mx_answer_many(void **state)
{
	unsigned char ans[1024];
	size_t len = 0;
	static const unsigned char head[] = {
	    0x12, 0x34, 0x81, 0x80, 0, 1, 0, 33, 0, 0, 0, 0,
	    7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'o', 'r', 'g', 0, 0, 15,
	    0, 1 };
	struct deliver_mx_host *h = NULL;
	size_t n = 0;

	(void)state;
	memcpy(ans, head, sizeof(head));
	len = sizeof(head);
	for (int i = 0; i < 33; i++) {
		int pref = i < 32 ? 50 + i : 1;
		unsigned char rr[] = { 0xc0, 12, 0, 15, 0, 1, 0, 0, 1, 44, 0,
		    7, (unsigned char)(pref >> 8), (unsigned char)pref, 2,
		    'h', (unsigned char)('A' + i), 0xc0, 12 };
		memcpy(ans + len, rr, sizeof(rr));
		len += sizeof(rr);
	}
	assert_int_equal(deliver_mx_answer(ans, len, &h, &n), 0);
	assert_int_equal(n, 32);
	assert_int_equal(h[0].pref, 1);
	assert_string_equal(h[0].name, "ha.example.org");	/* 'A' + 32 */
	assert_int_equal(h[31].pref, 80);
	free(h);
	ans[2] |= 0x02;		/* TC */
	h = NULL;
	assert_int_equal(deliver_mx_answer(ans, len, &h, &n), -1);
	free(h);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_lines),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_mx_hosts_values),
		cmocka_unit_test(test_mx_answer),
		cmocka_unit_test(test_mx_answer_many),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
