/*
 * Unit tests of the pipe action (deliver/pipe.c over prog.c) with real
 * shell scripts in a mkdtemp folder: what the program gets (stdin, argv,
 * environment), sysexits, timeouts that kill the whole process group,
 * programs that read nothing or write much, that leave a child running,
 * that send their output elsewhere or cannot start, whose exit status is
 * lost (SIGCHLD ignored), another user, and hostile addresses.
 */
#include "deliver/deliver.h"
#include "util/util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static char	 tdir[] = "/tmp/test_pipe.XXXXXX";

static char *
tpath(const char *name)
{
	return xasprintf("%s/%s", tdir, name);
}

static void
put(const char *name, const char *text, mode_t mode)
{
	char *path = tpath(name);
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, mode), 0);
	free(path);
}

static char *
slurp(const char *name)
{
	char *path = tpath(name);
	FILE *f = fopen(path, "r");
	struct util_buf b = { 0 };
	char buf[4096];
	size_t n;

	free(path);
	if (f == NULL)
		return NULL;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		util_buf_add(&b, buf, n);
	fclose(f);
	return util_buf_cstr(&b);
}

static const char msg_text[] = "From: a@example.org\nSubject: pipe\n\n"
    "Body line.\n.dot line\n";

static struct deliver_msg
mkmsg(void)
{
	struct deliver_msg m = { .content = msg_text,
	    .content_len = sizeof(msg_text) - 1,
	    .return_path = "sender@example.org", .qid = "QP1" };

	return m;
}

static enum deliver_result
run(char **argv, const char *user, uint64_t timeout_ms,
    const struct deliver_msg *m, const char *rcpt,
    struct deliver_rcpt_status *st)
{
	struct deliver_pipe_opts o = { .argv = argv, .user = user,
	    .timeout_ms = timeout_ms };
	const char *err = NULL;

	return deliver_pipe(&o, m, rcpt, st, &err);
}

/*
 * In a child dropped to nobody, as a server with server_user: does a run
 * as user defer with want?  The child's exit status says (0: it does).
 */
