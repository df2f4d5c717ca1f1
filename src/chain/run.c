/*
 * chain/run.c: running one stage's handlers in order, synchronously or
 * across loop iterations (a pending call, its timeout, a delay), and
 * applying each verdict: the reply validated, the on-error policies.
 * Knows nothing of what each handler checks (builtin_*.c, Lua, milter).
 */
#include "chain/chain.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "chain/chain_private.h"
#include "chain/session.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "util/util.h"

#define CHAIN_DELAY_MAX_MS	(15u * 60 * 1000)
#define CHAIN_OWN_GRACE_MS	1000u	/* past a handler's own timeout */

struct chain_call {
	struct chain_run	*run;		/* NULL once cancelled or orphaned */
	struct chain_session	*cs;		/* borrowed while run != NULL */
	struct chain_set	*set;		/* ref while orphaned */
	const struct chain_handler *h;		/* borrowed from set */
	void			*data;		/* the handler's */
	bool			 in_run;	/* inside run_fn */
	bool			 early;		/* done while in_run */
	uint64_t		 timeout_ms;	/* the handler's own; 0: none */
	struct chain_verdict	 early_v;
};

static void	chain_step(struct chain_run *run);

static void
chain_run_timer(struct chain_run *run, uint64_t ms, event_callback_fn fn)
{
	struct timeval tv = util_timeval_ms(ms);

	/* One timer per run, kept between calls (freed by chain_run_clear). */
	if (run->timer == NULL)
		run->timer = evtimer_new(run->cs->loop->base, fn, run);
	else {
		evtimer_del(run->timer);
		evtimer_assign(run->timer, run->cs->loop->base, fn, run);
	}
	evtimer_add(run->timer, &tv);
}

/* RFC 5321 3.8 and RFC 7504 3: these replies end the session. */
static bool
chain_code_closes(int code)
{
	return code == 421 || code == 521;
}

/*
 * Put the validated reply of v in run->res; false when v is not valid.
 * close is a disconnect; a reject with a closing code closes as well.  A
 * code of 0 is the stage's default, for every handler and on-error alike.
 */
static bool
chain_make_reply(struct chain_run *run, const struct chain_verdict *v,
    bool close)
{
	struct chain_session *cs = run->cs;
	int code = v->code;
	char text[CHAIN_TEXT_MAX], esc[16];

	if (close) {
		if (code == 0)
			code = 421;	/* RFC 5321 3.8 */
	} else if (code == 0)
		/* RFC 5321 3.1, 4.3.2: the opening reply is 220 or 554. */
		code = run->ev.stage == SMTP_STAGE_CONNECT ? 554 : 550;
	/* A script's or filter's text is outside input (STYLE.md 6). */
	if (!chain_code_ok(code) || !chain_text_ok(v->text))
		return false;
	if (v->esc[0] != '\0') {
		if (!chain_esc_ok(v->esc, code))
			return false;
		util_strlcpy(esc, v->esc, sizeof(esc));
	} else
		util_snprintf(esc, sizeof(esc), "%d.%s", code / 100,
		    code == 521 ? "3.2" : close ? "4.2" : "7.1");
	const char *tmpl = v->text[0] != '\0' ? v->text : close ?
	    "%{hostname} closing connection" : code >= 500 ?
	    "Rejected by policy" : "Try again later";
	chain_expand(cs, tmpl, text, sizeof(text));
	run->res.reply.code = code;
	util_snprintf(run->res.reply.text, sizeof(run->res.reply.text),
	    "%s %s", esc, text);
	run->res.verdict = close || chain_code_closes(code) ? SMTP_CLOSE :
	    SMTP_REJECT;
	return true;
}

/* The text of run's reply, past its code and enhanced code. */
static const char *
chain_reply_words(const struct chain_run *run)
{
	const char *sp = strchr(run->res.reply.text, ' ');

	return sp != NULL ? sp + 1 : run->res.reply.text;
}

static void
chain_tempfail(struct chain_run *run)
{
	run->res.verdict = SMTP_REJECT;
	run->res.reply.code = 451;
	util_strlcpy(run->res.reply.text, "4.3.0 Local error in processing, "
	    "try again later", sizeof(run->res.reply.text));
}

static void
chain_log_verdict(struct chain_run *run, const struct chain_handler *h,
    const char *what, const char *why)
{
	char safe[CHAIN_TEXT_MAX + 16];

	log_event(LOG_LVL_INFO, "chain", run->cs->sid, NULL,
	    "stage=%s handler=%s line=%d verdict=%s%s%s%s",
	    chain_stage_name(run->ev.stage), h->ops->name, h->line, what,
	    why != NULL && why[0] != '\0' ? " why=\"" : "",
	    why != NULL && why[0] != '\0' ? log_safe_into(safe, sizeof(safe),
	    why, strlen(why)) : "", why != NULL && why[0] != '\0' ? "\"" :
	    "");
}

static void
chain_delay_cb(evutil_socket_t fd, short what, void *arg)
{
	struct chain_run *run = arg;

	(void)fd;
	(void)what;
	run->idx++;
	chain_step(run);
}

