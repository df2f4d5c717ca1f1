/*
 * Unit tests of the outbound client (deliver/smtpc.c, mx.c, pop.c,
 * remote.c and config/parse_relay.c) against real upstream servers on
 * 127.0.0.1: data/smtpd.py (aiosmtpd, with a small POP3 server) started
 * per case, a test CA made with the openssl CLI.  Every wait is bounded.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"
#include "config/config.h"
#include "table/table.h"
#include "util/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static char tdir[] = "/tmp/test_smtpc.XXXXXX";
static char ca_pem[256], srv_pem[256], srv_key[256];
static char script[512];

/* ---- helpers ---- */

static int
free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	close(fd);
	return ntohs(sa.sin_port);
}

struct upstream {
	pid_t	 pid;
	int	 port;
	int	 pop_port;
	int	 rfd;		/* its stdout, open until up_stop */
	char	 out[512];	/* its OUT directory */
};

/* Run argv with stdout on a pipe; wait up to 15 s for its READY line. */
static void
up_spawn(struct upstream *u, const char *const *argv, const char *name)
{
	int pfd[2];

	mkdir(u->out, 0700);
	assert_int_equal(pipe(pfd), 0);
	u->pid = fork();
	assert_true(u->pid != -1);
	if (u->pid == 0) {
		char errf[600];
		snprintf(errf, sizeof(errf), "%s/stderr", u->out);
		int fd = open(errf, O_WRONLY | O_CREAT | O_APPEND, 0600);
		dup2(pfd[1], 1);
		if (fd != -1)
			dup2(fd, 2);
		close(pfd[0]);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(pfd[1]);
	char buf[64] = "";
	size_t got = 0;
	struct pollfd p = { .fd = pfd[0], .events = POLLIN };
	while (got < sizeof(buf) - 1 && strstr(buf, "READY") == NULL) {
		if (poll(&p, 1, 15000) != 1)
			fail_msg("server %s: no READY within 15 s", name);
		ssize_t r = read(pfd[0], buf + got, sizeof(buf) - 1 - got);
		if (r <= 0)
			fail_msg("server %s exited before READY", name);
		got += (size_t)r;
		buf[got] = '\0';
	}
	u->rfd = pfd[0];
}

/*
 * Start data/smtpd.py with the extra arguments (NULL-terminated); "--pop-
 * port" takes no value here (a free port is chosen into u->pop_port).
 */
static void
up_start(struct upstream *u, const char *name, ...)
{
	const char *argv[40];
	char port[16], poparg[16];
	int n = 0;
	va_list ap;

	if (u->port == 0)
		u->port = free_port();
	snprintf(port, sizeof(port), "%d", u->port);
	snprintf(u->out, sizeof(u->out), "%s/%s", tdir, name);
	argv[n++] = "/usr/bin/python3";
	argv[n++] = script;
	argv[n++] = "--port";
	argv[n++] = port;
	argv[n++] = "--out";
	argv[n++] = u->out;
	va_start(ap, name);
	for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
		if (strcmp(a, "--pop-port") == 0) {
			u->pop_port = free_port();
			snprintf(poparg, sizeof(poparg), "%d", u->pop_port);
			argv[n++] = a;
			argv[n++] = poparg;
			continue;
		}
		argv[n++] = a;
	}
	va_end(ap);
	argv[n] = NULL;
	up_spawn(u, argv, name);
}

static void
up_stop(struct upstream *u)
{
	int st;

	if (u->pid <= 0)
		return;
	close(u->rfd);
	kill(u->pid, SIGTERM);
	for (int i = 0; i < 100; i++) {		/* 5 s, then SIGKILL */
		if (waitpid(u->pid, &st, WNOHANG) == u->pid) {
			u->pid = 0;
			return;
		}
		usleep(50000);
	}
	kill(u->pid, SIGKILL);
	waitpid(u->pid, &st, 0);
	u->pid = 0;
}

/* Read path into a malloc'd buffer; NULL if missing. */
static char *
slurp(const char *path, size_t *len_out)
{
	FILE *f = fopen(path, "rb");
	struct util_buf b = { 0 };
	char chunk[4096];
	size_t n;

	if (f == NULL)
		return NULL;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		util_buf_add(&b, chunk, n);
	fclose(f);
	util_buf_add(&b, "", 1);
	if (len_out != NULL)
		*len_out = b.len - 1;
	return b.data;
}

static char *
up_file(const struct upstream *u, const char *name, size_t *len_out)
{
	char path[700];

	snprintf(path, sizeof(path), "%s/%s", u->out, name);
	return slurp(path, len_out);
}

static void
put_file(const char *path, const char *s)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(s, f);
	assert_int_equal(fclose(f), 0);
}

/* s with every LF turned into CRLF, and a final CRLF if missing. */
static char *
crlf(const char *s)
{
	struct util_buf b = { 0 };

	for (; *s != '\0'; s++) {
		if (*s == '\n')
			util_buf_add(&b, "\r", 1);
		util_buf_add(&b, s, 1);
	}
	if (b.len == 0 || b.data[b.len - 1] != '\n')
		util_buf_add(&b, "\r\n", 2);
	util_buf_add(&b, "", 1);
	return b.data;
}

static const char *msg_text =
	"Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\n"
	"From: Alice <alice@example.org>\n"
	"To: bob@example.net\n"
	"Subject: test\n"
	"\n"
	"Hello.\n";

static struct deliver_msg
mkmsg(const char *content)
{
	struct deliver_msg m = {
		.content = content, .content_len = strlen(content),
		.return_path = "alice@example.org", .qid = "Q1",
		.hostname = "client.test",
	};
	return m;
}

static void
smtp_opts(struct deliver_smtp_opts *o, const struct upstream *u)
{
	memset(o, 0, sizeof(*o));
	o->host = "127.0.0.1";
	o->port = u->port;
	o->timeouts.command_ms = 10000;
	o->timeouts.greeting_ms = 10000;
	o->timeouts.data_term_ms = 10000;
	o->timeouts.connect_ms = 5000;
}

static void
want_status(const char *label, const struct deliver_rcpt_status *st,
    enum deliver_result r, int code, const char *text_part)
{
	if (st->result != r || (code != -1 && st->code != code) ||
	    (text_part != NULL && strstr(st->text, text_part) == NULL))
		fail_msg("case \"%s\": got result %d code %d text \"%s\"; "
		    "want result %d code %d text with \"%s\"", label,
		    st->result, st->code, st->text, r, code,
		    text_part != NULL ? text_part : "");
}

/* ---- cases ---- */

