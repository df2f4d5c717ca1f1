/*
 * Unit tests of chain/: order of handlers, every verdict kind, async
 * completion, delays, timeouts and on-error policies, shared state across
 * stages, templates, the header chain, trap and nomail, config errors
 * (golden files data/X.conf -> data/X.err) and the builtins.  A "probe"
 * handler registered here records its runs and answers as told.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chain/chain.h"
#include "chain/chain_private.h"
#include "config/config.h"
#include "util/util.h"

#include "harness.h"

/* ----- the probe handler: "probe LABEL [async MS] VERDICT ARGS..." ----- */

static char trace[1024];

struct probe {
	char			label[32];
	int			async_ms;	/* -1: sync; -2: never answers */
	struct chain_verdict	v;
};

static void *
probe_new(const struct chain_handler_args *a, char **err_out)
{
	struct probe *p = xcalloc(1, sizeof(*p));
	size_t i = 2;

	if (a->argc < 2) {
		*err_out = xstrdup("usage: probe LABEL ...");
		free(p);
		return NULL;
	}
	util_strlcpy(p->label, a->argv[1], sizeof(p->label));
	p->async_ms = -1;
	if (i + 1 < a->argc && strcmp(a->argv[i], "async") == 0) {
		p->async_ms = atoi(a->argv[i + 1]);
		i += 2;
	}
	chain_verdict_continue(&p->v);
	const char *k = i < a->argc ? a->argv[i++] : "continue";
	const char *x = i < a->argc ? a->argv[i] : "";
	if (strcmp(k, "accept") == 0)
		p->v.kind = CHAIN_ACCEPT;
	else if (strcmp(k, "reject") == 0) {
		chain_verdict_reject(&p->v, atoi(x), i + 1 < a->argc ?
		    a->argv[i + 1] : NULL, i + 2 < a->argc ? a->argv[i + 2] :
		    NULL);
	} else if (strcmp(k, "delay") == 0) {
		p->v.kind = CHAIN_DELAY;
		p->v.delay_ms = (uint64_t)atoi(x);
	} else if (strcmp(k, "disconnect") == 0) {
		p->v.kind = CHAIN_DISCONNECT;
		p->v.code = atoi(x);
	} else if (strcmp(k, "discard") == 0)
		p->v.kind = CHAIN_DISCARD;
	else if (strcmp(k, "quarantine") == 0) {
		p->v.kind = CHAIN_QUARANTINE;
		util_strlcpy(p->v.name, x, sizeof(p->v.name));
	} else if (strcmp(k, "tag") == 0) {
		p->v.kind = CHAIN_TAG;
		util_strlcpy(p->v.name, x, sizeof(p->v.name));
		util_strlcpy(p->v.value, i + 1 < a->argc ? a->argv[i + 1] : "",
		    sizeof(p->v.value));
		p->v.scope = i + 2 < a->argc ? CHAIN_SCOPE_TX :
		    CHAIN_SCOPE_SESSION;
	} else if (strcmp(k, "fail") == 0)
		chain_verdict_fail(&p->v, "probe failed");
	else if (strcmp(k, "never") == 0)
		p->async_ms = -2;
	return p;
}

struct probe_pending {
	struct chain_call	*call;
	struct probe		*p;
	struct event		*ev;
};

static void
probe_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct probe_pending *pp = arg;

	(void)fd;
	(void)what;
	event_free(pp->ev);
	chain_call_done(pp->call, &pp->p->v);
	free(pp);
}

static enum chain_status
probe_run(void *inst, struct chain_call *call, struct chain_verdict *v)
{
	struct probe *p = inst;
	size_t n = strlen(trace);

	util_snprintf(trace + n, sizeof(trace) - n, "%s%s", n > 0 ? "," : "",
	    p->label);
	if (p->async_ms == -1) {
		*v = p->v;
		return CHAIN_DONE;
	}
	struct probe_pending *pp = xcalloc(1, sizeof(*pp));
	pp->call = call;
	pp->p = p;
	*chain_call_data(call) = pp;
	if (p->async_ms == -2)
		return CHAIN_PENDING;
	struct timeval tv = { 0, p->async_ms * 1000 };
	pp->ev = evtimer_new(chain_session_base(chain_call_session(call)),
	    probe_timer_cb, pp);
	evtimer_add(pp->ev, &tv);
	return CHAIN_PENDING;
}

static void
probe_cancel(void *inst, struct chain_call *call)
{
	struct probe_pending *pp = *chain_call_data(call);

	(void)inst;
	if (pp->ev != NULL)
		event_free(pp->ev);
	free(pp);
}

static const struct chain_handler_ops probe_ops = {
	"probe", CHAIN_STAGES_ALL, probe_new, free, probe_run, probe_cancel,
	NULL,
};

#include "harness.c"
#include "dnsd.c"
#include "cases_framework.c"
#include "cases_builtin.c"

int
main(void)
{
	evthread_use_pthreads();	/* spf answers from worker threads */
	chain_register(&probe_ops);
	const struct CMUnitTest tests[] = {
		FRAMEWORK_TESTS
		BUILTIN_TESTS
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