/*
 * Apply one handler's verdict.  Returns 1 to go on with the next handler,
 * 0 when the chain ends (run->res set), 2 when a delay timer was set.
 */
static int
chain_apply(struct chain_run *run, const struct chain_handler *h,
    const struct chain_verdict *v)
{
	static const unsigned verdicts[] = {
		[CHAIN_CONTINUE] = MET_V_CONTINUE, [CHAIN_ACCEPT] = MET_V_ACCEPT,
		[CHAIN_REJECT] = MET_V_REJECT, [CHAIN_DELAY] = MET_V_DELAY,
		[CHAIN_DISCONNECT] = MET_V_DISCONNECT,
		[CHAIN_DISCARD] = MET_V_DISCARD,
		[CHAIN_QUARANTINE] = MET_V_QUARANTINE, [CHAIN_TAG] = MET_V_TAG,
		[CHAIN_FAIL] = MET_V_FAILURE,
	};
	struct chain_session *cs = run->cs;
	bool tx = run->ev.stage >= SMTP_STAGE_MAIL &&
	    run->ev.stage <= SMTP_STAGE_EOM;

	metrics_observe_ns(MET_CHAIN_SECONDS, h->kind, metrics_now_ns() -
	    run->call_ns);
	metrics_inc(MET_CHAIN_VERDICTS, h->kind, (unsigned)v->kind <
	    sizeof(verdicts) / sizeof(verdicts[0]) ? verdicts[v->kind] :
	    MET_V_FAILURE);
	if (v->no_deliver)
		run->res.no_deliver = true;
	switch (v->kind) {
	case CHAIN_CONTINUE:
		return 1;
	case CHAIN_ACCEPT:
		run->res.accepted = true;
		return 0;
	case CHAIN_TAG:
		if (chain_kv_set(cs, v->scope, v->name, v->value) == -1)
			chain_log_verdict(run, h, "bad-tag", v->name);
		return 1;
	case CHAIN_DELAY:
		chain_log_verdict(run, h, "delay", v->why);
		chain_run_timer(run, v->delay_ms > CHAIN_DELAY_MAX_MS ?
		    CHAIN_DELAY_MAX_MS : v->delay_ms, chain_delay_cb);
		return 2;
	case CHAIN_DISCARD:
	case CHAIN_QUARANTINE:
		chain_log_verdict(run, h, v->kind == CHAIN_DISCARD ?
		    "discard" : "quarantine", v->name);
		chain_set_disposition(cs, tx, v->kind == CHAIN_DISCARD ?
		    CHAIN_DISP_DISCARD : CHAIN_DISP_QUARANTINE, v->name);
		run->res.accepted = true;
		return 0;
	case CHAIN_REJECT:
	case CHAIN_DISCONNECT:
		/*
		 * Outside input that disconnects must say it closes; the
		 * builtins' (banned's 554 at connect) were checked with
		 * the config.
		 */
		if ((v->kind == CHAIN_DISCONNECT && v->code != 0 &&
		    !chain_code_closes(v->code) &&
		    !chain_ops_is_builtin(h->ops)) ||
		    !chain_make_reply(run, v, v->kind == CHAIN_DISCONNECT)) {
			/* Outside input: a bad reply from a handler is 451. */
			char why[48];
			util_snprintf(why, sizeof(why), "reply %d%s%s", v->code,
			    v->esc[0] != '\0' ? " " : "", v->esc);
			chain_log_verdict(run, h, "bad-reply", v->text[0] !=
			    '\0' ? v->text : v->code > 0 ? why :
			    "reply field not valid");
			chain_tempfail(run);
			return 0;
		}
		/* What the handler found, or else what the client is told. */
		chain_log_verdict(run, h, v->kind == CHAIN_REJECT ? "reject" :
		    "disconnect", v->why[0] != '\0' ? v->why :
		    chain_reply_words(run));
		if (run->res.reply.code >= 500)
			chain_session_reputation(cs, -1);
		return 0;
	case CHAIN_FAIL:
	default:
		chain_log_verdict(run, h, "error", v->why);
		if (h->on_error == CHAIN_ONERR_ACCEPT)
			return 1;
		if (h->on_error == CHAIN_ONERR_REJECT) {
			struct chain_verdict r;
			chain_verdict_reject(&r, 0, NULL, NULL);
			chain_make_reply(run, &r, false);
			return 0;
		}
		chain_tempfail(run);
		return 0;
	}
}

static void
chain_call_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct chain_run *run = arg;
	struct chain_call *call = run->call;
	struct chain_verdict v;

	(void)fd;
	(void)what;
	ASSERT(call != NULL);
	chain_call_cancel(call);
	run->call = NULL;
	chain_verdict_fail(&v, "timed out");
	int r = chain_apply(run, &run->cs->set->h[run->ev.stage][run->idx],
	    &v);
	if (r == 1) {
		run->idx++;
		chain_step(run);
	} else if (r == 0)
		chain_run_finish(run);
}

