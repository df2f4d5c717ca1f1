/*
 * store/store_private.h: requests and the engine interface shared by
 * store.c and the engines (store_mem.c, store_sqlite.c, store_redis.c).
 */
#ifndef POSTERN_STORE_PRIVATE_H
#define POSTERN_STORE_PRIVATE_H

#include "store/store.h"

enum store_op { STORE_GET, STORE_SET, STORE_INCR, STORE_DEL, STORE_SADD,
	STORE_SISMEMBER };

struct store_req {
	struct store		*st;		/* borrowed */
	enum store_op		 op;
	char			*key;		/* owned */
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
};

/* Run req's callback (on st->base's thread) and free req. */
void	store_req_done(struct store_req *req);
/* Answer req on the loop later (memory engine, errors). */
void	store_req_done_later(struct store_req *req);

extern const struct store_engine store_mem_engine;
extern const struct store_engine store_sqlite_engine;
extern const struct store_engine store_redis_engine;

#endif
