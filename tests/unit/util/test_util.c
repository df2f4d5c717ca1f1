/* Unit tests of util/: size and duration parsing, bounded copies, buffers. */
#include "util/util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void
test_parse_size(void **state)
{
	static const struct { const char *in; int rc; uint64_t want; } cases[] = {
		{ "0", 0, 0 }, { "1000", 0, 1000 }, { "10k", 0, 10240 },
		{ "35M", 0, 35ULL << 20 }, { "1G", 0, 1ULL << 30 },
		{ "1T", 0, 1ULL << 40 }, { "2tb", 0, 2ULL << 40 },
		{ "", -1, 0 }, { "k", -1, 0 }, { "10x", -1, 0 },
		{ "99999999999999999999", -1, 0 }, { "18014398509481984G", -1, 0 },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t got = 0;
		int rc = util_parse_size(cases[i].in, &got);
		if (rc != cases[i].rc || (rc == 0 && got != cases[i].want))
			fail_msg("case \"%s\": got rc=%d %ju, want rc=%d %ju",
			    cases[i].in, rc, (uintmax_t)got, cases[i].rc,
			    (uintmax_t)cases[i].want);
	}
}

static void
test_parse_duration(void **state)
{
	static const struct { const char *in; int rc; uint64_t want; } cases[] = {
		{ "30", 0, 30000 }, { "500ms", 0, 500 }, { "5m", 0, 300000 },
		{ "2h", 0, 7200000 }, { "1d", 0, 86400000 }, { "5x", -1, 0 },
		{ "-1", -1, 0 },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t got = 0;
		int rc = util_parse_duration_ms(cases[i].in, &got);
		if (rc != cases[i].rc || (rc == 0 && got != cases[i].want))
			fail_msg("case \"%s\": got rc=%d %ju", cases[i].in, rc,
			    (uintmax_t)got);
	}
}

