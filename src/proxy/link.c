/*
 * proxy/link.c: one connection to an upstream on an event loop: connect
 * (each address in turn), the PROXY header, TLS (implicit, or after a 220
 * to STARTTLS), command lines out and whole replies in, each reply due
 * within its timeout, content out bounded by a write timeout, and the end:
 * QUIT and a moment for its reply, kept by the loop once its session is
 * gone.  Knows no SMTP beyond the shape of a reply and QUIT.
 */
#include "proxy/proxy_private.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "log/log.h"
#include "tls/tls.h"

struct proxy_link {
	struct event_base	*base;
	const struct proxy_upstream *up;	/* borrowed */
	const struct proxy_link_ops *ops;
	void			*arg;
	struct bufferevent	*bev;		/* owned: the socket, or the TLS
						   filter over it */
	struct event		*timer;		/* owned: connect, a reply due,
						   or a failure to report */
	struct proxy_reply	 rp;
	size_t			 next_addr;	/* the address tried next */
	char			 header[PROXY_HEADER_MAX];
	size_t			 header_len;
	char			*sni;		/* owned: TLS name, or NULL */
	char			 peer[300];
	const char		*why;		/* a failure to report (static) */
	char			 why_buf[300];
	bool			 connected;	/* TCP is up */
	bool			 handshaking;	/* in a TLS handshake */
	bool			 tls;		/* TLS is up */
	bool			 expecting;	/* a reply is due */
	bool			 doomed;	/* freed inside a callback */
	bool			 failed;	/* fail_cb was called */
	unsigned		 busy;		/* callbacks under way */
	/* closing after QUIT (proxy_link_quit) */
	struct proxy_loop	*loop;		/* borrowed, or NULL */
	struct proxy_link	*prev, *next;	/* in loop->closing */
};

struct proxy_loop {
	struct proxy_link	*closing;	/* owned: links after QUIT */
};

static void	proxy_link_read_cb(struct bufferevent *bev, void *arg);
static void	proxy_link_write_cb(struct bufferevent *bev, void *arg);
static void	proxy_link_event_cb(struct bufferevent *bev, short what,
		    void *arg);
static void	proxy_link_timer_cb(evutil_socket_t fd, short what, void *arg);
static void	proxy_link_write_timeout(struct proxy_link *l);

static void
proxy_link_destroy(struct proxy_link *l)
{
	if (l->bev != NULL)
		bufferevent_free(l->bev);
	event_free(l->timer);
	proxy_reply_clear(&l->rp);
	free(l->sni);
	free(l);
}

void
proxy_link_free(struct proxy_link **lp)
{
	struct proxy_link *l = *lp;

	if (l == NULL)
		return;
	*lp = NULL;
	if (l->busy > 0) {
		/* Below us on the stack: go quiet, and go when it returns. */
		l->doomed = true;
		if (l->bev != NULL)
			bufferevent_disable(l->bev, EV_READ | EV_WRITE);
		evtimer_del(l->timer);
		return;
	}
	proxy_link_destroy(l);
}

/* Run a callback; false when the link was freed meanwhile (gone now). */
static bool
proxy_link_alive_after(struct proxy_link *l)
{
	if (--l->busy == 0 && l->doomed) {
		proxy_link_destroy(l);
		return false;
	}
	return !l->doomed;
}

static bool
proxy_link_fail(struct proxy_link *l, const char *why)
{
	if (l->failed)
		return false;
	l->failed = true;
	l->expecting = false;
	evtimer_del(l->timer);
	if (l->bev != NULL)
		bufferevent_disable(l->bev, EV_READ | EV_WRITE);
	l->busy++;
	l->ops->fail_cb(l->arg, why);
	return proxy_link_alive_after(l);
}

static void
proxy_link_arm(struct proxy_link *l, uint64_t ms)
{
	struct timeval tv = util_timeval_ms(ms);

	evtimer_add(l->timer, &tv);
}

static void
proxy_link_peer_set(struct proxy_link *l, const struct sockaddr *sa)
{
	char ip[64];
	int port = 0;

	ip[0] = '\0';
	(void)util_sockaddr_text(sa, ip, &port);
	snprintf(l->peer, sizeof(l->peer), "%s[%s]:%d", l->up->cfg->relay.host,
	    ip, port);
}

