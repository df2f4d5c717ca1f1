/*
 * fuzz/fuzz_mime.c: mime_parse_mem() on any bytes, with small bounds: a
 * view always comes out, its bounds hold, its JSON is whole, and the
 * RFC 3834 check and a reply built from it work.
 */
#include "mime/mime.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mime_limits lim = { .text_max = 300, .attach_max = 500,
	    .parts_max = 8, .headers_max = 20 };
	struct mime_msg *m = mime_parse_mem(data, size, &lim);
	struct mime_ar_input in = { .msg = m, .sender = "a@example.org",
	    .agent = "agent@example.org" };
	struct mime_reply r = { .from = "agent@example.org",
	    .to = "a@example.org", .orig = m, .text = "ok",
	    .hostname = "example.org" };
	struct util_buf out = { 0 };
	const char *why;
	json_t *j;
	char *s;
	size_t kept = 0;

	if (m == NULL || m->nheaders > lim.headers_max)
		abort();
	/* A cut character may grow by a replacement; Latin-1 doubles. */
	if (m->text.s != NULL && m->text.len > lim.text_max * 3)
		abort();
	for (size_t i = 0; i < m->natts; i++)
		kept += m->atts[i].data_len;
	if (kept > lim.attach_max || m->natts > lim.parts_max)
		abort();
	j = mime_msg_json(m);
	if ((s = json_dumps(j, JSON_COMPACT)) == NULL)
		abort();
	free(s);
	json_decref(j);
	(void)mime_autoreply_allowed(&in, &why);
	if (mime_reply_build(&r, &out, &why) == -1)
		abort();
	util_buf_clear(&out);
	mime_msg_free(&m);
	return 0;
}
