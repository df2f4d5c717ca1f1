/*
 * deliver/prog.c: run a program for a delivery, blocking a worker thread:
 * an argv and a clean environment (no shell), its own process group, as
 * another user when we are root, the input fed through a pipe, stdout kept
 * up to a bound and the first line of stderr, all under one deadline
 * after which the whole group gets SIGKILL (as it does at once when the
 * thread's deliveries are stopped).  The program's own exit ends the run:
 * a background child it leaves holding a pipe is not waited for.  Knows
 * nothing of what the program is for.
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
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/util.h"

#define PROG_CHUNK	(64u * 1024)
#define PROG_WAIT_MS	10	/* how often to look for the exit, no pidfd */
#define PROG_DRAIN_MS	100	/* output taken after the exit, at most */
#define PROG_NOTE_FD	3	/* the child's end of the note pipe */

/* The pipes of a run: [0] read end, [1] write end; -1 when closed. */
struct prog_pipes {
	int	 in[2], out[2], err[2];
	int	 note[2];	/* close-on-exec: EOF once the program runs */
};

/* What a child that could not become the program writes to note[1]. */
enum prog_step {
	PROG_STEP_DUP2, PROG_STEP_SETGROUPS, PROG_STEP_SETRESGID,
	PROG_STEP_SETRESUID, PROG_STEP_EXECVE
};
static const char *const prog_step_names[] = {
	"dup2", "setgroups", "setresgid", "setresuid", "execve"
};
struct prog_note {
	int	 step;		/* enum prog_step */
	int	 err;		/* its errno */
};

/* Who to become in the child; looked up before the fork. */
struct prog_cred {
	bool	 change;
	uid_t	 uid;
	gid_t	 gid;		/* also the one supplementary group */
};

bool
deliver_uid_of(const char *user, uid_t *uid_out, gid_t *gid_out)
{
	struct passwd pw, *res = NULL;
	char buf[4096];

	if (getpwnam_r(user, &pw, buf, sizeof(buf), &res) != 0 || res == NULL)
		return false;
	*uid_out = pw.pw_uid;
	*gid_out = pw.pw_gid;
	return true;
}

/*
 * Why postern cannot become user: it dropped its privileges to
 * server_user (the "user" statement), or it never ran as root.
 */
static const char *
prog_no_root(const char *user, const char *server_user)
{
	if (server_user != NULL)
		return util_err("cannot run as \"%s\": postern drops its "
		    "privileges to user \"%s\" (the \"user\" statement), "
		    "which can become no other user", user, server_user);
	return util_err("cannot run as \"%s\": postern does not run as root",
	    user);
}

/*
 * Who to become for user (NULL: nobody else).  Not root, we can only be
 * ourselves: server_user names the user we dropped to, if it is us.
 */
static int
prog_cred_get(const char *user, const char *server_user, struct prog_cred *cr,
    const char **err_out)
{
	uid_t uid, suid;
	gid_t gid, sgid;

	memset(cr, 0, sizeof(*cr));
	if (user == NULL)
		return 0;
	if (!deliver_uid_of(user, &uid, &gid)) {
		*err_out = util_err("no such user \"%s\"", user);
		return -1;
	}
	if (geteuid() != 0) {
		if (uid == geteuid())
			return 0;	/* already that user */
		if (server_user != NULL && (!deliver_uid_of(server_user, &suid,
		    &sgid) || suid != geteuid()))
			server_user = NULL;	/* not what we dropped to */
		*err_out = prog_no_root(user, server_user);
		return -1;
	}
	cr->change = true;
	cr->uid = uid;
	cr->gid = gid;
	return 0;
}

/*
 * In the child: tell the parent which step failed, so that it is not
 * taken for the program's own exit status.
 */
static _Noreturn void
prog_child_fail(int note, enum prog_step step)
{
	struct prog_note n = { .step = step, .err = errno };
	ssize_t w = write(note, &n, sizeof(n));

	(void)w;		/* nothing more to do without it */
	_exit(127);
}

