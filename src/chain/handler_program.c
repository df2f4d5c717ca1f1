/*
 * chain/handler_program.c: 'program "PATH" [ARG...] [timeout DUR]'
 * handlers.  The program is spawned with argv only (no shell), a clean
 * environment of POSTERN_* facts, the message file on stdin at eom
 * (/dev/null otherwise), and watched from the loop: its stdout through a
 * non-blocking pipe, its exit through a pidfd (or a short poll timer where
 * pidfds are missing); never a blocking waitpid.  It leads a process group
 * of its own: on timeout, or when the session leaves, the whole group gets
 * SIGKILL, and the handler fails.  Its own exit decides the verdict: a
 * background child it leaves (holding stdout or not) is not waited for.
 * Exit codes: 0 continue, 1 reject 5.7.1 (550, 554 at connect), 2
 * tempfail 451 4.7.1 (text: the first line of stdout), 3 discard, 4
 * accept; anything else (or a signal) is a FAIL.
 */
#include "chain/chain_private.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log/log.h"
#include "util/util.h"

#define PROG_TIMEOUT_DEFAULT_MS	(30u * 1000)
#define PROG_OUT_MAX		512	/* stdout kept; the rest is drained */
#define PROG_POLL_MS		10	/* without pidfd */
#define PROG_FACT_BUF		1024	/* the short facts (chain.h) */
/* Linux MAX_ARG_STRLEN: one "NAME=value" of the environment, NUL counted. */
#define PROG_ENV_STR_MAX	(128u * 1024)

struct prog_inst {
	char		**argv;		/* owned, NULL-terminated */
	uint64_t	  timeout_ms;
};

struct prog_run {
	struct chain_call	*call;	/* NULL once cancelled */
	const struct prog_inst	*pi;
	pid_t			 pid;
	int			 outfd, pidfd;
	struct event		*ev_out, *ev_exit, *ev_timer;
	char			 out[PROG_OUT_MAX + 1];
	size_t			 outlen;
	bool			 timed_out;
};

static void
prog_free(void *inst)
{
	struct prog_inst *pi = inst;

	if (pi == NULL)
		return;
	for (char **a = pi->argv; a != NULL && *a != NULL; a++)
		free(*a);
	free(pi->argv);
	free(pi);
}

static void *
prog_new(const struct chain_handler_args *a, char **err_out)
{
	struct prog_inst *pi = xcalloc(1, sizeof(*pi));
	size_t n = a->argc;

	pi->timeout_ms = PROG_TIMEOUT_DEFAULT_MS;
	if (n >= 4 && strcmp(a->argv[n - 2], "timeout") == 0) {
		if (util_parse_duration_ms(a->argv[n - 1], &pi->timeout_ms) ==
		    -1 || pi->timeout_ms == 0) {
			*err_out = xasprintf("bad timeout \"%s\"",
			    a->argv[n - 1]);
			goto fail;
		}
		n -= 2;
	}
	if (n < 2) {
		*err_out = xstrdup("usage: program \"PATH\" [ARG...] "
		    "[timeout DURATION]");
		goto fail;
	}
	/* No PATH search in a clean environment: the path is absolute. */
	if (a->argv[1][0] != '/') {
		*err_out = xasprintf("\"%s\": the path must be absolute",
		    a->argv[1]);
		goto fail;
	}
	if (access(a->argv[1], X_OK) == -1) {
		*err_out = xasprintf("\"%s\": %s", a->argv[1],
		    strerror(errno));
		goto fail;
	}
	pi->argv = xcalloc(n, sizeof(*pi->argv));
	for (size_t i = 1; i < n; i++)
		pi->argv[i - 1] = xstrdup(a->argv[i]);
	return pi;
fail:
	prog_free(pi);
	return NULL;
}

/* ----- the environment ----- */

