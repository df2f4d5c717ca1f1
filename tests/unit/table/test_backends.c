/*
 * Unit tests of table/'s database engines against real servers the tests
 * start: a SQLite file, a throw-away PostgreSQL cluster (Debian's initdb
 * and pg_ctl, run as the postgres user, on a unix socket in a temporary
 * folder) and a redis-server on a loopback port.  What they check is that
 * a key is only ever a key: quotes, SQL, blanks, CR LF and bytes the
 * database cannot hold find nothing, change nothing, and take no backend
 * down, while keys that really hold such characters are found exactly.
 */
#include "table/table.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <sqlite3.h>

#include "config/config.h"
#include "log/log.h"
#include "table/table_private.h"
#include "util/util.h"

#define PG_BIN		"/usr/lib/postgresql/15/bin"
#define REDIS_BIN	"/usr/bin/redis-server"

static char dir[64];		/* everything the tests make */
static char logpath[128];	/* postern's log lines, for outage checks */
static int pg_port;
static int redis_port;
static pid_t redis_pid;
static int tee_in = -1, tee_err = -1, tee_log = -1;
static pthread_t tee_thread;

/* ----- helpers ----- */

static int
sh(const char *fmt, ...)
{
	va_list ap;
	char cmd[2048];

	va_start(ap, fmt);
	(void)vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	int rc = system(cmd);
	if (rc != 0)
		fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
	return rc == 0 ? 0 : -1;
}

static int
free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd != -1 && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sin, &len) == 0)
		port = ntohs(sin.sin_port);
	if (fd != -1)
		close(fd);
	return port;
}

static struct table *
open_table(enum config_table_kind kind, const char *path, const char *query,
    const char *prefix, bool set)
{
	struct config_table ct = { .name = "t", .kind = kind,
	    .path = (char *)path, .query = (char *)query,
	    .prefix = (char *)prefix, .redis_set = set, .pool = 2,
	    .timeout_ms = 5000 };
	const char *err = NULL;
	struct table *t = table_open(&ct, &err);

	if (t == NULL)
		fail_msg("table_open: %s", err);
	return t;
}

/* Look key up: rc, and the values joined by "|" into buf. */
static int
get(struct table *t, const char *key, char *buf, size_t bufsz)
{
	struct table_values tv = { 0 };
	int rc = table_get(t, key, &tv);

	buf[0] = '\0';
	for (size_t i = 0; i < tv.n; i++) {
		if (i > 0)
			(void)util_strlcpy(buf + strlen(buf), "|",
			    bufsz - strlen(buf));
		(void)util_strlcpy(buf + strlen(buf), tv.v[i],
		    bufsz - strlen(buf));
	}
	table_values_clear(&tv);
	return rc;
}

static void
expect(struct table *t, const char *key, int want, const char *value)
{
	char got[512];
	int rc = get(t, key, got, sizeof(got));

	if (rc != want || (value != NULL && strcmp(got, value) != 0))
		fail_msg("key \"%s\": rc %d \"%s\", want %d \"%s\"", key, rc,
		    got, want, value != NULL ? value : "");
}

static long log_mark;	/* where this test's log lines start */

static int
mark_log(void **state)
{
	FILE *f = fopen(logpath, "r");

	(void)state;
	if (f == NULL || fseek(f, 0, SEEK_END) == -1)
		return -1;
	log_mark = ftell(f);
	fclose(f);
	return 0;
}

/* Nothing this test logged says a backend went away. */
static void
assert_no_outage(void)
{
	FILE *f = fopen(logpath, "r");
	char line[1024];

	assert_non_null(f);
	assert_int_equal(fseek(f, log_mark, SEEK_SET), 0);
	while (fgets(line, sizeof(line), f) != NULL)
		if (strstr(line, "unavailable") != NULL)
			fail_msg("outage logged: %s", line);
	fclose(f);
}

/*
 * Keys an attacker would try, and what each must find: nothing (the
 * table holds none of them) except the quoted name, which is a real row.
 */
static const char *const hostile[] = {
	"x' or '1'='1",
	"' or 1=1 --",
	"bob@example.org' --",
	"'; delete from boxes; --",
	"\"; delete from boxes; --",
	"bob@example.org'; drop table boxes; --",
	"%",
	"_ob@example.org",
	"bob@example.org\\",
	"$1",
};

