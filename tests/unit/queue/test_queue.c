/*
 * Unit tests of queue/: end to end over a real spool and real Maildirs in a
 * mkdtemp folder: recovery, exactly once after a simulated crash, duplicate
 * submits, deferral on a temporary failure, permanent failures; the
 * scheduler's math (backoff, jitter bounds, lifetime), DSNs against golden
 * files (data/NAME.out), status persisted across a restart, bounces, delay
 * warnings, per-destination concurrency, hold/release/delete/flush and the
 * control socket.  UPDATE_GOLDEN=1 rewrites the golden files.
 */
#include "queue/queue.h"
#include "queue/queue_private.h"
#include "config/config.h"
#include "deliver/deliver.h"
#include "spool/spool.h"
#include "util/util.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static char *tdir;
static char *spooldir;
static struct spool *sp;
static int64_t commit_received = 1700000000;	/* epoch s of commit() */
static const char *commit_sender = "from@example.org";

static int
setup(void **state)
{
	char tmpl[] = "/tmp/test_queue.XXXXXX";
	const char *err = NULL;

	(void)state;
	assert_non_null(mkdtemp(tmpl));
	tdir = xstrdup(tmpl);
	spooldir = xasprintf("%s/spool", tdir);
	sp = spool_open(spooldir, &err);
	if (sp == NULL)
		fail_msg("spool_open: %s", err);
	return 0;
}

static int
teardown(void **state)
{
	char *cmd = xasprintf("rm -rf '%s'", tdir);

	(void)state;
	spool_close(&sp);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	free(spooldir);
	free(tdir);
	return 0;
}

static size_t
count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static size_t
count_sub(const char *a, const char *b)
{
	char *p = xasprintf("%s/%s", a, b);
	size_t n = count_entries(p);

	free(p);
	return n;
}

static void
assert_spool_empty(void)
{
	static const char *const subs[] = { "tmp", "msg", "env", "done" };

	for (size_t i = 0; i < 4; i++)
		if (count_sub(spooldir, subs[i]) != 0)
			fail_msg("spool %s/ has %zu entries, want 0", subs[i],
			    count_sub(spooldir, subs[i]));
}

/* Commit a message; rcpts are (action, arg) pairs, NULL-terminated. */
static void
commit(char qid_out[SPOOL_QID_MAX], const char *const *rcpts)
{
	struct spool_env e = { 0 };
	const char *err = NULL;
	struct spool_msg *m;
	char body[128];

	spool_new_qid(sp, qid_out);
	util_strlcpy(e.qid, qid_out, sizeof(e.qid));
	e.sid = xstrdup("S1");
	e.sender = xstrdup(commit_sender);
	e.received = commit_received;
	for (size_t i = 0; rcpts[i] != NULL; i += 2)
		spool_env_add_rcpt(&e, "to@example.org", rcpts[i],
		    rcpts[i + 1]);
	snprintf(body, sizeof(body), "Subject: %s\n\nhello\n", qid_out);
	e.size = strlen(body);
	m = spool_msg_new(sp, qid_out);
	if (spool_msg_write(m, body, strlen(body), &err) == -1 ||
	    spool_msg_commit(m, &e, &err) == -1)
		fail_msg("commit: %s", err);
	spool_msg_free(&m);
	spool_env_clear(&e);
}

static void
test_queue_end_to_end(void **state)
{
	char *a = xasprintf("%s/a/Maildir", tdir);
	char *b = xasprintf("%s/b/Maildir", tdir);
	const char *const rcpts[] = { "maildir", a, "maildir", b, "discard",
	    NULL, NULL };
	char qids[3][SPOOL_QID_MAX];
	struct queue *q;

	(void)state;
	for (int i = 0; i < 3; i++)
		commit(qids[i], rcpts);
	q = queue_new(sp, "mx.test", 3);
	queue_recover(q);
	queue_drain(q);
	assert_int_equal(count_sub(a, "new"), 3);
	assert_int_equal(count_sub(b, "new"), 3);
	assert_int_equal(count_sub(a, "tmp"), 0);
	assert_spool_empty();
	/* Each file is its own message. */
	for (int i = 0; i < 3; i++) {
		char *p = xasprintf("%s/new/1700000000.%s_0.mx.test", a,
		    qids[i]);
		struct stat st;
		if (stat(p, &st) == -1)
			fail_msg("message %d: %s missing", i, p);
		free(p);
	}
	queue_free(&q);
	assert_null(q);
	free(a);
	free(b);
}

static void
test_queue_exactly_once_after_crash(void **state)
{
	char *a = xasprintf("%s/a", tdir), *b = xasprintf("%s/b", tdir);
	char *c = xasprintf("%s/c", tdir), *path;
	const char *const rcpts[] = { "maildir", a, "maildir", b, "maildir",
	    c, NULL };
	const char *err = NULL;
	char qid[SPOOL_QID_MAX];
	struct queue *q;

	(void)state;
	commit(qid, rcpts);
	/*
	 * Before the "crash": rcpt 0 delivered and recorded; rcpt 1
	 * delivered but killed before its done-record; rcpt 2 untouched.
	 */
	path = spool_content_path(sp, qid);
	for (size_t i = 0; i < 2; i++) {
		struct deliver_msg m = { .content_path = path,
		    .return_path = "from@example.org", .qid = qid,
		    .rcpt_idx = i, .received = 1700000000,
		    .hostname = "mx.test" };
		assert_int_equal(deliver_maildir(i == 0 ? a : b, &m, &err),
		    DELIVER_OK);
	}
	free(path);
	assert_int_equal(spool_mark_done(sp, qid, 0, &err), 0);
	spool_close(&sp);

	sp = spool_open(spooldir, &err);	/* the restart */
	assert_non_null(sp);
	q = queue_new(sp, "mx.test", 2);
	queue_recover(q);
	queue_drain(q);
	queue_free(&q);
	assert_int_equal(count_sub(a, "new"), 1);
	assert_int_equal(count_sub(b, "new"), 1);
	assert_int_equal(count_sub(c, "new"), 1);
	assert_spool_empty();
	free(a);
	free(b);
	free(c);
}

static void
test_queue_duplicate_submits(void **state)
{
	char *a = xasprintf("%s/a", tdir);
	const char *const rcpts[] = { "maildir", a, NULL };
	char qids[5][SPOOL_QID_MAX];
	struct queue *q = queue_new(sp, "mx.test", 4);

	(void)state;
	for (int i = 0; i < 5; i++)
		commit(qids[i], rcpts);
	for (int round = 0; round < 4; round++)
		for (int i = 0; i < 5; i++)
			queue_submit(q, qids[i]);
	queue_drain(q);
	/* Submitting a message already delivered is harmless too. */
	queue_submit(q, qids[0]);
	queue_drain(q);
	queue_free(&q);
	assert_int_equal(count_sub(a, "new"), 5);
	assert_spool_empty();
	free(a);
}

