/*
 * Unit tests of deliver/maildir.c on real folders in a mkdtemp dir:
 * layout, byte-exact content, exactly-once on retry (new/ and cur/), and
 * hostile folders (symlinks, files in the path), a reader watching new/
 * never seeing a partial file, the tmp/ sweep, and several recipients'
 * copies as links of one file.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"
#include "util/util.h"

#include "mdtest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static char *tdir;		/* this test's mkdtemp folder */
static char *content_path;	/* tdir/content */
static struct util_buf content;	/* what content_path holds */

static void
put_file(const char *path, const void *p, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static char *
read_path(const char *path, size_t *len_out)
{
	FILE *f = fopen(path, "rb");
	struct util_buf b = { 0 };
	char buf[65536];
	size_t n;

	assert_non_null(f);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		util_buf_add(&b, buf, n);
	fclose(f);
	*len_out = b.len;
	util_buf_cstr(&b);
	return b.data;
}

/* Names in folder/sub, joined by ' ' in readdir order (tests use <= 1). */
static size_t
list_dir(const char *folder, const char *sub, char *name_out, size_t sz)
{
	char *p = xasprintf("%s/%s", folder, sub);
	DIR *d = opendir(p);
	struct dirent *de;
	size_t n = 0;

	assert_non_null(d);
	if (name_out != NULL)
		name_out[0] = '\0';
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (n++ == 0 && name_out != NULL)
			util_strlcpy(name_out, de->d_name, sz);
	}
	closedir(d);
	free(p);
	return n;
}

static int
setup(void **state)
{
	(void)state;
	tdir = mdtest_dir_new("test_deliver");
	content_path = xasprintf("%s/content", tdir);
	util_buf_reset(&content);
	util_buf_addstr(&content, "Received: from x\nSubject: t\n\n");
	/* Large enough to need several copy rounds, with every byte value. */
	for (size_t i = 0; i < 300000; i++) {
		char c = (char)(i * 7 % 256);
		util_buf_add(&content, &c, 1);
	}
	put_file(content_path, content.data, content.len);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	mdtest_dir_free(&tdir);
	free(content_path);
	util_buf_clear(&content);
	return 0;
}

static struct deliver_msg
msg(const char *qid, size_t idx)
{
	return (struct deliver_msg){ .content_path = content_path,
	    .return_path = "bob@example.org", .qid = qid, .rcpt_idx = idx,
	    .received = 1700000000, .hostname = "mx/1:a.example" };
}

static void
assert_delivered(const char *folder, const char *want_rp)
{
	char name[512], *p, *got, *want;
	size_t len;

	assert_int_equal(list_dir(folder, "tmp", NULL, 0), 0);
	assert_int_equal(list_dir(folder, "cur", NULL, 0), 0);
	assert_int_equal(list_dir(folder, "new", name, sizeof(name)), 1);
	p = xasprintf("%s/new/%s", folder, name);
	got = read_path(p, &len);
	want = xasprintf("Return-Path: <%s>\n", want_rp);
	size_t hl = strlen(want);
	if (len != hl + content.len || memcmp(got, want, hl) != 0 ||
	    memcmp(got + hl, content.data, content.len) != 0)
		fail_msg("%s: content differs (len %zu, want %zu)", p, len,
		    hl + content.len);
	free(want);
	free(got);
	free(p);
}

static void
test_maildir_creates_and_writes(void **state)
{
	char *folder = xasprintf("%s/a/b/Maildir", tdir), name[512];
	struct deliver_msg m = msg("Q1", 0);
	const char *err = NULL;
	struct stat st;

	(void)state;
	if (deliver_maildir(folder, &m, &err) != DELIVER_OK)
		fail_msg("deliver: %s", err);
	assert_delivered(folder, "bob@example.org");
	char *p = xasprintf("%s/cur", folder);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	free(p);
	/* The name: time.unique.host, '/' and ':' escaped per the spec. */
	list_dir(folder, "new", name, sizeof(name));
	assert_string_equal(name, "1700000000.Q1_0.mx\\0571\\072a.example");

	/* The null sender, another recipient: a second file. */
	char *f2 = xasprintf("%s/other", tdir);
	m = msg("Q1", 1);
	m.return_path = "";
	assert_int_equal(deliver_maildir(f2, &m, &err), DELIVER_OK);
	assert_delivered(f2, "");
	free(f2);

	/* A control byte in the sender cannot add a header line. */
	f2 = xasprintf("%s/third", tdir);
	m = msg("Q1", 2);
	m.return_path = "a@b>\nX-Evil: 1\r\x7f";
	assert_int_equal(deliver_maildir(f2, &m, &err), DELIVER_OK);
	assert_delivered(f2, "a@b>?X-Evil: 1??");
	free(f2);
	free(folder);
}

