/*
 * config/parse_ops.c: statements about running the process rather than
 * mail: "bind-retry COUNT [INTERVAL]" and "metrics listen [ADDR:PORT]
 * [public]".  (pid-file is a plain path in parse.c.)  Knows nothing of
 * sockets.
 */
#include "config/config.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_private.h"
#include "util/util.h"

#define CFG_BIND_RETRIES_MAX	1000
#define CFG_BIND_RETRY_MS_MIN	100
#define CFG_BIND_RETRY_MS_MAX	(10 * 60 * 1000)
#define CFG_METRICS_PORT	9925

void
cfg_ops_defaults(struct config *c)
{
	/* SlimSMTP's: six more tries, five seconds apart. */
	c->bind_retries = 6;
	c->bind_retry_ms = 5000;
}

/* "bind-retry COUNT [INTERVAL]": COUNT 0..1000 (0: give up at once). */
void
cfg_st_bind_retry(struct cfg_parser *p, const struct cfg_line *ln)
{
	struct config *c = cfg_parser_config(p);
	uint64_t n, ms = c->bind_retry_ms;

	if (!cfg_nargs(p, ln, 1, 2, "bind-retry COUNT [INTERVAL]") ||
	    !cfg_once(p, ln, &p->seen_bind_retry, "bind-retry"))
		return;
	if (util_parse_size(ln->toks[1].text, &n) == -1 ||
	    n > CFG_BIND_RETRIES_MAX) {
		cfg_err(p, ln->lineno, "bind-retry: bad count %s (0..%d)",
		    cfg_q(ln->toks[1].text), CFG_BIND_RETRIES_MAX);
		return;
	}
	if (ln->ntoks == 3 && (util_parse_duration_ms(ln->toks[2].text,
	    &ms) == -1 || ms < CFG_BIND_RETRY_MS_MIN ||
	    ms > CFG_BIND_RETRY_MS_MAX)) {
		cfg_err(p, ln->lineno, "bind-retry: bad interval %s "
		    "(100ms..10m)", cfg_q(ln->toks[2].text));
		return;
	}
	c->bind_retries = (unsigned)n;
	c->bind_retry_ms = ms;
}

/* 127.0.0.0/8 or ::1 (cfg_parse_hostport gave a normalised address). */
static bool
cfg_is_loopback(const char *addr)
{
	return strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0;
}

/*
 * "metrics listen [ADDR:PORT] [public]": the Prometheus endpoint, on
 * 127.0.0.1:9925 unless given; an address other hosts can reach needs
 * "public", so metrics never go public by accident.
 */
void
cfg_st_metrics(struct cfg_parser *p, const struct cfg_line *ln)
{
	static const char usage[] = "metrics listen [ADDR:PORT] [public]";
	struct config *c = cfg_parser_config(p);
	const char *why = NULL;
	char *addr = NULL;
	int port = CFG_METRICS_PORT;

	/* Words only from here: the last one may be "public". */
	if (!cfg_nargs(p, ln, 1, 3, usage) ||
	    !cfg_once(p, ln, &p->seen_metrics, "metrics"))
		return;
	bool public = ln->ntoks > 2 &&
	    strcmp(ln->toks[ln->ntoks - 1].text, "public") == 0;
	size_t naddr = ln->ntoks - 2 - (public ? 1 : 0);
	if (strcmp(ln->toks[1].text, "listen") != 0 || naddr > 1) {
		cfg_err(p, ln->lineno, "metrics: usage: %s", usage);
		return;
	}
	if (naddr == 1 && cfg_parse_hostport(ln->toks[2].text, &addr, &port,
	    &why) == -1) {
		cfg_err(p, ln->lineno, "metrics listen: %s %s",
		    cfg_q(ln->toks[2].text), why);
		return;
	}
	if (addr == NULL)
		addr = xstrdup("127.0.0.1");
	if (!public && !cfg_is_loopback(addr)) {
		cfg_err(p, ln->lineno, "metrics listen: %s is not a loopback "
		    "address: add \"public\" to serve metrics to other hosts",
		    addr);
		free(addr);
		return;
	}
	free(c->metrics_addr);
	c->metrics_addr = addr;
	c->metrics_port = port;
}