static void
test_plain_relay(void **state)
{
	struct upstream u = { 0 };
	struct deliver_smtp_opts o;
	struct deliver_rcpt_status st[2];
	const char *rcpts[] = { "bob@example.net", "carol@example.net" };
	struct deliver_msg m = mkmsg(msg_text);
	const char *err = NULL;

	(void)state;
	up_start(&u, "plain", NULL);
	smtp_opts(&o, &u);
	enum deliver_result r = deliver_smtp(&o, &m, rcpts, 2, st, &err);
	up_stop(&u);
	if (r != DELIVER_OK)
		fail_msg("case \"plain relay\": got %d (%s), want OK", r,
		    err);
	want_status("plain rcpt 0", &st[0], DELIVER_OK, 250, "queued as");
	want_status("plain rcpt 1", &st[1], DELIVER_OK, 250, "queued as");
	char *env = up_file(&u, "1.env", NULL), *eml = up_file(&u, "1.eml",
	    NULL), *want = crlf(msg_text);
	assert_non_null(env);
	assert_non_null(strstr(env, "from alice@example.org\n"));
	assert_non_null(strstr(env, "rcpt bob@example.net\nrcpt "
	    "carol@example.net\n"));
	assert_string_equal(eml, want);
	free(env);
	free(eml);
	free(want);
}

/* STARTTLS required + AUTH PLAIN / LOGIN, implicit TLS + AUTH. */
static void
test_tls_auth(void **state)
{
	static const struct {
		const char	*label;
		const char	*mode;
		const char	*exclude;	/* mechanism the server hides */
		enum deliver_tls tls;
		const char	*want_mech;
	} cases[] = {
		{ "starttls plain", "starttls", "LOGIN", DELIVER_TLS_STARTTLS,
		    "PLAIN" },
		{ "starttls login", "starttls", "PLAIN", DELIVER_TLS_STARTTLS,
		    "LOGIN" },
		{ "implicit tls", "tls", "LOGIN", DELIVER_TLS_IMPLICIT,
		    "PLAIN" },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct upstream u = { 0 };
		struct deliver_smtp_opts o;
		struct deliver_rcpt_status st[1];
		const char *rcpts[] = { "bob@example.net" };
		struct deliver_msg m = mkmsg(msg_text);
		const char *err = NULL;
		char name[32];

		snprintf(name, sizeof(name), "tls%zu", i);
		up_start(&u, name, "--mode", cases[i].mode, "--cert", srv_pem,
		    "--key", srv_key, "--auth", "relayuser:s3cret pass",
		    "--auth-exclude", cases[i].exclude, NULL);
		smtp_opts(&o, &u);
		o.tls = cases[i].tls;
		o.tls_name = "localhost";
		o.ca_file = ca_pem;
		o.user = "relayuser";
		o.pass = "s3cret pass";
		enum deliver_result r = deliver_smtp(&o, &m, rcpts, 1, st,
		    &err);
		up_stop(&u);
		if (r != DELIVER_OK)
			fail_msg("case \"%s\": got %d (%s), want OK",
			    cases[i].label, r, err);
		char *env = up_file(&u, "1.env", NULL);
		char want[64];
		snprintf(want, sizeof(want), "mech %s\n", cases[i].want_mech);
		if (env == NULL || strstr(env, "auth relayuser\n") == NULL ||
		    strstr(env, want) == NULL || strstr(env, "tls yes\n") ==
		    NULL)
			fail_msg("case \"%s\": upstream saw \"%s\", want %s",
			    cases[i].label, env != NULL ? env : "(nothing)",
			    want);
		free(env);
	}
}

/* Wrong password: a temporary failure naming AUTH; not delivered. */
static void
test_auth_refused(void **state)
{
	struct upstream u = { 0 };
	struct deliver_smtp_opts o;
	struct deliver_rcpt_status st[1];
	const char *rcpts[] = { "bob@example.net" };
	struct deliver_msg m = mkmsg(msg_text);
	const char *err = NULL;

	(void)state;
	up_start(&u, "authbad", "--mode", "starttls", "--cert", srv_pem,
	    "--key", srv_key, "--auth", "relayuser:right", NULL);
	smtp_opts(&o, &u);
	o.tls = DELIVER_TLS_STARTTLS;
	o.tls_name = "localhost";
	o.ca_file = ca_pem;
	o.user = "relayuser";
	o.pass = "wrong";
	(void)deliver_smtp(&o, &m, rcpts, 1, st, &err);
	up_stop(&u);
	want_status("wrong password", &st[0], DELIVER_TEMPFAIL, 535, "AUTH");
	assert_null(up_file(&u, "1.eml", NULL));
}

static void
test_verify(void **state)
{
	static const struct {
		const char	*label;
		const char	*ca;		/* NULL: system store */
		bool		 no_verify;
		const char	*name;
		enum deliver_result want;
		const char	*why;
	} cases[] = {
		{ "unknown CA", NULL, false, "localhost", DELIVER_TEMPFAIL,
		    "certificate verification failed" },
		{ "wrong name", "CA", false, "mail.other.test",
		    DELIVER_TEMPFAIL, "certificate verification failed" },
		{ "unknown CA, no-verify", NULL, true, "localhost",
		    DELIVER_OK, NULL },
		{ "test CA", "CA", false, "localhost", DELIVER_OK, NULL },
	};
	struct upstream u = { 0 };

	(void)state;
	up_start(&u, "verify", "--mode", "starttls", "--cert", srv_pem,
	    "--key", srv_key, NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct deliver_smtp_opts o;
		struct deliver_rcpt_status st[1];
		const char *rcpts[] = { "bob@example.net" };
		struct deliver_msg m = mkmsg(msg_text);
		const char *err = NULL;

		smtp_opts(&o, &u);
		o.tls = DELIVER_TLS_STARTTLS;
		o.tls_name = cases[i].name;
		o.ca_file = cases[i].ca != NULL ? ca_pem : NULL;
		o.no_verify = cases[i].no_verify;
		enum deliver_result r = deliver_smtp(&o, &m, rcpts, 1, st,
		    &err);
		if (r != cases[i].want || (cases[i].why != NULL &&
		    strstr(st[0].text, cases[i].why) == NULL)) {
			up_stop(&u);
			fail_msg("case \"%s\": got %d \"%s\", want %d \"%s\"",
			    cases[i].label, r, st[0].text, cases[i].want,
			    cases[i].why != NULL ? cases[i].why : "");
		}
	}
	up_stop(&u);
}

/*
 * Opportunistic STARTTLS (MX): used when offered; a failed handshake falls
 * back to clear text on a new connection rather than deferring forever.
 */