static void
test_maildir_exactly_once(void **state)
{
	char *folder = xasprintf("%s/Maildir", tdir), name[512];
	struct deliver_msg m = msg("Q2", 3);
	const char *err = NULL;

	(void)state;
	assert_int_equal(deliver_maildir(folder, &m, &err), DELIVER_OK);
	/* A retry (crash before the done-record): nothing new. */
	assert_int_equal(deliver_maildir(folder, &m, &err), DELIVER_OK);
	assert_delivered(folder, "bob@example.org");

	/* The reader moved it to cur/ with flags: still nothing new. */
	list_dir(folder, "new", name, sizeof(name));
	char *from = xasprintf("%s/new/%s", folder, name);
	char *to = xasprintf("%s/cur/%s:2,S", folder, name);
	assert_int_equal(rename(from, to), 0);
	assert_int_equal(deliver_maildir(folder, &m, &err), DELIVER_OK);
	assert_int_equal(list_dir(folder, "new", NULL, 0), 0);
	assert_int_equal(list_dir(folder, "cur", NULL, 0), 1);
	assert_int_equal(list_dir(folder, "tmp", NULL, 0), 0);

	/* Moved to cur/ without info: same. */
	char *to2 = xasprintf("%s/cur/%s", folder, name);
	assert_int_equal(rename(to, to2), 0);
	assert_int_equal(deliver_maildir(folder, &m, &err), DELIVER_OK);
	assert_int_equal(list_dir(folder, "new", NULL, 0), 0);

	/* A name that merely starts like ours is someone else's. */
	char *other = xasprintf("%s/cur/%s0:2,", folder, name);
	assert_int_equal(rename(to2, other), 0);
	assert_int_equal(deliver_maildir(folder, &m, &err), DELIVER_OK);
	assert_int_equal(list_dir(folder, "new", NULL, 0), 1);

	/* A tmp/ leftover of a crash mid-write is replaced, not kept. */
	m = msg("Q3", 0);
	char *tmpf = xasprintf("%s/tmp/1700000000.Q3_0.mx\\0571\\072a.example",
	    folder);
	put_file(tmpf, "junk", 4);
	assert_int_equal(deliver_maildir(folder, &m, &err), DELIVER_OK);
	assert_int_equal(list_dir(folder, "tmp", NULL, 0), 0);
	assert_int_equal(list_dir(folder, "new", NULL, 0), 2);
	free(tmpf);
	free(other);
	free(to2);
	free(to);
	free(from);
	free(folder);
}

