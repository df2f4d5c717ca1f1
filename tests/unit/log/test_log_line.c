/*
 * Unit tests of log/: the exact bytes of an event line in each form (plain
 * text, JSON, with the journal's "<N>" before it), the time stamp, and
 * what a line too long for the buffers keeps.
 */
#include "log/log.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "log/log_private.h"
#include "util/util.h"

enum { REST_MAX = 2047, LINE_MAX_ = 4095, STAMP_LEN = 27 };

static char logpath[] = "/tmp/postern-test-logline.XXXXXX";
static int saved_stderr = -1;
static char got[16384];
static struct timespec t_before;

/* stderr goes to a fresh file for each test. */
static int
setup(void **state)
{
	int fd = mkstemp(logpath);

	(void)state;
	if (fd == -1)
		return -1;
	saved_stderr = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
	unsetenv("JOURNAL_STREAM");
	log_set_json(false);
	log_init(false, NULL, LOG_LVL_INFO);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	unsetenv("JOURNAL_STREAM");
	log_set_json(false);
	log_init(false, NULL, LOG_LVL_INFO);
	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	unlink(logpath);
	strcpy(logpath + strlen(logpath) - 6, "XXXXXX");
	return 0;
}

/* Empty the file and note the time: a line's stamp is not before it. */
static void
start(void)
{
	assert_int_equal(ftruncate(STDERR_FILENO, 0), 0);
	assert_int_equal(lseek(STDERR_FILENO, 0, SEEK_SET), 0);
	clock_gettime(CLOCK_REALTIME, &t_before);
}

/* What the file holds now (NUL-terminated); its length. */
static size_t
logged(void)
{
	int fd = open(logpath, O_RDONLY);
	ssize_t n;

	assert_true(fd != -1);
	n = read(fd, got, sizeof(got) - 1);
	close(fd);
	assert_true(n >= 0);
	got[n] = '\0';
	return (size_t)n;
}

/*
 * s is "2026-01-02T03:04:05.123456Z" for a time from start() to now, to
 * the microsecond.
 */
static void
check_stamp(const char *s)
{
	struct timespec t_after;
	struct tm tm = { 0 };
	long usec = 0;
	char *end;

	clock_gettime(CLOCK_REALTIME, &t_after);
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	assert_non_null(end);
	assert_int_equal(end - s, 19);
	assert_int_equal(end[0], '.');
	for (int i = 1; i <= 6; i++) {
		assert_true(end[i] >= '0' && end[i] <= '9');
		usec = usec * 10 + (end[i] - '0');
	}
	assert_int_equal(end[7], 'Z');
	int64_t at = (int64_t)timegm(&tm) * 1000000 + usec;
	int64_t lo = (int64_t)t_before.tv_sec * 1000000 +
	    t_before.tv_nsec / 1000;
	int64_t hi = (int64_t)t_after.tv_sec * 1000000 +
	    t_after.tv_nsec / 1000;
	if (at < lo || at > hi)
		fail_msg("stamp %.27s not in [%lld, %lld]", s, (long long)lo,
		    (long long)hi);
}

/* The file holds exactly one line: prefix, a stamp, then want. */
static void
want_line(const char *prefix, const char *want)
{
	size_t n = logged(), p = strlen(prefix);

	if (n != p + STAMP_LEN + strlen(want) ||
	    strncmp(got, prefix, p) != 0 ||
	    strcmp(got + p + STAMP_LEN, want) != 0)
		fail_msg("got \"%s\"\nwant \"%s<stamp>%s\"", got, prefix, want);
	check_stamp(got + p);
}