static void
test_opportunistic(void **state)
{
	static const struct {
		const char	*label;
		const char	*ca;	/* NULL: the handshake fails to verify */
		const char	*want_tls;
	} cases[] = {
		{ "handshake ok", "CA", "tls yes\n" },
		{ "handshake fails: clear text", NULL, "tls no\n" },
	};
	struct upstream u = { 0 };

	(void)state;
	up_start(&u, "opportunistic", "--mode", "starttls", "--tls-optional",
	    "--cert", srv_pem, "--key", srv_key, NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct deliver_smtp_opts o;
		struct deliver_rcpt_status st[1];
		const char *rcpts[] = { "bob@example.net" };
		struct deliver_msg m = mkmsg(msg_text);
		const char *err = NULL;
		char name[32];

		smtp_opts(&o, &u);
		o.tls = DELIVER_TLS_OPPORTUNISTIC;
		o.tls_name = "localhost";
		o.ca_file = cases[i].ca != NULL ? ca_pem : NULL;
		enum deliver_result r = deliver_smtp(&o, &m, rcpts, 1, st,
		    &err);
		snprintf(name, sizeof(name), "%zu.env", i + 1);
		char *env = up_file(&u, name, NULL);
		if (r != DELIVER_OK || env == NULL ||
		    strstr(env, cases[i].want_tls) == NULL) {
			up_stop(&u);
			fail_msg("case \"%s\": got %d (%s), upstream saw "
			    "\"%s\", want %s", cases[i].label, r, err, env,
			    cases[i].want_tls);
		}
		free(env);
	}
	up_stop(&u);
}

/* Per-recipient 4xx/5xx, with and without PIPELINING. */
static void
test_per_rcpt(void **state)
{
	const char *rcpts[] = { "ok@example.net", "later@example.net",
	    "never@example.net", "ok2@example.net" };

	(void)state;
	for (int pipe_on = 0; pipe_on < 2; pipe_on++) {
		struct upstream u = { 0 };
		struct deliver_smtp_opts o;
		struct deliver_rcpt_status st[4];
		struct deliver_msg m = mkmsg(msg_text);
		const char *err = NULL;

		up_start(&u, pipe_on ? "rcpt-pipe" : "rcpt", "--rcpt-code",
		    "later@example.net=451", "--rcpt-code",
		    "never@example.net=550", pipe_on ? "--pipelining" : NULL,
		    NULL);
		smtp_opts(&o, &u);
		enum deliver_result r = deliver_smtp(&o, &m, rcpts, 4, st,
		    &err);
		up_stop(&u);
		assert_int_equal(r, DELIVER_TEMPFAIL);
		want_status("rcpt ok", &st[0], DELIVER_OK, 250, "queued");
		want_status("rcpt 451", &st[1], DELIVER_TEMPFAIL, 451,
		    "451 4.0.0 test reply for later@example.net (in reply to "
		    "RCPT TO)");
		want_status("rcpt 550", &st[2], DELIVER_PERMFAIL, 550,
		    "550 5.0.0 test reply");
		want_status("rcpt ok2", &st[3], DELIVER_OK, 250, "queued");
		if (strncmp(st[2].remote, "127.0.0.1[127.0.0.1]:", 21) != 0)
			fail_msg("case \"remote\": got \"%s\"", st[2].remote);
		char *env = up_file(&u, "1.env", NULL);
		assert_non_null(env);
		assert_non_null(strstr(env, "rcpt ok@example.net\nrcpt "
		    "ok2@example.net\nauth"));
		free(env);
	}
	/* Every recipient refused: no DATA content, all permanent. */
	struct upstream u = { 0 };
	struct deliver_smtp_opts o;
	struct deliver_rcpt_status st[1];
	const char *one[] = { "never@example.net" };
	struct deliver_msg m = mkmsg(msg_text);
	const char *err = NULL;
	up_start(&u, "rcpt-none", "--pipelining", "--rcpt-code",
	    "never@example.net=550", NULL);
	smtp_opts(&o, &u);
	assert_int_equal(deliver_smtp(&o, &m, one, 1, st, &err),
	    DELIVER_PERMFAIL);
	up_stop(&u);
	assert_null(up_file(&u, "1.eml", NULL));
}

/*
 * Relay content (len octets) to u as its n-th message; the upstream must
 * have stored want exactly, or (want NULL) nothing: a permanent failure
 * whose text has "NUL".
 */
static void
relay_exact(struct upstream *u, const char *label, const char *content,
    size_t len, int n, const char *want)
{
	struct deliver_smtp_opts o;
	struct deliver_rcpt_status st[1];
	const char *rcpts[] = { "bob@example.net" };
	struct deliver_msg m = mkmsg(content);
	const char *err = NULL;
	char name[32];

	m.content_len = len;
	smtp_opts(&o, u);
	enum deliver_result r = deliver_smtp(&o, &m, rcpts, 1, st, &err);
	snprintf(name, sizeof(name), "%d.eml", n);
	char *got = up_file(u, name, NULL);
	if (want == NULL) {
		want_status(label, &st[0], DELIVER_PERMFAIL, 0, "NUL");
		assert_null(got);
		return;
	}
	if (r != DELIVER_OK || got == NULL || strcmp(got, want) != 0) {
		up_stop(u);
		fail_msg("case \"%s\": result %d (%s); upstream got \"%s\", "
		    "want \"%s\"", label, r, err, got, want);
	}
	free(got);
}

/* Dot-stuffing: what the upstream unstuffs is the spool content. */
static void
test_dot_stuffing(void **state)
{
	static const struct {
		const char	*label;
		const char	*content;
	} cases[] = {
		{ "lone dot line", "Subject: d\n\nbefore\n.\nafter\n" },
		{ "dot dot", "Subject: d\n\n..\n...x\n.y\n" },
		{ "dot first line of body", "Subject: d\n\n.hidden\n" },
		{ "no final newline", "Subject: d\n\nlast line .\n.end" },
		{ "CRLF-dot-CRLF lookalike", "Subject: d\n\na\n.\n.\nb\n" },
		{ "dot at EOF", "Subject: d\n\n." },
	};
	struct upstream u = { 0 };

	(void)state;
	up_start(&u, "dots", NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *want = crlf(cases[i].content);
		relay_exact(&u, cases[i].label, cases[i].content,
		    strlen(cases[i].content), (int)i + 1, want);
		free(want);
	}
	up_stop(&u);
}

/* n copies of c, then tail: a test line (malloc'd). */
static char *
rep(char c, size_t n, const char *tail)
{
	size_t tl = strlen(tail);
	char *s = xmalloc(n + tl + 1);

	memset(s, c, n);
	memcpy(s + n, tail, tl + 1);
	return s;
}

/*
 * Whatever the spool holds, the upstream gets canonical CRLF lines of at
 * most 998 octets plus CRLF (RFC 5321 2.3.8, 4.5.3.1.6): a bare CR ends a
 * line, a CRLF is one line end, a longer line is folded with CRLF SP, and a
 * NUL is never sent (permanent failure before connecting).
 */
