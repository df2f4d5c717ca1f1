/*
 * deliver/prog.c: run a program for a delivery, blocking a worker thread:
 * an argv and a clean environment (no shell), its own process group, as
 * another user when we are root, the input fed through a pipe, stdout kept
 * up to a bound and the first line of stderr, all under one deadline
 * after which the whole group gets SIGKILL.  Knows nothing of what the
 * program is for.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/util.h"

#define PROG_CHUNK	(64u * 1024)

/* Who to become in the child; looked up before the fork. */
struct prog_cred {
	bool	 change;
	uid_t	 uid;
	gid_t	 gid;
	char	 home[256];
};

static int
prog_cred_get(const char *user, struct prog_cred *cr, const char **err_out)
{
	struct passwd pw, *res = NULL;
	char buf[4096];

	memset(cr, 0, sizeof(*cr));
	if (user == NULL)
		return 0;
	if (getpwnam_r(user, &pw, buf, sizeof(buf), &res) != 0 || res == NULL) {
		*err_out = util_err("no such user \"%s\"", user);
		return -1;
	}
	if (geteuid() != 0) {
		if (pw.pw_uid == geteuid())
			return 0;	/* already that user */
		*err_out = util_err("cannot run as \"%s\": postern does not "
		    "run as root", user);
		return -1;
	}
	cr->change = true;
	cr->uid = pw.pw_uid;
	cr->gid = pw.pw_gid;
	util_strlcpy(cr->home, pw.pw_dir, sizeof(cr->home));
	return 0;
}

/* In the child (async-signal-safe calls only): become it and exec. */
static void
prog_child(const struct deliver_prog *p, const struct prog_cred *cr,
    const int in[2], const int out[2], const int err[2])
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	sigset_t none;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	sigaction(SIGPIPE, &dfl, NULL);
	sigaction(SIGCHLD, &dfl, NULL);
	setpgid(0, 0);		/* the deadline kills the whole group */
	if (dup2(in[0], 0) == -1 || dup2(out[1], 1) == -1 ||
	    dup2(err[1], 2) == -1)
		_exit(71);	/* EX_OSERR */
	closefrom(3);
	if (cr->change && (setgroups(1, &cr->gid) == -1 ||
	    setresgid(cr->gid, cr->gid, cr->gid) == -1 ||
	    setresuid(cr->uid, cr->uid, cr->uid) == -1))
		_exit(71);
	execve(p->argv[0], p->argv, p->envp);
	_exit(127);
}

static void
prog_close(int *fd)
{
	if (*fd != -1)
		close(*fd);
	*fd = -1;
}

/* The running child and what we feed it. */
struct prog_io {
	const struct deliver_prog *p;
	struct deliver_prog_result *res;
	int		 in, out, err;	/* our ends; -1 once closed */
	size_t		 head_off, body_off;
	int		 body_fd;	/* body_path, or -1 */
	char		 chunk[PROG_CHUNK];
	size_t		 chunk_len, chunk_off;
	char		 errline[sizeof(((struct deliver_prog_result *)0)->
			    err_line)];
	size_t		 errlen;
	bool		 err_done;	/* the first line is complete */
};

/* The next bytes of input into io->chunk; false at the end. */
static bool
prog_next_input(struct prog_io *io)
{
	const struct deliver_prog *p = io->p;
	ssize_t n;

	io->chunk_off = io->chunk_len = 0;
	if (io->head_off < p->head_len) {
		n = (ssize_t)(p->head_len - io->head_off);
		if ((size_t)n > sizeof(io->chunk))
			n = sizeof(io->chunk);
		memcpy(io->chunk, p->head + io->head_off, (size_t)n);
		io->head_off += (size_t)n;
	} else if (p->body != NULL) {
		n = (ssize_t)(p->body_len - io->body_off);
		if ((size_t)n > sizeof(io->chunk))
			n = sizeof(io->chunk);
		memcpy(io->chunk, p->body + io->body_off, (size_t)n);
		io->body_off += (size_t)n;
	} else if (io->body_fd != -1) {
		while ((n = read(io->body_fd, io->chunk, sizeof(io->chunk))) ==
		    -1 && errno == EINTR)
			;
		if (n <= 0)
			prog_close(&io->body_fd);
	} else {
		n = 0;
	}
	io->chunk_len = n > 0 ? (size_t)n : 0;
	return io->chunk_len > 0;
}

/* Write what the pipe takes; close stdin at the end or when refused. */
static void
prog_feed(struct prog_io *io)
{
	while (io->in != -1) {
		if (io->chunk_off == io->chunk_len && !prog_next_input(io)) {
			prog_close(&io->in);
			return;
		}
		ssize_t n = write(io->in, io->chunk + io->chunk_off,
		    io->chunk_len - io->chunk_off);
		if (n == -1 && errno == EAGAIN)
			return;
		if (n <= 0) {	/* EPIPE: it does not want the rest */
			prog_close(&io->in);
			return;
		}
		io->chunk_off += (size_t)n;
	}
}

