/*
 * Unit tests of the LMTP client (deliver/smtpc.c with lmtp set) against
 * Debian's Dovecot (dovecot-lmtpd) on a unix socket in a mkdtemp folder:
 * per-recipient replies after the content (one user over quota, one
 * unknown), the mail in Dovecot's own Maildir, a socket nobody serves, and
 * a hostile server's long reply.
 */
#include "deliver/deliver.h"
#include "util/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#define DOVECOT	"/usr/sbin/dovecot"

static char	 tdir[] = "/tmp/test_lmtp.XXXXXX";
static char	 sock[300];
static pid_t	 dovecot_pid;

static void
put(const char *name, const char *text)
{
	char path[300];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tdir, name);
	assert_non_null(f = fopen(path, "w"));
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

/* Dovecot with LMTP only, users ann and full (a 1-byte quota). */
static void
dovecot_config(void)
{
	char *conf = xasprintf(
	    "base_dir = %s/run\nstate_dir = %s/state\n"
	    "log_path = %s/dovecot.log\nprotocols = lmtp\nssl = no\n"
	    "listen = 127.0.0.1\nshutdown_clients = yes\n"
	    "default_internal_user = dovecot\n"
	    "default_login_user = dovenull\nfirst_valid_uid = 8\n"
	    "auth_username_format = %%Ln\n"
	    "mail_location = maildir:%s/mail/%%n/Maildir\n"
	    "mail_plugins = quota\n"
	    "plugin {\n quota = maildir:User quota\n"
	    " quota_rule = *:storage=100M\n}\n"
	    "passdb {\n driver = passwd-file\n args = %s/users\n}\n"
	    "userdb {\n driver = passwd-file\n args = %s/users\n}\n"
	    "service lmtp {\n unix_listener lmtp {\n  mode = 0666\n }\n}\n"
	    "service anvil {\n chroot =\n}\n",
	    tdir, tdir, tdir, tdir, tdir, tdir);
	char *users = xasprintf(
	    "ann:{PLAIN}x:8:8::%s/mail/ann::\n"
	    "full:{PLAIN}x:8:8::%s/mail/full::"
	    "userdb_quota_rule=*:storage=1B\n", tdir, tdir);
	char mail[300];

	put("dovecot.conf", conf);
	put("users", users);
	free(conf);
	free(users);
	snprintf(mail, sizeof(mail), "%s/mail", tdir);
	assert_int_equal(mkdir(mail, 0755), 0);
	assert_int_equal(chown(mail, 8, 8), 0);	/* the mail user */
}

static int
setup(void **state)
{
	char conf[300];
	struct stat st;

	(void)state;
	/* scripts/bootstrap installs it: missing is a failure. */
	if (access(DOVECOT, X_OK) == -1) {
		fprintf(stderr, "%s not found: run scripts/bootstrap (it "
		    "installs dovecot-core and dovecot-lmtpd)\n", DOVECOT);
		return -1;
	}
	assert_non_null(mkdtemp(tdir));
	chmod(tdir, 0755);
	dovecot_config();
	snprintf(conf, sizeof(conf), "%s/dovecot.conf", tdir);
	snprintf(sock, sizeof(sock), "%s/run/lmtp", tdir);
	if ((dovecot_pid = fork()) == 0) {
		int fd = open("/dev/null", O_WRONLY);

		dup2(fd, 1);
		dup2(fd, 2);
		execl(DOVECOT, DOVECOT, "-F", "-c", conf, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 300 && stat(sock, &st) == -1; i++)
		usleep(50000);		/* up to 15 s for the socket */
	if (stat(sock, &st) == -1) {
		fprintf(stderr, "dovecot did not start: see %s/dovecot.log\n",
		    tdir);
		return -1;
	}
	return 0;
}

static int
teardown(void **state)
{
	char cmd[400];

	(void)state;
	if (dovecot_pid > 0) {
		kill(dovecot_pid, SIGTERM);
		waitpid(dovecot_pid, NULL, 0);
	}
	if (strchr(tdir, 'X') == NULL) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", tdir);
		if (system(cmd) != 0)
			return -1;
	}
	return 0;
}

/* The one file in Dovecot's new/ of user, malloc'd; NULL if none. */
static char *
mail_of(const char *user)
{
	char dir[400], path[800];
	struct dirent *de;
	DIR *d;
	char *text = NULL;

	snprintf(dir, sizeof(dir), "%s/mail/%s/Maildir/new", tdir, user);
	if ((d = opendir(dir)) == NULL)
		return NULL;
	while ((de = readdir(d)) != NULL) {
		FILE *f;
		struct util_buf b = { 0 };
		char buf[4096];
		size_t n;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		assert_non_null(f = fopen(path, "r"));
		while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
			util_buf_add(&b, buf, n);
		fclose(f);
		text = util_buf_cstr(&b);
		break;
	}
	closedir(d);
	return text;
}

static void
lmtp_opts(struct deliver_smtp_opts *o, const char *path)
{
	memset(o, 0, sizeof(*o));
	o->unix_path = path;
	o->lmtp = true;
	o->timeouts.connect_ms = 5000;
	o->timeouts.greeting_ms = 10000;
	o->timeouts.command_ms = 10000;
	o->timeouts.data_term_ms = 10000;
}

