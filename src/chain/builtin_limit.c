/*
 * chain/builtin_limit.c: "ratelimit N/PERIOD per ip|sender|rcpt|subject|helo"
 * over an ageing window kept in the state store, and "penalty N" (at
 * disconnect: a session that ended without one valid recipient counts N
 * more against its IP's "per ip" limits).
 */
#include "chain/chain_private.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain/session.h"
#include "store/store.h"
#include "util/util.h"

enum limit_what { LIMIT_IP, LIMIT_SENDER, LIMIT_RCPT, LIMIT_SUBJECT,
	LIMIT_HELO };
static const char *const limit_names[] = { "ip", "sender", "rcpt",
	"subject", "helo" };

struct limit {
	unsigned		max;
	uint64_t		period_ms;
	enum limit_what		what;
	struct chain_verdict	v;		/* over the limit */
	char			key[64];	/* "rl:STAGE:N/PERIOD:WHAT:" */
};

static void *
limit_new(const struct chain_handler_args *a, char **err_out)
{
	struct limit *l = xcalloc(1, sizeof(*l));
	const char *slash = a->argc >= 4 ? strchr(a->argv[1], '/') : NULL;
	char num[32];
	size_t w;

	if (slash == NULL || strcmp(a->argv[2], "per") != 0 ||
	    (size_t)(slash - a->argv[1]) >= sizeof(num))
		goto usage;
	memcpy(num, a->argv[1], (size_t)(slash - a->argv[1]));
	num[slash - a->argv[1]] = '\0';
	char *end;
	long n = strtol(num, &end, 10);
	if (*end != '\0' || n < 1 || n > 1000000 ||
	    util_parse_duration_ms(slash + 1, &l->period_ms) == -1 ||
	    l->period_ms < 1000 || l->period_ms > 30ull * 86400 * 1000)
		goto usage;
	l->max = (unsigned)n;
	for (w = 0; w < sizeof(limit_names) / sizeof(limit_names[0]); w++)
		if (strcmp(a->argv[3], limit_names[w]) == 0)
			break;
	if (w == sizeof(limit_names) / sizeof(limit_names[0]))
		goto usage;
	l->what = (enum limit_what)w;
	if (l->what == LIMIT_SUBJECT && a->stage != SMTP_STAGE_HEADER &&
	    a->stage != SMTP_STAGE_EOM) {
		*err_out = xstrdup("per subject works at the header or eom "
		    "stage");
		free(l);
		return NULL;
	}
	if (a->argc > 4) {
		if (chain_parse_reply(a->argv + 4, a->argc - 4, &l->v,
		    err_out) == -1) {
			free(l);
			return NULL;
		}
	} else
		chain_verdict_reject(&l->v, a->stage == SMTP_STAGE_CONNECT ?
		    421 : 450, a->stage == SMTP_STAGE_CONNECT ? "4.7.0" :
		    "4.7.1", "Rate limit exceeded, slow down");
	if (a->stage == SMTP_STAGE_CONNECT && l->v.code == 421)
		l->v.kind = CHAIN_DISCONNECT;
	/*
	 * Each handler counts its own runs: its counters are named by what
	 * it is (not by its line), so a reload that keeps it keeps them.
	 */
	char max[UTIL_DEC_MAX], period[UTIL_DEC_MAX];
	util_strjoin(l->key, sizeof(l->key), "rl:", chain_stage_name(a->stage),
	    ":", util_i64_dec(max, n), "/",
	    util_i64_dec(period, (int64_t)l->period_ms), ":",
	    limit_names[l->what], ":", NULL);
	return l;
usage:
	free(l);
	*err_out = xstrdup("usage: ratelimit N/PERIOD per ip|sender|rcpt|"
	    "subject|helo [CODE ESC TEXT]");
	return NULL;
}

/*
 * The Subject: field body of a header block as its counter names it: the
 * bytes as they are (8-bit text too), unfolded, each run of blanks one
 * space and none at either end; "" when it is blank or there is none.
 * Owned by the caller; *len_out its length.
 */
