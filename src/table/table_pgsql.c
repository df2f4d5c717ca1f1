/*
 * table/table_pgsql.c: "pgsql:"CONNINFO" query "SELECT ... $1 ..."" with
 * libpq: each pooled connection prepares the query once; the key is sent
 * as the parameter $1 (never pasted into the text) and every row's first
 * column is a value.  libpq's non-blocking calls with poll() keep every
 * step (connect, prepare, query) within the lookup's deadline; a
 * connection that times out or fails is closed, and the pool makes a new
 * one; a command still running on it is cancelled first, so the server
 * does not keep working for nobody.  One the server closed while idle says
 * so, and the front asks again.  The server's notices and warnings go to
 * the log, escaped, never to stderr raw.
 */
#include "table/table.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "table/table_private.h"
#include "util/util.h"

#define PG_STMT	"postern_lookup"

/* Wait until fd is ready for events or the deadline; false on timeout. */
static bool
pg_wait(int fd, short events, uint64_t deadline_ms)
{
	struct pollfd pfd = { .fd = fd, .events = events };

	for (;;) {
		uint64_t now = util_now_ms();
		if (now >= deadline_ms)
			return false;
		int n = poll(&pfd, 1, (int)(deadline_ms - now));
		if (n > 0)
			return true;
		if (n == 0)
			return false;
		if (errno != EINTR)
			return true;	/* libpq will report the error */
	}
}

/* The next result of a sent command, within the deadline; NULL at end. */
static int
pg_result(PGconn *pg, uint64_t deadline_ms, PGresult **res_out,
    const char **err_out)
{
	while (PQisBusy(pg)) {
		if (!pg_wait(PQsocket(pg), POLLIN, deadline_ms)) {
			*err_out = "no answer in time";
			return -1;
		}
		if (!PQconsumeInput(pg)) {
			*err_out = PQerrorMessage(pg);
			return -1;
		}
	}
	*res_out = PQgetResult(pg);
	return 0;
}

/*
 * The data exceptions a key can cause by its form alone: bytes not in the
 * database's encoding, text where the query casts $1 to a number or a date,
 * out of range, too long.  No row can hold such a key.  Other errors (a
 * division by zero in the query...) stay errors.
 */
static bool
pg_is_bad_value(const char *state)
{
	static const char *const codes[] = { "22021", "22P05", "22P02",
	    "22003", "22007", "22008", "22001", NULL };

	for (size_t i = 0; state != NULL && codes[i] != NULL; i++)
		if (strcmp(state, codes[i]) == 0)
			return true;
	return false;
}

/*
 * Run a sent command to its end; 0 with the last good result in *out.  -1
 * with *err_out, or -2 when the server refused the parameter's value
 * (pg_is_bad_value); the connection is good for more in both.
 */
static int
pg_finish(struct table *t, PGconn *pg, uint64_t deadline_ms,
    ExecStatusType want, PGresult **out, const char **err_out)
{
	PGresult *res, *keep = NULL;
	const char *err = NULL, *state;
	bool bad_value = false;

	for (;;) {
		if (pg_result(pg, deadline_ms, &res, &err) == -1) {
			*err_out = util_err("pgsql %s: %s", t->name, err);
			PQclear(keep);
			return -1;
		}
		if (res == NULL)
			break;
		if (PQresultStatus(res) != want && err == NULL) {
			state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
			bad_value = pg_is_bad_value(state);
			err = util_err("pgsql %s: %s", t->name,
			    PQresultErrorMessage(res));
		}
		PQclear(keep);
		keep = res;
	}
	if (err != NULL) {
		*err_out = err;
		PQclear(keep);
		return bad_value ? -2 : -1;
	}
	*out = keep;
	return 0;
}

/*
 * A NOTICE or WARNING from the server (RAISE in a function the query
 * calls, a deprecation at connect): its text may echo the key, which is
 * a client's, so it is escaped like any peer text.
 */
static void
pg_notice_cb(void *arg, const PGresult *res)
{
	const struct table *t = arg;
	const char *sev = PQresultErrorField(res,
	    PG_DIAG_SEVERITY_NONLOCALIZED);
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	enum log_level lvl = LOG_LVL_DEBUG;
	char safe_sev[32], safe_msg[512];

	if (sev == NULL)
		sev = "NOTICE";
	if (msg == NULL)
		msg = "";
	if (strcmp(sev, "WARNING") == 0)
		lvl = LOG_LVL_WARN;
	else if (strcmp(sev, "NOTICE") == 0 || strcmp(sev, "INFO") == 0)
		lvl = LOG_LVL_INFO;
	log_msg(lvl, "table=%s backend=pgsql notice severity=%s text=\"%s\"",
	    t->name, log_safe_into(safe_sev, sizeof(safe_sev), sev,
	    strlen(sev)), log_safe_into(safe_msg, sizeof(safe_msg), msg,
	    strlen(msg)));
}

