/*
 * Unit tests of the Maildirs a thread keeps open between deliveries
 * (deliver/maildir_keep.c), on real folders in a mkdtemp dir: a kept
 * Maildir moved, replaced or turned into a symlink to another between two
 * messages is never written behind, whether it was written or linked to; a full
 * cache evicts and still delivers; the descriptors held stay within the
 * thread's and the process's limits, and go with the thread.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"
#include "util/util.h"

#include "mdtest.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static char *tdir;		/* this test's mkdtemp folder */

static int
setup(void **state)
{
	(void)state;
	tdir = mdtest_dir_new("test_maildir_keep");
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	mdtest_dir_free(&tdir);
	deliver_maildir_keep_limit(DELIVER_MD_KEEP_MAX);
	return 0;
}

static const char body[] = "Subject: t\n\nkept\n";

static struct deliver_msg
msg(const char *qid, size_t idx)
{
	return (struct deliver_msg){ .content = body,
	    .content_len = sizeof(body) - 1, .return_path = "bob@example.org",
	    .qid = qid, .rcpt_idx = idx, .received = 1700000000,
	    .hostname = "mx.example" };
}

/* Run cmd in tdir, each '@' in it replaced by md. */
static void
sh(const char *cmd, const char *md)
{
	struct util_buf b = { 0 };

	util_buf_printf(&b, "cd '%s' && ", tdir);
	for (const char *p = cmd; *p != '\0'; p++)
		if (*p == '@')
			util_buf_addstr(&b, md);
		else
			util_buf_add(&b, p, 1);
	if (system(util_buf_cstr(&b)) != 0)
		fail_msg("%s: failed", util_buf_cstr(&b));
	util_buf_clear(&b);
}

enum { NMD = 3 };
static const char *const md_names[NMD] = { "a", "b", "c" };

/* One message for a, b and c: as copies, or one delivery each. */
static void
deliver_abc(const char *qid, bool copies, enum deliver_result r_out[NMD],
    const char *err_out[NMD])
{
	char *folders[NMD];
	size_t idx[NMD];
	struct deliver_rcpt_status st[NMD];

	for (size_t i = 0; i < NMD; i++) {
		folders[i] = xasprintf("%s/%s", tdir, md_names[i]);
		idx[i] = i;
	}
	if (copies) {
		struct deliver_msg m = msg(qid, 0);

		deliver_maildir_copies((const char *const *)folders, idx, NMD,
		    &m, st);
		for (size_t i = 0; i < NMD; i++) {
			r_out[i] = st[i].result;
			err_out[i] = xstrdup(st[i].text);
		}
	} else
		for (size_t i = 0; i < NMD; i++) {
			struct deliver_msg m = msg(qid, i);
			const char *err = "";

			r_out[i] = deliver_maildir(folders[i], &m, &err);
			err_out[i] = xstrdup(r_out[i] == DELIVER_OK ? "" : err);
		}
	for (size_t i = 0; i < NMD; i++)
		free(folders[i]);
}

/*
 * Three Maildirs kept by this thread; between two messages one of them
 * (the one written, one linked to, or one delivered alone but not last)
 * changes: its second copy goes where its folder path leads now, or
 * nowhere, never into what was moved away; the others get theirs.
 */
