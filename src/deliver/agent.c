/*
 * deliver/agent.c: the reply action: a mailbox that answers.  For each
 * message: the RFC 3834 rules, then the reply memory (one reply per
 * sender per agent per period), then the agent itself (a canned text, a
 * command, or a web service) makes the reply, which is built as a proper
 * message and put in the queue from <> to the sender.  An agent that
 * fails for good costs a log line, never a bounce; one that hangs or
 * crashes is retried.  Knows nothing of the queue but its inject hook.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chain/chain.h"
#include "config/config.h"
#include "http/http.h"
#include "log/log.h"
#include "mime/mime.h"
#include "util/util.h"

#define AGENT_PERIOD_DEFAULT_MS	(24ull * 3600 * 1000)
#define AGENT_TIMEOUT_DEFAULT_MS	(60u * 1000)
#define AGENT_OUT_MAX_DEFAULT	(1024u * 1024)

struct deliver_agent {
	struct deliver_agent_opts o;	/* strings borrowed from the config */
	struct deliver_memo	*memo;	/* owned */
};

/* What an agent made: a reply, or the reason there is none. */
struct agent_out {
	struct util_buf	 text, html, subject, mime;
	bool		 has_text, has_html, has_subject, has_mime;
	enum deliver_result fail;	/* not OK: the agent failed so */
	char		 why[300];	/* ... for this reason */
};

struct deliver_agent *
deliver_agent_new(const struct deliver_agent_opts *o, const char *store_spec,
    const char **err_out)
{
	struct deliver_agent *a = xcalloc(1, sizeof(*a));

	a->o = *o;
	if ((a->memo = deliver_memo_open(store_spec != NULL ? store_spec :
	    "memory:", err_out)) == NULL)
		goto fail;
	return a;
fail:
	deliver_agent_free(&a);
	return NULL;
}

void
deliver_agent_free(struct deliver_agent **ap)
{
	struct deliver_agent *a = *ap;

	if (a == NULL)
		return;
	*ap = NULL;
	deliver_memo_close(&a->memo);
	free(a);
}

static void
agent_out_clear(struct agent_out *out)
{
	util_buf_clear(&out->text);
	util_buf_clear(&out->html);
	util_buf_clear(&out->subject);
	util_buf_clear(&out->mime);
}

static void agent_fail(struct agent_out *, enum deliver_result,
    const char *, ...) UTIL_PRINTF(3, 4);

static void
agent_fail(struct agent_out *out, enum deliver_result r, const char *fmt,
    ...)
{
	va_list ap;

	out->fail = r;
	va_start(ap, fmt);
	if (vsnprintf(out->why, sizeof(out->why), fmt, ap) < 0)
		out->why[0] = '\0';
	va_end(ap);
}

/*
 * Program output or a web answer as the reply body; charset is the one
 * the answer declared, or NULL.
 */
static void
agent_take_text(struct agent_out *out, const char *s, size_t len, bool html,
    const char *charset)
{
	if (len == 0)
		return;			/* nothing to say: no reply */
	if (mime_looks_like_message(s, len)) {
		util_buf_add(&out->mime, s, len);
		util_buf_cstr(&out->mime);
		out->has_mime = true;
	} else if (html) {
		mime_text_utf8(s, len, charset, &out->html);
		out->has_html = true;
	} else {
		mime_text_utf8(s, len, charset, &out->text);
		out->has_text = true;
	}
}

/* ---- the kinds ---- */

static void
agent_text(const struct deliver_agent *a, const json_t *doc,
    struct agent_out *out)
{
	struct util_buf b = { 0 };

	mime_tpl_expand(a->o.text, doc, &b);
	agent_take_text(out, b.data, b.len, false, NULL);
	util_buf_clear(&b);
}

static char **
agent_env(const struct deliver_msg *m, const char *agent)
{
	char **env = xcalloc(6, sizeof(*env));

	env[0] = xstrdup("PATH=/usr/bin:/bin");
	env[1] = xasprintf("SENDER=%s", m->return_path != NULL ?
	    m->return_path : "");
	env[2] = xasprintf("RECIPIENT=%s", agent);
	env[3] = xasprintf("POSTERN_QID=%s", m->qid != NULL ? m->qid : "");
	env[4] = xasprintf("POSTERN_AGENT=%s", agent);
	return env;
}

