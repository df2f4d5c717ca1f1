/*
 * store/store.c: the store front: builds and checks keys, builds requests,
 * hands them to the engine named by the spec and runs the callbacks on the
 * loop.
 */
#include "store/store.h"

#include <event2/event.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_private.h"
#include "metrics/metrics.h"
#include "util/util.h"

static void	store_ready_cb(evutil_socket_t fd, short what, void *arg);
static void	store_count_open(const struct store_engine *eng, bool ok);

struct store *
store_open(struct event_base *base, const char *spec, const char **err_out)
{
	static const struct store_engine *const engines[] = {
		&store_mem_engine, &store_sqlite_engine, &store_redis_engine,
	};
	const char *colon = strchr(spec, ':');

	if (colon == NULL) {
		*err_out = "state store spec must be ENGINE:ARG";
		return NULL;
	}
	for (size_t i = 0; i < sizeof(engines) / sizeof(engines[0]); i++) {
		if (strlen(engines[i]->name) != (size_t)(colon - spec) ||
		    strncmp(engines[i]->name, spec, (size_t)(colon - spec)) != 0)
			continue;
		struct store *st = xcalloc(1, sizeof(*st));
		st->eng = engines[i];
		st->base = base;
		st->ready_tail = &st->ready;
		st->ready_ev = event_new(base, -1, 0, store_ready_cb, st);
		if (st->ready_ev == NULL)
			fatal("event_new failed");
		if (st->eng->open_fn(st, colon + 1, err_out) == -1) {
			store_count_open(st->eng, false);
			event_free(st->ready_ev);
			free(st);
			return NULL;
		}
		store_count_open(st->eng, true);
		return st;
	}
	*err_out = "unknown state store engine (sqlite, redis, memory)";
	return NULL;
}

void
store_close(struct store **stp)
{
	struct store *st = *stp;

	if (st == NULL)
		return;
	st->closing = true;
	st->eng->close_fn(st);
	/* Answers still waiting for the loop, and any their callbacks add. */
	while (st->ready != NULL)
		store_ready_cb(-1, 0, st);
	event_free(st->ready_ev);
	free(st);
	*stp = NULL;
}

const char *
store_engine(const struct store *st)
{
	return st->eng->name;
}

bool
store_key_ok(const char *key)
{
	size_t n = strlen(key);

	if (n == 0 || n > STORE_KEY_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)key[i] <= 0x20 ||
		    (unsigned char)key[i] > 0x7e)
			return false;
	return true;
}

/* A byte a key part holds as it is: printable ASCII but '%' and ':'. */
static bool
store_key_byte_plain(unsigned char c)
{
	return c > 0x20 && c < 0x7f && c != '%' && c != ':';
}

int
store_key_add(char *buf, size_t bufsz, const char *val, size_t len,
    size_t fold_from)
{
	static const char hex[] = "0123456789ABCDEF";
	static const char lhex[] = "0123456789abcdef";
	size_t o = strlen(buf), need = 0;
	char *folded = NULL;

	if (fold_from < len) {
		folded = xmalloc(len);
		memcpy(folded, val, len);
		for (size_t i = fold_from; i < len; i++)
			if (folded[i] >= 'A' && folded[i] <= 'Z')
				folded[i] = (char)(folded[i] - 'A' + 'a');
		val = folded;
	}
	for (size_t i = 0; i < len; i++)
		need += store_key_byte_plain((unsigned char)val[i]) ? 1 : 3;
	if (need > STORE_KEY_PART_MAX) {
		/* No escape holds a ':', so no value escapes to this. */
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int mdlen = 0;
		int ok = EVP_Digest(val, len, md, &mdlen, EVP_sha256(), NULL);

		ASSERT(ok == 1);	/* fails only without memory */
		free(folded);
		if (bufsz - o <= 7 + 2 * (size_t)mdlen)
			return -1;
		memcpy(buf + o, "sha256:", 7);
		o += 7;
		for (unsigned int i = 0; i < mdlen; i++) {
			buf[o++] = lhex[md[i] >> 4];
			buf[o++] = lhex[md[i] & 15];
		}
		buf[o] = '\0';
		return 0;
	}
	if (bufsz - o <= need) {
		free(folded);
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)val[i];

		if (store_key_byte_plain(c)) {
			buf[o++] = (char)c;
			continue;
		}
		buf[o++] = '%';
		buf[o++] = hex[c >> 4];
		buf[o++] = hex[c & 15];
	}
	buf[o] = '\0';
	free(folded);
	return 0;
}

static bool
store_val_ok(const char *v)
{
	size_t n = strlen(v);

	if (n > STORE_VALUE_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] > 0x7e)
			return false;
	return true;
}

/*
 * For store_health (any thread): which completed operation came last, and
 * the engines whose last open failed (a bit each).  A failed open stands
 * until an open of that engine succeeds: no operation of that store will
 * ever complete to clear it, and another engine's store (a reply agent's
 * memory) says nothing of it.
 */
static _Atomic uint64_t store_seq, store_ok_seq, store_err_seq;
static _Atomic int store_err_engine = -1;
static _Atomic unsigned store_open_err_engines;

