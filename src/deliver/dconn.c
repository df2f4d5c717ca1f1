/*
 * deliver/dconn.c: a blocking-style client connection for worker threads:
 * a non-blocking socket driven by poll(2) so every step has a deadline,
 * optionally wrapped in TLS; each wait also ends when the thread's
 * deliveries are stopped (stop.c).  Knows nothing of SMTP or POP3.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "tls/tls.h"
#include "util/util.h"

static void dconn_seterr(struct dconn *, const char *, ...)
    UTIL_PRINTF(2, 3);

static void
dconn_seterr(struct dconn *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vsnprintf(c->err, sizeof(c->err), fmt, ap) < 0)
		c->err[0] = '\0';
	va_end(ap);
	c->fail = DCONN_FAIL_OTHER;	/* the callers below say otherwise */
}

/* The kind of failure errno e is: a reset or broken pipe lost it. */
static enum dconn_fail
dconn_fail_of(int e)
{
	return e == ECONNRESET || e == EPIPE ? DCONN_FAIL_LOST :
	    DCONN_FAIL_OTHER;
}

void
dconn_init(struct dconn *c)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

/* strerror(e), saying why for a wait the thread's stop cut short. */
static const char *
dconn_strerror(int e)
{
	return e == ECANCELED ? "cut short: postern is stopping" :
	    strerror(e);
}

/*
 * Wait for events on c->fd until deadline; 1 ready, 0 timeout, -1 error
 * (errno ECANCELED: the thread's stop descriptor is readable).
 */
static int
dconn_wait(struct dconn *c, short events, uint64_t deadline)
{
	for (;;) {
		uint64_t now = util_now_ms();
		if (now >= deadline)
			return 0;
		uint64_t left = deadline - now;
		struct pollfd pfd[2] = {
			{ .fd = c->fd, .events = events },
			{ .fd = deliver_stop_fd(), .events = POLLIN },
		};
		int r = poll(pfd, 2, left > 60000 ? 60000 : (int)left);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1)
			return -1;
		if (pfd[1].revents != 0) {
			errno = ECANCELED;
			return -1;
		}
		if (r > 0)
			return 1;
	}
}

static int
dconn_connect_one(struct dconn *c, const struct addrinfo *ai,
    uint64_t timeout_ms)
{
	int fd, err = 0;
	socklen_t len = sizeof(err);

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, ai->ai_protocol);
	if (fd == -1)
		return -1;
	c->fd = fd;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == -1) {
		if (errno != EINPROGRESS)
			goto fail;
		int r = dconn_wait(c, POLLOUT, util_now_ms() + timeout_ms);
		if (r == 0) {
			errno = ETIMEDOUT;
			goto fail;
		}
		if (r == -1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err,
		    &len) == -1)
			goto fail;
		if (err != 0) {
			errno = err;
			goto fail;
		}
	}
	return 0;
fail:
	err = errno;
	close(fd);
	c->fd = -1;
	errno = err;
	return -1;
}

int
dconn_connect(struct dconn *c, const char *host, int port,
    uint64_t timeout_ms)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
	    .ai_flags = AI_ADDRCONFIG }, *res = NULL;
	char portstr[16], ip[INET6_ADDRSTRLEN];
	int gai;

	snprintf(portstr, sizeof(portstr), "%d", port);
	snprintf(c->peer, sizeof(c->peer), "%s:%d", host, port);
	if ((gai = getaddrinfo(host, portstr, &hints, &res)) != 0) {
		dconn_seterr(c, "connect %s: %s", c->peer, gai_strerror(gai));
		return -1;
	}
	for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
		const void *a = ai->ai_family == AF_INET6 ?
		    (const void *)&((struct sockaddr_in6 *)(void *)
		    ai->ai_addr)->sin6_addr :
		    (const void *)&((struct sockaddr_in *)(void *)
		    ai->ai_addr)->sin_addr;
		if (inet_ntop(ai->ai_family, a, ip, sizeof(ip)) == NULL)
			util_strlcpy(ip, "?", sizeof(ip));
		snprintf(c->peer, sizeof(c->peer), "%s[%s]:%d", host, ip,
		    port);
		if (dconn_connect_one(c, ai, timeout_ms) == 0) {
			c->loopback = ai->ai_family == AF_INET6 ?
			    IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)
			    (void *)ai->ai_addr)->sin6_addr) :
			    (ntohl(((struct sockaddr_in *)(void *)
			    ai->ai_addr)->sin_addr.s_addr) >> 24) == 127;
			freeaddrinfo(res);
			return 0;
		}
		dconn_seterr(c, "connect %s: %s", c->peer,
		    dconn_strerror(errno));
	}
	freeaddrinfo(res);
	return -1;
}

