/*
 * store/store_sqlite.c: "sqlite:PATH" engine.  Every store opened on one
 * PATH in the process shares one database: one connection owned by one
 * thread, and a write-back cache of the plain keys (store_cache.c) under
 * one mutex.  A loop answers a key the cache holds itself (GET, INCR, SET;
 * on the next loop iteration, as every engine answers); anything else goes
 * to the thread, which reads a missing key into the cache and runs the set
 * operations on the database, then posts the answers back through the
 * store's pipe.  Plain writes reach the database in one transaction per
 * flush: at most SQ_FLUSH_MS after an INCR, at once after a SET or DEL,
 * and at the close.  Every SQ_FLUSH_MS the thread also deletes up to
 * SQ_PURGE_MAX expired rows of each table (found through a partial index
 * on the expiry), so keys that nobody reads again (a rate window gone by,
 * an old greylist triplet) do not grow the file for ever.  WAL mode,
 * synchronous NORMAL.  The loop itself never touches the database.
 */
#include "store/store.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log/log.h"
#include "store/store_private.h"
#include "util/util.h"

#define SQ_FLUSH_MS	1000	/* plain writes reach the database within */
#define SQ_CACHE_MAX	50000	/* cache entries kept beyond a flush */
#define SQ_PURGE_MAX	1000	/* expired rows deleted per table a flush */

/*
 * One database of the process, shared by every store opened on its path:
 * one connection, one thread, one cache, so every loop sees the same
 * counters at once.
 */
struct sq_db {
	char			*path;		/* owned: the registry's key */
	unsigned		 refs;		/* under sq_registry_mu */
	struct sq_db		*next;		/* the registry */
	sqlite3			*db;		/* the thread's */
	pthread_t		 thread;
	pthread_mutex_t		 mu;		/* guards what follows */
	pthread_cond_t		 cv;		/* wakes the thread */
	pthread_cond_t		 idle_cv;	/* a store's requests done */
	struct store_req	*todo, **todo_tail;	/* loops -> thread */
	struct store_cache	 cache;
	bool			 flush_now;	/* a SET or DEL: flush at once */
	bool			 stop;
};

/* One store (a loop's handle) on a shared database. */
struct store_sqlite {
	struct sq_db		*d;		/* a reference */
	struct store_req	*done, **done_tail;	/* thread -> loop, under d->mu */
	unsigned		 inflight;	/* with the thread, under d->mu */
	int			 pipe[2];	/* thread wakes the loop */
	struct event		*ev;
};

static pthread_mutex_t	 sq_registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sq_db	*sq_registry;

static const char store_sqlite_schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL,"
    " exp INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS sets (k TEXT NOT NULL, m TEXT NOT NULL,"
    " exp INTEGER NOT NULL, PRIMARY KEY (k, m));"
    "CREATE INDEX IF NOT EXISTS kv_exp ON kv (exp) WHERE exp != 0;"
    "CREATE INDEX IF NOT EXISTS sets_exp ON sets (exp) WHERE exp != 0;";

static int64_t
store_sqlite_now(void)
{
	return (int64_t)(util_wall_us() / 1000);
}

/* One statement with text/int binds; returns the sqlite3_step() result. */
static int
store_sqlite_exec(sqlite3 *db, const char *sql, const char *a, const char *b,
    int64_t x, int64_t y, char **text_out, int64_t *int_out)
{
	sqlite3_stmt *stmt;
	int rc;

	if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
		return SQLITE_ERROR;
	int i = 1;
	if (a != NULL)
		sqlite3_bind_text(stmt, i++, a, -1, SQLITE_STATIC);
	if (b != NULL)
		sqlite3_bind_text(stmt, i++, b, -1, SQLITE_STATIC);
	/* The integers fill the parameters after the texts. */
	int64_t ints[2] = { x, y };
	for (int k = 0; k < 2 && i <= sqlite3_bind_parameter_count(stmt); k++)
		sqlite3_bind_int64(stmt, i++, ints[k]);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		if (text_out != NULL)
			*text_out = xstrdup((const char *)
			    sqlite3_column_text(stmt, 0));
		if (int_out != NULL)
			*int_out = sqlite3_column_int64(stmt, 0);
	}
	sqlite3_finalize(stmt);
	return rc;
}

