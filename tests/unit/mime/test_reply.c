/*
 * Unit tests of mime/ auto-replies: the RFC 3834 decision for each kind
 * of automatic mail, subject prefixes, and reply messages built and then
 * read back with the parser, display names made 7-bit.
 */
#include "mime/mime.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "util/util.h"

#define AGENT	"nyc-weather@example.org"
#define R5	"Received: x\nReceived: x\nReceived: x\nReceived: x\n" \
		"Received: x\n"
#define R25	R5 R5 R5 R5 R5
#define PLAIN	"From: Ann <ann@example.net>\nTo: " AGENT "\n" \
		"Subject: forecast?\nMessage-ID: <q1@example.net>\n"

static void
test_autoreply_rules(void **state)
{
	static const struct {
		const char	*label, *sender, *header;
		const char	*why;		/* NULL: a reply may go */
	} cases[] = {
		{ "a person", "ann@example.net", PLAIN, NULL },
		{ "Auto-Submitted: no", "ann@example.net",
		  PLAIN "Auto-Submitted: no\n", NULL },
		{ "null sender", "", PLAIN, "null sender" },
		{ "MAILER-DAEMON", "MAILER-DAEMON@example.net", PLAIN,
		  "automated sender" },
		{ "postmaster", "Postmaster@example.net", PLAIN,
		  "automated sender" },
		{ "list owner", "owner-users@lists.example", PLAIN,
		  "automated sender" },
		{ "list request", "users-request@lists.example", PLAIN,
		  "automated sender" },
		{ "list bounces with a tag", "users-bounces+ann=x@lists.example",
		  PLAIN, "automated sender" },
		{ "no-reply", "no-reply@shop.example", PLAIN,
		  "automated sender" },
		{ "a name merely containing a robot's", "postmaster-fan@example.net",
		  PLAIN, NULL },
		{ "the agent itself", "NYC-Weather@example.org", PLAIN,
		  "sent by the agent itself" },
		{ "From: the agent", "ann@example.net", "From: " AGENT "\n\n",
		  "from the agent itself" },
		{ "auto-replied", "ann@example.net",
		  PLAIN "Auto-Submitted: auto-replied\n",
		  "auto-submitted message" },
		{ "auto-generated with a comment", "ann@example.net",
		  PLAIN "Auto-Submitted: auto-generated (vacation)\n",
		  "auto-submitted message" },
		{ "Precedence: bulk", "ann@example.net",
		  PLAIN "Precedence: Bulk\n", "bulk or list precedence" },
		{ "Precedence: junk", "ann@example.net",
		  PLAIN "Precedence: junk\n", "bulk or list precedence" },
		{ "Precedence: list", "ann@example.net",
		  PLAIN "Precedence: list\n", "bulk or list precedence" },
		{ "Precedence: first-class", "ann@example.net",
		  PLAIN "Precedence: first-class\n", NULL },
		{ "List-Id", "ann@example.net",
		  PLAIN "List-Id: <users.lists.example>\n",
		  "mailing list message" },
		{ "List-Unsubscribe", "ann@example.net",
		  PLAIN "List-Unsubscribe: <mailto:u@lists.example>\n",
		  "mailing list message" },
		{ "X-Auto-Response-Suppress", "ann@example.net",
		  PLAIN "X-Auto-Response-Suppress: OOF, AutoReply\n",
		  "auto responses suppressed" },
		{ "delivery report", "ann@example.net",
		  PLAIN "Content-Type: multipart/report; report-type="
		  "delivery-status; boundary=x\n",
		  "delivery or feedback report" },
		{ "25 Received: fields", "ann@example.net",
		  R25 PLAIN, NULL },
		{ "26 Received: fields", "ann@example.net",
		  R25 "Received: x\n" PLAIN,
		  "mail loop (too many Received: fields)" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *msg = xasprintf("%s\nbody\n", cases[i].header);
		struct mime_msg *m = mime_parse_mem(msg, strlen(msg), NULL);
		struct mime_ar_input in = { .msg = m,
		    .sender = cases[i].sender, .agent = AGENT };
		const char *why = NULL;
		bool ok = mime_autoreply_allowed(&in, &why);

		if (cases[i].why == NULL && !ok)
			fail_msg("case \"%s\": refused (%s)", cases[i].label,
			    why);
		if (cases[i].why != NULL && (ok ||
		    strcmp(why, cases[i].why) != 0))
			fail_msg("case \"%s\": got %s, want %s",
			    cases[i].label, ok ? "allowed" : why, cases[i].why);
		mime_msg_free(&m);
		free(msg);
	}
}

static void
test_subject_base(void **state)
{
	static const struct {
		const char	*in, *want;
	} cases[] = {
		{ "forecast", "forecast" },
		{ "Re: forecast", "forecast" },
		{ "RE: Re:  Fwd: forecast ", "forecast" },
		{ "Re[3]: AW: SV: Fw: forecast", "forecast" },
		{ "Re(2): x", "x" },
		{ "Re[x]: kept", "Re[x]: kept" },
		{ "Regarding: kept", "Regarding: kept" },
		{ "Re:", "" },
		{ "", "" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *got = mime_subject_base(cases[i].in);

		if (strcmp(got, cases[i].want) != 0)
			fail_msg("case \"%s\": got \"%s\", want \"%s\"",
			    cases[i].in, got, cases[i].want);
		free(got);
	}
	char *none = mime_subject_base(NULL);
	assert_string_equal(none, "");
	free(none);
}

/* Build r, check it parses back cleanly with the RFC 3834 fields. */
static struct mime_msg *
build(const struct mime_reply *r, char **raw_out)
{
	struct util_buf out = { 0 };
	const char *err = NULL;
	struct mime_msg *m;

	if (mime_reply_build(r, &out, &err) == -1)
		fail_msg("build: %s", err);
	assert_null(memchr(out.data, '\r', out.len));	/* LF only */
	for (size_t i = 0; i < out.len; i++)		/* 7-bit */
		if ((unsigned char)out.data[i] >= 0x80)
			fail_msg("8-bit byte at %zu", i);
	m = mime_parse_mem(out.data, out.len, NULL);
	assert_null(m->parse_error);
	assert_string_equal(mime_msg_header(m, "Auto-Submitted"),
	    "auto-replied");
	assert_string_equal(mime_msg_header(m, "MIME-Version"), "1.0");
	assert_string_equal(m->from_list.v[0].address, AGENT);
	assert_string_equal(m->to_list.v[0].address, "ann@example.net");
	assert_non_null(m->message_id);
	assert_non_null(strstr(m->message_id, "@mx.example.org"));
	assert_non_null(m->date);
	*raw_out = out.data;
	return m;
}

static struct mime_msg *
original(void)
{
	static const char msg[] =
	    "From: Ann <ann@example.net>\nTo: " AGENT "\n"
	    "Subject: =?utf-8?q?Re=3A_M=C3=A9t=C3=A9o?=\n"
	    "Message-ID: <q2@example.net>\n"
	    "References: <q0@example.net> <q1@example.net>\n\nwhat?\n";

	return mime_parse_mem(msg, sizeof(msg) - 1, NULL);
}

static void
test_build_text(void **state)
{
	struct mime_msg *orig = original();
	struct mime_reply r = { .from = AGENT, .from_name = "NYC Weather",
	    .to = "ann@example.net", .orig = orig,
	    .text = "Sunny, 25 °C.\n", .hostname = "mx.example.org",
	    .date = 1700000000 };
	char *raw;
	struct mime_msg *m = build(&r, &raw);

	(void)state;
	/* "Re: " once, before the base subject; RFC 2047 on the wire. */
	assert_string_equal(m->subject, "Re: Météo");
	assert_non_null(strstr(raw, "Subject: Re: =?"));
	assert_string_equal(m->in_reply_to, "q2@example.net");
	assert_int_equal(m->nreferences, 3);
	assert_string_equal(m->references[0], "q0@example.net");
	assert_string_equal(m->references[2], "q2@example.net");
	assert_string_equal(m->from_list.v[0].name, "NYC Weather");
	assert_string_equal(m->content_type, "text/plain");
	assert_string_equal(m->text.s, "Sunny, 25 °C.\n");
	assert_string_equal(m->text.charset, "utf-8");
	assert_int_equal(m->natts, 0);
	free(raw);
	mime_msg_free(&m);
	mime_msg_free(&orig);
}

static void
test_build_alternative_and_files(void **state)
{
	static const unsigned char png[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
	const struct mime_file files[] = {
		{ .filename = "chart.png", .data = png, .len = sizeof(png) },
		{ .filename = "notes.txt", .data = "plain notes\n", .len = 12 },
		{ .filename = "x.bin", .content_type = "application/x-given",
		  .data = "\0\1", .len = 2 },
	};
	struct mime_reply r = { .from = AGENT, .to = "ann@example.net",
	    .subject = "Your forecast", .text = "Sunny.",
	    .html = "<p>Sunny.</p>", .files = files, .nfiles = 3,
	    .hostname = "mx.example.org", .date = 1700000000 };
	char *raw;
	struct mime_msg *m = build(&r, &raw);

	(void)state;
	assert_string_equal(m->subject, "Your forecast");
	assert_null(m->in_reply_to);
	assert_string_equal(m->content_type, "multipart/mixed");
	assert_non_null(strstr(raw, "Content-Type: multipart/alternative"));
	assert_string_equal(m->text.s, "Sunny.");
	assert_string_equal(m->html.s, "<p>Sunny.</p>");
	assert_int_equal(m->natts, 3);
	assert_string_equal(m->atts[0].content_type, "image/png");
	assert_string_equal(m->atts[0].filename, "chart.png");
	assert_string_equal(m->atts[0].disposition, "attachment");
	assert_int_equal(m->atts[0].size, sizeof(png));
	assert_string_equal(m->atts[1].content_type, "text/plain");
	assert_string_equal(m->atts[2].content_type, "application/x-given");
	assert_int_equal(m->atts[2].size, 2);
	free(raw);
	mime_msg_free(&m);
}

static void
test_build_from_agent_mime(void **state)
{
	static const char agent_out[] =
	    "Subject: Forecast for NYC\nMIME-Version: 1.0\n"
	    "Content-Type: multipart/alternative; boundary=z\n\n"
	    "--z\nContent-Type: text/plain; charset=utf-8\n"
	    "Content-Transfer-Encoding: 8bit\n\n20 °C\n"
	    "--z\nContent-Type: text/html; charset=utf-8\n\n<b>20 °C</b>\n"
	    "--z--\n";
	struct mime_msg *orig = original();
	struct mime_reply r = { .from = AGENT, .to = "ann@example.net",
	    .orig = orig, .mime = agent_out, .mime_len = sizeof(agent_out) -
	    1, .hostname = "mx.example.org", .date = 1700000000 };
	char *raw;
	struct mime_msg *m;

	(void)state;
	assert_true(mime_looks_like_message(agent_out, sizeof(agent_out) - 1));
	m = build(&r, &raw);
	assert_string_equal(m->subject, "Forecast for NYC");
	assert_string_equal(m->in_reply_to, "q2@example.net");
	/* RFC 2046 5.1.1: the line break before a boundary is the
	 * boundary's. */
	assert_string_equal(m->text.s, "20 °C");
	assert_string_equal(m->html.s, "<b>20 °C</b>");
	free(raw);
	mime_msg_free(&m);
	mime_msg_free(&orig);
}

static void
test_build_refused(void **state)
{
	static const struct {
		const char		*label;
		struct mime_reply	 r;
		const char		*why;
	} cases[] = {
		{ "no body", { .from = AGENT, .to = "a@example.net" },
		  "empty reply" },
		{ "no recipient", { .from = AGENT, .to = "", .text = "x" },
		  "no sender or recipient" },
		{ "not a message", { .from = AGENT, .to = "a@example.net",
		  .mime = "", .mime_len = 0 },
		  "the reply is not a MIME message" },
		{ "line end in the recipient", { .from = AGENT,
		  .to = "\"a\nX-Injected: yes\"@example.net", .text = "x" },
		  "control character in the sender or recipient" },
		{ "line end in the sender", { .from = "a\r\nb@example.org",
		  .to = "a@example.net", .text = "x" },
		  "control character in the sender or recipient" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct util_buf out = { 0 };
		const char *why = NULL;

		if (mime_reply_build(&cases[i].r, &out, &why) != -1 ||
		    strcmp(why, cases[i].why) != 0)
			fail_msg("case \"%s\": got %s", cases[i].label,
			    why != NULL ? why : "built");
		util_buf_clear(&out);
	}
}

/* A view filled by hand: only well-formed ids reach the header. */
static void
test_build_thread_ids_checked(void **state)
{
	char *refs[] = { "q0@example.net", "x\nX-Injected: yes@example.net",
	    "q1@example.net" };
	struct mime_msg orig = { .message_id = "q2\n\nbody@example.net",
	    .references = refs, .nreferences = 3 };
	struct mime_reply r = { .from = AGENT, .to = "ann@example.net",
	    .orig = &orig, .text = "x", .hostname = "mx.example.org",
	    .date = 1700000000 };
	char *raw;
	struct mime_msg *m = build(&r, &raw);

	(void)state;
	assert_null(strstr(raw, "X-Injected"));
	assert_null(m->in_reply_to);
	assert_non_null(strstr(raw, "\nReferences: <q0@example.net> "
	    "<q1@example.net>\n"));
	free(raw);
	mime_msg_free(&m);
}

static void
test_looks_like_message(void **state)
{
	static const struct {
		const char	*in;
		bool		 want;
	} cases[] = {
		{ "Sunny today.\n", false },
		{ "Subject: x\n\nbody\n", false },	/* no MIME field */
		{ "Content-Type: text/html\n\n<p>x</p>\n", true },
		{ "Subject: x\nMIME-Version: 1.0\n\nbody", true },
		{ "Subject: x\n folded\nmime-version: 1.0\r\n\r\nbody", true },
		{ "Note: see below\nMIME-Version: 1.0 is\nfine\n", false },
		{ "MIME-Version: 1.0", false },		/* no blank line */
		{ "", false },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (mime_looks_like_message(cases[i].in,
		    strlen(cases[i].in)) != cases[i].want)
			fail_msg("case \"%s\": want %d", cases[i].in,
			    cases[i].want);
}

static void
test_encode_phrase(void **state)
{
	static const struct {
		const char	*label, *in, *want;
	} cases[] = {
		{ "atoms", "Ann Example", "Ann Example" },
		{ "specials", "Smith, John \"JJ\" \\", "\"Smith, John "
		  "\\\"JJ\\\" \\\\\"" },
		{ "UTF-8", "J\xc3\xb6rg M\xc3\xbcller",
		  "=?UTF-8?b?SsO2cmcgTcO8bGxlcg==?=" },
		{ "not UTF-8", "J\xf6rg", "=?UTF-8?b?Su+/vXJn?=" },
		{ "controls dropped", "A\tB\x01", "AB" },
		{ "empty", "", "" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *got = mime_encode_phrase(cases[i].in);

		if (strcmp(got, cases[i].want) != 0)
			fail_msg("case \"%s\": got %s, want %s",
			    cases[i].label, got, cases[i].want);
		free(got);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_autoreply_rules),
		cmocka_unit_test(test_subject_base),
		cmocka_unit_test(test_build_text),
		cmocka_unit_test(test_build_alternative_and_files),
		cmocka_unit_test(test_build_from_agent_mime),
		cmocka_unit_test(test_build_refused),
		cmocka_unit_test(test_build_thread_ids_checked),
		cmocka_unit_test(test_looks_like_message),
		cmocka_unit_test(test_encode_phrase),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