int
dconn_connect_unix(struct dconn *c, const char *path, uint64_t timeout_ms)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct addrinfo ai = { .ai_family = AF_UNIX,
	    .ai_socktype = SOCK_STREAM, .ai_addr = (struct sockaddr *)&sun,
	    .ai_addrlen = sizeof(sun) };

	snprintf(c->peer, sizeof(c->peer), "unix:%s", path);
	if (util_strlcpy(sun.sun_path, path, sizeof(sun.sun_path)) == -1) {
		dconn_seterr(c, "connect %s: path too long", c->peer);
		return -1;
	}
	if (dconn_connect_one(c, &ai, timeout_ms) == -1) {
		dconn_seterr(c, "connect %s: %s", c->peer,
		    dconn_strerror(errno));
		return -1;
	}
	c->loopback = true;	/* this machine */
	return 0;
}

/*
 * Drive one SSL call to completion: ret is its return value.  1 to retry
 * the call, 0 done/EOF, -1 error (c->err set).
 */
static int
dconn_ssl_again(struct dconn *c, int ret, uint64_t deadline,
    const char *what)
{
	int e = SSL_get_error(c->ssl, ret);

	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		int r = dconn_wait(c, e == SSL_ERROR_WANT_READ ? POLLIN :
		    POLLOUT, deadline);
		if (r == 1)
			return 1;
		dconn_seterr(c, "%s %s: %s", what, c->peer, r == 0 ?
		    "timed out" : dconn_strerror(errno));
		if (r == 0)
			c->fail = DCONN_FAIL_TIMEOUT;
		return -1;
	}
	if (e == SSL_ERROR_ZERO_RETURN)
		return 0;
	unsigned long ec = ERR_get_error();
	int se = errno;
	char buf[256];
	if (ec != 0)
		ERR_error_string_n(ec, buf, sizeof(buf));
	else
		util_strlcpy(buf, e == SSL_ERROR_SYSCALL ? (se != 0 ?
		    strerror(se) : "connection closed") : "TLS error",
		    sizeof(buf));
	ERR_clear_error();
	dconn_seterr(c, "%s %s: %s", what, c->peer, buf);
	if (ec == 0 && e == SSL_ERROR_SYSCALL)
		c->fail = se != 0 ? dconn_fail_of(se) : DCONN_FAIL_LOST;
	return -1;
}

int
dconn_starttls(struct dconn *c, struct tls_client *tc, const char *name,
    uint64_t timeout_ms)
{
	uint64_t deadline = util_now_ms() + timeout_ms;
	int r;

	c->roff = c->rlen = 0;		/* RFC 3207 4.2: forget plain input */
	if ((c->ssl = tls_client_ssl_new(tc, name)) == NULL) {
		dconn_seterr(c, "TLS to %s: unusable server name", c->peer);
		return -1;
	}
	SSL_set_fd(c->ssl, c->fd);
	ERR_clear_error();
	while ((r = SSL_connect(c->ssl)) != 1) {
		long v = SSL_get_verify_result(c->ssl);
		if (v != X509_V_OK) {
			dconn_seterr(c, "TLS to %s: certificate verification "
			    "failed: %s", c->peer,
			    X509_verify_cert_error_string(v));
			ERR_clear_error();
			return -1;
		}
		int a = dconn_ssl_again(c, r, deadline, "TLS handshake with");
		if (a == 0) {
			dconn_seterr(c, "TLS handshake with %s: connection "
			    "closed", c->peer);
			c->fail = DCONN_FAIL_LOST;
			return -1;
		}
		if (a == -1)
			return -1;
	}
	c->tls_verified = SSL_get_verify_result(c->ssl) == X509_V_OK &&
	    SSL_get_verify_mode(c->ssl) != SSL_VERIFY_NONE;
	return 0;
}

