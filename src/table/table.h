/*
 * table/table.h: lookup tables behind one interface: inline lists, "file:"
 * key/value files (re-read off the loop when they change), "passwd" (the
 * system's users), SQLite and PostgreSQL queries, Redis keys or sets.  A
 * key may have several values (alias fan-out).  Event loops ask with
 * table_lookup_start(), which never blocks: memory tables and cached keys
 * answer at once, the rest runs on the table's own threads and answers on
 * the asking loop.  Worker threads may ask with table_get(), which blocks.
 * Keys are lower-cased before any lookup.  Knows nothing of who asks.
 */
#ifndef POSTERN_TABLE_H
#define POSTERN_TABLE_H

#include <stdbool.h>
#include <stddef.h>

struct config_table;
struct event_base;
struct table;
struct table_loop;
struct table_req;

/* The values of one key; table_values_clear() frees them. */
struct table_values {
	char	**v;		/* owned strings */
	size_t	  n;
};
void	table_values_add(struct table_values *tv, const char *s, size_t len);
void	table_values_clear(struct table_values *tv);
/* Each value of in split at commas, blanks trimmed, empty parts dropped. */
void	table_values_split(const struct table_values *in,
	    struct table_values *out);

/* Answers of a lookup. */
enum table_rc {
	TABLE_ERROR = -1,	/* backend down or slow: a temporary failure */
	TABLE_MISSING = 0,
	TABLE_FOUND = 1,
	TABLE_PENDING = 2,	/* table_lookup_start(): the callback tells */
};

/*
 * Open a table described by the config.  Memory kinds read their contents
 * now; database kinds check what they can without a server (a SQLite file
 * opens) and connect on first use.  NULL with *err_out on failure.
 */
struct table *table_open(const struct config_table *ct, const char **err_out);
/* Waits for the table's threads; lookups still queued answer TABLE_ERROR. */
void	table_free(struct table **tp);
const char *table_name(const struct table *t);
/* True when lookups may wait on a server or the system (not in memory). */
bool	table_is_remote(const struct table *t);

/*
 * Blocking lookup, for worker threads (never an event loop, unless
 * !table_is_remote()).  TABLE_FOUND with values appended to *out (may be
 * NULL), TABLE_MISSING, or TABLE_ERROR (logged once per outage).
 */
int	table_get(struct table *t, const char *key, struct table_values *out);
/*
 * table_get() for one value: TABLE_FOUND with *value_out malloc'd (the
 * first value, "" when none), TABLE_MISSING, or TABLE_ERROR: a backend that
 * is down is never taken for a key that is not there.
 */
int	table_get_first(struct table *t, const char *key, char **value_out);

/* For "to <table>": is any key of the table in this domain?  Memory kinds
 * only: false for the others (use "to domain <TABLE>" there). */
bool	table_has_domain(struct table *t, const char *domain);

/* ----- asynchronous lookups on an event loop ----- */

/* What one event loop needs to hear answers; free it before the loop. */
struct table_loop *table_loop_new(struct event_base *base);
/* Pending lookups are dropped without their callbacks. */
void	table_loop_free(struct table_loop **tlp);

/* rc TABLE_FOUND (vals set, borrowed for the call), TABLE_MISSING or
 * TABLE_ERROR (vals NULL). */
typedef void table_done_cb(void *arg, int rc, const struct table_values *vals);

/*
 * Look key up without blocking.  When the answer is known now (a memory
 * table, a cached key, a backend known to be down) it is returned
 * (TABLE_FOUND with values appended to *out, TABLE_MISSING, TABLE_ERROR)
 * and cb is never called.  Otherwise TABLE_PENDING: cb(arg, ...) comes
 * later on tl's loop, never from inside this call, at the latest after
 * the table's timeout (then TABLE_ERROR); *req_out identifies the lookup
 * until then, for table_lookup_cancel().
 */
int	table_lookup_start(struct table *t, struct table_loop *tl,
	    const char *key, table_done_cb *cb, void *arg,
	    struct table_values *out, struct table_req **req_out);
/* The asker goes away: cb will not be called.  Sets *reqp to NULL. */
void	table_lookup_cancel(struct table_req **reqp);

#endif
