/*
 * conn/plainread.c: reading a plain (not TLS) client socket.  libevent's
 * socket bufferevent asks the kernel how much is waiting (FIONREAD)
 * before each read and reads at most 4 KiB, so a command line costs two
 * system calls and a 4 KiB message four; here one recv(2) into the
 * bufferevent's input takes whatever is there, up to the read mark.  The
 * bufferevent still owns the socket, the input and the output; only its
 * reading is never enabled.  STARTTLS hands reading back to it
 * (conn_read_plain_stop), as the TLS filter reads through it.
 */
#include "conn/conn_private.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <sys/socket.h>

#define CONN_READ_CHUNK	(16 * 1024)	/* at most, per recv */

static void
conn_read_plain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t have = evbuffer_get_length(in), want;
	struct evbuffer_iovec v;
	ssize_t n;
	int err;

	(void)what;
	if (have >= CONN_READ_HIGH) {
		event_del(c->plain_rd);	/* conn_read_enable, once parsed */
		return;
	}
	want = CONN_READ_HIGH - have;
	if (want > CONN_READ_CHUNK)
		want = CONN_READ_CHUNK;
	/* The bufferevent keeps its input's end frozen but while it reads. */
	evbuffer_unfreeze(in, 0);
	if (evbuffer_reserve_space(in, (ev_ssize_t)want, &v, 1) < 1) {
		evbuffer_freeze(in, 0);
		return;
	}
	n = recv(fd, v.iov_base, v.iov_len < want ? v.iov_len : want, 0);
	err = errno;
	if (n > 0) {
		v.iov_len = (size_t)n;
		evbuffer_commit_space(in, &v, 1);
	}
	evbuffer_freeze(in, 0);
	if (n == -1 && (err == EAGAIN || err == EINTR))
		return;		/* nothing committed: the space is dropped */
	if (n <= 0) {
		/* End of file or an error: as the bufferevent would say it. */
		event_del(c->plain_rd);
		if (n == 0)
			conn_eof(c);
		else
			conn_lost(c);
		return;
	}
	conn_readable(c);
}

void
conn_read_plain_start(struct conn *c, int fd)
{
	c->plain_rd = event_new(c->ctx->base, fd, EV_READ | EV_PERSIST,
	    conn_read_plain_cb, c);
}

void
conn_read_plain_stop(struct conn *c)
{
	if (c->plain_rd != NULL)
		event_free(c->plain_rd);
	c->plain_rd = NULL;
}

void
conn_read_enable(struct conn *c)
{
	if (c->rd_eof)
		return;		/* nothing more will come */
	if (c->plain_rd == NULL)
		bufferevent_enable(c->bev, EV_READ);
	else if (evbuffer_get_length(bufferevent_get_input(c->bev)) <
	    CONN_READ_HIGH)
		event_add(c->plain_rd, NULL);
}

void
conn_read_disable(struct conn *c)
{
	if (c->plain_rd == NULL)
		bufferevent_disable(c->bev, EV_READ);
	else
		event_del(c->plain_rd);
}
