/*
 * deliver/webhook.c: the webhook action: one HTTP request per recipient
 * carrying the message as JSON, as a template's JSON, or raw
 * (message/rfc822, streamed from the spool); an Idempotency-Key that a
 * retry or a restart repeats; an optional HMAC-SHA256 signature; the
 * answer read as a delivery outcome (2xx done; no answer, 408, 429, 5xx
 * later, Retry-After honoured; anything else final).  Knows nothing of
 * the queue.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "http/http.h"
#include "mime/mime.h"
#include "util/util.h"

/* s with every byte outside [A-Za-z0-9@._+-] as %XX, for header values. */
static void
webhook_pct(struct util_buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || strchr("@._+-", c) != NULL) {
			util_buf_add(b, s, 1);
			continue;
		}
		char e[3] = { '%', hex[c >> 4], hex[c & 15] };

		util_buf_add(b, e, 3);
	}
}

static void
webhook_line(struct deliver_webhook_req *w, const char *line)
{
	w->hdrs = xreallocarray(w->hdrs, w->nhdrs + 2, sizeof(*w->hdrs));
	w->hdrs[w->nhdrs++] = xstrdup(line);
	w->hdrs[w->nhdrs] = NULL;
}

/* "name: value", value %-encoded when pct (peer text). */
static void
webhook_header(struct deliver_webhook_req *w, const char *name,
    const char *value, bool pct)
{
	struct util_buf b = { 0 };

	util_buf_printf(&b, "%s: ", name);
	if (pct)
		webhook_pct(&b, value);
	else
		util_buf_addstr(&b, value);
	webhook_line(w, util_buf_cstr(&b));
	util_buf_clear(&b);
}

/* The body: JSON of the parsed message, or the template over it. */
static int
webhook_doc_body(const struct deliver_webhook_opts *o,
    const struct deliver_msg *m, const char *rcpt,
    struct deliver_webhook_req *w, const char **err_out)
{
	struct mime_msg *mm = deliver_doc_parse(m, &o->limits, err_out);
	json_t *doc;

	if (mm == NULL)
		return -1;
	doc = deliver_doc_new(m, rcpt, mm, o->agent);
	if (o->format == DELIVER_WEBHOOK_TEMPLATE) {
		mime_tpl_expand(o->tpl, doc, &w->body);
	} else {
		char *s = json_dumps(doc, JSON_COMPACT);

		util_buf_addstr(&w->body, s);
		free(s);
	}
	json_decref(doc);
	mime_msg_free(&mm);
	w->req.body.data = util_buf_cstr(&w->body);
	w->req.body.len = w->body.len;
	return 0;
}

/* message/rfc822 needs CRLF (RFC 2046 4.1.1): from memory, made here. */
static void
webhook_raw_body(const struct deliver_msg *m, struct deliver_webhook_req *w)
{
	if (m->content_path != NULL) {
		w->req.body.path = m->content_path;
		w->req.body.crlf = true;
		return;
	}
	for (size_t i = 0; i < m->content_len; i++) {
		if (m->content[i] == '\n')
			util_buf_add(&w->body, "\r", 1);
		util_buf_add(&w->body, &m->content[i], 1);
	}
	w->req.body.data = util_buf_cstr(&w->body);
	w->req.body.len = w->body.len;
}

static void
webhook_headers(const struct deliver_webhook_opts *o,
    const struct deliver_msg *m, const char *rcpt,
    struct deliver_webhook_req *w, const char *sig, int64_t ts)
{
	struct util_buf key = { 0 };

	for (const char *const *h = o->headers; h != NULL && *h != NULL; h++)
		webhook_line(w, *h);
	/* The same for every attempt of this recipient: the API can tell
	 * a retry from a new message. */
	util_buf_addstr(&key, "Idempotency-Key: ");
	webhook_pct(&key, m->qid != NULL ? m->qid : "");
	util_buf_addstr(&key, "/");
	webhook_pct(&key, rcpt);
	webhook_line(w, util_buf_cstr(&key));
	util_buf_clear(&key);
	webhook_header(w, "X-Postern-Queue-Id", m->qid != NULL ? m->qid : "",
	    true);
	webhook_header(w, "X-Postern-Envelope-From", m->return_path != NULL ?
	    m->return_path : "", true);
	webhook_header(w, "X-Postern-Envelope-To", rcpt, true);
	if (sig != NULL) {
		char *v = xasprintf("t=%lld,v1=%s", (long long)ts, sig);

		webhook_header(w, "X-Postern-Signature", v, false);
		free(v);
	}
}