static void
test_maildir_hostile_folders(void **state)
{
	static const struct {
		const char *name;
		const char *setup;	/* shell, run in tdir */
		const char *folder;	/* relative to tdir */
		enum deliver_result want;
		const char *want_err;	/* substring */
	} cases[] = {
		{ "folder is a file", "echo x > f", "f",
		    DELIVER_TEMPFAIL, "Not a directory" },
		{ "file in the path", "echo x > f", "f/Maildir",
		    DELIVER_TEMPFAIL, "Not a directory" },
		{ "new/ is a symlink", "mkdir -p md/tmp md/cur elsewhere && "
		    "ln -s ../elsewhere md/new", "md", DELIVER_TEMPFAIL,
		    "md/new): is a symbolic link, which postern does not "
		    "follow" },
		{ "tmp/ is a file", "mkdir -p md && echo x > md/tmp", "md",
		    DELIVER_TEMPFAIL, "md/tmp): Not a directory" },
		{ "dangling symlink", "ln -s /nonexistent/x dl", "dl",
		    DELIVER_TEMPFAIL, "dl" },
		{ "empty folder", "true", "", DELIVER_PERMFAIL, "no folder" },
		/* The folder that failed, on the Maildir's way. */
		{ "cannot create", "true", "/proc/postern-test/Maildir",
		    DELIVER_TEMPFAIL, "mkdir(/proc/postern-test): " },
	};
	struct deliver_msg m = msg("Q4", 0);

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *cmd = xasprintf("cd '%s' && rm -rf f real link md "
		    "elsewhere dl && %s", tdir, cases[i].setup);
		assert_int_equal(system(cmd), 0);
		free(cmd);
		char *folder = cases[i].folder[0] == '/' ?
		    xstrdup(cases[i].folder) : cases[i].folder[0] == '\0' ?
		    xstrdup("") : xasprintf("%s/%s", tdir, cases[i].folder);
		const char *err = "(none)";
		enum deliver_result r = deliver_maildir(folder, &m, &err);
		if (r != cases[i].want || strstr(err, cases[i].want_err) == NULL)
			fail_msg("case \"%s\": got %d \"%s\", want %d \"%s\"",
			    cases[i].name, r, err, cases[i].want,
			    cases[i].want_err);
		free(folder);
		/* Nothing was written through a planted symlink. */
		cmd = xasprintf("cd '%s' && find real elsewhere -mindepth 1 "
		    "2>/dev/null | grep -q .", tdir);
		if (system(cmd) == 0)
			fail_msg("case \"%s\": wrote through a symlink",
			    cases[i].name);
		free(cmd);
	}
}

/*
 * A folder that is a symlink to a Maildir (moved to another disk and
 * linked back) is delivered into, afresh and then through the kept one;
 * a retry finds the copy there.
 */
static void
test_maildir_folder_symlink_is_followed(void **state)
{
	char *link = xasprintf("%s/link", tdir), *real = xasprintf("%s/real",
	    tdir);
	char *cmd = xasprintf("cd '%s' && mkdir real && ln -s real link",
	    tdir);
	struct deliver_msg a = msg("Q6", 0), b = msg("Q6", 1);
	const char *err = "(none)";

	(void)state;
	assert_int_equal(system(cmd), 0);
	for (int round = 0; round < 2; round++) {
		if (deliver_maildir(link, &a, &err) != DELIVER_OK ||
		    deliver_maildir(link, &b, &err) != DELIVER_OK)
			fail_msg("round %d: %s", round, err);
		a.fresh = b.fresh = false;	/* the retry finds both */
	}
	assert_int_equal(list_dir(real, "new", NULL, 0), 2);
	assert_int_equal(list_dir(real, "tmp", NULL, 0), 0);
	free(cmd);
	free(real);
	free(link);
}

/*
 * A thread keeps its last Maildir open between deliveries; each change
 * to it between two deliveries is seen: the second copy goes where the
 * folder path leads now, or nowhere, never into what was moved away.
 */
static void
test_maildir_kept_folder_follows_changes(void **state)
{
	static const struct {
		const char *name;
		const char *change;	/* shell, in tdir, after one copy */
		enum deliver_result want;
		const char *want_err;	/* substring, or NULL */
		int want_md;		/* files under md/ afterwards */
	} cases[] = {
		{ "unchanged", "true", DELIVER_OK, NULL, 2 },
		{ "folder moved, new one made", "mv md old && mkdir md",
		    DELIVER_OK, NULL, 1 },
		{ "folder moved away", "mv md old", DELIVER_OK, NULL, 1 },
		{ "new/ replaced", "mv md/new old && mkdir md/new",
		    DELIVER_OK, NULL, 1 },
		{ "folder now a symlink elsewhere",
		    "mv md old && mkdir md2 && ln -s md2 md", DELIVER_OK, NULL,
		    1 },
		{ "new/ now a symlink", "mv md/new old && ln -s ../old md/new",
		    DELIVER_TEMPFAIL, "md/new", 0 },
		{ "folder removed", "rm -rf md", DELIVER_OK, NULL, 1 },
	};
	char *folder = xasprintf("%s/md", tdir);

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct deliver_msg a = msg("K1", i), b = msg("K2", i);
		const char *err = "(none)";
		char *cmd = xasprintf("cd '%s' && rm -rf md md2 old", tdir);

		assert_int_equal(system(cmd), 0);
		free(cmd);
		assert_int_equal(deliver_maildir(folder, &a, &err),
		    DELIVER_OK);
		cmd = xasprintf("cd '%s' && %s", tdir, cases[i].change);
		assert_int_equal(system(cmd), 0);
		free(cmd);
		enum deliver_result r = deliver_maildir(folder, &b, &err);
		if (r != cases[i].want || (cases[i].want_err != NULL &&
		    strstr(err, cases[i].want_err) == NULL))
			fail_msg("case \"%s\": got %d \"%s\"", cases[i].name,
			    r, err);
		if (mdtest_count_files(tdir, "md") != cases[i].want_md)
			fail_msg("case \"%s\": %d files under md/, want %d",
			    cases[i].name, mdtest_count_files(tdir, "md"),
			    cases[i].want_md);
		/* What was moved away holds the first copy only. */
		if (mdtest_count_files(tdir, "old") > 1)
			fail_msg("case \"%s\": old/ got the second copy",
			    cases[i].name);
	}
	free(folder);
}

