/*
 * chain/builtin_grey.c: "greylist [delay DUR] [lifetime DUR] [whitelist
 * DUR]" at rcpt.  The triplet is the client's /24 (or /64), the sender and
 * the recipient.  First sight: 451 4.7.1; a retry after the delay and
 * within the lifetime passes and whitelists the client's network.
 */
#include "chain/chain_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain/session.h"
#include "store/store.h"
#include "util/util.h"

struct grey {
	uint64_t	delay_ms;
	uint64_t	lifetime_ms;
	uint64_t	whitelist_ms;
};

static void *
grey_new(const struct chain_handler_args *a, char **err_out)
{
	struct grey *g = xcalloc(1, sizeof(*g));

	g->delay_ms = 5 * 60 * 1000;
	g->lifetime_ms = 2ull * 86400 * 1000;
	g->whitelist_ms = 36ull * 86400 * 1000;
	for (size_t i = 1; i < a->argc; i += 2) {
		uint64_t *dst = strcmp(a->argv[i], "delay") == 0 ?
		    &g->delay_ms : strcmp(a->argv[i], "lifetime") == 0 ?
		    &g->lifetime_ms : strcmp(a->argv[i], "whitelist") == 0 ?
		    &g->whitelist_ms : NULL;
		/* The delay may be 0; the other two are store lifetimes. */
		if (dst == NULL || i + 1 >= a->argc ||
		    (dst == &g->delay_ms ? util_parse_duration_ms(a->argv[i + 1],
		    dst) : chain_parse_lifetime_ms(a->argv[i + 1], dst)) == -1) {
			free(g);
			*err_out = xstrdup("usage: greylist [delay DUR] "
			    "[lifetime DUR] [whitelist DUR]");
			return NULL;
		}
	}
	if (g->lifetime_ms <= g->delay_ms) {
		free(g);
		*err_out = xstrdup("the lifetime must be longer than the "
		    "delay");
		return NULL;
	}
	return g;
}

struct grey_job {
	struct chain_call	*call;
	const struct grey	*g;
	struct store		*st;
	char			 wl_key[STORE_KEY_MAX];
	char			 key[STORE_KEY_MAX];
};

static void
grey_done(struct grey_job *j, const struct chain_verdict *v)
{
	struct chain_session *cs = chain_call_session(j->call);

	/* A failure decided nothing: its on-error policy skips the handler. */
	if (cs != NULL && v->kind != CHAIN_FAIL)
		chain_kv_set(cs, CHAIN_SCOPE_TX, "greylist", v->kind ==
		    CHAIN_REJECT ? "deferred" : "pass");
	chain_call_done(j->call, v);
	free(j);
}

static void
grey_triplet_cb(void *arg, int rc, const char *value)
{
	struct grey_job *j = arg;
	struct chain_verdict v;
	uint64_t now = util_wall_us() / 1000;

	if (rc == -1) {
		chain_verdict_fail(&v, "state store unavailable");
		grey_done(j, &v);
		return;
	}
	if (rc == 0) {
		char num[32];
		snprintf(num, sizeof(num), "%llu", (unsigned long long)now);
		store_set(j->st, j->key, num, j->g->lifetime_ms, NULL, NULL);
		rc = 1;
		value = num;
	}
	uint64_t first = strtoull(value, NULL, 10);
	if (now < first + j->g->delay_ms) {
		char text[CHAIN_TEXT_MAX];
		snprintf(text, sizeof(text), "Greylisted, try again in %llu "
		    "seconds", (unsigned long long)((first + j->g->delay_ms -
		    now + 999) / 1000));
		chain_verdict_reject(&v, 451, "4.7.1", text);
		util_strlcpy(v.why, "greylisted", sizeof(v.why));
		grey_done(j, &v);
		return;
	}
	/* Passed: the network is trusted for a while. */
	store_set(j->st, j->wl_key, "1", j->g->whitelist_ms, NULL, NULL);
	chain_verdict_continue(&v);
	grey_done(j, &v);
}

static void
grey_wl_cb(void *arg, int rc, const char *value)
{
	struct grey_job *j = arg;
	struct chain_verdict v;

	(void)value;
	if (rc == 1) {
		chain_verdict_continue(&v);
		grey_done(j, &v);
		return;
	}
	store_get(j->st, j->key, grey_triplet_cb, j);
}

static enum chain_status
grey_run(void *inst, struct chain_call *call, struct chain_verdict *v)
{
	struct chain_session *cs = chain_call_session(call);
	struct grey_job *j;
	char net[80], from[STORE_KEY_PART_MAX + 1], to[STORE_KEY_PART_MAX + 1];
	int r;

	if (cs->rcpt == NULL) {
		chain_verdict_continue(v);
		return CHAIN_DONE;
	}
	chain_ip_net(cs->ip, net, sizeof(net));
	j = xcalloc(1, sizeof(*j));
	j->call = call;
	j->g = inst;
	j->st = cs->loop->store;
	util_snprintf(j->wl_key, sizeof(j->wl_key), "greywl:%s", net);
	/* "grey:NET:<SENDER>:<RCPT>", each address a part of its own. */
	from[0] = to[0] = '\0';
	r = chain_key_add_addr(from, sizeof(from), cs->sender != NULL ?
	    cs->sender : "");
	r |= chain_key_add_addr(to, sizeof(to), cs->rcpt);
	ASSERT(r == 0);		/* a part always fits in this much */
	util_strjoin(j->key, sizeof(j->key), "grey:", net, ":<", from, ">:<",
	    to, ">", NULL);
	store_get(j->st, j->wl_key, grey_wl_cb, j);
	return CHAIN_PENDING;
}

const struct chain_handler_ops chain_grey_ops[] = {
	{ "greylist", CHAIN_STAGE_BIT(SMTP_STAGE_RCPT), grey_new, free,
	    grey_run, NULL, NULL },
	{ NULL, 0, NULL, NULL, NULL, NULL, NULL },
};
