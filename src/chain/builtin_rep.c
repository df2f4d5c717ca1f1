/*
 * chain/builtin_rep.c: "reputation check [below N] [CODE ESC TEXT]" reads
 * the scores of the client IP and of the sender domain from the state store
 * into session.rep.ip and session.rep.domain (and refuses below N);
 * "reputation add DELTA [ip|domain|both]" moves them.  The keys, their
 * expiry and the framework's own +1/-1 belong to session.c.
 */
#include "chain/chain_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain/session.h"
#include "log/log.h"
#include "store/store.h"
#include "util/util.h"

#define REP_DELTA_MAX	1000		/* |DELTA| of "add" */
#define REP_BELOW_MAX	1000000		/* |N| of "below" */

static const char rep_usage[] = "usage: reputation check [below N] "
    "[CODE ESC TEXT] | reputation add DELTA [ip|domain|both]";

/* The two scores, in the order they are read; session keys beside. */
static const struct {
	enum chain_rep_what	 w;
	const char		*kv;
} rep_scores[] = {
	{ CHAIN_REP_IP, "rep.ip" },
	{ CHAIN_REP_DOMAIN, "rep.domain" },
};
#define REP_NSCORES	(sizeof(rep_scores) / sizeof(rep_scores[0]))

enum rep_op { REP_CHECK, REP_ADD };

struct rep {
	enum rep_op		op;
	bool			has_below;
	long long		below;		/* check: refuse a score < it */
	struct chain_verdict	v;		/* check: the refusal */
	int			delta;		/* add */
	unsigned		which;		/* add: CHAIN_REP_* bits */
};

/* A whole number in [-max, max] from s; -1 when it is not one. */
static int
rep_parse_num(const char *s, long long max, long long *out)
{
	char *end;

	errno = 0;
	long long n = strtoll(s, &end, 10);
	if (s[0] == '\0' || *end != '\0' || errno != 0 || n < -max ||
	    n > max)
		return -1;
	*out = n;
	return 0;
}

static int
rep_check_parse(struct rep *r, const struct chain_handler_args *a,
    char **err_out)
{
	size_t i = 2;

	if (a->stage == SMTP_STAGE_QUIT || a->stage == SMTP_STAGE_DISCONNECT) {
		*err_out = xasprintf("check is not allowed at the %s stage "
		    "(add is)", chain_stage_name(a->stage));
		return -1;
	}
	if (i < a->argc && strcmp(a->argv[i], "below") == 0) {
		if (i + 1 >= a->argc) {
			*err_out = xstrdup("check below: missing N");
			return -1;
		}
		if (rep_parse_num(a->argv[i + 1], REP_BELOW_MAX,
		    &r->below) == -1) {
			*err_out = xasprintf("check below: N must be a whole "
			    "number from -%d to %d, not \"%s\"", REP_BELOW_MAX,
			    REP_BELOW_MAX, a->argv[i + 1]);
			return -1;
		}
		r->has_below = true;
		i += 2;
	}
	if (i < a->argc) {
		if (!r->has_below) {
			*err_out = xstrdup("check: a reply needs \"below N\" "
			    "before it");
			return -1;
		}
		if (chain_parse_reply(a->argv + i, a->argc - i, &r->v,
		    err_out) == -1)
			return -1;
	} else if (a->stage == SMTP_STAGE_CONNECT)
		chain_verdict_reject(&r->v, 421, "4.7.0",
		    "%{hostname} poor reputation, try again later");
	else
		chain_verdict_reject(&r->v, 550, "5.7.1",
		    "Rejected for poor reputation");
	/* At connect, as with ratelimit: 421 and 521 close the session. */
	if (a->stage == SMTP_STAGE_CONNECT && (r->v.code == 421 ||
	    r->v.code == 521))
		r->v.kind = CHAIN_DISCONNECT;
	return 0;
}

static int
rep_add_parse(struct rep *r, const struct chain_handler_args *a,
    char **err_out)
{
	long long d;

	if (a->argc < 3 || a->argc > 4) {
		*err_out = xstrdup(rep_usage);
		return -1;
	}
	if (rep_parse_num(a->argv[2], REP_DELTA_MAX, &d) == -1 || d == 0) {
		*err_out = xasprintf("add: DELTA must be a whole number from "
		    "-%d to %d other than 0, not \"%s\"", REP_DELTA_MAX,
		    REP_DELTA_MAX, a->argv[2]);
		return -1;
	}
	r->delta = (int)d;
	r->which = CHAIN_REP_BOTH;
	if (a->argc == 4) {
		if (strcmp(a->argv[3], "ip") == 0)
			r->which = CHAIN_REP_IP;
		else if (strcmp(a->argv[3], "domain") == 0)
			r->which = CHAIN_REP_DOMAIN;
		else if (strcmp(a->argv[3], "both") != 0) {
			*err_out = xasprintf("add: which score: ip, domain or "
			    "both, not \"%s\"", a->argv[3]);
			return -1;
		}
	}
	return 0;
}