/*
 * Close pg; a command still running there (its answer did not come in
 * time) is cancelled first, or the server would go on with it, holding a
 * session past the pool's size.  XXX: PQcancel blocks while it connects
 * (libpq 15 has no other way); it runs on a lookup thread, never a loop.
 */
static void
pg_drop(PGconn *pg)
{
	PGcancel *cancel;
	char buf[256];

	if (pg != NULL && PQstatus(pg) == CONNECTION_OK &&
	    PQtransactionStatus(pg) == PQTRANS_ACTIVE &&
	    (cancel = PQgetCancel(pg)) != NULL) {
		(void)PQcancel(cancel, buf, sizeof(buf));
		PQfreeCancel(cancel);
	}
	PQfinish(pg);
}

static void
pg_disconnect(struct table *t, void *conn)
{
	(void)t;
	pg_drop(conn);
}

static void *
pg_connect(struct table *t, uint64_t deadline, const char **err_out)
{
	PGconn *pg = PQconnectStart(t->path);
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	PGresult *res = NULL;

	if (pg == NULL || PQstatus(pg) == CONNECTION_BAD)
		goto bad;
	PQsetNoticeReceiver(pg, pg_notice_cb, t);
	while (st != PGRES_POLLING_OK) {
		if (st == PGRES_POLLING_FAILED)
			goto bad;
		if (!pg_wait(PQsocket(pg), st == PGRES_POLLING_READING ?
		    POLLIN : POLLOUT, deadline)) {
			*err_out = util_err("pgsql %s: connect: no answer in "
			    "time", t->name);
			PQfinish(pg);
			return NULL;
		}
		st = PQconnectPoll(pg);
	}
	if (PQsetnonblocking(pg, 1) == -1 ||
	    !PQsendPrepare(pg, PG_STMT, t->query, 1, NULL) ||
	    pg_finish(t, pg, deadline, PGRES_COMMAND_OK, &res, err_out) < 0) {
		if (res == NULL && PQstatus(pg) != CONNECTION_OK)
			*err_out = util_err("pgsql %s: %s", t->name,
			    PQerrorMessage(pg));
		pg_drop(pg);
		return NULL;
	}
	PQclear(res);
	return pg;
bad:
	*err_out = util_err("pgsql %s: %s", t->name, pg != NULL ?
	    PQerrorMessage(pg) : "out of memory");
	PQfinish(pg);
	return NULL;
}

static int
pg_open(struct table *t, const char **err_out)
{
	char *err = NULL;
	PQconninfoOption *o = PQconninfoParse(t->path, &err);

	if (o == NULL) {
		const char *why = err != NULL ? err : "out of memory";
		/* libpq's text ends in a newline; the line is ours to end. */
		*err_out = util_err("table %s: bad conninfo: %.*s", t->name,
		    (int)strcspn(why, "\n"), why);
		PQfreemem(err);
		return -1;
	}
	PQconninfoFree(o);
	t->priv = t;
	return 0;
}

static void
pg_close(struct table *t)
{
	t->priv = NULL;
}

/*
 * After a failed lookup: -1, or TABLE_GET_CLOSED when the server had
 * ended the session (libpq saw the connection close, not our timeout).
 */
static int
pg_failed(PGconn *pg)
{
	return PQstatus(pg) == CONNECTION_BAD ? TABLE_GET_CLOSED : -1;
}

static int
pg_get(struct table *t, void *conn, const char *key, uint64_t deadline,
    struct table_values *out, const char **err_out)
{
	const char *params[1] = { key };
	PGconn *pg = conn;
	PGresult *res = NULL;
	int n;

	if (!PQsendQueryPrepared(pg, PG_STMT, 1, params, NULL, NULL, 0)) {
		*err_out = util_err("pgsql %s: %s", t->name,
		    PQerrorMessage(pg));
		return pg_failed(pg);
	}
	while (PQflush(pg) == 1)
		if (!pg_wait(PQsocket(pg), POLLOUT, deadline)) {
			*err_out = util_err("pgsql %s: cannot send", t->name);
			return -1;
		}
	switch (pg_finish(t, pg, deadline, PGRES_TUPLES_OK, &res, err_out)) {
	case -2:
		return 0;	/* no row can hold a value it refuses */
	case -1:
		return pg_failed(pg);
	}
	if (res == NULL) {
		*err_out = util_err("pgsql %s: no result", t->name);
		return -1;
	}
	n = PQntuples(res);
	for (int i = 0; i < n; i++)
		if (PQnfields(res) > 0 && !PQgetisnull(res, i, 0))
			table_values_add(out, PQgetvalue(res, i, 0),
			    (size_t)PQgetlength(res, i, 0));
	PQclear(res);
	return out->n > 0;
}

const struct table_engine table_pgsql_engine = {
	.name = "pgsql", .open_fn = pg_open, .close_fn = pg_close,
	.connect_fn = pg_connect, .disconnect_fn = pg_disconnect,
	.get_fn = pg_get,
};