static void
test_maildir_missing_content(void **state)
{
	char *folder = xasprintf("%s/Maildir", tdir);
	struct deliver_msg m = msg("Q5", 0);
	const char *err = NULL;

	(void)state;
	m.content_path = "/nonexistent/content";
	assert_int_equal(deliver_maildir(folder, &m, &err), DELIVER_TEMPFAIL);
	assert_non_null(strstr(err, "/nonexistent/content"));
	assert_int_equal(list_dir(folder, "tmp", NULL, 0), 0);
	assert_int_equal(list_dir(folder, "new", NULL, 0), 0);
	free(folder);
}

/*
 * A file-size limit (a quota's stand-in) cuts the first write short and
 * fails the next: a temporary failure naming the file, nothing left in
 * tmp/ or new/.  Both content sources: in memory and the spool file.
 */
static void
test_maildir_short_write(void **state)
{
	char *folder = xasprintf("%s/Maildir", tdir);
	int status;
	pid_t pid;

	(void)state;
	pid = fork();
	assert_true(pid != -1);
	if (pid == 0) {
		struct rlimit rl = { 100, 100 };
		struct deliver_msg m = msg("Q7", 0);
		const char *err = "";

		signal(SIGXFSZ, SIG_IGN);
		if (setrlimit(RLIMIT_FSIZE, &rl) == -1)
			_exit(2);
		if (deliver_maildir(folder, &m, &err) != DELIVER_TEMPFAIL ||
		    strstr(err, "write(") == NULL ||
		    strstr(err, "File too large") == NULL)
			_exit(3);
		m = msg("Q7", 1);
		m.content = content.data;
		m.content_len = content.len;
		if (deliver_maildir(folder, &m, &err) != DELIVER_TEMPFAIL ||
		    strstr(err, "File too large") == NULL)
			_exit(4);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(list_dir(folder, "tmp", NULL, 0), 0);
	assert_int_equal(list_dir(folder, "new", NULL, 0), 0);
	free(folder);
}

/*
 * The reader's guarantee the write order keeps: a name in new/ is always
 * the whole file.  A child polls new/ while 30 large copies arrive and
 * fails on any name whose size is short.
 */
static void
test_maildir_reader_never_sees_partial(void **state)
{
	char *folder = xasprintf("%s/Maildir", tdir);
	char *newdir = xasprintf("%s/new", folder);
	off_t want = (off_t)(strlen("Return-Path: <bob@example.org>\n") +
	    content.len);
	struct deliver_msg m = msg("Q6", 0);
	const char *err = NULL;
	char qid[16];
	int status;
	pid_t pid;

	(void)state;
	assert_int_equal(deliver_maildir(folder, &m, &err), DELIVER_OK);
	pid = fork();
	assert_true(pid != -1);
	if (pid == 0) {
		/* Bounded: 20 s at most, then the parent has long finished. */
		time_t end = time(NULL) + 20;
		size_t whole = 0;

		while (time(NULL) < end && whole < 31) {
			DIR *d = opendir(newdir);
			struct dirent *de;
			struct stat st;

			if (d == NULL)
				_exit(2);
			whole = 0;
			while ((de = readdir(d)) != NULL) {
				if (de->d_name[0] == '.' || fstatat(dirfd(d),
				    de->d_name, &st, 0) == -1)
					continue;
				if (st.st_size != want)
					_exit(1);
				whole++;
			}
			closedir(d);
		}
		_exit(whole == 31 ? 0 : 3);
	}
	for (int i = 1; i <= 30; i++) {
		snprintf(qid, sizeof(qid), "Q6x%d", i);
		m = msg(qid, 0);
		if (deliver_maildir(folder, &m, &err) != DELIVER_OK)
			fail_msg("deliver %d: %s", i, err);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) != 0)
		fail_msg("reader: %s", WEXITSTATUS(status) == 1 ?
		    "saw a partial file in new/" : "did not see all 31");
	assert_int_equal(list_dir(folder, "tmp", NULL, 0), 0);
	free(newdir);
	free(folder);
}

