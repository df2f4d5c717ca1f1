/*
 * Unit tests of smtp/: command and address parsers, the DATA and BDAT
 * decoder fed at every split point (with synchronous and PENDING
 * decisions), smuggling, limits, and the state machine's reply table.
 */
#include "smtp/smtp.h"
#include "smtp/smtp_private.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

/* ----- a recording set of hooks ----- */

struct rec {
	struct util_buf		 out;		/* every reply line, raw */
	struct util_buf		 codes;		/* "220 250 354 ..." */
	struct util_buf		 body;
	struct util_buf		 trace;		/* ">line\n" and "<line\n" */
	unsigned		 resets;
	unsigned		 decides[SMTP_STAGE_COUNT];
	uint64_t		 eom_size;
	bool			 pending;	/* decide says PENDING */
	enum smtp_verdict	 v[SMTP_STAGE_COUNT];
	int			 code[SMTP_STAGE_COUNT];
	const char		*text[SMTP_STAGE_COUNT];
	bool			 body_fail;
	/* the answer kept for smtp_session_resume() */
	enum smtp_verdict	 pend_v;
	struct smtp_reply	 pend_r;
};

static void
rec_send(void *ctx, const char *buf, size_t len)
{
	struct rec *r = ctx;

	util_buf_add(&r->out, buf, len);
	assert_true(len >= 5);
	assert_memory_equal(buf + len - 2, "\r\n", 2);
	if (buf[3] == ' ' || len == 5) {
		if (r->codes.len > 0)
			util_buf_add(&r->codes, " ", 1);
		util_buf_add(&r->codes, buf, 3);
	} else
		assert_int_equal(buf[3], '-');
}

static enum smtp_verdict
rec_decide(void *ctx, const struct smtp_event *ev, struct smtp_reply *out)
{
	struct rec *r = ctx;
	enum smtp_verdict v = r->v[ev->stage];

	assert_non_null(ev->arg);
	r->decides[ev->stage]++;
	if (ev->stage == SMTP_STAGE_EOM)
		r->eom_size = ev->size;
	out->code = r->code[ev->stage];
	if (r->text[ev->stage] != NULL)
		util_strlcpy(out->text, r->text[ev->stage], sizeof(out->text));
	if (!r->pending)
		return v;
	r->pend_v = v;
	r->pend_r = *out;
	return SMTP_PENDING;
}

static int
rec_body(void *ctx, const char *buf, size_t len)
{
	struct rec *r = ctx;

	assert_true(len > 0);
	util_buf_add(&r->body, buf, len);
	return r->body_fail ? -1 : 0;
}

static void
rec_reset(void *ctx)
{
	((struct rec *)ctx)->resets++;
}

static void
rec_trace(void *ctx, bool from_peer, const char *line, size_t len)
{
	struct rec *r = ctx;

	util_buf_add(&r->trace, from_peer ? ">" : "<", 1);
	util_buf_add(&r->trace, line, len);
	util_buf_add(&r->trace, "\n", 1);
}

static const struct smtp_hooks rec_hooks = {
	.send_cb = rec_send, .decide_cb = rec_decide, .body_cb = rec_body,
	.reset_cb = rec_reset, .trace_cb = rec_trace,
};

static void
rec_init(struct rec *r)
{
	memset(r, 0, sizeof(*r));
}

static void
rec_clear(struct rec *r)
{
	util_buf_clear(&r->out);
	util_buf_clear(&r->codes);
	util_buf_clear(&r->body);
	util_buf_clear(&r->trace);
}

static const char *
rec_codes(struct rec *r)
{
	return r->codes.len > 0 ? util_buf_cstr(&r->codes) : "";
}

static const char *
rec_body_str(struct rec *r)
{
	return r->body.len > 0 ? util_buf_cstr(&r->body) : "";
}

static struct smtp_params
test_params(void)
{
	struct smtp_params p = {
		.lim = { .line_max = 1000, .msg_max = 100000, .rcpt_max = 5,
		    .err_max = 10 },
		.hostname = "mx.example.org",
		.starttls = true,
	};
	return p;
}

/*
 * Feed in[0..len) like a connection would: whatever feed() leaves is fed
 * again after the PENDING decision is resumed.  Returns bytes consumed.
 */
static size_t
drive(struct smtp_session *s, struct rec *r, const char *in, size_t len)
{
	size_t off = 0, n;

	for (;;) {
		if (smtp_session_is_waiting(s)) {
			assert_true(r->pending);
			smtp_session_resume(s, r->pend_v, &r->pend_r);
			continue;
		}
		if (off == len || smtp_session_is_closing(s))
			break;
		n = smtp_session_feed(s, in + off, len - off);
		assert_true(n <= len - off);
		off += n;
		if (n == 0 && !smtp_session_is_waiting(s))
			break;
	}
	return off;
}

static size_t
drives(struct smtp_session *s, struct rec *r, const char *in)
{
	return drive(s, r, in, strlen(in));
}

static struct smtp_session *
start(const struct smtp_params *p, struct rec *r)
{
	struct smtp_session *s = smtp_session_new(p, &rec_hooks, r);

	smtp_session_start(s);
	if (smtp_session_is_waiting(s))
		smtp_session_resume(s, r->pend_v, &r->pend_r);
	return s;
}

/* Run a whole dialogue split once at cut; returns the codes (static). */
static void
run_split(const struct smtp_params *p, struct rec *r, const char *in,
    size_t len, size_t cut)
{
	struct smtp_session *s = start(p, r);

	drive(s, r, in, cut);
	drive(s, r, in + cut, len - cut);
	smtp_session_free(&s);
	assert_null(s);
}

/* ----- parsers ----- */

/* What of a command line a log may hold: an AUTH line up to its
 * mechanism, whatever blank follows; every other line whole. */
