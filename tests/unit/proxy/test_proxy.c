/*
 * Unit tests of proxy/'s pure parts: the upstream reply reader (fed at
 * every split point), the EHLO filter, and the PROXY protocol header.
 */
#include "proxy/proxy_private.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

/* Feed in[0..len) cut at cut; rc of the last feed, the octets taken. */
static int
feed_cut(struct proxy_reply *r, const char *in, size_t len, size_t cut,
    size_t *taken)
{
	size_t used;
	int rc = proxy_reply_feed(r, in, cut, &used);

	*taken = used;
	if (rc != 0)
		return rc;
	rc = proxy_reply_feed(r, in + cut, len - cut, &used);
	*taken += used;
	return rc;
}

static void
test_reply_cases(void **state)
{
	char longl[700], endless[PROXY_REPLY_RAW_MAX + 10], many[4000];
	char cut510[520];
	static const char *const bad_code = "2x0 no\r\n";
	const struct {
		const char	*name;
		const char	*in;
		int		 rc;
		int		 code;
		const char	*wire;	/* NULL: as in */
		size_t		 taken;	/* 0: all */
	} cases[] = {
		{ "one line", "250 ok\r\n", 1, 250, NULL, 0 },
		{ "multi-line", "250-a b\r\n250-PIPELINING\r\n250 SIZE 10\r\n",
		  1, 250, NULL, 0 },
		{ "bare code", "250\r\n", 1, 250, NULL, 0 },
		{ "code and space", "250 \r\n", 1, 250, NULL, 0 },
		{ "bare LF is a line end", "250-a\n250 b\n", 1, 250,
		  "250-a\r\n250 b\r\n", 0 },
		{ "control and 8-bit bytes", "550 a\x01\x7f\xc3\xa9\tb\r\n", 1,
		  550, "550 a????\tb\r\n", 0 },
		{ "bare CR inside", "550 a\rb\r\n", 1, 550, "550 a?b\r\n", 0 },
		{ "two replies", "250 a\r\n354 b\r\n", 1, 250, "250 a\r\n",
		  7 },
		{ "not finished", "250-a\r\n250 b", 0, 250, "250-a\r\n", 0 },
		{ "codes differ", "250-a\r\n251 b\r\n", -1, 0, NULL, 0 },
		{ "no code", "hello\r\n", -1, 0, NULL, 0 },
		{ "bad code", bad_code, -1, 0, NULL, 0 },
		{ "1xx", "199 x\r\n", -1, 0, NULL, 0 },
		{ "bad separator", "250x\r\n", -1, 0, NULL, 0 },
		{ "long line cut", longl, 1, 250, cut510, 0 },
		{ "endless line", endless, -1, 0, NULL, 0 },
		{ "too many lines", many, -1, 0, NULL, 0 },
	};

	(void)state;
	memset(longl, 'x', sizeof(longl));
	memcpy(longl, "250 ", 4);
	memcpy(longl + sizeof(longl) - 3, "\r\n", 3);
	memcpy(cut510, longl, 510);
	memcpy(cut510 + 510, "\r\n", 3);
	memset(endless, 'y', sizeof(endless) - 1);
	memcpy(endless, "250 ", 4);
	endless[sizeof(endless) - 1] = '\0';
	many[0] = '\0';
	for (int i = 0; i <= PROXY_REPLY_LINES_MAX + 1 &&
	    strlen(many) + 10 < sizeof(many); i++)
		strcat(many, "250-x\r\n");
	for (size_t i = 0; i < NELEM(cases); i++) {
		size_t len = strlen(cases[i].in);
		for (size_t cut = 0; cut <= len; cut++) {
			struct proxy_reply r = { 0 };
			size_t taken;
			proxy_reply_init(&r);
			int rc = feed_cut(&r, cases[i].in, len, cut, &taken);
			if (rc != cases[i].rc)
				fail_msg("case \"%s\" cut %zu: rc %d, want %d "
				    "(%s)", cases[i].name, cut, rc,
				    cases[i].rc, r.err != NULL ? r.err : "");
			if (rc == 1) {
				const char *want = cases[i].wire != NULL ?
				    cases[i].wire : cases[i].in;
				assert_int_equal(r.code, cases[i].code);
				if (r.wire.len != strlen(want) ||
				    memcmp(r.wire.data, want, r.wire.len) != 0)
					fail_msg("case \"%s\" cut %zu: wire "
					    "\"%.*s\"", cases[i].name, cut,
					    (int)r.wire.len, r.wire.data);
				assert_int_equal(taken, cases[i].taken != 0 ?
				    cases[i].taken : len);
			}
			if (rc == 0 && cases[i].wire != NULL)
				assert_memory_equal(r.wire.data,
				    cases[i].wire, strlen(cases[i].wire));
			if (rc == -1)
				assert_non_null(r.err);
			proxy_reply_clear(&r);
		}
	}
}