/* A file in folder/sub aged by age_s; its path (malloc'd). */
static char *
put_aged(const char *folder, const char *sub, const char *name, long age_s)
{
	char *p = xasprintf("%s/%s/%s", folder, sub, name);
	struct timespec ts[2] = { { .tv_sec = time(NULL) - age_s },
	    { .tv_sec = time(NULL) - age_s } };

	put_file(p, "x\n", 2);
	assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
	return p;
}

/*
 * The tmp/ sweep removes files untouched for 36 hours once the folder is
 * in use, but never the name a delivery of ours is writing, however old.
 */
static void
test_maildir_sweep_spares_busy_names(void **state)
{
	char *folder = xasprintf("%s/sw", tdir), *cmd;
	struct deliver_md_busy b;

	(void)state;
	cmd = xasprintf("mkdir -p '%s/tmp' '%s/new' '%s/cur'", folder, folder,
	    folder);
	assert_int_equal(system(cmd), 0);
	char *stale = put_aged(folder, "tmp", "stale", 37 * 3600);
	char *busy = put_aged(folder, "tmp", "busy", 37 * 3600);
	char *young = put_aged(folder, "tmp", "young", 35 * 3600);
	char *in_new = put_aged(folder, "new", "old", 40 * 3600);
	deliver_maildir_sweeper_start();
	deliver_md_busy_enter(&b, folder, "busy");	/* in use: due now */
	for (int i = 0; i < 1000 && access(stale, F_OK) == 0; i++)
		usleep(10000);				/* 10 s at most */
	assert_int_equal(access(stale, F_OK), -1);
	assert_int_equal(access(busy, F_OK), 0);
	assert_int_equal(access(young, F_OK), 0);
	assert_int_equal(access(in_new, F_OK), 0);
	deliver_md_busy_leave(&b);
	deliver_maildir_sweeper_stop();
	free(stale);
	free(busy);
	free(young);
	free(in_new);
	free(cmd);
	free(folder);
}

/* ---- canonical DATA from content pushed in pieces ---- */

static int
canon_put_cb(void *arg, const void *p, size_t n)
{
	util_buf_add(arg, p, n);
	return 0;
}

/*
 * deliver_canon_feed() makes the very bytes deliver_content_stream()
 * makes from the whole content (no rewrites), however the content is cut:
 * in two at every point, and one octet at a time.
 */
