/*
 * store/store_redis.c: "redis:HOST:PORT" engine on hiredis's asynchronous
 * API and its libevent adapter, so several postern nodes share one view.
 * The connection is made on first use and made again after it drops;
 * requests in flight when it drops are answered with rc -1.  A server that
 * keeps the connection but answers nothing (hung, stopped, swapping) for
 * STORE_REDIS_TIMEOUT_MS has it dropped, so its requests fail then too.
 *
 * Counters get their expiry with PEXPIRE ... NX, which Redis has from 7.0
 * on; an older server would refuse it and leave them for ever.  So the
 * first command on each connection is INFO server, and requests wait for
 * its answer: a server older than 7.0 (or one that will not say) is
 * logged once for the connection and used for nothing, each request
 * failing at once (rc -1, the store unavailable) until the connection
 * drops and a new one asks again.  A server that names 7.0 or later and
 * refuses PEXPIRE ... NX all the same is logged once.
 */
#include "store/store.h"

#include <errno.h>
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "store/store_private.h"
#include "util/util.h"

#define STORE_REDIS_TIMEOUT_MS	5000	/* no answer at all: drop it */
#define STORE_REDIS_MIN_MAJOR	7	/* PEXPIRE ... NX */

static void	store_redis_timeout_cb(evutil_socket_t fd, short what,
		    void *arg);
static void	store_redis_version_cb(redisAsyncContext *ac, void *reply,
		    void *priv);

struct store_redis {
	struct store		*st;		/* borrowed: owner */
	char			*host;		/* owned */
	int			 port;
	redisAsyncContext	*ac;		/* NULL when not connected */
	bool			 connected;
	unsigned		 waiting;	/* sent, not answered yet */
	struct event		*timer;		/* owned: no answer in time */
	bool			 verified;	/* ac's server is new enough */
	bool			 refused;	/* ac's server is too old */
	bool			 expire_logged;	/* a PEXPIRE refused, once */
	/* Requests waiting for ac's version (owned), in order. */
	struct store_req	*held, **held_tail;
};

static int
store_redis_open(struct store *st, const char *arg, const char **err_out)
{
	const char *colon = strrchr(arg, ':');
	struct store_redis *r;
	char *end;

	if (colon == NULL || colon == arg) {
		*err_out = "redis store wants HOST:PORT";
		return -1;
	}
	long port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || port < 1 || port > 65535) {
		*err_out = "redis store: bad port";
		return -1;
	}
	r = xcalloc(1, sizeof(*r));
	r->st = st;
	r->host = xstrndup(arg, (size_t)(colon - arg));
	if (r->host[0] == '[' && r->host[strlen(r->host) - 1] == ']') {
		memmove(r->host, r->host + 1, strlen(r->host));
		r->host[strlen(r->host) - 1] = '\0';
	}
	r->port = (int)port;
	r->held_tail = &r->held;
	r->timer = evtimer_new(st->base, store_redis_timeout_cb, r);
	st->priv = r;
	return 0;
}

static void
store_redis_connect_cb(const redisAsyncContext *ac, int status)
{
	struct store_redis *r = ac->data;

	if (status != REDIS_OK) {
		log_msg(LOG_LVL_WARN, "state store: redis %s:%d: %s", r->host,
		    r->port, ac->errstr);
		r->ac = NULL;	/* hiredis frees it */
		return;
	}
	r->connected = true;
}

static void
store_redis_disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct store_redis *r = ac->data;

	if (r == NULL)
		return;
	if (status != REDIS_OK)
		log_msg(LOG_LVL_WARN, "state store: redis %s:%d lost: %s",
		    r->host, r->port, ac->errstr);
	r->ac = NULL;
	r->connected = false;
}

/* (Re)start the wait for the next answer; stop it when none is due. */
static void
store_redis_arm(struct store_redis *r)
{
	struct timeval tv = { STORE_REDIS_TIMEOUT_MS / 1000,
	    (STORE_REDIS_TIMEOUT_MS % 1000) * 1000 };

	if (r->waiting > 0)
		evtimer_add(r->timer, &tv);
	else
		evtimer_del(r->timer);
}