/* In the child (async-signal-safe calls only): become it and exec. */
static _Noreturn void
prog_child(const struct deliver_prog *p, const struct prog_cred *cr,
    const struct prog_pipes *pp)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	sigset_t none;
	int note = pp->note[1];

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	sigaction(SIGPIPE, &dfl, NULL);
	sigaction(SIGCHLD, &dfl, NULL);
	setpgid(0, 0);		/* the deadline kills the whole group */
	if (dup2(pp->in[0], 0) == -1 || dup2(pp->out[1], 1) == -1 ||
	    dup2(pp->err[1], 2) == -1)
		prog_child_fail(note, PROG_STEP_DUP2);
	if (note != PROG_NOTE_FD) {	/* keep it past closefrom() */
		if (dup3(note, PROG_NOTE_FD, O_CLOEXEC) == -1)
			prog_child_fail(note, PROG_STEP_DUP2);
		note = PROG_NOTE_FD;
	}
	closefrom(PROG_NOTE_FD + 1);
	if (cr->change && setgroups(1, &cr->gid) == -1)
		prog_child_fail(note, PROG_STEP_SETGROUPS);
	if (cr->change && setresgid(cr->gid, cr->gid, cr->gid) == -1)
		prog_child_fail(note, PROG_STEP_SETRESGID);
	if (cr->change && setresuid(cr->uid, cr->uid, cr->uid) == -1)
		prog_child_fail(note, PROG_STEP_SETRESUID);
	execve(p->argv[0], p->argv, p->envp);
	prog_child_fail(note, PROG_STEP_EXECVE);
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
	bool		 stopped;	/* the thread's stop descriptor fired */
	int		 wait_errno;	/* waitpid failed: the exit status is
					   unknown; 0 when it is known */
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

/*
 * One round of the pipes: wait up to timeout_ms for one of them (or
 * wake, a pidfd that becomes readable at the exit; or stop, the thread's
 * stop descriptor: then io->stopped), then serve them.  Returns how many
 * were ready.
 */
static int
prog_poll(struct prog_io *io, int wake, int stop, int timeout_ms)
{
	struct pollfd pf[5] = {
		{ .fd = io->in, .events = POLLOUT },
		{ .fd = io->out, .events = POLLIN },
		{ .fd = io->err, .events = POLLIN },
		{ .fd = wake, .events = POLLIN },
		{ .fd = stop, .events = POLLIN },
	};
	int r = poll(pf, 5, timeout_ms);

	if (r <= 0)
		return 0;	/* EINTR: the caller looks again */
	if (pf[4].revents != 0)
		io->stopped = true;
	if (io->in != -1 && pf[0].revents != 0)
		prog_feed(io);
	if (io->out != -1 && pf[1].revents != 0)
		prog_take_out(io);
	if (io->err != -1 && pf[2].revents != 0)
		prog_take_err(io);
	return r;
}

static int
prog_pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, pid, 0);	/* close-on-exec */
#else
	(void)pid;
	errno = ENOSYS;
	return -1;
#endif
}

/*
 * Whether the child is gone.  A failed waitpid (ECHILD: something reaped
 * it) ends the wait too, but leaves its status unknown: io->wait_errno.
 */
static bool
prog_exited(struct prog_io *io, pid_t pid, int *status)
{
	pid_t r;

	while ((r = waitpid(pid, status, WNOHANG)) == -1 && errno == EINTR)
		;
	if (r == -1)
		io->wait_errno = errno;
	return r == pid || r == -1;
}

/*
 * Feed the child and read its output until it exits, or the deadline
 * passes or the thread's deliveries are stopped (false; io->stopped for
 * the stop).  Its own exit ends the run, even where a background child it
 * left holds a pipe: stdin is closed, and the output it left is taken as
 * long as some is ready, PROG_DRAIN_MS at most.
 */