static const struct {
	const char	*env, *fact;
} prog_facts[] = {
	{ "POSTERN_CLIENT_IP", "client.ip" },
	{ "POSTERN_CLIENT_PORT", "client.port" },
	{ "POSTERN_CLIENT_RDNS", "client.rdns" },
	{ "POSTERN_LOCAL_IP", "local.ip" },
	{ "POSTERN_HOSTNAME", "hostname" },
	{ "POSTERN_SID", "sid" },
	{ "POSTERN_HELO", "helo" },
	{ "POSTERN_SENDER", "sender" },
	{ "POSTERN_RCPT", "rcpt" },
	{ "POSTERN_RCPTS", "rcpts" },
	{ "POSTERN_NRCPTS", "nrcpts" },
	{ "POSTERN_SIZE", "size" },
	{ "POSTERN_TLS_PROTO", "tls.proto" },
	{ "POSTERN_TLS_CIPHER", "tls.cipher" },
	{ "POSTERN_TLS_SNI", "tls.sni" },
	{ "POSTERN_AUTH_USER", "auth.user" },
};
#define PROG_NFACTS	(sizeof(prog_facts) / sizeof(prog_facts[0]))

static void
prog_env_free(char **env)
{
	for (char **e = env; *e != NULL; e++)
		free(*e);
	free(env);
}

/*
 * "NAME=value" strings, NULL-terminated; free with prog_env_free().  NULL
 * when a fact is too long for the environment (*too_long_out: its name):
 * the kernel would refuse the whole spawn, and a cut value could end
 * inside an address.
 */
static char **
prog_env(struct chain_session *cs, enum smtp_stage st,
    const char **too_long_out)
{
	char **env = xcalloc(PROG_NFACTS + 5, sizeof(*env));
	size_t n = 0;
	char buf[PROG_FACT_BUF];

	env[n++] = xstrdup("PATH=/usr/bin:/bin");
	env[n++] = xasprintf("POSTERN_STAGE=%s", chain_stage_name(st));
	for (size_t i = 0; i < PROG_NFACTS; i++) {
		const char *v = chain_session_get(cs, prog_facts[i].fact, buf,
		    sizeof(buf));
		if (v == NULL)
			continue;
		if (strlen(v) >= PROG_ENV_STR_MAX -
		    strlen(prog_facts[i].env) - 1) {
			*too_long_out = prog_facts[i].env;
			prog_env_free(env);
			return NULL;
		}
		env[n++] = xasprintf("%s=%s", prog_facts[i].env, v);
	}
	if (st == SMTP_STAGE_EOM && chain_session_message_file(cs) != NULL)
		env[n++] = xasprintf("POSTERN_MESSAGE_FILE=%s",
		    chain_session_message_file(cs));
	return env;
}

/* ----- a run ----- */

static void
prog_run_free(struct prog_run *r)
{
	if (r->ev_out != NULL)
		event_free(r->ev_out);
	if (r->ev_exit != NULL)
		event_free(r->ev_exit);
	if (r->ev_timer != NULL)
		event_free(r->ev_timer);
	if (r->outfd != -1)
		close(r->outfd);
	if (r->pidfd != -1)
		close(r->pidfd);
	free(r);
}

/* Read what stdout has; keep the start.  Returns false at EOF/error. */
static bool
prog_read(struct prog_run *r)
{
	char buf[4096];

	for (;;) {
		ssize_t got = read(r->outfd, buf, sizeof(buf));
		if (got > 0) {
			size_t keep = PROG_OUT_MAX - r->outlen;
			if ((size_t)got < keep)
				keep = (size_t)got;
			memcpy(r->out + r->outlen, buf, keep);
			r->outlen += keep;
			continue;
		}
		if (got == -1 && errno == EINTR)
			continue;
		return got == -1 && (errno == EAGAIN || errno == EWOULDBLOCK);
	}
}

static void
prog_out_cb(evutil_socket_t fd, short what, void *arg)
{
	struct prog_run *r = arg;

	(void)fd;
	(void)what;
	if (!prog_read(r)) {
		event_free(r->ev_out);
		r->ev_out = NULL;
	}
}

