/* Unit tests of log/: event lines on stderr, buffered per thread. */
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
#include <sys/wait.h>
#include <unistd.h>

#include <sys/stat.h>

#include "log/log_private.h"
#include "util/util.h"

static char logpath[] = "/tmp/postern-test-log.XXXXXX";
static int saved_stderr = -1;

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
	log_init(false, NULL, LOG_LVL_INFO);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	log_buffer(false);
	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	unlink(logpath);
	strcpy(logpath + strlen(logpath) - 6, "XXXXXX");
	return 0;
}

/* What the file holds now: event names in order, one per line. */
static char *
logged(void)
{
	static char out[65536];
	char buf[65536];
	FILE *f = fopen(logpath, "r");
	size_t o = 0;

	out[0] = '\0';
	if (f == NULL)
		return out;
	while (fgets(buf, sizeof(buf), f) != NULL) {
		/* "<time> <level> <event> ..." */
		char *ev = strchr(buf, ' ');
		ev = ev != NULL ? strchr(ev + 1, ' ') : NULL;
		assert_non_null(ev);
		assert_non_null(strchr(buf, '\n'));
		o += (size_t)snprintf(out + o, sizeof(out) - o, "%.*s,",
		    (int)strcspn(ev + 1, " \n"), ev + 1);
	}
	fclose(f);
	return out;
}

static void
test_unbuffered_lines_go_out_at_once(void **state)
{
	(void)state;
	log_event(LOG_LVL_INFO, "one", "s1", NULL, "k=%d", 1);
	log_event(LOG_LVL_DEBUG, "hidden", "s1", NULL, "k=%d", 2);
	assert_string_equal(logged(), "one,");
}

/*
 * Buffered lines wait for log_flush; a warning or an error flushes them,
 * then goes out itself.
 */
static void
test_buffered_lines_wait_for_the_flush(void **state)
{
	(void)state;
	log_buffer(true);
	log_event(LOG_LVL_INFO, "one", "s1", NULL, "k=1");
	log_event(LOG_LVL_INFO, "two", "s1", "q1", "k=2");
	assert_string_equal(logged(), "");
	log_flush();
	assert_string_equal(logged(), "one,two,");
	log_event(LOG_LVL_INFO, "w1", NULL, NULL, NULL);
	log_event(LOG_LVL_WARN, "w2", NULL, NULL, NULL);
	assert_string_equal(logged(), "one,two,w1,w2,");
	log_event(LOG_LVL_INFO, "three", NULL, NULL, NULL);
	log_event(LOG_LVL_ERROR, "four", NULL, NULL, NULL);
	assert_string_equal(logged(), "one,two,w1,w2,three,four,");
	log_event(LOG_LVL_INFO, "five", NULL, NULL, NULL);
	log_buffer(false);
	assert_string_equal(logged(), "one,two,w1,w2,three,four,five,");
}

/* A full buffer is written before the line that would not fit: whole lines. */
static void
test_full_buffer_writes_whole_lines(void **state)
{
	char big[1500];
	char want[4096] = "";

	(void)state;
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	log_buffer(true);
	for (int i = 0; i < 40; i++) {
		log_event(LOG_LVL_INFO, "e", NULL, NULL, "n=%d pad=%s", i, big);
		strcat(want, "e,");
	}
	/* 40 lines of about 1.5 KB: more than the buffer, so some are out. */
	assert_true(strlen(logged()) > 0);
	assert_true(strlen(logged()) < strlen(want));
	log_flush();
	assert_string_equal(logged(), want);
}

/*
 * A worker's diverted lines gather in the caller's buffer, not the file;
 * its warning writes them first, then itself.  A loop hands them to
 * log_put: buffered with its own lines, in their order, until its flush.
 */
