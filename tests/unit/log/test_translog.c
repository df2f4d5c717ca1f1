/*
 * Unit tests of log/translog.c: what the writer thread puts in the files
 * (marks, order, timestamps, content lines, the end-of-data line), the
 * command-only and reply-only variants, the content bound, the per-file
 * cap and the folder's total (oldest files removed first).
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

#include <dirent.h>
#include <regex.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/util.h"

static char dir[] = "/tmp/postern-translog-XXXXXX";

static int
setup(void **state)
{
	(void)state;
	strcpy(dir, "/tmp/postern-translog-XXXXXX");
	return mkdtemp(dir) != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[600];

	(void)state;
	while (d != NULL && (e = readdir(d)) != NULL)
		if (e->d_name[0] != '.') {
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			unlink(path);
		}
	if (d != NULL)
		closedir(d);
	return rmdir(dir);
}

static struct log_translog_opts
opts(void)
{
	return (struct log_translog_opts){ .dir = dir, .commands = true,
	    .replies = true, .data_max = 1 << 20, .file_max = 1 << 20,
	    .total_max = 1 << 30 };
}

/* The text of the one file whose name holds sid (malloc'd), or NULL. */
static char *
slurp(const char *sid)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[600], *text = NULL;

	while (d != NULL && (e = readdir(d)) != NULL) {
		if (strstr(e->d_name, sid) == NULL)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		FILE *f = fopen(path, "r");
		assert_non_null(f);
		text = xcalloc(1, 1 << 21);
		size_t n = fread(text, 1, (1 << 21) - 1, f);
		text[n] = '\0';
		fclose(f);
	}
	if (d != NULL)
		closedir(d);
	return text;
}

/* Each line "STAMP MARK TEXT", the marks and texts given in order. */
static void
expect_lines(const char *text, const char *const *want, size_t n)
{
	regex_t re;
	regmatch_t m[3];
	const char *p = text;

	assert_int_equal(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:"
	    "[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z ([^ ]+) (.*)$", REG_EXTENDED |
	    REG_NEWLINE), 0);
	for (size_t i = 0; i < n; i += 2) {
		const char *nl = strchr(p, '\n');
		if (nl == NULL || regexec(&re, p, 3, m, 0) != 0 || m[0].rm_so != 0)
			fail_msg("line %zu: want \"%s %s\", file:\n%s", i / 2,
			    want[i], want[i + 1], text);
		size_t ml = (size_t)(m[1].rm_eo - m[1].rm_so);
		size_t tl = (size_t)(m[2].rm_eo - m[2].rm_so);
		if (ml != strlen(want[i]) || memcmp(p + m[1].rm_so, want[i],
		    ml) != 0 || tl != strlen(want[i + 1]) ||
		    memcmp(p + m[2].rm_so, want[i + 1], tl) != 0)
			fail_msg("line %zu: got \"%.*s\", want \"%s %s\"; "
			    "file:\n%s", i / 2, (int)(nl - p - 28), p + 28,
			    want[i], want[i + 1], text);
		p = nl + 1;
	}
	if (*p != '\0')
		fail_msg("lines after the %zu expected: %s", n / 2, p);
	regfree(&re);
}

static void
test_lines_in_order(void **state)
{
	struct log_translog_writer *w = log_translog_writer_new();
	struct log_translog_opts o = opts();
	struct log_translog *t;
	static const char *const want[] = {
		"#", "connect ip=192.0.2.1",
		"<", "220 test ESMTP",
		">", "EHLO client.example",
		">", "DATA",
		"D", "Subject: hi",
		"D", "",
		"D", "caf\xc3\xa9 line one",
		"D", "line two, no LF at the end",
		".", "end of data, 72 octets",
		"<", "250 2.0.0 Ok",
		">", "bad \\x01 byte\\x22",
		"}", "MAIL FROM:<a@b>",
		"{", "250 ok",
	};

	(void)state;
	t = log_translog_open(w, &o, "192.0.2.1", "sid1");
	log_translog_line(t, LOG_TL_NOTE, "connect ip=192.0.2.1", 20);
	log_translog_line(t, LOG_TL_OUT, "220 test ESMTP\r\n", 16);
	log_translog_line(t, LOG_TL_IN, "EHLO client.example\r\n", 21);
	log_translog_line(t, LOG_TL_IN, "DATA\r\n", 6);
	/* Content cut anywhere, lines joined again. */
	log_translog_data(t, "Subject: hi\n\ncaf", 16);
	const char *rest = "\xc3\xa9 line one\nline two, no LF at the end";
	log_translog_data(t, rest, strlen(rest));
	log_translog_end_data(t, 72);
	log_translog_line(t, LOG_TL_OUT, "250 2.0.0 Ok\r\n", 14);
	log_translog_line(t, LOG_TL_IN, "bad \x01 byte\"\r\n", 13);
	log_translog_line(t, LOG_TL_UP_OUT, "MAIL FROM:<a@b>", 15);
	log_translog_line(t, LOG_TL_UP_IN, "250 ok", 6);
	log_translog_close(&t);
	assert_null(t);
	log_translog_line(NULL, LOG_TL_IN, "x", 1);	/* no log: nothing */
	log_translog_writer_free(&w);
	char *text = slurp("192.0.2.1-sid1.log");
	assert_non_null(text);
	expect_lines(text, want, sizeof(want) / sizeof(want[0]));
	free(text);
}

