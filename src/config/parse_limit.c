/*
 * config/parse_limit.c: the "limit NAME VALUE" statements: a table of
 * every limit with its kind, range and default, and the connection rate;
 * and "trusted", the networks the per-address limits skip.
 */
#include "config/config.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_private.h"
#include "util/util.h"

enum cfg_limit_kind { CFG_LIM_SIZE, CFG_LIM_COUNT, CFG_LIM_DURATION };

static const struct cfg_limit {
	const char		*name;
	enum cfg_limit_kind	 kind;
	uint64_t		 min, max, def;
	const char		*range;		/* for messages */
	size_t			 off;		/* into struct config_limits */
	size_t			 width;		/* sizeof the field */
} cfg_limits[] = {
#define L(f)	offsetof(struct config_limits, f), \
	sizeof(((struct config_limits *)NULL)->f)
	{ "message-size", CFG_LIM_SIZE, 1024, 2ULL << 30, 35ULL << 20,
	    "1k..2G", L(msg_max) },
	{ "recipients", CFG_LIM_COUNT, 1, 100000, 100, "1..100000",
	    L(rcpt_max) },
	{ "line-length", CFG_LIM_COUNT, 512, 65536, 1000, "512..65536",
	    L(line_max) },
	{ "errors", CFG_LIM_COUNT, 1, 1000, 10, "1..1000", L(err_max) },
	/* RFC 5321 4.5.3.2.7: the server should wait at least 5 minutes. */
	{ "idle-timeout", CFG_LIM_DURATION, 1000, 3600000, 300000, "1s..1h",
	    L(idle_ms) },
	{ "data-timeout", CFG_LIM_DURATION, 1000, 3600000, 600000, "1s..1h",
	    L(data_idle_ms) },
	/* Postfix's smtpd_min_data_rate: each octet buys 1/rate seconds. */
	{ "data-rate", CFG_LIM_COUNT, 0, 100000000, 500, "0..100000000",
	    L(data_rate_min) },
	{ "session-timeout", CFG_LIM_DURATION, 1000, 86400000, 1800000,
	    "1s..24h", L(session_ms) },
	{ "connections", CFG_LIM_COUNT, 1, 1000000, 1000, "1..1000000",
	    L(conn_max) },
	{ "connections-per-ip", CFG_LIM_COUNT, 1, 1000000, 50,
	    "1..1000000", L(conn_per_ip_max) },
	{ "shutdown-grace", CFG_LIM_DURATION, 0, 3600000, 30000, "0..1h",
	    L(shutdown_ms) },
	{ "messages-per-session", CFG_LIM_COUNT, 1, 1000000, 1000,
	    "1..1000000", L(msgs_per_session_max) },
	{ "recipients-per-session", CFG_LIM_COUNT, 1, 1000000, 1000,
	    "1..1000000", L(rcpts_per_session_max) },
	/* Off by default: a pause before the banner delays every client. */
	{ "greeting-delay", CFG_LIM_DURATION, 0, 60000, 0, "0..60s",
	    L(greeting_delay_ms) },
	/* proxy-protocol.txt 1: at least 3 s, to cover a TCP retransmit. */
	{ "proxy-timeout", CFG_LIM_DURATION, 1000, 300000, 5000, "1s..5m",
	    L(proxy_timeout_ms) },
#undef L
};
#define CFG_NLIMITS	(sizeof(cfg_limits) / sizeof(cfg_limits[0]))
_Static_assert(CFG_NLIMITS <= sizeof(((struct cfg_parser *)NULL)->seen_limit) /
    sizeof(int), "cfg_parser.seen_limit has room for every limit");

static void
cfg_limit_set(struct config_limits *lim, const struct cfg_limit *l,
    uint64_t v)
{
	char *f = (char *)lim + l->off;

	switch (l->width) {
	case sizeof(uint32_t): {
		uint32_t u = (uint32_t)v;
		memcpy(f, &u, sizeof(u));
		break;
	}
	case sizeof(uint64_t): {
		uint64_t u = v;
		memcpy(f, &u, sizeof(u));
		break;
	}
	default:
		ASSERT(!"limit field width");
	}
}

/* "limit connection-rate N/PERIOD" (e.g. 20/120s), or "off". */
static void
cfg_limit_rate(struct cfg_parser *p, const struct cfg_line *ln)
{
	const char *s = ln->toks[2].text, *slash = strchr(s, '/');
	uint64_t n, ms;
	char num[24];

	if (!cfg_once(p, ln, &p->seen_conn_rate, "limit connection-rate"))
		return;
	if (strcmp(s, "off") == 0) {
		p->c->limits.conn_rate_max = 0;
		return;
	}
	if (slash == NULL || (size_t)(slash - s) >= sizeof(num) ||
	    slash == s)
		goto bad;
	memcpy(num, s, (size_t)(slash - s));
	num[slash - s] = '\0';
	if (num[strspn(num, "0123456789")] != '\0' ||
	    util_parse_size(num, &n) == -1 || n < 1 || n > 1000000 ||
	    util_parse_duration_ms(slash + 1, &ms) == -1 || ms < 1000 ||
	    ms > 86400000)
		goto bad;
	p->c->limits.conn_rate_max = (unsigned)n;
	p->c->limits.conn_rate_window_ms = ms;
	return;
bad:
	cfg_err(p, ln->lineno, "limit connection-rate: bad value %s (N/PERIOD "
	    "like 20/120s: N in 1..1000000, PERIOD in 1s..1d; or off)",
	    cfg_q(s));
}

