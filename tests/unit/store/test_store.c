/*
 * Unit tests of store/: the same table of operations against every engine
 * (memory; sqlite in a temporary directory; redis started from
 * /usr/bin/redis-server on a free loopback port, skipped when missing).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"
#include "util/util.h"

struct answer {
	bool	done;
	int	rc;
	int64_t	n;
	char	val[256];
};

static void
str_cb(void *arg, int rc, const char *value)
{
	struct answer *a = arg;

	a->done = true;
	a->rc = rc;
	util_strlcpy(a->val, value != NULL ? value : "", sizeof(a->val));
}

static void
int_cb(void *arg, int rc, int64_t n)
{
	struct answer *a = arg;

	a->done = true;
	a->rc = rc;
	a->n = n;
}

/* Run the loop until a is answered (deadline 5 s). */
static void
wait_for(struct event_base *base, struct answer *a, const char *what)
{
	uint64_t end = util_now_ms() + 5000;

	while (!a->done && util_now_ms() < end)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
	if (!a->done)
		fail_msg("case \"%s\": no answer within 5 s", what);
}

enum op { GET, SET, INCR, DEL, SADD, SISM, SLEEP };
struct step {
	const char	*what;
	enum op		 op;
	const char	*key;
	const char	*val;		/* SET value, member */
	int64_t		 num;		/* INCR delta, SET/INCR/SADD ttl ms */
	uint64_t	 ttl_ms;
	int		 want_rc;
	int64_t		 want_n;	/* int ops */
	const char	*want_val;	/* GET */
};

static const struct step steps[] = {
	{ "get missing", GET, "k1", NULL, 0, 0, 0, 0, "" },
	{ "set", SET, "k1", "hello", 0, 0, 0, 0, NULL },
	{ "get after set", GET, "k1", NULL, 0, 0, 1, 0, "hello" },
	{ "set again", SET, "k1", "bye", 0, 0, 0, 0, NULL },
	{ "get new value", GET, "k1", NULL, 0, 0, 1, 0, "bye" },
	{ "incr new", INCR, "c1", NULL, 5, 0, 0, 5, NULL },
	{ "incr again", INCR, "c1", NULL, -2, 0, 0, 3, NULL },
	{ "get counter", GET, "c1", NULL, 0, 0, 1, 0, "3" },
	{ "del present", DEL, "c1", NULL, 0, 0, 0, 1, NULL },
	{ "del missing", DEL, "c1", NULL, 0, 0, 0, 0, NULL },
	{ "get deleted", GET, "c1", NULL, 0, 0, 0, 0, "" },
	{ "sadd new", SADD, "s1", "a", 0, 0, 0, 1, NULL },
	{ "sadd same", SADD, "s1", "a", 0, 0, 0, 0, NULL },
	{ "sadd other", SADD, "s1", "b", 0, 0, 0, 1, NULL },
	{ "sismember yes", SISM, "s1", "b", 0, 0, 0, 1, NULL },
	{ "sismember no", SISM, "s1", "c", 0, 0, 0, 0, NULL },
	{ "set with ttl", SET, "t1", "v", 0, 300, 0, 0, NULL },
	{ "incr with ttl", INCR, "t2", NULL, 1, 300, 0, 1, NULL },
	{ "incr keeps ttl", INCR, "t2", NULL, 1, 100000, 0, 2, NULL },
	{ "sadd with ttl", SADD, "t3", "m", 0, 300, 0, 1, NULL },
	{ "get before expiry", GET, "t1", NULL, 0, 0, 1, 0, "v" },
	{ "wait", SLEEP, NULL, NULL, 0, 400, 0, 0, NULL },
	{ "get expired", GET, "t1", NULL, 0, 0, 0, 0, "" },
	{ "counter expired", INCR, "t2", NULL, 1, 0, 0, 1, NULL },
	{ "set member expired", SISM, "t3", "m", 0, 0, 0, 0, NULL },
	{ "bad key", GET, "has space", NULL, 0, 0, -1, 0, "" },
	{ "bad value", SET, "k2", "a\nb", 0, 0, -1, 0, NULL },
};

