/*
 * tests/unit/chain/test_milter.c: the milter codec (every reply fed at
 * every split point, malformed packets) and the header block edits a
 * filter asks for (chain_headers_edit), case by case.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "chain/chain.h"
#include "chain/milter.h"
#include "util/util.h"

/* ----- codec ----- */

static void
test_put_packets(void **state)
{
	struct util_buf b = { 0 };
	static const char optneg[] = { 0, 0, 0, 13, 'O', 0, 0, 0, 6,
	    0, 0, 0, 0x15, 0, 0x10, 0, 0x01 };
	static const char conn[] = { 0, 0, 0, 22, 'C', '[', '1', '.', '2',
	    '.', '3', '.', '4', ']', 0, '4', 0x01, 0xbb, '1', '.', '2', '.',
	    '3', '.', '4', 0 };
	const char *strs[] = { "Subject", "hi" };
	static const char hdr[] = { 0, 0, 0, 12, 'L', 'S', 'u', 'b', 'j',
	    'e', 'c', 't', 0, 'h', 'i', 0 };

	(void)state;
	milter_put_optneg(&b, 6, 0x15, 0x100001);
	assert_int_equal(b.len, sizeof(optneg));
	assert_memory_equal(b.data, optneg, sizeof(optneg));
	util_buf_reset(&b);
	milter_put_connect(&b, "[1.2.3.4]", "1.2.3.4", 443);
	assert_int_equal(b.len, sizeof(conn));
	assert_memory_equal(b.data, conn, sizeof(conn));
	util_buf_reset(&b);
	milter_put_strs(&b, MILTER_C_HEADER, strs, 2);
	assert_int_equal(b.len, sizeof(hdr));
	assert_memory_equal(b.data, hdr, sizeof(hdr));
	util_buf_reset(&b);
	milter_put(&b, MILTER_C_EOB, NULL, 0);
	assert_int_equal(b.len, 5);
	assert_memory_equal(b.data, "\0\0\0\1E", 5);
	util_buf_clear(&b);
}

static void
test_get_every_split(void **state)
{
	/* A CHGHEADER reply: index 2, "Subject", "new". */
	static const char pkt[] = { 0, 0, 0, 17, 'm', 0, 0, 0, 2, 'S', 'u',
	    'b', 'j', 'e', 'c', 't', 0, 'n', 'e', 'w', 0 };
	struct milter_reply r;
	const char *err = NULL, *s[2];
	size_t used;
	uint32_t idx;

	(void)state;
	for (size_t cut = 0; cut < sizeof(pkt); cut++) {
		int rc = milter_get(pkt, cut, &r, &used, &err);
		if (rc != 0)
			fail_msg("case \"cut at %zu\": got %d, want 0 (more)",
			    cut, rc);
	}
	assert_int_equal(milter_get(pkt, sizeof(pkt), &r, &used, &err), 1);
	assert_int_equal(used, sizeof(pkt));
	assert_int_equal(r.cmd, 'm');
	assert_int_equal(milter_get_u32(&r, &idx), 0);
	assert_int_equal(idx, 2);
	assert_int_equal(milter_get_strs(&r, 4, s, 2), 2);
	assert_string_equal(s[0], "Subject");
	assert_string_equal(s[1], "new");
	/* Two packets back to back: the first is taken alone. */
	char two[2 * sizeof(pkt)];
	memcpy(two, pkt, sizeof(pkt));
	memcpy(two + sizeof(pkt), pkt, sizeof(pkt));
	assert_int_equal(milter_get(two, sizeof(two), &r, &used, &err), 1);
	assert_int_equal(used, sizeof(pkt));
}