/* A plain key's entry, read from the database on a miss (thread only). */
static struct store_cache_ent *
sq_entry(struct sq_db *d, const char *key, int64_t now)
{
	struct store_cache_ent *e;
	sqlite3_stmt *stmt;
	char *val = NULL;
	int64_t exp = 0;

	pthread_mutex_lock(&d->mu);
	e = store_cache_find(&d->cache, key);
	pthread_mutex_unlock(&d->mu);
	if (e != NULL)
		return e;	/* only this thread removes entries */
	if (sqlite3_prepare_v2(d->db, "SELECT v, exp FROM kv WHERE k = ?", -1,
	    &stmt, NULL) != SQLITE_OK)
		return NULL;
	sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		exp = sqlite3_column_int64(stmt, 1);
		if (exp == 0 || exp > now)
			val = xstrdup((const char *)sqlite3_column_text(stmt,
			    0));
	}
	sqlite3_finalize(stmt);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		free(val);
		return NULL;
	}
	pthread_mutex_lock(&d->mu);
	e = store_cache_add(&d->cache, key, val, val != NULL ? exp : 0);
	pthread_mutex_unlock(&d->mu);
	free(val);
	return e;
}

/* A plain key's request on the thread: through its cache entry. */
static void
sq_plain(struct sq_db *d, struct store_req *r, int64_t now)
{
	struct store_cache_ent *e = sq_entry(d, r->key, now);

	if (e == NULL) {
		log_msg(LOG_LVL_WARN, "state store: sqlite: %s",
		    sqlite3_errmsg(d->db));
		r->rc = -1;
		return;
	}
	pthread_mutex_lock(&d->mu);
	store_cache_apply(e, r, now);
	d->flush_now |= r->op == STORE_SET || r->op == STORE_DEL;
	pthread_mutex_unlock(&d->mu);
}

static void
store_sqlite_one(struct sq_db *d, struct store_req *r)
{
	sqlite3 *db = d->db;
	int64_t now = store_sqlite_now();
	int64_t exp = r->ttl_ms != 0 ? now + (int64_t)r->ttl_ms : 0;
	int rc;

	r->rc = 0;
	switch (r->op) {
	case STORE_GET:
	case STORE_SET:
	case STORE_INCR:
		sq_plain(d, r, now);
		return;
	case STORE_DEL:
		sq_plain(d, r, now);
		if (r->rc == -1)
			return;
		rc = store_sqlite_exec(db, "DELETE FROM sets WHERE k = ?",
		    r->key, NULL, 0, 0, NULL, NULL);
		r->n |= sqlite3_changes(db) > 0;
		break;
	case STORE_SADD: {
		int64_t old = 0;
		/* Expired members go; a live set keeps its expiry. */
		store_sqlite_exec(db, "DELETE FROM sets WHERE k = ? AND exp "
		    "!= 0 AND exp <= ?", r->key, NULL, now, 0, NULL, NULL);
		if (store_sqlite_exec(db, "SELECT exp FROM sets WHERE k = ? "
		    "LIMIT 1", r->key, NULL, 0, 0, NULL, &old) == SQLITE_ROW)
			exp = old;
		rc = store_sqlite_exec(db, "INSERT OR IGNORE INTO sets (k, m, "
		    "exp) VALUES (?, ?, ?)", r->key, r->val, exp, 0, NULL,
		    NULL);
		r->n = sqlite3_changes(db) > 0;
		break;
	}
	case STORE_SISMEMBER:
		rc = store_sqlite_exec(db, "SELECT 1 FROM sets WHERE k = ? AND "
		    "m = ? AND (exp = 0 OR exp > ?)", r->key, r->val, now, 0,
		    NULL, NULL);
		r->n = rc == SQLITE_ROW;
		if (rc == SQLITE_ROW)
			rc = SQLITE_DONE;
		break;
	default:
		rc = SQLITE_ERROR;
	}
	if (rc != SQLITE_DONE) {
		log_msg(LOG_LVL_WARN, "state store: sqlite: %s",
		    sqlite3_errmsg(db));
		r->rc = -1;
	}
}

