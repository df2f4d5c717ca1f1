/* benchio.h: a line-buffered SMTP connection over a socket or TLS, for the
 * benchmark's load client and TLS sink; every read and write is bounded by
 * the socket's SO_RCVTIMEO/SO_SNDTIMEO. */
#ifndef BENCHIO_H
#define BENCHIO_H

#include <stddef.h>
#include <openssl/ssl.h>

#define BIO_LINE_MAX 4096

struct bconn {
	int	 fd;
	SSL	*ssl;			/* NULL before STARTTLS */
	char	 buf[16384];
	size_t	 off;
	size_t	 len;
};

void	bconn_init(struct bconn *c, int fd);
void	bconn_clear(struct bconn *c);
/* Set both socket timeouts on fd; -1 on failure. */
int	bconn_timeouts(int fd, int secs);
/* One line without its CRLF into line (at most BIO_LINE_MAX - 1 bytes, the
 * rest of a longer line dropped): 1 got one, 0 peer closed, -1 error. */
int	bconn_read_line(struct bconn *c, char *line, size_t *len_out);
/* The whole buffer, or -1. */
int	bconn_write(struct bconn *c, const void *p, size_t n);
/* Handshake on an already connected socket, a client offering sess (NULL:
 * none) to resume; -1 with the reason printed. */
int	bconn_tls(struct bconn *c, SSL_CTX *ctx, int server, SSL_SESSION *sess);
/* What every context of the tools sets: records read ahead, many at a
 * time, rather than each in two reads (header, then body); buffers kept
 * for the connection's life (no SSL_MODE_RELEASE_BUFFERS). */
void	bconn_ctx_tune(SSL_CTX *ctx);
/* Print the OpenSSL error queue (or errno) after what, on stderr. */
void	bconn_perror(const char *what);

#endif
