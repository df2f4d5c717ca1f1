/*
 * chain/chain.c: building chains from the config, running a stage's
 * handlers in order (synchronously or across loop iterations), validating
 * their verdicts into SMTP replies, the on-error policies and delays.
 * Knows nothing of what each handler checks (builtin_*.c, Lua, milter).
 */
#include "chain/chain.h"

#include <arpa/inet.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain/chain_private.h"
#include "chain/session.h"
#include "config/config.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "store/store.h"
#include "table/table.h"
#include "util/util.h"

_Static_assert(CONFIG_STAGE_COUNT == SMTP_STAGE_COUNT,
    "config/ and smtp/ must list the same stages");

#define CHAIN_DELAY_MAX_MS	(15u * 60 * 1000)
#define CHAIN_CALL_TIMEOUT_MS	(60u * 1000)

static const char *const chain_stage_names[SMTP_STAGE_COUNT] = {
	"connect", "helo", "starttls", "auth", "mail", "rcpt", "data",
	"header", "eom", "quit", "disconnect",
};

const char *
chain_stage_name(enum smtp_stage st)
{
	if ((unsigned)st >= SMTP_STAGE_COUNT)
		return NULL;
	return chain_stage_names[st];
}

int
chain_stage_parse(const char *name, enum smtp_stage *out)
{
	for (unsigned i = 0; i < SMTP_STAGE_COUNT; i++)
		if (strcmp(name, chain_stage_names[i]) == 0) {
			*out = (enum smtp_stage)i;
			return 0;
		}
	return -1;
}

/* ----- the handler registry ----- */

static const struct chain_handler_ops **chain_extra;
static size_t chain_nextra;

void
chain_register(const struct chain_handler_ops *ops)
{
	chain_extra = xreallocarray(chain_extra, chain_nextra + 1,
	    sizeof(*chain_extra));
	chain_extra[chain_nextra++] = ops;
}

static const struct chain_handler_ops *const chain_families[] = {
	chain_basic_ops, chain_limit_ops, chain_dns_ops, chain_spf_ops,
	chain_grey_ops, chain_content_ops, chain_rep_ops, chain_lua_ops,
	chain_program_ops, chain_milter_ops,
};
#define CHAIN_NFAMILIES	(sizeof(chain_families) / sizeof(chain_families[0]))

/*
 * The builtin handler kinds in a fixed order, named for metrics/ once: a
 * kind's label is its place here (registered ones share the last).
 */
static const char *chain_kind_names[METRICS_DIM];
static size_t chain_nkinds;

static void
chain_kinds_init(void)
{
	for (size_t f = 0; f < CHAIN_NFAMILIES; f++)
		for (const struct chain_handler_ops *o = chain_families[f];
		    o->name != NULL && chain_nkinds < METRICS_DIM - 1; o++)
			chain_kind_names[chain_nkinds++] = o->name;
	chain_kind_names[chain_nkinds++] = "other";
	metrics_set_handler_kinds(chain_kind_names, chain_nkinds);
}

static unsigned
chain_kind_of(const struct chain_handler_ops *ops)
{
	for (size_t i = 0; i + 1 < chain_nkinds; i++)
		if (strcmp(chain_kind_names[i], ops->name) == 0)
			return (unsigned)i;
	return (unsigned)chain_nkinds - 1;
}

const struct chain_handler_ops *
chain_handler_find(const char *name)
{
	for (size_t f = 0; f < CHAIN_NFAMILIES; f++)
		for (const struct chain_handler_ops *o = chain_families[f];
		    o->name != NULL; o++)
			if (strcmp(o->name, name) == 0)
				return o;
	for (size_t i = 0; i < chain_nextra; i++)
		if (strcmp(chain_extra[i]->name, name) == 0)
			return chain_extra[i];
	return NULL;
}

/* ----- verdict helpers ----- */

