/*
 * Unit tests of mime/ parsing: decoded header fields, bodies in every
 * transfer encoding and charset turned into UTF-8, attachment metadata,
 * Content-Type values and text in a declared charset, bounds, malformed
 * messages, the JSON view, and the memory a 50 MB message costs.
 */
#include "mime/mime.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "mime/mime_private.h"
#include "util/util.h"

static struct mime_msg *
parse(const char *file, const struct mime_limits *lim)
{
	const char *err = NULL;
	char *path = xasprintf("data/%s", file);
	struct mime_msg *m = mime_parse_file(path, lim, &err);

	if (m == NULL)
		fail_msg("%s: %s", path, err);
	free(path);
	return m;
}

static void
test_headers_decoded(void **state)
{
	struct mime_msg *m = parse("mixed.eml", NULL);

	(void)state;
	assert_string_equal(m->subject, "Café menu €5");
	assert_string_equal(m->from, "Jörg Müller <jorg@example.org>");
	assert_int_equal(m->from_list.n, 1);
	assert_string_equal(m->from_list.v[0].name, "Jörg Müller");
	assert_string_equal(m->from_list.v[0].address, "jorg@example.org");
	assert_int_equal(m->to_list.n, 2);
	assert_string_equal(m->to_list.v[1].address, "bob@example.net");
	/* A group's members are listed; the empty group adds nothing. */
	assert_int_equal(m->cc_list.n, 1);
	assert_string_equal(m->cc_list.v[0].name, "Élise");
	assert_string_equal(m->message_id, "abc.123@example.org");
	assert_string_equal(m->in_reply_to, "parent@example.org");
	assert_int_equal(m->nreferences, 2);
	assert_string_equal(m->references[0], "root@example.org");
	assert_int_equal(m->nreceived, 2);
	assert_string_equal(m->date, "Mon, 1 Jan 2024 10:00:00 +0100");
	assert_string_equal(mime_msg_header(m, "subject"), "Café menu €5");
	assert_null(mime_msg_header(m, "X-Nothing"));
	assert_string_equal(m->content_type, "multipart/mixed");
	assert_null(m->parse_error);
	mime_msg_free(&m);
	assert_null(m);
}

static bool
str_eq(const char *a, const char *b)
{
	return a == NULL || b == NULL ? a == b : strcmp(a, b) == 0;
}