static void
test_get_malformed(void **state)
{
	static const struct { const char *name; char bytes[8]; size_t len; }
	    cases[] = {
		{ "zero length", { 0, 0, 0, 0, 'c' }, 5 },
		{ "over 1 MiB", { 0, 0x20, 0, 0, 'c' }, 5 },
		{ "4 GiB", { (char)0xff, (char)0xff, (char)0xff, (char)0xff },
		    4 },
	};
	struct milter_reply r;
	size_t used;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *err = NULL;
		int rc = milter_get(cases[i].bytes, cases[i].len, &r, &used,
		    &err);
		if (rc != -1 || err == NULL)
			fail_msg("case \"%s\": got %d, want -1 with a reason",
			    cases[i].name, rc);
	}
	/* Strings that do not end in NUL, or too many of them. */
	struct milter_reply u = { 'h', "Subject\0hi", 10 };
	const char *s[2];
	assert_int_equal(milter_get_strs(&u, 0, s, 2), -1);
	struct milter_reply three = { 'h', "a\0b\0c", 6 };
	assert_int_equal(milter_get_strs(&three, 0, s, 2), -1);
	struct milter_reply shortr = { 'i', "\0\0", 2 };
	uint32_t n;
	assert_int_equal(milter_get_u32(&shortr, &n), -1);
	assert_int_equal(milter_get_strs(&shortr, 5, s, 2), -1);
}

static void
test_get_replycode(void **state)
{
	static const struct {
		const char	*name, *data;
		size_t		 len;
		int		 code;		/* -1: refused */
		const char	*esc, *text;
	} cases[] = {
		{ "code esc text", "554 5.7.9 no thanks", 20, 554, "5.7.9",
		    "no thanks" },
		{ "first line counts", "451-4.2.2 one\r\n451 4.2.2 two", 29,
		    451, "4.2.2", "one" },
		{ "code alone", "550", 4, 550, "", "" },
		{ "esc of another class kept as text", "550 4.1.1 x", 12, 550,
		    "", "4.1.1 x" },
		{ "template made literal", "550 5.7.1 %{client.ip}", 23, 550,
		    "5.7.1", "%(client.ip}" },
		{ "2xx refused", "250 ok", 7, -1, NULL, NULL },
		{ "no NUL", "550 x", 5, -1, NULL, NULL },
		{ "short", "55", 3, -1, NULL, NULL },
		{ "no separator", "5501", 5, -1, NULL, NULL },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct milter_reply r = { 'y', cases[i].data, cases[i].len };
		struct milter_replycode rc;
		int got = milter_get_replycode(&r, &rc);
		if (cases[i].code == -1 ? got != -1 : got != 0 ||
		    rc.code != cases[i].code || strcmp(rc.esc,
		    cases[i].esc) != 0 || strcmp(rc.text, cases[i].text) != 0)
			fail_msg("case \"%s\": got %d (%d \"%s\" \"%s\")",
			    cases[i].name, got, rc.code, rc.esc, rc.text);
	}
}

static void
test_get_mod(void **state)
{
	static const struct {
		const char	*name;
		char		 cmd;
		const char	*data;
		size_t		 len;
		int		 rc;
		uint32_t	 idx;
		const char	*hname, *value;
	} cases[] = {
		{ "add header", 'h', "X-A\0v\0", 6, 0, 0, "X-A", "v" },
		{ "change header", 'm', "\0\0\0\3X-A\0\0", 9, 0, 3, "X-A",
		    "" },
		{ "insert header, no index", 'i', "\0\0", 2, -1, 0, NULL,
		    NULL },
		{ "add rcpt in <>", '+', "<a@b>\0", 6, 0, 0, NULL, "a@b" },
		{ "add rcpt with args", '2', "<a@b>\0NOTIFY=NEVER\0", 19, 0,
		    0, NULL, "a@b" },
		{ "chgfrom bare", 'e', "c@d\0", 4, 0, 0, NULL, "c@d" },
		{ "delrcpt unterminated", '-', "<a@b>", 5, -1, 0, NULL, NULL },
		{ "quarantine", 'q', "why\0", 4, 0, 0, NULL, "why" },
		{ "not a modification", 'c', "", 0, -1, 0, NULL, NULL },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct milter_reply r = { cases[i].cmd, cases[i].data,
		    cases[i].len };
		struct milter_mod m;
		int got = milter_get_mod(&r, &m);
		bool ok = got == cases[i].rc;
		if (ok && got == 0)
			ok = m.idx == cases[i].idx && (cases[i].hname == NULL ?
			    m.name == NULL : m.name != NULL &&
			    strcmp(m.name, cases[i].hname) == 0) &&
			    strcmp(m.value, cases[i].value) == 0;
		if (!ok)
			fail_msg("case \"%s\": got %d", cases[i].name, got);
	}
}

