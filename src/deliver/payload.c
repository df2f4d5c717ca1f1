/*
 * deliver/payload.c: the JSON document webhooks post and agents read: the
 * parsed message (mime/) with the envelope, the queue id and what is
 * known of the client.  Parsing reads the content from the spool as
 * needed, within the limits given.  Knows nothing of HTTP.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <string.h>
#include <time.h>

#include "mime/mime.h"
#include "util/util.h"

const char *const deliver_doc_roots[] = {
	"qid", "envelope", "client", "received_at", "agent", NULL
};

struct mime_msg *
deliver_doc_parse(const struct deliver_msg *m, const struct mime_limits *lim,
    const char **err_out)
{
	if (m->content_path == NULL)
		return mime_parse_mem(m->content, m->content_len, lim);
	return mime_parse_file(m->content_path, lim, err_out);
}

static json_t *
deliver_doc_str(const char *s)
{
	json_t *j = s != NULL ? json_string(s) : NULL;

	/* Addresses and HELO names are peer text: not always UTF-8. */
	if (j == NULL && s != NULL) {
		char esc[1024];

		j = json_string(log_safe_into(esc, sizeof(esc), s,
		    strlen(s)));
	}
	return j != NULL ? j : json_null();
}

static json_t *
deliver_doc_envelope(const struct deliver_msg *m, const char *rcpt)
{
	const struct deliver_origin *o = m->origin;
	json_t *rcpts = json_array();

	for (size_t i = 0; o != NULL && i < o->nrcpts; i++)
		json_array_append_new(rcpts, deliver_doc_str(o->rcpts[i]));
	if (json_array_size(rcpts) == 0 && rcpt != NULL)
		json_array_append_new(rcpts, deliver_doc_str(rcpt));
	return json_pack("{s:o s:o s:o}",
	    "sender", deliver_doc_str(m->return_path != NULL ?
	    m->return_path : ""),
	    "recipients", rcpts,
	    "rcpt", deliver_doc_str(rcpt));
}

static json_t *
deliver_doc_client(const struct deliver_origin *o)
{
	return json_pack("{s:o s:o s:o s:o}",
	    "ip", deliver_doc_str(o != NULL ? o->client_ip : NULL),
	    "helo", deliver_doc_str(o != NULL ? o->helo : NULL),
	    "tls", deliver_doc_str(o != NULL ? o->tls : NULL),
	    "auth", deliver_doc_str(o != NULL ? o->auth_user : NULL));
}

json_t *
deliver_doc_new(const struct deliver_msg *m, const char *rcpt,
    const struct mime_msg *mm, const char *agent)
{
	json_t *doc = mime_msg_json(mm);
	char when[32] = "";
	time_t t = (time_t)m->received;
	struct tm tm;

	if (m->received > 0 && gmtime_r(&t, &tm) != NULL)
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	json_object_set_new(doc, "qid", deliver_doc_str(m->qid));
	json_object_set_new(doc, "envelope", deliver_doc_envelope(m, rcpt));
	json_object_set_new(doc, "client", deliver_doc_client(m->origin));
	json_object_set_new(doc, "received_at", when[0] != '\0' ?
	    json_string(when) : json_null());
	json_object_set_new(doc, "agent", deliver_doc_str(agent));
	return doc;
}