/* RFC 5322 3.6.4: ids as written, never decoded; malformed ones left out. */
static void
test_message_ids(void **state)
{
	static const struct {
		const char	*label, *header;
		const char	*id, *irt;	/* NULL: none */
		const char	*refs;		/* joined by " " */
	} cases[] = {
		{ "plain", "Message-ID: <a@x>\nIn-Reply-To: <b@x>\n"
		  "References: <c@x> <b@x>\n", "a@x", "b@x", "c@x b@x" },
		{ "encoded word kept as written",
		  "Message-ID: <=?utf-8?q?x=0AX-I:_y?=@x>\n",
		  "=?utf-8?q?x=0AX-I:_y?=@x", NULL, "" },
		{ "blank inside",
		  "Message-ID: <=?utf-8?q?x=0A?= =?utf-8?q?y?=@x>\n"
		  "In-Reply-To: <a b@x>\n", NULL, NULL, "" },
		{ "no @", "Message-ID: <abc>\nIn-Reply-To: <@x>\n"
		  "References: <x@>\n", NULL, NULL, "" },
		{ "8-bit", "Message-ID: <\xc3\xa9@x>\n", NULL, NULL, "" },
		{ "unclosed", "Message-ID: <a@x\nReferences: <b@x> <c@x\n",
		  NULL, NULL, "b@x" },
		{ "comments, folding, phrase",
		  "Message-ID: (<no@x>) <a@x> (c)\n"
		  "In-Reply-To: \"Ann <no@x>\" message\n <b@x>\n"
		  "References: <c@x>\n\t<bad\n @x> <b@x>\n",
		  "a@x", "b@x", "c@x b@x" },
		{ "a < inside starts the next", "References: <a<b@x>\n",
		  NULL, NULL, "b@x" },
		{ "literal domain", "Message-ID: <a.b@[192.0.2.1]>\n",
		  "a.b@[192.0.2.1]", NULL, "" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *msg = xasprintf("From: a@x\n%s\nbody\n",
		    cases[i].header);
		struct mime_msg *m = mime_parse_mem(msg, strlen(msg), NULL);
		struct util_buf refs = { 0 };

		for (size_t j = 0; j < m->nreferences; j++)
			util_buf_printf(&refs, "%s%s", j > 0 ? " " : "",
			    m->references[j]);
		if (!str_eq(m->message_id, cases[i].id) ||
		    !str_eq(m->in_reply_to, cases[i].irt) ||
		    strcmp(util_buf_cstr(&refs), cases[i].refs) != 0)
			fail_msg("case \"%s\": got id %s irt %s refs \"%s\"",
			    cases[i].label, m->message_id != NULL ?
			    m->message_id : "(none)", m->in_reply_to != NULL ?
			    m->in_reply_to : "(none)", util_buf_cstr(&refs));
		util_buf_clear(&refs);
		mime_msg_free(&m);
		free(msg);
	}
}

static void
test_bodies_and_attachments(void **state)
{
	struct mime_limits lim = { .attach_max = 2000 };
	struct mime_msg *m = parse("mixed.eml", &lim);

	(void)state;
	/* quoted-printable, with a soft line break */
	assert_string_equal(m->text.s, "Bonjour, voilà le menu €. Soft break.");
	assert_false(m->text.truncated);
	assert_string_equal(m->text.charset, "utf-8");
	/* base64 */
	assert_string_equal(m->html.s, "<p>Bonjour, voilà</p>");
	assert_int_equal(m->natts, 2);
	/* RFC 2231 file name, decoded size, content id without <> */
	assert_string_equal(m->atts[0].filename, "grüße.png");
	assert_string_equal(m->atts[0].content_type, "image/png");
	assert_string_equal(m->atts[0].disposition, "attachment");
	assert_string_equal(m->atts[0].content_id, "img1@example.org");
	assert_int_equal(m->atts[0].size, 8 + 1024);
	assert_non_null(m->atts[0].data);
	assert_memory_equal(m->atts[0].data, "\x89PNG\r\n\x1a\n", 8);
	assert_int_equal(m->atts[0].data_len, 1032);
	/* the content-type name, no disposition; over what is left: no data */
	assert_string_equal(m->atts[1].filename, "report.pdf");
	assert_null(m->atts[1].disposition);
	assert_int_equal(m->atts[1].size, 5009);
	assert_null(m->atts[1].data);
	mime_msg_free(&m);

	/* Metadata only by default. */
	m = parse("mixed.eml", NULL);
	assert_int_equal(m->atts[0].size, 1032);
	assert_null(m->atts[0].data);
	mime_msg_free(&m);
}

static void
test_charsets(void **state)
{
	static const struct {
		const char	*file, *text, *charset;
	} cases[] = {
		{ "latin1.eml", "Grüße aus Köln ©\n", "ISO-8859-1" },
		{ "undeclared.eml", "“quoted” café\n", "windows-1252" },
		{ "unknown.eml", "ok é then \xef\xbf\xbd bad\n", "utf-8" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct mime_msg *m = parse(cases[i].file, NULL);

		if (strcmp(m->text.s, cases[i].text) != 0 ||
		    strcmp(m->text.charset, cases[i].charset) != 0)
			fail_msg("case \"%s\": got \"%s\" from %s, want \"%s\" "
			    "from %s", cases[i].file, m->text.s,
			    m->text.charset, cases[i].text, cases[i].charset);
		mime_msg_free(&m);
	}
}

/* A Content-Type value: its media type in lower case and its charset. */
static void
test_media_type(void **state)
{
	static const struct {
		const char	*label, *value, *type, *charset;
	} cases[] = {
		{ "plain", "text/plain", "text/plain", NULL },
		{ "upper case", "Application/JSON", "application/json", NULL },
		{ "charset", "text/plain; charset=koi8-r", "text/plain",
		  "koi8-r" },
		{ "quoted, upper-case name", "TEXT/HTML ; CHARSET=\"UTF-8\"",
		  "text/html", "UTF-8" },
		{ "other parameters", "text/plain; format=flowed; "
		  "charset=iso-8859-1", "text/plain", "iso-8859-1" },
		{ "longer subtype", "application/jsonx", "application/jsonx",
		  NULL },
		{ "empty", "", "application/octet-stream", NULL },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *cs = NULL;
		char *type = mime_media_type(cases[i].value, &cs);

		if (strcmp(type, cases[i].type) != 0 || (cs == NULL) !=
		    (cases[i].charset == NULL) || (cs != NULL &&
		    strcmp(cs, cases[i].charset) != 0))
			fail_msg("case \"%s\": got %s charset %s, want %s "
			    "charset %s", cases[i].label, type, cs != NULL ?
			    cs : "none", cases[i].type, cases[i].charset !=
			    NULL ? cases[i].charset : "none");
		free(type);
		free(cs);
	}
}

/* Text in a declared charset, any case, as UTF-8. */
static void
test_text_utf8(void **state)
{
	static const struct {
		const char	*label, *in, *charset, *want;
	} cases[] = {
		{ "koi8-r", "\xf0\xd2\xc9\xd7\xc5\xd4", "koi8-r",
		  "Привет" },
		{ "KOI8-R", "\xf0\xd2\xc9\xd7\xc5\xd4", "KOI8-R",
		  "Привет" },
		{ "undeclared UTF-8", "Привет", NULL, "Привет" },
		{ "undeclared 8-bit", "caf\xe9", NULL, "café" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct util_buf b = { 0 };

		mime_text_utf8(cases[i].in, strlen(cases[i].in),
		    cases[i].charset, &b);
		if (strcmp(b.data, cases[i].want) != 0)
			fail_msg("case \"%s\": got \"%s\", want \"%s\"",
			    cases[i].label, b.data, cases[i].want);
		util_buf_clear(&b);
	}
}

static void
test_malformed(void **state)
{
	static const struct {
		const char	*label, *file, *error, *text;
	} cases[] = {
		{ "multipart without boundary", "noboundary.eml",
		  "multipart without boundary",
		  "this is the raw body\n--x\nContent-Type: text/plain\n\n"
		  "hidden\n" },
		{ "no header", "noheader.eml",
		  "invalid header field; no message header",
		  "this line has no colon\nand so on\n" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct mime_msg *m = parse(cases[i].file, NULL);

		if (m->parse_error == NULL ||
		    strcmp(m->parse_error, cases[i].error) != 0)
			fail_msg("case \"%s\": parse_error \"%s\", want \"%s\"",
			    cases[i].label, m->parse_error, cases[i].error);
		if (strcmp(m->text.s, cases[i].text) != 0)
			fail_msg("case \"%s\": text \"%s\"", cases[i].label,
			    m->text.s);
		mime_msg_free(&m);
	}
}

static void
test_garbage_in_memory(void **state)
{
	static const struct {
		const char	*label, *in;
	} cases[] = {
		{ "empty", "" },
		{ "NULs", "Subject: a\0b\n\n\0\0\0" },
		{ "binary", "\xff\xfe\x00\x01\n\n\x80" },
		{ "unterminated multipart", "Content-Type: multipart/mixed; "
		  "boundary=x\n\n--x\nContent-Type: text/plain\n\nhalf" },
		{ "bad base64", "Content-Transfer-Encoding: base64\n\n!!!*** "
		  "\xff" },
		{ "nested deep", "Content-Type: multipart/mixed; boundary=a\n\n"
		  "--a\nContent-Type: message/rfc822\n\nContent-Type: "
		  "multipart/mixed; boundary=a\n\n--a\n" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = strlen(cases[i].in);
		struct mime_msg *m;
		json_t *j;
		char *s;

		if (strcmp(cases[i].label, "NULs") == 0)
			len = 17;
		m = mime_parse_mem(cases[i].in, len, NULL);
		j = mime_msg_json(m);
		/* Whatever came in, the JSON is whole and valid UTF-8. */
		s = json_dumps(j, JSON_COMPACT);
		if (s == NULL)
			fail_msg("case \"%s\": no JSON", cases[i].label);
		free(s);
		json_decref(j);
		mime_msg_free(&m);
	}
}

static void
test_truncation(void **state)
{
	/* "voilà": the cut falls inside the two bytes of "à". */
	struct mime_limits lim = { .text_max = 14 };
	struct mime_msg *m = parse("mixed.eml", &lim);

	(void)state;
	assert_true(m->text.truncated);
	assert_string_equal(m->text.s, "Bonjour, voil");
	assert_true(m->html.truncated);
	mime_msg_free(&m);

	lim = (struct mime_limits){ .parts_max = 2 };
	m = parse("mixed.eml", &lim);
	assert_int_equal(m->natts, 0);
	assert_int_equal(m->parts_skipped, 2);
	mime_msg_free(&m);

	lim = (struct mime_limits){ .headers_max = 3 };
	m = parse("mixed.eml", &lim);
	assert_int_equal(m->nheaders, 3);
	assert_int_equal(m->nreceived, 2);
	mime_msg_free(&m);
}

static void
test_attached_message(void **state)
{
	struct mime_msg *m = parse("report.eml", NULL);

	(void)state;
	assert_string_equal(m->text.s, "It failed.");
	assert_int_equal(m->natts, 2);
	assert_string_equal(m->atts[0].content_type, "message/delivery-status");
	assert_string_equal(m->atts[1].content_type, "message/rfc822");
	assert_true(m->atts[1].size > 40);
	mime_msg_free(&m);
}

static void
test_json(void **state)
{
	struct mime_limits lim = { .attach_max = SIZE_MAX };
	struct mime_msg *m = parse("mixed.eml", &lim);
	json_t *j = mime_msg_json(m), *a;
	size_t n = 0;
	const char *key;
	json_t *v;

	(void)state;
	assert_string_equal(json_string_value(json_object_get(j, "subject")),
	    "Café menu €5");
	a = json_object_get(json_object_get(j, "addresses"), "from");
	assert_string_equal(json_string_value(json_object_get(
	    json_array_get(a, 0), "address")), "jorg@example.org");
	a = json_array_get(json_object_get(j, "attachments"), 1);
	assert_int_equal(json_integer_value(json_object_get(a, "size")), 5009);
	assert_true(strncmp(json_string_value(json_object_get(a,
	    "content_base64")), "JVBERi0xLjQg", 12) == 0);
	assert_true(json_is_null(json_object_get(j, "parse_error")));
	/* The list templates check against names exactly the members. */
	json_object_foreach(j, key, v) {
		bool found = false;

		for (size_t i = 0; mime_json_members[i] != NULL; i++)
			found |= strcmp(mime_json_members[i], key) == 0;
		if (!found)
			fail_msg("member \"%s\" missing from the list", key);
		n++;
	}
	for (size_t i = 0; mime_json_members[i] != NULL; i++)
		n--;
	assert_int_equal(n, 0);
	json_decref(j);
	mime_msg_free(&m);
}

static void
test_unreadable_file(void **state)
{
	const char *err = NULL;

	(void)state;
	assert_null(mime_parse_file("data/no-such-file", NULL, &err));
	assert_string_equal(err, "open(data/no-such-file): No such file or "
	    "directory");
}

/* ---- memory of a 50 MB message ---- */

/* Peak resident set of this process so far, in KiB. */
static long
peak_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kib = -1;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* A message of about 50 MB: a text part of text_mb and an attachment. */
static char *
write_big(size_t text_bytes, size_t att_bytes)
{
	char *path = xstrdup("/tmp/postern-mime-XXXXXX");
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
	    "qrstuvwxyz0123456789+/";

	assert_non_null(f);
	fputs("From: a@example.org\nSubject: big\nMIME-Version: 1.0\n"
	    "Content-Type: multipart/mixed; boundary=b\n\n--b\n"
	    "Content-Type: text/plain; charset=utf-8\n\n", f);
	for (size_t i = 0; i < text_bytes / 64; i++)
		fprintf(f, "%.63s\n", b64);
	fputs("--b\nContent-Type: application/octet-stream; name=big.bin\n"
	    "Content-Transfer-Encoding: base64\n\n", f);
	for (size_t i = 0; i < att_bytes / 57; i++)
		fprintf(f, "%.76s\n", "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0");
	fputs("--b--\n", f);
	fclose(f);
	return path;
}

static void
test_big_message_memory(void **state)
{
	static const struct {
		const char	*label;
		size_t		 text, att;
	} cases[] = {
		{ "50 MB attachment", 1000, 37u << 20 },
		{ "50 MB text", 50u << 20, 1000 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *path = write_big(cases[i].text, cases[i].att);
		long before = peak_kib(), grew;
		const char *err;
		struct mime_msg *m = mime_parse_file(path, NULL, &err);
		json_t *j = mime_msg_json(m);
		char *s = json_dumps(j, JSON_COMPACT);

		assert_non_null(s);
		grew = peak_kib() - before;
		/* The text is kept up to 1 MiB; the rest stays on disk. */
		if (grew > 24 * 1024)
			fail_msg("case \"%s\": the peak grew by %ld KiB",
			    cases[i].label, grew);
		if (cases[i].att > 1000)
			assert_int_equal(m->atts[0].size, cases[i].att / 57 * 57);
		else
			assert_true(m->text.truncated);
		free(s);
		json_decref(j);
		mime_msg_free(&m);
		unlink(path);
		free(path);
	}
}

/* Freed memory in ASan's quarantine would count as resident. */
const char *__asan_default_options(void);
const char *
__asan_default_options(void)
{
	return "quarantine_size_mb=4";
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_headers_decoded),
		cmocka_unit_test(test_message_ids),
		cmocka_unit_test(test_bodies_and_attachments),
		cmocka_unit_test(test_charsets),
		cmocka_unit_test(test_media_type),
		cmocka_unit_test(test_text_utf8),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_garbage_in_memory),
		cmocka_unit_test(test_truncation),
		cmocka_unit_test(test_attached_message),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_unreadable_file),
		cmocka_unit_test(test_big_message_memory),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