/* ----- header edits ----- */

#define HEAD	"Subject: one\nX-Remove: a\n b\nFrom: x@y\nsubject: two\n"

static void
test_headers_edit(void **state)
{
	static const struct {
		const char		*name;
		struct chain_mod	 mods[3];
		size_t			 n;
		const char		*want;
	} cases[] = {
		{ "add appends", { { CHAIN_MOD_HDR_ADD, 0, "X-New", "v" } }, 1,
		    HEAD "X-New: v\n" },
		{ "insert at the top", { { CHAIN_MOD_HDR_INSERT, 0, "X-Top",
		    "t" } }, 1, "X-Top: t\n" HEAD },
		{ "insert before the 2nd", { { CHAIN_MOD_HDR_INSERT, 1, "X-I",
		    "i" } }, 1, "Subject: one\nX-I: i\nX-Remove: a\n b\n"
		    "From: x@y\nsubject: two\n" },
		{ "insert past the end appends", { { CHAIN_MOD_HDR_INSERT, 99,
		    "X-I", "i" } }, 1, HEAD "X-I: i\n" },
		{ "change the 2nd occurrence, any case", {
		    { CHAIN_MOD_HDR_CHANGE, 2, "SUBJECT", "new" } }, 1,
		    "Subject: one\nX-Remove: a\n b\nFrom: x@y\nSUBJECT: new\n" },
		{ "delete takes the folded lines", { { CHAIN_MOD_HDR_CHANGE,
		    1, "X-Remove", "" } }, 1, "Subject: one\nFrom: x@y\n"
		    "subject: two\n" },
		{ "change of a missing one adds", { { CHAIN_MOD_HDR_CHANGE,
		    1, "X-None", "n" } }, 1, HEAD "X-None: n\n" },
		{ "delete of a missing one: nothing", {
		    { CHAIN_MOD_HDR_CHANGE, 3, "Subject", "" } }, 1, HEAD },
		{ "value keeps its leading space and folds", {
		    { CHAIN_MOD_HDR_ADD, 0, "X-F", " a\nb\n\tc" } }, 1,
		    HEAD "X-F: a\n\tb\n\tc\n" },
		{ "no line of white space only", {
		    { CHAIN_MOD_HDR_ADD, 0, "X-Nl", "value\n" },
		    { CHAIN_MOD_HDR_ADD, 0, "X-Gap", "a\n\n \t\nb\n\n" },
		    { CHAIN_MOD_HDR_CHANGE, 1, "From", "\nz@y\n" } }, 3,
		    "Subject: one\nX-Remove: a\n b\nFrom:\n\tz@y\n"
		    "subject: two\nX-Nl: value\nX-Gap: a\n\tb\n" },
		{ "edits apply in order", {
		    { CHAIN_MOD_HDR_INSERT, 0, "X-A", "1" },
		    { CHAIN_MOD_HDR_CHANGE, 1, "Subject", "" },
		    { CHAIN_MOD_SENDER, 0, NULL, "s@x" } }, 3,
		    "X-A: 1\nX-Remove: a\n b\nFrom: x@y\nsubject: two\n" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct util_buf out = { 0 };
		chain_headers_edit(HEAD, strlen(HEAD), cases[i].mods,
		    cases[i].n, &out);
		util_buf_cstr(&out);
		if (strcmp(out.data, cases[i].want) != 0)
			fail_msg("case \"%s\": got\n%s\nwant\n%s",
			    cases[i].name, out.data, cases[i].want);
		util_buf_clear(&out);
	}
	/* An empty block: an added header is the whole block. */
	struct chain_mod add = { CHAIN_MOD_HDR_ADD, 0, "X-Only", "1" };
	struct util_buf out = { 0 };
	chain_headers_edit("", 0, &add, 1, &out);
	assert_int_equal(out.len, strlen("X-Only: 1\n"));
	assert_memory_equal(out.data, "X-Only: 1\n", out.len);
	util_buf_clear(&out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_packets),
		cmocka_unit_test(test_get_every_split),
		cmocka_unit_test(test_get_malformed),
		cmocka_unit_test(test_get_replycode),
		cmocka_unit_test(test_get_mod),
		cmocka_unit_test(test_headers_edit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