const char *
store_health(void)
{
	static const char *const op_why[] = {
		[MET_STORE_SQLITE] = "state store (sqlite): its last "
		    "operation failed",
		[MET_STORE_REDIS] = "state store (redis): its last "
		    "operation failed",
		[MET_STORE_MEMORY] = "state store (memory): its last "
		    "operation failed",
	};
	static const char *const open_why[] = {
		[MET_STORE_SQLITE] = "state store (sqlite): cannot be opened",
		[MET_STORE_REDIS] = "state store (redis): cannot be opened",
		[MET_STORE_MEMORY] = "state store (memory): cannot be opened",
	};
	unsigned open_err = atomic_load(&store_open_err_engines);
	int e;

	for (e = 0; e < (int)(sizeof(open_why) / sizeof(open_why[0])); e++)
		if (open_err & (1u << e))
			return open_why[e];
	e = atomic_load(&store_err_engine);
	if (atomic_load(&store_err_seq) <= atomic_load(&store_ok_seq) || e < 0)
		return NULL;
	return op_why[e];
}

/* The engine's label in MET_STORE_ERRORS. */
static enum metrics_store
store_metric(const struct store_engine *eng)
{
	return strcmp(eng->name, "sqlite") == 0 ? MET_STORE_SQLITE :
	    strcmp(eng->name, "redis") == 0 ? MET_STORE_REDIS :
	    MET_STORE_MEMORY;
}

/* Count an open's outcome: a failed one is an error of its engine. */
static void
store_count_open(const struct store_engine *eng, bool ok)
{
	enum metrics_store e = store_metric(eng);

	if (ok) {
		atomic_fetch_and(&store_open_err_engines, ~(1u << e));
		return;
	}
	metrics_inc(MET_STORE_ERRORS, (unsigned)e, 0);
	atomic_fetch_or(&store_open_err_engines, 1u << e);
}

/* Count an operation's outcome (not the answers a closing store gives). */
static void
store_count(const struct store_req *req)
{
	enum metrics_store e = store_metric(req->st->eng);

	if (req->st->closing)
		return;
	uint64_t seq = atomic_fetch_add(&store_seq, 1) + 1;
	if (req->rc != -1) {
		atomic_store(&store_ok_seq, seq);
		return;
	}
	metrics_inc(MET_STORE_ERRORS, (unsigned)e, 0);
	atomic_store(&store_err_engine, (int)e);
	atomic_store(&store_err_seq, seq);
}

void
store_req_done(struct store_req *req)
{
	store_count(req);
	if (req->op == STORE_GET) {
		if (req->scb != NULL)
			req->scb(req->arg, req->rc, req->rc == 1 ? req->out :
			    NULL);
	} else if (req->icb != NULL)
		req->icb(req->arg, req->rc, req->rc == -1 ? 0 : req->n);
	free(req->val);
	free(req->out);
	free(req);
}

/* Run the answers queued for the loop, in order (those queued meanwhile
 * wait for the next round). */
static void
store_ready_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store *st = arg;
	struct store_req *req = st->ready;

	(void)fd;
	(void)what;
	st->ready = NULL;
	st->ready_tail = &st->ready;
	while (req != NULL) {
		struct store_req *next = req->next;
		store_req_done(req);
		req = next;
	}
}

/*
 * A request nobody waits for is finished at once; an answer waits for
 * the loop, behind the ones queued before it.
 */
void
store_req_done_later(struct store_req *req)
{
	struct store *st = req->st;

	if (req->scb == NULL && req->icb == NULL) {
		store_req_done(req);
		return;
	}
	req->next = NULL;
	*st->ready_tail = req;
	st->ready_tail = &req->next;
	if (st->ready == req)
		event_active(st->ready_ev, EV_TIMEOUT, 0);
}

static void
store_submit(struct store *st, enum store_op op, const char *key,
    const char *val, int64_t delta, uint64_t ttl_ms, store_str_cb *scb,
    store_int_cb *icb, void *arg)
{
	size_t klen = strlen(key);
	struct store_req *req = xcalloc(1, sizeof(*req) + klen + 1);

	req->st = st;
	req->op = op;
	req->key = memcpy(req + 1, key, klen + 1);	/* with req */
	req->val = val != NULL ? xstrdup(val) : NULL;
	req->delta = delta;
	req->ttl_ms = ttl_ms;
	req->scb = scb;
	req->icb = icb;
	req->arg = arg;
	/* A request from a callback of the store being closed: no answer. */
	if (st->closing || !store_key_ok(key) ||
	    (val != NULL && !store_val_ok(val))) {
		req->rc = -1;
		store_req_done_later(req);
		return;
	}
	st->eng->submit_fn(st, req);
}

void
store_get(struct store *st, const char *key, store_str_cb *cb, void *arg)
{
	store_submit(st, STORE_GET, key, NULL, 0, 0, cb, NULL, arg);
}

void
store_set(struct store *st, const char *key, const char *value,
    uint64_t ttl_ms, store_int_cb *cb, void *arg)
{
	store_submit(st, STORE_SET, key, value, 0, ttl_ms, NULL, cb, arg);
}

void
store_incr(struct store *st, const char *key, int64_t delta, uint64_t ttl_ms,
    store_int_cb *cb, void *arg)
{
	store_submit(st, STORE_INCR, key, NULL, delta, ttl_ms, NULL, cb, arg);
}

void
store_del(struct store *st, const char *key, store_int_cb *cb, void *arg)
{
	store_submit(st, STORE_DEL, key, NULL, 0, 0, NULL, cb, arg);
}

void
store_sadd(struct store *st, const char *key, const char *member,
    uint64_t ttl_ms, store_int_cb *cb, void *arg)
{
	store_submit(st, STORE_SADD, key, member, 0, ttl_ms, NULL, cb, arg);
}

void
store_sismember(struct store *st, const char *key, const char *member,
    store_int_cb *cb, void *arg)
{
	store_submit(st, STORE_SISMEMBER, key, member, 0, 0, NULL, cb, arg);
}