static void
test_kept_maildirs_follow_changes(void **state)
{
	static const struct {
		const char *name;
		const char *change;	/* shell, in tdir; '@': the folder */
		enum deliver_result want;
		const char *want_err;	/* substring, or NULL */
		int want_md;		/* files under the folder afterwards */
	} cases[] = {
		{ "unchanged", "true", DELIVER_OK, NULL, 2 },
		{ "folder moved, new one made", "mv @ old && mkdir @",
		    DELIVER_OK, NULL, 1 },
		{ "folder moved away", "mv @ old", DELIVER_OK, NULL, 1 },
		{ "new/ replaced", "mv @/new old && mkdir @/new",
		    DELIVER_OK, NULL, 1 },
		{ "folder now a symlink elsewhere",
		    "mv @ old && mkdir @2 && ln -s @2 @", DELIVER_OK, NULL, 1 },
		{ "new/ now a symlink",
		    "mv @/new old && ln -s ../old @/new",
		    DELIVER_TEMPFAIL, "/new", 0 },
		{ "folder removed", "rm -rf @", DELIVER_OK, NULL, 1 },
	};
	static const struct {
		const char *name;
		bool copies;
		size_t which;		/* the Maildir that changes */
	} modes[] = {
		{ "written copy", true, 0 },
		{ "linked copy", true, 1 },
		{ "single, not the last", false, 0 },
		{ "single, the last", false, 2 },
	};

	(void)state;
	for (size_t mo = 0; mo < sizeof(modes) / sizeof(modes[0]); mo++)
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *md = md_names[modes[mo].which], *err[NMD];
		enum deliver_result r[NMD];

		sh("rm -rf a b c a2 b2 c2 old", "");
		deliver_abc("K1", modes[mo].copies, r, err);
		for (size_t j = 0; j < NMD; j++) {
			if (r[j] != DELIVER_OK)
				fail_msg("%s, %s: first copy %zu: %s",
				    modes[mo].name, cases[i].name, j, err[j]);
			free((char *)err[j]);
		}
		sh(cases[i].change, md);
		deliver_abc("K2", modes[mo].copies, r, err);
		for (size_t j = 0; j < NMD; j++) {
			bool me = j == modes[mo].which;
			enum deliver_result want = me ? cases[i].want :
			    DELIVER_OK;

			if (r[j] != want || (me && cases[i].want_err != NULL &&
			    strstr(err[j], cases[i].want_err) == NULL))
				fail_msg("%s, %s: %s got %d \"%s\"",
				    modes[mo].name, cases[i].name,
				    md_names[j], r[j], err[j]);
			if (mdtest_count_files(tdir, md_names[j]) != (me ?
			    cases[i].want_md : 2))
				fail_msg("%s, %s: %d files under %s/",
				    modes[mo].name, cases[i].name,
				    mdtest_count_files(tdir, md_names[j]), md_names[j]);
			free((char *)err[j]);
		}
		/* What was moved away holds the first copy only. */
		if (mdtest_count_files(tdir, "old") > 1)
			fail_msg("%s, %s: old/ got the second copy",
			    modes[mo].name, cases[i].name);
	}
}

/* Maildirs f0 .. f<n-1> under tdir; what each got, in new/. */
static void
many_folders(char **folders, size_t *idx, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		folders[i] = xasprintf("%s/f%zu", tdir, i);
		idx[i] = i;
	}
}

static size_t
new_files(const char *folder)
{
	char *p = xasprintf("%s/new", folder);
	DIR *d = opendir(p);
	struct dirent *de;
	size_t n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	free(p);
	return n;
}

enum { NMANY = 40 };

struct fd_run {
	size_t	base;		/* open before the thread */
	size_t	max_seen;	/* most held between deliveries, over base */
	size_t	last;		/* held after the last delivery, over base */
};

/* Note what this thread keeps now. */
static void
fd_note(struct fd_run *f)
{
	size_t n = mdtest_open_fds() - f->base;

	if (n > f->max_seen)
		f->max_seen = n;
	f->last = n;
}

/*
 * A thread's run: 40 Maildirs one message each, again in reverse, then
 * one message for all 40 at once; every copy is made.
 */