static void
prog_take_out(struct prog_io *io)
{
	char buf[8192];
	ssize_t n = read(io->out, buf, sizeof(buf));
	struct deliver_prog_result *res = io->res;

	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		prog_close(&io->out);
		return;
	}
	size_t room = io->p->out_max - res->out.len;

	if ((size_t)n > room)
		res->out_cut = true;	/* the rest is drained */
	util_buf_add(&res->out, buf, (size_t)n < room ? (size_t)n : room);
}

static void
prog_take_err(struct prog_io *io)
{
	char buf[4096];
	ssize_t n = read(io->err, buf, sizeof(buf));

	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		prog_close(&io->err);
		return;
	}
	for (ssize_t i = 0; i < n && !io->err_done; i++) {
		if (buf[i] == '\n') {
			io->err_done = io->errlen > 0;	/* skip blank lines */
			continue;
		}
		if (io->errlen + 1 < sizeof(io->errline))
			io->errline[io->errlen++] = buf[i];
	}
}

/* Run the pipes until every one is closed or the deadline; false: late. */
static bool
prog_pump(struct prog_io *io, uint64_t deadline)
{
	prog_feed(io);
	while (io->out != -1 || io->err != -1) {
		struct pollfd pf[3] = {
			{ .fd = io->in, .events = POLLOUT },
			{ .fd = io->out, .events = POLLIN },
			{ .fd = io->err, .events = POLLIN },
		};
		uint64_t now = util_now_ms();

		if (now >= deadline)
			return false;
		int r = poll(pf, 3, (int)(deadline - now > 60000 ? 60000 :
		    deadline - now));
		if (r == -1 && errno != EINTR)
			return false;
		if (r <= 0)
			continue;
		if (io->in != -1 && pf[0].revents != 0)
			prog_feed(io);
		if (io->out != -1 && pf[1].revents != 0)
			prog_take_out(io);
		if (io->err != -1 && pf[2].revents != 0)
			prog_take_err(io);
	}
	return true;
}

/* Wait for the child until the deadline; false: still running. */
static bool
prog_reap(pid_t pid, uint64_t deadline, int *status)
{
	for (;;) {
		pid_t r = waitpid(pid, status, WNOHANG);

		if (r == pid || (r == -1 && errno != EINTR))
			return true;
		if (util_now_ms() >= deadline)
			return false;
		usleep(2000);
	}
}

static int
prog_pipes(int in[2], int out[2], int err[2])
{
	in[0] = in[1] = out[0] = out[1] = err[0] = err[1] = -1;
	if (pipe2(in, O_CLOEXEC) == -1 || pipe2(out, O_CLOEXEC) == -1 ||
	    pipe2(err, O_CLOEXEC) == -1)
		return -1;
	fcntl(in[1], F_SETFL, O_NONBLOCK);
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	fcntl(err[0], F_SETFL, O_NONBLOCK);
	return 0;
}

static void
prog_result(struct prog_io *io, int status, bool late)
{
	struct deliver_prog_result *res = io->res;

	res->timed_out = late;
	res->exit_code = -1;
	if (!late && WIFEXITED(status))
		res->exit_code = WEXITSTATUS(status);
	else if (!late && WIFSIGNALED(status))
		res->signal = WTERMSIG(status);
	io->errline[io->errlen] = '\0';
	log_safe_into(res->err_line, sizeof(res->err_line), io->errline,
	    io->errlen);
	util_buf_cstr(&res->out);
}

int
deliver_prog_run(const struct deliver_prog *p, struct deliver_prog_result *res,
    const char **err_out)
{
	struct prog_io io = { .p = p, .res = res, .body_fd = -1 };
	int in[2], out[2], err[2], status = 0;
	uint64_t deadline = util_now_ms() + p->timeout_ms;
	struct prog_cred cr;
	pid_t pid;
	bool late;

	memset(res, 0, sizeof(*res));
	if (prog_cred_get(p->user, &cr, err_out) == -1)
		return -1;
	if (p->body == NULL && p->body_path != NULL &&
	    (io.body_fd = open(p->body_path, O_RDONLY | O_CLOEXEC)) == -1) {
		*err_out = util_err("open(%s): %s", p->body_path,
		    strerror(errno));
		return -1;
	}
	if (prog_pipes(in, out, err) == -1 || (pid = fork()) == -1) {
		*err_out = util_err("%s: %s", p->argv[0], strerror(errno));
		goto fail;
	}
	if (pid == 0)
		prog_child(p, &cr, in, out, err);
	setpgid(pid, pid);	/* as the child does: no race with a kill */
	prog_close(&in[0]);
	prog_close(&out[1]);
	prog_close(&err[1]);
	io.in = in[1];
	io.out = out[0];
	io.err = err[0];
	late = !prog_pump(&io, deadline) || !prog_reap(pid, deadline, &status);
	if (late) {
		kill(-pid, SIGKILL);	/* the group: its children too */
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	prog_close(&io.in);
	prog_close(&io.out);
	prog_close(&io.err);
	prog_close(&io.body_fd);
	prog_result(&io, status, late);
	return 0;
fail:
	for (int i = 0; i < 2; i++) {
		prog_close(&in[i]);
		prog_close(&out[i]);
		prog_close(&err[i]);
	}
	prog_close(&io.body_fd);
	return -1;
}

void
deliver_prog_result_clear(struct deliver_prog_result *res)
{
	util_buf_clear(&res->out);
}
