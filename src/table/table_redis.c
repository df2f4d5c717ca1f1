/*
 * table/table_redis.c: "redis:HOST:PORT [prefix P] [set]": the value of
 * key PREFIX+KEY (GET), or with "set" the members of that set (SMEMBERS),
 * for fan-out.  The key travels as one argument of the command (hiredis
 * argv), never pasted into a command line.  Connections and every reply
 * are bounded by the table's timeout.
 */
#include "table/table.h"

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

static void *
redis_connect(struct table *t, const char **err_out)
{
	struct redis_addr *a = t->priv;
	struct timeval tv = { (time_t)(t->timeout_ms / 1000),
	    (suseconds_t)(t->timeout_ms % 1000) * 1000 };
	redisContext *rc = redisConnectWithTimeout(a->host, a->port, tv);

	if (rc == NULL || rc->err != 0) {
		*err_out = util_err("redis %s:%d: %s", a->host, a->port,
		    rc != NULL ? rc->errstr : "out of memory");
		if (rc != NULL)
			redisFree(rc);
		return NULL;
	}
	redisSetTimeout(rc, tv);
	return rc;
}

static void
redis_disconnect(struct table *t, void *conn)
{
	(void)t;
	redisFree(conn);
}

static int
redis_get(struct table *t, void *conn, const char *key,
    struct table_values *out, const char **err_out)
{
	redisContext *rc = conn;
	char *k = xasprintf("%s%s", t->prefix != NULL ? t->prefix : "", key);
	const char *argv[2] = { t->redis_set ? "SMEMBERS" : "GET", k };
	size_t lens[2] = { strlen(argv[0]), strlen(k) };
	redisReply *r = redisCommandArgv(rc, 2, argv, lens);
	int found = 0;

	free(k);
	if (r == NULL) {
		*err_out = util_err("redis: %s", rc->errstr);
		return -1;
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