static void *
many_run(void *arg)
{
	struct fd_run *f = arg;
	char *folders[NMANY];
	size_t idx[NMANY];
	struct deliver_rcpt_status st[NMANY];
	const char *err = "";

	many_folders(folders, idx, NMANY);
	for (size_t round = 0; round < 2; round++)
		for (size_t k = 0; k < NMANY; k++) {
			size_t i = round == 0 ? k : NMANY - 1 - k;
			struct deliver_msg m = msg(round == 0 ? "M1" : "M2",
			    i);

			if (deliver_maildir(folders[i], &m, &err) !=
			    DELIVER_OK)
				fail_msg("round %zu, f%zu: %s", round, i, err);
			fd_note(f);
		}
	struct deliver_msg m = msg("M3", 0);
	deliver_maildir_copies((const char *const *)folders, idx, NMANY, &m,
	    st);
	fd_note(f);
	for (size_t i = 0; i < NMANY; i++) {
		if (st[i].result != DELIVER_OK)
			fail_msg("copies, f%zu: %s", i, st[i].text);
		assert_int_equal(new_files(folders[i]), 3);
		free(folders[i]);
	}
	return NULL;
}

static struct fd_run
many_in_a_thread(void)
{
	struct fd_run f = { .base = mdtest_open_fds() };
	pthread_t t;

	assert_int_equal(pthread_create(&t, NULL, many_run, &f), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	/* The thread's kept Maildirs went with it. */
	assert_int_equal(mdtest_open_fds(), f.base);
	return f;
}

/*
 * More Maildirs than a thread keeps: the least recently used go, every
 * copy is still made, and the thread never holds more than its share.
 */
static void
test_full_cache_evicts_and_delivers(void **state)
{
	struct fd_run f;

	(void)state;
	f = many_in_a_thread();
	if (f.max_seen > DELIVER_MD_THREAD_FDS)
		fail_msg("kept %zu descriptors, want <= %d", f.max_seen,
		    DELIVER_MD_THREAD_FDS);
	/* It keeps what it may: the last Maildirs it delivered to. */
	if (f.last < DELIVER_MD_THREAD_FDS / 2)
		fail_msg("kept only %zu descriptors", f.last);
}

/* The process's limit binds every thread's cache; 0 keeps none. */
static void
test_process_limit(void **state)
{
	static const size_t limits[] = { 5, 1, 0 };
	struct fd_run f;

	(void)state;
	for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
		deliver_maildir_keep_limit(limits[i]);
		sh("rm -rf f*", "");
		f = many_in_a_thread();
		if (f.max_seen > limits[i])
			fail_msg("limit %zu: kept %zu descriptors", limits[i],
			    f.max_seen);
	}
}

/* A limit lowered while Maildirs are kept: the next delivery sheds them. */
static void *
lowered_run(void *arg)
{
	struct fd_run *f = arg;
	char *folders[NMANY];
	size_t idx[NMANY];
	const char *err = "";

	many_folders(folders, idx, 8);
	for (size_t i = 0; i < 8; i++) {
		struct deliver_msg m = msg("L1", i);

		assert_int_equal(deliver_maildir(folders[i], &m, &err),
		    DELIVER_OK);
	}
	fd_note(f);
	deliver_maildir_keep_limit(2);
	struct deliver_msg m = msg("L2", 0);
	assert_int_equal(deliver_maildir(folders[0], &m, &err), DELIVER_OK);
	f->last = mdtest_open_fds() - f->base;
	for (size_t i = 0; i < 8; i++)
		free(folders[i]);
	return NULL;
}

static void
test_lowered_limit_sheds(void **state)
{
	struct fd_run f;
	pthread_t t;

	(void)state;
	f = (struct fd_run){ .base = mdtest_open_fds() };
	assert_int_equal(pthread_create(&t, NULL, lowered_run, &f), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	if (f.max_seen < 8 || f.last > 2)
		fail_msg("kept %zu, then %zu after lowering the limit to 2",
		    f.max_seen, f.last);
	assert_int_equal(mdtest_open_fds(), f.base);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
		    test_kept_maildirs_follow_changes, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_full_cache_evicts_and_delivers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_process_limit, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_lowered_limit_sheds,
		    setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
