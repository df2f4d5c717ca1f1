/*
 * table/table_private.h: the engine interface shared by the front
 * (table.c, async.c) and one file per kind (table_mem.c, table_passwd.c,
 * table_sqlite.c, table_pgsql.c, table_redis.c), and knobs for tests.
 */
#ifndef POSTERN_TABLE_PRIVATE_H
#define POSTERN_TABLE_PRIVATE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "table/table.h"

struct table_req;

/* get_fn: the connection was found closed; a new one may answer. */
enum { TABLE_GET_CLOSED = -2 };

struct table_engine {
	const char	*name;
	bool		 memory;	/* answers from memory: never blocks */
	/* Read or check what the config names; set t->priv.  0 or -1. */
	int	(*open_fn)(struct table *t, const char **err_out);
	void	(*close_fn)(struct table *t);
	/*
	 * A new connection (not for memory kinds), made by deadline_ms
	 * (monotonic); NULL with *err_out.
	 */
	void	*(*connect_fn)(struct table *t, uint64_t deadline_ms,
		    const char **err_out);
	void	(*disconnect_fn)(struct table *t, void *conn);
	/*
	 * Look up key (lower case) on conn by deadline_ms (monotonic; memory
	 * kinds ignore it): 1 found (values appended to out), 0 missing, -1
	 * error with *err_out, TABLE_GET_CLOSED when the server had closed
	 * the connection (restarted, ended the session) before it was asked.
	 * The connection is dropped after either error.
	 */
	int	(*get_fn)(struct table *t, void *conn, const char *key,
		    uint64_t deadline_ms, struct table_values *out,
		    const char **err_out);
	/* Memory kinds: a key in this domain?  NULL: never. */
	bool	(*has_domain_fn)(struct table *t, const char *domain);
};

struct table_cache;

struct table {
	const struct table_engine *eng;
	char			*name;		/* owned */
	enum config_table_kind	 kind;
	char			*path;		/* owned: file, conninfo, host:port */
	char			*query;		/* owned, or NULL */
	char			*prefix;	/* owned, or NULL */
	bool			 redis_set;
	char			**items;	/* borrowed from the config: inline
						   keys, only during open */
	unsigned		 pool;		/* connections at most */
	uint64_t		 timeout_ms;
	uint64_t		 cache_ms, neg_cache_ms;
	void			*priv;		/* the engine's */

	pthread_mutex_t		 mu;		/* guards the rest */
	pthread_cond_t		 cv;		/* a connection or a job */
	void			**idle;		/* idle connections */
	unsigned		 nidle, nconns;	/* idle; open in all */
	bool			 down;		/* an outage was logged */
	uint64_t		 retry_ms;	/* after a failed connect: fail at
						   once until then (monotonic) */
	pthread_t		*threads;	/* lookup workers, started on first
						   asynchronous lookup */
	unsigned		 nthreads;
	bool			 stopping;
	struct table_req	*jobs, **jobs_tail;	/* queued lookups */
	struct table_cache	*cache;		/* owned, or NULL: no caching */
};

/* async.c: a worker finished req (rc, values in req): post it back. */
void	table_req_finish(struct table_req *req, int rc);
/* async.c: run queued jobs on the table's threads (t->mu held). */
void	table_workers_start(struct table *t);
/* async.c: the job's key and values, for the workers. */
const char *table_req_key(const struct table_req *req);
struct table_values *table_req_values(struct table_req *req);
struct table_req *table_req_next(struct table_req *req);
void	table_req_set_next(struct table_req *req, struct table_req *next);

/* table.c: table_get() for the table's threads: a failure is not counted
 * (postern_table_errors_total): the asker's side counts it. */
int	table_get_uncounted(struct table *t, const char *key,
	    struct table_values *out);
/* table.c: the answer now when no backend is needed (memory, cache, a
 * known outage), else TABLE_PENDING. */
int	table_try_now(struct table *t, const char *key,
	    struct table_values *out);
/* table.c: an asker's lookup timed out: an outage, and a failure counted. */
void	table_note_timeout(struct table *t);

/* cache.c */
struct table_cache *table_cache_new(void);
void	table_cache_free(struct table_cache **cp);
/* -1: not cached; else the rc (values appended to out when found). */
int	table_cache_get(struct table_cache *c, const char *key,
	    struct table_values *out, uint64_t now_ms);
void	table_cache_put(struct table_cache *c, const char *key, int rc,
	    const struct table_values *vals, uint64_t expires_ms);

extern const struct table_engine table_inline_engine;
extern const struct table_engine table_file_engine;
extern const struct table_engine table_passwd_engine;
extern const struct table_engine table_sqlite_engine;
extern const struct table_engine table_pgsql_engine;
extern const struct table_engine table_redis_engine;

/* How often a "file:" table stats its file (default 1000 ms). */
void	table_set_recheck_ms(struct table *t, uint64_t ms);

#endif
