/*
 * Unit tests of table/: inline and file tables, case-insensitive look-ups,
 * the file format, domains, reload on change (mtime bumped explicitly with
 * utimensat), keeping old contents when the new file is unreadable, and
 * look-ups from several threads during reloads.
 */
#include "table/table.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "config/config.h"
#include "log/log.h"
#include "table/table_private.h"
#include "util/util.h"

struct lookup_case {
	const char	*key;
	bool		 found;
	const char	*value;
};

static void
check_lookups(struct table *t, const char *what, const struct lookup_case *c,
    size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char *v = NULL;
		bool found = table_get_first(t, c[i].key, &v) ==
		    TABLE_FOUND;
		if (found != c[i].found || (found && strcmp(v, c[i].value) != 0))
			fail_msg("%s case \"%s\": got %s \"%s\", want %s "
			    "\"%s\"", what, c[i].key, found ? "found" :
			    "missing", v ? v : "", c[i].found ? "found" :
			    "missing", c[i].value ? c[i].value : "");
		free(v);
		/* Without value_out the answer is the same. */
		assert_int_equal(table_get_first(t, c[i].key, NULL) ==
		    TABLE_FOUND, found);
	}
}

static char tmpdir[64];

static int
setup_dir(void **state)
{
	(void)state;
	util_strlcpy(tmpdir, "/tmp/postern-table-XXXXXX", sizeof(tmpdir));
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	log_init(false, NULL, LOG_LVL_ERROR);	/* keep test output quiet */
	return 0;
}

static int
teardown_dir(void **state)
{
	char *cmd = xasprintf("rm -rf '%s'", tmpdir);
	(void)state;
	if (system(cmd) != 0)
		return -1;
	free(cmd);
	return 0;
}

/* Write path with text, then set its mtime to base + sec (seconds). */
static void
write_file(const char *path, const char *text, time_t sec)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
	struct timespec ts[2] = { { 1700000000 + sec, 0 },
	    { 1700000000 + sec, 0 } };
	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static void
test_inline(void **state)
{
	char *items[] = { "alice@example.org", "Bob@Example.ORG",
	    "@catch.example", "postmaster", NULL };
	struct config_table ct = { .name = "users",
	    .kind = CONFIG_TABLE_INLINE, .items = items };
	const struct lookup_case cases[] = {
		{ "alice@example.org", true, "" },
		{ "ALICE@EXAMPLE.ORG", true, "" },
		{ "bob@example.org", true, "" },
		{ "@CATCH.example", true, "" },
		{ "postmaster", true, "" },
		{ "carol@example.org", false, NULL },
		{ "alice@example.org.", false, NULL },
		{ "alice", false, NULL },
		{ "", false, NULL },
	};
	const char *err = NULL;

	(void)state;
	struct table *t = table_open(&ct, &err);
	assert_non_null(t);
	check_lookups(t, "inline", cases, sizeof(cases) / sizeof(cases[0]));
	assert_true(table_has_domain(t, "example.org"));
	assert_true(table_has_domain(t, "EXAMPLE.org"));
	assert_true(table_has_domain(t, "catch.example"));
	assert_false(table_has_domain(t, "other.example"));
	assert_false(table_has_domain(t, ""));
	table_free(&t);
	assert_null(t);
	table_free(&t);
}

static void
test_file_format(void **state)
{
	char *path = xasprintf("%s/aliases", tmpdir);
	struct config_table ct = { .name = "aliases",
	    .kind = CONFIG_TABLE_FILE, .path = path };
	const struct lookup_case cases[] = {
		{ "alice@example.org", true, "alice" },
		{ "bob@example.org", true, "bob robert  smith" },
		{ "colon@example.org", true, "c" },
		{ "colon@example.org:", false, NULL },
		{ "bare@example.org", true, "" },
		{ "crlf", true, "v" },
		{ "indented", true, "x" },
		{ "dup", true, "first" },
		{ "# not a key", false, NULL },
		{ "#", false, NULL },
		{ "with#hash", true, "a # b" },
		{ "a:b", true, "c" },
		{ "MiXeD", true, "Value Kept" },
		{ "mixed", true, "Value Kept" },
	};
	const char *err = NULL;

	(void)state;
	write_file(path,
	    "# a comment\n"
	    "\n"
	    "   \t\n"
	    "alice@example.org alice\n"
	    "bob@example.org\tbob robert  smith  \n"
	    "colon@example.org: c\n"
	    "bare@example.org\n"
	    "crlf v\r\n"
	    "   indented x\n"
	    "dup first\n"
	    "DUP second\n"
	    "with#hash a # b\n"
	    "a:b c\n"
	    "MiXeD Value Kept\n"
	    "@whole.example everyone", 0);
	struct table *t = table_open(&ct, &err);
	if (t == NULL)
		fail_msg("table_open: %s", err);
	check_lookups(t, "file", cases, sizeof(cases) / sizeof(cases[0]));
	assert_true(table_has_domain(t, "example.org"));
	assert_true(table_has_domain(t, "whole.example"));
	assert_false(table_has_domain(t, "b"));
	table_free(&t);
	free(path);
}