static char *
limit_subject(const char *h, size_t len, size_t *len_out)
{
	for (size_t i = 0, end; i < len; i = end) {
		end = chain_header_field_end(h, len, i);
		if (!util_hdr_is(h + i, end - i, "subject"))
			continue;
		const char *colon = memchr(h + i, ':', end - i);
		size_t k = (size_t)(colon - h) + 1, o = 0;
		char *s = xmalloc(end - k + 1);
		bool blank = false;

		for (; k < end; k++) {
			if (h[k] == ' ' || h[k] == '\t' || h[k] == '\r' ||
			    h[k] == '\n') {
				blank = o > 0;
				continue;
			}
			if (blank)
				s[o++] = ' ';
			blank = false;
			s[o++] = h[k];
		}
		s[o] = '\0';
		*len_out = o;
		return s;
	}
	*len_out = 0;
	return xstrdup("");
}

struct limit_job {
	struct chain_call	*call;
	const struct limit	*l;
	struct store		*st;
	char			 prev_key[STORE_KEY_MAX];
	char			 pen_key[STORE_KEY_MAX];
	uint64_t		 frac_ms;	/* into the current window */
	int64_t			 cur, prev;
};

static void
limit_finish(struct limit_job *j, int64_t penalty)
{
	struct chain_verdict v;
	/* Ageing window: the last window counts for what remains of it. */
	double est = (double)j->cur + (double)penalty + (double)j->prev *
	    (1.0 - (double)j->frac_ms / (double)j->l->period_ms);

	if (est > (double)j->l->max) {
		v = j->l->v;
		util_snprintf(v.why, sizeof(v.why), "ratelimit %u/%llums per "
		    "%s: %.1f", j->l->max,
		    (unsigned long long)j->l->period_ms,
		    limit_names[j->l->what], est);
	} else
		chain_verdict_continue(&v);
	chain_call_done(j->call, &v);
	free(j);
}

static void
limit_pen_cb(void *arg, int rc, const char *value)
{
	struct limit_job *j = arg;

	limit_finish(j, rc == 1 ? strtoll(value, NULL, 10) : 0);
}

static void
limit_prev_cb(void *arg, int rc, const char *value)
{
	struct limit_job *j = arg;

	j->prev = rc == 1 ? strtoll(value, NULL, 10) : 0;
	if (j->pen_key[0] != '\0') {
		store_get(j->st, j->pen_key, limit_pen_cb, j);
		return;
	}
	limit_finish(j, 0);
}

static void
limit_incr_cb(void *arg, int rc, int64_t n)
{
	struct limit_job *j = arg;

	if (rc == -1) {
		struct chain_verdict v;
		chain_verdict_fail(&v, "state store unavailable");
		chain_call_done(j->call, &v);
		free(j);
		return;
	}
	j->cur = n;
	store_get(j->st, j->prev_key, limit_prev_cb, j);
}

/*
 * The counter of l's value in this session, without its window, into key;
 * false when there is no value to count.
 */
static bool
limit_key(const struct limit *l, struct chain_session *cs, char *key,
    size_t keysz)
{
	const char *val = NULL, *h;
	size_t hlen, n, fold_from = SIZE_MAX;
	char *subj;
	int r;

	util_strlcpy(key, l->key, keysz);
	switch (l->what) {
	case LIMIT_IP:
		val = cs->ip;
		break;
	case LIMIT_SENDER:
	case LIMIT_RCPT:
		val = l->what == LIMIT_SENDER ? cs->sender : cs->rcpt;
		if (val == NULL || val[0] == '\0')
			return false;
		r = chain_key_add_addr(key, keysz, val);
		ASSERT(r == 0);
		return true;
	case LIMIT_HELO:
		val = cs->helo;
		fold_from = 0;	/* RFC 5321 2.4: one name in any case */
		break;
	case LIMIT_SUBJECT:
		/* Blank or none is a subject too: the empty one. */
		if ((h = chain_session_headers(cs, &hlen)) == NULL)
			return false;
		subj = limit_subject(h, hlen, &n);
		r = store_key_add(key, keysz, subj, n, SIZE_MAX);
		free(subj);
		ASSERT(r == 0);
		return true;
	}
	if (val == NULL || val[0] == '\0')
		return false;
	r = store_key_add(key, keysz, val, strlen(val), fold_from);
	ASSERT(r == 0);
	return true;
}