static void
test_timeval_ms(void **state)
{
	static const struct { uint64_t ms; long sec, usec; } cases[] = {
		{ 0, 0, 0 }, { 1, 0, 1000 }, { 999, 0, 999000 },
		{ 1000, 1, 0 }, { 1500, 1, 500000 },
		{ 86400001, 86400, 1000 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct timeval tv = util_timeval_ms(cases[i].ms);
		if (tv.tv_sec != cases[i].sec || tv.tv_usec != cases[i].usec)
			fail_msg("case %ju ms: got %ld.%06ld", (uintmax_t)
			    cases[i].ms, (long)tv.tv_sec, (long)tv.tv_usec);
	}
}

static void
test_esc_len(void **state)
{
	static const struct { const char *in; size_t want; } cases[] = {
		{ "5.1.1 No such user", 5 }, { "2.0.0", 5 },
		{ "4.123.456 x", 9 }, { "5.7.1\nmore", 5 },
		{ "", 0 }, { "5", 0 }, { "5.", 0 }, { "5.1", 0 }, { "5.1.", 0 },
		{ "3.1.1 not a class", 0 }, { "X.0.0 text", 0 },
		{ "5.1234.1 four digits", 0 }, { "5.1.1234", 0 },
		{ "5..1 empty", 0 }, { "55.1.1", 0 }, { "5.1.1x", 5 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t got = util_esc_len(cases[i].in);
		if (got != cases[i].want)
			fail_msg("case \"%s\": got %zu, want %zu",
			    cases[i].in, got, cases[i].want);
	}
}

static void
test_utf8_len(void **state)
{
	static const struct { const char *name, *in; size_t want; } cases[] = {
		{ "two", "\xc3\xb6x", 2 }, { "three", "\xe2\x82\xac", 3 },
		{ "four", "\xf0\x9f\x98\x80", 4 }, { "ascii", "a", 0 },
		{ "overlong", "\xc0\xaf", 0 }, { "surrogate", "\xed\xa0\x80", 0 },
		{ "past U+10FFFF", "\xf4\x90\x80\x80", 0 },
		{ "stray continuation", "\x80", 0 }, { "cut", "\xe2\x82", 0 },
		{ "bad second", "\xc3(", 0 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const unsigned char *p = (const unsigned char *)cases[i].in;
		size_t got = util_utf8_len(p, p + strlen(cases[i].in));
		if (got != cases[i].want)
			fail_msg("case \"%s\": got %zu, want %zu",
			    cases[i].name, got, cases[i].want);
	}
	assert_true(util_is_ascii("plain@example.org"));
	assert_true(util_is_ascii(""));
	assert_false(util_is_ascii("j\xc3\xb6rg@example.org"));
}

static void
test_idna(void **state)
{
	/* want: the A-label form, or NULL when not valid IDNA; other: the
	 * other canonical spellings, space-separated ("" when none). */
	static const struct {
		const char *name, *in, *want, *other;
	} cases[] = {
		{ "ascii", "Example.ORG", "example.org", "" },
		{ "u-label", "b\xc3\xbc" "cher.example",
		    "xn--bcher-kva.example", "xn--bcher-kva.example" },
		{ "upper u-label", "B\xc3\x9c" "CHER.Example",
		    "xn--bcher-kva.example",
		    "b\xc3\xbc" "cher.example xn--bcher-kva.example" },
		{ "capital u", "b\xc3\x9c" "cher.example",
		    "xn--bcher-kva.example",
		    "b\xc3\xbc" "cher.example xn--bcher-kva.example" },
		{ "a-label", "xn--bcher-kva.example", "xn--bcher-kva.example",
		    "b\xc3\xbc" "cher.example" },
		{ "upper a-label", "XN--BCHER-KVA.Example",
		    "xn--bcher-kva.example", "b\xc3\xbc" "cher.example" },
		{ "below", "a.b\xc3\xbc" "cher.example",
		    "a.xn--bcher-kva.example", "a.xn--bcher-kva.example" },
		{ "bad punycode", "xn--zz.example", NULL, "" },
		{ "disallowed", "\xe2\x9d\xa4.example", NULL, "" },
		{ "bad utf-8", "b\xffx.example", NULL, "" },
	};
	const char *err;
	char *got, *sp[2], other[200];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = util_idna_alabel(cases[i].in, &got, &err);
		if (cases[i].want == NULL ? rc != -1 : rc != 0 ||
		    strcmp(got, cases[i].want) != 0)
			fail_msg("case \"%s\": got %s, want %s", cases[i].name,
			    rc == 0 ? got : "an error", cases[i].want != NULL ?
			    cases[i].want : "an error");
		if (rc == 0)
			free(got);
		other[0] = '\0';
		for (size_t n = util_idna_spellings(cases[i].in, sp), k = 0;
		    k < n; k++) {
			snprintf(other + strlen(other), sizeof(other) -
			    strlen(other), "%s%s", k > 0 ? " " : "", sp[k]);
			free(sp[k]);
		}
		if (strcmp(other, cases[i].other) != 0)
			fail_msg("case \"%s\": other \"%s\", want \"%s\"",
			    cases[i].name, other, cases[i].other);
	}
}

static void
test_err(void **state)
{
	char big[2000];
	const char *e;

	(void)state;
	e = util_err("open(%s): %s", "tmp/1a2b", "No such file");
	assert_string_equal(e, "open(tmp/1a2b): No such file");
	/* An error wrapped around the last one, which is the buffer. */
	assert_string_equal(util_err("spool: %s", e),
	    "spool: open(tmp/1a2b): No such file");
	assert_ptr_equal(util_err("x"), e);	/* one buffer per thread */
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(strlen(util_err("%s", big)), 1023);	/* cut */
	errno = ENOENT;
	(void)util_err("%s", "kept");
	assert_int_equal(errno, ENOENT);
}

static void
test_strlcpy_and_safe(void **state)
{
	char small[4], buf[64];

	(void)state;
	assert_int_equal(util_strlcpy(small, "abc", sizeof(small)), 0);
	assert_int_equal(util_strlcpy(small, "abcd", sizeof(small)), -1);
	assert_string_equal(small, "abc");
	assert_int_equal(util_snprintf(small, sizeof(small), "%d", 12345), -1);
	assert_int_equal(util_strjoin(buf, sizeof(buf), "rl:", "ip", ":",
	    "10.0.0.1", NULL), 0);
	assert_string_equal(buf, "rl:ip:10.0.0.1");
	assert_int_equal(util_strjoin(small, sizeof(small), "ab", "cd", NULL),
	    -1);
	assert_string_equal(small, "abc");
	assert_int_equal(util_strjoin(small, sizeof(small), NULL), 0);
	assert_string_equal(small, "");
	char num[UTIL_DEC_MAX];
	assert_string_equal(util_i64_dec(num, 0), "0");
	assert_string_equal(util_i64_dec(num, -42), "-42");
	assert_string_equal(util_i64_dec(num, INT64_MAX), "9223372036854775807");
	assert_string_equal(util_i64_dec(num, INT64_MIN),
	    "-9223372036854775808");
	assert_string_equal(log_safe_into(buf, sizeof(buf), "a\r\n\"b", 5),
	    "a\\x0d\\x0a\\x22b");
}

/* Peer text in log lines: one escape for all of it (log_safe_into). */
static void
test_log_safe(void **state)
{
	static const struct {
		const char *name, *in, *quoted, *word;
	} cases[] = {
		{ "plain", "MAIL", "MAIL", "MAIL" },
		{ "terminal escape", "\x1b[2J\x1b]0;x\x07", "\\x1b[2J\\x1b]0;x"
		    "\\x07", "\\x1b[2J\\x1b]0;x\\x07" },
		{ "forged key", "a\" X=1", "a\\x22 X=1", "a\\x22\\x20X=1" },
		{ "backslash", "a\\x41", "a\\x5cx41", "a\\x5cx41" },
		{ "valid UTF-8", "j\xc3\xbcrg", "j\\xc3\\xbcrg",
		    "j\\xc3\\xbcrg" },
		{ "invalid UTF-8", "\xff\xc3(\xed\xa0\x80", "\\xff\\xc3(\\xed"
		    "\\xa0\\x80", "\\xff\\xc3(\\xed\\xa0\\x80" },
		{ "C1 control, DEL", "\xc2\x9b\x7f", "\\xc2\\x9b\\x7f",
		    "\\xc2\\x9b\\x7f" },
	};
	char buf[128], cut[16];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = strlen(cases[i].in);

		if (strcmp(log_safe_into(buf, sizeof(buf), cases[i].in, n),
		    cases[i].quoted) != 0)
			fail_msg("case \"%s\": got %s, want %s", cases[i].name,
			    buf, cases[i].quoted);
		if (strcmp(log_safe_word_into(buf, sizeof(buf), cases[i].in,
		    n), cases[i].word) != 0)
			fail_msg("case \"%s\" (word): got %s, want %s",
			    cases[i].name, buf, cases[i].word);
	}
	/* A full buffer cuts at a whole escape and says so. */
	assert_string_equal(log_safe_into(cut, sizeof(cut), "abcdef\x1b\x1b\x1b",
	    9), "abcdef\\x1b...");
}

static void
test_buf(void **state)
{
	struct util_buf b = { 0 };

	(void)state;
	for (int i = 0; i < 1000; i++)
		util_buf_printf(&b, "%d,", i % 10);
	assert_int_equal(b.len, 2000);
	assert_memory_equal(util_buf_cstr(&b), "0,1,2,", 6);
	util_buf_clear(&b);
	assert_null(b.data);
	/* Every length from empty, the NUL always in room (ASan watches). */
	for (size_t n = 0; n < 300; n++) {
		for (size_t i = 0; i < n; i++)
			util_buf_add(&b, "x", 1);
		assert_int_equal(strlen(util_buf_cstr(&b)), n);
		assert_int_equal(b.len, n);
		util_buf_clear(&b);
	}
	/* Reserved room takes that many bytes and a NUL in place. */
	util_buf_add(&b, "ab", 2);
	util_buf_reserve(&b, 1000);
	assert_true(b.cap >= 1003);
	char *at = b.data;
	for (size_t i = 0; i < 1000; i++)
		util_buf_add(&b, "y", 1);
	assert_ptr_equal(util_buf_cstr(&b), at);
	assert_int_equal(strlen(b.data), 1002);
	assert_memory_equal(b.data, "abyy", 4);
	util_buf_clear(&b);
}

static void
test_sockaddr_text(void **state)
{
	struct sockaddr_in s4 = { .sin_family = AF_INET,
	    .sin_port = htons(2525) };
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6,
	    .sin6_port = htons(25) };
	char ip[INET6_ADDRSTRLEN];
	int port = 0;

	(void)state;
	inet_pton(AF_INET, "192.0.2.7", &s4.sin_addr);
	inet_pton(AF_INET6, "2001:db8::1", &s6.sin6_addr);
	assert_false(util_sockaddr_text((struct sockaddr *)&s4, ip, &port));
	assert_string_equal(ip, "192.0.2.7");
	assert_int_equal(port, 2525);
	assert_true(util_sockaddr_text((struct sockaddr *)&s6, ip, &port));
	assert_string_equal(ip, "2001:db8::1");
	assert_int_equal(port, 25);
	assert_true(util_sockaddr_text((struct sockaddr *)&s6, ip, NULL));
	/* Every octet value in every place, against inet_ntop. */
	for (unsigned v = 0; v < 256; v++) {
		char want[INET_ADDRSTRLEN];
		uint8_t *b = (uint8_t *)&s4.sin_addr;
		b[0] = (uint8_t)v;
		b[1] = (uint8_t)(255 - v);
		b[2] = (uint8_t)(v * 7);
		b[3] = (uint8_t)(v / 3);
		inet_ntop(AF_INET, &s4.sin_addr, want, sizeof(want));
		util_sockaddr_text((struct sockaddr *)&s4, ip, NULL);
		assert_string_equal(ip, want);
	}
}