static void
agent_command(const struct deliver_agent *a, const struct deliver_msg *m,
    const char *agent, const json_t *doc, struct agent_out *out)
{
	char *in = json_dumps(doc, JSON_COMPACT);
	char **env = agent_env(m, agent);
	struct deliver_prog p = { .argv = a->o.argv, .envp = env,
	    .user = a->o.user, .server_user = a->o.server_user,
	    .timeout_ms = a->o.timeout_ms != 0 ? a->o.timeout_ms :
	    AGENT_TIMEOUT_DEFAULT_MS,
	    .out_max = a->o.out_max != 0 ? a->o.out_max :
	    AGENT_OUT_MAX_DEFAULT, .body = in, .body_len = strlen(in) };
	struct deliver_prog_result res;
	const char *err = NULL;

	if (deliver_prog_run(&p, &res, &err) == -1) {
		agent_fail(out, DELIVER_TEMPFAIL, "4.3.0 %s", err);
	} else if (res.timed_out || res.exit_code == -1 ||
	    res.exit_code == 75) {
		/* Hung, crashed, stopped or asked for it: later. */
		agent_fail(out, DELIVER_TEMPFAIL, "4.3.0 %s %s%s", a->o.argv[0],
		    res.timed_out ? "timed out" : res.stopped ?
		    "cut short: postern is stopping" : res.exit_code == 75 ?
		    "asked to try later" : "was killed", res.err_line[0] !=
		    '\0' ? ": " : "");
		util_strlcpy(out->why + strlen(out->why), res.err_line,
		    sizeof(out->why) - strlen(out->why));
	} else if (res.exit_code != 0) {
		agent_fail(out, DELIVER_PERMFAIL, "%s exited with status %d%s%s",
		    a->o.argv[0], res.exit_code, res.err_line[0] != '\0' ?
		    ": " : "", res.err_line);
	} else if (res.out_cut) {
		agent_fail(out, DELIVER_PERMFAIL, "%s wrote more than %zu "
		    "bytes", a->o.argv[0], p.out_max);
	} else {
		agent_take_text(out, res.out.data, res.out.len, false,
		    NULL);
	}
	deliver_prog_result_clear(&res);
	for (size_t i = 0; env[i] != NULL; i++)
		free(env[i]);
	free(env);
	free(in);
}

/*
 * An answer as a value: a string is the text (or a whole MIME message),
 * an object gives {"text", "html", "subject"}, null or false no reply.
 */
static void
agent_value(const json_t *j, struct agent_out *out)
{
	static const char *const keys[] = { "text", "html", "subject" };
	struct util_buf *bufs[] = { &out->text, &out->html, &out->subject };
	bool *has[] = { &out->has_text, &out->has_html, &out->has_subject };

	if (json_is_null(j) || json_is_false(j))
		return;
	if (json_is_string(j)) {
		agent_take_text(out, json_string_value(j),
		    json_string_length(j), false, NULL);
		return;
	}
	if (!json_is_object(j)) {
		agent_fail(out, DELIVER_PERMFAIL, "the answer is neither text "
		    "nor an object");
		return;
	}
	for (size_t i = 0; i < 3; i++) {
		json_t *v = json_object_get(j, keys[i]);

		if (!json_is_string(v))
			continue;
		util_buf_add(bufs[i], json_string_value(v),
		    json_string_length(v));
		util_buf_cstr(bufs[i]);
		*has[i] = json_string_length(v) > 0;
	}
}

static void
agent_lua(const struct deliver_agent *a, const json_t *doc,
    struct agent_out *out)
{
	json_t *res = NULL;
	char *err = NULL;

	if (chain_lua_box_call(a->o.lua, doc, &res, &err) == -1) {
		agent_fail(out, DELIVER_PERMFAIL, "%s", err);
		free(err);
		return;
	}
	agent_value(res, out);
	json_decref(res);
}