static void
test_queue_tempfail_deferred(void **state)
{
	/* mkdir under /proc fails with ENOENT: a temporary failure. */
	const char *const rcpts[] = { "discard", NULL, "maildir",
	    "/proc/postern-test/Maildir", NULL };
	const char *err = NULL;
	char qid[SPOOL_QID_MAX];
	struct spool_env e;
	struct queue *q;
	uint64_t t0;

	(void)state;
	commit_received = (int64_t)(util_wall_us() / 1000000);
	commit(qid, rcpts);
	commit_received = 1700000000;
	q = queue_new(sp, "mx.test", 2);
	queue_submit(q, qid);
	t0 = util_now_ms();
	queue_drain(q);		/* the retry, 30 s away, does not count */
	queue_free(&q);		/* nor does it hold up the shutdown */
	if (util_now_ms() - t0 > 10000)
		fail_msg("drain and free took %ju ms",
		    (uintmax_t)(util_now_ms() - t0));
	/* Still spooled, with the discard recorded as done. */
	assert_int_equal(spool_env_load(sp, qid, &e, &err), 0);
	assert_int_equal(e.nrcpts, 2);
	assert_true(e.rcpts[0].done);
	assert_false(e.rcpts[1].done);
	/* The deferral itself is on disk: the next run resumes from it. */
	assert_int_equal(e.rcpts[1].attempts, 1);
	assert_non_null(strstr(e.rcpts[1].last_err, "No such file"));
	spool_env_clear(&e);
}

static void
test_queue_permanent_failures(void **state)
{
	char *ok = xasprintf("%s/ok", tdir);
	/* A path component past NAME_MAX can never exist: permanent. */
	char *too_long = xasprintf("%s/%0300d/Maildir", tdir, 0);
	const char *const rcpts[] = { "frobnicate", "x", "maildir", too_long,
	    "maildir", NULL, "maildir", ok, NULL };
	char qid[SPOOL_QID_MAX];
	struct queue *q;

	(void)state;
	commit(qid, rcpts);
	q = queue_new(sp, "mx.test", 1);
	queue_recover(q);
	queue_drain(q);
	queue_free(&q);
	/* Given up (no router here, so no DSN), not retried forever. */
	assert_int_equal(count_sub(ok, "new"), 1);
	assert_spool_empty();
	free(too_long);
	free(ok);
}

/*
 * kill -9 while the queue delivers: after the restart every recipient of
 * every message has exactly one copy, and the spool is empty.
 */
static void
test_queue_sigkill_mid_delivery(void **state)
{
	enum { NMSG = 40 };
	char *a = xasprintf("%s/a", tdir), *b = xasprintf("%s/b", tdir);
	const char *const rcpts[] = { "maildir", a, "maildir", b, NULL };
	char qid[SPOOL_QID_MAX];
	const char *err = NULL;
	struct queue *q;
	pid_t pid;

	(void)state;
	for (int i = 0; i < NMSG; i++)
		commit(qid, rcpts);
	pid = fork();
	assert_true(pid != -1);
	if (pid == 0) {
		q = queue_new(sp, "mx.test", 4);
		queue_recover(q);
		queue_drain(q);
		_exit(0);
	}
	/* Kill it once some, not all, deliveries happened. */
	uint64_t deadline = util_now_ms() + 10000;
	while (count_sub(a, "new") + count_sub(b, "new") < NMSG / 2 &&
	    util_now_ms() < deadline) {
		struct timespec ts = { 0, 200000 };
		nanosleep(&ts, NULL);
	}
	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, NULL, 0), pid);

	spool_close(&sp);
	sp = spool_open(spooldir, &err);	/* the restart */
	assert_non_null(sp);
	q = queue_new(sp, "mx.test", 4);
	queue_recover(q);
	queue_drain(q);
	queue_free(&q);
	assert_int_equal(count_sub(a, "new"), NMSG);
	assert_int_equal(count_sub(b, "new"), NMSG);
	assert_int_equal(count_sub(a, "tmp"), 0);
	assert_spool_empty();
	free(a);
	free(b);
}

/* ---- scheduler math ---------------------------------------------------- */

static void
test_backoff_table(void **state)
{
	static const struct {
		const char *name;
		unsigned attempts;
		uint64_t min, max;
		uint32_t rnd;
		uint64_t want;
	} cases[] = {
		{ "first, no jitter", 1, 30000, 3600000, 0, 30000 },
		{ "second doubles", 2, 30000, 3600000, 0, 60000 },
		{ "fifth", 5, 30000, 3600000, 0, 480000 },
		{ "capped", 9, 30000, 3600000, 0, 3600000 },
		{ "huge attempts capped", 4000000000u, 30000, 3600000, 0,
		    3600000 },
		{ "max jitter", 1, 30000, 3600000, 3750, 33750 },
		{ "jitter wraps", 1, 30000, 3600000, 3751, 30000 },
		{ "capped max jitter", 20, 30000, 3600000, 450000, 4050000 },
		{ "min equals max", 3, 1000, 1000, 0, 1000 },
		{ "tiny", 1, 1, 1, 7, 1 },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t got = queue_backoff_ms(cases[i].attempts,
		    cases[i].min, cases[i].max, cases[i].rnd);
		if (got != cases[i].want)
			fail_msg("case \"%s\": got %ju ms, want %ju ms",
			    cases[i].name, (uintmax_t)got,
			    (uintmax_t)cases[i].want);
	}
}

/* Whatever the random number, the delay stays in [base, base + base/8]. */
static void
test_backoff_jitter_bounds(void **state)
{
	(void)state;
	for (unsigned a = 1; a <= 12; a++) {
		uint64_t base = 30000ULL << (a - 1);
		if (base > 3600000)
			base = 3600000;
		for (uint32_t k = 0; k < 5000; k++) {
			uint32_t rnd = k * 2654435761u;
			uint64_t got = queue_backoff_ms(a, 30000, 3600000, rnd);
			if (got < base || got > base + base / 8)
				fail_msg("case \"attempt %u rnd %u\": got %ju, "
				    "want %ju..%ju", a, rnd, (uintmax_t)got,
				    (uintmax_t)base,
				    (uintmax_t)(base + base / 8));
		}
	}
}