int
dconn_write(struct dconn *c, const void *p, size_t n, uint64_t timeout_ms)
{
	uint64_t deadline = util_now_ms() + timeout_ms;
	const char *s = p;

	while (n > 0) {
		ssize_t w;
		if (c->ssl != NULL) {
			ERR_clear_error();
			int r = SSL_write(c->ssl, s, n > INT32_MAX ? INT32_MAX :
			    (int)n);
			if (r <= 0) {
				int a = dconn_ssl_again(c, r, deadline,
				    "write to");
				if (a == 1)
					continue;
				if (a == 0) {
					dconn_seterr(c, "write to %s: "
					    "connection closed", c->peer);
					c->fail = DCONN_FAIL_LOST;
				}
				return -1;
			}
			w = r;
		} else {
			w = send(c->fd, s, n, MSG_NOSIGNAL);
			if (w == -1 && errno == EINTR)
				continue;
			if (w == -1 && (errno == EAGAIN ||
			    errno == EWOULDBLOCK)) {
				int r = dconn_wait(c, POLLOUT, deadline);
				if (r == 1)
					continue;
				dconn_seterr(c, "write to %s: %s", c->peer,
				    r == 0 ? "timed out" :
				    dconn_strerror(errno));
				if (r == 0)
					c->fail = DCONN_FAIL_TIMEOUT;
				return -1;
			}
			if (w == -1) {
				int e = errno;
				dconn_seterr(c, "write to %s: %s", c->peer,
				    strerror(e));
				c->fail = dconn_fail_of(e);
				return -1;
			}
		}
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Refill rbuf (which is empty); 0, or -1 with c->err. */
static int
dconn_fill(struct dconn *c, uint64_t deadline)
{
	c->roff = c->rlen = 0;
	for (;;) {
		ssize_t r;
		if (c->ssl != NULL) {
			ERR_clear_error();
			int n = SSL_read(c->ssl, c->rbuf, sizeof(c->rbuf));
			if (n > 0) {
				c->rlen = (size_t)n;
				return 0;
			}
			int a = dconn_ssl_again(c, n, deadline, "read from");
			if (a == 1)
				continue;
			if (a == 0) {
				dconn_seterr(c, "read from %s: connection "
				    "closed", c->peer);
				c->fail = DCONN_FAIL_LOST;
			}
			return -1;
		}
		r = recv(c->fd, c->rbuf, sizeof(c->rbuf), 0);
		if (r > 0) {
			c->rlen = (size_t)r;
			return 0;
		}
		if (r == 0) {
			dconn_seterr(c, "read from %s: connection closed",
			    c->peer);
			c->fail = DCONN_FAIL_LOST;
			return -1;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			int w = dconn_wait(c, POLLIN, deadline);
			if (w == 1)
				continue;
			dconn_seterr(c, "read from %s: %s", c->peer, w == 0 ?
			    "timed out" : dconn_strerror(errno));
			if (w == 0)
				c->fail = DCONN_FAIL_TIMEOUT;
			return -1;
		}
		int e = errno;
		dconn_seterr(c, "read from %s: %s", c->peer, strerror(e));
		c->fail = dconn_fail_of(e);
		return -1;
	}
}

int
dconn_readline(struct dconn *c, char *line, size_t linesz,
    uint64_t timeout_ms)
{
	uint64_t deadline = util_now_ms() + timeout_ms;
	size_t len = 0, raw = 0;

	ASSERT(linesz > 0);
	for (;;) {
		if (c->roff == c->rlen && dconn_fill(c, deadline) == -1)
			return -1;
		char ch = c->rbuf[c->roff++];
		if (++raw > DCONN_LINE_RAW_MAX) {
			dconn_seterr(c, "%s sent a line longer than %d octets",
			    c->peer, DCONN_LINE_RAW_MAX);
			return -1;
		}
		if (ch == '\n')
			break;
		if (len + 1 < linesz)
			line[len++] = ch;
	}
	if (len > 0 && line[len - 1] == '\r')
		len--;
	line[len] = '\0';
	return (int)raw;
}

void
dconn_close(struct dconn *c)
{
	if (c->ssl != NULL) {
		SSL_set_quiet_shutdown(c->ssl, 1);
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd != -1)
		close(c->fd);
	c->fd = -1;
	c->roff = c->rlen = 0;
}

bool
dconn_idle_ok(struct dconn *c)
{
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

	if (c->fd == -1 || c->roff != c->rlen ||
	    (c->ssl != NULL && SSL_pending(c->ssl) > 0))
		return false;
	/* Readable means EOF, an error or words nobody asked for (421). */
	while (poll(&pfd, 1, 0) == -1)
		if (errno != EINTR)
			return false;
	return (pfd.revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL)) == 0;
}