/* A web service's 2xx answer as the reply, by its media type. */
static void
agent_webhook_answer(const struct http_result *res, struct agent_out *out)
{
	char *charset = NULL;
	char *type = mime_media_type(res->content_type != NULL ?
	    res->content_type : "", &charset);

	if (strcmp(type, "application/json") == 0) {
		json_t *j = json_loadb(res->body, res->body_len, 0, NULL);

		if (j == NULL)
			agent_fail(out, DELIVER_PERMFAIL, "the answer is not "
			    "JSON");
		else
			agent_value(j, out);
		json_decref(j);
	} else if (strcmp(type, "message/rfc822") == 0 && res->body_len > 0) {
		util_buf_add(&out->mime, res->body, res->body_len);
		util_buf_cstr(&out->mime);
		out->has_mime = true;
	} else {
		agent_take_text(out, res->body, res->body_len,
		    strcmp(type, "text/html") == 0, charset);
	}
	free(type);
	free(charset);
}

static void
agent_webhook(const struct deliver_agent *a, const struct deliver_msg *m,
    const char *agent, struct agent_out *out)
{
	struct deliver_hook_call call;
	struct deliver_webhook_req w;
	struct deliver_rcpt_status st;
	struct http_result res;
	const char *err = NULL;
	int rc;

	rc = deliver_hook_call_init(a->o.hook, &call, &err);
	call.o.agent = agent;
	if (rc == -1 || deliver_webhook_req_new(&call.o, m, agent, &w,
	    &err) == -1) {
		agent_fail(out, DELIVER_TEMPFAIL, "4.3.0 %s", err);
		deliver_hook_call_clear(&call);
		return;
	}
	http_perform_until(deliver_hook_client(a->o.hook), &w.req,
	    deliver_stop_fd(), &res);
	deliver_webhook_req_clear(&w);
	deliver_hook_call_clear(&call);
	if (deliver_webhook_outcome(&res, &st) != DELIVER_OK)
		agent_fail(out, st.result, "%s", st.text);
	else if (res.err == HTTP_ERR_TOO_BIG)
		agent_fail(out, DELIVER_PERMFAIL, "4.3.0 %s", res.text);
	else
		agent_webhook_answer(&res, out);
	http_result_clear(&res);
}

/* ---- one message ---- */

static void
agent_log(enum log_level lvl, const struct deliver_msg *m, const char *agent,
    const char *what, const char *why)
{
	const char *rp = m->return_path != NULL ? m->return_path : "";
	char a[300], s[300], w[400];

	log_event(lvl, "agent", NULL, m->qid, "agent=<%s> sender=<%s> %s "
	    "why=\"%s\"", log_safe_word_into(a, sizeof(a), agent,
	    strlen(agent)), log_safe_word_into(s, sizeof(s), rp, strlen(rp)),
	    what, log_safe_into(w, sizeof(w), why, strlen(why)));
}

/* The reply memory said no (rc 0: answered in the period; -1: down). */
static void
agent_memo_says(const struct deliver_msg *m, const char *agent, int rc,
    struct deliver_rcpt_status *st)
{
	if (rc == 0) {
		agent_log(LOG_LVL_INFO, m, agent, "not-answered",
		    "answered already in this period");
		util_strlcpy(st->text, "2.0.0 answered already in this period",
		    sizeof(st->text));
		return;
	}
	st->result = DELIVER_TEMPFAIL;
	util_strlcpy(st->text, "4.3.0 state store unavailable",
	    sizeof(st->text));
}

/* Build the reply of out to mm and queue it: as the inject hook returns. */
static int
agent_send(const struct deliver_agent *a, const struct deliver_msg *m,
    const char *agent, const struct mime_msg *mm, struct agent_out *out,
    const char **err_out)
{
	struct mime_reply r = { .from = agent, .from_name = a->o.from_name,
	    .to = m->return_path, .orig = mm, .subject = out->has_subject ?
	    out->subject.data : NULL, .text = out->has_text ? out->text.data :
	    NULL, .html = out->has_html ? out->html.data : NULL,
	    .mime = out->has_mime ? out->mime.data : NULL,
	    .mime_len = out->mime.len, .hostname = m->hostname,
	    .date = (int64_t)(util_wall_us() / 1000000) };
	struct util_buf msg = { 0 };
	int rc = -1;

	if (m->inject == NULL) {
		*err_out = "no queue to put the reply in";
		return -1;
	}
	if (mime_reply_build(&r, &msg, err_out) == 0)
		rc = m->inject->fn(m->inject->arg, "", m->return_path, msg.data,
		    msg.len, NULL, 0, err_out);
	util_buf_clear(&msg);
	return rc;
}

