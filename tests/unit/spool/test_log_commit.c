/*
 * Unit tests of the spool log's group commit (spool/log.c) on a real file:
 * many threads appending at once each get every record answered exactly
 * once, written before its answer, under a sequence of its own, once in
 * the file; a write that fails answers every record, and none hangs.
 */
#include "spool/spool.h"
#include "spool/spool_private.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
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

enum { THREADS = 12, PER_THREAD = 150, LOG_SIZE = 1 << 20, EPOCH = 3 };

struct appender;

/* One record's answer: rc 2 when it was not in the file at its answer. */
struct answer {
	struct appender	*a;
	pthread_t	 by;		/* the thread that appended it */
	int		 i;
	atomic_int	 calls;
	uint64_t	 seq;
	int		 rc;
};

struct appender {
	struct spool	*sp;
	const char	*dir;		/* the copies' folder */
	dev_t		 dev;
	int		 id;
	bool		 named;		/* spool_log_named after each */
	bool		 check;		/* read the file at each answer */
	atomic_int	 answered;
	struct answer	 ans[PER_THREAD];
	uint64_t	 seqs[PER_THREAD];
	int		 rcs[PER_THREAD];	/* 1: refused, else the answer's */
};

struct find {
	const char	*qid;
	bool		 found;
};

static void
find_cb(const struct spool_logrec *r, void *arg)
{
	struct find *f = arg;

	if (strcmp(r->qid, f->qid) == 0)
		f->found = true;
}