static void
test_cmd_loggable(void **state)
{
	static const struct { const char *name, *in, *want; } cases[] = {
		{ "not AUTH", "MAIL FROM:<a b@c>", "MAIL FROM:<a b@c>" },
		{ "a verb that starts so", "AUTHX y z", "AUTHX y z" },
		{ "space", "AUTH PLAIN AGFAYgBw", "AUTH PLAIN" },
		{ "tab", "AUTH PLAIN\tAGFAYgBw", "AUTH PLAIN" },
		{ "tab before the mechanism", "auth\tplain AGFAYgBw",
		  "auth\tplain" },
		{ "no response", "AUTH LOGIN", "AUTH LOGIN" },
		{ "bare", "AUTH", "AUTH" },
		{ "no mechanism's name", "AUTH AGFAYgBw+x==", "AUTH" },
		{ "a name too long", "AUTH ABCDEFGHIJKLMNOPQRSTU", "AUTH" },
		{ "other separator", "AUTH=PLAIN AGFAYgBw", "AUTH" },
		{ "20 octets", "AUTH ABCDEFGHIJKLMNOPQRST x",
		  "AUTH ABCDEFGHIJKLMNOPQRST" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = smtp_cmd_loggable(cases[i].in, strlen(cases[i].in));
		if (n != strlen(cases[i].want) ||
		    strncmp(cases[i].in, cases[i].want, n) != 0)
			fail_msg("case \"%s\": got \"%.*s\", want \"%s\"",
			    cases[i].name, (int)n, cases[i].in, cases[i].want);
	}
}

static void
test_cmd_parse(void **state)
{
	static const struct {
		const char *in; int rc; enum smtp_verb verb; const char *arg;
	} cases[] = {
		{ "HELO x", 1, SMTP_VERB_HELO, "x" },
		{ "ehlo client.example", 1, SMTP_VERB_EHLO, "client.example" },
		{ "MAIL FROM:<a@b>", 1, SMTP_VERB_MAIL, "FROM:<a@b>" },
		{ "Rcpt TO:<a@b> ", 1, SMTP_VERB_RCPT, "TO:<a@b>" },
		{ "DATA", 1, SMTP_VERB_DATA, "" },
		{ "DATA ", 1, SMTP_VERB_DATA, "" },
		{ "BDAT 10 LAST", 1, SMTP_VERB_BDAT, "10 LAST" },
		{ "rset", 1, SMTP_VERB_RSET, "" },
		{ "NOOP hello", 1, SMTP_VERB_NOOP, "hello" },
		{ "QUIT", 1, SMTP_VERB_QUIT, "" },
		{ "VRFY u", 1, SMTP_VERB_VRFY, "u" },
		{ "EXPN l", 1, SMTP_VERB_EXPN, "l" },
		{ "HELP", 1, SMTP_VERB_HELP, "" },
		{ "StartTLS", 1, SMTP_VERB_STARTTLS, "" },
		{ "AUTH PLAIN", 1, SMTP_VERB_AUTH, "PLAIN" },
		{ "MAILX", 1, SMTP_VERB_UNKNOWN, "" },
		{ "HEL", 1, SMTP_VERB_UNKNOWN, "" },
		{ "", -1, SMTP_VERB_UNKNOWN, "" },
		{ " HELO x", -1, SMTP_VERB_UNKNOWN, "" },
		{ "HELO\tx", -1, SMTP_VERB_UNKNOWN, "" },
		{ "MAIL:FROM", -1, SMTP_VERB_UNKNOWN, "" },
		{ "123", -1, SMTP_VERB_UNKNOWN, "" },
	};
	(void)state;
	for (size_t i = 0; i < NELEM(cases); i++) {
		struct smtp_cmd c;
		int rc = smtp_cmd_parse(cases[i].in, strlen(cases[i].in), &c);

		if (rc != cases[i].rc)
			fail_msg("case \"%s\": got rc %d, want %d",
			    cases[i].in, rc, cases[i].rc);
		if (rc != 1)
			continue;
		if (c.verb != cases[i].verb)
			fail_msg("case \"%s\": got verb %d, want %d",
			    cases[i].in, c.verb, cases[i].verb);
		if (c.arg_len != strlen(cases[i].arg) ||
		    memcmp(c.arg, cases[i].arg, c.arg_len) != 0)
			fail_msg("case \"%s\": got arg \"%.*s\", want \"%s\"",
			    cases[i].in, (int)c.arg_len, c.arg, cases[i].arg);
	}
}

static char *
repeat(char c, size_t n)
{
	char *s = xmalloc(n + 1);

	memset(s, c, n);
	s[n] = '\0';
	return s;
}

static void
test_addr_parse(void **state)
{
	static const struct {
		const char *in; bool null_ok; int rc; const char *addr;
		const char *rest;
	} cases[] = {
		{ "<a@b.c>", false, 1, "a@b.c", "" },
		{ "<a@B.Example.ORG> SIZE=1", false, 1, "a@b.example.org",
		    " SIZE=1" },
		{ "<First.Last@x.y>", false, 1, "First.Last@x.y", "" },
		{ "<a+tag!#$%&'*/=?^_`{|}~-@x>", false, 1,
		    "a+tag!#$%&'*/=?^_`{|}~-@x", "" },
		{ "<\"a b\"@x>", false, 1, "\"a b\"@x", "" },
		{ "<\"a\\\"b\"@x>", false, 1, "\"a\\\"b\"@x", "" },
		/* RFC 5321 4.1.2, RFC 5322 3.2.4: one spelling per mailbox */
		{ "<\"bob\"@x>", false, 1, "bob@x", "" },
		{ "<\"Bob.Smith\"@x>", false, 1, "Bob.Smith@x", "" },
		{ "<\"b\\ob\"@x>", false, 1, "bob@x", "" },
		{ "<\"a+b\"@x> SIZE=1", true, 1, "a+b@x", " SIZE=1" },
		{ "<\"\xc3\xa9t\xc3\xa9\"@x>", false, 1,
		    "\xc3\xa9t\xc3\xa9@x", "" },
		{ "<@r.x:\"bob\"@x>", false, 1, "bob@x", "" },
		{ "<\"a\\ b\"@x>", false, 1, "\"a b\"@x", "" },
		{ "<\"\\a\\\\b\"@x>", false, 1, "\"a\\\\b\"@x", "" },
		{ "<\"a@b\"@x>", false, 1, "\"a@b\"@x", "" },
		{ "<\"a..b\"@x>", false, 1, "\"a..b\"@x", "" },
		{ "<\".a\"@x>", false, 1, "\".a\"@x", "" },
		{ "<\"a.\"@x>", false, 1, "\"a.\"@x", "" },
		{ "<\"a,b\"@x>", false, 1, "\"a,b\"@x", "" },
		{ "<@r1.x,@r2.y:u@d.z>", false, 1, "u@d.z", "" },
		{ "<u@[1.2.3.4]>", false, 1, "u@[1.2.3.4]", "" },
		{ "<u@[IPv6:2001:db8::1]>", false, 1, "u@[ipv6:2001:db8::1]",
		    "" },
		{ "<u@[IPv6:1:2:3:4:5:6:7:8]>", false, 1,
		    "u@[ipv6:1:2:3:4:5:6:7:8]", "" },
		{ "<u@[IPv6:::ffff:1.2.3.4]>", false, 1,
		    "u@[ipv6:::ffff:1.2.3.4]", "" },
		{ "<u@[tag:stuff]>", false, 1, "u@[tag:stuff]", "" },
		{ "<\xc3\xa9t\xc3\xa9@\xc3\xa9x.org>", false, 1,
		    "\xc3\xa9t\xc3\xa9@\xc3\xa9x.org", "" },
		{ "<a-b@x-y.z>", false, 1, "a-b@x-y.z", "" },
		{ "<>", true, 1, "", "" },
		{ "<> BODY=8BITMIME", true, 1, "", " BODY=8BITMIME" },
		{ "<>", false, -1, NULL, NULL },
		{ "a@b.c", false, -1, NULL, NULL },
		{ "<a@b.c", false, -1, NULL, NULL },
		{ "<a@b.c ", false, -1, NULL, NULL },
		{ "< a@b.c>", false, -1, NULL, NULL },
		{ "<a @b.c>", false, -1, NULL, NULL },
		{ "<a@ b.c>", false, -1, NULL, NULL },
		{ "<@b.c>", false, -1, NULL, NULL },
		{ "<a@>", false, -1, NULL, NULL },
		{ "<a>", false, -1, NULL, NULL },
		{ "<a.@b>", false, -1, NULL, NULL },
		{ "<.a@b>", false, -1, NULL, NULL },
		{ "<a..b@c>", false, -1, NULL, NULL },
		{ "<a@b..c>", false, -1, NULL, NULL },
		{ "<a@b.c.>", false, -1, NULL, NULL },
		{ "<a@-b.c>", false, -1, NULL, NULL },
		{ "<a@b-.c>", false, -1, NULL, NULL },
		{ "<a@b_c>", false, -1, NULL, NULL },
		{ "<\"\"@b>", false, -1, NULL, NULL },
		{ "<\"a@b>", false, -1, NULL, NULL },
		{ "<a@[1.2.3]>", false, -1, NULL, NULL },
		{ "<a@[1.2.3.256]>", false, -1, NULL, NULL },
		{ "<a@[IPv6:1:2:3:4:5:6:7]>", false, -1, NULL, NULL },
		{ "<a@[IPv6:1::2::3]>", false, -1, NULL, NULL },
		{ "<a@[IPv6:12345::]>", false, -1, NULL, NULL },
		{ "<a@[1.2.3.4>", false, -1, NULL, NULL },
		{ "<@r1.x:>", false, -1, NULL, NULL },
		{ "<@r1.x,r2:u@d>", false, -1, NULL, NULL },
		{ "<a\xff@b>", false, -1, NULL, NULL },
		{ "<a\xc3@b>", false, -1, NULL, NULL },
		{ "<a\xc0\xaf@b>", false, -1, NULL, NULL },
		{ "<a\x01@b>", false, -1, NULL, NULL },
		{ "", false, -1, NULL, NULL },
	};
	(void)state;
	for (size_t i = 0; i < NELEM(cases); i++) {
		struct smtp_addr a;
		const char *end = NULL, *err = NULL;
		size_t len = strlen(cases[i].in);
		int rc = smtp_addr_parse(cases[i].in, len, cases[i].null_ok,
		    &a, &end, &err);

		if (rc != cases[i].rc)
			fail_msg("case \"%s\": got rc %d (%s), want %d",
			    cases[i].in, rc, err ? err : "-", cases[i].rc);
		if (rc == -1) {
			assert_non_null(err);
			continue;
		}
		if (strcmp(a.addr, cases[i].addr) != 0)
			fail_msg("case \"%s\": got \"%s\", want \"%s\"",
			    cases[i].in, a.addr, cases[i].addr);
		if (strcmp(end, cases[i].rest) != 0)
			fail_msg("case \"%s\": rest \"%s\", want \"%s\"",
			    cases[i].in, end, cases[i].rest);
	}
}

/* A refused path names what is wrong with it, not a later symptom. */
static void
test_addr_parse_reasons(void **state)
{
	static const struct {
		const char	*label, *in, *want;
	} cases[] = {
		{ "no '>'", "<a@b.c", "missing '>'" },
		{ "no '>', a parameter", "<a@b.c SIZE=1", "missing '>'" },
		{ "not UTF-8 in the domain", "<a@ex\xff" "ample.org>",
		    "bad domain" },
		{ "half a character", "<b@ex\xc3" "ample.org>", "bad domain" },
		{ "a space in the domain", "<a@exa mple.org>", "bad domain" },
		{ "an underscore", "<a@b_c>", "bad domain" },
		{ "after a literal", "<a@[1.2.3.4]x>", "bad address literal" },
		{ "no domain", "<a@>", "bad domain" },
		{ "no '@'", "<a>", "missing '@domain'" },
		{ "no '@', one after the path", "<a> AUTH=<b@c>",
		    "missing '@domain'" },
		{ "a space in the local part", "<a b@example.org>",
		    "bad local part" },
		{ "a control byte", "<a\x1b@example.org>", "bad local part" },
		{ "not UTF-8 in the local part", "<a\xff@example.org>",
		    "bad local part" },
		{ "a comma", "<a,b@example.org>", "bad local part" },
		{ "no '>' either", "<a b@example.org", "bad local part" },
	};
	(void)state;
	for (size_t i = 0; i < NELEM(cases); i++) {
		struct smtp_addr a;
		const char *end = NULL, *err = NULL;
		int rc = smtp_addr_parse(cases[i].in, strlen(cases[i].in),
		    false, &a, &end, &err);

		if (rc != -1 || err == NULL || strcmp(err, cases[i].want) != 0)
			fail_msg("case \"%s\": got %d \"%s\", want -1 \"%s\"",
			    cases[i].label, rc, err != NULL ? err : "-",
			    cases[i].want);
	}
}

/* "<" local "@" domain ">" built to given sizes. */
static int
addr_sized(size_t local, const char *dom_label, size_t dom_len,
    const char **err)
{
	char buf[2048], *l = repeat('l', local), *d = repeat('d', dom_len);
	struct smtp_addr a;
	const char *end;
	int rc;

	(void)dom_label;
	/* dot every 50 characters keeps labels under 63 */
	for (size_t i = 50; i < dom_len; i += 50)
		d[i] = '.';
	snprintf(buf, sizeof(buf), "<%s@%s>", l, d);
	rc = smtp_addr_parse(buf, strlen(buf), false, &a, &end, err);
	if (rc == 1)
		assert_int_equal(strlen(a.addr), local + 1 + dom_len);
	free(l);
	free(d);
	return rc;
}

static void
test_addr_limits(void **state)
{
	const char *err;
	char buf[200], *lab;
	struct smtp_addr a;
	const char *end;

	(void)state;
	/* RFC 5321 4.5.3.1.1: local part 64 */
	assert_int_equal(addr_sized(64, "", 10, &err), 1);
	assert_int_equal(addr_sized(65, "", 10, &err), -1);
	assert_string_equal(err, "local part too long");
	/* RFC 5321 4.5.3.1.3: path 256 with "<", "@" and ">" */
	assert_int_equal(addr_sized(64, "", 256 - 64 - 3, &err), 1);
	assert_int_equal(addr_sized(64, "", 256 - 64 - 2, &err), -1);
	assert_string_equal(err, "path too long");
	/* quoted: 64 between the quotes */
	lab = repeat('q', 64);
	snprintf(buf, sizeof(buf), "<\"%s\"@x>", lab);
	assert_int_equal(smtp_addr_parse(buf, strlen(buf), false, &a, &end,
	    &err), 1);
	snprintf(buf, sizeof(buf), "<\"%sq\"@x>", lab);
	assert_int_equal(smtp_addr_parse(buf, strlen(buf), false, &a, &end,
	    &err), -1);
	free(lab);
	/* RFC 1035 2.3.4: label 63 */
	lab = repeat('d', 63);
	snprintf(buf, sizeof(buf), "<a@%s.org>", lab);
	assert_int_equal(smtp_addr_parse(buf, strlen(buf), false, &a, &end,
	    &err), 1);
	snprintf(buf, sizeof(buf), "<a@%sd.org>", lab);
	assert_int_equal(smtp_addr_parse(buf, strlen(buf), false, &a, &end,
	    &err), -1);
	free(lab);
}

static void
test_mail_params(void **state)
{
	static const struct {
		const char *in; bool esmtp; int rc; int code;
		uint64_t size; enum smtp_body body; bool utf8;
	} cases[] = {
		{ "", true, 0, 0, 0, SMTP_BODY_UNSPEC, false },
		{ "", false, 0, 0, 0, SMTP_BODY_UNSPEC, false },
		{ " SIZE=1000", true, 0, 0, 1000, SMTP_BODY_UNSPEC, false },
		{ " size=5000", true, 0, 0, 5000, SMTP_BODY_UNSPEC, false },
		{ " SIZE=5001", true, -1, 552, 0, 0, false },
		{ " BODY=8BITMIME SMTPUTF8", true, 0, 0, 0,
		    SMTP_BODY_8BITMIME, true },
		{ "  BODY=7bit  ", true, 0, 0, 0, SMTP_BODY_7BIT, false },
		{ " BODY=BINARYMIME", true, -1, 501, 0, 0, false },
		{ " BODY=", true, -1, 501, 0, 0, false },
		{ " SIZE=x", true, -1, 501, 0, 0, false },
		{ " SIZE=", true, -1, 501, 0, 0, false },
		{ " SIZE", true, -1, 501, 0, 0, false },
		{ " SIZE=99999999999999999999999", true, -1, 501, 0, 0,
		    false },
		{ " SIZE=1 SIZE=2", true, -1, 501, 0, 0, false },
		{ " SMTPUTF8=yes", true, -1, 501, 0, 0, false },
		{ " X-FOO=bar", true, -1, 555, 0, 0, false },
		{ " RET=FULL", true, -1, 555, 0, 0, false },
		{ " SIZE=10", false, -1, 555, 0, 0, false },
		{ " =x", true, -1, 501, 0, 0, false },
		{ " A=b=c", true, -1, 501, 0, 0, false },
		{ " AUTH=<>", true, 0, 0, 0, SMTP_BODY_UNSPEC, false },
		{ " AUTH=a+2Bb+3Dc@d.e SIZE=10", true, 0, 0, 10,
		    SMTP_BODY_UNSPEC, false },
		{ " AUTH=a+2b", true, -1, 501, 0, 0, false },
		{ " AUTH=a+2", true, -1, 501, 0, 0, false },
		{ " AUTH=a+", true, -1, 501, 0, 0, false },
		{ " AUTH=\xc3\xa9", true, -1, 501, 0, 0, false },
		{ " AUTH", true, -1, 501, 0, 0, false },
		{ " AUTH=<> AUTH=<>", true, -1, 501, 0, 0, false },
	};
	(void)state;
	for (size_t i = 0; i < NELEM(cases); i++) {
		struct smtp_mail_params mp;
		const char *text = NULL, *in = cases[i].in;
		int code = 0;
		int rc = smtp_mail_params_parse(in, in + strlen(in),
		    cases[i].esmtp, 5000, &mp, &code, &text);

		if (rc != cases[i].rc || (rc == -1 && code != cases[i].code))
			fail_msg("case \"%s\": got %d/%d, want %d/%d", in, rc,
			    code, cases[i].rc, cases[i].code);
		if (rc == 0 && (mp.size != cases[i].size ||
		    mp.body != cases[i].body || mp.smtputf8 != cases[i].utf8))
			fail_msg("case \"%s\": wrong values", in);
	}
}

static void
test_bdat_parse(void **state)
{
	static const struct {
		const char *in; int rc; uint64_t n; bool last;
	} cases[] = {
		{ "0", 0, 0, false }, { "10", 0, 10, false },
		{ "10 LAST", 0, 10, true }, { "7 last", 0, 7, true },
		{ "", -1, 0, false }, { "x", -1, 0, false },
		{ "10 LASTX", -1, 0, false }, { "10  LAST", -1, 0, false },
		{ "-1", -1, 0, false }, { "10 FIRST", -1, 0, false },
		{ "18446744073709551616", -1, 0, false },
	};
	(void)state;
	for (size_t i = 0; i < NELEM(cases); i++) {
		uint64_t n = 0;
		bool last = false;
		int rc = smtp_bdat_parse(cases[i].in, strlen(cases[i].in), &n,
		    &last);

		if (rc != cases[i].rc || (rc == 0 && (n != cases[i].n ||
		    last != cases[i].last)))
			fail_msg("case \"%s\": got %d %ju %d", cases[i].in, rc,
			    (uintmax_t)n, last);
	}
}

/* ----- DATA at every split point ----- */

#define PRELUDE	"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n"
#define PRE_CODES	"220 250 250 250 354"

struct dialog_case {
	const char	*name;
	const char	*in;
	size_t		 len;		/* 0: strlen(in) */
	const char	*codes;
	const char	*body;		/* NULL: do not check */
};

/*
 * Feed each case split at every byte position, with decisions answered at
 * once and with PENDING + resume: the replies and the body must not change.
 */
static void
check_dialogs(const struct dialog_case *cases, size_t ncases,
    const struct smtp_params *p)
{
	for (size_t i = 0; i < ncases; i++) {
		const struct dialog_case *tc = &cases[i];
		size_t len = tc->len != 0 ? tc->len : strlen(tc->in);

		for (int pend = 0; pend <= 1; pend++) {
			for (size_t cut = 0; cut <= len; cut++) {
				struct rec r;

				rec_init(&r);
				r.pending = pend;
				run_split(p, &r, tc->in, len, cut);
				if (strcmp(rec_codes(&r), tc->codes) != 0)
					fail_msg("case \"%s\" cut %zu pend %d: "
					    "got %s, want %s", tc->name, cut,
					    pend, rec_codes(&r), tc->codes);
				if (tc->body != NULL &&
				    strcmp(rec_body_str(&r), tc->body) != 0)
					fail_msg("case \"%s\" cut %zu pend %d: "
					    "body \"%s\", want \"%s\"",
					    tc->name, cut, pend,
					    rec_body_str(&r), tc->body);
				/* a refused message never leaks what followed */
				if (tc->body == NULL &&
				    (strstr(rec_body_str(&r), "MAIL") != NULL ||
				    strstr(rec_body_str(&r), "RSET") != NULL))
					fail_msg("case \"%s\" cut %zu: body has "
					    "\"%s\"", tc->name, cut,
					    rec_body_str(&r));
				rec_clear(&r);
			}
		}
	}
}

static void
test_data_split(void **state)
{
	static const struct dialog_case cases[] = {
		{ "simple", PRELUDE "Subject: x\r\n\r\nhello\r\n.\r\n", 0,
		    PRE_CODES " 250", "Subject: x\n\nhello\n" },
		{ "empty message", PRELUDE ".\r\n", 0, PRE_CODES " 250", "" },
		{ "dot-stuffed", PRELUDE "..\r\n...x\r\n.y\r\n. \r\n.\r\n", 0,
		    PRE_CODES " 250", ".\n..x\ny\n \n" },
		{ "dot inside line", PRELUDE "a.\r\na.b\r\n.\r\n", 0,
		    PRE_CODES " 250", "a.\na.b\n" },
		{ "then another message", PRELUDE "one\r\n.\r\n"
		    "MAIL FROM:<>\r\nRCPT TO:<x@y>\r\nDATA\r\ntwo\r\n.\r\n"
		    "QUIT\r\n", 0,
		    PRE_CODES " 250 250 250 354 250 221", "one\ntwo\n" },
		{ "smuggle LF.LF", PRELUDE "a\n.\nMAIL FROM:<e@v.il>\r\n"
		    "b\r\n.\r\nNOOP\r\n", 0, PRE_CODES " 554 250", NULL },
		{ "smuggle LF.CRLF", PRELUDE "a\r\nb\n.\r\nMAIL FROM:<e@v>\r\n"
		    "\r\n.\r\nNOOP\r\n", 0, PRE_CODES " 554 250", NULL },
		{ "smuggle CRLF.LF", PRELUDE "a\r\n.\nRSET\r\n.\r\nNOOP\r\n",
		    0, PRE_CODES " 554 250", NULL },
		{ "smuggle CR.CR", PRELUDE "a\r.\rMAIL FROM:<e@v>\r\n.\r\n"
		    "NOOP\r\n", 0, PRE_CODES " 554 250", NULL },
		{ "smuggle CR.CRLF", PRELUDE "a\r.\r\nRSET\r\n.\r\nNOOP\r\n",
		    0, PRE_CODES " 554 250", NULL },
		{ "bare CR in line", PRELUDE "x\ry\r\n.\r\n", 0,
		    PRE_CODES " 554", NULL },
		{ "CR CR LF", PRELUDE "x\r\r\n.\r\n", 0, PRE_CODES " 554", NULL },
		{ "dot at start of DATA is an end", PRELUDE ".\r\nNOOP\r\n",
		    0, PRE_CODES " 250 250", "" },
		{ "dot CR X", PRELUDE ".\rX\r\n.\r\n", 0, PRE_CODES " 554", NULL },
	};
	struct smtp_params p = test_params();
	struct dialog_case nul = { "NUL", PRELUDE "ok\r\nx\0y\r\n.\r\nNOOP\r\n",
	    sizeof(PRELUDE "ok\r\nx\0y\r\n.\r\nNOOP\r\n") - 1,
	    PRE_CODES " 554 250", NULL };

	(void)state;
	check_dialogs(cases, NELEM(cases), &p);
	/* the NUL case needs an explicit length */
	check_dialogs(&nul, 1, &p);
}

static void
test_data_lines_and_size(void **state)
{
	struct smtp_params p = test_params();
	char *l998 = repeat('x', 998), *l999 = repeat('x', 999);
	char *d998 = repeat('.', 999);	/* stuffed: 998 after unstuffing */
	struct util_buf in = { 0 };
	struct rec r;
	struct smtp_session *s;

	(void)state;
	/* 998 + CRLF is the limit (RFC 5321 4.5.3.1.6) */
	rec_init(&r);
	util_buf_printf(&in, PRELUDE "%s\r\n%s\r\n.\r\n", l998, d998);
	s = start(&p, &r);
	drive(s, &r, in.data, in.len);
	assert_string_equal(rec_codes(&r), PRE_CODES " 250");
	assert_int_equal(r.body.len, 998 * 2 + 2);
	assert_int_equal(r.eom_size, 1000 * 2);
	smtp_session_free(&s);
	rec_clear(&r);
	/* 999 + CRLF: refused once, after the end */
	rec_init(&r);
	util_buf_reset(&in);
	util_buf_printf(&in, PRELUDE "%s\r\n.\r\nNOOP\r\n", l999);
	s = start(&p, &r);
	drive(s, &r, in.data, in.len);
	assert_string_equal(rec_codes(&r), PRE_CODES " 554 250");
	assert_int_equal(r.decides[SMTP_STAGE_EOM], 0);
	assert_int_equal(r.resets, 2);	/* EHLO, end of message */
	smtp_session_free(&s);
	rec_clear(&r);
	/* size: exactly msg_max, then msg_max + 1 (CRLF counts 2) */
	p.lim.msg_max = 12;
	for (int over = 0; over <= 1; over++) {
		rec_init(&r);
		util_buf_reset(&in);
		util_buf_printf(&in, PRELUDE "%s\r\n.\r\n",
		    over ? "12345678901" : "1234567890");
		s = start(&p, &r);
		drive(s, &r, in.data, in.len);
		if (strcmp(rec_codes(&r), over ? PRE_CODES " 552" :
		    PRE_CODES " 250") != 0)
			fail_msg("case \"size over=%d\": got %s", over,
			    rec_codes(&r));
		smtp_session_free(&s);
		rec_clear(&r);
	}
	/* SIZE= at MAIL over msg_max: 552 there */
	rec_init(&r);
	util_buf_reset(&in);
	util_buf_printf(&in, "EHLO c\r\nMAIL FROM:<a@b> SIZE=13\r\n"
	    "MAIL FROM:<a@b> SIZE=12\r\n");
	s = start(&p, &r);
	drive(s, &r, in.data, in.len);
	assert_string_equal(rec_codes(&r), "220 250 552 250");
	assert_true(strstr(util_buf_cstr(&r.out), "552 5.3.4 ") != NULL);
	smtp_session_free(&s);
	rec_clear(&r);
	/* body_cb failure: 451 at the end */
	rec_init(&r);
	r.body_fail = true;
	p.lim.msg_max = 0;
	s = start(&p, &r);
	drive(s, &r, PRELUDE "x\r\ny\r\n.\r\n", strlen(PRELUDE) + 9);
	assert_string_equal(rec_codes(&r), PRE_CODES " 451");
	assert_int_equal(r.body.len, 1);	/* "x" then nothing more */
	smtp_session_free(&s);
	rec_clear(&r);
	util_buf_clear(&in);
	free(l998);
	free(l999);
	free(d998);
}

/* ----- BDAT ----- */

#define BPRE	"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n"
#define BPRE_CODES	"220 250 250 250"

/*
 * A line over line_max in a message near msg_max: the limit crossed first
 * in byte order gives the reply, however the input is cut (one write or
 * small pieces), in DATA and in BDAT.
 */
static void
test_limit_order_split(void **state)
{
	struct smtp_params p = test_params();
	char *x60 = repeat('x', 60), *y100 = repeat('y', 100);
	struct util_buf in[6] = { { 0 } };
	struct dialog_case c[6];

	(void)state;
	p.lim.line_max = 64;	/* 62 octets of text */
	p.lim.msg_max = 100;
	/* 62 octets, then the size limit 38 octets into a long line */
	util_buf_printf(&in[0], PRELUDE "%s\r\n%s\r\n.\r\nNOOP\r\n", x60,
	    y100);
	c[0] = (struct dialog_case){ "DATA: size first", NULL, 0,
	    PRE_CODES " 552 250", NULL };
	/* the line limit 62 octets into the first line, size after 100 */
	util_buf_printf(&in[1], PRELUDE "%s\r\n.\r\nNOOP\r\n", y100);
	c[1] = (struct dialog_case){ "DATA: line first", NULL, 0,
	    PRE_CODES " 554 250", NULL };
	util_buf_printf(&in[2], BPRE "BDAT 164 LAST\r\n%s\r\n%s\r\nNOOP\r\n",
	    x60, y100);
	c[2] = (struct dialog_case){ "BDAT: size first", NULL, 0,
	    BPRE_CODES " 552 250", NULL };
	util_buf_printf(&in[3], BPRE "BDAT 102 LAST\r\n%s\r\nNOOP\r\n", y100);
	c[3] = (struct dialog_case){ "BDAT: line first", NULL, 0,
	    BPRE_CODES " 554 250", NULL };
	for (size_t i = 0; i < 4; i++) {
		c[i].in = util_buf_cstr(&in[i]);
		c[i].len = in[i].len;
	}
	check_dialogs(c, 4, &p);
	/* both at the same octet: the line limit, as octet by octet */
	p.lim.msg_max = 124;
	util_buf_printf(&in[4], PRELUDE "%s\r\n%s\r\n.\r\nNOOP\r\n", x60,
	    y100);
	c[4] = (struct dialog_case){ "DATA: both at once", util_buf_cstr(
	    &in[4]), in[4].len, PRE_CODES " 554 250", NULL };
	check_dialogs(&c[4], 1, &p);
	for (size_t i = 0; i < 6; i++)
		util_buf_clear(&in[i]);
	free(x60);
	free(y100);
}

static void
test_bdat_split(void **state)
{
	static const struct dialog_case cases[] = {
		{ "one chunk", BPRE "BDAT 8 LAST\r\nab\r\ncd\r\n", 0,
		    BPRE_CODES " 250", "ab\ncd\n" },
		{ "CRLF across chunks", BPRE "BDAT 3\r\nab\rBDAT 3 LAST\r\n"
		    "\ncd", 0, BPRE_CODES " 250 250", "ab\ncd" },
		{ "dots are content", BPRE "BDAT 5 LAST\r\n.\r\n..",
		    0, BPRE_CODES " 250", ".\n.." },
		{ "only an empty last", BPRE "BDAT 0 LAST\r\nNOOP\r\n", 0,
		    BPRE_CODES " 250 250", "" },
		{ "empty last", BPRE "BDAT 4\r\nab\r\nBDAT 0 LAST\r\n", 0,
		    BPRE_CODES " 250 250", "ab\n" },
		{ "bare LF", BPRE "BDAT 3 LAST\r\na\nbNOOP\r\n", 0,
		    BPRE_CODES " 554 250", NULL },
		{ "bare CR at the end", BPRE "BDAT 1\r\n\rBDAT 1 LAST\r\nx",
		    0, BPRE_CODES " 250 554", "" },
		{ "CR at end of last", BPRE "BDAT 2 LAST\r\na\rNOOP\r\n", 0,
		    BPRE_CODES " 554 250", NULL },
		{ "error drops transaction", BPRE "BDAT 2\r\na\nBDAT 2 LAST"
		    "\r\nb\nRSET\r\n", 0, BPRE_CODES " 554 503 250", NULL },
		{ "no rcpt: 503, chunk drained", "EHLO c\r\nMAIL FROM:<a@b>"
		    "\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n", 0, "220 250 250 503 250",
		    "" },
		{ "after HELO: 503", "HELO c\r\nBDAT 4\r\nQUITNOOP\r\n", 0,
		    "220 250 503 250", "" },
		{ "DATA after BDAT", BPRE "BDAT 3\r\nx\r\nDATA\r\n"
		    "BDAT 0 LAST\r\n", 0, BPRE_CODES " 250 503 250", "x\n" },
		{ "bad syntax", BPRE "BDAT x\r\nBDAT 1 LAST\r\ny", 0,
		    BPRE_CODES " 501 250", "y" },
		{ "two messages", BPRE "BDAT 3 LAST\r\nz\r\n"
		    "MAIL FROM:<>\r\nRCPT TO:<q@r>\r\nBDAT 1 LAST\r\nw", 0,
		    BPRE_CODES " 250 250 250 250", "z\nw" },
	};
	struct smtp_params p = test_params();

	(void)state;
	check_dialogs(cases, NELEM(cases), &p);
}

static void
test_bdat_reject(void **state)
{
	struct smtp_params p = test_params();
	struct smtp_session *s;
	struct rec r;
	const char *in = BPRE "BDAT 5\r\nNOOP\rBDAT 1 LAST\r\nxNOOP\r\n";

	(void)state;
	for (int pend = 0; pend <= 1; pend++) {
		rec_init(&r);
		r.pending = pend;
		r.v[SMTP_STAGE_DATA] = SMTP_REJECT;
		s = start(&p, &r);
		drive(s, &r, in, strlen(in));
		/* refused: chunk dropped, transaction gone, next BDAT 503 */
		assert_string_equal(rec_codes(&r), BPRE_CODES " 554 503 250");
		assert_int_equal(r.body.len, 0);
		smtp_session_free(&s);
		rec_clear(&r);
	}
}

/* ----- command lines ----- */

static void
test_command_lines(void **state)
{
	static const struct dialog_case cases[] = {
		/* A bare LF ends nothing: the line runs to the CRLF. */
		{ "bare LF", "NOOP\nNOOP\r\n", 0, "220 500", NULL },
		{ "bare LF hides no command",
		    "EHLO x\r\nNOOP\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", 0,
		    "220 250 500 503", NULL },
		{ "LF right after a kept CR", "NOOP\r\nNOOP\r\n", 0,
		    "220 250 250", NULL },
		{ "bare CR", "NO\rOP\r\nNOOP\r\n", 0, "220 500 250", NULL },
		{ "CR CR LF", "NOOP\r\r\nNOOP\r\n", 0, "220 500 250", NULL },
		{ "empty line", "\r\nNOOP\r\n", 0, "220 500 250", NULL },
		{ "unknown", "FOO\r\nNOOP\r\n", 0, "220 500 250", NULL },
		{ "case-insensitive", "ehlo x\r\nmail from:<a@b>\r\n"
		    "rcpt to:<c@d>\r\nrset\r\n", 0, "220 250 250 250 250",
		    NULL },
		{ "space after colon", "EHLO x\r\nMAIL FROM: <a@b>\r\n"
		    "RCPT TO: <c@d>\r\n", 0, "220 250 250 250", NULL },
		{ "two spaces", "EHLO x\r\nMAIL FROM:  <a@b>\r\n", 0,
		    "220 250 501", NULL },
	};
	struct smtp_params p = test_params();
	struct dialog_case nul = { "NUL", "NO\0OP\r\nNOOP\r\n", 13,
	    "220 500 250", NULL };

	(void)state;
	check_dialogs(cases, NELEM(cases), &p);
	check_dialogs(&nul, 1, &p);
}

static void
test_command_line_max(void **state)
{
	struct smtp_params p = test_params();
	struct util_buf in = { 0 };
	char *arg = repeat('x', 998 - 5);	/* "NOOP " + arg = 998 */
	struct dialog_case c;

	(void)state;
	util_buf_printf(&in, "NOOP %s\r\nNOOP %sx\r\nNOOP\r\n", arg, arg);
	c.name = "998 ok, 999 too long, then in step";
	c.in = util_buf_cstr(&in);
	c.len = in.len;
	c.codes = "220 250 500 250";
	c.body = NULL;
	check_dialogs(&c, 1, &p);
	/* a long line that holds a command after line_max is not run */
	util_buf_reset(&in);
	util_buf_printf(&in, "NOOP %s12345QUIT\r\nNOOP\r\n", arg);
	c.in = util_buf_cstr(&in);
	c.len = in.len;
	c.codes = "220 500 250";
	check_dialogs(&c, 1, &p);
	util_buf_clear(&in);
	free(arg);
}

/* A policy that refuses every command but QUIT ("nomail every-command"). */
static enum smtp_verdict
rec_command_nomail(void *ctx, const char *verb, struct smtp_reply *out)
{
	(void)ctx;
	if (strcmp(verb, "QUIT") == 0)
		return SMTP_OK;
	out->code = 521;
	util_strlcpy(out->text, "5.3.2 mx.example.org does not accept mail",
	    sizeof(out->text));
	return SMTP_REJECT;
}

/*
 * The policy sees every line, unknown ones too: the text of a message
 * pipelined after the refused DATA gets 521 line by line, and none of it
 * counts toward err_max.
 */
static void
test_command_policy(void **state)
{
	struct smtp_params p = test_params();
	struct smtp_hooks h = rec_hooks;
	const char *in = "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"
	    "DATA\r\nSubject: x\r\n\r\nline 1\r\nline 2\r\n.\r\nFROB\r\n"
	    "QUIT\r\n";
	struct smtp_session *s;
	struct rec r;

	(void)state;
	h.command_cb = rec_command_nomail;
	p.lim.err_max = 2;
	rec_init(&r);
	s = smtp_session_new(&p, &h, &r);
	smtp_session_start(s);
	drive(s, &r, in, strlen(in));
	assert_string_equal(rec_codes(&r), "220 521 521 521 521 521 521 521 "
	    "521 521 521 221");
	assert_int_equal(r.decides[SMTP_STAGE_DATA], 0);
	smtp_session_free(&s);
	rec_clear(&r);
}

/*
 * A command line over line_max is drained to its CRLF (500, in step), but
 * one that goes on past SMTP_LINE_DRAIN_MAX more octets is cut: 500 and
 * the close, never drained forever.
 */
static void
test_command_line_cut(void **state)
{
	struct smtp_params p = test_params();
	size_t long_len = 1000 + SMTP_LINE_DRAIN_MAX - 100;
	char *x = repeat('x', 1000 + SMTP_LINE_DRAIN_MAX + 10);
	struct util_buf in = { 0 };
	const size_t cuts[] = { 0, 3, 999, 1000, 1001, 40000 };
	struct rec r;

	(void)state;
	for (int over = 0; over <= 1; over++) {
		util_buf_reset(&in);
		util_buf_printf(&in, "NOOP %.*s\r\nNOOP\r\n",
		    (int)(over ? strlen(x) : long_len), x);
		for (size_t i = 0; i < NELEM(cuts); i++) {
			rec_init(&r);
			run_split(&p, &r, in.data, in.len, cuts[i]);
			if (strcmp(rec_codes(&r), over ? "220 500" :
			    "220 500 250") != 0)
				fail_msg("case \"over=%d\" cut %zu: got %s",
				    over, cuts[i], rec_codes(&r));
			if (over && strstr(util_buf_cstr(&r.out),
			    "500 5.5.2 Line too long, closing") == NULL)
				fail_msg("case \"over\": no closing 500");
			rec_clear(&r);
		}
	}
	util_buf_clear(&in);
	free(x);
}

static void
test_err_max(void **state)
{
	struct smtp_params p = test_params();
	struct smtp_session *s;
	struct rec r;
	const char *in = "X\r\nY\r\nZ\r\nW\r\nNOOP\r\n";
	size_t n;

	(void)state;
	p.lim.err_max = 3;
	rec_init(&r);
	s = start(&p, &r);
	n = smtp_session_feed(s, in, strlen(in));
	assert_string_equal(rec_codes(&r), "220 500 500 500 421");
	assert_true(strstr(util_buf_cstr(&r.out),
	    "421 4.7.0 mx.example.org Too many errors\r\n") != NULL);
	assert_true(smtp_session_is_closing(s));
	assert_int_equal(n, 12);
	/* closing: nothing more is consumed */
	assert_int_equal(smtp_session_feed(s, "NOOP\r\n", 6), 0);
	smtp_session_free(&s);
	rec_clear(&r);
}

/* ----- the reply table: for each state, each command ----- */

static void
test_state_table(void **state)
{
	static const char *states[] = {
		/* prelude reaching the state, and its codes */
		"",					/* greeted */
		"HELO c\r\n",				/* ready (HELO) */
		"EHLO c\r\n",				/* ready */
		"EHLO c\r\nMAIL FROM:<a@b>\r\n",	/* mail */
		"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", /* rcpt */
	};
	static const struct {
		const char *cmd;
		const char *want[5];
	} cases[] = {
		{ "HELO x", { "250", "250", "250", "250", "250" } },
		{ "EHLO x", { "250", "250", "250", "250", "250" } },
		{ "HELO", { "501", "501", "501", "501", "501" } },
		{ "MAIL FROM:<x@y>", { "503", "250", "250", "503", "503" } },
		{ "MAIL FROM:<x@y> SIZE=1", { "503", "555", "250", "503",
		    "503" } },
		{ "MAIL TO:<x@y>", { "503", "501", "501", "503", "503" } },
		{ "MAIL FROM:<x>", { "503", "501", "501", "503", "503" } },
		{ "RCPT TO:<x@y>", { "503", "503", "503", "250", "250" } },
		{ "RCPT TO:<x>", { "503", "503", "503", "501", "501" } },
		{ "RCPT TO:<postmaster>", { "503", "503", "503", "250",
		    "250" } },
		{ "RCPT TO:<x@y> NOTIFY=NEVER", { "503", "503", "503", "555",
		    "555" } },
		{ "DATA", { "503", "503", "503", "503", "354" } },
		{ "DATA x", { "503", "503", "503", "503", "501" } },
		{ "RSET", { "250", "250", "250", "250", "250" } },
		{ "RSET x", { "501", "501", "501", "501", "501" } },
		{ "NOOP", { "250", "250", "250", "250", "250" } },
		{ "NOOP x", { "250", "250", "250", "250", "250" } },
		{ "VRFY x", { "252", "252", "252", "252", "252" } },
		{ "VRFY", { "501", "501", "501", "501", "501" } },
		{ "EXPN x", { "502", "502", "502", "502", "502" } },
		{ "HELP", { "214", "214", "214", "214", "214" } },
		{ "AUTH PLAIN", { "502", "502", "502", "502", "502" } },
		{ "STARTTLS", { "220", "220", "220", "503", "503" } },
		{ "STARTTLS x", { "501", "501", "501", "501", "501" } },
		{ "QUIT", { "221", "221", "221", "221", "221" } },
		{ "QUIT x", { "501", "501", "501", "501", "501" } },
		{ "BDAT 0", { "503", "503", "503", "503", "250" } },
		{ "BDAT x", { "501", "501", "501", "501", "501" } },
		{ "XYZZY", { "500", "500", "500", "500", "500" } },
	};
	struct smtp_params p = test_params();

	(void)state;
	for (size_t i = 0; i < NELEM(cases); i++) {
		for (size_t st = 0; st < NELEM(states); st++) {
			struct util_buf in = { 0 };
			struct smtp_session *s;
			struct rec r;
			const char *codes, *last;

			rec_init(&r);
			util_buf_printf(&in, "%s%s\r\n", states[st],
			    cases[i].cmd);
			s = start(&p, &r);
			drive(s, &r, in.data, in.len);
			codes = rec_codes(&r);
			last = strrchr(codes, ' ');
			last = last != NULL ? last + 1 : codes;
			if (strcmp(last, cases[i].want[st]) != 0)
				fail_msg("case \"%s\" in state %zu: got %s, "
				    "want %s (all: %s)", cases[i].cmd, st,
				    last, cases[i].want[st], codes);
			smtp_session_free(&s);
			util_buf_clear(&in);
			rec_clear(&r);
		}
	}
}

/* ----- replies, decisions, pipelining ----- */

/* AUTH PLAIN and LOGIN (RFC 4954, 4616) at every split point. */
static void
test_auth(void **state)
{
	/* "\0a@b\0p" and "z\0a@b\0p" in base64 */
#define AP "AGFAYgBw"
#define A10 "AAAAAAAAAA"
#define A100 A10 A10 A10 A10 A10 A10 A10 A10 A10 A10
#define LONG_ANSWER A100 A100 A100 A100 A100 A100 A100 A100 A100 A100 A100
	static const struct dialog_case cases[] = {
		{ "plain initial", "EHLO x\r\nAUTH PLAIN " AP "\r\n", 0,
		    "220 250 235", NULL },
		{ "plain twice", "EHLO x\r\nAUTH PLAIN " AP "\r\nAUTH PLAIN "
		    AP "\r\n", 0, "220 250 235 503", NULL },
		{ "plain continued", "EHLO x\r\nAUTH PLAIN\r\n" AP "\r\n", 0,
		    "220 250 334 235", NULL },
		{ "login", "EHLO x\r\nAUTH LOGIN\r\nYUBi\r\ncA==\r\n", 0,
		    "220 250 334 334 235", NULL },
		{ "login initial", "EHLO x\r\nAUTH LOGIN YUBi\r\ncA==\r\n", 0,
		    "220 250 334 235", NULL },
		{ "cancel", "EHLO x\r\nAUTH LOGIN\r\n*\r\nNOOP\r\n", 0,
		    "220 250 334 501 250", NULL },
		{ "bad base64", "EHLO x\r\nAUTH PLAIN AGF!\r\nNOOP\r\n", 0,
		    "220 250 501 250", NULL },
		/* RFC 4954 4: an answer the line reader refuses ends AUTH */
		{ "answer with NUL", "EHLO x\r\nAUTH PLAIN\r\na\0b\r\nNOOP\r\n",
		    31, "220 250 334 500 250", NULL },
		{ "answer with bare LF", "EHLO x\r\nAUTH LOGIN\r\na\nb\r\n"
		    "NOOP\r\n", 0, "220 250 334 500 250", NULL },
		{ "answer too long", "EHLO x\r\nAUTH LOGIN YUBi\r\n"
		    LONG_ANSWER "\r\nNOOP\r\n", 0, "220 250 334 500 250", NULL },
		/* RFC 4616 2: well formed; acting for z is refused */
		{ "authzid other", "EHLO x\r\nAUTH PLAIN egBhQGIAcA==\r\n"
		    "NOOP\r\n", 0, "220 250 535 250", NULL },
		{ "authzid the same", "EHLO x\r\nAUTH PLAIN YUBiAGFAYgBw\r\n",
		    0, "220 250 235", NULL },
		{ "before EHLO", "AUTH PLAIN " AP "\r\n", 0, "220 503", NULL },
		{ "unknown mechanism", "EHLO x\r\nAUTH XOAUTH2\r\n", 0,
		    "220 250 504", NULL },
		{ "no mechanism", "EHLO x\r\nAUTH\r\n", 0, "220 250 501",
		    NULL },
		{ "in a transaction", "EHLO x\r\nMAIL FROM:<a@b>\r\nAUTH PLAIN "
		    AP "\r\n", 0, "220 250 250 503", NULL },
		/* RFC 4954 5: AUTH= is accepted (and ignored) where offered */
		{ "MAIL AUTH=<> after AUTH", "EHLO x\r\nAUTH PLAIN " AP
		    "\r\nMAIL FROM:<a@b> AUTH=<>\r\n", 0, "220 250 235 250",
		    NULL },
		{ "MAIL AUTH=xtext, AUTH not used", "EHLO x\r\n"
		    "MAIL FROM:<a@b> AUTH=a+2Bb@c SIZE=10\r\n", 0,
		    "220 250 250", NULL },
		{ "MAIL AUTH= bad xtext", "EHLO x\r\nMAIL FROM:<a@b> "
		    "AUTH=a+2b\r\nMAIL FROM:<a@b> AUTH=<> AUTH=<>\r\n"
		    "MAIL FROM:<a@b> AUTH\r\n", 0, "220 250 501 501 501",
		    NULL },
	};
	struct smtp_params p = test_params(), notls = test_params();
	struct rec r;

	(void)state;
	p.auth = p.auth_plaintext = true;
	check_dialogs(cases, sizeof(cases) / sizeof(cases[0]), &p);

	/* Without TLS and without auth-plaintext: 538, nothing advertised. */
	notls.auth = true;
	rec_init(&r);
	run_split(&notls, &r, "EHLO x\r\nAUTH PLAIN " AP "\r\n", 29, 3);
	assert_string_equal(rec_codes(&r), "220 250 538");
	assert_null(strstr(util_buf_cstr(&r.out), "AUTH"));
	rec_clear(&r);
	/* AUTH not offered (no TLS yet, or not at all): AUTH= is 555. */
	for (int offered = 0; offered <= 1; offered++) {
		rec_init(&r);
		notls.auth = offered;
		const char *in = "EHLO x\r\nMAIL FROM:<a@b> AUTH=<>\r\n";
		run_split(&notls, &r, in, strlen(in), 10);
		assert_string_equal(rec_codes(&r), "220 250 555");
		rec_clear(&r);
	}

	/* The answer never reaches the transaction log. */
	rec_init(&r);
	run_split(&p, &r, "EHLO x\r\nAUTH PLAIN\r\n" AP "\r\n", 30, 9);
	assert_string_equal(rec_codes(&r), "220 250 334 235");
	assert_null(strstr(util_buf_cstr(&r.trace), AP));
	rec_clear(&r);
#undef AP
#undef A10
#undef A100
#undef LONG_ANSWER
}

static void
test_ehlo_reply(void **state)
{
	struct smtp_params p = test_params();
	struct smtp_session *s;
	struct rec r;

	(void)state;
	rec_init(&r);
	s = start(&p, &r);
	drives(s, &r, "EHLO client.example\r\nHELO h\r\nQUIT\r\n");
	assert_string_equal(util_buf_cstr(&r.out),
	    "220 mx.example.org ESMTP postern\r\n"
	    "250-mx.example.org Hello client.example\r\n"
	    "250-PIPELINING\r\n"
	    "250-SIZE 100000\r\n"
	    "250-8BITMIME\r\n"
	    "250-ENHANCEDSTATUSCODES\r\n"
	    "250-SMTPUTF8\r\n"
	    "250-CHUNKING\r\n"
	    "250 STARTTLS\r\n"
	    "250 mx.example.org Hello h\r\n"
	    "221 2.0.0 Bye\r\n");
	assert_true(smtp_session_is_closing(s));
	assert_string_equal(util_buf_cstr(&r.trace),
	    "<220 mx.example.org ESMTP postern\n"
	    ">EHLO client.example\n"
	    "<250-mx.example.org Hello client.example\n"
	    "<250-PIPELINING\n<250-SIZE 100000\n<250-8BITMIME\n"
	    "<250-ENHANCEDSTATUSCODES\n<250-SMTPUTF8\n<250-CHUNKING\n"
	    "<250 STARTTLS\n"
	    ">HELO h\n<250 mx.example.org Hello h\n"
	    ">QUIT\n<221 2.0.0 Bye\n");
	smtp_session_free(&s);
	rec_clear(&r);
	/* no STARTTLS once TLS is on; custom greeting */
	p.tls_active = true;
	p.greeting = "ready";
	rec_init(&r);
	s = start(&p, &r);
	drives(s, &r, "EHLO x\r\n");
	assert_non_null(strstr(util_buf_cstr(&r.out), "220 mx.example.org ready\r\n"));
	assert_null(strstr(util_buf_cstr(&r.out), "STARTTLS"));
	assert_non_null(strstr(util_buf_cstr(&r.out), "250 CHUNKING\r\n"));
	smtp_session_free(&s);
	rec_clear(&r);
	/* a long name is cut at 255 bytes in the reply; a 2 GiB SIZE */
	char cmd[320], want[320];
	memset(cmd, 'n', sizeof(cmd));
	memcpy(cmd, "EHLO ", 5);
	memcpy(cmd + 5 + 300, "\r\n", 3);
	snprintf(want, sizeof(want), "250-mx.example.org Hello %.255s\r\n"
	    "250-PIPELINING\r\n250-SIZE 2147483648\r\n", cmd + 5);
	p.lim.msg_max = 2147483648u;
	rec_init(&r);
	s = start(&p, &r);
	drives(s, &r, cmd);
	assert_non_null(strstr(util_buf_cstr(&r.out), want));
	smtp_session_free(&s);
	rec_clear(&r);
}

static void
test_connect_verdicts(void **state)
{
	static const struct {
		const char *name; enum smtp_verdict v; int code;
		const char *text; const char *want; bool closing;
		const char *after;	/* codes after "NOOP" "QUIT" */
	} cases[] = {
		{ "reject default", SMTP_REJECT, 0, NULL,
		    "554 5.3.2 No SMTP service here\r\n", false, "503 221" },
		{ "reject custom", SMTP_REJECT, 554, "5.7.1 Go away", 
		    "554 5.7.1 Go away\r\n", false, "503 221" },
		{ "reject bad code: 421 and close", SMTP_REJECT, 250,
		    "2.0.0 hmm", "421 4.3.0 mx.example.org Service not "
		    "available, closing channel\r\n", true, "" },
		{ "reject 4xx: 421 and close (RFC 5321 3.8)", SMTP_REJECT, 451,
		    "4.7.1 Slow down", "421 4.7.1 mx.example.org Slow down\r\n",
		    true, "" },
		{ "close default", SMTP_CLOSE, 0, NULL,
		    "421 4.3.0 mx.example.org Service not available, "
		    "closing channel\r\n", true, "" },
		{ "close custom, esc added", SMTP_CLOSE, 421, "Busy",
		    "421 4.0.0 mx.example.org Busy\r\n", true, "" },
		{ "ok custom", SMTP_OK, 220, "mx hi", "220 mx hi\r\n", false,
		    "250 221" },
	};

	(void)state;
	for (size_t i = 0; i < NELEM(cases); i++) {
		for (int pend = 0; pend <= 1; pend++) {
			struct smtp_params p = test_params();
			struct smtp_session *s;
			struct rec r;
			const char *codes;

			rec_init(&r);
			r.pending = pend;
			r.v[SMTP_STAGE_CONNECT] = cases[i].v;
			r.code[SMTP_STAGE_CONNECT] = cases[i].code;
			r.text[SMTP_STAGE_CONNECT] = cases[i].text;
			s = start(&p, &r);
			r.pending = false;
			drives(s, &r, "NOOP\r\nQUIT\r\n");
			if (strncmp(util_buf_cstr(&r.out), cases[i].want,
			    strlen(cases[i].want)) != 0)
				fail_msg("case \"%s\": got \"%s\"",
				    cases[i].name, util_buf_cstr(&r.out));
			codes = rec_codes(&r) + 3;
			if (*codes == ' ')
				codes++;
			if (strcmp(codes, cases[i].after) != 0)
				fail_msg("case \"%s\": after %s, want %s",
				    cases[i].name, codes, cases[i].after);
			assert_true(smtp_session_is_closing(s));
			smtp_session_free(&s);
			rec_clear(&r);
		}
	}
}

static void
test_rcpt_rules(void **state)
{
	struct smtp_params p = test_params();
	struct smtp_session *s;
	struct rec r;
	const char *in = "EHLO c\r\nMAIL FROM:<>\r\n"
	    "RCPT TO:<A@x.org>\r\nRCPT TO:<a@X.ORG>\r\n"	/* duplicate */
	    "RCPT TO:<bad@x>\r\n"				/* rejected */
	    "RCPT TO:<b@x>\r\nRCPT TO:<c@x>\r\nRCPT TO:<d@x>\r\n"
	    "RCPT TO:<e@x>\r\nRCPT TO:<f@x>\r\n"		/* 6th */
	    "RCPT TO:<\xc3\xa9@x>\r\n";
	/*
	 * RFC 5321 4.1.1.3: <Postmaster> is the host name's postmaster, and
	 * a needlessly quoted local part the unquoted one: duplicates both.
	 */
	const char *in3 = "EHLO c\r\nMAIL FROM:<\"a\"@b>\r\n"
	    "RCPT TO:<PostMaster>\r\nRCPT TO:<postmaster@MX.example.org>\r\n"
	    "RCPT TO:<\"bob\"@x>\r\nRCPT TO:<bob@x>\r\n"
	    "RCPT TO:<\"b\\ob\"@X>\r\nRCPT TO:<\"b b\"@x>\r\n";
	const char *in2 = "EHLO c\r\nMAIL FROM:<\xc3\xa9@x> SMTPUTF8\r\n"
	    "RCPT TO:<\xc3\xa9@x>\r\nMAIL FROM:<\xc3\xa9@x>\r\n";

	(void)state;
	rec_init(&r);
	r.v[SMTP_STAGE_RCPT] = SMTP_OK;
	s = start(&p, &r);
	/* reject only "bad@x": drive by hand with a per-call verdict */
	drive(s, &r, in, strstr(in, "RCPT TO:<bad") - in);
	r.v[SMTP_STAGE_RCPT] = SMTP_REJECT;
	r.code[SMTP_STAGE_RCPT] = 550;
	r.text[SMTP_STAGE_RCPT] = "5.1.1 No such user";
	drive(s, &r, strstr(in, "RCPT TO:<bad"), 17);
	r.v[SMTP_STAGE_RCPT] = SMTP_OK;
	r.code[SMTP_STAGE_RCPT] = 0;
	drive(s, &r, strstr(in, "RCPT TO:<b@"), strlen(strstr(in,
	    "RCPT TO:<b@")));
	assert_string_equal(rec_codes(&r),
	    "220 250 250 250 250 550 250 250 250 250 452 553");
	assert_non_null(strstr(util_buf_cstr(&r.out), "550 5.1.1 No such "
	    "user\r\n"));
	assert_non_null(strstr(util_buf_cstr(&r.out), "452 4.5.3 Too many "
	    "recipients\r\n"));
	assert_int_equal(smtp_session_rcpt_count(s), 5);
	assert_string_equal(smtp_session_rcpt(s, 0), "A@x.org");
	assert_string_equal(smtp_session_rcpt(s, 4), "e@x");
	assert_null(smtp_session_rcpt(s, 5));
	assert_string_equal(smtp_session_sender(s), "");
	/* duplicate did not ask decide: 1 + rejected + 4 */
	assert_int_equal(r.decides[SMTP_STAGE_RCPT], 6);
	smtp_session_free(&s);
	rec_clear(&r);

	rec_init(&r);
	s = start(&p, &r);
	drive(s, &r, in2, strlen(in2));
	assert_string_equal(rec_codes(&r), "220 250 250 250 503");
	assert_true(smtp_session_smtputf8(s));
	smtp_session_free(&s);
	rec_clear(&r);
	rec_init(&r);
	s = start(&p, &r);
	drives(s, &r, "EHLO c\r\nMAIL FROM:<\xc3\xa9@x>\r\n");
	assert_string_equal(rec_codes(&r), "220 250 553");
	assert_non_null(strstr(util_buf_cstr(&r.out), "553 5.6.7 "));
	smtp_session_free(&s);
	rec_clear(&r);

	rec_init(&r);
	s = start(&p, &r);
	drive(s, &r, in3, strlen(in3));
	assert_string_equal(rec_codes(&r), "220 250 250 250 250 250 250 250 "
	    "250");
	assert_string_equal(smtp_session_sender(s), "a@b");
	assert_int_equal(smtp_session_rcpt_count(s), 3);
	assert_string_equal(smtp_session_rcpt(s, 0),
	    "postmaster@mx.example.org");
	assert_string_equal(smtp_session_rcpt(s, 1), "bob@x");
	assert_string_equal(smtp_session_rcpt(s, 2), "\"b b\"@x");
	assert_int_equal(r.decides[SMTP_STAGE_RCPT], 3);
	smtp_session_free(&s);
	rec_clear(&r);
}

static void
test_pipelining(void **state)
{
	struct smtp_params p = test_params();
	struct smtp_session *s;
	struct rec r;
	const char *in = "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"
	    "RCPT TO:<e@f>\r\nDATA\r\nbody\r\n.\r\nQUIT\r\n";
	size_t n, off = 0;
	unsigned rounds = 0;

	(void)state;
	rec_init(&r);
	r.pending = true;
	r.v[SMTP_STAGE_RCPT] = SMTP_OK;
	s = start(&p, &r);
	/* each decision stops feeding right after its own line */
	while (off < strlen(in)) {
		n = smtp_session_feed(s, in + off, strlen(in) - off);
		off += n;
		if (!smtp_session_is_waiting(s))
			break;
		rounds++;
		/* nothing after the line is taken while waiting */
		assert_int_equal(smtp_session_feed(s, in + off, 1), 0);
		smtp_session_resume(s, r.pend_v, &r.pend_r);
	}
	assert_int_equal(off, strlen(in));
	assert_int_equal(rounds, 7);	/* EHLO MAIL RCPT RCPT DATA EOM QUIT */
	assert_string_equal(rec_codes(&r), "220 250 250 250 250 354 250 221");
	assert_string_equal(rec_body_str(&r), "body\n");
	/* the trace has the DATA command, not the body lines */
	assert_non_null(strstr(util_buf_cstr(&r.trace), ">DATA\n<354 "));
	assert_null(strstr(util_buf_cstr(&r.trace), "body"));
	assert_non_null(strstr(util_buf_cstr(&r.trace), "<354 End data with "
	    "<CR><LF>.<CR><LF>\n<250 2.0.0 Ok\n>QUIT\n"));
	/* a resume with nothing pending is ignored */
	smtp_session_resume(s, SMTP_OK, NULL);
	assert_string_equal(rec_codes(&r), "220 250 250 250 250 354 250 221");
	smtp_session_free(&s);
	rec_clear(&r);
}

/* What the connection holds beyond the feed: rec_input_pending's answer. */
static bool rec_more_input;

static bool
rec_input_pending(void *ctx)
{
	(void)ctx;
	return rec_more_input;
}

/*
 * sync_data (RFC 2920 3.1): message text sent with DATA, before its 354,
 * is 554 5.5.0 and the close, whether it came in the same feed or waits
 * at the connection (input_pending_cb, asked after a PENDING decision
 * too).  A group that ends with DATA, then the text after the 354, is
 * fine; so are BDAT chunks pipelined at will (no sync point).
 */
static void
test_sync_data(void **state)
{
	static const struct dialog_case ok[] = {
		{ "BDAT pipelined", BPRE "BDAT 4\r\nab\r\nBDAT 2 LAST\r\n"
		    "cdMAIL FROM:<x@y>\r\n", 0, BPRE_CODES " 250 250 250",
		    "ab\ncd" },
	};
	const char *group = "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"
	    "DATA\r\n", *text = "body\r\n.\r\nQUIT\r\n";
	struct smtp_params p = test_params();
	struct smtp_hooks h = rec_hooks;
	struct util_buf both = { 0 };
	struct smtp_session *s;
	struct rec r;

	(void)state;
	p.sync_data = true;
	h.input_pending_cb = rec_input_pending;
	util_buf_printf(&both, "%s%s", group, text);
	for (int pend = 0; pend <= 1; pend++) {
		/* one write: refused at DATA, nothing of the text read */
		rec_init(&r);
		r.pending = pend;
		s = smtp_session_new(&p, &h, &r);
		smtp_session_start(s);
		if (smtp_session_is_waiting(s))
			smtp_session_resume(s, r.pend_v, &r.pend_r);
		rec_more_input = pend;	/* PENDING: the rest waits outside */
		drive(s, &r, both.data, both.len);
		assert_string_equal(rec_codes(&r), "220 250 250 250 554");
		assert_true(smtp_session_is_closing(s));
		assert_int_equal(r.body.len, 0);
		assert_true(strstr(util_buf_cstr(&r.out), "554 5.5.0 ") != NULL);
		smtp_session_free(&s);
		rec_clear(&r);
		/* the group, then the text after the 354: delivered */
		rec_init(&r);
		r.pending = pend;
		rec_more_input = false;
		s = smtp_session_new(&p, &h, &r);
		smtp_session_start(s);
		if (smtp_session_is_waiting(s))
			smtp_session_resume(s, r.pend_v, &r.pend_r);
		drive(s, &r, group, strlen(group));
		drive(s, &r, text, strlen(text));
		assert_string_equal(rec_codes(&r), "220 250 250 250 354 250 221");
		assert_string_equal(rec_body_str(&r), "body\n");
		smtp_session_free(&s);
		rec_clear(&r);
	}
	util_buf_clear(&both);
	check_dialogs(ok, NELEM(ok), &p);
}

/* What early_talker_cb heard (the first "when") and what it answers. */
static char	rec_when[64];
static unsigned	rec_whens;
static bool	rec_close_early;

static bool
rec_early_talker(void *ctx, const char *when)
{
	(void)ctx;
	if (rec_whens++ == 0)
		util_strlcpy(rec_when, when, sizeof(rec_when));
	return rec_close_early;
}

/*
 * sync_replies: a client that sends before a reply it must wait for (RFC
 * 2920 3.1: a group ends with EHLO, HELO, NOOP...; a client not offered
 * PIPELINING waits after every command) is an early talker.  Each part
 * is one write; close: 554 5.5.0 instead of the reply, and the close.
 */
static void
test_early_talker(void **state)
{
	static const struct {
		const char	*name, *parts[3];
		bool		 close;
		const char	*want_codes, *want_when;
		const char	*off_codes;	/* without sync_replies */
	} cases[] = {
		{ "EHLO then MAIL in one write", { "EHLO c\r\nMAIL FROM:<a@b>"
		    "\r\n" }, true, "220 554", "before the reply to EHLO",
		    "220 250 250" },
		{ "the same, going on", { "EHLO c\r\nMAIL FROM:<a@b>\r\n" },
		    false, "220 250 250", "before the reply to EHLO", NULL },
		{ "a pipelined group", { "EHLO c\r\n", "MAIL FROM:<a@b>\r\n"
		    "RCPT TO:<c@d>\r\nDATA\r\n", "x\r\n.\r\n" }, true,
		    "220 250 250 250 354 250", NULL, NULL },
		{ "RSET inside a group, NOOP at its end", { "EHLO c\r\n",
		    "RSET\r\nNOOP\r\n" }, true, "220 250 250 250", NULL, NULL },
		{ "a command after NOOP", { "EHLO c\r\n", "NOOP\r\nRSET\r\n" },
		    true, "220 250 554", "before the reply to NOOP",
		    "220 250 250 250" },
		{ "HELO: no pipelining", { "HELO c\r\n", "MAIL FROM:<a@b>\r\n"
		    "RCPT TO:<c@d>\r\n" }, true, "220 250 554",
		    "before the reply to MAIL", "220 250 250 250" },
		{ "HELO, one command a write", { "HELO c\r\n",
		    "MAIL FROM:<a@b>\r\n", "RCPT TO:<c@d>\r\n" }, true,
		    "220 250 250 250", NULL, NULL },
		{ "text before the 354", { "EHLO c\r\n", "MAIL FROM:<a@b>\r\n"
		    "RCPT TO:<c@d>\r\nDATA\r\nx\r\n" }, false,
		    "220 250 250 250 554", "before the 354 reply", NULL },
	};
	struct smtp_params p = test_params();
	struct smtp_hooks h = rec_hooks;

	(void)state;
	h.input_pending_cb = rec_input_pending;
	h.early_talker_cb = rec_early_talker;
	rec_more_input = false;
	for (int sync = 0; sync <= 1; sync++) {
		p.sync_replies = sync;
		p.sync_data = true;
		for (size_t i = 0; i < NELEM(cases); i++) {
			const char *want = cases[i].want_codes, *when =
			    cases[i].want_when;
			struct smtp_session *s;
			struct rec r;

			rec_init(&r);
			rec_whens = 0;
			rec_close_early = cases[i].close;
			s = smtp_session_new(&p, &h, &r);
			smtp_session_start(s);
			for (size_t j = 0; j < 3 && cases[i].parts[j] != NULL;
			    j++)
				drives(s, &r, cases[i].parts[j]);
			if (!sync) {
				/* off: no early talker, every reply */
				if (cases[i].off_codes != NULL)
					want = cases[i].off_codes;
				when = NULL;
			}
			if (strcmp(rec_codes(&r), want) != 0)
				fail_msg("case \"%s\" (sync %d): got %s, want "
				    "%s", cases[i].name, sync, rec_codes(&r),
				    want);
			if (when == NULL ? rec_whens != 0 :
			    strcmp(rec_when, when) != 0)
				fail_msg("case \"%s\" (sync %d): heard \"%s\" "
				    "%u times, want \"%s\"", cases[i].name,
				    sync, rec_whens ? rec_when : "",
				    rec_whens, when != NULL ? when : "");
			if (when != NULL && cases[i].close)
				assert_true(smtp_session_is_closing(s) &&
				    strstr(util_buf_cstr(&r.out), "554 5.5.0 "
				    "mx.example.org Protocol error: talked "
				    "before") != NULL);
			smtp_session_free(&s);
			rec_clear(&r);
		}
	}
	/* bytes waiting at the connection when the greeting goes out */
	p.sync_replies = true;
	rec_close_early = true;
	rec_more_input = true;
	rec_whens = 0;
	struct rec r;
	rec_init(&r);
	struct smtp_session *s = smtp_session_new(&p, &h, &r);
	smtp_session_start(s);
	rec_more_input = false;
	assert_string_equal(rec_codes(&r), "554");
	assert_string_equal(rec_when, "before the greeting");
	assert_true(smtp_session_is_closing(s));
	smtp_session_free(&s);
	rec_clear(&r);
}

static void
test_starttls(void **state)
{
	struct smtp_params p = test_params();
	struct smtp_session *s;
	struct rec r;
	const char *in = "EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x>\r\n";
	size_t n;

	(void)state;
	rec_init(&r);
	s = start(&p, &r);
	n = smtp_session_feed(s, in, strlen(in));
	assert_int_equal(n, strlen("EHLO c\r\nSTARTTLS\r\n"));
	assert_string_equal(rec_codes(&r), "220 250 220");
	assert_non_null(strstr(util_buf_cstr(&r.out),
	    "220 2.0.0 Ready to start TLS\r\n"));
	assert_int_equal(smtp_session_feed(s, "NOOP\r\n", 6), 0);
	smtp_session_tls_started(s);
	assert_null(smtp_session_helo(s));
	assert_false(smtp_session_is_esmtp(s));
	/* RFC 3207 4.2: EHLO again; MAIL before it is a sequence error */
	drives(s, &r, "MAIL FROM:<a@b>\r\nEHLO c\r\nSTARTTLS\r\n");
	assert_string_equal(rec_codes(&r), "220 250 220 503 250 503");
	assert_null(strstr(strstr(util_buf_cstr(&r.out), "Ready"),
	    "STARTTLS"));
	smtp_session_free(&s);
	rec_clear(&r);
	/* not offered: 502; refused by decide: 454 */
	p.starttls = false;
	rec_init(&r);
	s = start(&p, &r);
	drives(s, &r, "STARTTLS\r\n");
	assert_string_equal(rec_codes(&r), "220 502");
	smtp_session_free(&s);
	rec_clear(&r);
	p.starttls = true;
	rec_init(&r);
	r.v[SMTP_STAGE_STARTTLS] = SMTP_REJECT;
	s = start(&p, &r);
	drives(s, &r, "STARTTLS\r\nNOOP\r\n");
	assert_string_equal(rec_codes(&r), "220 454 250");
	smtp_session_free(&s);
	rec_clear(&r);
}

static void
test_eom_verdicts(void **state)
{
	static const struct {
		const char *name; enum smtp_verdict v; int code;
		const char *text; const char *want;
	} cases[] = {
		{ "ok", SMTP_OK, 0, NULL, "250 2.0.0 Ok\r\n" },
		{ "ok custom", SMTP_OK, 250, "2.0.0 Queued as X",
		    "250 2.0.0 Queued as X\r\n" },
		{ "ok bad code", SMTP_OK, 550, "5.0.0 x", "250 2.0.0 Ok\r\n" },
		{ "reject", SMTP_REJECT, 0, NULL,
		    "550 5.7.1 Message refused\r\n" },
		{ "reject multi-line", SMTP_REJECT, 550,
		    "5.7.1 Spam\nsee http://x", "550-5.7.1 Spam\r\n"
		    "550 5.7.1 see http://x\r\n" },
		{ "defer", SMTP_REJECT, 451, "4.7.1 Try later",
		    "451 4.7.1 Try later\r\n" },
		{ "control chars", SMTP_REJECT, 550, "5.7.1 a\rb\x01",
		    "550 5.7.1 a?b?\r\n" },
		{ "close", SMTP_CLOSE, 0, NULL, "421 4.3.0 mx.example.org "
		    "Service not available, closing channel\r\n" },
	};

	(void)state;
	for (size_t i = 0; i < NELEM(cases); i++) {
		for (int pend = 0; pend <= 1; pend++) {
			struct smtp_params p = test_params();
			struct smtp_session *s;
			struct rec r;
			const char *out, *tail;

			rec_init(&r);
			r.pending = pend;
			r.v[SMTP_STAGE_EOM] = cases[i].v;
			r.code[SMTP_STAGE_EOM] = cases[i].code;
			r.text[SMTP_STAGE_EOM] = cases[i].text;
			s = start(&p, &r);
			drive(s, &r, PRELUDE "x\r\n.\r\n",
			    strlen(PRELUDE) + 6);
			out = util_buf_cstr(&r.out);
			tail = strstr(out, "354 End data with "
			    "<CR><LF>.<CR><LF>\r\n");
			assert_non_null(tail);
			tail = strchr(tail, '\n') + 1;
			if (strcmp(tail, cases[i].want) != 0)
				fail_msg("case \"%s\": got \"%s\", want "
				    "\"%s\"", cases[i].name, tail,
				    cases[i].want);
			assert_int_equal(r.eom_size, 3);
			assert_null(smtp_session_sender(s));
			assert_int_equal(smtp_session_rcpt_count(s), 0);
			smtp_session_free(&s);
			rec_clear(&r);
		}
	}
}

static void
test_memory_and_close(void **state)
{
	struct smtp_params p = test_params();
	struct smtp_session *s;
	struct rec r;

	(void)state;
	rec_init(&r);
	s = smtp_session_new(&p, &rec_hooks, &r);
	/* nothing is read before the greeting */
	assert_int_equal(smtp_session_feed(s, "NOOP\r\n", 6), 0);
	smtp_session_start(s);
	assert_null(s->line);
	assert_int_equal(smtp_session_feed(s, "NO", 2), 2);
	assert_non_null(s->line);
	assert_int_equal(smtp_session_feed(s, "OP\r\n", 4), 4);
	assert_null(s->line);
	assert_true(sizeof(*s) < 512);
	smtp_session_close_with(s, 421, "4.4.2 mx.example.org Timeout");
	assert_true(smtp_session_is_closing(s));
	assert_int_equal(smtp_session_feed(s, "NOOP\r\n", 6), 0);
	smtp_session_close_with(s, 421, "4.4.2 again");
	assert_string_equal(rec_codes(&r), "220 250 421");
	smtp_session_free(&s);
	smtp_session_free(&s);
	rec_clear(&r);
}

static void
test_in_data_and_facts(void **state)
{
	struct smtp_params p = test_params();
	struct smtp_session *s;
	struct rec r;

	(void)state;
	rec_init(&r);
	s = start(&p, &r);
	drives(s, &r, "EHLO c\r\nMAIL FROM:<A@B.Org> BODY=8BITMIME\r\n"
	    "RCPT TO:<c@d>\r\n");
	assert_string_equal(smtp_session_helo(s), "c");
	assert_true(smtp_session_is_esmtp(s));
	assert_string_equal(smtp_session_sender(s), "A@b.org");
	assert_int_equal(smtp_session_body_type(s), SMTP_BODY_8BITMIME);
	assert_false(smtp_session_in_data(s));
	drives(s, &r, "DATA\r\n");
	assert_true(smtp_session_in_data(s));
	drives(s, &r, "x\r\n.\r\n");
	assert_false(smtp_session_in_data(s));
	drives(s, &r, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 1\r\nx");
	assert_true(smtp_session_in_data(s));
	drives(s, &r, "RSET\r\n");
	assert_false(smtp_session_in_data(s));
	assert_string_equal(rec_codes(&r),
	    "220 250 250 250 354 250 250 250 250 250");
	smtp_session_free(&s);
	rec_clear(&r);
}

/* A reply given whole replaces the stage's own, byte for byte. */
static void
test_resume_raw(void **state)
{
	static const char *const ehlo = "250-up.example says hi\r\n"
	    "250-PIPELINING\r\n250 8BITMIME\r\n";
	struct smtp_params p = test_params();
	struct smtp_session *s;
	struct rec r;
	const char *o;

	(void)state;
	rec_init(&r);
	r.pending = true;
	s = start(&p, &r);
	util_buf_reset(&r.out);
	util_buf_reset(&r.trace);
	assert_int_equal(smtp_session_feed(s, "EHLO c\r\n", 8), 8);
	assert_true(smtp_session_is_waiting(s));
	smtp_session_resume_raw(s, SMTP_OK, 250, ehlo, strlen(ehlo));
	assert_string_equal(util_buf_cstr(&r.out), ehlo);
	assert_string_equal(util_buf_cstr(&r.trace), ">EHLO c\n"
	    "<250-up.example says hi\n<250-PIPELINING\n<250 8BITMIME\n");
	assert_true(smtp_session_is_esmtp(s));

	/* A refusal keeps the state; an acceptance moves it on. */
	util_buf_reset(&r.out);
	smtp_session_feed(s, "MAIL FROM:<a@b>\r\n", 17);
	smtp_session_resume_raw(s, SMTP_REJECT, 553, "553 5.1.8 no\r\n", 14);
	assert_null(smtp_session_sender(s));
	smtp_session_feed(s, "MAIL FROM:<a@b>\r\n", 17);
	smtp_session_resume_raw(s, SMTP_OK, 250, "250 ok\r\n", 8);
	assert_string_equal(smtp_session_sender(s), "a@b");
	smtp_session_feed(s, "RCPT TO:<c@d>\r\n", 15);
	smtp_session_resume_raw(s, SMTP_OK, 251, "251 2.1.5 fwd\r\n", 15);
	assert_int_equal(smtp_session_rcpt_count(s), 1);
	smtp_session_feed(s, "DATA\r\n", 6);
	smtp_session_resume_raw(s, SMTP_OK, 354, "354 go ahead\r\n", 14);
	assert_true(smtp_session_in_data(s));
	smtp_session_feed(s, "x\r\n.\r\n", 6);
	/* Not whole lines: the stage's own reply goes out instead. */
	smtp_session_resume_raw(s, SMTP_OK, 250, "250 cut", 7);
	o = util_buf_cstr(&r.out);
	assert_string_equal(o, "553 5.1.8 no\r\n250 ok\r\n251 2.1.5 fwd\r\n"
	    "354 go ahead\r\n250 2.0.0 Ok\r\n");
	/* A closing verdict closes after the given reply. */
	smtp_session_feed(s, "QUIT\r\n", 6);
	smtp_session_resume_raw(s, SMTP_CLOSE, 421, "421 4.4.2 gone\r\n", 16);
	assert_true(smtp_session_is_closing(s));
	assert_non_null(strstr(util_buf_cstr(&r.out), "\r\n421 4.4.2 gone\r\n"));
	smtp_session_free(&s);
	rec_clear(&r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cmd_loggable),
		cmocka_unit_test(test_cmd_parse),
		cmocka_unit_test(test_addr_parse),
		cmocka_unit_test(test_addr_parse_reasons),
		cmocka_unit_test(test_addr_limits),
		cmocka_unit_test(test_mail_params),
		cmocka_unit_test(test_bdat_parse),
		cmocka_unit_test(test_data_split),
		cmocka_unit_test(test_data_lines_and_size),
		cmocka_unit_test(test_bdat_split),
		cmocka_unit_test(test_limit_order_split),
		cmocka_unit_test(test_bdat_reject),
		cmocka_unit_test(test_command_lines),
		cmocka_unit_test(test_command_line_max),
		cmocka_unit_test(test_err_max),
		cmocka_unit_test(test_command_line_cut),
		cmocka_unit_test(test_command_policy),
		cmocka_unit_test(test_state_table),
		cmocka_unit_test(test_ehlo_reply),
		cmocka_unit_test(test_auth),
		cmocka_unit_test(test_connect_verdicts),
		cmocka_unit_test(test_rcpt_rules),
		cmocka_unit_test(test_pipelining),
		cmocka_unit_test(test_sync_data),
		cmocka_unit_test(test_early_talker),
		cmocka_unit_test(test_starttls),
		cmocka_unit_test(test_eom_verdicts),
		cmocka_unit_test(test_memory_and_close),
		cmocka_unit_test(test_in_data_and_facts),
		cmocka_unit_test(test_resume_raw),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
