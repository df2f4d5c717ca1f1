/*
 * Unit tests of mime/ templates: JSON escaping by position (inside a
 * string or not), text mode, paths into objects and arrays, and the
 * errors a config check reports.
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

static const char doc_text[] =
    "{\"from\": \"J\\u00f6rg \\\"Joe\\\" <j@example.org>\","
    " \"subject\": \"line1\\nline2\\ttab \\\\ back\","
    " \"text\": \"</script>\\u0001\","
    " \"html\": null,"
    " \"envelope\": {\"sender\": \"s@example.org\","
    "   \"recipients\": [\"a@example.net\", \"b@example.net\"]},"
    " \"attachments\": [{\"filename\": \"x.pdf\", \"size\": 12}],"
    " \"text_truncated\": false}";

static const char *const extra[] = { "envelope", NULL };

static void
test_expand(void **state)
{
	static const struct {
		const char		*label, *tpl;
		enum mime_tpl_mode	 mode;
		const char		*want;
	} cases[] = {
		{ "the bridge's body", "{\"name\": \"%{from}\", \"reply\": "
		  "\"%{subject}\"}", MIME_TPL_JSON,
		  "{\"name\": \"Jörg \\\"Joe\\\" <j@example.org>\", \"reply\": "
		  "\"line1\\nline2\\ttab \\\\ back\"}" },
		{ "control characters escaped", "[\"%{text}\"]", MIME_TPL_JSON,
		  "[\"</script>\\u0001\"]" },
		{ "a value outside a string is JSON", "{\"s\": %{subject}, "
		  "\"n\": %{attachments.0.size}, \"b\": %{text_truncated}}",
		  MIME_TPL_JSON, "{\"s\": \"line1\\nline2\\ttab \\\\ back\", "
		  "\"n\": 12, \"b\": false}" },
		{ "missing or null outside a string", "[%{html}, %{date}, "
		  "%{attachments.5.size}]", MIME_TPL_JSON, "[null, null, null]" },
		{ "missing or null inside a string", "\"<%{html}%{date}>\"",
		  MIME_TPL_JSON, "\"<>\"" },
		{ "an array inside a string", "\"%{envelope.recipients}\"",
		  MIME_TPL_JSON,
		  "\"[\\\"a@example.net\\\",\\\"b@example.net\\\"]\"" },
		{ "an object outside a string", "%{attachments.0}",
		  MIME_TPL_JSON, "{\"filename\":\"x.pdf\",\"size\":12}" },
		{ "a number inside a string", "\"%{attachments.0.size} B\"",
		  MIME_TPL_JSON, "\"12 B\"" },
		{ "escaped quotes keep the string state", "\"a\\\"%{text}\"",
		  MIME_TPL_JSON, "\"a\\\"</script>\\u0001\"" },
		{ "%% is %", "{\"p\": \"100%%\"}", MIME_TPL_JSON,
		  "{\"p\": \"100%\"}" },
		{ "text: strings as they are", "From: %{from}\n%{subject}",
		  MIME_TPL_TEXT, "From: Jörg \"Joe\" <j@example.org>\n"
		  "line1\nline2\ttab \\ back" },
		{ "text: a list of strings joined", "To %{envelope.recipients}.",
		  MIME_TPL_TEXT, "To a@example.net, b@example.net." },
		{ "text: null is nothing, a lone % stays", "[%{html}] 50% off",
		  MIME_TPL_TEXT, "[] 50% off" },
		{ "text: numbers and objects", "%{attachments.0.size} "
		  "%{attachments.0}", MIME_TPL_TEXT,
		  "12 {\"filename\":\"x.pdf\",\"size\":12}" },
		{ "an index into a non-array", "%{from.0}|", MIME_TPL_TEXT, "|" },
	};
	json_error_t je;
	json_t *doc = json_loads(doc_text, 0, &je);

	(void)state;
	if (doc == NULL)
		fail_msg("test document: %s", je.text);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *err = NULL;
		struct mime_tpl *t = mime_tpl_new(cases[i].tpl,
		    strlen(cases[i].tpl), cases[i].mode, extra, &err);
		struct util_buf out = { 0 };

		if (t == NULL)
			fail_msg("case \"%s\": %s", cases[i].label, err);
		mime_tpl_expand(t, doc, &out);
		if (strcmp(util_buf_cstr(&out), cases[i].want) != 0)
			fail_msg("case \"%s\": got %s, want %s", cases[i].label,
			    out.data, cases[i].want);
		/* JSON templates give JSON, whatever the values. */
		if (cases[i].mode == MIME_TPL_JSON) {
			json_t *j = json_loadb(out.data, out.len,
			    JSON_DECODE_ANY, &je);

			if (j == NULL)
				fail_msg("case \"%s\": not JSON: %s",
				    cases[i].label, je.text);
			json_decref(j);
		}
		util_buf_clear(&out);
		mime_tpl_free(&t);
		assert_null(t);
	}
	json_decref(doc);
}