void
chain_call_cancel(struct chain_call *call)
{
	const struct chain_handler *h = call->h;

	if (h->ops->cancel_fn != NULL) {
		h->ops->cancel_fn(h->inst, call);
		free(call);
		return;
	}
	/* Orphaned: the handler still owns it and answers into the void. */
	call->run = NULL;
	call->set = chain_set_ref(call->cs->set);
	call->cs = NULL;
}

/* A call for run's next handler: the run's spare one when it has it. */
static struct chain_call *
chain_call_new(struct chain_run *run)
{
	struct chain_call *call = run->spare;

	if (call == NULL)
		call = xmalloc(sizeof(*call));
	run->spare = NULL;
	/* early_v is read only once early is set. */
	call->run = run;
	call->cs = run->cs;
	call->set = NULL;
	call->h = NULL;
	call->data = NULL;
	call->in_run = false;
	call->early = false;
	call->timeout_ms = 0;
	return call;
}

/* A finished call is kept for the run's next one. */
static void
chain_call_release(struct chain_run *run, struct chain_call *call)
{
	if (run->spare == NULL)
		run->spare = call;
	else
		free(call);
}

/* Run handlers from run->idx until one is pending or the chain ends. */
static void
chain_step(struct chain_run *run)
{
	struct chain_session *cs = run->cs;
	struct chain_set *set = cs->set;
	enum smtp_stage st = run->ev.stage;

	while (run->idx < set->n[st]) {
		const struct chain_handler *h = &set->h[st][run->idx];
		struct chain_call *call = chain_call_new(run);
		struct chain_verdict v;

		call->h = h;
		chain_verdict_continue(&v);
		call->in_run = true;
		run->call_ns = metrics_now_ns();
		enum chain_status s = h->ops->run_fn(h->inst, call, &v);
		call->in_run = false;
		if (s == CHAIN_PENDING && call->early) {
			v = call->early_v;
			s = CHAIN_DONE;
		}
		if (s == CHAIN_PENDING) {
			run->call = call;
			run->pending = true;
			chain_run_timer(run, call->timeout_ms != 0 ?
			    call->timeout_ms : cs->loop->call_timeout_ms,
			    chain_call_timeout_cb);
			return;
		}
		chain_call_release(run, call);
		int r = chain_apply(run, h, &v);
		if (r == 2) {
			run->pending = true;
			return;
		}
		if (r == 0)
			break;
		run->idx++;
	}
	chain_run_finish(run);
}

void
chain_call_done(struct chain_call *call, const struct chain_verdict *v)
{
	if (call->in_run) {
		call->early = true;
		call->early_v = *v;
		return;
	}
	struct chain_run *run = call->run;
	if (run == NULL) {
		/* The session went away meanwhile: drop the answer. */
		chain_set_unref(&call->set);
		free(call);
		return;
	}
	ASSERT(run->call == call);
	run->call = NULL;
	if (run->timer != NULL)
		evtimer_del(run->timer);
	const struct chain_handler *h = call->h;
	chain_call_release(run, call);
	int r = chain_apply(run, h, v);
	if (r == 2)
		return;
	if (r == 1) {
		run->idx++;
		chain_step(run);
		return;
	}
	chain_run_finish(run);
}

void
chain_call_own_timeout(struct chain_call *call, uint64_t ms)
{
	call->timeout_ms = ms + CHAIN_OWN_GRACE_MS;
	/* Pending (not orphaned): restart the run's wait now. */
	if (!call->in_run && call->run != NULL && call->run->call == call)
		chain_run_timer(call->run, call->timeout_ms,
		    chain_call_timeout_cb);
}

struct chain_session *
chain_call_session(struct chain_call *call)
{
	return call->cs;
}

const struct smtp_event *
chain_call_event(const struct chain_call *call)
{
	return &call->run->ev;
}

enum smtp_stage
chain_call_stage(const struct chain_call *call)
{
	return call->run->ev.stage;
}

void **
chain_call_data(struct chain_call *call)
{
	return &call->data;
}

/* Start a run of ev's chain; it may finish at once (run->pending false). */
void
chain_run_start(struct chain_run *run, struct chain_session *cs,
    const struct smtp_event *ev)
{
	memset(&run->res, 0, sizeof(run->res));
	run->res.verdict = SMTP_OK;
	run->cs = cs;
	run->idx = 0;
	run->pending = false;
	if (cs->set->n[ev->stage] == 0) {
		run->active = false;	/* no handler: the stage goes on */
		return;
	}
	run->active = true;
	run->ev = *ev;
	free(run->arg);
	run->arg = xstrdup(ev->arg != NULL ? ev->arg : "");
	run->ev.arg = run->arg;
	chain_step(run);
}

void
chain_run_clear(struct chain_run *run)
{
	if (run->call != NULL) {
		chain_call_cancel(run->call);
		run->call = NULL;
	}
	if (run->timer != NULL)
		event_free(run->timer);
	run->timer = NULL;
	free(run->arg);
	run->arg = NULL;
	free(run->spare);
	run->spare = NULL;
	run->active = false;
}