int
deliver_webhook_req_new(const struct deliver_webhook_opts *o,
    const struct deliver_msg *m, const char *rcpt,
    struct deliver_webhook_req *w, const char **err_out)
{
	int64_t ts = (int64_t)(util_wall_us() / 1000000);
	char sig[65];

	memset(w, 0, sizeof(*w));
	if (o->format == DELIVER_WEBHOOK_RAW)
		webhook_raw_body(m, w);
	else if (webhook_doc_body(o, m, rcpt, w, err_out) == -1)
		return -1;
	if (http_body_scan(&w->req.body, o->secret, o->secret_len, ts,
	    &w->req.body_len, sig, err_out) == -1) {
		deliver_webhook_req_clear(w);
		return -1;
	}
	webhook_headers(o, m, rcpt, w, o->secret != NULL ? sig : NULL, ts);
	w->req.url = o->url;
	w->req.method = o->method;
	w->req.content_type = o->format == DELIVER_WEBHOOK_RAW ?
	    "message/rfc822" : "application/json";
	w->req.headers = (const char *const *)w->hdrs;
	w->req.bearer = o->bearer;
	w->req.user = o->user;
	w->req.pass = o->pass;
	w->req.ca_file = o->ca_file;
	w->req.no_verify = o->no_verify;
	w->req.timeout_ms = o->timeout_ms;
	w->req.response_max = o->response_max;
	return 0;
}

void
deliver_webhook_req_clear(struct deliver_webhook_req *w)
{
	for (size_t i = 0; i < w->nhdrs; i++)
		free(w->hdrs[i]);
	free(w->hdrs);
	util_buf_clear(&w->body);
	memset(w, 0, sizeof(*w));
}

/*
 * The first line of the answer as the service wrote it, for the status
 * text: at most 200 bytes, cut with "..." but never inside a UTF-8
 * character.  Not escaped: who shows it escapes it (a log line, a DSN, an
 * SMTP reply, each by its own rules).
 */
static void
webhook_answer_line(const struct http_result *res, char *out, size_t outsz)
{
	const char *body = res->body != NULL ? res->body : "";
	size_t n = strcspn(body, "\r\n");

	if (n > 200)
		snprintf(out, outsz, "%.*s...", (int)util_utf8_cut(body, 200),
		    body);
	else
		snprintf(out, outsz, "%.*s", (int)n, body);
}

/* RFC 3463 for a final HTTP status. */
static const char *
webhook_esc(long status)
{
	if (status == 413)
		return "5.3.4";		/* too big for the system */
	if (status == 401 || status == 403)
		return "5.7.1";		/* delivery not authorized */
	return "5.3.0";
}

enum deliver_result
deliver_webhook_outcome(const struct http_result *res,
    struct deliver_rcpt_status *st)
{
	char line[256];

	memset(st, 0, sizeof(*st));
	st->retry_after_ms = res->retry_after_s > 0 ?
	    (uint64_t)res->retry_after_s * 1000 : 0;
	/* The HTTP status goes in the text: code is for SMTP replies. */
	webhook_answer_line(res, line, sizeof(line));
	if (res->status >= 200 && res->status < 300) {
		snprintf(st->text, sizeof(st->text), "2.0.0 HTTP %ld",
		    res->status);
		st->result = DELIVER_OK;
	} else if (res->status == 0) {
		snprintf(st->text, sizeof(st->text), "%s %s", res->err ==
		    HTTP_ERR_TLS ? "4.7.5" : "4.4.1", res->text);
		st->result = DELIVER_TEMPFAIL;
	} else if (http_result_retryable(res)) {
		snprintf(st->text, sizeof(st->text), "4.3.0 HTTP %ld%s%s",
		    res->status, line[0] != '\0' ? ": " : "", line);
		st->result = DELIVER_TEMPFAIL;
	} else {
		snprintf(st->text, sizeof(st->text), "%s HTTP %ld%s%s",
		    webhook_esc(res->status), res->status, line[0] != '\0' ?
		    ": " : "", line);
		st->result = DELIVER_PERMFAIL;
	}
	return st->result;
}

/* No request could be made: try again later. */
static enum deliver_result
webhook_fail(struct deliver_rcpt_status *st, const char *why)
{
	memset(st, 0, sizeof(*st));
	snprintf(st->text, sizeof(st->text), "4.3.0 %s", why);
	st->result = DELIVER_TEMPFAIL;
	return st->result;
}