/* Is the record of qid in the log file of dir, among those from seq 1? */
static bool
in_file(const char *dir, const char *qid, unsigned char *img)
{
	char path[256];
	struct find f = { qid, false };
	int fd;

	snprintf(path, sizeof(path), "%s/log", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(util_read_upto(fd, img, LOG_SIZE, 0), LOG_SIZE);
	close(fd);
	(void)spool_log_scan(img, LOG_SIZE, SPOOL_LOG_HDR, SPOOL_LOG_HDR, 1,
	    EPOCH, find_cb, &f, NULL);
	return f.found;
}

/* Records answered on another thread than their appender's. */
static atomic_int elsewhere;

/* The answer for record i of a, on whichever thread wrote it. */
static void
answer_cb(void *arg, int rc, uint64_t seq)
{
	struct answer *an = arg;
	struct appender *a = an->a;
	char qid[32];

	an->seq = seq;
	an->rc = rc;
	if (!pthread_equal(pthread_self(), an->by))
		atomic_fetch_add(&elsewhere, 1);
	if (rc == 0 && a->check) {
		unsigned char *img = xmalloc(LOG_SIZE);

		snprintf(qid, sizeof(qid), "T%dM%d", a->id, an->i);
		if (!in_file(a->dir, qid, img))
			an->rc = 2;
		free(img);
	}
	if (rc == 0 && a->named)
		spool_log_named(a->sp, seq);
	atomic_fetch_add(&an->calls, 1);
	atomic_fetch_add(&a->answered, 1);
}

static void *
appender_main(void *arg)
{
	struct appender *a = arg;
	int expect = 0;

	for (int i = 0; i < PER_THREAD; i++) {
		char qid[32], path[256], body[64];
		struct spool_log_copy c;
		struct spool_log_msg m = { .qid = qid, .received = 1700000000,
		    .sender = "a@example.net", .hdr = "Return-Path: <a>\n",
		    .content = body, .copies = &c, .ncopies = 1 };

		snprintf(qid, sizeof(qid), "T%dM%d", a->id, i);
		snprintf(path, sizeof(path), "%s/%s", a->dir, qid);
		snprintf(body, sizeof(body), "Subject: %d/%d\n\nbody\n", a->id,
		    i);
		m.content_len = strlen(body);
		c = (struct spool_log_copy){ path, "bob@example.org", a->dev };
		a->ans[i] = (struct answer){ .a = a, .by = pthread_self(),
		    .i = i };
		a->rcs[i] = spool_log_append(a->sp, &m, answer_cb, &a->ans[i]);
		expect += a->rcs[i] == 0;
	}
	/* Every record taken is answered, soon: at most 30 s. */
	for (int w = 0; w < 30000 && atomic_load(&a->answered) < expect; w++)
		nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
	for (int i = 0; i < PER_THREAD; i++) {
		if (a->rcs[i] != 0)
			continue;
		a->rcs[i] = atomic_load(&a->ans[i].calls) == 1 ?
		    a->ans[i].rc : 3;
		a->seqs[i] = a->ans[i].seq;
	}
	return NULL;
}

/* THREADS appenders on sp at once, joined. */
static void
run_appenders(struct spool *sp, const char *dir, bool named,
    struct appender *a)
{
	pthread_t t[THREADS];
	struct stat st;

	assert_int_equal(stat(dir, &st), 0);
	for (int i = 0; i < THREADS; i++) {
		a[i] = (struct appender){ .sp = sp, .dir = dir,
		    .dev = st.st_dev, .id = i, .named = named,
		    .check = !named };
		assert_int_equal(pthread_create(&t[i], NULL, appender_main,
		    &a[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		/* No record answered later than its appender saw. */
		for (int j = 0; j < PER_THREAD; j++)
			assert_true(atomic_load(&a[i].ans[j].calls) <= 1);
	}
}

/* A zeroed log file of LOG_SIZE in dir with its header: its fd. */
static int
log_file(const char *dir, struct spool_loghdr *h, int flags)
{
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/log", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, LOG_SIZE), 0);
	*h = (struct spool_loghdr){ .epoch = EPOCH, .seq = 1,
	    .off = SPOOL_LOG_HDR, .size = LOG_SIZE };
	assert_int_equal(spool_log_write_hdr(fd, h), 0);
	if (flags == O_RDWR)
		return fd;
	close(fd);
	fd = open(path, flags | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

struct seen {
	bool	*qids;		/* [THREADS * PER_THREAD] */
	size_t	 n;
};

static void
seen_cb(const struct spool_logrec *r, void *arg)
{
	struct seen *s = arg;
	int t, i;

	assert_int_equal(sscanf(r->qid, "T%dM%d", &t, &i), 2);
	assert_false(s->qids[t * PER_THREAD + i]);
	s->qids[t * PER_THREAD + i] = true;
	s->n++;
}

static void
test_concurrent_appends(void **state)
{
	char tmpl[] = "/tmp/test_log_commit.XXXXXX", path[256];
	const char *dir = mkdtemp(tmpl);
	struct appender *a = xcalloc(THREADS, sizeof(*a));
	bool *used = xcalloc(THREADS * PER_THREAD + 1, sizeof(*used));
	struct seen s = { xcalloc(THREADS * PER_THREAD, sizeof(bool)), 0 };
	struct spool sp = { 0 };
	struct spool_loghdr h;
	unsigned char *img = xmalloc(LOG_SIZE);
	int fd;

	(void)state;
	assert_non_null(dir);
	fd = log_file(dir, &h, O_RDWR);
	sp.log = spool_log_start(&sp, fd, LOG_SIZE, &h);
	/* Not named: pinned, so no checkpoint passes them before the scan. */
	atomic_store(&elsewhere, 0);
	run_appenders(&sp, dir, false, a);
	/* One thread writes a batch and answers the records of the others. */
	assert_true(atomic_load(&elsewhere) > 0);
	/* Every record durable under its own sequence, 1..n, each once. */
	for (int t = 0; t < THREADS; t++)
		for (int i = 0; i < PER_THREAD; i++) {
			uint64_t seq = a[t].seqs[i];

			assert_int_equal(a[t].rcs[i], 0);
			assert_true(seq >= 1 && seq <= THREADS * PER_THREAD);
			assert_false(used[seq]);
			used[seq] = true;
		}
	/* What the file holds, read back by another descriptor. */
	snprintf(path, sizeof(path), "%s/log", dir);
	{
		int rfd = open(path, O_RDONLY | O_CLOEXEC);

		assert_true(rfd >= 0);
		assert_int_equal(util_read_upto(rfd, img, LOG_SIZE, 0),
		    LOG_SIZE);
		close(rfd);
	}
	assert_int_equal(spool_log_scan(img, LOG_SIZE, SPOOL_LOG_HDR,
	    SPOOL_LOG_HDR, 1, EPOCH, seen_cb, &s, NULL),
	    THREADS * PER_THREAD);
	assert_int_equal(s.n, THREADS * PER_THREAD);
	for (int t = 0; t < THREADS; t++)
		for (int i = 0; i < PER_THREAD; i++)
			spool_log_named(&sp, a[t].seqs[i]);
	spool_log_stop(&sp.log);
	unlink(path);
	assert_int_equal(rmdir(dir), 0);
	free(img);
	free(s.qids);
	free(used);
	free(a);
}

/* A log whose writes fail: every record answered -1, or refused (1). */
static void
test_failed_write_answers_all(void **state)
{
	char tmpl[] = "/tmp/test_log_commit.XXXXXX", path[256];
	const char *dir = mkdtemp(tmpl);
	struct appender *a = xcalloc(THREADS, sizeof(*a));
	struct spool sp = { 0 };
	struct spool_loghdr h;
	size_t failed = 0, refused = 0;

	(void)state;
	assert_non_null(dir);
	sp.log = spool_log_start(&sp, log_file(dir, &h, O_RDONLY), LOG_SIZE, &h);
	run_appenders(&sp, dir, true, a);
	for (int t = 0; t < THREADS; t++)
		for (int i = 0; i < PER_THREAD; i++) {
			assert_true(a[t].rcs[i] == -1 || a[t].rcs[i] == 1);
			if (a[t].rcs[i] == -1)
				failed++;
			else
				refused++;
		}
	/* The first batch failed; what came after was refused at once. */
	assert_true(failed >= 1);
	assert_int_equal(failed + refused, THREADS * PER_THREAD);
	spool_log_stop(&sp.log);
	snprintf(path, sizeof(path), "%s/log", dir);
	unlink(path);
	assert_int_equal(rmdir(dir), 0);
	free(a);
}

struct removals {
	struct spool	*sp;
	char		*qids[10];
	size_t		 done;
};

static void *
removals_main(void *arg)
{
	struct removals *r = arg;
	const char *err = NULL;

	r->done = spool_log_removed(r->sp, r->qids, 10, &err);
	return NULL;
}

/*
 * Removals placed near the log's end, the next of which wraps, with no
 * other thread to write the batch before it: the thread placing them
 * writes it, and all ten are recorded (none waits for a batch nobody
 * takes).
 */
static void
test_removals_that_wrap_are_written(void **state)
{
	char tmpl[] = "/tmp/test_log_commit.XXXXXX", path[256];
	const char *dir = mkdtemp(tmpl);
	struct spool sp = { 0 };
	struct spool_loghdr h;
	struct removals r = { .sp = &sp };
	struct timespec ts;
	pthread_t t;
	int fd;

	(void)state;
	assert_non_null(dir);
	fd = log_file(dir, &h, O_RDWR);
	/* An empty log whose next record goes 3 removals from its end. */
	h.off = LOG_SIZE - 3 * SPOOL_LOGREC_REMOVED_MAX;
	assert_int_equal(spool_log_write_hdr(fd, &h), 0);
	sp.log = spool_log_start(&sp, fd, LOG_SIZE, &h);
	sp.dir = (char *)dir;
	for (int i = 0; i < SUB_N; i++)
		sp.fd[i] = -1;
	sp.fd[SUB_ENV] = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(sp.fd[SUB_ENV] >= 0);
	for (int i = 0; i < 10; i++)
		r.qids[i] = xasprintf("R%d", i);
	assert_int_equal(pthread_create(&t, NULL, removals_main, &r), 0);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	if (pthread_timedjoin_np(t, NULL, &ts) != 0)
		fail_msg("the removals still wait after 10 s");
	assert_int_equal(r.done, 10);
	spool_log_stop(&sp.log);
	close(sp.fd[SUB_ENV]);
	for (int i = 0; i < 10; i++)
		free(r.qids[i]);
	snprintf(path, sizeof(path), "%s/log", dir);
	unlink(path);
	assert_int_equal(rmdir(dir), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_concurrent_appends),
		cmocka_unit_test(test_failed_write_answers_all),
		cmocka_unit_test(test_removals_that_wrap_are_written),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