static void
test_lifetime(void **state)
{
	struct queue_opts o;
	static const struct {
		const char *name;
		uint64_t now, received;
		bool expired;
		unsigned attempts;
		uint64_t want_next;
	} cases[] = {
		/* lifetime 100 s, retry 30 s..1 h, no jitter */
		{ "young", 10000, 0, false, 1, 40000 },
		{ "clamped to the end", 80000, 0, false, 1, 100000 },
		{ "at the end", 100000, 0, true, 1, 130000 },
		{ "past the end", 500000, 0, true, 3, 620000 },
		{ "clock behind arrival", 0, 50000, false, 1, 30000 },
	};

	(void)state;
	queue_opts_init(&o, NULL);
	o.lifetime_ms = 100000;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool exp = queue_expired(&o, cases[i].now, cases[i].received);
		uint64_t next = queue_next_attempt_ms(&o, cases[i].attempts,
		    cases[i].now, cases[i].received, 0);
		if (exp != cases[i].expired || next != cases[i].want_next)
			fail_msg("case \"%s\": got expired=%d next=%ju, want "
			    "expired=%d next=%ju", cases[i].name, exp,
			    (uintmax_t)next, cases[i].expired,
			    (uintmax_t)cases[i].want_next);
	}
}

static void
test_config_queue(void **state)
{
	char *errs = NULL;
	struct config *c;
	struct queue_opts o;

	(void)state;
	c = config_parse("t.conf", "listen 127.0.0.1:2525\n"
	    "queue retry-min 2s\nqueue retry-max 10m\nqueue lifetime 3s\n"
	    "queue delay-warning 0\nqueue concurrency 7\n"
	    "queue destination-concurrency 2\naction l discard\n"
	    "queue connection-reuse-time 0\nqueue connection-reuse-limit 5\n"
	    "queue connection-cache-size 9\n"
	    "match any action l\n", &errs);
	if (c == NULL)
		fail_msg("config: %s", errs);
	assert_int_equal(c->queue.reuse_time_ms, 0);
	assert_int_equal(c->queue.reuse_limit, 5);
	assert_int_equal(c->queue.cache_size, 9);
	queue_opts_init(&o, c);
	assert_int_equal(o.retry_min_ms, 2000);
	assert_int_equal(o.retry_max_ms, 600000);
	assert_int_equal(o.lifetime_ms, 3000);
	assert_int_equal(o.delay_warning_ms, 0);
	assert_int_equal(o.concurrency, 7);
	assert_int_equal(o.dest_concurrency, 2);
	config_free(&c);
	c = config_parse("t.conf", "listen 127.0.0.1:2525\n"
	    "action l discard\nmatch any action l\n", &errs);
	assert_non_null(c);
	queue_opts_init(&o, c);
	assert_int_equal(o.retry_min_ms, 30000);
	assert_int_equal(o.retry_max_ms, 3600000);
	assert_int_equal(o.lifetime_ms, 5 * 86400000ULL);
	assert_int_equal(o.delay_warning_ms, 4 * 3600000ULL);
	assert_int_equal(o.concurrency, 30);
	assert_int_equal(o.dest_concurrency, 20);
	assert_int_equal(c->queue.reuse_time_ms, 2000);
	assert_int_equal(c->queue.reuse_limit, 100);
	assert_int_equal(c->queue.cache_size, 30);
	config_free(&c);
	c = config_parse("t.conf", "listen 127.0.0.1:2525\n"
	    "queue retry-min 2h\nqueue retry-max 1h\nqueue concurrency 0\n"
	    "queue speed 9\nqueue lifetime\naction l discard\n"
	    "match any action l\n", &errs);
	assert_null(c);
	assert_string_equal(errs,
	    "t.conf:3: queue: retry-min (line 2) is above retry-max (line 3)\n"
	    "t.conf:4: queue concurrency: \"0\" is out of range (1..1000)\n"
	    "t.conf:5: queue: unknown setting \"speed\" (usage: queue "
	    "retry-min|retry-max|lifetime|delay-warning|connection-reuse-time "
	    "DURATION, or queue concurrency|destination-concurrency|"
	    "connection-reuse-limit|connection-cache-size N)\n"
	    "t.conf:6: queue: missing argument (usage: queue "
	    "retry-min|retry-max|lifetime|delay-warning|connection-reuse-time "
	    "DURATION, or queue concurrency|destination-concurrency|"
	    "connection-reuse-limit|connection-cache-size N)\n");
	free(errs);
}

/* ---- DSNs -------------------------------------------------------------- */

static char *
slurp(const char *path, size_t *len_out)
{
	FILE *f = fopen(path, "rb");
	struct util_buf b = { 0 };
	char buf[4096];
	size_t n;

	if (f == NULL)
		return NULL;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		util_buf_add(&b, buf, n);
	fclose(f);
	*len_out = b.len;
	return util_buf_cstr(&b);
}

/* Compare out with data/<name>.out (UPDATE_GOLDEN=1 writes it). */
static void
golden(const char *name, const struct util_buf *out)
{
	char *path = xasprintf("data/%s.out", name);
	size_t len = 0;
	char *want;

	if (getenv("UPDATE_GOLDEN") != NULL) {
		FILE *f = fopen(path, "wb");
		assert_non_null(f);
		fwrite(out->data, 1, out->len, f);
		fclose(f);
	}
	want = slurp(path, &len);
	if (want == NULL)
		fail_msg("case \"%s\": %s missing (UPDATE_GOLDEN=1)", name,
		    path);
	if (len != out->len || memcmp(want, out->data, len) != 0)
		fail_msg("case \"%s\": DSN differs from %s; got:\n%.*s", name,
		    path, (int)out->len, out->data);
	free(want);
	free(path);
}

static void
dsn_env(struct spool_env *e)
{
	memset(e, 0, sizeof(*e));
	util_strlcpy(e->qid, "1xVTabcdEF012Ghij", sizeof(e->qid));
	e->sender = xstrdup("alice@example.org");
	e->received = 1700000000;
	spool_env_add_rcpt(e, "bob@example.net", "relay", "smtp://mx");
	spool_env_add_rcpt(e, "carol@example.net", "maildir", "/m/carol");
	spool_env_add_rcpt(e, "dave@example.net", "maildir", "/m/dave");
	e->rcpts[0].failed = e->rcpts[0].done = true;
	util_strlcpy(e->rcpts[0].status, "5.1.1", sizeof(e->rcpts[0].status));
	e->rcpts[0].last_err = xstrdup("550 5.1.1 <bob@example.net>: no "
	    "such user\r\nInjected: x");
	e->rcpts[1].failed = e->rcpts[1].done = true;
	util_strlcpy(e->rcpts[1].status, "4.4.7", sizeof(e->rcpts[1].status));
	e->rcpts[1].last_err = xstrdup("delivery time expired after 9 "
	    "attempts; last error: mkdir(/m/carol): Permission denied");
	e->rcpts[2].attempts = 3;
	e->rcpts[2].last_err = xstrdup("451 4.2.0 mailbox busy");
}