static redisAsyncContext *
store_redis_ctx(struct store_redis *r)
{
	if (r->ac != NULL)
		return r->ac;
	redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
	if (ac == NULL)
		return NULL;
	if (ac->err != 0) {
		log_msg(LOG_LVL_WARN, "state store: redis %s:%d: %s", r->host,
		    r->port, ac->errstr);
		redisAsyncFree(ac);
		return NULL;
	}
	ac->data = r;
	redisLibeventAttach(ac, r->st->base);
	redisAsyncSetConnectCallback(ac, store_redis_connect_cb);
	redisAsyncSetDisconnectCallback(ac, store_redis_disconnect_cb);
	/* Before anything else on it: the server's version. */
	if (redisAsyncCommand(ac, store_redis_version_cb, r, "INFO server") !=
	    REDIS_OK) {
		ac->data = NULL;
		redisAsyncFree(ac);
		return NULL;
	}
	r->ac = ac;
	r->verified = r->refused = false;
	if (r->waiting++ == 0)
		store_redis_arm(r);
	return ac;
}

/* Nothing answered in time: the requests fail (rc -1) as the link drops. */
static void
store_redis_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store_redis *r = arg;
	redisAsyncContext *ac = r->ac;

	(void)fd;
	(void)what;
	if (ac == NULL || r->waiting == 0)
		return;
	log_msg(LOG_LVL_WARN, "state store: redis %s:%d: no answer in %u ms, "
	    "dropping the connection", r->host, r->port,
	    STORE_REDIS_TIMEOUT_MS);
	r->ac = NULL;
	r->connected = false;
	ac->data = NULL;	/* no disconnect callback into r */
	redisAsyncFree(ac);	/* answers what is pending, with NULL */
}

/* The answer to the main command of a request. */
static void
store_redis_reply_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct store_req *req = priv;
	redisReply *rep = reply;
	struct store_redis *r = req->st->priv;

	(void)ac;
	if (r != NULL && r->waiting > 0) {
		r->waiting--;
		store_redis_arm(r);	/* an answer came: wait anew */
	}
	if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
		if (rep != NULL)
			log_msg(LOG_LVL_WARN, "state store: redis: %s",
			    rep->str);
		req->rc = -1;
	} else if (req->op == STORE_GET) {
		req->rc = rep->type == REDIS_REPLY_STRING;
		if (req->rc == 1)
			req->out = xstrndup(rep->str, rep->len);
	} else if (rep->type == REDIS_REPLY_INTEGER) {
		req->rc = 0;
		req->n = rep->integer;
	} else
		req->rc = 0;
	store_req_done(req);
}

/*
 * The answer to a counter's PEXPIRE: an error means a server that named a
 * new enough version and still refused NX; its counters do not expire.
 */
static void
store_redis_expire_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct store_redis *r = priv;
	redisReply *rep = reply;

	(void)ac;
	if (rep == NULL || rep->type != REDIS_REPLY_ERROR || r->expire_logged)
		return;
	r->expire_logged = true;
	log_msg(LOG_LVL_ERROR, "state store: redis %s:%d: PEXPIRE ... NX: %s: "
	    "counters will not expire (postern needs Redis 7.0 or later)",
	    r->host, r->port, rep->str);
}

/* Send req's commands on ac, whose server is known to be new enough. */
static void
store_redis_send(struct store_redis *r, redisAsyncContext *ac,
    struct store_req *req)
{
	char ttl[32];
	int rc;

	snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)req->ttl_ms);
	switch (req->op) {
	case STORE_GET:
		rc = redisAsyncCommand(ac, store_redis_reply_cb, req,
		    "GET %s", req->key);
		break;
	case STORE_SET:
		if (req->ttl_ms != 0)
			rc = redisAsyncCommand(ac, store_redis_reply_cb, req,
			    "SET %s %s PX %s", req->key, req->val, ttl);
		else
			rc = redisAsyncCommand(ac, store_redis_reply_cb, req,
			    "SET %s %s", req->key, req->val);
		break;
	case STORE_INCR:
	case STORE_SADD:
		if (req->op == STORE_INCR)
			rc = redisAsyncCommand(ac, store_redis_reply_cb, req,
			    "INCRBY %s %lld", req->key,
			    (long long)req->delta);
		else
			rc = redisAsyncCommand(ac, store_redis_reply_cb, req,
			    "SADD %s %s", req->key, req->val);
		/* A new key gets the ttl; a live one keeps its own (7.0 NX). */
		if (rc == REDIS_OK && req->ttl_ms != 0)
			redisAsyncCommand(ac, store_redis_expire_cb, r,
			    "PEXPIRE %s %s NX", req->key, ttl);
		break;
	case STORE_DEL:
		rc = redisAsyncCommand(ac, store_redis_reply_cb, req,
		    "DEL %s", req->key);
		break;
	case STORE_SISMEMBER:
		rc = redisAsyncCommand(ac, store_redis_reply_cb, req,
		    "SISMEMBER %s %s", req->key, req->val);
		break;
	default:
		rc = REDIS_ERR;
	}
	if (rc != REDIS_OK) {
		req->rc = -1;
		store_req_done_later(req);
		return;
	}
	if (r->waiting++ == 0)
		store_redis_arm(r);
}

