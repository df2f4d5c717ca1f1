/* benchio.c: buffered lines over a plain or TLS socket for bench/tools;
 * knows nothing of SMTP beyond CRLF-terminated lines. */
#include "benchio.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <openssl/err.h>

void
bconn_init(struct bconn *c, int fd)
{
	c->fd = fd;
	c->ssl = NULL;
	c->off = 0;
	c->len = 0;
}

void
bconn_clear(struct bconn *c)
{
	if (c->ssl != NULL) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd != -1) {
		close(c->fd);
		c->fd = -1;
	}
}

int
bconn_timeouts(int fd, int secs)
{
	struct timeval tv = { .tv_sec = secs, .tv_usec = 0 };

	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == -1)
		return -1;
	return 0;
}

void
bconn_perror(const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[256];

	if (e != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		fprintf(stderr, "%s: %s\n", what, buf);
		ERR_clear_error();
	} else if (errno != 0)
		fprintf(stderr, "%s: %s\n", what, strerror(errno));
	else
		fprintf(stderr, "%s: connection closed\n", what);
}

static ssize_t
bconn_recv(struct bconn *c, char *p, size_t n)
{
	int r;

	if (c->ssl == NULL) {
		ssize_t got;

		do
			got = recv(c->fd, p, n, 0);
		while (got == -1 && errno == EINTR);
		return got;
	}
	r = SSL_read(c->ssl, p, (int)n);
	if (r > 0)
		return r;
	if (SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN)
		return 0;
	if (errno == 0)
		errno = EIO;
	return -1;
}

int
bconn_read_line(struct bconn *c, char *line, size_t *len_out)
{
	size_t n = 0;

	for (;;) {
		while (c->off < c->len) {
			char ch = c->buf[c->off++];

			if (ch == '\n') {
				if (n > 0 && line[n - 1] == '\r')
					n--;
				line[n] = '\0';
				*len_out = n;
				return 1;
			}
			if (n < BIO_LINE_MAX - 1)
				line[n++] = ch;
		}
		errno = 0;
		ssize_t got = bconn_recv(c, c->buf, sizeof(c->buf));
		if (got <= 0)
			return got == 0 ? 0 : -1;
		c->off = 0;
		c->len = (size_t)got;
	}
}

int
bconn_write(struct bconn *c, const void *p, size_t n)
{
	const char *s = p;

	while (n > 0) {
		ssize_t w;

		if (c->ssl != NULL) {
			int r = SSL_write(c->ssl, s, n > (1 << 30) ?
			    (1 << 30) : (int)n);
			w = r > 0 ? r : -1;
		} else {
			do
				w = send(c->fd, s, n, MSG_NOSIGNAL);
			while (w == -1 && errno == EINTR);
		}
		if (w <= 0)
			return -1;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

void
bconn_ctx_tune(SSL_CTX *ctx)
{
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_clear_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
}

int
bconn_tls(struct bconn *c, SSL_CTX *ctx, int server, SSL_SESSION *sess)
{
	if (c->off != c->len) {
		fprintf(stderr, "tls: peer sent data before the handshake\n");
		return -1;
	}
	c->ssl = SSL_new(ctx);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 ||
	    (sess != NULL && SSL_set_session(c->ssl, sess) != 1)) {
		bconn_perror("SSL_new");
		return -1;
	}
	errno = 0;
	if ((server ? SSL_accept(c->ssl) : SSL_connect(c->ssl)) != 1) {
		bconn_perror(server ? "SSL_accept" : "SSL_connect");
		return -1;
	}
	return 0;
}