static void
test_canonical_lines(void **state)
{
	char *x3000 = rep('x', 3000, "\n"), *dot = rep('y', 1500, "\n");
	char *hdr = rep('z', 1200, "\n\nbody\n");
	char *w3000 = xasprintf("Subject: c\r\n\r\n%.998s\r\n %.997s\r\n "
	    "%.997s\r\n %.8s\r\n", x3000, x3000, x3000, x3000);
	char *wdot = xasprintf("Subject: c\r\n\r\n.%.996s\r\n %.504s\r\n",
	    dot, dot);
	char *whdr = xasprintf("Subject: %.989s\r\n %.211s\r\n\r\nbody\r\n",
	    hdr, hdr);
	char *c3000 = xasprintf("Subject: c\n\n%s", x3000);
	char *cdot = xasprintf("Subject: c\n\n.%s", dot);
	char *chdr = xasprintf("Subject: %s", hdr);
	const struct {
		const char	*label;
		const char	*content;
		size_t		 len;		/* 0: strlen */
		const char	*want;		/* NULL: not sent, 5xx */
	} cases[] = {
		{ "bare CR", "Subject: c\n\na\r.\rb\n", 0,
		  "Subject: c\r\n\r\na\r\n.\r\nb\r\n" },
		{ "CRLF in the spool", "Subject: c\r\n\r\nx\r\n\r\r\ny", 0,
		  "Subject: c\r\n\r\nx\r\n\r\n\r\ny\r\n" },
		{ "CR at the end", "Subject: c\n\nend\r", 0,
		  "Subject: c\r\n\r\nend\r\n" },
		{ "3000-octet line", c3000, 0, w3000 },
		{ "long line with a dot", cdot, 0, wdot },
		{ "long header", chdr, 0, whdr },
		{ "NUL", "Subject: n\n\na\0b\n", 16, NULL },
	};
	struct upstream u = { 0 };
	int n = 0;

	(void)state;
	up_start(&u, "canon", NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		relay_exact(&u, cases[i].label, cases[i].content,
		    cases[i].len != 0 ? cases[i].len : strlen(cases[i].content),
		    cases[i].want != NULL ? ++n : n + 1, cases[i].want);
	up_stop(&u);
	free(x3000);
	free(dot);
	free(hdr);
	free(w3000);
	free(wdot);
	free(whdr);
	free(c3000);
	free(cdot);
	free(chdr);
}

/* The spool file path (not memory), a big body, exact. */
static void
test_from_file(void **state)
{
	struct upstream u = { 0 };
	struct deliver_smtp_opts o;
	struct deliver_rcpt_status st[1];
	const char *rcpts[] = { "bob@example.net" };
	struct util_buf b = { 0 };
	char path[300];
	const char *err = NULL;

	(void)state;
	util_buf_addstr(&b, "Subject: big\n\n");
	for (int i = 0; i < 20000; i++)
		util_buf_printf(&b, "%s%d line of text to fill a few blocks\n",
		    i % 7 == 0 ? "." : "", i);
	util_buf_add(&b, "", 1);
	snprintf(path, sizeof(path), "%s/content", tdir);
	put_file(path, b.data);
	struct deliver_msg m = mkmsg("");
	m.content = NULL;
	m.content_path = path;
	up_start(&u, "file", "--pipelining", NULL);
	smtp_opts(&o, &u);
	enum deliver_result r = deliver_smtp(&o, &m, rcpts, 1, st, &err);
	up_stop(&u);
	if (r != DELIVER_OK)
		fail_msg("case \"from file\": got %d (%s)", r, err);
	char *got = up_file(&u, "1.eml", NULL), *want = crlf(b.data);
	assert_non_null(got);
	assert_true(strcmp(got, want) == 0);
	free(got);
	free(want);
	util_buf_clear(&b);
}

/* RFC 6152 / 6531 / 1870: refuse rather than corrupt or overrun. */
static void
test_extensions(void **state)
{
	static const char *eight = "Subject: caf\xc3\xa9\n\nd\xc3\xa9j\xc3\xa0 "
	    "vu\n";
	(void)state;
	struct upstream u = { 0 }, u8 = { 0 }, us = { 0 };
	struct deliver_smtp_opts o;
	struct deliver_rcpt_status st[1];
	const char *rcpts[] = { "bob@example.net" };
	const char *utf8rcpts[] = { "j\xc3\xb6rg@example.net" };
	const char *err = NULL;
	struct deliver_msg m = mkmsg(eight);

	up_start(&u, "no8bit", "--no-8bitmime", NULL);
	smtp_opts(&o, &u);
	assert_int_equal(deliver_smtp(&o, &m, rcpts, 1, st, &err),
	    DELIVER_PERMFAIL);
	want_status("8-bit to no 8BITMIME", &st[0], DELIVER_PERMFAIL, 0,
	    "5.6.3");
	assert_non_null(strstr(st[0].text, "8BITMIME"));
	/* A 7-bit message still goes through there. */
	struct deliver_msg m7 = mkmsg(msg_text);
	assert_int_equal(deliver_smtp(&o, &m7, rcpts, 1, st, &err),
	    DELIVER_OK);
	/* Non-ASCII address, no SMTPUTF8: refused before MAIL. */
	assert_int_equal(deliver_smtp(&o, &m7, utf8rcpts, 1, st, &err),
	    DELIVER_PERMFAIL);
	want_status("utf8 to no SMTPUTF8", &st[0], DELIVER_PERMFAIL, 0,
	    "SMTPUTF8");
	up_stop(&u);
	char *eml = up_file(&u, "1.eml", NULL);
	char *eml2 = up_file(&u, "2.eml", NULL);
	char *want7 = crlf(msg_text);
	assert_non_null(eml);
	assert_string_equal(eml, want7);	/* only the 7-bit one */
	assert_null(eml2);
	free(eml);
	free(want7);

	/* With 8BITMIME: BODY=8BITMIME declared, bytes untouched. */
	up_start(&u8, "8bit", "--smtputf8", NULL);
	smtp_opts(&o, &u8);
	assert_int_equal(deliver_smtp(&o, &m, rcpts, 1, st, &err),
	    DELIVER_OK);
	assert_int_equal(deliver_smtp(&o, &m, utf8rcpts, 1, st, &err),
	    DELIVER_OK);
	up_stop(&u8);
	char *env = up_file(&u8, "1.env", NULL), *got = up_file(&u8,
	    "1.eml", NULL), *want = crlf(eight);
	char *env2 = up_file(&u8, "2.env", NULL);
	assert_non_null(env);
	assert_non_null(env2);
	assert_non_null(strstr(env, "BODY=8BITMIME"));
	assert_non_null(strstr(env2, "SMTPUTF8"));
	assert_string_equal(got, want);
	free(env);
	free(env2);
	free(got);
	free(want);

	/* SIZE: over the server's limit is permanent, with its limit. */
	up_start(&us, "size", "--size", "100", NULL);
	smtp_opts(&o, &us);
	assert_int_equal(deliver_smtp(&o, &m7, rcpts, 1, st, &err),
	    DELIVER_PERMFAIL);
	up_stop(&us);
	want_status("over SIZE", &st[0], DELIVER_PERMFAIL, 0, "5.3.4");
	assert_non_null(strstr(st[0].text, "SIZE 100"));
}

/* A server that is down, and a loop guard. */
static void
test_down_and_loop(void **state)
{
	struct deliver_smtp_opts o = { .host = "127.0.0.1",
	    .port = free_port(), .timeouts.connect_ms = 2000 };
	struct deliver_rcpt_status st[1];
	const char *rcpts[] = { "bob@example.net" };
	struct deliver_msg m = mkmsg(msg_text);
	const char *err = NULL;

	(void)state;
	assert_int_equal(deliver_smtp(&o, &m, rcpts, 1, st, &err),
	    DELIVER_TEMPFAIL);
	want_status("down", &st[0], DELIVER_TEMPFAIL, 0, "Connection refused");

	struct upstream u = { 0 };
	struct util_buf b = { 0 };
	for (int i = 0; i < 5; i++)
		util_buf_printf(&b, "Received: from h%d by h%d\n", i, i + 1);
	util_buf_addstr(&b, "Subject: loop\n\nx\n");
	util_buf_add(&b, "", 1);
	struct deliver_msg ml = mkmsg(b.data);
	up_start(&u, "loop", NULL);
	smtp_opts(&o, &u);
	o.max_received = 4;
	assert_int_equal(deliver_smtp(&o, &ml, rcpts, 1, st, &err),
	    DELIVER_PERMFAIL);
	want_status("loop", &st[0], DELIVER_PERMFAIL, 0, "5.4.6");
	o.max_received = 5;
	assert_int_equal(deliver_smtp(&o, &ml, rcpts, 1, st, &err),
	    DELIVER_OK);
	up_stop(&u);
	util_buf_clear(&b);
}

static struct table *
file_table(const char *name, const char *text)
{
	char path[300];
	const char *err;

	snprintf(path, sizeof(path), "%s/%s", tdir, name);
	put_file(path, text);
	struct config_table ct = { .name = (char *)name,
	    .kind = CONFIG_TABLE_FILE, .path = path };
	struct table *t = table_open(&ct, &err);
	if (t == NULL)
		fail_msg("table %s: %s", name, err);
	return t;
}

/* RFC 5321 5.1 through mx-hosts: preference order and fallback. */
static void
test_mx_hosts(void **state)
{
	struct upstream busy = { 0 }, good = { 0 }, other = { 0 };
	int dead = free_port();
	char text[512];

	(void)state;
	up_start(&busy, "mx-busy", "--mode", "busy421", NULL);
	up_start(&good, "mx-good", NULL);
	up_start(&other, "mx-other", NULL);
	/* Written out of order: the preferences decide. */
	snprintf(text, sizeof(text),
	    "fallback.test 30 127.0.0.1:%d, 10 127.0.0.1:%d, 20 127.0.0.1:%d\n"
	    "order.test 20 127.0.0.1:%d, 10 127.0.0.1:%d\n"
	    "alldown.test 10 127.0.0.1:%d\n"
	    "mixed.test 10 127.0.0.1:%d\n",
	    good.port, dead, busy.port, other.port, good.port, dead,
	    good.port);
	struct table *t = file_table("mxhosts", text);
	struct deliver_mx_opts mo = { .mx_hosts = t };
	struct deliver_smtp_opts so;
	struct deliver_rcpt_status st[2];
	struct deliver_msg m = mkmsg(msg_text);
	const char *err = NULL;
	smtp_opts(&so, &good);
	so.tls = DELIVER_TLS_OPPORTUNISTIC;

	/* Resolution alone: sorted by preference. */
	struct deliver_mx_host *h;
	size_t nh;
	bool perm;
	assert_int_equal(deliver_mx_resolve(&mo, "fallback.test", &h, &nh,
	    &perm, &err), 0);
	assert_int_equal(nh, 3);
	assert_int_equal(h[0].port, dead);
	assert_int_equal(h[1].port, busy.port);
	assert_int_equal(h[2].port, good.port);
	assert_int_equal(h[0].pref, 10);
	free(h);

	const char *r1[] = { "bob@fallback.test" };
	enum deliver_result r = deliver_mx(&mo, &so, "fallback.test", &m, r1,
	    1, st, &err);
	if (r != DELIVER_OK)
		fail_msg("case \"fallback past down and 421\": got %d (%s)",
		    r, err);
	char port[32];
	snprintf(port, sizeof(port), ":%d", good.port);
	assert_non_null(strstr(st[0].remote, port));

	const char *r2[] = { "carol@order.test" };
	assert_int_equal(deliver_mx(&mo, &so, "order.test", &m, r2, 1, st,
	    &err), DELIVER_OK);
	assert_non_null(strstr(st[0].remote, port));	/* pref 10 = good */

	const char *r3[] = { "dan@alldown.test" };
	assert_int_equal(deliver_mx(&mo, &so, "alldown.test", &m, r3, 1, st,
	    &err), DELIVER_TEMPFAIL);
	want_status("all hosts down", &st[0], DELIVER_TEMPFAIL, 0,
	    "Connection refused");
	up_stop(&busy);
	up_stop(&good);
	up_stop(&other);
	assert_null(up_file(&other, "1.eml", NULL));
	char *env1 = up_file(&good, "1.env", NULL);
	char *env2 = up_file(&good, "2.env", NULL);
	assert_non_null(env1);
	assert_non_null(strstr(env1, "rcpt bob@fallback.test\n"));
	assert_non_null(env2);
	assert_non_null(strstr(env2, "rcpt carol@order.test\n"));
	free(env1);
	free(env2);
	table_free(&t);
}

static struct config *parse_cfg(const char *text);

/*
 * RFC 5321 5.1 through DNS (data/dnsd.py as the resolver): MX order and
 * fallback, the implicit MX, NXDOMAIN, null MX, answers truncated over UDP
 * and asked again over TCP, many MX records, address literals, ourselves
 * among the MX hosts, a dead resolver.  The two
 * MX hosts are 127.0.0.2 (answers 421) and 127.0.0.3 on one port.
 */
static void
test_mx_dns(void **state)
{
	struct upstream dns = { 0 }, busy = { 0 }, good = { 0 };
	char zone[4096], dport[16], resolver[64], port[32];
	const char *err = NULL;

	(void)state;
	good.port = busy.port = free_port();
	up_start(&busy, "dns-busy", "--host", "127.0.0.2", "--mode", "busy421",
	    NULL);
	up_start(&good, "dns-good", "--host", "127.0.0.3", NULL);
	snprintf(zone, sizeof(zone), "{"
	    "\"mx.test\": {\"MX\": [[20, \"mx2.mx.test\"], "
	    "[10, \"mx1.mx.test\"]]},"
	    "\"mx1.mx.test\": {\"A\": [\"127.0.0.2\"]},"
	    "\"mx2.mx.test\": {\"A\": [\"127.0.0.3\"]},"
	    "\"nomx.test\": {\"A\": [\"127.0.0.3\"]},"
	    "\"null.test\": {\"MX\": [[0, \".\"]]},"
	    "\"noaddr.test\": {\"MX\": [[10, \"gone.test\"]]},"
	    "\"tc.test\": {\"MX\": [[10, \"mx.tc.test\"]], "
	    "\"tc\": [\"MX\"]},"
	    "\"mx.tc.test\": {\"A\": [\"127.0.0.3\"], \"tc\": [\"A\"]},"
	    "\"part.test\": {\"MX\": [[20, \"gone.test\"], "
	    "[10, \"mx2.mx.test\"]], \"tcpartial\": true},"
	    "\"bad.test\": {\"MX\": [[10, \"mx2.mx.test\"]], "
	    "\"badcount\": true},"
	    "\"many.test\": {\"MX\": [");
	/* 32 hosts without an address, then the best, listed last */
	for (int i = 0; i < 32; i++)
		snprintf(zone + strlen(zone), sizeof(zone) - strlen(zone),
		    "[%d, \"gone%d.test\"], ", 50 + i, i);
	snprintf(zone + strlen(zone), sizeof(zone) - strlen(zone),
	    "[1, \"mx2.mx.test\"]]}}");
	dns.port = free_port();
	snprintf(dport, sizeof(dport), "%d", dns.port);
	snprintf(dns.out, sizeof(dns.out), "%s/dns", tdir);
	char dscript[600];
	snprintf(dscript, sizeof(dscript), "%s", script);
	char *slash = strrchr(dscript, '/');
	snprintf(slash + 1, sizeof(dscript) - (size_t)(slash + 1 - dscript),
	    "dnsd.py");
	const char *argv[] = { "/usr/bin/python3", dscript, "--port", dport,
	    "--zone", zone, NULL };
	up_spawn(&dns, argv, "dns");
	snprintf(resolver, sizeof(resolver), "127.0.0.1:%d", dns.port);
	struct deliver_mx_opts mo = { .resolver = resolver, .port = good.port,
	    .dns_timeout_ms = 3000 };

	struct deliver_mx_host *h = NULL;
	size_t nh = 0;
	bool perm;
	if (deliver_mx_resolve(&mo, "mx.test", &h, &nh, &perm, &err) == -1)
		fail_msg("case \"resolve mx.test\": %s", err);
	assert_int_equal(nh, 2);
	assert_string_equal(h[0].name, "mx1.mx.test");
	assert_string_equal(h[0].addr, "127.0.0.2");
	assert_string_equal(h[1].addr, "127.0.0.3");
	free(h);

	static const struct {
		const char	*label, *domain;
		enum deliver_result want;
		const char	*text;
	} cases[] = {
		{ "MX 10 says 421, MX 20 takes it", "mx.test", DELIVER_OK,
		    NULL },
		{ "implicit MX", "nomx.test", DELIVER_OK, NULL },
		{ "NXDOMAIN", "nx.test", DELIVER_PERMFAIL, "5.1.2" },
		{ "null MX", "null.test", DELIVER_PERMFAIL, "5.1.10" },
		{ "MX without address", "noaddr.test", DELIVER_PERMFAIL,
		    "5.1.2" },
		{ "MX and A answers truncated over UDP", "tc.test",
		    DELIVER_OK, NULL },
		{ "part of the MX set over UDP", "part.test", DELIVER_OK,
		    NULL },
		{ "the best of 33 MX records listed last", "many.test",
		    DELIVER_OK, NULL },
		{ "an answer counting more records than it holds",
		    "bad.test", DELIVER_TEMPFAIL, "4.4.3 MX lookup for "
		    "bad.test failed (answer truncated or ill-formed)" },
		{ "address literal", "[127.0.0.3]", DELIVER_OK, NULL },
		{ "IPv6 address literal", "[IPv6:::3]", DELIVER_TEMPFAIL,
		    "::3" },
	};
	struct deliver_smtp_opts so;
	smtp_opts(&so, &good);
	so.tls = DELIVER_TLS_OPPORTUNISTIC;
	snprintf(port, sizeof(port), "127.0.0.3]:%d", good.port);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct deliver_rcpt_status st[1];
		struct deliver_msg m = mkmsg(msg_text);
		char rcpt[64];
		snprintf(rcpt, sizeof(rcpt), "bob@%s", cases[i].domain);
		const char *rcpts[] = { rcpt };
		enum deliver_result r = deliver_mx(&mo, &so, cases[i].domain,
		    &m, rcpts, 1, st, &err);
		if (r != cases[i].want || (cases[i].text != NULL &&
		    strstr(st[0].text, cases[i].text) == NULL) ||
		    (r == DELIVER_OK && strstr(st[0].remote, port) == NULL))
			fail_msg("case \"%s\": got %d \"%s\" from \"%s\", want "
			    "%d \"%s\"", cases[i].label, r, st[0].text,
			    st[0].remote, cases[i].want, cases[i].text !=
			    NULL ? cases[i].text : "");
	}
	/*
	 * RFC 5321 5.1: a host that is one of our listeners goes, with the
	 * less preferred ones; none left, the mail loops.  127.0.0.3 is
	 * ours by its own listener, then by a wildcard one (which is on
	 * every loopback address).
	 */
	static const char *const ours[] = { "127.0.0.3", "0.0.0.0" };
	for (size_t i = 0; i < 2; i++) {
		char text[128];
		snprintf(text, sizeof(text), "listen %s:%d\naction out "
		    "discard\n", ours[i], good.port);
		struct config *c = parse_cfg(text);
		struct deliver_self *self = deliver_self_new(c);
		struct deliver_rcpt_status st[1];
		struct deliver_msg m = mkmsg(msg_text);
		const char *r1[] = { "bob@nomx.test" }, *r2[] = {
		    "bob@mx.test" };
		mo.self = self;
		assert_int_equal(deliver_mx(&mo, &so, "nomx.test", &m, r1, 1,
		    st, &err), DELIVER_PERMFAIL);
		want_status("only ourselves", &st[0], DELIVER_PERMFAIL, 0,
		    "5.4.6 mail for nomx.test loops back to myself");
		/*
		 * By its own listener MX 10 (127.0.0.2, 421) is tried and MX
		 * 20 (ourselves) is not; by the wildcard both are ours.
		 */
		(void)deliver_mx(&mo, &so, "mx.test", &m, r2, 1, st, &err);
		if (i == 0)
			want_status("ourselves second", &st[0],
			    DELIVER_TEMPFAIL, 421, NULL);
		else
			want_status("ourselves on every address", &st[0],
			    DELIVER_PERMFAIL, 0, "5.4.6 mail for mx.test "
			    "loops back to myself");
		mo.self = NULL;
		deliver_self_free(&self);
		config_free(&c);
	}
	up_stop(&dns);
	/* The resolver gone: temporary. */
	struct deliver_rcpt_status st[1];
	struct deliver_msg m = mkmsg(msg_text);
	const char *rcpts[] = { "bob@mx.test" };
	mo.dns_timeout_ms = 600;
	assert_int_equal(deliver_mx(&mo, &so, "mx.test", &m, rcpts, 1, st,
	    &err), DELIVER_TEMPFAIL);
	want_status("resolver down", &st[0], DELIVER_TEMPFAIL, 0, "4.4.3");
	up_stop(&busy);
	up_stop(&good);
}