/* Start connecting to the next address; false when none is left. */
static bool
proxy_link_connect_next(struct proxy_link *l)
{
	while (l->next_addr < l->up->naddrs) {
		size_t i = l->next_addr++;
		const struct sockaddr *sa = (const struct sockaddr *)
		    &l->up->addrs[i];

		if (l->bev != NULL)
			bufferevent_free(l->bev);
		l->bev = bufferevent_socket_new(l->base, -1,
		    BEV_OPT_CLOSE_ON_FREE);
		bufferevent_setcb(l->bev, proxy_link_read_cb,
		    proxy_link_write_cb, proxy_link_event_cb, l);
		proxy_link_peer_set(l, sa);
		if (bufferevent_socket_connect(l->bev, sa,
		    (int)l->up->addrlens[i]) == 0) {
			proxy_link_arm(l, l->up->to_ms[PROXY_TO_CONNECT]);
			return true;
		}
	}
	return false;
}

/* Wrap the socket in TLS (connect state); the handshake starts. */
static void
proxy_link_tls_wrap(struct proxy_link *l)
{
	SSL *ssl = tls_client_ssl_new(l->up->tls, l->sni);
	struct bufferevent *t = ssl == NULL ? NULL :
	    bufferevent_openssl_filter_new(l->base, l->bev, ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);

	if (t == NULL) {
		if (ssl != NULL)
			SSL_free(ssl);
		(void)proxy_link_fail(l, "cannot start TLS");
		return;
	}
	/* The socket's output stops filling past our mark (bounded). */
	bufferevent_setwatermark(l->bev, EV_WRITE, 0, PROXY_LINK_LOW);
	l->bev = t;
	l->handshaking = true;
	bufferevent_setcb(l->bev, proxy_link_read_cb, proxy_link_write_cb,
	    proxy_link_event_cb, l);
	bufferevent_setwatermark(l->bev, EV_WRITE, PROXY_LINK_LOW, 0);
	proxy_link_write_timeout(l);
	bufferevent_enable(l->bev, EV_READ | EV_WRITE);
}

struct proxy_link *
proxy_link_new(struct event_base *base, const struct proxy_upstream *up,
    const struct proxy_link_ops *ops, void *arg, const char *header,
    size_t n, const char *sni)
{
	struct proxy_link *l = xcalloc(1, sizeof(*l));

	l->base = base;
	l->up = up;
	l->ops = ops;
	l->arg = arg;
	l->timer = evtimer_new(base, proxy_link_timer_cb, l);
	if (n > 0 && n <= sizeof(l->header)) {
		memcpy(l->header, header, n);
		l->header_len = n;
	}
	l->sni = sni != NULL ? xstrdup(sni) : NULL;
	l->expecting = true;	/* the greeting */
	proxy_reply_init(&l->rp);
	if (!proxy_link_connect_next(l)) {
		/* Reported from the loop, not from inside this call. */
		l->why = "cannot connect";
		proxy_link_arm(l, 0);
	}
	return l;
}

static void
proxy_link_connected(struct proxy_link *l)
{
	int one = 1, fd = bufferevent_getfd(l->bev);

	l->connected = true;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	bufferevent_setwatermark(l->bev, EV_WRITE, PROXY_LINK_LOW, 0);
	proxy_link_write_timeout(l);
	bufferevent_enable(l->bev, EV_READ | EV_WRITE);
	if (l->header_len > 0) {
		bufferevent_write(l->bev, l->header, l->header_len);
		if (l->ops->trace_cb != NULL && l->header[0] == 'P')
			l->ops->trace_cb(l->arg, true, l->header,
			    l->header_len - 2);
		else if (l->ops->trace_cb != NULL)
			l->ops->trace_cb(l->arg, true, "[PROXY v2 header]", 17);
	}
	/* The greeting is due, after the handshake for implicit TLS. */
	proxy_link_arm(l, l->up->to_ms[PROXY_TO_GREETING]);
	if (l->up->cfg->relay.tls == CONFIG_RELAY_TLS)
		proxy_link_tls_wrap(l);
}