static void
test_open_errors(void **state)
{
	char *path = xasprintf("%s/no-such-file", tmpdir);
	struct config_table ct = { .name = "gone", .kind = CONFIG_TABLE_FILE,
	    .path = path };
	const char *err = NULL;

	(void)state;
	assert_null(table_open(&ct, &err));
	assert_non_null(err);
	char *want = xasprintf("table gone: %s: No such file or directory",
	    path);
	assert_string_equal(err, want);
	free(want);
	/* A directory is not a table file. */
	ct.path = tmpdir;
	assert_null(table_open(&ct, &err));
	assert_non_null(strstr(err, "not a regular file"));
	free(path);
}

static void
test_many_keys(void **state)
{
	char *path = xasprintf("%s/many", tmpdir);
	struct config_table ct = { .name = "many", .kind = CONFIG_TABLE_FILE,
	    .path = path };
	struct util_buf b = { 0 };
	const char *err = NULL;
	enum { N = 20000 };

	(void)state;
	for (int i = 0; i < N; i++)
		util_buf_printf(&b, "user%d@d%d.example v%d\n", i, i % 97, i);
	util_buf_add(&b, "", 1);
	write_file(path, b.data, 0);
	util_buf_clear(&b);
	struct table *t = table_open(&ct, &err);
	assert_non_null(t);
	for (int i = 0; i < N; i++) {
		char key[64], want[32], *v = NULL;
		snprintf(key, sizeof(key), "USER%d@D%d.example", i, i % 97);
		snprintf(want, sizeof(want), "v%d", i);
		if (table_get_first(t, key, &v) != TABLE_FOUND ||
		    strcmp(v, want) != 0)
			fail_msg("case \"%s\": got \"%s\", want \"%s\"", key,
			    v ? v : "(missing)", want);
		free(v);
		snprintf(key, sizeof(key), "user%d@d%d.example", i, i % 97 + 1);
		if (table_get_first(t, key, NULL) != TABLE_MISSING)
			fail_msg("case \"%s\": found, want missing", key);
	}
	assert_true(table_has_domain(t, "d96.example"));
	assert_false(table_has_domain(t, "d97.example"));
	table_free(&t);
	free(path);
}

static char *
lookup(struct table *t, const char *key)
{
	char *v = NULL;

	if (table_get_first(t, key, &v) != TABLE_FOUND)
		return xstrdup("(missing)");
	return v;
}

static void
expect(struct table *t, const char *key, const char *want, const char *why)
{
	char *v = lookup(t, key);
	if (strcmp(v, want) != 0)
		fail_msg("case \"%s\": got \"%s\", want \"%s\"", why, v, want);
	free(v);
}

/* The reload thread picks a change up within a bounded wait. */
static void
expect_soon(struct table *t, const char *key, const char *want,
    const char *why)
{
	uint64_t deadline = util_now_ms() + 5000;
	char *v;

	while (strcmp((v = lookup(t, key)), want) != 0 &&
	    util_now_ms() < deadline) {
		free(v);
		usleep(10000);
	}
	if (strcmp(v, want) != 0)
		fail_msg("case \"%s\": got \"%s\", want \"%s\"", why, v,
		    want);
	free(v);
}