static void
run_steps(const char *spec)
{
	struct event_base *base = event_base_new();
	const char *err = NULL;
	struct store *st = store_open(base, spec, &err);
	int failed = 0;

	if (st == NULL)
		fail_msg("store_open(%s): %s", spec, err);
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		const struct step *s = &steps[i];
		struct answer a = { 0 };
		switch (s->op) {
		case SLEEP:
			usleep((useconds_t)s->ttl_ms * 1000);
			continue;
		case GET:
			store_get(st, s->key, str_cb, &a);
			break;
		case SET:
			store_set(st, s->key, s->val, s->ttl_ms, int_cb, &a);
			break;
		case INCR:
			store_incr(st, s->key, s->num, s->ttl_ms, int_cb, &a);
			break;
		case DEL:
			store_del(st, s->key, int_cb, &a);
			break;
		case SADD:
			store_sadd(st, s->key, s->val, s->ttl_ms, int_cb, &a);
			break;
		case SISM:
			store_sismember(st, s->key, s->val, int_cb, &a);
			break;
		}
		if (a.done) {
			print_error("%s case \"%s\": answered inside the call\n",
			    spec, s->what);
			failed++;
		}
		wait_for(base, &a, s->what);
		if (a.rc != s->want_rc) {
			print_error("%s case \"%s\": got rc %d, want %d\n",
			    spec, s->what, a.rc, s->want_rc);
			failed++;
		} else if (s->op == GET && strcmp(a.val, s->want_val) != 0) {
			print_error("%s case \"%s\": got \"%s\", want \"%s\"\n",
			    spec, s->what, a.val, s->want_val);
			failed++;
		} else if (s->op != GET && s->op != SET && a.rc == 0 &&
		    a.n != s->want_n) {
			print_error("%s case \"%s\": got %lld, want %lld\n",
			    spec, s->what, (long long)a.n,
			    (long long)s->want_n);
			failed++;
		}
	}
	store_close(&st);
	event_base_loop(base, EVLOOP_NONBLOCK);
	event_base_free(base);
	if (failed > 0)
		fail_msg("%d case(s) failed on %s", failed, spec);
}

static void
test_memory(void **state)
{
	(void)state;
	run_steps("memory:");
}

static char tmpdir[] = "/tmp/postern-store-XXXXXX";

/* Answers in the order asked, for ordered_answers. */
struct seen {
	struct answer	a;
	int		*order;		/* shared counter */
	int		 at;		/* when this one was answered */
};

static void
seen_int_cb(void *arg, int rc, int64_t n)
{
	struct seen *s = arg;

	int_cb(&s->a, rc, n);
	s->at = ++*s->order;
}

static void
seen_str_cb(void *arg, int rc, const char *value)
{
	struct seen *s = arg;

	str_cb(&s->a, rc, value);
	s->at = ++*s->order;
}

/*
 * A store's answers come in the order asked; a request without a callback
 * is applied in its place (the counter's width changes both ways); and
 * closing a store answers what still waits for the loop.
 */
static void
ordered_answers(const char *spec)
{
	struct event_base *base = event_base_new();
	const char *err = NULL;
	struct store *st = store_open(base, spec, &err);
	int order = 0;
	struct seen s[5] = { 0 };

	for (size_t i = 0; i < 5; i++)
		s[i].order = &order;
	assert_non_null(st);
	/* The key is read once, so the rest may be answered from memory. */
	store_incr(st, "w", 9, 0, seen_int_cb, &s[0]);
	wait_for(base, &s[0].a, "first incr");
	assert_int_equal(s[0].a.n, 9);
	store_incr(st, "w", 1, 0, seen_int_cb, &s[1]);		/* 10 */
	store_incr(st, "w", -20, 0, NULL, NULL);		/* -10 */
	store_incr(st, "w", 5, 0, seen_int_cb, &s[2]);		/* -5 */
	store_get(st, "w", seen_str_cb, &s[3]);
	assert_false(s[1].a.done);
	wait_for(base, &s[3].a, "get after the increments");
	assert_int_equal(s[1].a.n, 10);
	assert_int_equal(s[2].a.n, -5);
	assert_string_equal(s[3].a.val, "-5");
	assert_true(s[1].at < s[2].at && s[2].at < s[3].at);

	store_get(st, "w", seen_str_cb, &s[4]);
	store_close(&st);
	assert_true(s[4].a.done);
	event_base_free(base);
}