static int
run_dropped(char **argv, const char *user, const char *server_user,
    const char *want)
{
	struct deliver_pipe_opts o = { .argv = argv, .user = user,
	    .server_user = server_user, .timeout_ms = 5000 };
	struct deliver_msg m = mkmsg();
	struct deliver_rcpt_status st;
	const char *err = NULL;
	gid_t gid = 65534;
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		if (setgroups(0, NULL) == -1 || setresgid(gid, gid, gid) ==
		    -1 || setresuid(65534, 65534, 65534) == -1)
			_exit(2);
		if (deliver_pipe(&o, &m, "a@example.org", &st, &err) !=
		    DELIVER_TEMPFAIL || strcmp(st.text, want) != 0) {
			fprintf(stderr, "case %s: got \"%s\", want \"%s\"\n",
			    server_user != NULL ? "dropped" : "never root",
			    st.text, want);
			_exit(1);
		}
		_exit(0);
	}
	if (pid == -1 || waitpid(pid, &status, 0) == -1 ||
	    !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

/* Write the shell script name with body and deliver a message through it. */
static enum deliver_result
run_script(const char *name, const char *body, struct deliver_rcpt_status *st)
{
	char *script = tpath(name), *text = xasprintf("#!/bin/sh\n%s", body);
	char *argv[] = { script, NULL };
	struct deliver_msg m = mkmsg();
	enum deliver_result r;

	unlink(script);
	put(name, text, 0755);
	r = run(argv, NULL, 10000, &m, "ann@example.org", st);
	free(text);
	free(script);
	return r;
}

static void
test_what_the_program_gets(void **state)
{
	char *script = tpath("lda");
	char *out_tpl = xasprintf("%s/%%{rcpt.user}.out", tdir);
	char *argv[] = { script, out_tpl, "%{rcpt}", "%{rcpt.domain}",
	    "%{sender}", "%{qid}", "100%%", NULL };
	struct deliver_msg m = mkmsg();
	struct deliver_rcpt_status st;
	char *got;

	(void)state;
	setenv("PIPE_TEST_LEAK", "1", 1);
	put("lda", "#!/bin/sh\ncat > \"$1\"\nshift\n"
	    "echo \"$@\" > \"$0.args\"\n"
	    "env | sort > \"$0.env\"\n", 0755);
	assert_int_equal(run(argv, NULL, 5000, &m, "Ann.Lee@Example.NET",
	    &st), DELIVER_OK);
	assert_int_equal(st.result, DELIVER_OK);
	got = slurp("Ann.Lee.out");
	assert_non_null(got);
	assert_string_equal(got, "Return-Path: <sender@example.org>\n"
	    "Delivered-To: Ann.Lee@Example.NET\n"
	    "From: a@example.org\nSubject: pipe\n\nBody line.\n.dot line\n");
	free(got);
	got = slurp("lda.args");
	assert_string_equal(got, "Ann.Lee@Example.NET Example.NET "
	    "sender@example.org QP1 100%\n");
	free(got);
	got = slurp("lda.env");
	assert_non_null(strstr(got, "DOMAIN=Example.NET\nLOCAL=Ann.Lee\n"
	    "PATH=/usr/bin:/bin\nPOSTERN_QID=QP1\n"));
	assert_non_null(strstr(got, "RECIPIENT=Ann.Lee@Example.NET\n"
	    "SENDER=sender@example.org\n"));
	/* Nothing of our own environment leaks. */
	assert_null(strstr(got, "PIPE_TEST_LEAK"));
	assert_null(strstr(got, "HOME="));
	free(got);
	free(script);
	free(out_tpl);
}

static void
test_exit_statuses(void **state)
{
	static const struct {
		const char		*label, *body;
		enum deliver_result	 want;
		const char		*text;
	} cases[] = {
		{ "EX_TEMPFAIL with a reason", "echo 'mailbox locked' >&2\n"
		  "echo second line >&2\nexit 75\n", DELIVER_TEMPFAIL,
		  "4.3.0 mailbox locked" },
		{ "EX_TEMPFAIL without one", "exit 75\n", DELIVER_TEMPFAIL,
		  "4.3.0 temporary failure (EX_TEMPFAIL)" },
		{ "1 with a reason", "printf '\\n\\nno such folder\\n' >&2\n"
		  "exit 1\n", DELIVER_PERMFAIL,
		  "5.3.0 no such folder (exit status 1)" },
		{ "EX_NOUSER", "exit 67\n", DELIVER_PERMFAIL, "5.1.1 " },
		{ "EX_NOPERM", "echo 'denied \"x\"' >&2; exit 77\n",
		  DELIVER_PERMFAIL,
		  "5.7.0 denied \"x\" (exit status 77)" },
		{ "killed", "kill -9 $$\n", DELIVER_TEMPFAIL,
		  "killed by signal 9" },
		{ "reads nothing", "exit 0\n", DELIVER_OK, "" },
		{ "writes much", "head -c 3000000 /dev/zero\n"
		  "head -c 300000 /dev/zero >&2\ncat > /dev/null\n",
		  DELIVER_OK, "" },
		/* Its own exit decides, not a child it leaves running. */
		{ "a child keeps stdout", "cat > /dev/null\n(sleep 20) &\n"
		  "exit 0\n", DELIVER_OK, "" },
		{ "a child keeps stderr", "echo 'mailbox locked' >&2\n"
		  "(sleep 20) &\nexit 75\n", DELIVER_TEMPFAIL,
		  "4.3.0 mailbox locked" },
		{ "a 127 of its own", "exit 127\n", DELIVER_PERMFAIL,
		  "exited with status 127" },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct deliver_rcpt_status st;
		enum deliver_result r = run_script("prog", cases[i].body, &st);

		if (r != cases[i].want || st.result != r ||
		    strstr(st.text, cases[i].text) == NULL)
			fail_msg("case \"%s\": got %d \"%s\", want %d \"%s\"",
			    cases[i].label, r, st.text, cases[i].want,
			    cases[i].text);
	}
}

/* Not started is temporary, and says why: no exit status to read. */
static void
test_cannot_start(void **state)
{
	static const struct {
		const char	*label, *text;
	} cases[] = {
		{ "no interpreter", "#!/nonexistent/interpreter\n" },
		{ "no program", NULL },
	};
	char *script = tpath("nostart");
	char *argv[] = { script, NULL };

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct deliver_msg m = mkmsg();
		struct deliver_rcpt_status st;
		char *want = xasprintf("4.3.0 %s: execve: No such file or "
		    "directory", script);
		enum deliver_result r;

		unlink(script);
		if (cases[i].text != NULL)
			put("nostart", cases[i].text, 0755);
		r = run(argv, NULL, 10000, &m, "ann@example.org", &st);
		if (r != DELIVER_TEMPFAIL || strcmp(st.text, want) != 0)
			fail_msg("case \"%s\": got %d \"%s\", want %d \"%s\"",
			    cases[i].label, r, st.text, DELIVER_TEMPFAIL, want);
		free(want);
	}
	free(script);
}