static void
test_reload(void **state)
{
	char *path = xasprintf("%s/reload", tmpdir);
	char *aside = xasprintf("%s/reload.aside", tmpdir);
	struct config_table ct = { .name = "r", .kind = CONFIG_TABLE_FILE,
	    .path = path };
	const char *err = NULL;

	(void)state;
	write_file(path, "k one\n", 0);
	struct table *t = table_open(&ct, &err);
	assert_non_null(t);
	expect(t, "k", "one", "initial");

	table_set_recheck_ms(t, 0);
	write_file(path, "k two\n", 10);
	expect_soon(t, "k", "two", "changed mtime");
	assert_int_equal(table_get_first(t, "k", NULL), TABLE_FOUND);
	assert_false(table_has_domain(t, "new.example"));

	/* Same mtime, other size: re-read too. */
	write_file(path, "k three\nx@new.example y\n", 10);
	expect_soon(t, "k", "three", "changed size");
	assert_true(table_has_domain(t, "new.example"));

	/* The file replaced by something unreadable: old contents stay. */
	assert_int_equal(rename(path, aside), 0);
	usleep(50000);
	expect(t, "k", "three", "file gone");
	assert_int_equal(mkdir(path, 0700), 0);
	usleep(50000);
	expect(t, "k", "three", "file is a directory");
	assert_int_equal(rmdir(path), 0);
	write_file(path, "k four\n", 20);
	expect_soon(t, "k", "four", "file back");

	/* With the real one-second throttle: wait for the change, with a deadline. */
	table_set_recheck_ms(t, 1000);
	expect(t, "k", "four", "before the change");
	write_file(path, "k five\n", 30);
	uint64_t deadline = util_now_ms() + 5000;
	char *v;
	while (strcmp((v = lookup(t, "k")), "five") != 0 &&
	    util_now_ms() < deadline) {
		free(v);
		usleep(20000);
	}
	if (strcmp(v, "five") != 0)
		fail_msg("case \"reload after a second\": got \"%s\"", v);
	free(v);

	table_free(&t);
	unlink(aside);
	free(aside);
	free(path);
}

struct hammer {
	struct table	*t;
	atomic_bool	*stop;
	atomic_uint	 found;
};

static void *
hammer_cb(void *arg)
{
	struct hammer *h = arg;

	while (!atomic_load(h->stop)) {
		char *v = NULL;
		if (table_get_first(h->t, "k", &v) == TABLE_FOUND) {
			atomic_fetch_add(&h->found, 1);
			/* Only whole values: never a torn or freed one. */
			if (strcmp(v, "a") != 0 && strcmp(v, "bb") != 0)
				abort();
		}
		free(v);
		(void)table_has_domain(h->t, "example.org");
	}
	return NULL;
}

static void
test_threads(void **state)
{
	char *path = xasprintf("%s/threads", tmpdir);
	struct config_table ct = { .name = "th", .kind = CONFIG_TABLE_FILE,
	    .path = path };
	const char *err = NULL;
	atomic_bool stop = false;
	struct hammer h[4];
	pthread_t tid[4];

	(void)state;
	write_file(path, "k a\n", 0);
	struct table *t = table_open(&ct, &err);
	assert_non_null(t);
	table_set_recheck_ms(t, 0);
	for (int i = 0; i < 4; i++) {
		h[i].t = t;
		h[i].stop = &stop;
		atomic_init(&h[i].found, 0);
		assert_int_equal(pthread_create(&tid[i], NULL, hammer_cb,
		    &h[i]), 0);
	}
	for (int i = 1; i <= 200; i++)
		write_file(path, i % 2 ? "k bb\nu@example.org\n" : "k a\n", i);
	/*
	 * On a busy machine a thread may not have run at all yet: let every
	 * one find the key at least once (bounded) before stopping them.
	 */
	uint64_t deadline = util_now_ms() + 10000;
	for (int i = 0; i < 4; i++)
		while (atomic_load(&h[i].found) == 0 &&
		    util_now_ms() < deadline)
			usleep(1000);
	atomic_store(&stop, true);
	for (int i = 0; i < 4; i++) {
		pthread_join(tid[i], NULL);
		assert_true(atomic_load(&h[i].found) > 0);
	}
	table_free(&t);
	free(path);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_inline),
		cmocka_unit_test(test_file_format),
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_many_keys),
		cmocka_unit_test(test_reload),
		cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