static bool
prog_pump(struct prog_io *io, pid_t pid, uint64_t deadline, int *status)
{
	int pidfd = prog_pidfd_open(pid);
	uint64_t now, end;
	bool exited;

	prog_feed(io);
	while (!(exited = prog_exited(io, pid, status)) && !io->stopped &&
	    (now = util_now_ms()) < deadline) {
		uint64_t wait_ms = pidfd != -1 ? 60000 : PROG_WAIT_MS;

		prog_poll(io, pidfd, deliver_stop_fd(), (int)(deadline - now <
		    wait_ms ? deadline - now : wait_ms));
	}
	if (pidfd != -1)
		close(pidfd);
	if (!exited)
		return false;
	prog_close(&io->in);
	end = util_now_ms() + PROG_DRAIN_MS;
	while ((io->out != -1 || io->err != -1) && util_now_ms() < end &&
	    prog_poll(io, -1, -1, 0) > 0)
		;
	return true;
}

static int
prog_pipes(struct prog_pipes *pp)
{
	pp->in[0] = pp->in[1] = pp->out[0] = pp->out[1] = -1;
	pp->err[0] = pp->err[1] = pp->note[0] = pp->note[1] = -1;
	if (pipe2(pp->in, O_CLOEXEC) == -1 ||
	    pipe2(pp->out, O_CLOEXEC) == -1 ||
	    pipe2(pp->err, O_CLOEXEC) == -1 ||
	    pipe2(pp->note, O_CLOEXEC) == -1)
		return -1;
	fcntl(pp->in[1], F_SETFL, O_NONBLOCK);
	fcntl(pp->out[0], F_SETFL, O_NONBLOCK);
	fcntl(pp->err[0], F_SETFL, O_NONBLOCK);
	fcntl(pp->note[0], F_SETFL, O_NONBLOCK);
	return 0;
}

static void
prog_pipes_close(struct prog_pipes *pp)
{
	for (int i = 0; i < 2; i++) {
		prog_close(&pp->in[i]);
		prog_close(&pp->out[i]);
		prog_close(&pp->err[i]);
		prog_close(&pp->note[i]);
	}
}

/*
 * After the child is gone: whether it failed to become the program (then
 * *err_out says at which step and why), as opposed to the program
 * exiting, whatever its status.
 */
static bool
prog_failed_start(const struct deliver_prog *p, int note,
    const char **err_out)
{
	struct prog_note n;
	ssize_t got;

	while ((got = read(note, &n, sizeof(n))) == -1 && errno == EINTR)
		;
	if (got != (ssize_t)sizeof(n))
		return false;
	if (n.step < 0 || n.step > PROG_STEP_EXECVE)
		n.step = PROG_STEP_EXECVE;
	*err_out = util_err("%s: %s: %s", p->argv[0],
	    prog_step_names[n.step], strerror(n.err));
	return true;
}

static void
prog_result(struct prog_io *io, int status, bool late)
{
	struct deliver_prog_result *res = io->res;

	res->timed_out = late && !io->stopped;
	res->stopped = io->stopped;
	res->exit_code = -1;
	if (!late && WIFEXITED(status))
		res->exit_code = WEXITSTATUS(status);
	else if (!late && WIFSIGNALED(status))
		res->signal = WTERMSIG(status);
	io->errline[io->errlen] = '\0';
	util_strlcpy(res->err_line, io->errline, sizeof(res->err_line));
	util_buf_cstr(&res->out);
}

