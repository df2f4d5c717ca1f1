/*
 * mime/json.c: the parsed view as a JSON object (jansson), the document
 * webhooks post and agents read.  Knows nothing of where it goes.
 */
#include "mime/mime.h"

#include <string.h>

#include "mime/mime_private.h"

const char *const mime_json_members[] = {
	"from", "to", "cc", "reply_to", "subject", "date", "message_id",
	"in_reply_to", "addresses", "references", "headers", "content_type",
	"text", "text_truncated", "html", "html_truncated", "attachments",
	"parts_skipped", "parse_error", NULL
};

/* A JSON string of s (NULL: null); invalid UTF-8 is repaired first. */
static json_t *
mime_json_str(const char *s, size_t len)
{
	json_t *j;

	if (s == NULL)
		return json_null();
	if ((j = json_stringn(s, len)) == NULL) {
		struct util_buf u = { 0 };

		mime_to_utf8(s, len, "utf-8", false, &u);
		j = json_stringn(util_buf_cstr(&u), u.len);
		util_buf_clear(&u);
	}
	return j != NULL ? j : json_string("");
}

static json_t *
mime_json_cstr(const char *s)
{
	return mime_json_str(s, s != NULL ? strlen(s) : 0);
}

static json_t *
mime_json_addrs(const struct mime_addr_list *l)
{
	json_t *a = json_array();

	for (size_t i = 0; i < l->n; i++)
		json_array_append_new(a, json_pack("{s:o s:o}",
		    "name", mime_json_cstr(l->v[i].name),
		    "address", mime_json_cstr(l->v[i].address)));
	return a;
}

static json_t *
mime_json_att(const struct mime_attachment *a)
{
	json_t *j = json_pack("{s:o s:o s:o s:o s:I}",
	    "filename", mime_json_cstr(a->filename),
	    "content_type", mime_json_cstr(a->content_type),
	    "disposition", mime_json_cstr(a->disposition),
	    "content_id", mime_json_cstr(a->content_id),
	    "size", (json_int_t)a->size);

	if (a->data != NULL) {
		gchar *b64 = g_base64_encode(a->data, a->data_len);

		json_object_set_new(j, "content_base64", json_string(b64));
		g_free(b64);
	}
	return j;
}

static void
mime_json_body(json_t *j, const char *key, const char *cut_key,
    const struct mime_body *b)
{
	json_object_set_new(j, key, mime_json_str(b->s, b->len));
	json_object_set_new(j, cut_key, json_boolean(b->truncated));
}

json_t *
mime_msg_json(const struct mime_msg *m)
{
	json_t *j = json_object();
	json_t *refs = json_array(), *hdrs = json_array(), *atts = json_array();

	json_object_set_new(j, "from", mime_json_cstr(m->from));
	json_object_set_new(j, "to", mime_json_cstr(m->to));
	json_object_set_new(j, "cc", mime_json_cstr(m->cc));
	json_object_set_new(j, "reply_to", mime_json_cstr(m->reply_to));
	json_object_set_new(j, "subject", mime_json_cstr(m->subject));
	json_object_set_new(j, "date", mime_json_cstr(m->date));
	json_object_set_new(j, "message_id", mime_json_cstr(m->message_id));
	json_object_set_new(j, "in_reply_to", mime_json_cstr(m->in_reply_to));
	json_object_set_new(j, "addresses", json_pack("{s:o s:o s:o s:o}",
	    "from", mime_json_addrs(&m->from_list),
	    "to", mime_json_addrs(&m->to_list),
	    "cc", mime_json_addrs(&m->cc_list),
	    "reply_to", mime_json_addrs(&m->reply_to_list)));
	for (size_t i = 0; i < m->nreferences; i++)
		json_array_append_new(refs, mime_json_cstr(m->references[i]));
	json_object_set_new(j, "references", refs);
	for (size_t i = 0; i < m->nheaders; i++)
		json_array_append_new(hdrs, json_pack("{s:o s:o}",
		    "name", mime_json_cstr(m->headers[i].name),
		    "value", mime_json_cstr(m->headers[i].value)));
	json_object_set_new(j, "headers", hdrs);
	json_object_set_new(j, "content_type", mime_json_cstr(m->content_type));
	mime_json_body(j, "text", "text_truncated", &m->text);
	mime_json_body(j, "html", "html_truncated", &m->html);
	for (size_t i = 0; i < m->natts; i++)
		json_array_append_new(atts, mime_json_att(&m->atts[i]));
	json_object_set_new(j, "attachments", atts);
	json_object_set_new(j, "parts_skipped",
	    json_integer((json_int_t)m->parts_skipped));
	json_object_set_new(j, "parse_error", mime_json_cstr(m->parse_error));
	return j;
}