static void
test_ordered_answers(void **state)
{
	char spec[256];

	(void)state;
	ordered_answers("memory:");
	snprintf(spec, sizeof(spec), "sqlite:%s/order.db", tmpdir);
	ordered_answers(spec);
}

static void
test_sqlite(void **state)
{
	char spec[256];

	(void)state;
	snprintf(spec, sizeof(spec), "sqlite:%s/state.db", tmpdir);
	run_steps(spec);

	/* What was written survives a reopen (a restart). */
	struct event_base *base = event_base_new();
	const char *err;
	struct store *st = store_open(base, spec, &err);
	struct answer a = { 0 };
	assert_non_null(st);
	store_get(st, "k1", str_cb, &a);
	wait_for(base, &a, "reopen");
	assert_int_equal(a.rc, 1);
	assert_string_equal(a.val, "bye");
	store_close(&st);
	event_base_free(base);
}

static void
test_sqlite_batch(void **state)
{
	char spec[256];
	struct answer a[200];

	(void)state;
	snprintf(spec, sizeof(spec), "sqlite:%s/batch.db", tmpdir);
	struct event_base *base = event_base_new();
	const char *err;
	struct store *st = store_open(base, spec, &err);
	assert_non_null(st);
	memset(a, 0, sizeof(a));
	/* Many writes in flight at once: every one answered, in order. */
	for (int i = 0; i < 200; i++)
		store_incr(st, "many", 1, 0, int_cb, &a[i]);
	wait_for(base, &a[199], "batch");
	for (int i = 0; i < 200; i++)
		if (!a[i].done || a[i].n != i + 1)
			fail_msg("case \"batch %d\": got %lld, want %d", i,
			    (long long)a[i].n, i + 1);
	store_close(&st);
	event_base_free(base);
}

/* The value of key in the kv table of the database at path, or -1. */
static long long
db_value(const char *path, const char *key)
{
	sqlite3 *db;
	sqlite3_stmt *stmt;
	long long v = -1;

	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) !=
	    SQLITE_OK) {
		sqlite3_close(db);
		return -1;
	}
	sqlite3_busy_timeout(db, 1000);
	if (sqlite3_prepare_v2(db, "SELECT v FROM kv WHERE k = ?", -1, &stmt,
	    NULL) == SQLITE_OK) {
		sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
		if (sqlite3_step(stmt) == SQLITE_ROW)
			v = sqlite3_column_int64(stmt, 0);
		sqlite3_finalize(stmt);
	}
	sqlite3_close(db);
	return v;
}

/*
 * Two loops' stores on one file share its counters at once, and a count
 * reaches the database within the flush interval while the stores are
 * open (what a crash can lose), and at the close.
 */
static void
test_sqlite_shared(void **state)
{
	char spec[300], path[256];
	struct event_base *b1 = event_base_new(), *b2 = event_base_new();
	const char *err;
	struct answer a = { 0 };

	(void)state;
	snprintf(path, sizeof(path), "%s/shared.db", tmpdir);
	snprintf(spec, sizeof(spec), "sqlite:%s", path);
	struct store *s1 = store_open(b1, spec, &err);
	struct store *s2 = store_open(b2, spec, &err);
	assert_non_null(s1);
	assert_non_null(s2);
	for (int i = 1; i <= 3; i++) {
		memset(&a, 0, sizeof(a));
		store_incr(i % 2 ? s1 : s2, "hits", 1, 0, int_cb, &a);
		wait_for(i % 2 ? b1 : b2, &a, "incr");
		assert_int_equal(a.n, i);
	}
	memset(&a, 0, sizeof(a));
	store_get(s2, "hits", str_cb, &a);
	wait_for(b2, &a, "get");
	assert_string_equal(a.val, "3");
	uint64_t end = util_now_ms() + 5000;
	while (db_value(path, "hits") != 3 && util_now_ms() < end)
		usleep(20 * 1000);
	if (db_value(path, "hits") != 3)
		fail_msg("the count did not reach the database in 5 s");
	memset(&a, 0, sizeof(a));
	store_incr(s1, "hits", 1, 0, int_cb, &a);
	wait_for(b1, &a, "incr");
	store_close(&s1);
	store_close(&s2);
	assert_int_equal(db_value(path, "hits"), 4);	/* flushed at close */
	event_base_free(b1);
	event_base_free(b2);
}

