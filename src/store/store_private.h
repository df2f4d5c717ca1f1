/*
 * store/store_private.h: requests and the engine interface shared by
 * store.c and the engines (store_mem.c, store_sqlite.c, store_redis.c).
 */
#ifndef POSTERN_STORE_PRIVATE_H
#define POSTERN_STORE_PRIVATE_H

#include <stdbool.h>
#include <stdint.h>

struct event;

#include "store/store.h"

enum store_op { STORE_GET, STORE_SET, STORE_INCR, STORE_DEL, STORE_SADD,
	STORE_SISMEMBER };

struct store_req {
	struct store		*st;		/* borrowed */
	enum store_op		 op;
	const char		*key;		/* in the same allocation */
	char			*val;		/* owned: SET value, set member */
	int64_t			 delta;
	uint64_t		 ttl_ms;
	store_str_cb		*scb;
	store_int_cb		*icb;
	void			*arg;
	/* results */
	int			 rc;
	int64_t			 n;
	char			*out;		/* owned: GET result */
	struct store_req	*next;		/* engine queues */
};

struct store_engine {
	const char	*name;
	int	(*open_fn)(struct store *st, const char *arg,
		    const char **err_out);
	/* Take req; answer later with store_req_done() on st->base. */
	void	(*submit_fn)(struct store *st, struct store_req *req);
	/* Answer what is pending with rc -1 (or finish it), free priv. */
	void	(*close_fn)(struct store *st);
};

struct store {
	const struct store_engine *eng;
	struct event_base	*base;		/* borrowed */
	void			*priv;		/* the engine's */
	bool			 closing;
	/* Answers waiting for the loop (store_req_done_later), in order. */
	struct store_req	*ready;
	struct store_req	**ready_tail;
	struct event		*ready_ev;	/* owned: runs them */
};

/* Run req's callback (on st->base's thread) and free req. */
void	store_req_done(struct store_req *req);
/* Answer req on the loop later (memory engine, cache hits, errors); a
 * request without a callback is finished at once. */
void	store_req_done_later(struct store_req *req);

/*
 * The SQLite engine's write-back cache of plain keys (store_cache.c): an
 * entry is a key's value as the database will have it (val NULL: no such
 * key), dirty until a flush has written it.  Callers hold the lock that
 * guards the cache.
 */
struct store_cache_ent {
	char			*key;		/* owned */
	char			*val;		/* owned; NULL: missing */
	int64_t			 exp;		/* ms since the epoch; 0: none */
	bool			 dirty;
	struct store_cache_ent	*next;		/* hash chain */
};
struct store_cache {
	struct store_cache_ent	**tab;		/* owned buckets */
	size_t			 n;
};
void	store_cache_init(struct store_cache *c);
struct store_cache_ent *store_cache_find(struct store_cache *c,
	    const char *key);
/* A new entry as read from the database (clean). */
struct store_cache_ent *store_cache_add(struct store_cache *c,
	    const char *key, const char *val, int64_t exp);
/* GET, SET, INCR or DEL (the plain key) of req on its entry e. */
void	store_cache_apply(struct store_cache_ent *e, struct store_req *req,
	    int64_t now);
/* Copies of the dirty entries (*out, caller frees), now marked clean. */
size_t	store_cache_take_dirty(struct store_cache *c,
	    struct store_cache_ent ***out);
void	store_cache_ent_free(struct store_cache_ent *e);
/* Drop clean entries until at most max / 2 are left, if it can. */
void	store_cache_trim(struct store_cache *c, size_t max);
void	store_cache_clear(struct store_cache *c);

extern const struct store_engine store_mem_engine;
extern const struct store_engine store_sqlite_engine;
extern const struct store_engine store_redis_engine;

#endif