/* Parse text (with the required listen/match lines) or fail. */
static struct config *
parse_cfg(const char *text)
{
	char *errs = NULL;
	char *full = xasprintf("listen 127.0.0.1:2525\n%s"
	    "match any action out\n", text);
	struct config *c = config_parse("test.conf", full, &errs);

	if (c == NULL)
		fail_msg("config: %s", errs);
	free(full);
	return c;
}

/* POP-before-SMTP through a relay action built from the config. */
static void
test_pop_before_smtp(void **state)
{
	struct upstream u = { 0 };
	char text[1024], tpath[300];
	const char *err = NULL;

	(void)state;
	up_start(&u, "pop", "--pop-port", "--pop-user", "popper",
	    "--pop-pass", "pw0rd", NULL);
	snprintf(tpath, sizeof(tpath), "%s/poppass", tdir);
	put_file(tpath, "popper pw0rd\n");
	snprintf(text, sizeof(text),
	    "table poppass file:%s\n"
	    "action out relay \"smtp://127.0.0.1:%d\" pop "
	    "\"pop3://127.0.0.1:%d\" user popper pass-table <poppass> "
	    "pop-interval 1h timeout command 10s\n", tpath, u.port,
	    u.pop_port);
	struct config *c = parse_cfg(text);
	struct deliver_remote *dr = deliver_remote_new(c,
	    config_action_find(c, "out"), &err);
	if (dr == NULL)
		fail_msg("deliver_remote_new: %s", err);
	struct deliver_rcpt_status st[1];
	const char *rcpts[] = { "bob@example.net" };
	struct deliver_msg m = mkmsg(msg_text);
	for (int i = 0; i < 2; i++) {
		enum deliver_result r = deliver_remote_send(dr, &m, rcpts, 1,
		    st, &err);
		if (r != DELIVER_OK)
			fail_msg("case \"pop then smtp #%d\": got %d (%s)", i,
			    r, err);
	}
	up_stop(&u);
	/* One login: the second message fell within pop-interval. */
	char *log = up_file(&u, "pop.log", NULL);
	assert_non_null(log);
	assert_string_equal(log, "login popper\n");
	free(log);
	deliver_remote_free(&dr);
	config_free(&c);

	/* Without the POP login the upstream refuses: proves the check. */
	struct upstream u2 = { 0 };
	up_start(&u2, "nopop", "--pop-port", "--pop-user", "popper",
	    "--pop-pass", "pw0rd", NULL);
	snprintf(text, sizeof(text), "action out relay "
	    "\"smtp://127.0.0.1:%d\"\n", u2.port);
	c = parse_cfg(text);
	dr = deliver_remote_new(c, config_action_find(c, "out"), &err);
	assert_non_null(dr);
	assert_int_equal(deliver_remote_send(dr, &m, rcpts, 1, st, &err),
	    DELIVER_PERMFAIL);
	want_status("no POP first", &st[0], DELIVER_PERMFAIL, 550, "POP");
	up_stop(&u2);
	deliver_remote_free(&dr);
	config_free(&c);
}