/* The first line of stdout, printable, no template expansion. */
static void
prog_text(const struct prog_run *r, char *buf, size_t bufsz)
{
	size_t n = 0;

	for (size_t i = 0; i < r->outlen && r->out[i] != '\n' &&
	    r->out[i] != '\r' && n + 1 < bufsz && n < 200; i++) {
		unsigned char ch = (unsigned char)r->out[i];
		if (ch < 0x20 || ch > 0x7e)
			ch = '?';
		/* chain replies are templates: keep "%{" from expanding */
		if (ch == '{' && n > 0 && buf[n - 1] == '%')
			ch = '(';
		buf[n++] = (char)ch;
	}
	while (n > 0 && buf[n - 1] == ' ')
		n--;
	buf[n] = '\0';
}

static void
prog_verdict(const struct prog_run *r, int status, struct chain_verdict *v)
{
	char text[CHAIN_TEXT_MAX];

	prog_text(r, text, sizeof(text));
	if (r->timed_out) {
		chain_verdict_fail(v, "%s: timed out after %llu ms",
		    r->pi->argv[0], (unsigned long long)r->pi->timeout_ms);
		return;
	}
	if (WIFSIGNALED(status)) {
		chain_verdict_fail(v, "%s: killed by signal %d",
		    r->pi->argv[0], WTERMSIG(status));
		return;
	}
	switch (WIFEXITED(status) ? WEXITSTATUS(status) : -1) {
	case 0:
		chain_verdict_continue(v);
		break;
	case 1:
		/* The code and enhanced code are the stage's (run.c). */
		chain_verdict_reject(v, 0, NULL, text);
		break;
	case 2:
		chain_verdict_reject(v, 451, "4.7.1", text[0] != '\0' ? text :
		    "Try again later");
		break;
	case 3:
		chain_verdict_continue(v);
		v->kind = CHAIN_DISCARD;
		break;
	case 4:
		chain_verdict_continue(v);
		v->kind = CHAIN_ACCEPT;
		break;
	default:
		chain_verdict_fail(v, "%s: exit status %d", r->pi->argv[0],
		    WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		break;
	}
}

/* The child may have exited: reap it without blocking. */
static void
prog_exit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct prog_run *r = arg;
	int status = 0;
	pid_t p;

	(void)fd;
	(void)what;
	while ((p = waitpid(r->pid, &status, WNOHANG)) == -1 && errno == EINTR)
		;
	if (p == 0)
		return;			/* not yet (poll mode) */
	if (p == -1)
		status = -1;		/* ECHILD: someone else reaped it */
	if (r->ev_out != NULL)
		(void)prog_read(r);
	if (r->call != NULL) {
		struct chain_verdict v;
		if (p == -1 && !r->timed_out)
			chain_verdict_fail(&v, "%s: lost the child: %s",
			    r->pi->argv[0], strerror(errno));
		else
			prog_verdict(r, status, &v);
		chain_call_done(r->call, &v);
	}
	prog_run_free(r);
}

/*
 * SIGKILL to the program's process group: what it started dies with it
 * (not what left the group, setsid(1) daemons).  The leader is not reaped
 * yet, so its pid still names the group.
 */
static void
prog_kill(const struct prog_run *r)
{
	kill(-r->pid, SIGKILL);
	kill(r->pid, SIGKILL);	/* in case it moved to another group */
}

static void
prog_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct prog_run *r = arg;

	(void)fd;
	(void)what;
	r->timed_out = true;
	prog_kill(r);
	/* the pidfd (or the poll) reports the death */
}

static int
prog_pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, pid, 0);
#else
	(void)pid;
	errno = ENOSYS;
	return -1;
#endif
}