/* util_sockaddr_make is util_sockaddr_text's inverse; names are refused. */
static void
test_sockaddr_make(void **state)
{
	struct sockaddr_storage ss;
	char ip[INET6_ADDRSTRLEN];
	unsigned len = 0;
	int port = 0;

	(void)state;
	assert_int_equal(util_sockaddr_make("192.0.2.7", 2525, &ss, &len), 0);
	assert_int_equal(len, sizeof(struct sockaddr_in));
	assert_false(util_sockaddr_text((struct sockaddr *)&ss, ip, &port));
	assert_string_equal(ip, "192.0.2.7");
	assert_int_equal(port, 2525);
	assert_int_equal(util_sockaddr_make("2001:db8::1", 25, &ss, &len), 0);
	assert_int_equal(len, sizeof(struct sockaddr_in6));
	assert_true(util_sockaddr_text((struct sockaddr *)&ss, ip, &port));
	assert_string_equal(ip, "2001:db8::1");
	assert_int_equal(port, 25);
	assert_int_equal(util_sockaddr_make("localhost", 25, &ss, &len), -1);
	assert_int_equal(util_sockaddr_make("192.0.2.300", 25, &ss, &len),
	    -1);
	assert_int_equal(util_sockaddr_make("", 25, &ss, &len), -1);
}