static void
test_bad_specs(void **state)
{
	static const char *const bad[] = { "nothing", "bogus:x", "sqlite:",
	    "redis:nohost", "redis:127.0.0.1:0", "redis:h:99999",
	    "sqlite:/nonexistent/dir/x.db" };
	struct event_base *base = event_base_new();

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *err = NULL;
		struct store *st = store_open(base, bad[i], &err);
		if (st != NULL)
			fail_msg("case \"%s\": opened, want an error", bad[i]);
		assert_non_null(err);
	}
	/* The sqlite store that cannot be opened stays unhealthy when a
	 * store of another engine (a reply agent's memory) opens. */
	const char *err = NULL, *why = store_health();
	assert_non_null(why);
	assert_string_equal(why, "state store (sqlite): cannot be opened");
	struct store *mem = store_open(base, "memory:", &err);
	assert_non_null(mem);
	why = store_health();
	assert_non_null(why);
	assert_string_equal(why, "state store (sqlite): cannot be opened");
	store_close(&mem);
	event_base_free(base);
}

/* A value's key part: one value, one part; domains in any case alike. */
static void
test_key_add(void **state)
{
	static const struct {
		const char	*label, *prefix, *val;
		size_t		 fold_from;	/* SIZE_MAX: none */
		const char	*want;		/* NULL: -1 */
	} cases[] = {
		{ "plain", "rl:", "a@example.org", SIZE_MAX, "rl:a@example.org" },
		{ "separator and escape", "", "a:b%c", SIZE_MAX, "a%3Ab%25c" },
		{ "blanks and controls", "", " \t\r\n\x7f", SIZE_MAX,
		    "%20%09%0D%0A%7F" },
		{ "UTF-8 delta", "", "\xce\xb4@x", SIZE_MAX, "%CE%B4@x" },
		{ "UTF-8 lambda", "", "\xce\xbb@x", SIZE_MAX, "%CE%BB@x" },
		{ "empty", "k:", "", SIZE_MAX, "k:" },
		{ "fold the domain", "", "Bob@Example.ORG", 4,
		    "Bob@example.org" },
		{ "fold all, 8-bit kept", "", "MX.\xc3\x9c", 0, "mx.%C3%9C" },
		{ "fits to the byte", "0123456", "ab", SIZE_MAX, "0123456ab" },
		{ "no room", "0123456", "abc", SIZE_MAX, NULL },
	};
	char buf[10], big[STORE_KEY_MAX];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* The two cases of a short buffer use one just big enough. */
		bool tight = strcmp(cases[i].prefix, "0123456") == 0;
		char *b = tight ? buf : big;
		size_t bsz = tight ? sizeof(buf) : sizeof(big);
		util_strlcpy(b, cases[i].prefix, bsz);
		int rc = store_key_add(b, bsz, cases[i].val,
		    strlen(cases[i].val), cases[i].fold_from);
		if (cases[i].want == NULL ? rc != -1 ||
		    strcmp(b, cases[i].prefix) != 0 : rc != 0 ||
		    strcmp(b, cases[i].want) != 0)
			fail_msg("case \"%s\": got %d \"%s\", want \"%s\"",
			    cases[i].label, rc, b, cases[i].want != NULL ?
			    cases[i].want : "-1, buf as it was");
		if (cases[i].want != NULL && !store_key_ok(b) && b[0] != '\0')
			fail_msg("case \"%s\": \"%s\" is no good key",
			    cases[i].label, b);
	}

	/* Long values are hashed, and the hash is of every byte. */
	char v[STORE_KEY_PART_MAX + 2], k1[STORE_KEY_MAX], k2[STORE_KEY_MAX];
	memset(v, 'a', sizeof(v) - 1);
	v[sizeof(v) - 1] = '\0';
	k1[0] = k2[0] = '\0';
	assert_int_equal(store_key_add(k1, sizeof(k1), v, strlen(v) - 1,
	    SIZE_MAX), 0);
	assert_int_equal(strlen(k1), STORE_KEY_PART_MAX);	/* as it is */
	assert_int_equal(store_key_add(k2, sizeof(k2), v, strlen(v),
	    SIZE_MAX), 0);
	assert_int_equal(strncmp(k2, "sha256:", 7), 0);
	assert_int_equal(strlen(k2), 7 + 64);
	v[0] = 'b';
	k1[0] = '\0';
	assert_int_equal(store_key_add(k1, sizeof(k1), v, strlen(v),
	    SIZE_MAX), 0);
	assert_string_not_equal(k1, k2);
	/* 67 bytes of "%" escape to 201 characters: hashed too. */
	memset(v, '%', 67);
	k1[0] = '\0';
	assert_int_equal(store_key_add(k1, sizeof(k1), v, 67, SIZE_MAX), 0);
	assert_int_equal(strncmp(k1, "sha256:", 7), 0);
}