/* The rows every SQL engine's table holds. */
#define SQL_ROWS \
	"('bob@example.org', '/m/bob'), " \
	"('o''hara@example.org', '/m/ohara'), " \
	"('a b\"c@example.org', '/m/quoted'), " \
	"('list@example.org', 'x@example.org'), " \
	"('list@example.org', 'y@example.org')"
#define SQL_NROWS 5

static void
check_sql_keys(struct table *t)
{
	expect(t, "bob@example.org", TABLE_FOUND, "/m/bob");
	expect(t, "BOB@Example.ORG", TABLE_FOUND, "/m/bob");
	expect(t, "o'hara@example.org", TABLE_FOUND, "/m/ohara");
	expect(t, "a b\"c@example.org", TABLE_FOUND, "/m/quoted");
	expect(t, "list@example.org", TABLE_FOUND, "x@example.org|"
	    "y@example.org");
	for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++)
		expect(t, hostile[i], TABLE_MISSING, "");
	/* Still the same after all that. */
	expect(t, "bob@example.org", TABLE_FOUND, "/m/bob");
}

/* ----- SQLite ----- */

static void
test_sqlite_key_is_a_parameter(void **state)
{
	char path[128], *err = NULL;
	sqlite3 *db;

	(void)state;
	(void)util_snprintf(path, sizeof(path), "%s/boxes.db", dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "CREATE TABLE boxes (address text, "
	    "path text); INSERT INTO boxes VALUES " SQL_ROWS ";", NULL, NULL,
	    &err), SQLITE_OK);
	struct table *t = open_table(CONFIG_TABLE_SQLITE, path,
	    "SELECT path FROM boxes WHERE address = $1 ORDER BY path", NULL,
	    false);
	check_sql_keys(t);
	table_free(&t);

	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM boxes",
	    -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), SQL_NROWS);
	sqlite3_finalize(st);
	sqlite3_close(db);
	assert_no_outage();
}

/* ----- PostgreSQL ----- */

/* Run sql (from a file: no shell quoting) as the cluster's superuser. */
static int
pg_psql(const char *sql)
{
	char path[128];
	FILE *f;

	(void)util_snprintf(path, sizeof(path), "%s/q.sql", dir);
	if ((f = fopen(path, "w")) == NULL || fputs(sql, f) == EOF ||
	    fclose(f) != 0)
		return -1;
	return sh("runuser -u postgres -- psql -h %s -p %d -U postgres -d "
	    "postgres -v ON_ERROR_STOP=1 -qAt -f %s >/dev/null", dir, pg_port,
	    path);
}

static int
pg_start(void)
{
	if (access(PG_BIN "/initdb", X_OK) != 0) {
		fprintf(stderr, "PostgreSQL 15 is not installed "
		    "(scripts/bootstrap installs postgresql)\n");
		return -1;
	}
	pg_port = free_port();
	if (sh("chown postgres:postgres %s", dir) == -1 ||
	    sh("runuser -u postgres -- " PG_BIN "/initdb -D %s/pg -A trust "
	    "-U postgres -E UTF8 >/dev/null", dir) == -1 ||
	    sh("runuser -u postgres -- " PG_BIN "/pg_ctl -D %s/pg -w -t 60 "
	    "-l %s/pg.log -o \"-k %s -p %d -c listen_addresses=''\" start "
	    ">/dev/null", dir, dir, dir, pg_port) == -1)
		return -1;
	return pg_psql("CREATE TABLE boxes (address text, path text); "
	    "INSERT INTO boxes VALUES " SQL_ROWS ";");
}

static void
pg_stop(void)
{
	if (pg_port > 0)
		(void)sh("runuser -u postgres -- " PG_BIN "/pg_ctl -D %s/pg -w "
		    "-t 60 -m fast stop >/dev/null", dir);
}

static char *
pg_conninfo(void)
{
	return xasprintf("host=%s port=%d dbname=postgres user=postgres", dir,
	    pg_port);
}