/* A reply's lines one by one; a reader goes on with the next reply. */
static void
test_reply_text_and_reuse(void **state)
{
	struct proxy_reply r = { 0 };
	const char *in = "250-mx.example hi\r\n250-SIZE 5\r\n250 8BITMIME\r\n"
	    "221 bye\r\n";
	const char *t;
	size_t n, used;

	(void)state;
	proxy_reply_init(&r);
	assert_int_equal(proxy_reply_feed(&r, in, strlen(in), &used), 1);
	assert_int_equal(r.nlines, 3);
	assert_true(proxy_reply_text(&r, 0, &t, &n));
	assert_int_equal(n, 13);
	assert_memory_equal(t, "mx.example hi", n);
	assert_true(proxy_reply_text(&r, 2, &t, &n));
	assert_memory_equal(t, "8BITMIME", n);
	assert_false(proxy_reply_text(&r, 3, &t, &n));
	proxy_reply_init(&r);
	assert_int_equal(proxy_reply_feed(&r, in + used, strlen(in) - used,
	    &used), 1);
	assert_int_equal(r.code, 221);
	proxy_reply_clear(&r);
}

static void
parse_reply(struct proxy_reply *r, const char *in)
{
	size_t used;

	proxy_reply_init(r);
	assert_int_equal(proxy_reply_feed(r, in, strlen(in), &used), 1);
}

static void
test_ehlo_filter(void **state)
{
	static const char *const up = "250-back.example at your service\r\n"
	    "250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n"
	    "250-STARTTLS\r\n250-AUTH PLAIN LOGIN CRAM-MD5\r\n"
	    "250-AUTH=PLAIN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
	    "250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
	const struct {
		const char		*name;
		const char		*in;
		struct proxy_ehlo_opts	 o;
		const char		*want;
	} cases[] = {
		{ "plain", up, { .size_max = 36700160 },
		  "250-back.example at your service\r\n250-PIPELINING\r\n"
		  "250-SIZE 10240000\r\n250-ENHANCEDSTATUSCODES\r\n"
		  "250-8BITMIME\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n" },
		{ "ours: STARTTLS, AUTH, a smaller SIZE", up, { .starttls =
		  true, .auth = true, .size_max = 1000 },
		  "250-back.example at your service\r\n250-PIPELINING\r\n"
		  "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
		  "250-CHUNKING\r\n250-SIZE 1000\r\n250-STARTTLS\r\n"
		  "250 AUTH PLAIN LOGIN\r\n" },
		{ "no AUTH upstream: none offered", "250-b\r\n250 8BITMIME\r\n",
		  { .auth = true }, "250-b\r\n250 8BITMIME\r\n" },
		{ "one line", "250 b.example\r\n", { 0 }, "250 b.example\r\n" },
		{ "SIZE without a number", "250-b\r\n250 SIZE\r\n",
		  { .size_max = 5000 }, "250-b\r\n250 SIZE 5000\r\n" },
		{ "lower case kept as it was", "250-b\r\n250 pipelining\r\n",
		  { 0 }, "250-b\r\n250 pipelining\r\n" },
	};

	(void)state;
	for (size_t i = 0; i < NELEM(cases); i++) {
		struct proxy_reply r = { 0 };
		struct util_buf out = { 0 };
		parse_reply(&r, cases[i].in);
		proxy_ehlo_filter(&r, &cases[i].o, &out);
		if (strcmp(util_buf_cstr(&out), cases[i].want) != 0)
			fail_msg("case \"%s\": got\n%s", cases[i].name,
			    util_buf_cstr(&out));
		util_buf_clear(&out);
		proxy_reply_clear(&r);
	}
}

