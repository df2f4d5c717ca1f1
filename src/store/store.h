/*
 * store/store.h: the small shared state store behind counters, ban lists,
 * greylist triplets, reputation scores and cached lookups.  Engines:
 * "sqlite:PATH" (default; WAL; one thread per file, plain keys cached in
 * memory and written back in batches: counts within a second, set values
 * at once), "redis:HOST:PORT" (hiredis, asynchronous on the loop)
 * and "memory:" (tests, single loop).  Every operation answers through its
 * callback, later, on the loop that asked; never from inside the call.
 */
#ifndef POSTERN_STORE_H
#define POSTERN_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct store;

/*
 * Open an engine on base.  NULL with *err_out (static text) when the spec
 * is malformed or the backend cannot be opened (the Redis connection itself
 * is made lazily and re-made after errors); a backend that cannot be
 * opened counts as an error of its engine (store_health, the metrics).
 */
struct store *store_open(struct event_base *base, const char *spec,
	    const char **err_out);
/* Pending callbacks are called with rc -1 first; sets *stp to NULL. */
void	store_close(struct store **stp);
/* "sqlite", "redis" or "memory". */
const char *store_engine(const struct store *st);

/* rc: 1 found (value set), 0 missing or expired, -1 error. */
typedef void store_str_cb(void *arg, int rc, const char *value);
/* rc: 0 done (n set), -1 error. */
typedef void store_int_cb(void *arg, int rc, int64_t n);

/* Keys and values are printable, at most these sizes. */
#define STORE_KEY_MAX	512
#define STORE_VALUE_MAX	1024

void	store_get(struct store *st, const char *key, store_str_cb *cb,
	    void *arg);
/* ttl_ms 0: no expiry.  cb may be NULL (n is 0). */
void	store_set(struct store *st, const char *key, const char *value,
	    uint64_t ttl_ms, store_int_cb *cb, void *arg);
/*
 * Add delta to an integer key (missing: 0) and give the new value.  A new
 * key gets ttl_ms (0: none); an existing key keeps its expiry.
 */
void	store_incr(struct store *st, const char *key, int64_t delta,
	    uint64_t ttl_ms, store_int_cb *cb, void *arg);
/* n: 1 removed, 0 was missing. */
void	store_del(struct store *st, const char *key, store_int_cb *cb,
	    void *arg);
/* Add member to the set key (ttl for a new set); n: 1 added, 0 present. */
void	store_sadd(struct store *st, const char *key, const char *member,
	    uint64_t ttl_ms, store_int_cb *cb, void *arg);
/* n: 1 when member is in the set key, else 0. */
void	store_sismember(struct store *st, const char *key, const char *member,
	    store_int_cb *cb, void *arg);

/*
 * Whether the state store works, as last seen (any thread): NULL when the
 * last open succeeded (or none failed) and the last operation that
 * completed on any store succeeded (or none has); else why not, naming
 * the engine: "state store (sqlite): cannot be opened" (until an open
 * succeeds), "state store (redis): its last operation failed".  Static.
 */
const char *store_health(void);

/* True when key and value lengths and bytes are acceptable. */
bool	store_key_ok(const char *key);

/* The longest part store_key_add writes as an escape; longer is hashed. */
#define STORE_KEY_PART_MAX	200

/*
 * Append one value from outside (len bytes, any bytes) to the key in buf (a
 * string in bufsz bytes) as a part that stands for that value alone, so
 * that different values never share a key: printable ASCII but '%' and ':'
 * (the separator of key parts) as it is, any other byte as %XX.  The bytes
 * from fold_from on count in ASCII lower case (pass 0 for a domain, the
 * offset after the '@' for an address, len or more for none).  A part whose
 * escape would pass STORE_KEY_PART_MAX is "sha256:" and the hex SHA-256 of
 * those bytes, which no escape spells.  -1 when it does not fit in buf.
 */
int	store_key_add(char *buf, size_t bufsz, const char *val, size_t len,
	    size_t fold_from);

#endif