static void
test_diverted_lines_go_out_with_the_loop(void **state)
{
	struct util_buf lines = { 0 };

	(void)state;
	log_divert(&lines);
	log_event(LOG_LVL_INFO, "delivered", "s1", "q1", "rcpt=<a@b>");
	log_event(LOG_LVL_DEBUG, "hidden", NULL, NULL, NULL);
	log_event(LOG_LVL_INFO, "two", NULL, NULL, NULL);
	log_divert(NULL);
	assert_string_equal(logged(), "");
	assert_non_null(strstr(lines.data, " info delivered sid=s1 qid=q1 "
	    "rcpt=<a@b>\n"));

	log_buffer(true);
	log_event(LOG_LVL_INFO, "before", NULL, NULL, NULL);
	log_put(lines.data, lines.len);
	log_event(LOG_LVL_INFO, "accepted", NULL, NULL, NULL);
	assert_string_equal(logged(), "");
	log_flush();
	assert_string_equal(logged(), "before,delivered,two,accepted,");
	log_buffer(false);

	util_buf_reset(&lines);
	log_divert(&lines);
	log_event(LOG_LVL_INFO, "three", NULL, NULL, NULL);
	log_event(LOG_LVL_WARN, "trouble", NULL, NULL, NULL);
	log_event(LOG_LVL_INFO, "four", NULL, NULL, NULL);
	log_divert(NULL);
	assert_string_equal(logged(),
	    "before,delivered,two,accepted,three,trouble,");
	log_put(lines.data, lines.len);		/* unbuffered: at once */
	assert_string_equal(logged(),
	    "before,delivered,two,accepted,three,trouble,four,");
	util_buf_clear(&lines);
}

/* fatal() writes the thread's buffered lines before its own. */
static void
test_fatal_flushes_the_buffer_first(void **state)
{
	char buf[4096];
	int status = 0;
	pid_t pid;

	(void)state;
	log_buffer(true);
	log_event(LOG_LVL_INFO, "before", "s1", NULL, "k=1");
	if ((pid = fork()) == 0)
		fatal("boom %d", 7);
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 1);
	/* Ours is still buffered here: the child wrote its own copy. */
	int fd = open(logpath, O_RDONLY);
	assert_true(fd != -1);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_true(n > 0);
	buf[n] = '\0';
	char *before = strstr(buf, " before sid=s1 k=1\n");
	char *boom = strstr(buf, "postern: fatal: boom 7\n");
	if (before == NULL || boom == NULL || before > boom)
		fail_msg("got:\n%s", buf);
	log_buffer(false);
}