static void
test_caps(void **state)
{
	struct proxy_reply r = { 0 };
	struct proxy_caps c;

	(void)state;
	parse_reply(&r, "250-b\r\n250-starttls\r\n250-AUTH=LOGIN\r\n"
	    "250-SIZE 77\r\n250 CHUNKING\r\n");
	proxy_caps_parse(&r, &c);
	assert_true(c.esmtp && c.starttls && c.auth_login && c.chunking);
	assert_false(c.auth_plain || c.pipelining || c.eightbit);
	assert_true(c.has_size);
	assert_int_equal(c.size_max, 77);
	parse_reply(&r, "502 5.5.1 EHLO not here\r\n");
	proxy_caps_parse(&r, &c);
	assert_false(c.esmtp || c.starttls);
	proxy_reply_clear(&r);
}

static void
test_proxy_header(void **state)
{
	static const unsigned char v2_4[] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00,
	    0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0x00, 0x0c,
	    192, 0, 2, 7, 127, 0, 0, 1, 0xd4, 0x31, 0x00, 0x19 };
	static const unsigned char v2_local[] = { 0x0d, 0x0a, 0x0d, 0x0a,
	    0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x20, 0x00, 0x00,
	    0x00 };
	struct proxy_hdr_addrs a4 = { "192.0.2.7", 54321, "127.0.0.1", 25 };
	struct proxy_hdr_addrs a6 = { "2001:db8::1", 1, "::1", 2525 };
	struct proxy_hdr_addrs mixed = { "192.0.2.7", 1, "::1", 25 };
	char buf[PROXY_HEADER_MAX];
	size_t n;

	(void)state;
	n = proxy_header_make(1, &a4, buf, sizeof(buf));
	assert_int_equal(n, strlen("PROXY TCP4 192.0.2.7 127.0.0.1 54321 "
	    "25\r\n"));
	assert_memory_equal(buf, "PROXY TCP4 192.0.2.7 127.0.0.1 54321 25"
	    "\r\n", n);
	n = proxy_header_make(1, &a6, buf, sizeof(buf));
	assert_memory_equal(buf, "PROXY TCP6 2001:db8::1 ::1 1 2525\r\n", n);
	n = proxy_header_make(1, &mixed, buf, sizeof(buf));
	assert_memory_equal(buf, "PROXY UNKNOWN\r\n", n);
	n = proxy_header_make(2, &a4, buf, sizeof(buf));
	assert_int_equal(n, sizeof(v2_4));
	assert_memory_equal(buf, v2_4, n);
	n = proxy_header_make(2, &a6, buf, sizeof(buf));
	assert_int_equal(n, 16 + 36);
	assert_int_equal((unsigned char)buf[13], 0x21);
	assert_int_equal((unsigned char)buf[48], 0);
	assert_int_equal((unsigned char)buf[49], 1);
	n = proxy_header_make(2, &mixed, buf, sizeof(buf));
	assert_int_equal(n, sizeof(v2_local));
	assert_memory_equal(buf, v2_local, n);
	assert_int_equal(proxy_header_make(2, &a6, buf, 20), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_cases),
		cmocka_unit_test(test_reply_text_and_reuse),
		cmocka_unit_test(test_ehlo_filter),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_proxy_header),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