const char *
config_limit_name(size_t i)
{
	if (i < CFG_NLIMITS)
		return cfg_limits[i].name;
	return i == CFG_NLIMITS ? "connection-rate" : NULL;
}

void
cfg_st_limit(struct cfg_parser *p, const struct cfg_line *ln)
{
	const struct cfg_limit *l = NULL;
	size_t i;
	uint64_t v;
	int rc;

	if (!cfg_nargs(p, ln, 2, 2, "limit NAME VALUE"))
		return;
	if (strcmp(ln->toks[1].text, "connection-rate") == 0) {
		cfg_limit_rate(p, ln);
		return;
	}
	for (i = 0; i < CFG_NLIMITS; i++)
		if (strcmp(ln->toks[1].text, cfg_limits[i].name) == 0) {
			l = &cfg_limits[i];
			break;
		}
	if (l == NULL) {
		cfg_err(p, ln->lineno, "limit: unknown limit %s (message-size, "
		    "recipients, line-length, errors, idle-timeout, "
		    "data-timeout, data-rate, session-timeout, connections, "
		    "connections-per-ip, connection-rate, shutdown-grace, "
		    "messages-per-session, recipients-per-session, "
		    "greeting-delay, proxy-timeout)",
		    cfg_q(ln->toks[1].text));
		return;
	}
	char what[64];
	(void)util_snprintf(what, sizeof(what), "limit %s", l->name);
	if (!cfg_once(p, ln, &p->seen_limit[i], what))
		return;
	const char *s = ln->toks[2].text;
	switch (l->kind) {
	case CFG_LIM_SIZE:
		rc = util_parse_size(s, &v);
		break;
	case CFG_LIM_DURATION:
		rc = util_parse_duration_ms(s, &v);
		break;
	default:
		rc = util_parse_size(s, &v);
		/* A plain count: digits only, no size suffix. */
		if (s[strspn(s, "0123456789")] != '\0')
			rc = -1;
		break;
	}
	if (rc == -1) {
		cfg_err(p, ln->lineno, "%s: bad value %s (%s, range %s)", what,
		    cfg_q(s), l->kind == CFG_LIM_SIZE ? "a size like 35M" :
		    l->kind == CFG_LIM_DURATION ? "a duration like 30s, 5m" :
		    "a number", l->range);
		return;
	}
	if (v < l->min || v > l->max) {
		cfg_err(p, ln->lineno, "%s: %s is out of range (%s)", what,
		    cfg_q(s), l->range);
		return;
	}
	cfg_limit_set(&p->c->limits, l, v);
}

/* Local applications: many connections at once are normal. */
static const char *const cfg_trusted_default[] = { "127.0.0.0/8", "::1" };

void
cfg_limit_defaults(struct config *c)
{
	size_t n = sizeof(cfg_trusted_default) / sizeof(cfg_trusted_default[0]);

	for (size_t i = 0; i < CFG_NLIMITS; i++)
		cfg_limit_set(&c->limits, &cfg_limits[i], cfg_limits[i].def);
	c->trusted = xcalloc(n, sizeof(*c->trusted));
	for (size_t i = 0; i < n; i++)
		if (util_cidr_parse(cfg_trusted_default[i],
		    &c->trusted[c->ntrusted]) == 0)
			c->ntrusted++;
}

#define CFG_TRUSTED_USAGE	"trusted CIDR... | trusted none"

void
cfg_st_trusted(struct cfg_parser *p, const struct cfg_line *ln)
{
	struct config *c = p->c;

	if (!cfg_nargs(p, ln, 1, SIZE_MAX, CFG_TRUSTED_USAGE) ||
	    !cfg_once(p, ln, &p->seen_trusted, "trusted"))
		return;
	free(c->trusted);
	c->trusted = NULL;
	c->ntrusted = 0;
	if (ln->ntoks == 2 && strcmp(ln->toks[1].text, "none") == 0)
		return;
	c->trusted = xcalloc(ln->ntoks - 1, sizeof(*c->trusted));
	for (size_t i = 1; i < ln->ntoks; i++) {
		if (util_cidr_parse(ln->toks[i].text,
		    &c->trusted[c->ntrusted]) == -1) {
			cfg_err(p, ln->lineno, "trusted: %s is not a network "
			    "(like 127.0.0.0/8, ::1 or 192.0.2.7; usage: %s)",
			    cfg_q(ln->toks[i].text), CFG_TRUSTED_USAGE);
			return;
		}
		c->ntrusted++;
	}
}

bool
config_is_trusted(const struct config *cfg, const char *ip)
{
	for (size_t i = 0; i < cfg->ntrusted; i++)
		if (util_cidr_contains(&cfg->trusted[i], ip))
			return true;
	return false;
}
