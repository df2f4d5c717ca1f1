/*
 * Unit tests of util/proxyhdr.c: PROXY protocol headers, version 1 and 2,
 * parsed whole, cut at every byte, followed by SMTP bytes, and written.
 */
#include "util/util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

/* v2 signature, then version/command, family/protocol, length. */
#define SIG	"\r\n\r\n\0\r\nQUIT\n"
#define V2(cmd, fam, hi, lo)	SIG cmd fam hi lo

struct pp_case {
	const char	*name;
	const char	*in;
	size_t		 len;		/* 0: strlen(in) */
	int		 rc;		/* whole input: 1 or -1 */
	enum util_proxyhdr_kind kind;
	const char	*src, *dst;
	unsigned	 sport, dport;
};

#define TXT(s)	s, 0
#define BIN(s)	s, sizeof(s) - 1

static const struct pp_case pp_good[] = {
	{ "v1 tcp4", TXT("PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n"), 1,
	    UTIL_PROXYHDR_TCP4, "192.0.2.1", "198.51.100.2", 56324, 25 },
	{ "v1 tcp6", TXT("PROXY TCP6 2001:DB8::1 2001:db8::2 0 65535\r\n"), 1,
	    UTIL_PROXYHDR_TCP6, "2001:db8::1", "2001:db8::2", 0, 65535 },
	{ "v1 unknown", TXT("PROXY UNKNOWN\r\n"), 1, UTIL_PROXYHDR_LOCAL,
	    "", "", 0, 0 },
	{ "v1 unknown with junk", TXT("PROXY UNKNOWN what ever 1 2\r\n"), 1,
	    UTIL_PROXYHDR_LOCAL, "", "", 0, 0 },
	{ "v1 107 bytes", TXT("PROXY UNKNOWN "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"), 1,
	    UTIL_PROXYHDR_LOCAL, "", "", 0, 0 },
	{ "v2 tcp4", BIN(V2("\x21", "\x11", "\x00", "\x0c")
	    "\xc0\x00\x02\x01" "\xc6\x33\x64\x02" "\xdc\x04" "\x00\x19"), 1,
	    UTIL_PROXYHDR_TCP4, "192.0.2.1", "198.51.100.2", 56324, 25 },
	{ "v2 tcp6", BIN(V2("\x21", "\x21", "\x00", "\x24")
	    "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01"
	    "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x02" "\xff\xff" "\x01\xbb"),
	    1, UTIL_PROXYHDR_TCP6, "2001:db8::1", "2001:db8::2", 65535, 443 },
	{ "v2 tcp4 with TLVs", BIN(V2("\x21", "\x11", "\x00", "\x1a")
	    "\x0a\x00\x00\x07" "\x0a\x00\x00\x01" "\x30\x39" "\x00\x19"
	    "\x02\x00\x0b" "mx.test.org"), 1,
	    UTIL_PROXYHDR_TCP4, "10.0.0.7", "10.0.0.1", 12345, 25 },
	{ "v2 local", BIN(V2("\x20", "\x00", "\x00", "\x00")), 1,
	    UTIL_PROXYHDR_LOCAL, "", "", 0, 0 },
	{ "v2 local with addresses", BIN(V2("\x20", "\x11", "\x00", "\x0c")
	    "\xc0\x00\x02\x01" "\xc6\x33\x64\x02" "\xdc\x04" "\x00\x19"), 1,
	    UTIL_PROXYHDR_LOCAL, "", "", 0, 0 },
	{ "v2 unspec", BIN(V2("\x21", "\x00", "\x00", "\x00")), 1,
	    UTIL_PROXYHDR_LOCAL, "", "", 0, 0 },
	{ "v2 udp4", BIN(V2("\x21", "\x12", "\x00", "\x0c")
	    "\xc0\x00\x02\x01" "\xc6\x33\x64\x02" "\xdc\x04" "\x00\x19"), 1,
	    UTIL_PROXYHDR_LOCAL, "", "", 0, 0 },
};

static const struct pp_case pp_bad[] = {
	{ "smtp", TXT("EHLO client.example\r\n"), -1, 0, 0, 0, 0, 0 },
	{ "lower case", TXT("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), -1, 0, 0,
	    0, 0, 0 },
	{ "v1 bad protocol", TXT("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), -1,
	    0, 0, 0, 0, 0 },
	{ "v1 family mismatch", TXT("PROXY TCP4 2001:db8::1 1.2.3.4 1 2\r\n"),
	    -1, 0, 0, 0, 0, 0 },
	{ "v1 leading zero octet", TXT("PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n"),
	    -1, 0, 0, 0, 0, 0 },
	{ "v1 leading zero port", TXT("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"),
	    -1, 0, 0, 0, 0, 0 },
	{ "v1 port too big", TXT("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n"),
	    -1, 0, 0, 0, 0, 0 },
	{ "v1 extra field", TXT("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), -1,
	    0, 0, 0, 0, 0 },
	{ "v1 missing port", TXT("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), -1, 0,
	    0, 0, 0, 0 },
	{ "v1 two spaces", TXT("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"), -1, 0,
	    0, 0, 0, 0 },
	{ "v1 trailing space", TXT("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), -1,
	    0, 0, 0, 0, 0 },
	{ "v1 bare LF", TXT("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), -1, 0, 0, 0,
	    0, 0 },
	{ "v1 bare CR", TXT("PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n"), -1, 0, 0,
	    0, 0, 0 },
	{ "v1 108 bytes", TXT("PROXY UNKNOWN "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 655350\r\n"), -1, 0,
	    0, 0, 0, 0 },
	{ "v1 NUL", BIN("PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n"), -1, 0, 0, 0,
	    0, 0 },
	{ "v2 version 1", BIN(V2("\x11", "\x11", "\x00", "\x00")), -1, 0, 0,
	    0, 0, 0 },
	{ "v2 command 2", BIN(V2("\x22", "\x11", "\x00", "\x00")), -1, 0, 0,
	    0, 0, 0 },
	{ "v2 family 4", BIN(V2("\x21", "\x41", "\x00", "\x00")), -1, 0, 0,
	    0, 0, 0 },
	{ "v2 protocol 3", BIN(V2("\x21", "\x13", "\x00", "\x00")), -1, 0, 0,
	    0, 0, 0 },
	{ "v2 over the bound", BIN(V2("\x21", "\x11", "\x07", "\xf1")), -1, 0,
	    0, 0, 0, 0 },
	{ "v2 tcp4 address block short", BIN(V2("\x21", "\x11", "\x00", "\x08")
	    "\xc0\x00\x02\x01" "\xc6\x33\x64\x02"), -1, 0, 0, 0, 0, 0 },
	{ "v2 tcp6 address block short", BIN(V2("\x21", "\x21", "\x00", "\x0c")
	    "\xc0\x00\x02\x01" "\xc6\x33\x64\x02" "\xdc\x04" "\x00\x19"), -1,
	    0, 0, 0, 0, 0 },
	{ "v2 wrong signature", BIN("\r\n\r\n\0\r\nQUIX\n" "\x21\x11\x00\x00"),
	    -1, 0, 0, 0, 0, 0 },
};

static size_t
pp_len(const struct pp_case *tc)
{
	return tc->len != 0 ? tc->len : strlen(tc->in);
}

static void
pp_check(const struct pp_case *tc, const char *in, size_t len, size_t cut)
{
	struct util_proxyhdr h;
	const char *why = NULL;
	int rc = util_proxyhdr_parse(in, len, &h, &why);

	if (rc != tc->rc)
		fail_msg("case \"%s\" (%zu of %zu bytes): got %d (%s), want %d",
		    tc->name, len, cut, rc, why != NULL ? why : "-", tc->rc);
	if (rc == -1 && why == NULL)
		fail_msg("case \"%s\": -1 without a reason", tc->name);
	if (rc != 1)
		return;
	if (h.len != cut || h.kind != tc->kind ||
	    (tc->kind != UTIL_PROXYHDR_LOCAL && (strcmp(h.src_ip, tc->src) != 0
	    || strcmp(h.dst_ip, tc->dst) != 0 || h.src_port != tc->sport ||
	    h.dst_port != tc->dport)))
		fail_msg("case \"%s\": got len=%zu kind=%d %s:%u -> %s:%u",
		    tc->name, h.len, h.kind, h.src_ip, h.src_port, h.dst_ip,
		    h.dst_port);
}

static void
test_parse_good(void **state)
{
	char buf[4096];

	(void)state;
	for (size_t i = 0; i < sizeof(pp_good) / sizeof(pp_good[0]); i++) {
		const struct pp_case *tc = &pp_good[i];
		size_t len = pp_len(tc);
		struct util_proxyhdr h;
		const char *why = NULL;

		pp_check(tc, tc->in, len, len);
		/* Every beginning is "more, please", never a verdict. */
		for (size_t cut = 0; cut < len; cut++) {
			int rc = util_proxyhdr_parse(tc->in, cut, &h, &why);
			if (rc != 0)
				fail_msg("case \"%s\" cut at %zu: got %d (%s), "
				    "want 0", tc->name, cut, rc,
				    why != NULL ? why : "-");
		}
		/* The client's own bytes after the header are not ours. */
		memcpy(buf, tc->in, len);
		memcpy(buf + len, "EHLO x\r\n", 8);
		pp_check(tc, buf, len + 8, len);
	}
}

static void
test_parse_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(pp_bad) / sizeof(pp_bad[0]); i++) {
		const struct pp_case *tc = &pp_bad[i];
		size_t len = pp_len(tc);
		struct util_proxyhdr h;
		const char *why = NULL;

		pp_check(tc, tc->in, len, len);
		/* A beginning is never taken for a whole header. */
		for (size_t cut = 0; cut < len; cut++)
			if (util_proxyhdr_parse(tc->in, cut, &h, &why) == 1)
				fail_msg("case \"%s\" cut at %zu: a header",
				    tc->name, cut);
	}
}

static void
test_write(void **state)
{
	static const struct util_proxyhdr hs[] = {
		{ .kind = UTIL_PROXYHDR_TCP4, .src_ip = "192.0.2.1",
		    .dst_ip = "198.51.100.2", .src_port = 56324, .dst_port = 25 },
		{ .kind = UTIL_PROXYHDR_TCP6, .src_ip = "2001:db8::1",
		    .dst_ip = "::1", .src_port = 1, .dst_port = 587 },
		{ .kind = UTIL_PROXYHDR_LOCAL },
	};
	unsigned char buf[256];
	struct util_proxyhdr back;
	const char *why = NULL;
	size_t n;

	(void)state;
	n = util_proxyhdr_write(&hs[0], 1, buf, sizeof(buf));
	assert_int_equal(n, 44);
	assert_memory_equal(buf, "PROXY TCP4 192.0.2.1 198.51.100.2 56324 "
	    "25\r\n", n);
	n = util_proxyhdr_write(&hs[2], 1, buf, sizeof(buf));
	assert_memory_equal(buf, "PROXY UNKNOWN\r\n", n);
	n = util_proxyhdr_write(&hs[0], 2, buf, sizeof(buf));
	assert_int_equal(n, 28);
	assert_memory_equal(buf, V2("\x21", "\x11", "\x00", "\x0c")
	    "\xc0\x00\x02\x01" "\xc6\x33\x64\x02" "\xdc\x04" "\x00\x19", n);
	for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
		for (int v = 1; v <= 2; v++) {
			n = util_proxyhdr_write(&hs[i], v, buf, sizeof(buf));
			if (n == 0 || util_proxyhdr_parse(buf, n, &back,
			    &why) != 1 || back.len != n || back.version != v ||
			    back.kind != hs[i].kind ||
			    strcmp(back.src_ip, hs[i].src_ip) != 0 ||
			    strcmp(back.dst_ip, hs[i].dst_ip) != 0 ||
			    back.src_port != hs[i].src_port ||
			    back.dst_port != hs[i].dst_port)
				fail_msg("case %zu v%d: no round trip", i, v);
			/* One byte short of room: nothing written. */
			if (util_proxyhdr_write(&hs[i], v, buf, n - (v == 1 ?
			    0 : 1)) != 0)
				fail_msg("case %zu v%d: wrote into too small a "
				    "buffer", i, v);
		}
	struct util_proxyhdr wrong = hs[0];
	util_strlcpy(wrong.src_ip, "2001:db8::1", sizeof(wrong.src_ip));
	assert_int_equal(util_proxyhdr_write(&wrong, 2, buf, sizeof(buf)), 0);
	assert_int_equal(util_proxyhdr_write(&hs[0], 3, buf, sizeof(buf)), 0);
}

/*
 * What a sender writes for a client's addresses (a proxy's upstream): the
 * family from the addresses, LOCAL/UNKNOWN when they are of two families,
 * not numeric, or a port is out of range.
 */
static void
test_set(void **state)
{
	static const struct {
		const char	*name, *src;
		int		 sport;
		const char	*dst;
		int		 dport;
		const char	*want_v1;
		size_t		 want_v2_len;
	} cases[] = {
		{ "IPv4", "192.0.2.7", 54321, "127.0.0.1", 25,
		    "PROXY TCP4 192.0.2.7 127.0.0.1 54321 25\r\n", 28 },
		{ "IPv6", "2001:db8::1", 1, "::1", 2525,
		    "PROXY TCP6 2001:db8::1 ::1 1 2525\r\n", 52 },
		{ "two families", "192.0.2.7", 1, "::1", 25,
		    "PROXY UNKNOWN\r\n", 16 },
		{ "no local address", "192.0.2.7", 1, NULL, 25,
		    "PROXY UNKNOWN\r\n", 16 },
		{ "a name", "localhost", 1, "127.0.0.1", 25,
		    "PROXY UNKNOWN\r\n", 16 },
		{ "port out of range", "192.0.2.7", 65536, "127.0.0.1", 25,
		    "PROXY UNKNOWN\r\n", 16 },
	};
	char buf[UTIL_PROXYHDR_V1_MAX + 1];
	struct util_proxyhdr h;
	size_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		util_proxyhdr_set(&h, cases[i].src, cases[i].sport,
		    cases[i].dst, cases[i].dport);
		n = util_proxyhdr_write(&h, 1, buf, sizeof(buf));
		if (n != strlen(cases[i].want_v1) ||
		    memcmp(buf, cases[i].want_v1, n) != 0)
			fail_msg("case \"%s\" v1: got %.*s", cases[i].name,
			    (int)n, buf);
		n = util_proxyhdr_write(&h, 2, buf, sizeof(buf));
		if (n != cases[i].want_v2_len)
			fail_msg("case \"%s\" v2: got %zu bytes, want %zu",
			    cases[i].name, n, cases[i].want_v2_len);
	}
	/* v2, IPv4: every byte; IPv6: its family byte and ports. */
	util_proxyhdr_set(&h, "192.0.2.7", 54321, "127.0.0.1", 25);
	n = util_proxyhdr_write(&h, 2, buf, sizeof(buf));
	assert_memory_equal(buf, V2("\x21", "\x11", "\x00", "\x0c")
	    "\xc0\x00\x02\x07" "\x7f\x00\x00\x01" "\xd4\x31" "\x00\x19", n);
	util_proxyhdr_set(&h, "2001:db8::1", 1, "::1", 2525);
	n = util_proxyhdr_write(&h, 2, buf, sizeof(buf));
	assert_int_equal((unsigned char)buf[13], 0x21);
	assert_int_equal((unsigned char)buf[48], 0);
	assert_int_equal((unsigned char)buf[49], 1);
	assert_int_equal(util_proxyhdr_write(&h, 2, buf, 20), 0);
	util_proxyhdr_set(&h, "192.0.2.7", 1, "::1", 25);
	n = util_proxyhdr_write(&h, 2, buf, sizeof(buf));
	assert_memory_equal(buf, V2("\x20", "\x00", "\x00", "\x00"), n);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_good),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_write),
		cmocka_unit_test(test_set),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