/* Write what the cache holds dirty, in one transaction (thread only). */
static void
sq_flush(struct sq_db *d)
{
	struct store_cache_ent **w;
	size_t n;
	bool ok = true;

	pthread_mutex_lock(&d->mu);
	n = store_cache_take_dirty(&d->cache, &w);
	d->flush_now = false;
	pthread_mutex_unlock(&d->mu);
	if (n == 0)
		goto trim;
	sqlite3_exec(d->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	for (size_t i = 0; i < n && ok; i++)
		ok = store_sqlite_exec(d->db, w[i]->val != NULL ?
		    "INSERT OR REPLACE INTO kv (k, v, exp) VALUES (?, ?, ?)" :
		    "DELETE FROM kv WHERE k = ?", w[i]->key, w[i]->val,
		    w[i]->exp, 0, NULL, NULL) == SQLITE_DONE;
	if (!ok || sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL) !=
	    SQLITE_OK) {
		log_msg(LOG_LVL_WARN, "state store: sqlite flush: %s",
		    sqlite3_errmsg(d->db));
		sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
		pthread_mutex_lock(&d->mu);
		for (size_t i = 0; i < n; i++) {	/* again next time */
			struct store_cache_ent *e = store_cache_find(&d->cache,
			    w[i]->key);
			if (e != NULL)
				e->dirty = true;
		}
		pthread_mutex_unlock(&d->mu);
	}
	for (size_t i = 0; i < n; i++)
		store_cache_ent_free(w[i]);
	free(w);
trim:
	pthread_mutex_lock(&d->mu);
	if (d->cache.n > SQ_CACHE_MAX)
		store_cache_trim(&d->cache, SQ_CACHE_MAX);
	pthread_mutex_unlock(&d->mu);
}

/*
 * Delete a bounded batch of expired rows (thread only).  A key written
 * since its row expired is dirty in the cache and its flush writes it
 * whole (INSERT OR REPLACE), so deleting the old row loses nothing; a
 * clean cache entry of a deleted row has expired too and answers as
 * missing, as the row would.
 */
static void
sq_purge(struct sq_db *d)
{
	static const char *const sql[] = {
		"DELETE FROM kv WHERE rowid IN (SELECT rowid FROM kv WHERE "
		"exp != 0 AND exp <= ? LIMIT ?)",
		"DELETE FROM sets WHERE rowid IN (SELECT rowid FROM sets WHERE "
		"exp != 0 AND exp <= ? LIMIT ?)",
	};
	int64_t now = store_sqlite_now();

	for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]); i++)
		if (store_sqlite_exec(d->db, sql[i], NULL, NULL, now,
		    SQ_PURGE_MAX, NULL, NULL) != SQLITE_DONE)
			log_msg(LOG_LVL_WARN, "state store: sqlite purge: %s",
			    sqlite3_errmsg(d->db));
}

/* The thread's answers to their stores' loops (under d->mu). */
static void
sq_post(struct sq_db *d, struct store_req *batch)
{
	while (batch != NULL) {
		struct store_req *r = batch;
		struct store_sqlite *s = r->st->priv;
		char c = 1;

		batch = r->next;
		r->next = NULL;
		*s->done_tail = r;
		s->done_tail = &r->next;
		s->inflight--;
		while (write(s->pipe[1], &c, 1) == -1 && errno == EINTR)
			;
	}
	pthread_cond_broadcast(&d->idle_cv);
}

static uint64_t
sq_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void *
store_sqlite_main(void *arg)
{
	struct sq_db *d = arg;
	uint64_t next = sq_mono_ms() + SQ_FLUSH_MS, purge = next;

	pthread_mutex_lock(&d->mu);
	for (;;) {
		while (d->todo == NULL && !d->stop && !d->flush_now &&
		    sq_mono_ms() < next) {
			struct timespec ts = { (time_t)(next / 1000),
			    (long)(next % 1000) * 1000000 };
			pthread_cond_timedwait(&d->cv, &d->mu, &ts);
		}
		struct store_req *batch = d->todo;
		d->todo = NULL;
		d->todo_tail = &d->todo;
		bool stop = d->stop;
		pthread_mutex_unlock(&d->mu);

		if (batch != NULL) {
			/* One transaction for the batch's own writes. */
			sqlite3_exec(d->db, "BEGIN IMMEDIATE", NULL, NULL,
			    NULL);
			for (struct store_req *r = batch; r != NULL;
			    r = r->next)
				store_sqlite_one(d, r);
			if (sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL) !=
			    SQLITE_OK) {
				log_msg(LOG_LVL_WARN, "state store: sqlite "
				    "commit: %s", sqlite3_errmsg(d->db));
				sqlite3_exec(d->db, "ROLLBACK", NULL, NULL,
				    NULL);
			}
		}
		pthread_mutex_lock(&d->mu);
		bool flush = stop || d->flush_now;
		pthread_mutex_unlock(&d->mu);
		if (flush || sq_mono_ms() >= next) {
			sq_flush(d);
			next = sq_mono_ms() + SQ_FLUSH_MS;
		}
		/* Its own clock: flushes at once (SETs) keep moving next. */
		if (!stop && sq_mono_ms() >= purge) {
			sq_purge(d);
			purge = sq_mono_ms() + SQ_FLUSH_MS;
		}
		pthread_mutex_lock(&d->mu);
		sq_post(d, batch);
		if (stop && d->todo == NULL)
			break;
	}
	pthread_mutex_unlock(&d->mu);
	return NULL;
}