static void
test_dsn_golden(void **state)
{
	static const char hdrs[] = "Received: from client.example (unknown "
	    "[127.0.0.1])\n\tby mx.test (postern) with ESMTP id "
	    "1xVTabcdEF012Ghij; Tue, 14 Nov 2023 22:13:20 +0000\n"
	    "Subject: hello\nMessage-ID: <m1@example.org>\n";
	struct spool_env e;
	struct util_buf out = { 0 };
	size_t failed[] = { 0, 1 }, delayed[] = { 2 };

	(void)state;
	setenv("TZ", "UTC", 1);		/* dates in the golden files */
	tzset();
	dsn_env(&e);
	struct queue_dsn d = {
		.reporting_mta = "mx.test", .env = &e, .idx = failed, .n = 2,
		.headers = hdrs, .headers_len = strlen(hdrs),
		.now = 1700003600, .retry_until = 1700432000,
		.qid = "1xVTzzzzZZ999Yyyy", .boundary = "=_1xVTzzzzZZ999Yyyy/mx.test",
	};
	queue_dsn_build(&d, &out);
	golden("bounce", &out);
	util_buf_reset(&out);
	d.delayed = true;
	d.idx = delayed;
	d.n = 1;
	queue_dsn_build(&d, &out);
	golden("delay", &out);
	util_buf_clear(&out);
	spool_env_clear(&e);
}

/*
 * A plain DSN returning 8-bit headers (a message sent with BODY=8BITMIME,
 * or with SMTPUTF8 but ASCII addresses): they go quoted-printable, '=' and
 * a line's last space encoded, a long line cut by soft breaks, so the DSN
 * is 7-bit throughout.
 */
static void
test_dsn_golden_8bit_headers(void **state)
{
	static const char hdrs[] = "From: J\xc3\xb6rg <alice@example.org>\n"
	    "Subject: Gr\xc3\xbc\xc3\x9f""e =?x?= \n"
	    "X-Long: \xc3\xa4 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
	    "\tfolded\twith a tab\t\n";
	struct spool_env e;
	struct util_buf out = { 0 };
	size_t failed[] = { 0 };

	(void)state;
	setenv("TZ", "UTC", 1);
	tzset();
	dsn_env(&e);
	struct queue_dsn d = {
		.reporting_mta = "mx.test", .env = &e, .idx = failed, .n = 1,
		.headers = hdrs, .headers_len = strlen(hdrs),
		.now = 1700003600, .retry_until = 1700432000,
		.qid = "1xVTzzzzZZ999Yyyy", .boundary = "=_1xVTzzzzZZ999Yyyy/mx.test",
	};
	for (int utf8 = 0; utf8 < 2; utf8++) {
		e.smtputf8 = utf8;
		assert_false(queue_dsn_is_global(&d));
		util_buf_reset(&out);
		queue_dsn_build(&d, &out);
		for (size_t i = 0; i < out.len; i++)
			if ((unsigned char)out.data[i] >= 0x80)
				fail_msg("case \"8-bit headers, smtputf8=%d\": "
				    "octet %zu is 8-bit", utf8, i);
		golden("bounce-8bit-headers", &out);
	}
	util_buf_clear(&out);
	spool_env_clear(&e);
}

/*
 * A message that needed SMTPUTF8: a global DSN (RFC 6533) naming the
 * sender and the recipients in UTF-8, "utf-8" addresses in the
 * utf-8-addr-unitext form ('+' as \\x{2B}), the headers as they are.
 */
static void
test_dsn_golden_utf8(void **state)
{
	static const char hdrs[] = "From: j\xc3\xb6rg@example.org\n"
	    "Subject: Gr\xc3\xbc\xc3\x9f""e\n";
	struct spool_env e;
	struct util_buf out = { 0 };
	size_t failed[] = { 0, 1 };

	(void)state;
	setenv("TZ", "UTC", 1);
	tzset();
	memset(&e, 0, sizeof(e));
	util_strlcpy(e.qid, "1xVTabcdEF012Ghij", sizeof(e.qid));
	e.sender = xstrdup("j\xc3\xb6rg@example.org");
	e.smtputf8 = true;
	e.received = 1700000000;
	spool_env_add_rcpt(&e, "zo\xc3\xab+x@remote.test", "relay", "smtp://mx");
	spool_env_add_rcpt(&e, "bob@example.net", "relay", "smtp://mx");
	for (size_t i = 0; i < 2; i++) {
		e.rcpts[i].failed = e.rcpts[i].done = true;
		util_strlcpy(e.rcpts[i].status, "5.1.1",
		    sizeof(e.rcpts[i].status));
	}
	e.rcpts[0].last_err = xstrdup("550 5.1.1 <zo\xc3\xab+x@remote.test>: "
	    "unknown");
	e.rcpts[1].last_err = xstrdup("550 5.1.1 not UTF-8: \xff\xc3 end");
	struct queue_dsn d = {
		.reporting_mta = "mx.test", .env = &e, .idx = failed, .n = 2,
		.headers = hdrs, .headers_len = strlen(hdrs),
		.now = 1700003600, .retry_until = 1700432000,
		.qid = "1xVTzzzzZZ999Yyyy", .boundary = "=_1xVTzzzzZZ999Yyyy/mx.test",
	};
	assert_true(queue_dsn_is_global(&d));
	queue_dsn_build(&d, &out);
	golden("bounce-utf8", &out);
	util_buf_clear(&out);
	spool_env_clear(&e);
}

static void
test_dsn_status(void **state)
{
	static const struct {
		const char *name, *why;
		bool temp;
		const char *want;
	} cases[] = {
		{ "smtp reply", "550 5.1.1 no such user", false, "5.1.1" },
		{ "smtp continuation", "552-5.2.2 over quota", false,
		    "5.2.2" },
		{ "bare code", "5.3.5 unknown action", false, "5.3.5" },
		{ "no code", "mkdir(x): File name too long", false, "5.0.0" },
		{ "temp no code", "connection refused", true, "4.0.0" },
		{ "temp smtp", "451 4.3.0 try later", true, "4.3.0" },
		{ "temp but 5xx", "550 5.1.1 x", true, "4.1.1" },
		{ "5xx with a 4.x.x code", "550 4.2.2 mailbox full", false,
		    "5.2.2" },
		{ "5xx with a 2.x.x code", "550 2.1.5 x", false, "5.1.5" },
		{ "bare 4.x.x code, failed", "4.3.5 action x is not configured",
		    false, "5.3.5" },
		{ "temp, 2.x.x code", "451 2.0.0 x", true, "4.0.0" },
		{ "code too long", "550 5.1234.1 x", false, "5.0.0" },
		{ "code glued", "550 5.1.1x", false, "5.0.0" },
		{ "class 3", "550 3.1.1 x", false, "5.0.0" },
		{ "empty", "", false, "5.0.0" },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char got[16];
		queue_dsn_status(cases[i].why, cases[i].temp, got);
		if (strcmp(got, cases[i].want) != 0)
			fail_msg("case \"%s\": got %s, want %s", cases[i].name,
			    got, cases[i].want);
	}
}