static void
test_plain_lines(void **state)
{
	(void)state;
	start();
	log_event(LOG_LVL_INFO, "mail", "s1", "q1", "from=<%s> size=%d",
	    "a@b", 5);
	want_line("", " info mail sid=s1 qid=q1 from=<a@b> size=5\n");
	start();
	log_event(LOG_LVL_WARN, "rcpt", "s2", NULL, "to=<%s>", "c@d");
	want_line("", " warn rcpt sid=s2 to=<c@d>\n");
	start();
	log_event(LOG_LVL_ERROR, "boom", NULL, "q3", "k=v");
	want_line("", " error boom qid=q3 k=v\n");
	start();
	log_event(LOG_LVL_INFO, "connect", NULL, NULL, NULL);
	want_line("", " info connect\n");
	start();
	log_event(LOG_LVL_INFO, "disconnect", "s1", NULL, NULL);
	want_line("", " info disconnect sid=s1\n");
	start();
	log_event(LOG_LVL_INFO, "e", "s1", "q1", NULL);
	want_line("", " info e sid=s1 qid=q1\n");
	start();
	log_event(LOG_LVL_INFO, "e", NULL, NULL, "%s", "");
	want_line("", " info e\n");
	start();
	/* Blanks at the end go, also those of fmt. */
	log_event(LOG_LVL_INFO, "e", "s1", NULL, "k=v  ");
	want_line("", " info e sid=s1 k=v\n");
	start();
	log_event(LOG_LVL_INFO, "e", "s1", NULL, "  ");
	want_line("", " info e sid=s1\n");
	start();
	log_msg(LOG_LVL_INFO, "listening on %s:%d", "127.0.0.1", 25);
	want_line("", " info listening on 127.0.0.1:25\n");
	start();
	log_msg(LOG_LVL_WARN, "%s", "");
	want_line("", " warn\n");
	start();
	/* A NUL the format makes ends the text. */
	log_msg(LOG_LVL_INFO, "a%cb", 0);
	want_line("", " info a\n");
	start();
	/* Control bytes a library's text brings in never break the line. */
	log_msg(LOG_LVL_WARN, "unavailable: %s; fails", "refused\n\tIs it "
	    "running?\r\x7f");
	want_line("", " warn unavailable: refused\\x0a\\x09Is it running?"
	    "\\x0d\\x7f; fails\n");
	start();
	{
		char nl[2001];
		size_t n;

		memset(nl, '\n', 2000);
		nl[2000] = '\0';
		log_msg(LOG_LVL_INFO, "%s", nl);
		n = logged();
		assert_true(n <= LINE_MAX_ && got[n - 1] == '\n');
		assert_null(memchr(got, '\n', n - 1));
		assert_memory_equal(got + n - 5, "\\x0a\n", 5);
	}
	start();
	log_event(LOG_LVL_DEBUG, "hidden", "s1", NULL, "k=1");
	assert_int_equal(logged(), 0);
	log_init(false, NULL, LOG_LVL_DEBUG);
	start();
	log_event(LOG_LVL_DEBUG, "shown", "s1", NULL, "k=1");
	want_line("", " debug shown sid=s1 k=1\n");
}

/* The text after the event is cut at 2047 octets, then its end blanks. */
static void
test_long_rest_is_cut(void **state)
{
	static char big[5000], want[6000];

	(void)state;
	memset(big, 'y', sizeof(big) - 1);
	start();
	log_event(LOG_LVL_INFO, "e", "s1", "q1", "pad=%s", big);
	snprintf(want, sizeof(want), " info e sid=s1 qid=q1 pad=%.*s\n",
	    REST_MAX - 18, big);
	want_line("", want);

	/* The cut lands after a blank: that blank goes too. */
	memset(big, 'a', sizeof(big) - 1);
	big[REST_MAX - 7 - 1] = ' ';
	big[REST_MAX - 7 - 2] = ' ';
	start();
	log_event(LOG_LVL_INFO, "e", "s1", NULL, "%s", big);
	snprintf(want, sizeof(want), " info e sid=s1 %.*s\n",
	    REST_MAX - 7 - 2, big);
	want_line("", want);

	/* A sid too long: cut, and neither qid nor fmt follows. */
	memset(big, 's', sizeof(big) - 1);
	start();
	log_event(LOG_LVL_INFO, "e", big, "q1", "k=v");
	snprintf(want, sizeof(want), " info e sid=%.*s\n", REST_MAX - 4, big);
	want_line("", want);

	/* A qid too long: cut after the sid, and no fmt. */
	start();
	log_event(LOG_LVL_INFO, "e", "s1", big, "k=v");
	snprintf(want, sizeof(want), " info e sid=s1 qid=%.*s\n",
	    REST_MAX - 11, big);
	want_line("", want);
}

