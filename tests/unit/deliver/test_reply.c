/*
 * Unit tests of deliver/reply.c: reply lines gathered into replies, the
 * refusals of what is no reply, and the extensions of an EHLO reply.
 */
#include "deliver/deliver_private.h"
#include "util/util.h"

#include <stdio.h>
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
		    "250-mx.example SIZE 10 PIPELINING" },
		{ "code alone", { "354" }, 1, 354, "354" },
		{ "more to come", { "220-hello" }, 0, 220, "220-hello" },
		{ "mixed codes", { "250-a", "550 b" }, -1, 0, NULL },
		{ "not a code", { "hello" }, -1, 0, NULL },
		{ "1xx", { "199 x" }, -1, 0, NULL },
		{ "no separator", { "2501" }, -1, 0, NULL },
		{ "escaped text", { "550 5.1.1 \x01\xff" }, 1, 550,
		    "550 5.1.1 \\x01\\xff" },
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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_lines),
		cmocka_unit_test(test_caps),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