/* On the loop: answer what the thread finished. */
static void
store_sqlite_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store_sqlite *s = arg;
	char buf[64];

	(void)what;
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	pthread_mutex_lock(&s->d->mu);
	struct store_req *done = s->done;
	s->done = NULL;
	s->done_tail = &s->done;
	pthread_mutex_unlock(&s->d->mu);
	while (done != NULL) {
		struct store_req *next = done->next;
		store_req_done(done);
		done = next;
	}
}

/*
 * The database and the files SQLite keeps beside it, which it makes with
 * the database's mode (-wal, -shm), hold addresses: they are for the
 * server's user alone.  The database is made 0600 here, before SQLite
 * would make it 0644, and one that others may read is made private, or
 * warned about when that fails.
 */
static void
sq_db_private(const char *path)
{
	static const char *const suffix[] = { "", "-wal", "-shm" };
	struct stat st;

	for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
		char *p = xasprintf("%s%s", path, suffix[i]);
		int fd = open(p, i == 0 ? O_RDWR | O_CREAT | O_CLOEXEC :
		    O_RDONLY | O_CLOEXEC, 0600);

		/* What cannot be opened here, SQLite reports. */
		if (fd != -1 && fstat(fd, &st) == 0 &&
		    (st.st_mode & 077) != 0 &&
		    fchmod(fd, st.st_mode & 0700) == -1)
			log_msg(LOG_LVL_WARN, "state store: %s is mode %03o, "
			    "which other users may read: chmod(0600): %s", p,
			    (unsigned)(st.st_mode & 0777), strerror(errno));
		if (fd != -1)
			close(fd);
		free(p);
	}
}

/* The database at path, opened and its thread started. */
static struct sq_db *
sq_db_open(const char *path, const char **err_out)
{
	struct sq_db *d = xcalloc(1, sizeof(*d));
	pthread_condattr_t ca;

	sq_db_private(path);
	if (sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		log_msg(LOG_LVL_ERROR, "state store: open %s: %s", path,
		    d->db != NULL ? sqlite3_errmsg(d->db) : "out of memory");
		*err_out = "cannot open the sqlite state store";
		goto fail;
	}
	sqlite3_busy_timeout(d->db, 5000);
	if (sqlite3_exec(d->db, store_sqlite_schema, NULL, NULL, NULL) !=
	    SQLITE_OK) {
		log_msg(LOG_LVL_ERROR, "state store: schema in %s: %s", path,
		    sqlite3_errmsg(d->db));
		*err_out = "cannot set up the sqlite state store";
		goto fail;
	}
	d->path = xstrdup(path);
	pthread_mutex_init(&d->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&d->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&d->idle_cv, NULL);
	d->todo_tail = &d->todo;
	store_cache_init(&d->cache);
	int err = pthread_create(&d->thread, NULL, store_sqlite_main, d);
	if (err != 0) {
		/* Out of threads: no store now, and no exit. */
		log_msg(LOG_LVL_ERROR, "state store: pthread_create: %s",
		    strerror(err));
		*err_out = "cannot start the sqlite state store";
		store_cache_clear(&d->cache);
		pthread_mutex_destroy(&d->mu);
		pthread_cond_destroy(&d->cv);
		pthread_cond_destroy(&d->idle_cv);
		free(d->path);
		goto fail;
	}
	return d;
fail:
	sqlite3_close(d->db);
	free(d);
	return NULL;
}