/* ---- a queue with a controllable fake action --------------------------- */

struct fake {
	pthread_mutex_t	 mu;
	pthread_cond_t	 cv;
	bool		 release;	/* "block" deliveries may return */
	unsigned	 calls;
	unsigned	 blocking, max_blocking;
	struct queue	*q;		/* "settle" deliveries record here */
	unsigned	 env_left;	/* envelopes still there after one */
};
static atomic_bool route_down;	/* fake_route: the tables do not answer */
static struct fake fk = { PTHREAD_MUTEX_INITIALIZER,
    PTHREAD_COND_INITIALIZER, false, 0, 0, 0, NULL, 0 };

/*
 * "settle": delivered, and recorded by the delivery itself before it
 * returns, as a relay does between the upstream's 250 and QUIT.
 */
static void
fake_settle(const struct spool_env *env, size_t idx)
{
	char *p = xasprintf("%s/env/%s", spooldir, env->qid);
	const char *err = NULL;
	struct stat st;

	if (queue_settle(fk.q, env, &idx, 1, &err) == -1)
		fail_msg("queue_settle: %s", err);
	pthread_mutex_lock(&fk.mu);
	fk.env_left += stat(p, &st) == 0;
	pthread_mutex_unlock(&fk.mu);
	free(p);
}

/*
 * Actions: ok, temp, perm, block (until fk.release), settle, else the
 * real ones.
 */
static void
fake_deliver(void *arg, const struct spool_env *env, const size_t *idxs,
    size_t n, const char *content_path, const char *hostname,
    struct deliver_rcpt_status *st)
{
	size_t idx = idxs[0];
	const char *a = env->rcpts[idx].action;

	pthread_mutex_lock(&fk.mu);
	fk.calls++;
	pthread_mutex_unlock(&fk.mu);
	if (strcmp(a, "ok") == 0)
		return;
	if (strcmp(a, "settle") == 0) {
		fake_settle(env, idx);
		return;
	}
	if (strcmp(a, "temp") == 0) {
		deliver_status_all(st, n, DELIVER_TEMPFAIL,
		    "451 4.2.0 mailbox busy");
		return;
	}
	if (strcmp(a, "perm") == 0) {
		deliver_status_all(st, n, DELIVER_PERMFAIL,
		    "550 5.1.1 no such user");
		return;
	}
	if (strcmp(a, "block") == 0) {
		pthread_mutex_lock(&fk.mu);
		if (++fk.blocking > fk.max_blocking)
			fk.max_blocking = fk.blocking;
		while (!fk.release)
			pthread_cond_wait(&fk.cv, &fk.mu);
		fk.blocking--;
		pthread_mutex_unlock(&fk.mu);
		return;
	}
	queue_deliver_default(arg, env, idxs, n, content_path, hostname, st);
}

static void
fake_reset(void)
{
	pthread_mutex_lock(&fk.mu);
	fk.release = false;
	fk.calls = fk.blocking = fk.max_blocking = fk.env_left = 0;
	fk.q = NULL;
	pthread_mutex_unlock(&fk.mu);
	atomic_store(&route_down, false);
}

static unsigned
fake_calls(void)
{
	pthread_mutex_lock(&fk.mu);
	unsigned n = fk.calls;
	pthread_mutex_unlock(&fk.mu);
	return n;
}

/* Route every address to the Maildir <tdir>/mail/<local part>. */
static int
fake_route(void *arg, const char *sender, const char *rcpt,
    struct spool_env *env, const char **err_out)
{
	size_t n = strcspn(rcpt, "@");

	(void)arg;
	(void)sender;
	if (atomic_load(&route_down)) {
		*err_out = "451 4.3.0 Temporary lookup failure";
		return -1;
	}
	if (strncmp(rcpt, "nowhere", n) == 0) {
		*err_out = "550 5.7.1 Relay access denied";
		return -1;
	}
	char *folder = xasprintf("%s/mail/%.*s", tdir, (int)n, rcpt);
	(void)queue_env_add_target(env, rcpt, "maildir", folder);
	free(folder);
	return 0;
}

static struct queue *
fake_queue(uint64_t lifetime_ms, uint64_t warn_ms, bool control)
{
	struct queue_opts o;

	queue_opts_init(&o, NULL);
	o.hostname = "mx.test";
	o.concurrency = 6;
	o.dest_concurrency = 2;
	o.retry_min_ms = 1000;
	o.retry_max_ms = 4000;
	o.lifetime_ms = lifetime_ms;
	o.delay_warning_ms = warn_ms;
	o.route = fake_route;
	o.deliver = fake_deliver;
	o.control = control;
	o.pickup_ms = 0;
	return queue_new_opts(sp, &o);
}

static void
commit_now(char qid_out[SPOOL_QID_MAX], const char *const *rcpts)
{
	commit_received = (int64_t)(util_wall_us() / 1000000);
	commit(qid_out, rcpts);
	commit_received = 1700000000;
}

static char *
mail_dir(const char *user)
{
	return xasprintf("%s/mail/%s", tdir, user);
}

/* Wait up to ms for the Maildir of user to hold want messages. */
static bool
wait_mail(const char *user, size_t want, uint64_t ms)
{
	char *d = mail_dir(user);
	uint64_t end = util_now_ms() + ms;
	bool ok;

	while (!(ok = count_sub(d, "new") == want) && util_now_ms() < end) {
		struct timespec ts = { 0, 20 * 1000000 };
		nanosleep(&ts, NULL);
	}
	free(d);
	return ok;
}

/* The only message in user's Maildir, as a string. */
static char *
read_mail(const char *user)
{
	char *d = mail_dir(user), *nd = xasprintf("%s/new", d), *p, *s;
	DIR *dir = opendir(nd);
	struct dirent *de;
	size_t len;

	assert_non_null(dir);
	while ((de = readdir(dir)) != NULL && de->d_name[0] == '.')
		;
	assert_non_null(de);
	p = xasprintf("%s/%s", nd, de->d_name);
	closedir(dir);
	s = slurp(p, &len);
	free(p);
	free(nd);
	free(d);
	return s;
}