struct pool_seen {
	pthread_mutex_t	mu;
	int		order[16];
	int		policy[16];
	pthread_t	thread[16];
	unsigned	n;
};

struct pool_job {
	struct pool_seen	*seen;
	int			 id;
};

static void
pool_job_run(void *arg)
{
	struct pool_job *j = arg;
	struct pool_seen *s = j->seen;

	pthread_mutex_lock(&s->mu);
	s->policy[s->n] = sched_getscheduler(0);
	s->thread[s->n] = pthread_self();
	s->order[s->n++] = j->id;
	pthread_mutex_unlock(&s->mu);
}

/*
 * One worker runs the jobs in the order submitted, all of them before
 * util_pool_free returns, and as SCHED_BATCH: waking it must not preempt
 * the event loop that submitted the job.
 */
static void
test_pool(void **state)
{
	struct pool_seen seen = { .mu = PTHREAD_MUTEX_INITIALIZER };
	struct pool_job jobs[8];
	struct util_pool *p = util_pool_new(1, 0);

	(void)state;
	for (int i = 0; i < 8; i++) {
		jobs[i] = (struct pool_job){ &seen, i };
		util_pool_submit(p, pool_job_run, &jobs[i]);
	}
	util_pool_free(&p);
	assert_null(p);
	assert_int_equal(seen.n, 8);
	for (int i = 0; i < 8; i++) {
		assert_int_equal(seen.order[i], i);
		assert_int_equal(seen.policy[i], SCHED_BATCH);
	}
}