/*
 * With SIGCHLD ignored the kernel reaps the program and waitpid fails: its
 * exit status is unknown, a temporary failure whatever the program did.
 */
static void
test_lost_exit_status(void **state)
{
	static const struct {
		const char	*label, *body;
	} cases[] = {
		{ "EX_TEMPFAIL", "cat > /dev/null\nexit 75\n" },
		{ "EX_NOUSER", "cat > /dev/null\nexit 67\n" },
		{ "success", "cat > /dev/null\nexit 0\n" },
	};
	char *want = xasprintf("4.3.0 %s/reaped: waitpid(", tdir);

	(void)state;
	signal(SIGCHLD, SIG_IGN);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct deliver_rcpt_status st;
		enum deliver_result r = run_script("reaped", cases[i].body,
		    &st);

		if (r != DELIVER_TEMPFAIL || strncmp(st.text, want,
		    strlen(want)) != 0 || strstr(st.text, "No child processes: "
		    "its exit status is lost") == NULL)
			fail_msg("case \"%s\": got %d \"%s\", want %d \"%s...\"",
			    cases[i].label, r, st.text, DELIVER_TEMPFAIL, want);
	}
	signal(SIGCHLD, SIG_DFL);
	free(want);
}

/* The message to a program that sends its own output elsewhere. */
static void
test_output_elsewhere(void **state)
{
	char *script = tpath("quiet"), *outf = tpath("quiet.out");
	char *argv[] = { script, outf, NULL };
	struct util_buf big = { 0 };
	struct deliver_msg m = { .return_path = "", .qid = "QP3" };
	struct deliver_rcpt_status st;
	char *got;

	(void)state;
	util_buf_addstr(&big, "Subject: big\n\n");
	for (int i = 0; i < 10000; i++)
		util_buf_addstr(&big, "0123456789012345678901234567890\n");
	m.content = big.data;
	m.content_len = big.len;
	/* Its stdout and stderr are closed long before its stdin is read. */
	put("quiet", "#!/bin/sh\nexec >/dev/null 2>&1\ncat > \"$1\"\n", 0755);
	assert_int_equal(run(argv, NULL, 10000, &m, "a@example.org", &st),
	    DELIVER_OK);
	got = slurp("quiet.out");
	assert_non_null(got);
	assert_non_null(strstr(got, "\nDelivered-To: a@example.org\n"));
	assert_true(strlen(got) > big.len);
	free(got);
	util_buf_clear(&big);
	free(script);
	free(outf);
}

/* A big spooled message to a program that stops reading at once. */
static void
test_file_body_not_read(void **state)
{
	char *script = tpath("early"), *body = tpath("big.msg");
	char *argv[] = { script, NULL };
	struct deliver_msg m = { .content_path = body, .return_path = "",
	    .qid = "QP2" };
	struct deliver_rcpt_status st;
	FILE *f = fopen(body, "w");

	(void)state;
	assert_non_null(f);
	fputs("Subject: big\n\n", f);
	for (int i = 0; i < 100000; i++)
		fputs("0123456789012345678901234567890123456789\n", f);
	fclose(f);
	put("early", "#!/bin/sh\nhead -c 10 > /dev/null\nexit 0\n", 0755);
	assert_int_equal(run(argv, NULL, 10000, &m, "a@example.org", &st),
	    DELIVER_OK);
	free(script);
	free(body);
}

static void
test_timeout_kills_the_group(void **state)
{
	char *script = tpath("hang"), *pidf = tpath("hang.pid");
	char *argv[] = { script, pidf, NULL };
	struct deliver_msg m = mkmsg();
	struct deliver_rcpt_status st;
	uint64_t t0 = util_now_ms();
	char *got;
	pid_t child;
	int gone = 0;

	(void)state;
	/* The sleeping grandchild holds stdout open: all must die. */
	put("hang", "#!/bin/sh\nsleep 30 &\necho $! > \"$1\"\nwait\n", 0755);
	assert_int_equal(run(argv, NULL, 300, &m, "a@example.org", &st),
	    DELIVER_TEMPFAIL);
	assert_true(util_now_ms() - t0 < 5000);
	assert_non_null(strstr(st.text, "timed out after 300 ms"));
	got = slurp("hang.pid");
	assert_non_null(got);
	child = (pid_t)atoi(got);
	free(got);
	for (int i = 0; i < 200 && !gone; i++) {	/* reaped by init */
		gone = kill(child, 0) == -1 && errno == ESRCH;
		if (!gone)
			usleep(10000);
	}
	assert_true(gone);
	free(script);
	free(pidf);
}