static enum chain_status
prog_run(void *inst, struct chain_call *call, struct chain_verdict *v)
{
	const struct prog_inst *pi = inst;
	struct chain_session *cs = chain_call_session(call);
	struct event_base *base = chain_session_base(cs);
	enum smtp_stage st = chain_call_stage(call);
	const char *msg = st == SMTP_STAGE_EOM ?
	    chain_session_message_file(cs) : NULL;
	posix_spawn_file_actions_t fa;
	int pfd[2];
	pid_t pid;

	const char *too_long = NULL;
	char **env = prog_env(cs, st, &too_long);
	if (env == NULL) {
		/* The limit first: a long path would push it out of why. */
		chain_verdict_fail(v, "%s over the %u octets an environment "
		    "string may hold: %s", too_long, PROG_ENV_STR_MAX,
		    pi->argv[0]);
		return CHAIN_DONE;
	}
	if (pipe2(pfd, O_CLOEXEC | O_NONBLOCK) == -1) {
		prog_env_free(env);
		chain_verdict_fail(v, "pipe: %s", strerror(errno));
		return CHAIN_DONE;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, msg != NULL ? msg :
	    "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	/* The child's stdout is blocking, whatever our end is. */
	int fl = fcntl(pfd[1], F_GETFL);
	fcntl(pfd[1], F_SETFL, fl & ~O_NONBLOCK);
	/*
	 * Default signals and an empty mask, whatever the server set, and a
	 * process group of its own, set before posix_spawn() returns: a
	 * kill of the group can never miss it.
	 */
	posix_spawnattr_t at;
	sigset_t none, dfl;
	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGPIPE);
	sigaddset(&dfl, SIGCHLD);
	posix_spawnattr_init(&at);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &dfl);
	posix_spawnattr_setpgroup(&at, 0);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK |
	    POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
	int rc = posix_spawn(&pid, pi->argv[0], &fa, &at, pi->argv, env);
	posix_spawnattr_destroy(&at);
	posix_spawn_file_actions_destroy(&fa);
	prog_env_free(env);
	close(pfd[1]);
	if (rc != 0) {
		close(pfd[0]);
		chain_verdict_fail(v, "%s: spawn: %s", pi->argv[0],
		    strerror(rc));
		return CHAIN_DONE;
	}

	struct prog_run *r = xcalloc(1, sizeof(*r));
	r->call = call;
	r->pi = pi;
	r->pid = pid;
	r->outfd = pfd[0];
	r->pidfd = prog_pidfd_open(pid);
	r->ev_out = event_new(base, r->outfd, EV_READ | EV_PERSIST,
	    prog_out_cb, r);
	event_add(r->ev_out, NULL);
	if (r->pidfd != -1) {
		fcntl(r->pidfd, F_SETFD, FD_CLOEXEC);
		r->ev_exit = event_new(base, r->pidfd, EV_READ | EV_PERSIST,
		    prog_exit_cb, r);
		event_add(r->ev_exit, NULL);
	} else {
		struct timeval poll = util_timeval_ms(PROG_POLL_MS);
		r->ev_exit = event_new(base, -1, EV_PERSIST, prog_exit_cb, r);
		event_add(r->ev_exit, &poll);
	}
	struct timeval tv = util_timeval_ms(pi->timeout_ms);
	r->ev_timer = evtimer_new(base, prog_timeout_cb, r);
	evtimer_add(r->ev_timer, &tv);
	chain_call_own_timeout(call, pi->timeout_ms);
	*chain_call_data(call) = r;
	return CHAIN_PENDING;
}

/* The session left: kill the group; the exit watch reaps it and frees. */
static void
prog_cancel(void *inst, struct chain_call *call)
{
	struct prog_run *r = *chain_call_data(call);

	(void)inst;
	r->call = NULL;
	r->timed_out = true;
	prog_kill(r);
	if (r->ev_timer != NULL) {
		event_free(r->ev_timer);
		r->ev_timer = NULL;
	}
}

/* The message is its stdin at eom. */
static bool
prog_reads_file(const void *inst)
{
	(void)inst;
	return true;
}

const struct chain_handler_ops chain_program_ops[] = {
	{ "program", CHAIN_STAGES_ALL, prog_new, prog_free, prog_run,
	    prog_cancel, prog_reads_file },
	{ NULL, 0, NULL, NULL, NULL, NULL, NULL },
};