static void
test_per_recipient(void **state)
{
	static const char msg[] = "From: sender@example.org\n"
	    "To: ann@example.org\nSubject: lmtp\n\nHello.\n.leading dot\n";
	const char *rcpts[] = { "ann@example.org", "nobody@example.org",
	    "full@example.org" };
	struct deliver_msg m = { .content = msg, .content_len = sizeof(msg) -
	    1, .return_path = "sender@example.org", .qid = "Q1",
	    .hostname = "postern.test" };
	struct deliver_rcpt_status st[3];
	struct deliver_smtp_opts o;
	const char *err = NULL;
	char *got;

	(void)state;
	lmtp_opts(&o, sock);
	/* Neither all done nor all refused for good. */
	assert_int_equal(deliver_smtp(&o, &m, rcpts, 3, st, &err),
	    DELIVER_TEMPFAIL);
	/* Delivered: its own 250 after the content. */
	assert_int_equal(st[0].result, DELIVER_OK);
	assert_int_equal(st[0].code, 250);
	/* Refused at RCPT. */
	assert_int_equal(st[1].result, DELIVER_PERMFAIL);
	assert_int_equal(st[1].code, 550);
	assert_non_null(strstr(st[1].text, "(in reply to RCPT TO)"));
	/* Refused after the content, in its own reply (RFC 2033 4.2). */
	assert_int_equal(st[2].code / 100, 5);
	assert_int_equal(st[2].result, DELIVER_PERMFAIL);
	assert_non_null(strstr(st[2].text, "Quota"));
	assert_non_null(strstr(st[2].text, "(in reply to end of DATA)"));
	assert_int_equal(strncmp(st[2].remote, "unix:", 5), 0);
	got = mail_of("ann");
	assert_non_null(got);
	assert_non_null(strstr(got, "Return-Path: <sender@example.org>\n"));
	assert_non_null(strstr(got, "Subject: lmtp\n\nHello.\n.leading dot\n"));
	free(got);
	assert_null(mail_of("full"));
}

static void
test_nobody_there(void **state)
{
	const char *rcpts[] = { "ann@example.org" };
	struct deliver_msg m = { .content = "Subject: x\n\nx\n",
	    .content_len = 14, .return_path = "", .qid = "Q2" };
	struct deliver_rcpt_status st[1];
	struct deliver_smtp_opts o;
	const char *err = NULL;

	(void)state;
	lmtp_opts(&o, "/nonexistent/lmtp.sock");
	assert_int_equal(deliver_smtp(&o, &m, rcpts, 1, st, &err),
	    DELIVER_TEMPFAIL);
	assert_int_equal(st[0].result, DELIVER_TEMPFAIL);
	assert_string_equal(st[0].text, "connect unix:/nonexistent/lmtp.sock: "
	    "No such file or directory");
}

/* ---- a server that says what it is told ---- */

struct script_srv {
	int		 lfd;
	const char	*say;		/* all of it at once, then EOF */
	char		 path[108];
	pthread_t	 thread;
};

static void *
script_serve(void *arg)
{
	struct script_srv *s = arg;
	int fd = accept(s->lfd, NULL, NULL);
	char buf[4096];

	if (fd == -1)
		return NULL;
	if (write(fd, s->say, strlen(s->say)) < 0)
		perror("write");
	shutdown(fd, SHUT_WR);
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
	return NULL;
}

static void
script_start(struct script_srv *s, const char *say)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };

	s->say = say;
	snprintf(s->path, sizeof(s->path), "/tmp/test_lmtp.%d.sock",
	    (int)getpid());
	unlink(s->path);
	memcpy(sun.sun_path, s->path, strlen(s->path) + 1);
	assert_true((s->lfd = socket(AF_UNIX, SOCK_STREAM, 0)) != -1);
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&sun, sizeof(sun)),
	    0);
	assert_int_equal(listen(s->lfd, 1), 0);
	assert_int_equal(pthread_create(&s->thread, NULL, script_serve, s),
	    0);
}

static void
script_stop(struct script_srv *s)
{
	pthread_join(s->thread, NULL);
	close(s->lfd);
	unlink(s->path);
}

/*
 * A multi-line reply longer than the text kept of it: cut, never past
 * the buffer (this used to trip an assertion and stop the process).
 */
static void
test_long_multiline_reply(void **state)
{
	struct util_buf say = { 0 };
	const char *rcpts[] = { "ann@example.org" };
	struct deliver_msg m = { .content = "Subject: x\n\nx\n",
	    .content_len = 14, .return_path = "", .qid = "Q3" };
	struct deliver_rcpt_status st[1];
	struct deliver_smtp_opts o;
	struct script_srv srv;
	const char *err = NULL;

	(void)state;
	for (int i = 0; i < 4; i++) {
		util_buf_addstr(&say, "554-");
		for (int j = 0; j < 123 + i; j++)
			util_buf_addstr(&say, "x");
		util_buf_addstr(&say, "\r\n");
	}
	util_buf_addstr(&say, "554 the end\r\n");
	script_start(&srv, util_buf_cstr(&say));
	lmtp_opts(&o, srv.path);
	assert_int_equal(deliver_smtp(&o, &m, rcpts, 1, st, &err),
	    DELIVER_PERMFAIL);
	script_stop(&srv);
	assert_int_equal(st[0].code, 554);
	assert_true(strlen(st[0].text) < sizeof(st[0].text));
	if (strncmp(st[0].text, "554-xxx", 7) != 0)
		fail_msg("text: %s", st[0].text);
	util_buf_clear(&say);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_per_recipient),
		cmocka_unit_test(test_nobody_there),
		cmocka_unit_test(test_long_multiline_reply),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