static void
test_commands_or_replies_only(void **state)
{
	struct log_translog_writer *w = log_translog_writer_new();
	struct log_translog_opts o = opts();
	static const char *const want_c[] = { ">", "QUIT", "#", "note" };
	static const char *const want_r[] = { "<", "221 bye", "#", "note" };

	(void)state;
	for (int i = 0; i < 2; i++) {
		o.commands = i == 0;
		o.replies = i == 1;
		o.data_max = 0;
		struct log_translog *t = log_translog_open(w, &o, "::1",
		    i == 0 ? "cmds" : "reps");
		log_translog_line(t, LOG_TL_IN, "QUIT", 4);
		log_translog_line(t, LOG_TL_OUT, "221 bye", 7);
		log_translog_data(t, "body\n", 5);	/* data off */
		log_translog_end_data(t, 5);
		log_translog_line(t, LOG_TL_NOTE, "note", 4);
		log_translog_close(&t);
	}
	log_translog_writer_free(&w);
	char *c = slurp("__1-cmds.log"), *r = slurp("__1-reps.log");
	assert_non_null(c);
	assert_non_null(r);
	expect_lines(c, want_c, 4);
	expect_lines(r, want_r, 4);
	free(c);
	free(r);
}

static void
test_data_bound_and_file_cap(void **state)
{
	struct log_translog_writer *w = log_translog_writer_new();
	struct log_translog_opts o = opts();
	static const char *const want[] = {
		"D", "0123456789", "D", "0123", "#", "data cut at 15 octets",
		".", "end of data, 33 octets",
		"D", "second message", ".", "end of data, 15 octets",
	};
	struct stat st;
	char path[600];

	(void)state;
	o.data_max = 15;
	struct log_translog *t = log_translog_open(w, &o, "192.0.2.2", "cut");
	log_translog_data(t, "0123456789\n0123456789\n0123456789\n", 33);
	log_translog_end_data(t, 33);
	log_translog_data(t, "second message\n", 15);	/* a new message */
	log_translog_end_data(t, 15);
	log_translog_close(&t);

	o.data_max = 1 << 20;
	o.file_max = 4096;
	t = log_translog_open(w, &o, "192.0.2.2", "cap");
	for (int i = 0; i < 200; i++)
		log_translog_line(t, LOG_TL_IN, "NOOP filling the file up", 24);
	log_translog_close(&t);
	log_translog_writer_free(&w);

	char *text = slurp("-cut.log");
	expect_lines(text, want, sizeof(want) / sizeof(want[0]));
	free(text);
	text = slurp("-cap.log");
	assert_non_null(strstr(text, "# file size cap reached"));
	/* The note is the last line. */
	assert_string_equal(strrchr(text, '#'), "# file size cap reached: "
	    "the rest is not logged\n");
	free(text);
	DIR *d = opendir(dir);
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		if (strstr(e->d_name, "-cap.log") != NULL) {
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			assert_int_equal(stat(path, &st), 0);
			assert_true(st.st_size <= 4096 && st.st_size > 3500);
		}
	closedir(d);
}

static void
test_total_cap_removes_oldest(void **state)
{
	struct log_translog_writer *w = log_translog_writer_new();
	struct log_translog_opts o = opts();
	char sid[16];
	uint64_t size = 0;

	(void)state;
	o.total_max = 16384;
	/* Ten sessions of about 3 KiB, one after the other. */
	for (int s = 0; s < 10; s++) {
		snprintf(sid, sizeof(sid), "s%d", s);
		struct log_translog *t = log_translog_open(w, &o, "192.0.2.3",
		    sid);
		for (int i = 0; i < 60; i++)
			log_translog_line(t, LOG_TL_IN, "RSET and some more "
			    "words", 24);
		log_translog_close(&t);
	}
	log_translog_writer_free(&w);
	DIR *d = opendir(dir);
	struct dirent *e;
	bool have[10] = { false };
	while ((e = readdir(d)) != NULL) {
		const char *p = strstr(e->d_name, "-s");
		struct stat st;
		char path[600];
		if (p == NULL)
			continue;
		have[atoi(p + 2)] = true;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		assert_int_equal(stat(path, &st), 0);
		size += (uint64_t)st.st_size;
	}
	closedir(d);
	assert_true(size <= 16384);
	/* The newest are kept, the oldest went first. */
	assert_true(have[9] && have[8] && have[7]);
	assert_false(have[0] || have[1] || have[2] || have[3] || have[4]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_lines_in_order, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_commands_or_replies_only,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_data_bound_and_file_cap,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_total_cap_removes_oldest,
		    setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