static void
proxy_link_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct proxy_link *l = arg;
	char buf[200];

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		if (!l->connected) {
			proxy_link_connected(l);
			return;
		}
		l->handshaking = false;
		l->tls = true;
		if (l->up == NULL)
			return;		/* ending after QUIT: nothing to tell */
		if (l->up->cfg->relay.tls == CONFIG_RELAY_TLS)
			return;		/* the greeting comes next */
		evtimer_del(l->timer);
		l->busy++;
		l->ops->tls_cb(l->arg);
		(void)proxy_link_alive_after(l);
		return;
	}
	if (!l->connected && (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF))) {
		evtimer_del(l->timer);
		if (proxy_link_connect_next(l))
			return;
		(void)proxy_link_fail(l, "cannot connect");
		return;
	}
	unsigned long e = bufferevent_get_openssl_error(l->bev);
	if (e != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		snprintf(l->why_buf, sizeof(l->why_buf), "TLS: %s", buf);
		(void)proxy_link_fail(l, l->why_buf);
	} else if (what & BEV_EVENT_TIMEOUT)
		(void)proxy_link_fail(l, "write timeout");
	else
		(void)proxy_link_fail(l, l->handshaking ? "TLS handshake "
		    "failed" : "connection closed");
}

static void
proxy_link_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct proxy_link *l = arg;

	(void)fd;
	(void)what;
	if (l->why != NULL)
		(void)proxy_link_fail(l, l->why);
	else if (!l->connected && proxy_link_connect_next(l))
		return;
	else
		(void)proxy_link_fail(l, !l->connected ? "connect timeout" :
		    l->handshaking ? "TLS handshake timeout" :
		    "no reply in time");
}

static void
proxy_link_trace_reply(struct proxy_link *l)
{
	const char *p = l->rp.wire.data, *end = p + l->rp.wire.len, *nl;

	for (; l->ops->trace_cb != NULL && p < end; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(end - p));
		l->ops->trace_cb(l->arg, false, p, (size_t)(nl - p) - 1);
	}
}

/* A whole reply: to the session, or an error when none was due. */
static bool
proxy_link_reply(struct proxy_link *l)
{
	if (!l->expecting) {
		snprintf(l->why_buf, sizeof(l->why_buf), "a reply when none "
		    "was due: %.3s", l->rp.wire.data);
		return proxy_link_fail(l, l->why_buf);
	}
	l->expecting = false;
	evtimer_del(l->timer);
	proxy_link_trace_reply(l);
	l->busy++;
	l->ops->reply_cb(l->arg, &l->rp);
	if (!proxy_link_alive_after(l))
		return false;
	proxy_reply_init(&l->rp);
	return true;
}

static void
proxy_link_read_cb(struct bufferevent *bev, void *arg)
{
	struct proxy_link *l = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (evbuffer_get_length(in) > 0 && !l->failed) {
		size_t n = evbuffer_get_contiguous_space(in), used;
		const char *p = (const char *)evbuffer_pullup(in, (ssize_t)n);
		int rc = proxy_reply_feed(&l->rp, p, n, &used);

		evbuffer_drain(in, used);
		if (rc == -1) {
			snprintf(l->why_buf, sizeof(l->why_buf), "bad reply: "
			    "%s", l->rp.err);
			(void)proxy_link_fail(l, l->why_buf);
			return;
		}
		if (rc == 1 && !proxy_link_reply(l))
			return;
	}
}

size_t
proxy_link_backlog(const struct proxy_link *l)
{
	struct bufferevent *under = bufferevent_get_underlying(l->bev);
	size_t n = evbuffer_get_length(bufferevent_get_output(l->bev));

	if (under != NULL)
		n += evbuffer_get_length(bufferevent_get_output(under));
	return n;
}

static void
proxy_link_write_cb(struct bufferevent *bev, void *arg)
{
	struct proxy_link *l = arg;

	(void)bev;
	if (l->handshaking || l->ops->drain_cb == NULL ||
	    proxy_link_backlog(l) > PROXY_LINK_LOW)
		return;
	l->busy++;
	l->ops->drain_cb(l->arg);
	(void)proxy_link_alive_after(l);
}