/* Per-sender accounts: auth from a table, headers rewritten exactly. */
static void
test_accounts_rewrite(void **state)
{
	struct upstream ua = { 0 }, ub = { 0 };
	char text[2048], apath[300];
	const char *err = NULL;

	(void)state;
	up_start(&ua, "acct-a", "--auth", "alice:apw", NULL);
	up_start(&ub, "acct-b", NULL);
	snprintf(apath, sizeof(apath), "%s/auth", tdir);
	put_file(apath, "127.0.0.1 alice apw\n");
	snprintf(text, sizeof(text),
	    "table creds file:%s\n"
	    "account a relay \"smtp://127.0.0.1:%d\" auth <creds> "
	    "rewrite return-path bounces@example.org "
	    "rewrite reply-to \"Alice <alice@example.org>\" "
	    "rewrite from \"Alice A <alice@example.org>\"\n"
	    "account b relay \"smtp://127.0.0.1:%d\" helo b.example\n"
	    "action out relay-by-sender { alice@example.org: a, "
	    "@example.com: b, default: b }\n", apath, ua.port, ub.port);
	struct config *c = parse_cfg(text);
	struct deliver_remote *dr = deliver_remote_new(c,
	    config_action_find(c, "out"), &err);
	if (dr == NULL)
		fail_msg("deliver_remote_new: %s", err);
	static const char *in =
	    "Return-Path: <old@example.org>\n"
	    "Received: from x by y\n"
	    "From: someone\n"
	    " <folded@example.org>\n"
	    "Reply-To: old@example.org\n"
	    "Subject: rewrite me\n"
	    "\n"
	    "From: not a header in the body\n"
	    "Reply-To: neither\n";
	static const char *want =
	    "Return-Path: <bounces@example.org>\r\n"
	    "Received: from x by y\r\n"
	    "From: Alice A <alice@example.org>\r\n"
	    "Reply-To: Alice <alice@example.org>\r\n"
	    "Subject: rewrite me\r\n"
	    "\r\n"
	    "From: not a header in the body\r\n"
	    "Reply-To: neither\r\n";
	struct deliver_rcpt_status st[1];
	const char *rcpts[] = { "bob@example.net" };
	struct deliver_msg m = mkmsg(in);
	assert_int_equal(deliver_remote_send(dr, &m, rcpts, 1, st, &err),
	    DELIVER_OK);
	m.return_path = "x@EXAMPLE.com";	/* @domain, any case */
	assert_int_equal(deliver_remote_send(dr, &m, rcpts, 1, st, &err),
	    DELIVER_OK);
	/* Headers missing: Reply-To and From are added at the end. */
	m.return_path = "alice@example.org";
	struct deliver_msg m2 = mkmsg("Subject: bare\n\nbody\n");
	assert_int_equal(deliver_remote_send(dr, &m2, rcpts, 1, st, &err),
	    DELIVER_OK);
	up_stop(&ua);
	up_stop(&ub);
	char *got = up_file(&ua, "1.eml", NULL);
	char *env = up_file(&ua, "1.env", NULL);
	assert_non_null(got);
	if (strcmp(got, want) != 0)
		fail_msg("case \"rewrite\": upstream got \"%s\", want \"%s\"",
		    got, want);
	assert_non_null(strstr(env, "auth alice\n"));
	char *got2 = up_file(&ua, "2.eml", NULL);
	assert_non_null(got2);
	assert_string_equal(got2, "Return-Path: <bounces@example.org>\r\n"
	    "Subject: bare\r\n"
	    "Reply-To: Alice <alice@example.org>\r\n"
	    "From: Alice A <alice@example.org>\r\n"
	    "\r\nbody\r\n");
	char *gb = up_file(&ub, "1.eml", NULL);
	char *wantb = crlf(in);
	assert_non_null(gb);
	assert_string_equal(gb, wantb);		/* account b: untouched */
	free(got);
	free(got2);
	free(env);
	free(gb);
	free(wantb);
	deliver_remote_free(&dr);
	config_free(&c);
}