static void *
rep_new(const struct chain_handler_args *a, char **err_out)
{
	struct rep *r = xcalloc(1, sizeof(*r));
	int rc;

	if (a->argc >= 2 && strcmp(a->argv[1], "check") == 0) {
		r->op = REP_CHECK;
		rc = rep_check_parse(r, a, err_out);
	} else if (a->argc >= 2 && strcmp(a->argv[1], "add") == 0) {
		r->op = REP_ADD;
		rc = rep_add_parse(r, a, err_out);
	} else {
		*err_out = xstrdup(rep_usage);
		rc = -1;
	}
	if (rc == -1) {
		free(r);
		return NULL;
	}
	return r;
}

/* ----- reputation check ----- */

struct rep_job {
	struct chain_call	*call;
	const struct rep	*r;
	struct store		*st;		/* borrowed: the loop's */
	char			 key[REP_NSCORES][STORE_KEY_MAX]; /* "": none */
	long long		 score[REP_NSCORES];
	size_t			 idx;		/* score being read */
};

/*
 * Publish the scores as session state and decide.  failed: the store did
 * not answer; the keys are dropped and the client passes (fail open).
 */
static void
rep_check_finish(struct rep_job *j, bool failed)
{
	struct chain_session *cs = chain_call_session(j->call);
	struct chain_verdict v;
	bool low = false;
	char num[32];

	chain_verdict_continue(&v);
	if (cs != NULL) {		/* NULL: the session went away */
		for (size_t i = 0; i < REP_NSCORES; i++) {
			bool have = !failed && j->key[i][0] != '\0';
			snprintf(num, sizeof(num), "%lld", j->score[i]);
			chain_kv_set(cs, CHAIN_SCOPE_SESSION, rep_scores[i].kv,
			    have ? num : NULL);
			if (have && j->r->has_below &&
			    j->score[i] < j->r->below)
				low = true;
		}
		if (failed)
			log_event(LOG_LVL_WARN, "reputation",
			    chain_session_sid(cs), NULL, "why=\"state store "
			    "unavailable, not checked\"");
	}
	if (low) {
		char dom[32] = "none";
		if (j->key[1][0] != '\0')
			snprintf(dom, sizeof(dom), "%lld", j->score[1]);
		v = j->r->v;
		util_snprintf(v.why, sizeof(v.why), "reputation ip=%lld "
		    "domain=%s below %lld", j->score[0], dom, j->r->below);
	}
	chain_call_done(j->call, &v);
	free(j);
}

static void	rep_check_next(struct rep_job *j);

static void
rep_get_cb(void *arg, int rc, const char *value)
{
	struct rep_job *j = arg;

	if (rc == -1) {
		rep_check_finish(j, true);
		return;
	}
	/* A missing (or expired) score is 0. */
	j->score[j->idx] = rc == 1 ? strtoll(value, NULL, 10) : 0;
	j->idx++;
	rep_check_next(j);
}

/* Ask for the next score there is; then decide. */
static void
rep_check_next(struct rep_job *j)
{
	while (j->idx < REP_NSCORES && j->key[j->idx][0] == '\0')
		j->idx++;
	if (j->idx < REP_NSCORES) {
		store_get(j->st, j->key[j->idx], rep_get_cb, j);
		return;
	}
	rep_check_finish(j, false);
}

static enum chain_status
rep_check_run(const struct rep *r, struct chain_call *call,
    struct chain_verdict *v)
{
	struct chain_session *cs = chain_call_session(call);
	struct rep_job *j = xcalloc(1, sizeof(*j));
	bool any = false;

	for (size_t i = 0; i < REP_NSCORES; i++) {
		if (chain_rep_key(cs, rep_scores[i].w, j->key[i],
		    sizeof(j->key[i])))
			any = true;
		else {
			j->key[i][0] = '\0';
			/* Not a stale score of an earlier sender either. */
			chain_kv_set(cs, CHAIN_SCOPE_SESSION, rep_scores[i].kv,
			    NULL);
		}
	}
	if (!any || cs->loop->store == NULL) {
		free(j);
		chain_verdict_continue(v);
		return CHAIN_DONE;
	}
	j->call = call;
	j->r = r;
	j->st = cs->loop->store;
	/* The first key is there: this asks the store, answers come later. */
	rep_check_next(j);
	return CHAIN_PENDING;
}

/* ----- reputation add ----- */

static enum chain_status
rep_add_run(const struct rep *r, struct chain_call *call,
    struct chain_verdict *v)
{
	/*
	 * Fire and forget.  session.rep.* keep what the last check read: a
	 * check after this one sees the change (a store answers in order).
	 */
	chain_session_reputation_add(chain_call_session(call), r->delta,
	    r->which);
	chain_verdict_continue(v);
	util_snprintf(v->why, sizeof(v->why), "reputation %+d", r->delta);
	return CHAIN_DONE;
}

static enum chain_status
rep_run(void *inst, struct chain_call *call, struct chain_verdict *v)
{
	const struct rep *r = inst;

	if (r->op == REP_CHECK)
		return rep_check_run(r, call, v);
	return rep_add_run(r, call, v);
}

const struct chain_handler_ops chain_rep_ops[] = {
	{ "reputation", CHAIN_STAGES_ALL, rep_new, free, rep_run, NULL, NULL },
	{ NULL, 0, NULL, NULL, NULL, NULL, NULL },
};