void
proxy_link_command(struct proxy_link *l, const char *line, size_t len,
    uint64_t to_ms, bool secret)
{
	if (l->ops->trace_cb != NULL && secret) {
		/* A line of one word (a SASL response) has no verb to show. */
		const char *sp = memchr(line, ' ', len);
		int verb = sp != NULL && sp - line < 40 ? (int)(sp - line) : 0;
		char masked[64];
		int n = snprintf(masked, sizeof(masked), "%.*s%s[secret]",
		    verb, line, verb > 0 ? " " : "");
		l->ops->trace_cb(l->arg, true, masked, (size_t)n);
	} else if (l->ops->trace_cb != NULL)
		l->ops->trace_cb(l->arg, true, line, len);
	bufferevent_write(l->bev, line, len);
	bufferevent_write(l->bev, "\r\n", 2);
	proxy_link_expect(l, to_ms);
}

void
proxy_link_write(struct proxy_link *l, const void *p, size_t n)
{
	bufferevent_write(l->bev, p, n);
}

/* An upstream that takes nothing for this long is gone (data-block). */
static void
proxy_link_write_timeout(struct proxy_link *l)
{
	struct timeval tv = util_timeval_ms(l->up->to_ms[PROXY_TO_DATA_BLOCK]);

	bufferevent_set_timeouts(l->bev, NULL, &tv);
}

void
proxy_link_expect(struct proxy_link *l, uint64_t to_ms)
{
	l->expecting = true;
	proxy_link_arm(l, to_ms);
}

void
proxy_link_starttls(struct proxy_link *l, const char *sni)
{
	struct evbuffer *in = bufferevent_get_input(l->bev);

	/* RFC 3207 4.2: nothing read before the handshake counts. */
	evbuffer_drain(in, evbuffer_get_length(in));
	free(l->sni);
	l->sni = sni != NULL ? xstrdup(sni) : NULL;
	proxy_link_arm(l, l->up->to_ms[PROXY_TO_COMMAND]);
	proxy_link_tls_wrap(l);
}

bool
proxy_link_is_tls(const struct proxy_link *l)
{
	return l->tls;
}

const char *
proxy_link_peer(const struct proxy_link *l)
{
	return l->peer;
}

/* ----- the end: QUIT, and a moment for its reply ----- */

struct proxy_loop *
proxy_loop_new(void)
{
	return xcalloc(1, sizeof(struct proxy_loop));
}

void
proxy_loop_free(struct proxy_loop **plp)
{
	struct proxy_loop *pl = *plp;

	if (pl == NULL)
		return;
	*plp = NULL;
	while (pl->closing != NULL) {
		struct proxy_link *l = pl->closing;

		pl->closing = l->next;
		proxy_link_free(&l);	/* it had its QUIT: no more waiting */
	}
	free(pl);
}

/* Its QUIT was answered, or will never be: out of the list, and gone. */
static void
proxy_link_closed(struct proxy_link *l)
{
	if (l->prev != NULL)
		l->prev->next = l->next;
	else
		l->loop->closing = l->next;
	if (l->next != NULL)
		l->next->prev = l->prev;
	proxy_link_free(&l);
}

static void
proxy_link_quit_reply_cb(void *arg, const struct proxy_reply *r)
{
	(void)r;		/* 221 or not: the end either way */
	proxy_link_closed(arg);
}

static void
proxy_link_quit_fail_cb(void *arg, const char *why)
{
	(void)why;
	proxy_link_closed(arg);
}

static const struct proxy_link_ops proxy_link_quit_ops = {
	.reply_cb = proxy_link_quit_reply_cb,
	.fail_cb = proxy_link_quit_fail_cb,
};

void
proxy_link_quit(struct proxy_link **lp, struct proxy_loop *loop)
{
	struct proxy_link *l = *lp;

	if (l == NULL)
		return;
	if (loop == NULL || !l->connected || l->handshaking || l->expecting ||
	    l->failed || l->doomed) {
		proxy_link_free(lp);	/* no command may go now */
		return;
	}
	*lp = NULL;
	/* RFC 5321 4.1.1.10: QUIT before the close, and wait for its reply. */
	proxy_link_command(l, "QUIT", 4, PROXY_LINK_QUIT_MS, false);
	l->ops = &proxy_link_quit_ops;
	l->arg = l;
	l->up = NULL;		/* a reload may free it before the reply */
	l->loop = loop;
	l->next = loop->closing;
	if (l->next != NULL)
		l->next->prev = l;
	loop->closing = l;
}