static void
agent_make(const struct deliver_agent *a, const struct deliver_msg *m,
    const char *agent, const struct mime_msg *mm, struct agent_out *out)
{
	json_t *doc = deliver_doc_new(m, agent, mm, agent);

	switch (a->o.kind) {
	case DELIVER_AGENT_TEXT:
		agent_text(a, doc, out);
		break;
	case DELIVER_AGENT_COMMAND:
		agent_command(a, m, agent, doc, out);
		break;
	case DELIVER_AGENT_WEBHOOK:
		agent_webhook(a, m, agent, out);
		break;
	case DELIVER_AGENT_LUA:
		agent_lua(a, doc, out);
		break;
	}
	json_decref(doc);
}

/* The agent runs; its reply goes.  The outcome in st. */
static void
agent_answer(struct deliver_agent *a, const struct deliver_msg *m,
    const char *agent, const struct mime_msg *mm,
    struct deliver_rcpt_status *st)
{
	struct agent_out out = { .fail = DELIVER_OK };
	const char *err = NULL;
	int rc;

	agent_make(a, m, agent, mm, &out);
	if (out.fail == DELIVER_TEMPFAIL) {
		st->result = DELIVER_TEMPFAIL;
		util_strlcpy(st->text, out.why, sizeof(st->text));
	} else if (out.fail == DELIVER_PERMFAIL) {
		/* Logged, never bounced: the sender did nothing wrong. */
		agent_log(LOG_LVL_WARN, m, agent, "failed", out.why);
		snprintf(st->text, sizeof(st->text), "2.0.0 agent failed, "
		    "no reply: %s", out.why);
	} else if (!out.has_text && !out.has_html && !out.has_mime) {
		agent_log(LOG_LVL_INFO, m, agent, "silent", "nothing to say");
		util_strlcpy(st->text, "2.0.0 no reply", sizeof(st->text));
	} else if ((rc = deliver_memo_check(a->memo, agent, m->return_path,
	    true, a->o.period_ms != 0 ? a->o.period_ms :
	    AGENT_PERIOD_DEFAULT_MS)) != 1) {
		agent_memo_says(m, agent, rc, st);
	} else if ((rc = agent_send(a, m, agent, mm, &out, &err)) != 0) {
		deliver_memo_forget(a->memo, agent, m->return_path);
		if (rc == -2) {		/* nowhere to send it, ever */
			agent_log(LOG_LVL_WARN, m, agent, "dropped", err);
			snprintf(st->text, sizeof(st->text), "2.0.0 reply "
			    "dropped: %s", err);
		} else {
			st->result = DELIVER_TEMPFAIL;
			snprintf(st->text, sizeof(st->text), "4.3.0 reply not "
			    "queued: %s", err);
		}
	} else {
		agent_log(LOG_LVL_INFO, m, agent, "answered", "reply queued");
		util_strlcpy(st->text, "2.0.0 answered", sizeof(st->text));
	}
	agent_out_clear(&out);
}

enum deliver_result
deliver_agent_run(struct deliver_agent *a, const struct deliver_msg *m,
    const char *rcpt, struct deliver_rcpt_status *st, const char **err_out)
{
	struct mime_ar_input in = { .sender = m->return_path, .agent = rcpt,
	    .received_max = a->o.received_max };
	const char *why = NULL;
	struct mime_msg *mm;
	int rc;

	memset(st, 0, sizeof(*st));
	st->result = DELIVER_OK;
	if ((mm = deliver_doc_parse(m, &a->o.limits, &why)) == NULL) {
		st->result = DELIVER_TEMPFAIL;
		snprintf(st->text, sizeof(st->text), "4.3.0 %s", why);
		*err_out = util_err("%s", st->text);
		return st->result;
	}
	in.msg = mm;
	if (!mime_autoreply_allowed(&in, &why)) {
		/* RFC 3834: no answer; the message is dealt with. */
		agent_log(LOG_LVL_INFO, m, rcpt, "not-answered", why);
		snprintf(st->text, sizeof(st->text), "2.0.0 not answered: %s",
		    why);
	} else if ((rc = deliver_memo_check(a->memo, rcpt, m->return_path,
	    false, 0)) != 1) {
		agent_memo_says(m, rcpt, rc, st);
	} else {
		agent_answer(a, m, rcpt, mm, st);
	}
	mime_msg_free(&mm);
	if (st->result != DELIVER_OK)
		*err_out = util_err("%s", st->text);
	return st->result;
}