/* A line over its buffer keeps its first 4094 octets and its newline. */
static void
test_long_line_is_cut(void **state)
{
	/* stamp, " info ", the event, " sid=s1 k=v", newline: 4095. */
	enum { EV_FITS = LINE_MAX_ - STAMP_LEN - 6 - 11 - 1 };
	static char ev[5000];
	size_t n;

	(void)state;
	memset(ev, 'v', sizeof(ev) - 1);
	start();
	log_event(LOG_LVL_INFO, ev, "s1", NULL, "k=v");
	n = logged();
	assert_int_equal(n, LINE_MAX_);
	assert_memory_equal(got + STAMP_LEN, " info vvv", 9);
	assert_int_equal(got[n - 2], 'v');
	assert_int_equal(got[n - 1], '\n');
	check_stamp(got);

	/* Just fits: 4094 octets and the newline, nothing cut. */
	ev[EV_FITS] = '\0';
	start();
	log_event(LOG_LVL_INFO, ev, "s1", NULL, "k=v");
	n = logged();
	assert_int_equal(n, LINE_MAX_);
	assert_memory_equal(got + n - 13, "v sid=s1 k=v\n", 13);

	/* The journal's "<6>" counts toward the 4094. */
	ev[EV_FITS] = 'v';
	struct stat st;
	char js[64];
	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
	    (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", js, 1);
	log_init(false, NULL, LOG_LVL_INFO);
	start();
	log_event(LOG_LVL_INFO, ev, "s1", NULL, "k=v");
	n = logged();
	assert_int_equal(n, LINE_MAX_);
	assert_memory_equal(got, "<6>", 3);
	assert_memory_equal(got + 3 + STAMP_LEN, " info vvv", 9);
	assert_int_equal(got[n - 2], 'v');
	assert_int_equal(got[n - 1], '\n');
}

/* Under systemd's journal each line starts with its priority. */
static void
test_journal_lines(void **state)
{
	struct stat st;
	char js[64];

	(void)state;
	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
	    (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", js, 1);
	log_init(false, NULL, LOG_LVL_DEBUG);
	start();
	log_event(LOG_LVL_INFO, "mail", "s1", "q1", "from=<%s>", "a@b");
	want_line("<6>", " info mail sid=s1 qid=q1 from=<a@b>\n");
	start();
	log_event(LOG_LVL_ERROR, "e", NULL, NULL, NULL);
	want_line("<3>", " error e\n");
	start();
	log_event(LOG_LVL_WARN, "e", "s1", NULL, NULL);
	want_line("<4>", " warn e sid=s1\n");
	start();
	log_msg(LOG_LVL_DEBUG, "x=%d", 1);
	want_line("<7>", " debug x=1\n");

	/* Another stream than stderr's: no prefix. */
	setenv("JOURNAL_STREAM", "1:2", 1);
	log_init(false, NULL, LOG_LVL_INFO);
	start();
	log_event(LOG_LVL_INFO, "e", NULL, NULL, NULL);
	want_line("", " info e\n");
}

/* "log format json": the same fields, as one JSON object a line. */
static void
test_json_lines(void **state)
{
	struct stat st;
	char js[64];

	(void)state;
	log_set_json(true);
	start();
	log_event(LOG_LVL_INFO, "mail", "s1", "q1", "from=<%s> size=%d",
	    "a@b", 5);
	want_line("{\"time\":\"", "\",\"level\":\"info\",\"event\":\"mail\","
	    "\"sid\":\"s1\",\"qid\":\"q1\",\"from\":\"<a@b>\",\"size\":\"5\"}"
	    "\n");
	start();
	log_event(LOG_LVL_WARN, "e", "s1", NULL, "why=\"no  way\" ");
	want_line("{\"time\":\"", "\",\"level\":\"warn\",\"event\":\"e\","
	    "\"sid\":\"s1\",\"why\":\"no  way\"}\n");
	start();
	log_msg(LOG_LVL_INFO, "listening on %s", "127.0.0.1:25");
	want_line("{\"time\":\"", "\",\"level\":\"info\","
	    "\"msg\":\"listening on 127.0.0.1:25\"}\n");
	start();
	log_event(LOG_LVL_ERROR, "e", NULL, NULL, NULL);
	want_line("{\"time\":\"", "\",\"level\":\"error\",\"event\":\"e\"}\n");

	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
	    (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", js, 1);
	log_init(false, NULL, LOG_LVL_INFO);
	start();
	log_event(LOG_LVL_WARN, "e", "s1", NULL, "k=v");
	want_line("<4>{\"time\":\"", "\",\"level\":\"warn\",\"event\":\"e\","
	    "\"sid\":\"s1\",\"k\":\"v\"}\n");
}

/* A JSON line from a text cut at 2047 octets (the sid not in them): the
 * cut field is whole. */
static void
test_json_long_rest(void **state)
{
	static char big[3000], want[4096];

	(void)state;
	memset(big, 'y', sizeof(big) - 1);
	log_set_json(true);
	start();
	log_event(LOG_LVL_INFO, "e", "s1", NULL, "pad=%s", big);
	snprintf(want, sizeof(want), "\",\"level\":\"info\",\"event\":\"e\","
	    "\"sid\":\"s1\",\"pad\":\"%.*s\"}\n", REST_MAX - 4, big);
	want_line("{\"time\":\"", want);
}

/* log_format(fmt) is vsnprintf(fmt), whatever the room, cut or not. */
static void check_format(const char *fmt, ...) UTIL_PRINTF(1, 2);

static void
check_format(const char *fmt, ...)
{
	char want[512], got_[512];
	va_list ap, a1, a2;
	int full;

	va_start(ap, fmt);
	va_copy(a1, ap);
	full = vsnprintf(want, sizeof(want), fmt, a1);
	va_end(a1);
	assert_true(full >= 0 && (size_t)full + 2 < sizeof(want));
	for (size_t size = 1; size <= (size_t)full + 2; size++) {
		va_copy(a1, ap);
		va_copy(a2, ap);
		memset(got_, 'z', sizeof(got_));
		size_t n = log_format(got_, size, fmt, a1);
		vsnprintf(want, size, fmt, a2);
		va_end(a1);
		va_end(a2);
		if (strcmp(got_, want) != 0 || n != strlen(want))
			fail_msg("\"%s\" in %zu: got \"%s\" (%zu) want \"%s\"",
			    fmt, size, got_, n, want);
		assert_int_equal(got_[size], 'z');	/* nothing past it */
	}
	va_end(ap);
}

static void
test_format_is_vsnprintf(void **state)
{
	const char *volatile null = NULL;

	(void)state;
	check_format("ip=%s port=%d loop=%u", "127.0.0.1", 25, 0u);
	check_format("%d %d %d %d", INT_MIN, INT_MAX, -1, 0);
	check_format("%i %u %u", -7, 4000000000u, UINT_MAX);
	check_format("%ld %ld %lu", LONG_MIN, LONG_MAX, ULONG_MAX);
	check_format("%lld %llu", LLONG_MIN, ULLONG_MAX);
	check_format("%zd %zu %zu", (ssize_t)-5, (size_t)0, SIZE_MAX);
	check_format("%jd %jd %ju", INTMAX_MIN, INTMAX_MAX, UINTMAX_MAX);
	check_format("100%% sure: %s%%", "yes");
	check_format("[%.*s|%.*s|%.*s|%.*s]", 3, "abcdef", -1, "abc", 0,
	    "abc", 10, "ab");
	check_format("%s%s<%s>", "", "a", "");
	check_format("size=%ju rcpts=%zu from=<%s> state=\"%s\"",
	    (uintmax_t)4293, (size_t)1, "a@b", "");
	/* Not made here: to vsnprintf whole, also after ours. */
	check_format("%x %5d %-3s|", 255u, 42, "a");
	check_format("a=%s b=%x c=%d", "s", 0xabcu, 3);
	check_format("%c%c", 'q', 'r');
	check_format("<%s> <%.*s>", null, 3, null);
	check_format("%.3s %05u %+d", "abcdef", 7u, 7);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_plain_lines, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_long_rest_is_cut, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_long_line_is_cut, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_journal_lines, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_json_lines, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_json_long_rest, setup,
		    teardown),
		cmocka_unit_test(test_format_is_vsnprintf),
	};
	return cmocka_run_group_tests_name("log_line", tests, NULL, NULL);
}