static void
test_users(void **state)
{
	char *script = tpath("who"), *outf = tpath("who.out");
	char *argv[] = { script, outf, NULL };
	struct deliver_msg m = mkmsg();
	struct deliver_rcpt_status st;
	char *got;

	(void)state;
	put("who", "#!/bin/sh\nid -u > \"$1\"\n", 0755);
	assert_int_equal(run(argv, "no-such-user-here", 5000, &m,
	    "a@example.org", &st), DELIVER_TEMPFAIL);
	assert_string_equal(st.text, "4.3.0 no such user "
	    "\"no-such-user-here\"");
	/* The suite runs as root (docs/testing.md): running as another user
	 * is part of what is tested, never left out. */
	if (geteuid() != 0)
		fail_msg("the tests run as root: a program run as nobody "
		    "cannot be checked otherwise");
	chmod(tdir, 0777);	/* nobody writes its answer here */
	assert_int_equal(run(argv, "nobody", 5000, &m, "a@example.org", &st),
	    DELIVER_OK);
	got = slurp("who.out");
	assert_string_equal(got, "65534\n");
	free(got);
	/* Dropped to nobody, the server says so: it cannot become daemon. */
	assert_int_equal(run_dropped(argv, "daemon", "nobody", "4.3.0 cannot "
	    "run as \"daemon\": postern drops its privileges to user "
	    "\"nobody\" (the \"user\" statement), which can become no other "
	    "user"), 0);
	assert_int_equal(run_dropped(argv, "daemon", NULL, "4.3.0 cannot run "
	    "as \"daemon\": postern does not run as root"), 0);
	free(script);
	free(outf);
}

static void
test_hostile_addresses(void **state)
{
	char *script = tpath("args"), *outf = tpath("args.out");
	char *argv[] = { script, outf, "%{rcpt.user}", "-d%{rcpt}", NULL };
	struct deliver_msg m = mkmsg();
	struct deliver_rcpt_status st;
	char *got;
	const char *err = NULL;

	(void)state;
	put("args", "#!/bin/sh\nout=$1; shift\nfor a; do echo \"[$a]\"; done"
	    " > \"$out\"\n", 0755);
	/* An option where a value belongs: refused, nothing run. */
	assert_int_equal(run(argv, NULL, 5000, &m, "-oProxy=x@example.org",
	    &st), DELIVER_PERMFAIL);
	assert_string_equal(st.text, "5.1.3 the address would start a "
	    "program argument with \"-\"");
	assert_null(slurp("args.out"));
	/* Blanks, quotes and $ stay one argument each: no shell. */
	assert_int_equal(run(argv, NULL, 5000, &m,
	    "\"a b;$(id)\"@example.org", &st), DELIVER_OK);
	got = slurp("args.out");
	assert_string_equal(got, "[\"a b;$(id)\"]\n"
	    "[-d\"a b;$(id)\"@example.org]\n");
	free(got);
	assert_int_equal(deliver_pipe_check_arg("%{rcpt.user}@%{qid}%%",
	    &err), 0);
	assert_int_equal(deliver_pipe_check_arg("x%{recipient}", &err), -1);
	assert_non_null(strstr(err, "unknown variable"));
	free(script);
	free(outf);
}

static int
setup(void **state)
{
	(void)state;
	return mkdtemp(tdir) != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
	char *cmd = xasprintf("rm -rf %s", tdir);
	int rc = system(cmd);

	(void)state;
	free(cmd);
	return rc == 0 ? 0 : -1;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_what_the_program_gets),
		cmocka_unit_test(test_exit_statuses),
		cmocka_unit_test(test_cannot_start),
		cmocka_unit_test(test_lost_exit_status),
		cmocka_unit_test(test_output_elsewhere),
		cmocka_unit_test(test_file_body_not_read),
		cmocka_unit_test(test_timeout_kills_the_group),
		cmocka_unit_test(test_hostile_addresses),
		cmocka_unit_test(test_users),
	};

	signal(SIGPIPE, SIG_IGN);	/* as the server does */
	return cmocka_run_group_tests(tests, setup, teardown);
}