static void
test_canon_push_matches_stream(void **state)
{
	char long_line[3100], long_dot[1600];
	const struct {
		const char	*label;
		const char	*content;
	} cases[] = {
		{ "plain", "Subject: a\n\nbody\n" },
		{ "dots", "Subject: d\n\n.\n..\n...x\n.y\nlast .\n" },
		{ "dot at the end", "Subject: d\n\n." },
		{ "no final newline", "Subject: d\n\nlast" },
		{ "CRLF and bare CR", "Subject: c\r\n\r\na\r.\rb\r\n\r\r\ny" },
		{ "CR at the end", "Subject: c\n\nend\r" },
		{ "long line", long_line },
		{ "long line with a dot", long_dot },
		{ "empty", "" },
	};

	(void)state;
	memset(long_line, 'x', sizeof(long_line));
	memcpy(long_line, "S: l\n\n", 6);
	memcpy(long_line + sizeof(long_line) - 2, "\n", 2);
	memset(long_dot, 'y', sizeof(long_dot));
	memcpy(long_dot, "S: l\n\n.", 7);
	memcpy(long_dot + sizeof(long_dot) - 2, "\n", 2);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *c = cases[i].content, *err = NULL;
		size_t len = strlen(c);
		struct deliver_msg m = { .content = c, .content_len = len };
		struct util_buf want = { 0 }, got = { 0 };
		struct deliver_canon k;

		assert_int_equal(deliver_content_stream(&m, NULL, canon_put_cb,
		    &want, &err), 0);
		for (size_t cut = 0; cut <= len + 1; cut++) {
			util_buf_reset(&got);
			deliver_canon_init(&k, canon_put_cb, &got);
			if (cut <= len) {
				assert_int_equal(deliver_canon_feed(&k, c, cut),
				    0);
				assert_int_equal(deliver_canon_feed(&k, c + cut,
				    len - cut), 0);
			} else {
				for (size_t j = 0; j < len; j++)
					assert_int_equal(deliver_canon_feed(&k,
					    c + j, 1), 0);
			}
			assert_int_equal(deliver_canon_end(&k), 0);
			if (got.len != want.len || memcmp(got.data, want.data,
			    got.len) != 0)
				fail_msg("case \"%s\" cut %zu: got %zu octets "
				    "\"%.60s\", want %zu \"%.60s\"",
				    cases[i].label, cut, got.len,
				    util_buf_cstr(&got), want.len,
				    util_buf_cstr(&want));
		}
		util_buf_clear(&want);
		util_buf_clear(&got);
	}
}

#define NCOPIES	10

/* The one file in folder/new/ (asserted), whole; its stat in *st. */
static void
copy_stat(const char *folder, const char *qid, size_t idx, struct stat *st)
{
	char name[512], *p, *want;

	assert_delivered(folder, "bob@example.org");
	list_dir(folder, "new", name, sizeof(name));
	/* Each recipient's copy has its own name, from qid and index. */
	want = xasprintf("1700000000.%s_%zu.", qid, idx);
	if (strncmp(name, want, strlen(want)) != 0)
		fail_msg("%s: copy named %s, want %s...", folder, name, want);
	p = xasprintf("%s/new/%s", folder, name);
	assert_int_equal(stat(p, st), 0);
	free(p);
	free(want);
}

/* Maildirs prefix0 .. prefix9 under tdir. */
static void
copies_folders(char *folders[NCOPIES], size_t idx[NCOPIES],
    const char *prefix)
{
	for (size_t i = 0; i < NCOPIES; i++) {
		folders[i] = xasprintf("%s/%s%zu/Maildir", tdir, prefix, i);
		idx[i] = i;
	}
}

static void
copies_free(char *folders[NCOPIES])
{
	for (size_t i = 0; i < NCOPIES; i++)
		free(folders[i]);
}

/*
 * Ten Maildirs on one file system, one message: one file linked into
 * each new/ under its recipient's name; a folder that cannot be made
 * fails alone.
 */
static void
test_maildir_copies_share_one_file(void **state)
{
	char *folders[NCOPIES];
	size_t idx[NCOPIES];
	struct deliver_rcpt_status st[NCOPIES];
	struct deliver_msg m = msg("Q9", 0);
	struct stat first, sb;

	(void)state;
	copies_folders(folders, idx, "u");
	deliver_maildir_copies((const char *const *)folders, idx, NCOPIES,
	    &m, st);
	for (size_t i = 0; i < NCOPIES; i++) {
		assert_int_equal(st[i].result, DELIVER_OK);
		copy_stat(folders[i], "Q9", i, i == 0 ? &first : &sb);
		if (i > 0 && sb.st_ino != first.st_ino)
			fail_msg("copy %zu: inode %ju, want %ju", i,
			    (uintmax_t)sb.st_ino, (uintmax_t)first.st_ino);
	}
	assert_int_equal(first.st_nlink, NCOPIES);
	copies_free(folders);

	/* The first folder is a file: the nine others still share one. */
	copies_folders(folders, idx, "w");
	char *w0 = xasprintf("%s/w0", tdir);
	put_file(w0, "x", 1);
	free(w0);
	m = msg("QB", 0);
	deliver_maildir_copies((const char *const *)folders, idx, NCOPIES,
	    &m, st);
	assert_int_equal(st[0].result, DELIVER_TEMPFAIL);
	assert_non_null(strstr(st[0].text, "w0"));
	for (size_t i = 1; i < NCOPIES; i++) {
		assert_int_equal(st[i].result, DELIVER_OK);
		copy_stat(folders[i], "QB", i, &sb);
		assert_int_equal(sb.st_nlink, NCOPIES - 1);
	}
	copies_free(folders);
}