/* log_json_line: the fields of a key=value line, as JSON. */
static void
test_json_line(void **state)
{
	static const struct {
		const char *name, *event, *rest, *want;
	} cases[] = {
		{ "event", "reject", "stage=rcpt code=550 esc=5.7.1 "
		  "why=\"Relay access denied\"",
		  "{\"time\":\"T\",\"level\":\"info\",\"event\":\"reject\","
		  "\"stage\":\"rcpt\",\"code\":\"550\","
		  "\"esc\":\"5.7.1\",\"why\":\"Relay access denied\"}\n" },
		{ "prose", NULL, "listening on 127.0.0.1:25",
		  "{\"time\":\"T\",\"level\":\"info\","
		  "\"msg\":\"listening on 127.0.0.1:25\"}\n" },
		{ "mixed", NULL, "postern started: hostname=h workers=2",
		  "{\"time\":\"T\",\"level\":\"info\",\"hostname\":\"h\","
		  "\"workers\":\"2\",\"msg\":\"postern started:\"}\n" },
		{ "escapes kept as text", "helo", "name=\"a\\x22b\\x5c\"",
		  "{\"time\":\"T\",\"level\":\"info\",\"event\":\"helo\","
		  "\"name\":\"a\\\\x22b\\\\x5c\"}\n" },
		{ "empty value", "accepted", "state=\"\" to=",
		  "{\"time\":\"T\",\"level\":\"info\",\"event\":\"accepted\","
		  "\"state\":\"\",\"to\":\"\"}\n" },
		{ "keys of the line's own are text", NULL,
		  "a level=error event=forged sid=1 qid=2 time=3 truncated=4",
		  "{\"time\":\"T\",\"level\":\"info\",\"msg\":\"a level=error "
		  "event=forged sid=1 qid=2 time=3 truncated=4\"}\n" },
		{ "a key given twice", "rcpt", "to=<a> x=\"1 2\" to=<b> x=\"3 y=4\"",
		  "{\"time\":\"T\",\"level\":\"info\",\"event\":\"rcpt\","
		  "\"to\":\"<a>\",\"x\":\"1 2\","
		  "\"msg\":\"to=<b> x=\\\"3 y=4\\\"\"}\n" },
		{ "msg given", "lua", "script=\"s\" msg=\"is x level=error\" end",
		  "{\"time\":\"T\",\"level\":\"info\",\"event\":\"lua\","
		  "\"script\":\"s\",\"msg\":\"is x level=error end\"}\n" },
	};
	char out[4096];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct log_json_head h = { "T", "info", cases[i].event, NULL,
		    NULL };
		size_t n = log_json_line(out, sizeof(out), &h, cases[i].rest);
		out[n] = '\0';
		if (strcmp(out, cases[i].want) != 0)
			fail_msg("case \"%s\": got %s want %s", cases[i].name,
			    out, cases[i].want);
	}
	/* Too long for the buffer: whole fields, then "truncated". */
	char rest[3000];
	size_t o = 0;
	for (int k = 0; o + 20 < sizeof(rest); k++)
		o += (size_t)snprintf(rest + o, sizeof(rest) - o, "k%d=v%d ", k,
		    k);
	struct log_json_head h = { "T", "info", "e", "s1", NULL };
	size_t n = log_json_line(out, 512, &h, rest);
	out[n] = '\0';
	assert_true(n <= 512);
	assert_non_null(strstr(out, ",\"truncated\":true}\n"));
	assert_null(strstr(out, ":\"v,"));	/* no field cut in two */
}

static size_t
file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (size_t)st.st_size : 0;
}

/* log_file_set with a size: path.1 .. path.keep, whole lines, no more. */
static void
test_file_rotation(void **state)
{
	char dir[] = "/tmp/postern-test-rot.XXXXXX", path[256], name[300];
	const char *err = NULL;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/p.log", dir);
	assert_false(log_has_file());
	assert_int_equal(log_file_set(path, 4096, 2, &err), 0);
	assert_true(log_has_file());
	for (int i = 0; i < 400; i++)
		log_event(LOG_LVL_INFO, "e", NULL, NULL, "n=%d pad=%050d", i,
		    0);
	for (int k = 1; k <= 2; k++) {
		snprintf(name, sizeof(name), "%s.%d", path, k);
		assert_true(file_size(name) >= 4096);
		assert_true(file_size(name) < 4096 + 200);
	}
	snprintf(name, sizeof(name), "%s.3", path);
	assert_int_equal(access(name, F_OK), -1);
	assert_true(file_size(path) < 4096 + 200);
	/* The newest line is in the file, whole. */
	FILE *f = fopen(path, "r");
	char line[512], last[512] = "";
	while (fgets(line, sizeof(line), f) != NULL)
		strcpy(last, line);
	fclose(f);
	assert_non_null(strstr(last, " e n=399 pad="));
	/* A reopen after a rename writes to a new file. */
	snprintf(name, sizeof(name), "%s.moved", path);
	assert_int_equal(rename(path, name), 0);
	assert_int_equal(log_file_reopen(&err), 0);
	log_event(LOG_LVL_INFO, "after", NULL, NULL, "k=1");
	assert_true(file_size(path) > 0);
	assert_int_equal(log_file_set(NULL, 0, 0, &err), 0);
	assert_false(log_has_file());
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
		    test_unbuffered_lines_go_out_at_once, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_buffered_lines_wait_for_the_flush, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_full_buffer_writes_whole_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_fatal_flushes_the_buffer_first, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_diverted_lines_go_out_with_the_loop, setup, teardown),
		cmocka_unit_test(test_json_line),
		cmocka_unit_test_setup_teardown(test_file_rotation, setup,
		    teardown),
	};
	return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
