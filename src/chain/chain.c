/*
 * chain/chain.c: the stages' names, the handler registry (the builtin
 * families and those registered), chains built from the config into a
 * chain_set, and helpers for handlers' arguments.  Running the chains is
 * run.c's; the verdicts and replies handlers give are verdict.c's.
 */
#include "chain/chain.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "chain/chain_private.h"
#include "chain/session.h"
#include "config/config.h"
#include "metrics/metrics.h"
#include "store/store.h"
#include "util/util.h"

_Static_assert(CONFIG_STAGE_COUNT == SMTP_STAGE_COUNT,
    "config/ and smtp/ must list the same stages");

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

/*
 * A builtin's verdicts are fixed when the config is checked; a script's,
 * a program's, a filter's or a registered handler's are outside input.
 */
bool
chain_ops_is_builtin(const struct chain_handler_ops *ops)
{
	static const struct chain_handler_ops *const outside[] = {
		chain_lua_ops, chain_program_ops, chain_milter_ops,
	};

	for (size_t f = 0; f < sizeof(outside) / sizeof(outside[0]); f++)
		for (const struct chain_handler_ops *o = outside[f];
		    o->name != NULL; o++)
			if (o == ops)
				return false;
	for (size_t i = 0; i < chain_nextra; i++)
		if (chain_extra[i] == ops)
			return false;
	return true;
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

/* ----- helpers for handlers' arguments ----- */

const char *
chain_addr_domain(const char *addr)
{
	const char *at = strrchr(addr, '@');

	return at != NULL ? at + 1 : "";
}

int
chain_key_add_addr(char *buf, size_t bufsz, const char *addr)
{
	const char *at = strrchr(addr, '@');
	size_t len = strlen(addr);

	/* RFC 5321 2.4: the local part may be case-sensitive, not a domain. */
	return store_key_add(buf, bufsz, addr, len, at != NULL ?
	    (size_t)(at - addr) + 1 : len);
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

int
chain_parse_lifetime_ms(const char *s, uint64_t *out)
{
	uint64_t ms;

	if (util_parse_duration_ms(s, &ms) == -1 || ms == 0)
		return -1;
	*out = ms;
	return 0;
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

/* ----- building ----- */

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