static void
test_status_persisted_across_restart(void **state)
{
	const char *const rcpts[] = { "ok", NULL, "temp", NULL, NULL };
	const char *err = NULL;
	char qid[SPOOL_QID_MAX];
	struct spool_env e;
	struct queue *q;
	uint64_t t0;

	(void)state;
	fake_reset();
	commit_now(qid, rcpts);
	t0 = util_wall_us() / 1000;
	q = fake_queue(3600000, 0, false);
	queue_submit(q, qid);
	queue_drain(q);
	queue_free(&q);
	assert_int_equal(fake_calls(), 2);
	assert_int_equal(spool_env_load(sp, qid, &e, &err), 0);
	assert_true(e.rcpts[0].done);
	assert_false(e.rcpts[1].done);
	assert_int_equal(e.rcpts[1].attempts, 1);
	assert_string_equal(e.rcpts[1].last_err, "451 4.2.0 mailbox busy");
	if (e.rcpts[1].next_ms < t0 + 1000 ||
	    e.rcpts[1].next_ms > util_wall_us() / 1000 + 1125)
		fail_msg("next attempt %ju not 1..1.125 s after %ju",
		    (uintmax_t)e.rcpts[1].next_ms, (uintmax_t)t0);
	spool_env_clear(&e);

	/*
	 * The restart tries the pending recipient once at start-up (not the
	 * delivered one), and the backoff carries on from the stored count.
	 */
	spool_close(&sp);
	sp = spool_open(spooldir, &err);
	assert_non_null(sp);
	q = fake_queue(3600000, 0, false);
	queue_recover(q);
	queue_drain(q);
	assert_int_equal(fake_calls(), 3);
	t0 = util_wall_us() / 1000;
	assert_int_equal(spool_env_load(sp, qid, &e, &err), 0);
	assert_int_equal(e.rcpts[1].attempts, 2);
	if (e.rcpts[1].next_ms < t0 + 2000 - 100 ||
	    e.rcpts[1].next_ms > t0 + 2250)
		fail_msg("second backoff: next %ju, want 2..2.25 s after %ju",
		    (uintmax_t)e.rcpts[1].next_ms, (uintmax_t)t0);
	spool_env_clear(&e);
	/* Then not again before its time ... */
	queue_drain(q);
	assert_int_equal(fake_calls(), 3);
	/* ... and at its time. */
	uint64_t end = util_now_ms() + 5000;
	while (fake_calls() < 4 && util_now_ms() < end) {
		struct timespec ts = { 0, 20 * 1000000 };
		nanosleep(&ts, NULL);
	}
	queue_drain(q);
	queue_free(&q);
	assert_int_equal(fake_calls(), 4);
	assert_int_equal(spool_env_load(sp, qid, &e, &err), 0);
	assert_int_equal(e.rcpts[1].attempts, 3);
	spool_env_clear(&e);
}

static void
test_bounce_to_sender(void **state)
{
	const char *const rcpts[] = { "ok", NULL, "perm", NULL, "perm", NULL,
	    NULL };
	char qid[SPOOL_QID_MAX];
	struct queue *q;
	char *m;

	(void)state;
	fake_reset();
	commit_sender = "alice@example.org";
	commit_now(qid, rcpts);
	commit_sender = "from@example.org";
	q = fake_queue(3600000, 0, false);
	queue_submit(q, qid);
	assert_true(wait_mail("alice", 1, 5000));
	queue_drain(q);
	queue_free(&q);
	assert_spool_empty();
	m = read_mail("alice");
	/* One DSN for both failures, from <>, well formed. */
	static const char *const want[] = {
	    "Return-Path: <>\n", "\nFrom: Mail Delivery System "
	    "<MAILER-DAEMON@mx.test>\n", "\nTo: <alice@example.org>\n",
	    "Content-Type: multipart/report; report-type=delivery-status;",
	    "\nContent-Type: message/delivery-status\n",
	    "\nReporting-MTA: dns; mx.test\n",
	    "\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 "
	    "5.1.1 no such user\n",
	    "\nContent-Type: text/rfc822-headers\n",
	    "\nSubject: ", "\nAuto-Submitted: auto-replied\n",
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (strstr(m, want[i]) == NULL)
			fail_msg("case \"%s\": not in the bounce:\n%s", want[i],
			    m);
	char *second = strstr(strstr(m, "Final-Recipient"), "\n\n");
	assert_non_null(second);
	assert_non_null(strstr(second, "Final-Recipient"));
	free(m);
}

/* A DSN whose route a table cannot give now waits, it is not dropped. */
static void
test_bounce_waits_for_the_router(void **state)
{
	const char *const rcpts[] = { "perm", NULL, NULL };
	char qid[SPOOL_QID_MAX];
	struct queue *q;

	(void)state;
	fake_reset();
	commit_sender = "alice@example.org";
	commit_now(qid, rcpts);
	commit_sender = "from@example.org";
	atomic_store(&route_down, true);
	q = fake_queue(3600000, 0, false);
	queue_submit(q, qid);
	/* The failure is recorded; its DSN waits, the message stays. */
	assert_true(wait_mail("alice", 1, 1500) == false);
	assert_int_equal(fake_calls(), 1);
	assert_int_equal(count_sub(spooldir, "env"), 1);
	atomic_store(&route_down, false);
	assert_true(wait_mail("alice", 1, 8000));
	queue_drain(q);
	queue_free(&q);
	assert_spool_empty();
}

static void
test_no_bounce_for_null_sender(void **state)
{
	const char *const rcpts[] = { "perm", NULL, NULL };
	char qid[SPOOL_QID_MAX];
	struct queue *q;
	char *d = mail_dir("");

	(void)state;
	fake_reset();
	commit_sender = "";
	commit_now(qid, rcpts);
	commit_sender = "from@example.org";
	q = fake_queue(3600000, 0, false);
	queue_submit(q, qid);
	queue_drain(q);
	queue_free(&q);
	assert_spool_empty();
	assert_int_equal(count_entries(d), 0);
	free(d);
}

static void
test_lifetime_expiry_bounces(void **state)
{
	const char *const rcpts[] = { "temp", NULL, NULL };
	char qid[SPOOL_QID_MAX];
	struct queue *q;
	char *m;

	(void)state;
	fake_reset();
	commit_sender = "alice@example.org";
	commit_now(qid, rcpts);
	commit_sender = "from@example.org";
	q = fake_queue(2000, 0, false);
	queue_submit(q, qid);
	assert_true(wait_mail("alice", 1, 8000));
	queue_drain(q);
	queue_free(&q);
	assert_spool_empty();
	m = read_mail("alice");
	if (strstr(m, "Status: 4.4.7\n") == NULL ||
	    strstr(m, "Action: failed\n") == NULL ||
	    strstr(m, "delivery time expired") == NULL)
		fail_msg("expiry DSN lacks 4.4.7/failed/expired:\n%s", m);
	free(m);
}

static void
test_delay_warning_once(void **state)
{
	const char *const rcpts[] = { "temp", NULL, "ok", NULL, NULL };
	char qid[SPOOL_QID_MAX];
	const char *err = NULL;
	struct spool_env e;
	struct queue *q;
	char *m;

	(void)state;
	fake_reset();
	commit_sender = "alice@example.org";
	commit_now(qid, rcpts);
	commit_sender = "from@example.org";
	q = fake_queue(3600000, 1, false);
	queue_submit(q, qid);
	assert_true(wait_mail("alice", 1, 5000));
	/* Retried (flushed) twice more: still one warning. */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(queue_flush(q, qid, &err), 0);
		queue_drain(q);
	}
	queue_free(&q);
	assert_true(fake_calls() >= 4);
	assert_true(wait_mail("alice", 1, 0));
	m = read_mail("alice");
	if (strstr(m, "Action: delayed\n") == NULL ||
	    strstr(m, "Status: 4.2.0\n") == NULL ||
	    strstr(m, "Will-Retry-Until: ") == NULL ||
	    strstr(m, "dave") != NULL)
		fail_msg("delay DSN:\n%s", m);
	free(m);
	assert_int_equal(spool_env_load(sp, qid, &e, &err), 0);
	assert_true(e.warned);
	assert_true(e.rcpts[1].done);
	spool_env_clear(&e);
}

