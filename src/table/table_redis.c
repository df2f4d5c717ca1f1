/*
 * table/table_redis.c: "redis:HOST:PORT [prefix P] [set]": the value of
 * key PREFIX+KEY (GET), or with "set" the members of that set (SMEMBERS),
 * for fan-out.  The key travels as one argument of the command (hiredis
 * argv), never pasted into a command line.  Connections and every reply
 * are bounded by the lookup's deadline; a connection the server closed
 * while idle (a restart) says so, and the front asks again.
 */
#include "table/table.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "table/table_private.h"
#include "util/util.h"

struct redis_addr {
	char	*host;		/* owned */
	int	 port;
};

static int
redis_open(struct table *t, const char **err_out)
{
	struct redis_addr *a = xcalloc(1, sizeof(*a));
	const char *colon = strrchr(t->path, ':');

	(void)err_out;	/* config/ checked HOST:PORT */
	a->host = xstrndup(t->path, (size_t)(colon - t->path));
	if (a->host[0] == '[' && a->host[strlen(a->host) - 1] == ']') {
		memmove(a->host, a->host + 1, strlen(a->host));
		a->host[strlen(a->host) - 1] = '\0';
	}
	a->port = atoi(colon + 1);
	t->priv = a;
	return 0;
}

static void
redis_close(struct table *t)
{
	struct redis_addr *a = t->priv;

	free(a->host);
	free(a);
	t->priv = NULL;
}

/* The time left until deadline_ms, at least 1 ms (0 would mean none). */
static struct timeval
redis_left(uint64_t deadline_ms)
{
	uint64_t now = util_now_ms();
	uint64_t ms = deadline_ms > now ? deadline_ms - now : 1;

	return (struct timeval){ (time_t)(ms / 1000),
	    (suseconds_t)(ms % 1000) * 1000 };
}

static void *
redis_connect(struct table *t, uint64_t deadline_ms, const char **err_out)
{
	struct redis_addr *a = t->priv;
	redisContext *rc = redisConnectWithTimeout(a->host, a->port,
	    redis_left(deadline_ms));

	if (rc == NULL || rc->err != 0) {
		*err_out = util_err("redis %s:%d: %s", a->host, a->port,
		    rc != NULL ? rc->errstr : "out of memory");
		if (rc != NULL)
			redisFree(rc);
		return NULL;
	}
	return rc;
}

static void
redis_disconnect(struct table *t, void *conn)
{
	(void)t;
	redisFree(conn);
}

/*
 * After a command got no reply: did the server close the connection (end
 * of file, or a reset), rather than not answer in time?  err: the errno
 * hiredis left.
 */
static bool
redis_is_closed(const redisContext *rc, int err)
{
	return rc->err == REDIS_ERR_EOF || (rc->err == REDIS_ERR_IO &&
	    (err == ECONNRESET || err == EPIPE || err == ENOTCONN));
}

static int
redis_get(struct table *t, void *conn, const char *key, uint64_t deadline_ms,
    struct table_values *out, const char **err_out)
{
	redisContext *rc = conn;
	char *k = xasprintf("%s%s", t->prefix != NULL ? t->prefix : "", key);
	const char *argv[2] = { t->redis_set ? "SMEMBERS" : "GET", k };
	size_t lens[2] = { strlen(argv[0]), strlen(k) };
	redisReply *r;
	int found = 0, err;

	redisSetTimeout(rc, redis_left(deadline_ms));
	r = redisCommandArgv(rc, 2, argv, lens);
	err = errno;
	free(k);
	if (r == NULL) {
		*err_out = util_err("redis: %s", rc->errstr);
		return redis_is_closed(rc, err) ? TABLE_GET_CLOSED : -1;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		*err_out = util_err("redis: %s", r->str);
		freeReplyObject(r);
		return -1;
	}
	if (r->type == REDIS_REPLY_STRING) {
		table_values_add(out, r->str, r->len);
		found = 1;
	} else if (r->type == REDIS_REPLY_ARRAY)
		for (size_t i = 0; i < r->elements; i++)
			if (r->element[i]->type == REDIS_REPLY_STRING) {
				table_values_add(out, r->element[i]->str,
				    r->element[i]->len);
				found = 1;
			}
	freeReplyObject(r);
	return found;
}

const struct table_engine table_redis_engine = {
	.name = "redis", .open_fn = redis_open, .close_fn = redis_close,
	.connect_fn = redis_connect, .disconnect_fn = redis_disconnect,
	.get_fn = redis_get,
};
