/*
 * priv/client.c: postern's side of the privileged helper.  Requests go out
 * as datagrams under a mutex; one reader thread takes the answers and
 * hands each to its asker: an event loop (event_active on the asker's
 * event, only while the request is still wanted) or a blocked worker
 * (a condition variable).  When the helper dies, every open request fails
 * (-1) and the reader waits for the keeper's next socket.
 */
#include "priv/priv.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config/config.h"
#include "log/log.h"
#include "priv/priv_private.h"
#include "util/util.h"

struct priv_req {
	struct priv		*p;		/* borrowed */
	uint32_t		 id;
	int			 rc;
	char			 text[512];
	int			 fd;		/* PRIV_OPEN's answer, or -1 */
	bool			 done;
	/* loop askers */
	struct event		*ev;		/* owned by the loop */
	priv_auth_cb		*cb;		/* NULL once cancelled */
	void			*arg;
	/* blocked askers */
	pthread_cond_t		 cv;
	bool			 blocking;
	struct priv_req		*next;		/* p->open */
};

struct priv {
	int			 ctl;		/* from the keeper: new sockets */
	int			 sock;		/* the helper's, or -1 */
	pid_t			 keeper;
	pthread_t		 reader;
	pthread_mutex_t		 mu;		/* everything below */
	struct priv_req		*open;		/* sent, not answered */
	uint32_t		 next_id;
	bool			 stopping;
	int			 wake[2];	/* stop the reader's poll */
};

/* Take req off the open list (p->mu held). */
static void
priv_unlist(struct priv *p, struct priv_req *req)
{
	for (struct priv_req **rp = &p->open; *rp != NULL; rp = &(*rp)->next)
		if (*rp == req) {
			*rp = req->next;
			return;
		}
}

/* An answer arrived (p->mu held); fd is the request's from here on. */
static void
priv_settle(struct priv *p, struct priv_req *req, int rc, const char *text,
    int fd)
{
	priv_unlist(p, req);
	req->rc = rc;
	req->fd = fd;
	req->done = true;
	util_strlcpy(req->text, text != NULL ? text : "", sizeof(req->text));
	if (req->blocking)
		pthread_cond_signal(&req->cv);
	else if (req->cb != NULL)
		event_active(req->ev, EV_TIMEOUT, 1);
	else {
		event_free(req->ev);	/* cancelled: the asker is gone */
		free(req);
	}
}

/* Every open request fails: the helper is gone. */
static void
priv_fail_all(struct priv *p)
{
	pthread_mutex_lock(&p->mu);
	while (p->open != NULL)
		priv_settle(p, p->open, -1, "privileged helper gone", -1);
	pthread_mutex_unlock(&p->mu);
}

/* A socket from the keeper (blocking); -1 when it is gone. */
static int
priv_recv_sock(int ctl)
{
	char c, cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { &c, 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
	    .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	int fd = -1;
	ssize_t n;

	while ((n = recvmsg(ctl, &mh, MSG_CMSG_CLOEXEC)) == -1 &&
	    errno == EINTR)
		;
	if (n <= 0)
		return -1;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm != NULL;
	    cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_type == SCM_RIGHTS)
			memcpy(&fd, CMSG_DATA(cm), sizeof(fd));
	return fd;
}

/* Read answers from sock until it closes; false when stopping. */
static bool
priv_read_answers(struct priv *p, int sock)
{
	struct pollfd pfd[2] = { { sock, POLLIN, 0 }, { p->wake[0], POLLIN,
	    0 } };
	char buf[2048], cbuf[CMSG_SPACE(sizeof(int))];

	for (;;) {
		struct iovec iov = { buf, sizeof(buf) - 1 };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
		    .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		struct priv_hdr h;
		int fd = -1;

		if (poll(pfd, 2, -1) == -1 && errno != EINTR)
			return false;
		if (pfd[1].revents != 0)
			return false;
		if (pfd[0].revents == 0)
			continue;
		ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
		if (n <= 0 && !(n == -1 && errno == EINTR))
			return true;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); n > 0 &&
		    cm != NULL; cm = CMSG_NXTHDR(&mh, cm))
			if (cm->cmsg_level == SOL_SOCKET &&
			    cm->cmsg_type == SCM_RIGHTS)
				memcpy(&fd, CMSG_DATA(cm), sizeof(fd));
		if (n < (ssize_t)sizeof(h)) {
			if (fd != -1)
				close(fd);
			continue;
		}
		buf[n] = '\0';
		memcpy(&h, buf, sizeof(h));
		pthread_mutex_lock(&p->mu);
		for (struct priv_req *r = p->open; r != NULL; r = r->next)
			if (r->id == h.id) {
				priv_settle(p, r, h.rc, h.nstr > 0 ?
				    buf + sizeof(h) : NULL, fd);
				fd = -1;
				break;
			}
		pthread_mutex_unlock(&p->mu);
		if (fd != -1)
			close(fd);	/* nobody asked for it */
	}
}