/* Jobs seen so far, waiting up to 10 s for want of them. */
static unsigned
pool_wait_seen(struct pool_seen *s, unsigned want)
{
	unsigned n = 0;

	for (int i = 0; i < 10000; i++) {
		pthread_mutex_lock(&s->mu);
		n = s->n;
		pthread_mutex_unlock(&s->mu);
		if (n >= want)
			break;
		usleep(1000);
	}
	return n;
}

/* Have jobs first to last all run?  Waits up to 10 s for them. */
static bool
pool_wait_ran(struct pool_seen *s, int first, int last)
{
	for (int i = 0; i < 10000; i++) {
		int ran = 0;

		pthread_mutex_lock(&s->mu);
		for (unsigned k = 0; k < s->n; k++)
			ran += s->order[k] >= first && s->order[k] <= last;
		pthread_mutex_unlock(&s->mu);
		if (ran == last - first + 1)
			return true;
		usleep(1000);
	}
	return false;
}

/*
 * Held submits wake their workers at util_pool_kick, all of them with one
 * call; a held submit to another pool first wakes the one held before.
 * The pools stay up: the jobs run because of the wake-ups, not the free.
 */
static void
test_pool_held_until_kick(void **state)
{
	struct pool_seen seen = { .mu = PTHREAD_MUTEX_INITIALIZER };
	struct pool_job jobs[12];
	struct util_pool *p = util_pool_new(4, 0), *q = util_pool_new(2, 0);

	(void)state;
	for (int i = 0; i < 8; i++) {
		jobs[i] = (struct pool_job){ &seen, i };
		util_pool_submit_held(p, pool_job_run, &jobs[i]);
	}
	util_pool_kick();
	assert_int_equal(pool_wait_seen(&seen, 8), 8);
	for (int i = 8; i < 11; i++) {
		jobs[i] = (struct pool_job){ &seen, i };
		util_pool_submit_held(p, pool_job_run, &jobs[i]);
	}
	jobs[11] = (struct pool_job){ &seen, 11 };
	util_pool_submit_held(q, pool_job_run, &jobs[11]);	/* kicks p */
	/*
	 * Jobs 8 to 10 run; job 11 may too: a worker of the new pool that
	 * has not gone to sleep yet finds it without a kick.
	 */
	assert_true(pool_wait_ran(&seen, 8, 10));
	util_pool_kick();
	assert_int_equal(pool_wait_seen(&seen, 12), 12);
	util_pool_free(&p);
	util_pool_free(&q);
}

/*
 * A job that runs until its first gate opens, then, if "kernel", says it
 * waits in the kernel until its second one opens.
 */
struct pool_gate {
	struct pool_job		 job;
	pthread_mutex_t		 mu;
	pthread_cond_t		 cv;
	int			 opened;	/* gates open so far */
	bool			 kernel;
};

static void
pool_gate_wait(struct pool_gate *g, int n)
{
	pthread_mutex_lock(&g->mu);
	while (g->opened < n)
		pthread_cond_wait(&g->cv, &g->mu);
	pthread_mutex_unlock(&g->mu);
}

static void
pool_gate_run(void *arg)
{
	struct pool_gate *g = arg;

	pool_job_run(&g->job);
	pool_gate_wait(g, 1);
	if (g->kernel) {
		util_pool_block_begin();
		pool_gate_wait(g, 2);
		util_pool_block_end();
	}
}