/* ---- the reply kind ---- */

/* What a reply action's runtime owns besides the agent. */
struct agent_kind {
	struct deliver_agent	*agent;
	struct deliver_agent_opts o;
	struct mime_tpl		*text;
	struct chain_lua_box	*lua;
	struct deliver_hook	*hook;
};

static int
agent_kind_make(const struct config *c, const struct config_action *a,
    struct agent_kind *k, const char **err_out)
{
	const struct config_reply *r = a->reply;
	char *why = NULL;

	switch (r->kind) {
	case CONFIG_REPLY_TEXT:
		k->o.kind = DELIVER_AGENT_TEXT;
		return (k->o.text = k->text = deliver_tpl_file(r->path,
		    MIME_TPL_TEXT, "reply text", err_out)) == NULL ? -1 : 0;
	case CONFIG_REPLY_COMMAND:
		k->o.kind = DELIVER_AGENT_COMMAND;
		k->o.argv = r->argv;
		k->o.user = r->user;
		k->o.server_user = c->user;
		k->o.timeout_ms = r->timeout_ms;
		if (deliver_prog_check(r->argv[0], r->user, c->user, c->group,
		    err_out) == -1) {
			*err_out = util_err("reply command: %s", *err_out);
			return -1;
		}
		return 0;
	case CONFIG_REPLY_LUA:
		k->o.kind = DELIVER_AGENT_LUA;
		if ((k->o.lua = k->lua = chain_lua_box_new(c, r->path,
		    r->function, &why)) == NULL) {
			*err_out = util_err("reply lua: %s", why);
			free(why);
			return -1;
		}
		return 0;
	default:
		k->o.kind = DELIVER_AGENT_WEBHOOK;
		return (k->o.hook = k->hook = deliver_hook_new(r->hook,
		    a->name, true, err_out)) == NULL ? -1 : 0;
	}
}

int
deliver_agent_check(const struct config *c, const struct config_action *a,
    const char **err_out)
{
	struct agent_kind k = { 0 };
	int rc;

	if (a->reply->kind == CONFIG_REPLY_WEBHOOK) {
		/* Only the template and tables: no client thread for this. */
		if ((k.hook = deliver_hook_new(a->reply->hook, a->name, false,
		    err_out)) == NULL)
			return -1;
		deliver_hook_free(&k.hook);
		return 0;
	}
	rc = agent_kind_make(c, a, &k, err_out);
	mime_tpl_free(&k.text);
	chain_lua_box_free(&k.lua);
	return rc;
}

void *
deliver_agent_open(const struct config *c, const struct config_action *a,
    const char **err_out)
{
	struct agent_kind *k = xcalloc(1, sizeof(*k));
	char *spec = NULL;

	k->o.from_name = a->reply->from_name;
	k->o.period_ms = a->reply->period_ms;
	if (agent_kind_make(c, a, k, err_out) == 0) {
		/* The state store the handlers use: its default too. */
		if (c->chain_store == NULL)
			spec = xasprintf("sqlite:%s/state.db", c->spool);
		k->agent = deliver_agent_new(&k->o, c->chain_store != NULL ?
		    c->chain_store : spec, err_out);
	}
	free(spec);
	if (k->agent == NULL) {
		deliver_agent_close(k);
		return NULL;
	}
	return k;
}

void
deliver_agent_close(void *runtime)
{
	struct agent_kind *k = runtime;

	if (k == NULL)
		return;
	deliver_agent_free(&k->agent);
	mime_tpl_free(&k->text);
	chain_lua_box_free(&k->lua);
	deliver_hook_free(&k->hook);
	free(k);
}

enum deliver_result
deliver_agent_kind(void *runtime, const char *arg, const struct deliver_msg *m,
    const char *const *rcpts, size_t n, struct deliver_rcpt_status *st_out,
    const char **err_out)
{
	struct agent_kind *k = runtime;
	const char *err = NULL;

	(void)arg;
	for (size_t i = 0; i < n; i++)
		(void)deliver_agent_run(k->agent, m, rcpts[i], &st_out[i],
		    &err);
	return deliver_status_summary(st_out, n, err_out);
}