static enum chain_status
limit_run(void *inst, struct chain_call *call, struct chain_verdict *v)
{
	const struct limit *l = inst;
	struct chain_session *cs = chain_call_session(call);
	char base[STORE_KEY_MAX], key[STORE_KEY_MAX];

	if (!limit_key(l, cs, base, sizeof(base))) {
		chain_verdict_continue(v);
		return CHAIN_DONE;
	}
	uint64_t now = util_wall_us() / 1000;
	uint64_t bucket = now / l->period_ms;
	struct limit_job *j = xcalloc(1, sizeof(*j));
	char cur[UTIL_DEC_MAX], prev[UTIL_DEC_MAX];
	j->call = call;
	j->l = l;
	j->st = cs->loop->store;
	j->frac_ms = now % l->period_ms;
	/* "rl:STAGE:N/PERIOD:WHAT:VALUE:WINDOW", this window's and the last's. */
	util_strjoin(key, sizeof(key), base, ":",
	    util_i64_dec(cur, (int64_t)bucket), NULL);
	util_strjoin(j->prev_key, sizeof(j->prev_key), base, ":",
	    util_i64_dec(prev, (int64_t)bucket - 1), NULL);
	if (l->what == LIMIT_IP)
		util_strjoin(j->pen_key, sizeof(j->pen_key), "penalty:",
		    cs->ip, NULL);
	store_incr(j->st, key, 1, 2 * l->period_ms, limit_incr_cb, j);
	return CHAIN_PENDING;
}

/* penalty N [DURATION]: no valid recipient in the session -> N points. */
struct penalty {
	int64_t		n;
	uint64_t	ttl_ms;
};

static void *
penalty_new(const struct chain_handler_args *a, char **err_out)
{
	struct penalty *p = xcalloc(1, sizeof(*p));
	char *end = NULL;

	p->ttl_ms = 3600 * 1000;
	if (a->argc >= 2)
		p->n = strtoll(a->argv[1], &end, 10);
	if (a->argc < 2 || a->argc > 3 || *end != '\0' || p->n < 1 ||
	    p->n > 1000000 || (a->argc == 3 &&
	    chain_parse_lifetime_ms(a->argv[2], &p->ttl_ms) == -1)) {
		free(p);
		*err_out = xstrdup("usage: penalty N [DURATION]");
		return NULL;
	}
	return p;
}

static enum chain_status
penalty_run(void *inst, struct chain_call *call, struct chain_verdict *v)
{
	const struct penalty *p = inst;
	struct chain_session *cs = chain_call_session(call);
	char key[STORE_KEY_MAX];

	chain_verdict_continue(v);
	if (cs->nrcpts_session > 0 || cs->ip[0] == '\0')
		return CHAIN_DONE;
	util_strjoin(key, sizeof(key), "penalty:", cs->ip, NULL);
	store_incr(cs->loop->store, key, p->n, p->ttl_ms, NULL, NULL);
	util_strlcpy(v->why, "no valid recipient", sizeof(v->why));
	return CHAIN_DONE;
}

const struct chain_handler_ops chain_limit_ops[] = {
	{ "ratelimit", CHAIN_STAGES_ALL & ~CHAIN_STAGE_BIT(SMTP_STAGE_QUIT) &
	    ~CHAIN_STAGE_BIT(SMTP_STAGE_DISCONNECT), limit_new, free,
	    limit_run, NULL, NULL },
	{ "penalty", CHAIN_STAGE_BIT(SMTP_STAGE_DISCONNECT), penalty_new, free,
	    penalty_run, NULL, NULL },
	{ NULL, 0, NULL, NULL, NULL, NULL, NULL },
};