static void *
priv_reader_main(void *arg)
{
	struct priv *p = arg;

	for (;;) {
		pthread_mutex_lock(&p->mu);
		int sock = p->sock;
		pthread_mutex_unlock(&p->mu);
		if (!priv_read_answers(p, sock))
			break;
		log_msg(LOG_LVL_WARN, "privileged helper gone: its requests "
		    "fail temporarily; restarting it");
		pthread_mutex_lock(&p->mu);
		p->sock = -1;
		pthread_mutex_unlock(&p->mu);
		close(sock);
		priv_fail_all(p);
		if ((sock = priv_recv_sock(p->ctl)) == -1) {
			log_msg(LOG_LVL_ERROR, "privileged helper: its keeper "
			    "is gone; PAM and owner deliveries fail until a "
			    "restart");
			return NULL;
		}
		pthread_mutex_lock(&p->mu);
		p->sock = sock;
		pthread_mutex_unlock(&p->mu);
		log_msg(LOG_LVL_INFO, "privileged helper restarted");
	}
	return NULL;
}

/*
 * The certificates and keys cfg names, NULL-terminated: made in the
 * keeper, whose copy of cfg is never freed, so the strings are cfg's.
 */
static char **
priv_tls_files(const struct config *cfg)
{
	size_t n = 0, max = 2 * cfg->ntls_certs + 1;
	char **files;

	for (size_t i = 0; i < cfg->nlistens; i++)
		max += 2 * cfg->listens[i].ncerts;
	files = xcalloc(max, sizeof(*files));
	for (size_t i = 0; i < cfg->ntls_certs; i++) {
		files[n++] = cfg->tls_certs[i].cert;
		files[n++] = cfg->tls_certs[i].key;
	}
	for (size_t i = 0; i < cfg->nlistens; i++)
		for (size_t k = 0; k < cfg->listens[i].ncerts; k++) {
			files[n++] = cfg->listens[i].certs[k].cert;
			files[n++] = cfg->listens[i].certs[k].key;
		}
	return files;
}

/*
 * What cfg lets the helper do, for the keeper (whose copy of cfg is never
 * freed): the roots, the TLS files, and the owners and folders of the
 * "as" actions.  The login.defs range is the keeper's to read.
 */
static struct priv_allow *
priv_allow_new(const struct config *cfg)
{
	struct priv_allow *a = xcalloc(1, sizeof(*a));
	size_t no = 0, nt = 0;

	a->roots = cfg->maildir_roots;
	a->files = priv_tls_files(cfg);
	a->owners = xcalloc(cfg->nactions + 1, sizeof(*a->owners));
	a->templates = xcalloc(cfg->nactions + 1, sizeof(*a->templates));
	for (size_t i = 0; i < cfg->nactions; i++) {
		const struct config_action *ac = &cfg->actions[i];
		if (ac->owner == NULL && ac->owner_table == NULL)
			continue;
		if (ac->owner != NULL)
			a->owners[no++] = ac->owner;
		else
			a->owner_table = true;
		if (ac->path != NULL)
			a->templates[nt++] = ac->path;
	}
	return a;
}

struct priv *
priv_start(const struct config *cfg, const char **err_out)
{
	struct priv *p = xcalloc(1, sizeof(*p));
	int sp[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == -1 ||
	    pipe2(p->wake, O_CLOEXEC) == -1) {
		*err_out = "privileged helper: socketpair failed";
		free(p);
		return NULL;
	}
	if ((p->keeper = fork()) == -1) {
		*err_out = "privileged helper: fork failed";
		free(p);
		return NULL;
	}
	if (p->keeper == 0) {
		close(sp[0]);
		priv_keeper_main(sp[1], priv_allow_new(cfg));
	}
	close(sp[1]);
	p->ctl = sp[0];
	if ((p->sock = priv_recv_sock(p->ctl)) == -1) {
		*err_out = "privileged helper did not start";
		close(p->ctl);
		free(p);
		return NULL;
	}
	pthread_mutex_init(&p->mu, NULL);
	if (pthread_create(&p->reader, NULL, priv_reader_main, p) != 0)
		fatal("privileged helper: pthread_create failed");
	return p;
}