void
chain_verdict_continue(struct chain_verdict *v)
{
	memset(v, 0, sizeof(*v));
	v->kind = CHAIN_CONTINUE;
}

void
chain_verdict_reject(struct chain_verdict *v, int code, const char *esc,
    const char *text)
{
	memset(v, 0, sizeof(*v));
	v->kind = CHAIN_REJECT;
	v->code = code;
	if (esc != NULL)
		util_strlcpy(v->esc, esc, sizeof(v->esc));
	if (text != NULL)
		util_strlcpy(v->text, text, sizeof(v->text));
}

void
chain_verdict_fail(struct chain_verdict *v, const char *fmt, ...)
{
	va_list ap;

	memset(v, 0, sizeof(*v));
	v->kind = CHAIN_FAIL;
	va_start(ap, fmt);
	vsnprintf(v->why, sizeof(v->why), fmt, ap);
	va_end(ap);
}

bool
chain_code_ok(int code)
{
	return code >= 400 && code <= 599;
}

/* RFC 3463 2: esc is an enhanced status code, of the class of code. */
bool
chain_esc_ok(const char *esc, int code)
{
	size_t n = util_esc_len(esc);

	return n > 0 && esc[n] == '\0' && esc[0] == '0' + code / 100;
}

/* RFC 5321 4.2: reply text is printable US-ASCII (and spaces). */
static bool
chain_text_ok(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

int
chain_parse_reply(const char *const *argv, size_t argc,
    struct chain_verdict *v, char **err_out)
{
	size_t i = 0;
	char *end;

	chain_verdict_reject(v, 550, NULL, NULL);
	if (i < argc && strspn(argv[i], "0123456789") == strlen(argv[i])) {
		long code = strtol(argv[i], &end, 10);
		if (!chain_code_ok((int)code) || strlen(argv[i]) != 3) {
			*err_out = xasprintf("reply code %s must be 4xx or "
			    "5xx", argv[i]);
			return -1;
		}
		v->code = (int)code;
		i++;
	}
	if (i < argc && argv[i][0] >= '2' && argv[i][0] <= '5' &&
	    argv[i][1] == '.') {
		if (!chain_esc_ok(argv[i], v->code)) {
			*err_out = xasprintf("enhanced code %s does not fit "
			    "reply code %d", argv[i], v->code);
			return -1;
		}
		util_strlcpy(v->esc, argv[i], sizeof(v->esc));
		i++;
	}
	struct util_buf b = { 0 };
	for (; i < argc; i++) {
		if (b.len > 0)
			util_buf_add(&b, " ", 1);
		util_buf_addstr(&b, argv[i]);
	}
	util_buf_add(&b, "", 1);
	int r = util_strlcpy(v->text, b.data, sizeof(v->text));
	util_buf_clear(&b);
	if (r == -1 || !chain_text_ok(v->text)) {
		*err_out = xstrdup("reply text too long or not printable");
		return -1;
	}
	return 0;
}

const char *
chain_addr_domain(const char *addr)
{
	const char *at = strrchr(addr, '@');

	return at != NULL ? at + 1 : "";
}

void
chain_ip_net(const char *ip, char *buf, size_t bufsz)
{
	if (strchr(ip, ':') == NULL) {
		const char *dot = strrchr(ip, '.');
		int n = dot != NULL ? (int)(dot - ip) : (int)strlen(ip);
		util_snprintf(buf, bufsz, "%.*s.0/24", n, ip);
		return;
	}
	/* IPv6: the /64, whatever way the address was written. */
	struct in6_addr a;
	char text[INET6_ADDRSTRLEN];
	if (inet_pton(AF_INET6, ip, &a) != 1) {
		util_snprintf(buf, bufsz, "%s", ip);
		return;
	}
	memset(a.s6_addr + 8, 0, 8);
	inet_ntop(AF_INET6, &a, text, sizeof(text));
	util_snprintf(buf, bufsz, "%s/64", text);
}

void
chain_ban_key(const char *ip, char *buf, size_t bufsz)
{
	util_snprintf(buf, bufsz, "ban:%s", ip);
}

void
chain_ban_key_of(const char *ip, char *buf, size_t bufsz)
{
	chain_ban_key(ip, buf, bufsz);
}

struct chain_deferred {
	void	(*fn)(void *);
	void	*arg;
};

static void
chain_deferred_cb(evutil_socket_t fd, short what, void *arg)
{
	struct chain_deferred d = *(struct chain_deferred *)arg;

	(void)fd;
	(void)what;
	free(arg);
	d.fn(d.arg);
}

void
chain_defer(struct event_base *base, void (*fn)(void *), void *arg)
{
	struct chain_deferred *d = xmalloc(sizeof(*d));
	struct timeval zero = { 0, 0 };

	d->fn = fn;
	d->arg = arg;
	if (event_base_once(base, -1, EV_TIMEOUT, chain_deferred_cb, d,
	    &zero) == -1)
		fatal("event_base_once failed");
}

/* ----- building ----- */

struct chain_handler {
	const struct chain_handler_ops *ops;	/* borrowed: static tables */
	void			*inst;		/* owned through ops->free_fn */
	enum chain_on_error	 on_error;
	int			 line;
	unsigned		 kind;		/* metrics label: chain_kind_of */
};

struct chain_set {
	atomic_int		 refs;
	struct chain_handler	*h[SMTP_STAGE_COUNT];	/* owned arrays */
	size_t			 n[SMTP_STAGE_COUNT];
};

struct chain_set *
chain_set_new(const struct config *cfg, char **errs_out)
{
	static pthread_once_t kinds_once = PTHREAD_ONCE_INIT;
	struct chain_set *set = xcalloc(1, sizeof(*set));
	struct util_buf errs = { 0 };

	pthread_once(&kinds_once, chain_kinds_init);
	atomic_init(&set->refs, 1);
	for (unsigned st = 0; st < SMTP_STAGE_COUNT; st++) {
		const struct config_chain *ch = &cfg->chains[st];
		set->h[st] = xcalloc(ch->nhandlers + 1, sizeof(*set->h[st]));
		for (size_t i = 0; i < ch->nhandlers; i++) {
			const struct config_handler *ch_h = &ch->handlers[i];
			const struct chain_handler_ops *ops =
			    chain_handler_find(ch_h->argv[0]);
			char *err = NULL;
			if (ops == NULL) {
				util_buf_printf(&errs, "%s:%d: on %s: unknown "
				    "handler \"%s\"\n", cfg->path, ch_h->line,
				    chain_stage_names[st], ch_h->argv[0]);
				continue;
			}
			if ((ops->stages & CHAIN_STAGE_BIT(st)) == 0) {
				util_buf_printf(&errs, "%s:%d: %s: not "
				    "allowed at the %s stage\n", cfg->path,
				    ch_h->line, ops->name,
				    chain_stage_names[st]);
				continue;
			}
			struct chain_handler_args a = {
				.argv = (const char *const *)ch_h->argv,
				.argc = ch_h->argc,
				.stage = (enum smtp_stage)st,
				.cfg = cfg,
				.file = cfg->path,
				.line = ch_h->line,
			};
			void *inst = ops->new_fn(&a, &err);
			if (inst == NULL) {
				util_buf_printf(&errs, "%s:%d: %s: %s\n",
				    cfg->path, ch_h->line, ops->name,
				    err != NULL ? err : "bad arguments");
				free(err);
				continue;
			}
			struct chain_handler *h = &set->h[st][set->n[st]++];
			h->ops = ops;
			h->inst = inst;
			h->on_error = ch_h->on_error == CONFIG_ONERR_ACCEPT ?
			    CHAIN_ONERR_ACCEPT : ch_h->on_error ==
			    CONFIG_ONERR_REJECT ? CHAIN_ONERR_REJECT :
			    CHAIN_ONERR_TEMPFAIL;
			h->line = ch_h->line;
			h->kind = chain_kind_of(ops);
		}
	}
	if (errs.len > 0) {
		*errs_out = xstrdup(util_buf_cstr(&errs));
		util_buf_clear(&errs);
		chain_set_unref(&set);
		return NULL;
	}
	*errs_out = NULL;
	return set;
}

struct chain_set *
chain_set_ref(struct chain_set *set)
{
	atomic_fetch_add(&set->refs, 1);
	return set;
}

void
chain_set_unref(struct chain_set **setp)
{
	struct chain_set *set = *setp;

	if (set == NULL)
		return;
	*setp = NULL;
	if (atomic_fetch_sub(&set->refs, 1) != 1)
		return;
	for (unsigned st = 0; st < SMTP_STAGE_COUNT; st++) {
		for (size_t i = 0; i < set->n[st]; i++)
			if (set->h[st][i].ops->free_fn != NULL)
				set->h[st][i].ops->free_fn(set->h[st][i].inst);
		free(set->h[st]);
	}
	free(set);
}

bool
chain_set_has(const struct chain_set *set, enum smtp_stage st)
{
	return (unsigned)st < SMTP_STAGE_COUNT && set->n[st] > 0;
}

bool
chain_set_reads_file(const struct chain_set *set, enum smtp_stage st)
{
	if ((unsigned)st >= SMTP_STAGE_COUNT)
		return false;
	for (size_t i = 0; i < set->n[st]; i++) {
		const struct chain_handler *h = &set->h[st][i];
		if (h->ops->reads_file_fn != NULL &&
		    h->ops->reads_file_fn(h->inst))
			return true;
	}
	return false;
}

/* ----- per loop ----- */

/* The store spec cfg (or opts) names, with its default; owned. */
static char *
chain_loop_spec(const struct config *cfg, const struct chain_loop_opts *opts)
{
	if (opts != NULL && opts->store != NULL)
		return xstrdup(opts->store);
	if (cfg != NULL && cfg->chain_store != NULL)
		return xstrdup(cfg->chain_store);
	if (cfg != NULL)
		return xasprintf("sqlite:%s/state.db", cfg->spool);
	return xstrdup("memory:");
}

struct chain_loop *
chain_loop_new(struct event_base *base, const struct config *cfg,
    const struct chain_loop_opts *opts, const char **err_out)
{
	struct chain_loop *l = xcalloc(1, sizeof(*l));
	const char *resolver = opts != NULL && opts->resolver != NULL ?
	    opts->resolver : cfg != NULL ? cfg->chain_resolver : NULL;

	l->refs = 1;
	l->base = base;
	l->call_timeout_ms = opts != NULL && opts->call_timeout_ms > 0 ?
	    opts->call_timeout_ms : CHAIN_CALL_TIMEOUT_MS;
	l->store_spec = chain_loop_spec(cfg, opts);
	l->resolver = resolver != NULL ? xstrdup(resolver) : NULL;
	l->dns = evdns_base_new(base, resolver == NULL ?
	    EVDNS_BASE_INITIALIZE_NAMESERVERS : 0);
	if (l->dns == NULL) {
		*err_out = "cannot set up the DNS resolver";
		goto fail;
	}
	if (resolver != NULL && evdns_base_nameserver_ip_add(l->dns,
	    resolver) != 0) {
		*err_out = "bad resolver address";
		goto fail;
	}
	if ((l->store = store_open(base, l->store_spec, err_out)) == NULL)
		goto fail;
	l->tables = table_loop_new(base);
	return l;
fail:
	chain_loop_free(&l);
	return NULL;
}

void
chain_loop_free(struct chain_loop **lp)
{
	struct chain_loop *l = *lp;

	if (l == NULL)
		return;
	table_loop_free(&l->tables);
	store_close(&l->store);
	if (l->dns != NULL)
		evdns_base_free(l->dns, 1);
	free(l->store_spec);
	free(l->resolver);
	free(l);
	*lp = NULL;
}

struct chain_loop *
chain_loop_ref(struct chain_loop *l)
{
	l->refs++;
	return l;
}

static void
chain_loop_free_cb(void *arg)
{
	struct chain_loop *l = arg;

	chain_loop_free(&l);
}

void
chain_loop_unref(struct chain_loop **lp)
{
	struct chain_loop *l = *lp;

	if (l == NULL)
		return;
	*lp = NULL;
	if (--l->refs == 0)
		chain_defer(l->base, chain_loop_free_cb, l);
}

bool
chain_loop_is_for(const struct chain_loop *l, const struct config *cfg)
{
	char *spec = chain_loop_spec(cfg, NULL);
	bool same = strcmp(spec, l->store_spec) == 0 &&
	    (l->resolver == NULL ? cfg->chain_resolver == NULL :
	    cfg->chain_resolver != NULL &&
	    strcmp(l->resolver, cfg->chain_resolver) == 0);

	free(spec);
	return same;
}

struct store *
chain_loop_store(struct chain_loop *l)
{
	return l->store;
}

struct table_loop *
chain_loop_tables(struct chain_loop *l)
{
	return l->tables;
}

/* ----- running ----- */

struct chain_call {
	struct chain_run	*run;		/* NULL once cancelled or orphaned */
	struct chain_session	*cs;		/* borrowed while run != NULL */
	struct chain_set	*set;		/* ref while orphaned */
	const struct chain_handler *h;		/* borrowed from set */
	void			*data;		/* the handler's */
	bool			 in_run;	/* inside run_fn */
	bool			 early;		/* done while in_run */
	struct chain_verdict	 early_v;
};

static void	chain_step(struct chain_run *run);

static void
chain_run_timer(struct chain_run *run, uint64_t ms, event_callback_fn fn)
{
	struct timeval tv = util_timeval_ms(ms);

	if (run->timer != NULL)
		event_free(run->timer);
	run->timer = evtimer_new(run->cs->loop->base, fn, run);
	evtimer_add(run->timer, &tv);
}

/* Put the validated reply of v in run->res; false when v is not valid. */
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
		code = 550;
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
	run->res.verdict = close ? SMTP_CLOSE : SMTP_REJECT;
	return true;
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
	char safe[300];

	log_event(LOG_LVL_INFO, "chain", run->cs->sid, NULL,
	    "stage=%s handler=%s line=%d verdict=%s%s%s%s",
	    chain_stage_names[run->ev.stage], h->ops->name, h->line, what,
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
		if (!chain_make_reply(run, v, v->kind == CHAIN_DISCONNECT)) {
			/* Outside input: a bad reply from a handler is 451. */
			chain_log_verdict(run, h, "bad-reply", v->text);
			chain_tempfail(run);
			return 0;
		}
		chain_log_verdict(run, h, v->kind == CHAIN_REJECT ? "reject" :
		    "disconnect", v->why);
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
			chain_verdict_reject(&r, 550, "5.7.1", NULL);
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

/* Run handlers from run->idx until one is pending or the chain ends. */
static void
chain_step(struct chain_run *run)
{
	struct chain_session *cs = run->cs;
	struct chain_set *set = cs->set;
	enum smtp_stage st = run->ev.stage;

	while (run->idx < set->n[st]) {
		const struct chain_handler *h = &set->h[st][run->idx];
		struct chain_call *call = xcalloc(1, sizeof(*call));
		struct chain_verdict v;

		call->run = run;
		call->cs = cs;
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
			chain_run_timer(run, cs->loop->call_timeout_ms,
			    chain_call_timeout_cb);
			return;
		}
		free(call);
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
	if (run->timer != NULL) {
		event_free(run->timer);
		run->timer = NULL;
	}
	const struct chain_handler *h = call->h;
	free(call);
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
	run->active = false;
}