int
deliver_prog_run(const struct deliver_prog *p, struct deliver_prog_result *res,
    const char **err_out)
{
	struct prog_io io = { .p = p, .res = res, .body_fd = -1 };
	struct prog_pipes pp;
	int status = 0;
	uint64_t deadline = util_now_ms() + p->timeout_ms;
	struct prog_cred cr;
	pid_t pid;
	bool late;

	memset(res, 0, sizeof(*res));
	if (prog_cred_get(p->user, p->server_user, &cr, err_out) == -1)
		return -1;
	if (p->body == NULL && p->body_path != NULL &&
	    (io.body_fd = open(p->body_path, O_RDONLY | O_CLOEXEC)) == -1) {
		*err_out = util_err("open(%s): %s", p->body_path,
		    strerror(errno));
		return -1;
	}
	if (prog_pipes(&pp) == -1 || (pid = fork()) == -1) {
		*err_out = util_err("%s: %s", p->argv[0], strerror(errno));
		goto fail;
	}
	if (pid == 0)
		prog_child(p, &cr, &pp);
	setpgid(pid, pid);	/* as the child does: no race with a kill */
	prog_close(&pp.in[0]);
	prog_close(&pp.out[1]);
	prog_close(&pp.err[1]);
	prog_close(&pp.note[1]);
	/* The pipes are io's now; pp keeps the note only. */
	io.in = pp.in[1];
	io.out = pp.out[0];
	io.err = pp.err[0];
	pp.in[1] = pp.out[0] = pp.err[0] = -1;
	late = !prog_pump(&io, pid, deadline, &status);
	if (late) {
		kill(-pid, SIGKILL);	/* the group: its children too */
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	prog_close(&io.in);
	prog_close(&io.out);
	prog_close(&io.err);
	if (prog_failed_start(p, pp.note[0], err_out)) {
		deliver_prog_result_clear(res);
		goto fail;
	}
	if (io.wait_errno != 0) {
		/* Never read as an exit: the outcome is unknown. */
		*err_out = util_err("%s: waitpid(%ld): %s: its exit status "
		    "is lost", p->argv[0], (long)pid, strerror(io.wait_errno));
		deliver_prog_result_clear(res);
		goto fail;
	}
	prog_pipes_close(&pp);
	prog_close(&io.body_fd);
	prog_result(&io, status, late);
	return 0;
fail:
	prog_pipes_close(&pp);
	prog_close(&io.body_fd);
	return -1;
}

void
deliver_prog_result_clear(struct deliver_prog_result *res)
{
	util_buf_clear(&res->out);
}

/*
 * Can uid, with gid (also as its one supplementary group when ngroups is
 * 1), execute path?  Asked, as root, in a child that takes those ids: its
 * access(2) then judges as execve(2) will (mode bits, ACLs, each folder
 * on the way).  0, or the errno that says why not.
 */
static int
prog_access_as(const char *path, uid_t uid, gid_t gid, size_t ngroups)
{
	int status;
	pid_t pid;

	if ((pid = fork()) == -1)
		return errno;
	if (pid == 0) {
		int e = 0;

		if (setgroups(ngroups, &gid) == -1 ||
		    setresgid(gid, gid, gid) == -1 ||
		    setresuid(uid, uid, uid) == -1 || access(path, X_OK) == -1)
			e = errno;
		_exit(e);
	}
	while (waitpid(pid, &status, 0) == -1)
		if (errno != EINTR)
			return errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : ECHILD;
}

/* path, executable as who says: 0, or -1 with *err_out naming as_user. */
static int
prog_check_exec(const char *path, const struct prog_cred *who,
    size_t ngroups, const char *as_user, const char **err_out)
{
	int e = 0;

	if (!who->change || who->uid == 0)
		e = access(path, X_OK) == -1 ? errno : 0;
	else
		e = prog_access_as(path, who->uid, who->gid, ngroups);
	if (e == 0)
		return 0;
	*err_out = as_user != NULL ? util_err("%s: %s (as user \"%s\")", path,
	    strerror(e), as_user) : util_err("%s: %s", path, strerror(e));
	return -1;
}

int
deliver_prog_check(const char *path, const char *user,
    const char *server_user, const char *server_group, const char **err_out)
{
	struct prog_cred who;
	const char *err = NULL;
	uid_t uid;
	gid_t gid;

	/* Not root, or root that stays root: as deliver_prog_run() will. */
	if (geteuid() != 0 || server_user == NULL) {
		if (prog_cred_get(user, server_user, &who, err_out) == -1)
			return -1;
		return prog_check_exec(path, &who, 1, who.change ? user : NULL,
		    err_out);
	}
	/*
	 * Root until the drop to server_user: judged as that user, who has
	 * no supplementary group and can become no other user.
	 */
	if (util_account_ids(server_user, server_group, &who.uid, &who.gid,
	    &err) == -1)
		return 0;	/* the "user" statement's own error */
	if (user != NULL && !deliver_uid_of(user, &uid, &gid)) {
		*err_out = util_err("no such user \"%s\"", user);
		return -1;
	}
	if (user != NULL && uid != who.uid) {
		*err_out = prog_no_root(user, server_user);
		return -1;
	}
	who.change = true;
	return prog_check_exec(path, &who, 0, server_user, err_out);
}