static void
pool_gate_open(struct pool_gate *g)
{
	pthread_mutex_lock(&g->mu);
	g->opened++;
	pthread_cond_signal(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

/* Has exactly n jobs run after 200 ms? */
static bool
pool_still_seen(struct pool_seen *s, unsigned n)
{
	unsigned got;

	usleep(200 * 1000);
	pthread_mutex_lock(&s->mu);
	got = s->n;
	pthread_mutex_unlock(&s->mu);
	return got == n;
}

/*
 * With one worker allowed to run, a job waits while another runs, though
 * three workers sleep, and runs once that one is done.  A job that goes
 * to wait in the kernel leaves its place to the one waiting.
 */
static void
test_pool_maxrun(void **state)
{
	struct pool_seen seen = { .mu = PTHREAD_MUTEX_INITIALIZER };
	struct pool_gate busy = { .job = { &seen, 0 },
	    .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
	struct pool_gate syncing = { .job = { &seen, 2 },
	    .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER,
	    .kernel = true };
	struct pool_job after_busy = { &seen, 1 }, after_sync = { &seen, 3 };
	struct util_pool *p = util_pool_new(4, 1);

	(void)state;
	util_pool_submit(p, pool_gate_run, &busy);
	assert_int_equal(pool_wait_seen(&seen, 1), 1);
	util_pool_submit(p, pool_job_run, &after_busy);
	assert_true(pool_still_seen(&seen, 1));
	pool_gate_open(&busy);
	assert_true(pool_wait_ran(&seen, 1, 1));

	util_pool_submit(p, pool_gate_run, &syncing);
	assert_true(pool_wait_ran(&seen, 2, 2));
	util_pool_submit(p, pool_job_run, &after_sync);
	assert_true(pool_still_seen(&seen, 3));
	pool_gate_open(&syncing);	/* into the kernel: job 3 runs */
	assert_true(pool_wait_ran(&seen, 3, 3));
	pool_gate_open(&syncing);
	util_pool_free(&p);
	assert_int_equal(seen.n, 4);
}

/*
 * The worker woken is the one that went to sleep last (its caches are the
 * warmest): jobs submitted one at a time, each after the one before has
 * run and its worker has gone back to sleep, all run on one thread of
 * the four.
 */
static void
test_pool_wakes_the_last_sleeper(void **state)
{
	struct pool_seen seen = { .mu = PTHREAD_MUTEX_INITIALIZER };
	struct pool_job jobs[5];
	struct util_pool *p = util_pool_new(4, 0);

	(void)state;
	for (unsigned i = 0; i < 5; i++) {
		jobs[i] = (struct pool_job){ &seen, (int)i };
		usleep(100 * 1000);	/* every worker asleep */
		util_pool_submit(p, pool_job_run, &jobs[i]);
		assert_int_equal(pool_wait_seen(&seen, i + 1), i + 1);
		pthread_mutex_lock(&seen.mu);
		assert_true(pthread_equal(seen.thread[i], seen.thread[0]));
		pthread_mutex_unlock(&seen.mu);
	}
	util_pool_free(&p);
}

static void
test_cidr(void **state)
{
	static const struct { const char *net, *ip; int rc; bool in; } cases[] = {
		{ "192.0.2.0/24", "192.0.2.77", 0, true },
		{ "192.0.2.0/24", "192.0.3.1", 0, false },
		{ "192.0.2.9/24", "192.0.2.1", 0, true },	/* host bits */
		{ "10.0.0.1", "10.0.0.1", 0, true },
		{ "10.0.0.1", "10.0.0.2", 0, false },
		{ "0.0.0.0/0", "203.0.113.5", 0, true },
		{ "172.16.0.0/12", "172.31.255.255", 0, true },
		{ "172.16.0.0/12", "172.32.0.0", 0, false },
		{ "2001:db8::/32", "2001:db8:ffff::1", 0, true },
		{ "2001:db8::/32", "192.0.2.1", 0, false },
		{ "192.0.2.0/24", "::ffff:192.0.2.1", 0, false },
		{ "::1", "::1", 0, true },
		{ "192.0.2.0/33", NULL, -1, false },
		{ "192.0.2.0/", NULL, -1, false },
		{ "192.0.2.0/2x", NULL, -1, false },
		{ "example.org/8", NULL, -1, false },
		{ "/8", NULL, -1, false },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct util_cidr c;
		int rc = util_cidr_parse(cases[i].net, &c);
		if (rc != cases[i].rc)
			fail_msg("case \"%s\": got %d, want %d", cases[i].net,
			    rc, cases[i].rc);
		if (rc == 0 && util_cidr_contains(&c, cases[i].ip) !=
		    cases[i].in)
			fail_msg("case \"%s\" has %s: got %d", cases[i].net,
			    cases[i].ip, !cases[i].in);
	}
}

/* A file of n bytes in dir, last modified at epoch second t. */
static void
capdir_put(const char *dir, const char *name, size_t n, time_t t)
{
	char path[512], buf[256] = { 0 };
	struct timespec ts[2] = { { t, 0 }, { t, 0 } };
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd != -1);
	for (size_t left = n; left > 0; ) {
		size_t k = left < sizeof(buf) ? left : sizeof(buf);
		assert_int_equal(write(fd, buf, k), (ssize_t)k);
		left -= k;
	}
	assert_int_equal(futimens(fd, ts), 0);
	close(fd);
}

static bool
capdir_has(const char *dir, const char *name)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return access(path, F_OK) == 0;
}

static void
test_capdir(void **state)
{
	char dir[] = "/tmp/postern-capdir-XXXXXX";
	const char *err = NULL;
	uint64_t removed = 0;

	(void)state;
	assert_non_null(mkdtemp(dir));
	/* Named against their age: the mtime decides, not the name. */
	capdir_put(dir, "c-oldest", 400, 1000);
	capdir_put(dir, "b-middle", 400, 2000);
	capdir_put(dir, "a-newest", 400, 3000);
	struct util_capdir *d = util_capdir_new(dir, 1000, &err);
	assert_non_null(d);
	assert_false(capdir_has(dir, "c-oldest"));
	assert_true(capdir_has(dir, "b-middle") && capdir_has(dir, "a-newest"));
	assert_int_equal(util_capdir_total(d, &removed), 800);
	assert_int_equal(removed, 1);

	/* A file being written pushes the old ones out, never itself. */
	capdir_put(dir, "writing", 0, 4000);
	struct util_capfile *f = util_capdir_open(d, "writing");
	util_capdir_grow(d, f, 300);
	assert_false(capdir_has(dir, "b-middle"));
	assert_true(capdir_has(dir, "a-newest"));
	util_capdir_grow(d, f, 2000);
	assert_false(capdir_has(dir, "a-newest"));
	assert_true(capdir_has(dir, "writing"));
	assert_int_equal(util_capdir_total(d, NULL), 2300);
	/* Written, and still over: it goes in its turn. */
	util_capdir_close(d, &f);
	assert_null(f);
	assert_false(capdir_has(dir, "writing"));
	assert_int_equal(util_capdir_total(d, NULL), 0);

	/* Whole files added; a lower cap prunes at once. */
	capdir_put(dir, "k1", 500, 5000);
	assert_int_equal(util_capdir_add(d, "k1", 500, &err), 0);
	capdir_put(dir, "k2", 500, 6000);
	assert_int_equal(util_capdir_add(d, "k2", 500, &err), 0);
	assert_true(capdir_has(dir, "k1") && capdir_has(dir, "k2"));
	/* One over the cap on its own is refused, and removes nothing. */
	capdir_put(dir, "huge", 1001, 6500);
	assert_int_equal(util_capdir_add(d, "huge", 1001, &err), -1);
	assert_non_null(strstr(err, "huge: 1001 octets, more than the "
	    "folder's cap of 1000"));
	assert_true(capdir_has(dir, "k1") && capdir_has(dir, "k2"));
	assert_int_equal(util_capdir_total(d, NULL), 1000);
	capdir_put(dir, "k3", 100, 7000);
	assert_int_equal(util_capdir_add(d, "k3", 100, &err), 0);
	assert_false(capdir_has(dir, "k1"));
	util_capdir_set_max(d, 200);
	assert_false(capdir_has(dir, "k2"));
	assert_true(capdir_has(dir, "k3"));

	/* The folder removed while in use: made again, and counted anew. */
	char huge[sizeof(dir) + 8];
	snprintf(huge, sizeof(huge), "%s/huge", dir);
	assert_int_equal(unlink(huge), 0);
	char k3[sizeof(dir) + 8];
	snprintf(k3, sizeof(k3), "%s/k3", dir);
	assert_int_equal(unlink(k3), 0);
	assert_int_equal(rmdir(dir), 0);
	errno = EACCES;
	assert_false(util_capdir_remade(d));	/* not a missing file */
	errno = ENOENT;
	assert_true(util_capdir_remade(d));
	assert_int_equal(util_capdir_total(d, NULL), 0);
	int fd = openat(util_capdir_fd(d), "k4", O_WRONLY | O_CREAT, 0600);
	assert_true(fd != -1);
	close(fd);
	assert_true(capdir_has(dir, "k4"));
	errno = ENOENT;
	assert_false(util_capdir_remade(d));	/* there: not its fault */
	assert_int_equal(errno, ENOENT);
	util_capdir_free(&d);
	assert_null(d);
	char k4[sizeof(dir) + 8];
	snprintf(k4, sizeof(k4), "%s/k4", dir);
	assert_int_equal(unlink(k4), 0);
	assert_int_equal(rmdir(dir), 0);
}

/*
 * The date is the C locale's strftime "%a, %d %b %Y %H:%M:%S %z" of the
 * local time, in zones east and west, half-hour ones, across daylight
 * saving changes, and for years outside four digits.
 */
static void
test_rfc5322_date(void **state)
{
	static const char *zones[] = { "UTC", "Europe/Berlin",
	    "America/St_Johns", "Asia/Kolkata", "Pacific/Chatham",
	    "America/Los_Angeles", "Australia/Lord_Howe" };
	static const int64_t fixed[] = { 0, -1, 951782400, 1774745999,
	    1774746000, 1792889999, 1792890000, 4102444799, -30000000000,
	    253402300799, 253402300800, -62135596800 };
	char got[64], want[64];

	(void)state;
	for (size_t z = 0; z < sizeof(zones) / sizeof(zones[0]); z++) {
		setenv("TZ", zones[z], 1);
		tzset();
		for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]) +
		    4000; i++) {
			/* then every 2 h 17 min 13 s over about 1.04 years */
			int64_t t = i < sizeof(fixed) / sizeof(fixed[0]) ?
			    fixed[i] : 1767225600 + (int64_t)i * 8233;
			time_t tt = (time_t)t;
			struct tm tm;
			assert_non_null(localtime_r(&tt, &tm));
			assert_true(strftime(want, sizeof(want),
			    "%a, %d %b %Y %H:%M:%S %z", &tm) > 0);
			util_rfc5322_date(got, sizeof(got), t);
			assert_string_equal(got, want);
		}
	}
	setenv("TZ", "UTC", 1);
	tzset();
	util_rfc5322_date(got, sizeof(got), 1780000000);
	assert_string_equal(got, "Thu, 28 May 2026 20:26:40 +0000");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_timeval_ms),
		cmocka_unit_test(test_esc_len),
		cmocka_unit_test(test_utf8_len),
		cmocka_unit_test(test_idna),
		cmocka_unit_test(test_err),
		cmocka_unit_test(test_strlcpy_and_safe),
		cmocka_unit_test(test_log_safe),
		cmocka_unit_test(test_buf),
		cmocka_unit_test(test_rfc5322_date),
		cmocka_unit_test(test_sockaddr_text),
		cmocka_unit_test(test_sockaddr_make),
		cmocka_unit_test(test_pool),
		cmocka_unit_test(test_pool_held_until_kick),
		cmocka_unit_test(test_pool_maxrun),
		cmocka_unit_test(test_pool_wakes_the_last_sleeper),
		cmocka_unit_test(test_cidr),
		cmocka_unit_test(test_capdir),
	};
	return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