/* ----- redis ----- */

static pid_t redis_pid = -1;
static int redis_port;

static int
free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) == -1)
		return -1;
	close(fd);
	return ntohs(sin.sin_port);
}

static bool
redis_up(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	bool ok;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)redis_port);
	ok = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
	close(fd);
	return ok;
}

static void
test_redis(void **state)
{
	char port[16], spec[64];

	(void)state;
	if (access("/usr/bin/redis-server", X_OK) != 0) {
		fail_msg("/usr/bin/redis-server not installed (scripts/bootstrap "
		    "installs it)");
	}
	redis_port = free_port();
	snprintf(port, sizeof(port), "%d", redis_port);
	redis_pid = fork();
	if (redis_pid == 0) {
		int null = open("/dev/null", 1);
		dup2(null, 1);
		execl("/usr/bin/redis-server", "redis-server", "--port", port,
		    "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		    "--daemonize", "no", (char *)NULL);
		_exit(127);
	}
	uint64_t end = util_now_ms() + 5000;
	while (!redis_up() && util_now_ms() < end)
		usleep(20000);
	if (!redis_up())
		fail_msg("redis-server did not come up on port %d", redis_port);
	snprintf(spec, sizeof(spec), "redis:127.0.0.1:%d", redis_port);
	run_steps(spec);
}

static void
test_redis_down(void **state)
{
	char spec[64];
	struct answer a = { 0 };

	(void)state;
	/* Nobody listens: an error answer, later, never a hang. */
	snprintf(spec, sizeof(spec), "redis:127.0.0.1:%d", free_port());
	struct event_base *base = event_base_new();
	const char *err;
	struct store *st = store_open(base, spec, &err);
	assert_non_null(st);
	store_get(st, "k", str_cb, &a);
	wait_for(base, &a, "redis down");
	assert_int_equal(a.rc, -1);
	store_close(&st);
	event_base_free(base);
}

static int
teardown(void **state)
{
	char cmd[128];

	(void)state;
	if (redis_pid > 0) {
		kill(redis_pid, SIGTERM);
		waitpid(redis_pid, NULL, 0);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static int
setup(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);
	return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_memory),
		cmocka_unit_test(test_sqlite),
		cmocka_unit_test(test_sqlite_batch),
		cmocka_unit_test(test_sqlite_shared),
		cmocka_unit_test(test_bad_specs),
		cmocka_unit_test(test_key_add),
		cmocka_unit_test(test_ordered_answers),
		cmocka_unit_test(test_redis),
		cmocka_unit_test(test_redis_down),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
