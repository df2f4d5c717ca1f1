/*
 * config/parse_ops.c: statements about running the process rather than
 * mail: "bind-retry COUNT [INTERVAL]".  (pid-file is a plain path in
 * parse.c.)  Knows nothing of sockets.
 */
#include "config/config.h"

#include <stdint.h>

#include "config/config_private.h"
#include "util/util.h"

#define CFG_BIND_RETRIES_MAX	1000
#define CFG_BIND_RETRY_MS_MIN	100
#define CFG_BIND_RETRY_MS_MAX	(10 * 60 * 1000)

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