void
priv_free(struct priv **pp)
{
	struct priv *p = *pp;

	if (p == NULL)
		return;
	*pp = NULL;
	/* A full pipe already wakes it: nothing to do on a short write. */
	ssize_t n = write(p->wake[1], "x", 1);
	(void)n;
	pthread_join(p->reader, NULL);
	priv_fail_all(p);
	if (p->sock != -1)
		close(p->sock);
	close(p->ctl);	/* the keeper sees EOF and ends */
	kill(p->keeper, SIGTERM);
	waitpid(p->keeper, NULL, 0);
	close(p->wake[0]);
	close(p->wake[1]);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

/* Send a request; the strings follow the header.  0, or -1 (no helper). */
static int
priv_send(struct priv *p, struct priv_req *req, enum priv_type type,
    const char *const *s, uint32_t ns, int fd)
{
	char buf[PRIV_MSG_MAX];
	struct priv_hdr h = { .type = type, .nstr = ns };
	size_t n = sizeof(h);
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	int rc = -1;

	for (uint32_t i = 0; i < ns; i++) {
		size_t l = strlen(s[i]) + 1;
		if (l > sizeof(buf) - n)
			goto out;
		memcpy(buf + n, s[i], l);
		n += l;
	}
	if (fd != -1)
		priv_attach_fd(&mh, cbuf, fd);
	pthread_mutex_lock(&p->mu);
	req->id = h.id = ++p->next_id;
	memcpy(buf, &h, sizeof(h));
	iov.iov_base = buf;
	iov.iov_len = n;
	if (p->sock != -1 && sendmsg(p->sock, &mh, MSG_NOSIGNAL) ==
	    (ssize_t)n) {
		req->next = p->open;
		p->open = req;
		rc = 0;
	}
	pthread_mutex_unlock(&p->mu);
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	return rc;
}

/* On the loop: the answer (or the failure) of an AUTH request. */
static void
priv_auth_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct priv_req *req = arg;
	priv_auth_cb *cb;

	(void)fd;
	(void)what;
	if (req->p != NULL)
		pthread_mutex_lock(&req->p->mu);
	cb = req->cb;
	req->cb = NULL;
	if (req->p != NULL)
		pthread_mutex_unlock(&req->p->mu);
	if (cb != NULL)
		cb(req->arg, req->rc);
	event_free(req->ev);
	free(req);
}

struct priv_req *
priv_auth_start(struct priv *p, struct event_base *base, const char *service,
    const char *user, const char *pass, priv_auth_cb *cb, void *arg)
{
	struct priv_req *req = xcalloc(1, sizeof(*req));
	const char *s[3] = { service, user, pass };

	req->p = p;
	req->cb = cb;
	req->arg = arg;
	req->ev = event_new(base, -1, 0, priv_auth_done_cb, req);
	if (p == NULL || priv_send(p, req, PRIV_AUTH, s, 3, -1) == -1) {
		req->rc = -1;	/* answered on the loop, as promised */
		event_active(req->ev, EV_TIMEOUT, 1);
	}
	return req;
}

void
priv_cancel(struct priv_req **reqp)
{
	struct priv_req *req = *reqp;

	if (req == NULL)
		return;
	*reqp = NULL;
	if (req->p == NULL) {
		req->cb = NULL;
		return;
	}
	pthread_mutex_lock(&req->p->mu);
	req->cb = NULL;		/* open: priv_settle frees it; done: the event */
	pthread_mutex_unlock(&req->p->mu);
}

/* A worker's request: send it and wait for the answer in req. */
static void
priv_call(struct priv *p, struct priv_req *req, enum priv_type type,
    const char *const *s, uint32_t ns, int fd)
{
	pthread_cond_init(&req->cv, NULL);
	if (priv_send(p, req, type, s, ns, fd) == 0) {
		pthread_mutex_lock(&p->mu);
		while (!req->done)
			pthread_cond_wait(&req->cv, &p->mu);
		pthread_mutex_unlock(&p->mu);
	} else {
		req->rc = -1;
		util_strlcpy(req->text, "privileged helper unavailable",
		    sizeof(req->text));
	}
	pthread_cond_destroy(&req->cv);
}

enum deliver_result
priv_deliver(struct priv *p, const char *owner, const char *folder,
    const struct deliver_msg *m, const char **err_out)
{
	static __thread char why[600];
	struct priv_req req = { .p = p, .blocking = true };
	char idx[32], rcv[32];
	const char *s[8] = { owner, folder, m->return_path != NULL ?
	    m->return_path : "", m->qid, m->hostname != NULL ? m->hostname :
	    "localhost", idx, rcv, m->fresh ? "1" : "0" };
	int fd;

	if (p == NULL) {
		*err_out = "4.3.0 no privileged helper to deliver as the owner "
		    "(it starts with the server when the config needs it)";
		return DELIVER_TEMPFAIL;
	}
	snprintf(idx, sizeof(idx), "%zu", m->rcpt_idx);
	snprintf(rcv, sizeof(rcv), "%lld", (long long)m->received);
	if ((fd = open(m->content_path, O_RDONLY | O_CLOEXEC)) == -1) {
		util_snprintf(why, sizeof(why), "open(%s): %s",
		    m->content_path, strerror(errno));
		*err_out = why;
		return DELIVER_TEMPFAIL;
	}
	priv_call(p, &req, PRIV_DELIVER, s, 8, fd);
	close(fd);
	util_snprintf(why, sizeof(why), "as %s: %s", owner, req.text);
	*err_out = why;
	if (req.rc == DELIVER_OK || req.rc == DELIVER_PERMFAIL)
		return (enum deliver_result)req.rc;
	return DELIVER_TEMPFAIL;
}

int
priv_open(struct priv *p, const char *path, const char **err_out)
{
	static __thread char why[600];
	struct priv_req req = { .p = p, .blocking = true, .fd = -1 };
	const char *s[1] = { path };

	priv_call(p, &req, PRIV_OPEN, s, 1, -1);
	if (req.rc == 0 && req.fd != -1)
		return req.fd;
	if (req.fd != -1)
		close(req.fd);
	util_snprintf(why, sizeof(why), "privileged helper: %s", req.text);
	*err_out = why;
	return -1;
}