/*
 * A retry after a crash in the middle: the copies found are kept as they
 * are and the others made, each recipient exactly once.
 */
static void
test_maildir_copies_retry_exactly_once(void **state)
{
	char *folders[NCOPIES];
	size_t idx[NCOPIES];
	struct deliver_rcpt_status st[NCOPIES];
	struct deliver_msg m = msg("QA", 0);
	struct stat a, b, sb;

	(void)state;
	copies_folders(folders, idx, "v");
	/* The first attempt made copies 0 to 4, then the process died. */
	deliver_maildir_copies((const char *const *)folders, idx, 5, &m, st);
	deliver_maildir_copies((const char *const *)folders, idx, NCOPIES,
	    &m, st);
	for (size_t i = 0; i < NCOPIES; i++) {
		assert_int_equal(st[i].result, DELIVER_OK);
		copy_stat(folders[i], "QA", i, i == 0 ? &a : i == 5 ? &b : &sb);
		if (i != 0 && i != 5 && sb.st_ino != (i < 5 ? a : b).st_ino)
			fail_msg("copy %zu: not a link of its attempt's file",
			    i);
	}
	assert_int_not_equal(a.st_ino, b.st_ino);
	assert_int_equal(a.st_nlink, 5);
	assert_int_equal(b.st_nlink, 5);
	/* A reader moved copy 7 to cur/: a third attempt adds nothing. */
	char name[512];
	list_dir(folders[7], "new", name, sizeof(name));
	char *from = xasprintf("%s/new/%s", folders[7], name);
	char *to = xasprintf("%s/cur/%s:2,S", folders[7], name);
	assert_int_equal(rename(from, to), 0);
	deliver_maildir_copies((const char *const *)folders, idx, NCOPIES,
	    &m, st);
	for (size_t i = 0; i < NCOPIES; i++) {
		assert_int_equal(st[i].result, DELIVER_OK);
		assert_int_equal(list_dir(folders[i], "new", NULL, 0) +
		    list_dir(folders[i], "cur", NULL, 0), 1);
	}
	free(to);
	free(from);
	copies_free(folders);
}

/*
 * Many recipients never hold many descriptors: the Maildirs are opened
 * one after the other, not all at once (the server budgets seven per
 * delivery thread besides the Maildirs the thread keeps open).
 */
static void
test_maildir_copies_few_descriptors(void **state)
{
	enum { N = 60 };
	char *folders[N];
	size_t idx[N];
	struct deliver_rcpt_status st[N];
	struct deliver_msg m = msg("QF", 0);
	struct rlimit old, low;

	(void)state;
	for (size_t i = 0; i < N; i++) {
		folders[i] = xasprintf("%s/f%zu/Maildir", tdir, i);
		idx[i] = i;
	}
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = mdtest_open_fds() + DELIVER_MD_THREAD_FDS + 7;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	deliver_maildir_copies((const char *const *)folders, idx, N, &m, st);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	for (size_t i = 0; i < N; i++) {
		if (st[i].result != DELIVER_OK)
			fail_msg("copy %zu: %s", i, st[i].text);
		free(folders[i]);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_maildir_creates_and_writes,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_maildir_exactly_once,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_maildir_hostile_folders,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_maildir_folder_symlink_is_followed, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_maildir_kept_folder_follows_changes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_maildir_missing_content,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_maildir_short_write,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_maildir_reader_never_sees_partial, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_maildir_sweep_spares_busy_names, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_maildir_copies_share_one_file, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_maildir_copies_retry_exactly_once, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_maildir_copies_few_descriptors, setup, teardown),
		cmocka_unit_test(test_canon_push_matches_stream),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