static void
test_pgsql_key_is_a_parameter(void **state)
{
	char *ci = pg_conninfo();

	(void)state;
	struct table *t = open_table(CONFIG_TABLE_PGSQL, ci,
	    "SELECT path FROM boxes WHERE address = $1 ORDER BY path", NULL,
	    false);
	check_sql_keys(t);
	table_free(&t);
	free(ci);
	assert_int_equal(sh("test \"$(runuser -u postgres -- psql -h %s -p %d "
	    "-U postgres -d postgres -qAt -c 'SELECT count(*) FROM boxes')\" "
	    "= %d", dir, pg_port, SQL_NROWS), 0);
	assert_no_outage();
}

/*
 * A key the database cannot hold (bytes that are not UTF-8, text where the
 * column is a number) can match no row: missing, not an outage, and the
 * connection stays good for the next key.
 */
static void
test_pgsql_unstorable_key_is_missing(void **state)
{
	char *ci = pg_conninfo();

	(void)state;
	struct table *t = open_table(CONFIG_TABLE_PGSQL, ci,
	    "SELECT path FROM boxes WHERE address = $1", NULL, false);
	expect(t, "\xff\xfe@example.org", TABLE_MISSING, "");
	expect(t, "bob@example.org", TABLE_FOUND, "/m/bob");
	table_free(&t);
	t = open_table(CONFIG_TABLE_PGSQL, ci, "SELECT 'n' || $1::int", NULL,
	    false);
	expect(t, "42", TABLE_FOUND, "n42");
	expect(t, "bob", TABLE_MISSING, "");
	expect(t, "7", TABLE_FOUND, "n7");
	table_free(&t);
	free(ci);
	assert_no_outage();
}

/* ----- Redis ----- */