/* The last store let go: flush, stop the thread, close. */
static void
sq_db_close(struct sq_db *d)
{
	pthread_mutex_lock(&d->mu);
	d->stop = true;
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
	pthread_join(d->thread, NULL);
	sqlite3_close(d->db);
	store_cache_clear(&d->cache);
	pthread_mutex_destroy(&d->mu);
	pthread_cond_destroy(&d->cv);
	pthread_cond_destroy(&d->idle_cv);
	free(d->path);
	free(d);
}

/* A store lets go of its database: the last one closes it. */
static void
sq_db_release(struct sq_db *d)
{
	bool last;

	pthread_mutex_lock(&sq_registry_mu);
	last = --d->refs == 0;
	if (last) {
		struct sq_db **pp = &sq_registry;
		while (*pp != d)
			pp = &(*pp)->next;
		*pp = d->next;
	}
	pthread_mutex_unlock(&sq_registry_mu);
	if (last)
		sq_db_close(d);
}

static int
store_sqlite_open(struct store *st, const char *path, const char **err_out)
{
	struct sq_db *d;

	if (path[0] == '\0') {
		*err_out = "sqlite store needs a path";
		return -1;
	}
	pthread_mutex_lock(&sq_registry_mu);
	for (d = sq_registry; d != NULL; d = d->next)
		if (strcmp(d->path, path) == 0)
			break;
	if (d == NULL && (d = sq_db_open(path, err_out)) != NULL) {
		d->next = sq_registry;
		sq_registry = d;
	}
	if (d != NULL)
		d->refs++;
	pthread_mutex_unlock(&sq_registry_mu);
	if (d == NULL)
		return -1;

	struct store_sqlite *s = xcalloc(1, sizeof(*s));
	s->d = d;
	s->done_tail = &s->done;
	/* Out of descriptors: no store now, and no exit. */
	if (pipe2(s->pipe, O_NONBLOCK | O_CLOEXEC) == -1) {
		log_msg(LOG_LVL_ERROR, "state store: pipe2: %s",
		    strerror(errno));
		*err_out = "cannot start the sqlite state store";
		free(s);
		sq_db_release(d);
		return -1;
	}
	s->ev = event_new(st->base, s->pipe[0], EV_READ | EV_PERSIST,
	    store_sqlite_wake_cb, s);
	event_add(s->ev, NULL);
	st->priv = s;
	return 0;
}

/*
 * A plain key the cache holds is answered from it on the loop, unless an
 * earlier request of this store is still with the thread or unanswered
 * (a store's requests are answered in order); anything else goes to the
 * thread.
 */
static void
store_sqlite_submit(struct store *st, struct store_req *req)
{
	struct store_sqlite *s = st->priv;
	struct sq_db *d = s->d;
	struct store_cache_ent *e;

	pthread_mutex_lock(&d->mu);
	if ((req->op == STORE_GET || req->op == STORE_INCR ||
	    req->op == STORE_SET) && s->inflight == 0 && s->done == NULL &&
	    (e = store_cache_find(&d->cache, req->key)) != NULL) {
		store_cache_apply(e, req, store_sqlite_now());
		if (req->op == STORE_SET) {
			d->flush_now = true;
			pthread_cond_signal(&d->cv);
		}
		pthread_mutex_unlock(&d->mu);
		store_req_done_later(req);
		return;
	}
	s->inflight++;
	*d->todo_tail = req;
	d->todo_tail = &req->next;
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

static void
store_sqlite_close(struct store *st)
{
	struct store_sqlite *s = st->priv;
	struct sq_db *d = s->d;

	/* Finish what was asked (writes must land), then answer it. */
	pthread_mutex_lock(&d->mu);
	while (s->inflight > 0)
		pthread_cond_wait(&d->idle_cv, &d->mu);
	pthread_mutex_unlock(&d->mu);
	store_sqlite_wake_cb(s->pipe[0], EV_READ, s);
	event_free(s->ev);
	close(s->pipe[0]);
	close(s->pipe[1]);
	free(s);
	st->priv = NULL;
	sq_db_release(d);
}

const struct store_engine store_sqlite_engine = {
	.name = "sqlite",
	.open_fn = store_sqlite_open,
	.submit_fn = store_sqlite_submit,
	.close_fn = store_sqlite_close,
};
