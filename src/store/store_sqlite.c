/*
 * store/store_sqlite.c: "sqlite:PATH" engine.  One thread per store owns
 * the connection; it takes every queued request in one transaction (so
 * writes are batched) and posts the answers back to the loop through a
 * pipe.  WAL mode, so several loops' stores share the file.  The loop
 * itself never touches the database.
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
#include <unistd.h>

#include "log/log.h"
#include "store/store_private.h"
#include "util/util.h"

struct store_sqlite {
	sqlite3			*db;
	pthread_t		 thread;
	pthread_mutex_t		 mu;
	pthread_cond_t		 cv;
	struct store_req	*todo, **todo_tail;	/* loop -> thread */
	struct store_req	*done, **done_tail;	/* thread -> loop */
	bool			 stop;
	int			 pipe[2];		/* thread wakes the loop */
	struct event		*ev;
};

static const char store_sqlite_schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL,"
    " exp INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS sets (k TEXT NOT NULL, m TEXT NOT NULL,"
    " exp INTEGER NOT NULL, PRIMARY KEY (k, m));";

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

static void
store_sqlite_one(sqlite3 *db, struct store_req *r)
{
	int64_t now = store_sqlite_now();
	int64_t exp = r->ttl_ms != 0 ? now + (int64_t)r->ttl_ms : 0;
	char *v = NULL;
	int rc;

	r->rc = 0;
	switch (r->op) {
	case STORE_GET:
		rc = store_sqlite_exec(db, "SELECT v FROM kv WHERE k = ? AND "
		    "(exp = 0 OR exp > ?)", r->key, NULL, now, 0, &r->out,
		    NULL);
		r->rc = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
		return;
	case STORE_SET:
		rc = store_sqlite_exec(db, "INSERT OR REPLACE INTO kv (k, v, "
		    "exp) VALUES (?, ?, ?)", r->key, r->val, exp, 0, NULL,
		    NULL);
		break;
	case STORE_INCR:
		rc = store_sqlite_exec(db, "SELECT v FROM kv WHERE k = ? AND "
		    "(exp = 0 OR exp > ?)", r->key, NULL, now, 0, &v, NULL);
		if (rc == SQLITE_ROW) {
			r->n = strtoll(v, NULL, 10) + r->delta;
			free(v);
			char num[32];
			snprintf(num, sizeof(num), "%lld", (long long)r->n);
			rc = store_sqlite_exec(db, "UPDATE kv SET v = ? WHERE "
			    "k = ?", num, r->key, 0, 0, NULL, NULL);
		} else if (rc == SQLITE_DONE) {
			r->n = r->delta;
			char num[32];
			snprintf(num, sizeof(num), "%lld", (long long)r->n);
			rc = store_sqlite_exec(db, "INSERT OR REPLACE INTO kv "
			    "(k, v, exp) VALUES (?, ?, ?)", r->key, num, exp, 0,
			    NULL, NULL);
		}
		break;
	case STORE_DEL:
		rc = store_sqlite_exec(db, "DELETE FROM kv WHERE k = ?",
		    r->key, NULL, 0, 0, NULL, NULL);
		r->n = sqlite3_changes(db) > 0;
		if (rc == SQLITE_DONE)
			rc = store_sqlite_exec(db, "DELETE FROM sets WHERE "
			    "k = ?", r->key, NULL, 0, 0, NULL, NULL);
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

static void *
store_sqlite_main(void *arg)
{
	struct store_sqlite *s = arg;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (s->todo == NULL && !s->stop)
			pthread_cond_wait(&s->cv, &s->mu);
		if (s->todo == NULL && s->stop)
			break;
		struct store_req *batch = s->todo;
		s->todo = NULL;
		s->todo_tail = &s->todo;
		pthread_mutex_unlock(&s->mu);

		/* One transaction for the whole batch. */
		sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		for (struct store_req *r = batch; r != NULL; r = r->next)
			store_sqlite_one(s->db, r);
		if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) !=
		    SQLITE_OK) {
			log_msg(LOG_LVL_WARN, "state store: sqlite commit: %s",
			    sqlite3_errmsg(s->db));
			sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
			for (struct store_req *r = batch; r != NULL;
			    r = r->next)
				r->rc = -1;
		}

		pthread_mutex_lock(&s->mu);
		struct store_req *last = batch;
		while (last->next != NULL)
			last = last->next;
		*s->done_tail = batch;
		s->done_tail = &last->next;
		char c = 1;
		while (write(s->pipe[1], &c, 1) == -1 && errno == EINTR)
			;
	}
	pthread_mutex_unlock(&s->mu);
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
	pthread_mutex_lock(&s->mu);
	struct store_req *done = s->done;
	s->done = NULL;
	s->done_tail = &s->done;
	pthread_mutex_unlock(&s->mu);
	while (done != NULL) {
		struct store_req *next = done->next;
		store_req_done(done);
		done = next;
	}
}

static int
store_sqlite_open(struct store *st, const char *path, const char **err_out)
{
	struct store_sqlite *s = xcalloc(1, sizeof(*s));

	if (path[0] == '\0') {
		*err_out = "sqlite store needs a path";
		free(s);
		return -1;
	}
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		log_msg(LOG_LVL_ERROR, "state store: open %s: %s", path,
		    s->db != NULL ? sqlite3_errmsg(s->db) : "out of memory");
		*err_out = "cannot open the sqlite state store";
		sqlite3_close(s->db);
		free(s);
		return -1;
	}
	sqlite3_busy_timeout(s->db, 5000);
	if (sqlite3_exec(s->db, store_sqlite_schema, NULL, NULL, NULL) !=
	    SQLITE_OK) {
		log_msg(LOG_LVL_ERROR, "state store: schema in %s: %s", path,
		    sqlite3_errmsg(s->db));
		*err_out = "cannot set up the sqlite state store";
		sqlite3_close(s->db);
		free(s);
		return -1;
	}
	if (pipe2(s->pipe, O_NONBLOCK | O_CLOEXEC) == -1)
		fatal("pipe2: %s", strerror(errno));
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	s->todo_tail = &s->todo;
	s->done_tail = &s->done;
	s->ev = event_new(st->base, s->pipe[0], EV_READ | EV_PERSIST,
	    store_sqlite_wake_cb, s);
	event_add(s->ev, NULL);
	if (pthread_create(&s->thread, NULL, store_sqlite_main, s) != 0)
		fatal("pthread_create: state store");
	st->priv = s;
	return 0;
}

static void
store_sqlite_submit(struct store *st, struct store_req *req)
{
	struct store_sqlite *s = st->priv;

	pthread_mutex_lock(&s->mu);
	*s->todo_tail = req;
	s->todo_tail = &req->next;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static void
store_sqlite_close(struct store *st)
{
	struct store_sqlite *s = st->priv;

	/* Finish what was asked (writes must land), then answer it. */
	pthread_mutex_lock(&s->mu);
	s->stop = true;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->thread, NULL);
	store_sqlite_wake_cb(s->pipe[0], EV_READ, s);
	event_free(s->ev);
	close(s->pipe[0]);
	close(s->pipe[1]);
	sqlite3_close(s->db);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s);
	st->priv = NULL;
}

const struct store_engine store_sqlite_engine = {
	.name = "sqlite",
	.open_fn = store_sqlite_open,
	.submit_fn = store_sqlite_submit,
	.close_fn = store_sqlite_close,
};
