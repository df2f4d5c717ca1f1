/*
 * table/table_sqlite.c: "sqlite:PATH query "SELECT ... $1 ..."": the key
 * is bound to the query's parameter $1 (never pasted into the text); every
 * row's first column is a value.  Each pooled connection is one read-only
 * handle with its statement prepared once; a busy database is waited for
 * up to the table's timeout.
 */
#include "table/table.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "table/table_private.h"
#include "util/util.h"

struct sqlite_conn {
	sqlite3		*db;
	sqlite3_stmt	*stmt;
	int		 param;		/* index of $1 */
};

static void
sqlite_disconnect(struct table *t, void *conn)
{
	struct sqlite_conn *c = conn;

	(void)t;
	sqlite3_finalize(c->stmt);
	sqlite3_close(c->db);
	free(c);
}

static void *
sqlite_connect(struct table *t, uint64_t deadline_ms, const char **err_out)
{
	struct sqlite_conn *c = xcalloc(1, sizeof(*c));

	(void)deadline_ms;	/* a local file: opening does not wait */
	if (sqlite3_open_v2(t->path, &c->db, SQLITE_OPEN_READONLY |
	    SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		*err_out = util_err("sqlite %s: %s", t->path, c->db != NULL ?
		    sqlite3_errmsg(c->db) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(c->db, (int)t->timeout_ms);
	if (sqlite3_prepare_v2(c->db, t->query, -1, &c->stmt, NULL) !=
	    SQLITE_OK) {
		*err_out = util_err("sqlite %s: query: %s", t->path,
		    sqlite3_errmsg(c->db));
		goto fail;
	}
	if ((c->param = sqlite3_bind_parameter_index(c->stmt, "$1")) == 0 ||
	    sqlite3_bind_parameter_count(c->stmt) != 1) {
		*err_out = util_err("sqlite %s: the query must have exactly "
		    "one parameter, $1", t->path);
		goto fail;
	}
	return c;
fail:
	sqlite_disconnect(t, c);
	return NULL;
}

/* A first connection now, so a bad path or query stops the start. */
static int
sqlite_open(struct table *t, const char **err_out)
{
	void *c = sqlite_connect(t, 0, err_out);

	if (c == NULL)
		return -1;
	t->idle[t->nidle++] = c;
	t->nconns++;
	t->priv = t;
	return 0;
}

static void
sqlite_close(struct table *t)
{
	t->priv = NULL;
}

static int
sqlite_get(struct table *t, void *conn, const char *key, uint64_t deadline_ms,
    struct table_values *out, const char **err_out)
{
	struct sqlite_conn *c = conn;
	int rc, found = 0;

	(void)deadline_ms;	/* a locked file waits t->timeout_ms at most */

	sqlite3_reset(c->stmt);
	if (sqlite3_bind_text(c->stmt, c->param, key, -1, SQLITE_TRANSIENT) !=
	    SQLITE_OK)
		goto fail;
	while ((rc = sqlite3_step(c->stmt)) == SQLITE_ROW) {
		const unsigned char *v = sqlite3_column_text(c->stmt, 0);
		if (v == NULL)
			continue;	/* NULL column: no value */
		table_values_add(out, (const char *)v,
		    (size_t)sqlite3_column_bytes(c->stmt, 0));
		found = 1;
	}
	if (rc != SQLITE_DONE)
		goto fail;
	sqlite3_reset(c->stmt);
	return found;
fail:
	*err_out = util_err("sqlite %s: %s", t->path, sqlite3_errmsg(c->db));
	sqlite3_reset(c->stmt);
	return -1;
}

const struct table_engine table_sqlite_engine = {
	.name = "sqlite", .open_fn = sqlite_open, .close_fn = sqlite_close,
	.connect_fn = sqlite_connect, .disconnect_fn = sqlite_disconnect,
	.get_fn = sqlite_get,
};