/*
 * A destination whose deliveries block holds at most dest_concurrency
 * workers; another destination is still delivered at once.
 */
static void
test_slow_destination_does_not_starve(void **state)
{
	const char *const slow[] = { "block", "slow.example", NULL };
	char *fast_dir = mail_dir("fast");
	const char *const fast[] = { "maildir", fast_dir, NULL };
	char qid[SPOOL_QID_MAX];
	struct queue *q;
	uint64_t t0;

	(void)state;
	fake_reset();
	q = fake_queue(3600000, 0, false);
	for (int i = 0; i < 8; i++) {
		commit_now(qid, slow);
		queue_submit(q, qid);
	}
	/* Both slots of the slow destination fill up. */
	uint64_t end = util_now_ms() + 5000;
	for (;;) {
		pthread_mutex_lock(&fk.mu);
		unsigned b = fk.blocking;
		pthread_mutex_unlock(&fk.mu);
		if (b == 2 || util_now_ms() > end)
			break;
		struct timespec ts = { 0, 5 * 1000000 };
		nanosleep(&ts, NULL);
	}
	t0 = util_now_ms();
	for (int i = 0; i < 3; i++) {
		commit_now(qid, fast);
		queue_submit(q, qid);
	}
	if (!wait_mail("fast", 3, 3000))
		fail_msg("fast destination starved behind the slow one");
	if (util_now_ms() - t0 > 2000)
		fail_msg("fast deliveries took %ju ms",
		    (uintmax_t)(util_now_ms() - t0));
	pthread_mutex_lock(&fk.mu);
	assert_int_equal(fk.blocking, 2);
	fk.release = true;
	pthread_cond_broadcast(&fk.cv);
	pthread_mutex_unlock(&fk.mu);
	queue_drain(q);
	queue_free(&q);
	assert_int_equal(fk.max_blocking, 2);
	assert_int_equal(fake_calls(), 11);	/* 8 blocked, 3 Maildirs */
	assert_spool_empty();
	free(fast_dir);
}

/* A watch on the spool's done/: how many files were made in it. */
static int
done_watch(void)
{
	char *p = xasprintf("%s/done", spooldir);
	int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);

	assert_true(fd != -1);
	assert_true(inotify_add_watch(fd, p, IN_CREATE) != -1);
	free(p);
	return fd;
}

static unsigned
done_created(int fd)
{
	char buf[4096] __attribute__((aligned(__alignof__(
	    struct inotify_event))));
	const struct inotify_event *ev;
	unsigned n = 0;
	ssize_t len;

	while ((len = read(fd, buf, sizeof(buf))) > 0)
		for (char *p = buf; p < buf + len; p += sizeof(*ev) + ev->len) {
			ev = (const struct inotify_event *)p;
			n += (ev->mask & IN_CREATE) != 0;
		}
	return n;
}

/*
 * The last recipient's delivery is recorded by removing the message, with
 * no done-record written for it; the others' still get one.  A restart
 * then finds nothing to deliver again.
 */
