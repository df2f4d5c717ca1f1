/*
 * fuzz/fuzz_template.c: mime_tpl_new() on any bytes in both modes; what
 * compiles is expanded over a document of hostile values, and a JSON
 * template must then give JSON whatever the values.
 */
#include "mime/mime.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fuzz_doc[] =
    "{\"from\": \"\\\"q\\\" \\\\ \\u0000 }{ %{x}\", \"subject\": \"\\ud83d\\ude00\","
    " \"text\": \"line\\nline\", \"html\": null, \"to\": 5,"
    " \"headers\": [{\"name\": \"a\", \"value\": \"b\"}],"
    " \"envelope\": {\"sender\": \"\", \"recipients\": [\"a\", \"b\"]}}";

static const char *const fuzz_extra[] = { "envelope", "qid", NULL };

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static json_t *doc;

	if (doc == NULL && (doc = json_loads(fuzz_doc, JSON_ALLOW_NUL,
	    NULL)) == NULL)
		abort();
	for (int mode = MIME_TPL_JSON; mode <= MIME_TPL_TEXT; mode++) {
		char *err = NULL;
		struct mime_tpl *t = mime_tpl_new((const char *)data, size,
		    mode, fuzz_extra, &err);
		struct util_buf out = { 0 };

		if (t == NULL) {
			if (err == NULL)
				abort();
			free(err);
			continue;
		}
		mime_tpl_expand(t, doc, &out);
		if (mode == MIME_TPL_JSON) {
			json_error_t e;
			json_t *j = json_loadb(out.data != NULL ? out.data : "",
			    out.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);

			/*
			 * Valid JSON (RFC 8259) that jansson alone refuses: a
			 * \u0000 a value put into an object's key.
			 */
			if (j == NULL && strstr(e.text, "NUL byte in object key")
			    == NULL)
				abort();
			json_decref(j);
		}
		util_buf_clear(&out);
		mime_tpl_free(&t);
	}
	return 0;
}
