/*
 * config/parse_queue.c: the "queue ..." statements (retry schedule,
 * lifetime, delay warning, delivery concurrency, outbound sessions kept
 * between messages) into struct config_queue.
 * Knows nothing of how the queue uses them.
 */
#include "config/config.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "config/config_private.h"
#include "util/util.h"

#define CFG_QUEUE_USAGE	"queue retry-min|retry-max|lifetime|delay-warning|" \
	"connection-reuse-time DURATION, or queue concurrency|" \
	"destination-concurrency|connection-reuse-limit|connection-cache-size N"

enum cfg_queue_kind { CQ_DURATION, CQ_COUNT };

static const struct cfg_queue_setting {
	const char		*name;
	enum cfg_queue_kind	 kind;
	uint64_t		 min, max;	/* ms or count */
	const char		*range;
} cfg_queue_settings[] = {
	{ "retry-min", CQ_DURATION, 1000, 86400000, "1s..1d" },
	{ "retry-max", CQ_DURATION, 1000, 7 * 86400000ULL, "1s..7d" },
	{ "lifetime", CQ_DURATION, 1000, 365 * 86400000ULL, "1s..365d" },
	{ "delay-warning", CQ_DURATION, 0, 365 * 86400000ULL,
	    "0 (off)..365d" },
	{ "concurrency", CQ_COUNT, 1, 1000, "1..1000" },
	{ "destination-concurrency", CQ_COUNT, 1, 1000, "1..1000" },
	{ "connection-reuse-time", CQ_DURATION, 0, 300000, "0 (off)..300s" },
	{ "connection-reuse-limit", CQ_COUNT, 1, 1000000, "1..1000000" },
	{ "connection-cache-size", CQ_COUNT, 1, 1000, "1..1000" },
};
#define CFG_NQUEUE	(sizeof(cfg_queue_settings) / \
	sizeof(cfg_queue_settings[0]))

const char *
config_queue_setting(size_t i)
{
	return i < CFG_NQUEUE ? cfg_queue_settings[i].name : NULL;
}

void
cfg_queue_defaults(struct config *c)
{
	c->queue.retry_min_ms = 30 * 1000;
	c->queue.retry_max_ms = 60 * 60 * 1000;
	c->queue.lifetime_ms = 5 * 86400000ULL;
	c->queue.delay_warning_ms = 4 * 3600000ULL;
	c->queue.concurrency = 30;
	c->queue.dest_concurrency = 20;
	c->queue.reuse_time_ms = 2000;
	c->queue.reuse_limit = 100;
	c->queue.cache_size = 30;
	memset(c->queue.seen, 0, sizeof(c->queue.seen));
}

static void
cfg_queue_set(struct config_queue *q, size_t i, uint64_t v)
{
	switch (i) {
	case 0: q->retry_min_ms = v; break;
	case 1: q->retry_max_ms = v; break;
	case 2: q->lifetime_ms = v; break;
	case 3: q->delay_warning_ms = v; break;
	case 4: q->concurrency = (unsigned)v; break;
	case 5: q->dest_concurrency = (unsigned)v; break;
	case 6: q->reuse_time_ms = v; break;
	case 7: q->reuse_limit = (unsigned)v; break;
	default: q->cache_size = (unsigned)v; break;
	}
}

/* retry-min above retry-max, whichever came last: report once. */
static void
cfg_queue_check_order(struct cfg_parser *p, const struct cfg_line *ln,
    const struct config_queue *q)
{
	if (q->seen[0] != 0 && q->seen[1] != 0 &&
	    q->retry_min_ms > q->retry_max_ms)
		cfg_err(p, ln->lineno, "queue: retry-min (line %d) is above "
		    "retry-max (line %d)", q->seen[0], q->seen[1]);
}

void
cfg_st_queue(struct cfg_parser *p, const struct cfg_line *ln)
{
	struct config_queue *q = &cfg_parser_config(p)->queue;
	const struct cfg_queue_setting *st = NULL;
	const char *s;
	uint64_t v;
	size_t i;
	int rc;

	if (!cfg_nargs(p, ln, 2, 2, CFG_QUEUE_USAGE))
		return;
	for (i = 0; i < CFG_NQUEUE; i++)
		if (strcmp(ln->toks[1].text, cfg_queue_settings[i].name) == 0) {
			st = &cfg_queue_settings[i];
			break;
		}
	if (st == NULL) {
		cfg_err(p, ln->lineno, "queue: unknown setting %s (usage: %s)",
		    cfg_q(ln->toks[1].text), CFG_QUEUE_USAGE);
		return;
	}
	if (q->seen[i] != 0) {
		cfg_err(p, ln->lineno, "duplicate queue %s (first at line %d)",
		    st->name, q->seen[i]);
		return;
	}
	q->seen[i] = ln->lineno;
	s = ln->toks[2].text;
	if (st->kind == CQ_DURATION)
		rc = util_parse_duration_ms(s, &v);
	else {
		rc = util_parse_size(s, &v);
		if (s[strspn(s, "0123456789")] != '\0')
			rc = -1;
	}
	if (rc == -1) {
		cfg_err(p, ln->lineno, "queue %s: bad value %s (%s, range %s)",
		    st->name, cfg_q(s), st->kind == CQ_DURATION ?
		    "a duration like 30s, 1h, 5d" : "a number", st->range);
		return;
	}
	if (v < st->min || v > st->max) {
		cfg_err(p, ln->lineno, "queue %s: %s is out of range (%s)",
		    st->name, cfg_q(s), st->range);
		return;
	}
	cfg_queue_set(q, i, v);
	if (i <= 1)
		cfg_queue_check_order(p, ln, q);
}