static void
test_last_delivery_removes_the_message(void **state)
{
	static const struct {
		const char *name;
		const char *rcpts[7];
		unsigned want_calls;		/* deliveries */
		unsigned want_done_files;	/* made in done/ */
		unsigned want_env_left;		/* after each "settle" */
	} cases[] = {
		{ "one recipient", { "ok", NULL, NULL }, 1, 0, 0 },
		{ "two recipients", { "ok", NULL, "ok", NULL, NULL }, 2, 1, 0 },
		{ "settled by the delivery", { "settle", NULL, NULL }, 1, 0,
		    0 },
		{ "two settled", { "settle", NULL, "settle", NULL, NULL }, 2,
		    1, 1 },
		/* The bounce is a message of its own (to a Maildir), done
		 * alike: no done-record of its own. */
		{ "a failure to report", { "settle", NULL, "perm", NULL,
		    NULL }, 3, 1, 1 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char qid[SPOOL_QID_MAX];
		int wd = done_watch();
		struct queue *q;
		unsigned made;

		fake_reset();
		commit_now(qid, cases[i].rcpts);
		q = fake_queue(3600000, 0, false);
		fk.q = q;
		queue_submit(q, qid);
		queue_drain(q);
		queue_free(&q);
		made = done_created(wd);
		close(wd);
		if (made != cases[i].want_done_files)
			fail_msg("case \"%s\": %u files made in done/, want %u",
			    cases[i].name, made, cases[i].want_done_files);
		if (fake_calls() != cases[i].want_calls || fk.env_left !=
		    cases[i].want_env_left)
			fail_msg("case \"%s\": %u deliveries, %u envelopes "
			    "left after a settle; want %u, %u", cases[i].name,
			    fake_calls(), fk.env_left, cases[i].want_calls,
			    cases[i].want_env_left);
		assert_spool_empty();
		/* The restart finds nothing to deliver again. */
		q = fake_queue(3600000, 0, false);
		queue_recover(q);
		queue_drain(q);
		queue_free(&q);
		if (fake_calls() != cases[i].want_calls)
			fail_msg("case \"%s\": delivered again after a restart",
			    cases[i].name);
	}
}

/* With a keep folder, the copy is made before the settling removal. */
static void
test_last_delivery_keeps_a_copy(void **state)
{
	const char *const rcpts[] = { "settle", NULL, NULL };
	char *keep = xasprintf("%s/keep", tdir), *p;
	const char *err = NULL;
	char qid[SPOOL_QID_MAX];
	struct queue *q;
	struct stat st;

	(void)state;
	fake_reset();
	assert_int_equal(spool_keep_open(sp, keep, 1 << 20, &err), 0);
	commit_now(qid, rcpts);
	q = fake_queue(3600000, 0, false);
	fk.q = q;
	queue_submit(q, qid);
	queue_drain(q);
	queue_free(&q);
	assert_spool_empty();
	p = xasprintf("%s/%s.eml", keep, qid);
	if (stat(p, &st) == -1)
		fail_msg("%s: not kept", p);
	free(p);
	free(keep);
}

static void
test_hold_release_delete(void **state)
{
	const char *const rcpts[] = { "ok", NULL, NULL };
	char held[SPOOL_QID_MAX], gone[SPOOL_QID_MAX];
	const char *err = NULL;
	struct spool_env e;
	struct queue *q;

	(void)state;
	fake_reset();
	commit_now(held, rcpts);
	commit_now(gone, rcpts);
	/* Held before any delivery: persisted, so a restart keeps it held. */
	assert_int_equal(spool_mark_flag(sp, held, SPOOL_FLAG_HOLD, &err), 0);
	q = fake_queue(3600000, 0, false);
	assert_int_equal(queue_hold(q, gone, true, &err), 0);
	queue_recover(q);
	queue_drain(q);
	assert_int_equal(fake_calls(), 0);
	assert_int_equal(queue_delete(q, gone, &err), 0);
	assert_int_equal(spool_env_load(sp, gone, &e, &err), -1);
	assert_int_equal(queue_delete(q, gone, &err), -1);
	assert_string_equal(err, "no such message");
	assert_int_equal(queue_hold(q, "../x", true, &err), -1);
	/* A flush does not override a hold. */
	assert_int_equal(queue_flush(q, NULL, &err), 0);
	queue_drain(q);
	assert_int_equal(fake_calls(), 0);
	assert_int_equal(queue_hold(q, held, false, &err), 0);
	queue_drain(q);
	queue_free(&q);
	assert_int_equal(fake_calls(), 1);
	assert_spool_empty();
}

static void
test_control_socket(void **state)
{
	const char *const rcpts[] = { "temp", NULL, NULL };
	char qid[SPOOL_QID_MAX], *reply = NULL, cmd[64];
	const char *err = NULL;
	struct spool_env e;
	struct queue *q;

	(void)state;
	fake_reset();
	/* No server: the socket is missing. */
	assert_int_equal(queue_control_request(spooldir, "flush", &reply,
	    &err), -1);
	commit_now(qid, rcpts);
	q = fake_queue(3600000, 0, true);
	assert_int_equal(queue_control_request(spooldir, "bogus", &reply,
	    &err), 0);
	assert_string_equal(reply, "error: unknown command");
	free(reply);
	snprintf(cmd, sizeof(cmd), "submit %s", qid);
	assert_int_equal(queue_control_request(spooldir, cmd, &reply, &err),
	    0);
	assert_string_equal(reply, "ok");
	free(reply);
	queue_drain(q);
	assert_int_equal(fake_calls(), 1);
	/* Deferred 1 s; a flush tries it now. */
	assert_int_equal(queue_control_request(spooldir, "flush", &reply,
	    &err), 0);
	free(reply);
	queue_drain(q);
	assert_int_equal(fake_calls(), 2);
	snprintf(cmd, sizeof(cmd), "hold %s", qid);
	assert_int_equal(queue_control_request(spooldir, cmd, &reply, &err),
	    0);
	assert_string_equal(reply, "ok");
	free(reply);
	assert_int_equal(spool_env_load(sp, qid, &e, &err), 0);
	assert_true(e.held);
	spool_env_clear(&e);
	assert_int_equal(queue_control_request(spooldir, "hold NoSuchQid",
	    &reply, &err), 0);
	assert_string_equal(reply, "error: no such message");
	free(reply);
	snprintf(cmd, sizeof(cmd), "delete %s", qid);
	assert_int_equal(queue_control_request(spooldir, cmd, &reply, &err),
	    0);
	free(reply);
	queue_free(&q);
	assert_spool_empty();
	/* Gone with the queue. */
	assert_int_equal(queue_control_request(spooldir, "flush", &reply,
	    &err), -1);
}

/* A delivery's new message: routed, committed, delivered like any. */
static void
test_inject(void **state)
{
	static const char head[] = "From: agent@example.org\nSubject: Re: x"
	    "\n\n";
	static const char orig[] = "Subject: x\n\nthe body\n";
	struct deliver_msg src = { .content = orig,
	    .content_len = sizeof(orig) - 1 };
	struct deliver_inject hook;
	const char *err = NULL;
	struct queue *q;
	char *got;

	(void)state;
	fake_reset();
	q = fake_queue(3600000, 0, false);
	queue_injector(q, &hook);
	assert_int_equal(hook.fn(hook.arg, "", "ann@example.net", head,
	    sizeof(head) - 1, &src, 12, &err), 0);
	assert_true(wait_mail("ann", 1, 10000));
	got = read_mail("ann");
	/* Return-Path (the Maildir's), our Received:, head, src's tail. */
	assert_int_equal(strncmp(got, "Return-Path: <>\nReceived: by mx.test "
	    "(postern) id ", 42), 0);
	assert_non_null(strstr(got, "\tfor <ann@example.net>; "));
	assert_non_null(strstr(got, "\nFrom: agent@example.org\nSubject: Re: "
	    "x\n\nthe body\n"));
	free(got);
	/* No route: never, and nothing left in the spool. */
	assert_int_equal(queue_inject(q, "", "nowhere@example.net", head,
	    sizeof(head) - 1, NULL, 0, &err), -2);
	assert_string_equal(err, "550 5.7.1 Relay access denied");
	queue_drain(q);
	queue_free(&q);
	assert_int_equal(count_sub(spooldir, "env"), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_queue_end_to_end, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_queue_exactly_once_after_crash, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_duplicate_submits,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_tempfail_deferred,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_permanent_failures,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_queue_sigkill_mid_delivery, setup, teardown),
		cmocka_unit_test(test_backoff_table),
		cmocka_unit_test(test_backoff_jitter_bounds),
		cmocka_unit_test(test_lifetime),
		cmocka_unit_test(test_config_queue),
		cmocka_unit_test(test_dsn_golden),
		cmocka_unit_test(test_dsn_golden_utf8),
		cmocka_unit_test(test_dsn_golden_8bit_headers),
		cmocka_unit_test(test_dsn_status),
		cmocka_unit_test_setup_teardown(
		    test_status_persisted_across_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bounce_to_sender, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_bounce_waits_for_the_router,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_bounce_for_null_sender,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_lifetime_expiry_bounces,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_delay_warning_once, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_slow_destination_does_not_starve, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hold_release_delete, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_last_delivery_removes_the_message, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_last_delivery_keeps_a_copy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inject, setup, teardown),
		cmocka_unit_test_setup_teardown(test_control_socket, setup,
		    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