/*
 * The redis_version of a server's "INFO server" answer, copied into
 * buf[size] ("" when it names none): its major number, or -1.
 */
static long
store_redis_version(const redisReply *rep, char *buf, size_t size)
{
	const char *v;
	size_t n;

	buf[0] = '\0';
	if (rep->type != REDIS_REPLY_STRING ||
	    (v = strstr(rep->str, "redis_version:")) == NULL)
		return -1;
	v += strlen("redis_version:");
	n = strcspn(v, "\r\n");
	util_strlcpy(buf, v, n + 1 < size ? n + 1 : size);
	if (*v < '0' || *v > '9')
		return -1;
	errno = 0;
	long major = strtol(v, NULL, 10);
	return errno != 0 ? -1 : major;
}

/*
 * The answer to a connection's first command: the requests that waited
 * for it are sent, or fail if the server is too old or refuses INFO
 * (logged) or the connection went (rep NULL).
 */
static void
store_redis_version_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct store_redis *r = priv;
	redisReply *rep = reply;
	struct store_req *held = r->held;
	char version[32];

	r->held = NULL;
	r->held_tail = &r->held;
	if (r->waiting > 0) {
		r->waiting--;
		store_redis_arm(r);
	}
	if (rep != NULL && rep->type == REDIS_REPLY_ERROR) {
		/* Not an answer about the version: most often NOAUTH. */
		char safe[256];
		r->refused = true;
		log_msg(LOG_LVL_ERROR, "state store: redis %s:%d refused INFO: "
		    "%s (postern does not log in to Redis), not using it",
		    r->host, r->port, log_safe_into(safe, sizeof(safe),
		    rep->str, rep->len));
	} else if (rep != NULL && store_redis_version(rep, version,
	    sizeof(version)) >= STORE_REDIS_MIN_MAJOR)
		r->verified = true;
	else if (rep != NULL) {
		r->refused = true;
		log_msg(LOG_LVL_ERROR, "state store: redis %s:%d: version "
		    "\"%s\": postern needs Redis 7.0 or later, not using it",
		    r->host, r->port, version);
	}
	while (held != NULL) {
		struct store_req *req = held;

		held = req->next;
		req->next = NULL;
		if (r->verified)
			store_redis_send(r, ac, req);
		else {
			req->rc = -1;
			store_req_done_later(req);
		}
	}
}

static void
store_redis_submit(struct store *st, struct store_req *req)
{
	struct store_redis *r = st->priv;
	redisAsyncContext *ac = store_redis_ctx(r);

	if (ac == NULL || r->refused) {
		req->rc = -1;
		store_req_done_later(req);
		return;
	}
	if (!r->verified) {
		req->next = NULL;
		*r->held_tail = req;
		r->held_tail = &req->next;
		return;
	}
	store_redis_send(r, ac, req);
}

static void
store_redis_close(struct store *st)
{
	struct store_redis *r = st->priv;

	if (r->ac != NULL) {
		/* Pending replies are answered (NULL reply: rc -1). */
		redisAsyncContext *ac = r->ac;
		r->ac = NULL;
		ac->data = NULL;
		st->priv = NULL;	/* the answers find no engine */
		redisAsyncFree(ac);
	}
	event_free(r->timer);
	free(r->host);
	free(r);
	st->priv = NULL;
}

const struct store_engine store_redis_engine = {
	.name = "redis",
	.open_fn = store_redis_open,
	.submit_fn = store_redis_submit,
	.close_fn = store_redis_close,
};