enum deliver_result
deliver_webhook(struct http_client *hc, const struct deliver_webhook_opts *o,
    const struct deliver_msg *m, const char *rcpt,
    struct deliver_rcpt_status *st, const char **err_out)
{
	struct deliver_webhook_req w;
	struct http_result res;
	enum deliver_result r;

	if (deliver_webhook_req_new(o, m, rcpt, &w, err_out) == -1)
		return webhook_fail(st, *err_out);
	http_perform_until(hc, &w.req, deliver_stop_fd(), &res);
	r = deliver_webhook_outcome(&res, st);
	http_result_clear(&res);
	deliver_webhook_req_clear(&w);
	if (r != DELIVER_OK)
		*err_out = util_err("%s", st->text);
	return r;
}

/* ---- the webhook kind ---- */

void *
deliver_webhook_open(const struct config *c, const struct config_action *a,
    const char **err_out)
{
	(void)c;
	return deliver_hook_new(a->hook, a->name, true, err_out);
}

int
deliver_webhook_check(const struct config *c, const struct config_action *a,
    const char **err_out)
{
	struct deliver_hook *k;

	(void)c;
	if ((k = deliver_hook_new(a->hook, a->name, false, err_out)) == NULL)
		return -1;
	deliver_hook_free(&k);
	return 0;
}

void
deliver_webhook_close(void *runtime)
{
	struct deliver_hook *k = runtime;

	deliver_hook_free(&k);
}

enum deliver_result
deliver_webhook_kind(void *runtime, const char *arg,
    const struct deliver_msg *m, const char *const *rcpts, size_t n,
    struct deliver_rcpt_status *st_out, const char **err_out)
{
	struct deliver_hook *k = runtime;

	(void)arg;
	for (size_t i = 0; i < n; i++) {
		struct deliver_hook_call call;
		const char *err = NULL;

		if (deliver_hook_call_init(k, &call, &err) == -1)
			webhook_fail(&st_out[i], err);
		else
			(void)deliver_webhook(deliver_hook_client(k), &call.o,
			    m, rcpts[i], &st_out[i], &err);
		deliver_hook_call_clear(&call);
	}
	return deliver_status_summary(st_out, n, err_out);
}

/* ---- sync mode: the request on behalf of a waiting SMTP session ---- */

struct webhook_sync {
	struct deliver_hook_call call;
	struct deliver_webhook_req w;
	void		(*done_cb)(void *arg,
			    const struct deliver_rcpt_status *st);
	void		*arg;
};

static void
webhook_sync_done(void *arg, struct http_result *res)
{
	struct webhook_sync *s = arg;
	struct deliver_rcpt_status st;

	(void)deliver_webhook_outcome(res, &st);
	http_result_clear(res);
	deliver_webhook_req_clear(&s->w);
	deliver_hook_call_clear(&s->call);
	s->done_cb(s->arg, &st);
	free(s);
}

int
deliver_webhook_sync(void *runtime, const struct deliver_msg *m,
    const char *rcpt, const struct deliver_sync_waiter *wt,
    const char **err_out)
{
	struct deliver_hook *k = runtime;
	struct webhook_sync *s = xcalloc(1, sizeof(*s));

	if (deliver_hook_call_init(k, &s->call, err_out) == -1 ||
	    deliver_webhook_req_new(&s->call.o, m, rcpt, &s->w, err_out) ==
	    -1) {
		deliver_hook_call_clear(&s->call);
		free(s);
		return -1;
	}
	/* The wait of the SMTP client bounds the whole exchange. */
	if (s->w.req.timeout_ms == 0 || s->w.req.timeout_ms > wt->timeout_ms)
		s->w.req.timeout_ms = wt->timeout_ms;
	if (s->w.req.connect_timeout_ms == 0 ||
	    s->w.req.connect_timeout_ms > wt->timeout_ms)
		s->w.req.connect_timeout_ms = wt->timeout_ms;
	s->w.req.cancel = wt->cancel;
	s->done_cb = wt->done_cb;
	s->arg = wt->arg;
	http_submit_until(deliver_hook_client(k), &s->w.req, wt->stop_fd,
	    webhook_sync_done, s);
	return 0;
}

void
deliver_webhook_sync_cancel(void *runtime, atomic_bool *cancel)
{
	struct deliver_hook *k = runtime;

	http_cancel(deliver_hook_client(k), cancel);
}