static void
test_errors(void **state)
{
	static const struct {
		const char		*label, *tpl;
		enum mime_tpl_mode	 mode;
		const char		*want;
	} cases[] = {
		{ "unknown field", "{\n\"a\": \"%{form}\"}", MIME_TPL_JSON,
		  "line 2: unknown field \"form\"" },
		{ "not one of the caller's either", "%{client.ip}",
		  MIME_TPL_TEXT, "line 1: unknown field \"client.ip\"" },
		{ "unclosed", "x %{from", MIME_TPL_TEXT,
		  "line 1: \"%{\" without \"}\"" },
		{ "unclosed on its line", "%{from\n}", MIME_TPL_TEXT,
		  "line 1: \"%{\" without \"}\"" },
		{ "empty name", "%{}", MIME_TPL_TEXT,
		  "line 1: bad variable name \"\"" },
		{ "bad characters", "%{from name}", MIME_TPL_TEXT,
		  "line 1: bad variable name \"from name\"" },
		{ "double dot", "%{envelope..sender}", MIME_TPL_TEXT,
		  "line 1: bad variable name \"envelope..sender\"" },
		{ "not JSON", "{\"a\": %{from}", MIME_TPL_JSON,
		  "line 1: not JSON: '}' expected near end of file" },
		{ "a variable as a key", "{%{from}: 1}", MIME_TPL_JSON,
		  "line 1: not JSON: string or '}' expected near 'null'" },
		{ "a variable escaped", "\"a\\%{text}\"", MIME_TPL_JSON,
		  "line 1: a variable right after \\" },
		{ "duplicate keys", "{\"a\": 1, \"a\": 2}", MIME_TPL_JSON,
		  "line 1: not JSON: duplicate object key near '\"a\"'" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *err = NULL;
		struct mime_tpl *t = mime_tpl_new(cases[i].tpl,
		    strlen(cases[i].tpl), cases[i].mode, extra, &err);

		if (t != NULL)
			fail_msg("case \"%s\": accepted", cases[i].label);
		if (strcmp(err, cases[i].want) != 0)
			fail_msg("case \"%s\": got %s, want %s", cases[i].label,
			    err, cases[i].want);
		free(err);
	}
	/* A NUL byte in either mode. */
	for (int mode = 0; mode < 2; mode++) {
		char *err = NULL;

		assert_null(mime_tpl_new("\"a\0\"", 4, mode, extra, &err));
		assert_string_equal(err, "line 1: NUL byte");
		free(err);
	}
}

/* Every byte string compiles or is refused; what compiles expands. */
static void
test_any_bytes(void **state)
{
	static const char *const inputs[] = {
		"%", "%{", "%%{from}", "\"\\", "\"%{text}\\\"", "%{a.}",
		"\"%{from}", "%{from}%{from}%{from}",
	};
	json_t *doc = json_loads(doc_text, 0, NULL);

	(void)state;
	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++)
		for (int mode = 0; mode < 2; mode++) {
			char *err = NULL;
			struct mime_tpl *t = mime_tpl_new(inputs[i],
			    strlen(inputs[i]), mode, extra, &err);
			struct util_buf out = { 0 };

			if (t == NULL) {
				assert_non_null(err);
				free(err);
				continue;
			}
			mime_tpl_expand(t, doc, &out);
			util_buf_clear(&out);
			mime_tpl_free(&t);
		}
	json_decref(doc);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_expand),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_any_bytes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