/* Config grammar errors, one line each. */
static void
test_config_errors(void **state)
{
	static const struct {
		const char	*label;
		const char	*line;
		const char	*want;
	} cases[] = {
		{ "bad scheme", "action out relay \"http://x:1\"\n",
		    "unknown scheme" },
		{ "bad port", "action out relay \"smtp://x:0\"\n",
		    "port must be 1..65535" },
		{ "no url", "action out relay\n", "missing" },
		{ "unknown option", "action out relay \"smtp://x\" bogus\n",
		    "unknown option" },
		{ "undefined table", "action out relay \"smtp://x\" auth "
		    "<nope>\n", "table \"nope\" is not defined" },
		{ "mx with auth", "table t { a }\naction out mx auth <t>\n",
		    "unknown option" },
		{ "pop without user", "action out relay \"smtp://x\" pop "
		    "\"pop3://p\"\n", "needs \"user U\"" },
		{ "bad timeout step", "action out relay \"smtp://x\" timeout "
		    "foo 1s\n", "unknown step" },
		{ "unknown account", "action out relay-by-sender { "
		    "default: nope }\n", "account \"nope\" is not defined" },
		{ "bad sender key", "account a relay \"smtp://x\"\n"
		    "action out relay-by-sender { bob: a }\n",
		    "not an address" },
		{ "forward without address", "action out forward\n",
		    "forward needs an address" },
		{ "bad rewrite", "action out relay \"smtp://x\" rewrite "
		    "subject x\n", "not return-path" },
		{ "resolver port 99999", "action out mx resolver "
		    "127.0.0.1:99999\n", "is not IP[:PORT]" },
		{ "resolver port 0", "action out mx resolver [::1]:0\n",
		    "is not IP[:PORT]" },
		{ "resolver of three parts", "action out mx resolver "
		    "10.0.1\n", "is not IP[:PORT]" },
		{ "resolver without ]", "action out mx resolver [::1\n",
		    "is not IP[:PORT]" },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *errs = NULL;
		char *full = xasprintf("listen 127.0.0.1:2525\n%smatch any "
		    "action out\n", cases[i].line);
		struct config *c = config_parse("t.conf", full, &errs);
		if (c != NULL || errs == NULL || strstr(errs,
		    cases[i].want) == NULL)
			fail_msg("case \"%s\": got \"%s\", want an error with "
			    "\"%s\"", cases[i].label, errs != NULL ? errs :
			    "(accepted)", cases[i].want);
		config_free(&c);
		free(errs);
		free(full);
	}
	/* And the good forms. */
	struct config *c = parse_cfg("table mx file:/dev/null\n"
	    "action out relay \"smtp+starttls://relay.example:2587\" "
	    "no-verify helo me.example timeout data-term 20m\n"
	    "action m mx resolver 127.0.0.1:5353 mx-hosts <mx>\n"
	    "action f forward \"x@example.org\"\n"
	    "action t relay \"smtp+tls://[::1]\"\n"
	    "action r1 mx resolver 192.0.2.1\n"
	    "action r2 mx resolver 2001:db8::1\n"
	    "action r3 mx resolver [2001:db8::1]\n"
	    "action r4 mx resolver [2001:db8::1]:5353\n");
	const struct config_action *a = config_action_find(c, "out");
	assert_int_equal(a->kind, CONFIG_ACTION_RELAY);
	assert_int_equal(a->relay->tls, CONFIG_RELAY_STARTTLS);
	assert_string_equal(a->relay->host, "relay.example");
	assert_int_equal(a->relay->port, 2587);
	assert_true(a->relay->no_verify);
	assert_string_equal(a->relay->helo, "me.example");
	assert_int_equal(a->relay->timeouts_ms[5], 20 * 60000);
	a = config_action_find(c, "m");
	assert_int_equal(a->kind, CONFIG_ACTION_MX);
	assert_string_equal(a->relay->resolver, "127.0.0.1:5353");
	assert_non_null(a->relay->mx_hosts);
	a = config_action_find(c, "f");
	assert_string_equal(a->forward_to, "x@example.org");
	a = config_action_find(c, "t");
	assert_string_equal(a->relay->host, "::1");
	assert_int_equal(a->relay->port, 465);
	config_free(&c);
}