static int
redis_start(void)
{
	if (access(REDIS_BIN, X_OK) != 0) {
		fprintf(stderr, "%s not found (scripts/bootstrap installs "
		    "redis-server)\n", REDIS_BIN);
		return -1;
	}
	redis_port = free_port();
	if ((redis_pid = fork()) == -1)
		return -1;
	if (redis_pid == 0) {
		char port[16];
		(void)util_snprintf(port, sizeof(port), "%d", redis_port);
		freopen("/dev/null", "w", stdout);
		execl(REDIS_BIN, REDIS_BIN, "--port", port, "--bind",
		    "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
		    dir, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 1000; i++) {	/* up to 10 s */
		redisContext *c = redisConnect("127.0.0.1", redis_port);
		if (c != NULL && c->err == 0) {
			redisReply *r = redisCommand(c, "PING");
			bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;
			freeReplyObject(r);
			redisFree(c);
			if (ok)
				return 0;
		} else if (c != NULL)
			redisFree(c);
		usleep(10000);
	}
	fprintf(stderr, "redis-server did not answer within 10 s\n");
	return -1;
}

static redisContext *
redis_admin(void)
{
	redisContext *c = redisConnect("127.0.0.1", redis_port);

	assert_non_null(c);
	assert_int_equal(c->err, 0);
	return c;
}

/* A command with binary-safe arguments; the reply is checked for errors. */
static void
redis_do(redisContext *c, int argc, const char **argv)
{
	size_t lens[8];

	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	redisReply *r = redisCommandArgv(c, argc, argv, lens);
	assert_non_null(r);
	assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
	freeReplyObject(r);
}

static long long
redis_dbsize(redisContext *c)
{
	redisReply *r = redisCommand(c, "DBSIZE");
	long long n;

	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	n = r->integer;
	freeReplyObject(r);
	return n;
}

static void
test_redis_key_is_one_argument(void **state)
{
	redisContext *c = redis_admin();
	char hp[32];

	(void)state;
	redis_do(c, 1, (const char *[]){ "FLUSHALL" });
	redis_do(c, 3, (const char *[]){ "SET", "box:bob@example.org",
	    "/m/bob" });
	redis_do(c, 3, (const char *[]){ "SET", "box:a b@example.org",
	    "/m/blank" });
	redis_do(c, 3, (const char *[]){ "SET", "box:cr\r\nlf@example.org",
	    "/m/crlf" });
	redis_do(c, 3, (const char *[]){ "SET", "box:*", "/m/star" });
	(void)util_snprintf(hp, sizeof(hp), "127.0.0.1:%d", redis_port);
	struct table *t = open_table(CONFIG_TABLE_REDIS, hp, NULL, "box:",
	    false);
	expect(t, "bob@example.org", TABLE_FOUND, "/m/bob");
	expect(t, "a b@example.org", TABLE_FOUND, "/m/blank");
	expect(t, "cr\r\nlf@example.org", TABLE_FOUND, "/m/crlf");
	expect(t, "*", TABLE_FOUND, "/m/star");
	/* Blanks and CR LF do not split the command or start another. */
	expect(t, "a", TABLE_MISSING, "");
	expect(t, "b@example.org", TABLE_MISSING, "");
	expect(t, "x\r\nSET box:pwned 1\r\nGET box:x", TABLE_MISSING, "");
	expect(t, "x\r\n*3\r\n$3\r\nSET\r\n$9\r\nbox:pwned\r\n$1\r\n1\r\n",
	    TABLE_MISSING, "");
	expect(t, "x\nflushall\n", TABLE_MISSING, "");
	expect(t, "b* ", TABLE_MISSING, "");
	expect(t, "pwned", TABLE_MISSING, "");
	assert_int_equal(redis_dbsize(c), 4);
	table_free(&t);

	/* Sets, for fan-out: SMEMBERS with the same one-argument key. */
	redis_do(c, 4, (const char *[]){ "SADD", "al:team one@example.org",
	    "x@example.org", "y@example.org" });
	t = open_table(CONFIG_TABLE_REDIS, hp, NULL, "al:", true);
	char got[256];
	assert_int_equal(get(t, "team one@example.org", got, sizeof(got)),
	    TABLE_FOUND);
	assert_true(strcmp(got, "x@example.org|y@example.org") == 0 ||
	    strcmp(got, "y@example.org|x@example.org") == 0);
	expect(t, "team", TABLE_MISSING, "");
	expect(t, "team one@example.org\r\nDEL al:team", TABLE_MISSING, "");
	assert_int_equal(redis_dbsize(c), 5);
	table_free(&t);
	redisFree(c);
	assert_no_outage();
}

/* ----- setup ----- */

/* Everything written to stderr goes on to it and into logpath too. */
static void *
tee_main(void *arg)
{
	char buf[4096];
	ssize_t n;

	(void)arg;
	while ((n = read(tee_in, buf, sizeof(buf))) > 0) {
		(void)!write(tee_err, buf, (size_t)n);
		(void)!write(tee_log, buf, (size_t)n);
	}
	return NULL;
}

static int
tee_start(void)
{
	int p[2];

	if ((tee_log = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600)) ==
	    -1 || pipe(p) == -1 || (tee_err = dup(STDERR_FILENO)) == -1 ||
	    dup2(p[1], STDERR_FILENO) == -1)
		return -1;
	close(p[1]);
	tee_in = p[0];
	setvbuf(stderr, NULL, _IONBF, 0);
	return pthread_create(&tee_thread, NULL, tee_main, NULL) == 0 ? 0 : -1;
}

static void
tee_stop(void)
{
	if (tee_err == -1)
		return;
	dup2(tee_err, STDERR_FILENO);	/* the pipe's last writer is gone */
	pthread_join(tee_thread, NULL);
	close(tee_in);
	close(tee_log);
	close(tee_err);
}

static int
setup(void **state)
{
	(void)state;
	util_strlcpy(dir, "/tmp/postern-tbk-XXXXXX", sizeof(dir));
	if (mkdtemp(dir) == NULL)
		return -1;
	(void)util_snprintf(logpath, sizeof(logpath), "%s/log", dir);
	if (tee_start() == -1)
		return -1;
	log_init(false, NULL, LOG_LVL_INFO);
	if (redis_start() == -1 || pg_start() == -1)
		return -1;
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	pg_stop();
	if (redis_pid > 0) {
		kill(redis_pid, SIGTERM);
		waitpid(redis_pid, NULL, 0);
	}
	tee_stop();
	return sh("rm -rf '%s'", dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_sqlite_key_is_a_parameter, mark_log),
		cmocka_unit_test_setup(test_pgsql_key_is_a_parameter, mark_log),
		cmocka_unit_test_setup(test_pgsql_unstorable_key_is_missing, mark_log),
		cmocka_unit_test_setup(test_redis_key_is_one_argument, mark_log),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