static int
setup(void **state)
{
	char cmd[2048];

	(void)state;
	signal(SIGPIPE, SIG_IGN);
	if (mkdtemp(tdir) == NULL)
		return -1;
	char cwd[256];
	if (getcwd(cwd, sizeof(cwd)) == NULL)
		return -1;
	snprintf(script, sizeof(script), "%s/data/smtpd.py", cwd);
	snprintf(ca_pem, sizeof(ca_pem), "%s/ca.pem", tdir);
	snprintf(srv_pem, sizeof(srv_pem), "%s/srv.pem", tdir);
	snprintf(srv_key, sizeof(srv_key), "%s/srv.key", tdir);
	snprintf(cmd, sizeof(cmd),
	    "cd %s && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n'"
	    " > ext.cnf && "
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
	    "-nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca "
	    ">/dev/null 2>&1 && "
	    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
	    "-keyout srv.key -out srv.csr -subj /CN=localhost "
	    ">/dev/null 2>&1 && "
	    "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key "
	    "-CAcreateserial -out srv.pem -days 2 -extfile ext.cnf "
	    ">/dev/null 2>&1", tdir);
	return system(cmd) == 0 ? 0 : -1;
}

static int
teardown(void **state)
{
	char cmd[600];

	(void)state;
	if (getenv("KEEP_TMP") == NULL) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", tdir);
		if (system(cmd) != 0)
			return -1;
	}
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_relay),
		cmocka_unit_test(test_tls_auth),
		cmocka_unit_test(test_auth_refused),
		cmocka_unit_test(test_verify),
		cmocka_unit_test(test_opportunistic),
		cmocka_unit_test(test_per_rcpt),
		cmocka_unit_test(test_dot_stuffing),
		cmocka_unit_test(test_from_file),
		cmocka_unit_test(test_canonical_lines),
		cmocka_unit_test(test_extensions),
		cmocka_unit_test(test_down_and_loop),
		cmocka_unit_test(test_mx_hosts),
		cmocka_unit_test(test_mx_dns),
		cmocka_unit_test(test_pop_before_smtp),
		cmocka_unit_test(test_accounts_rewrite),
		cmocka_unit_test(test_config_errors),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
