/* tlssink.c: the SMTP dialogue with STARTTLS and nothing else, the TLS
 * ceiling for bench/run (smtp-sink has no TLS); clients may resume their
 * sessions.  A thread per connection;
 * messages are read to the final dot and dropped.  Every 100 ms the count
 * so far is printed as "mesg=N" when it changed; SIGTERM ends it. */
#include "benchio.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static SSL_CTX *sink_ctx;
static atomic_long sink_msgs;
static volatile sig_atomic_t sink_stop;
static int sink_timeout_s = 60;

static void
sink_on_term(int sig)
{
	(void)sig;
	sink_stop = 1;
}

static int
sink_reply(struct bconn *c, const char *text)
{
	return bconn_write(c, text, strlen(text));
}

/* Lines up to the lone dot; 0 at the dot, -1 on a closed connection. */
static int
sink_data(struct bconn *c)
{
	char line[BIO_LINE_MAX];
	size_t n;

	while (bconn_read_line(c, line, &n) == 1)
		if (n == 1 && line[0] == '.')
			return 0;
	return -1;
}

static int
sink_command(struct bconn *c, const char *line)
{
	if (strncasecmp(line, "EHLO", 4) == 0)
		return sink_reply(c, c->ssl != NULL ?
		    "250-tlssink\r\n250-PIPELINING\r\n250 8BITMIME\r\n" :
		    "250-tlssink\r\n250-PIPELINING\r\n250-STARTTLS\r\n"
		    "250 8BITMIME\r\n");
	if (strncasecmp(line, "STARTTLS", 8) == 0 && c->ssl == NULL) {
		if (sink_reply(c, "220 2.0.0 Ready to start TLS\r\n") == -1)
			return -1;
		return bconn_tls(c, sink_ctx, 1, NULL);
	}
	if (strncasecmp(line, "DATA", 4) == 0) {
		if (sink_reply(c, "354 End data with <CR><LF>.<CR><LF>\r\n")
		    == -1 || sink_data(c) == -1)
			return -1;
		atomic_fetch_add(&sink_msgs, 1);
		return sink_reply(c, "250 2.0.0 Ok: dropped\r\n");
	}
	if (strncasecmp(line, "QUIT", 4) == 0) {
		sink_reply(c, "221 2.0.0 Bye\r\n");
		return -1;
	}
	if (strncasecmp(line, "HELO", 4) == 0 ||
	    strncasecmp(line, "MAIL", 4) == 0 ||
	    strncasecmp(line, "RCPT", 4) == 0 ||
	    strncasecmp(line, "RSET", 4) == 0 ||
	    strncasecmp(line, "NOOP", 4) == 0)
		return sink_reply(c, "250 2.0.0 Ok\r\n");
	return sink_reply(c, "502 5.5.2 Error: command not recognized\r\n");
}

static void *
sink_session(void *arg)
{
	struct bconn *c = arg;
	char line[BIO_LINE_MAX];
	size_t n;

	if (bconn_timeouts(c->fd, sink_timeout_s) == 0 &&
	    sink_reply(c, "220 tlssink ESMTP\r\n") == 0)
		while (bconn_read_line(c, line, &n) == 1 &&
		    sink_command(c, line) == 0)
			continue;
	bconn_clear(c);
	free(c);
	return NULL;
}

static int
sink_listen(const char *arg)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	char host[64];
	const char *colon = strrchr(arg, ':');
	int one = 1, fd;

	if (colon == NULL || (size_t)(colon - arg) >= sizeof(host))
		return -1;
	memcpy(host, arg, (size_t)(colon - arg));
	host[colon - arg] = '\0';
	sin.sin_port = htons((unsigned short)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
		return -1;
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(fd, 1024) == -1) {
		perror("tlssink: listen");
		return -1;
	}
	return fd;
}

static void
sink_accept(int lfd)
{
	int fd = accept(lfd, NULL, NULL);
	struct bconn *c;
	pthread_t th;

	if (fd == -1)
		return;
	c = malloc(sizeof(*c));
	if (c == NULL) {
		close(fd);
		return;
	}
	bconn_init(c, fd);
	if (pthread_create(&th, NULL, sink_session, c) != 0) {
		bconn_clear(c);
		free(c);
		return;
	}
	pthread_detach(th);
}

static SSL_CTX *
sink_tls(const char *cert, const char *key)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (ctx == NULL ||
	    SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		bconn_perror("tlssink: certificate");
		return NULL;
	}
	/* Resumption as OpenSSL has it (tickets, a session cache), with one
	 * ticket per handshake, as a client resuming needs. */
	SSL_CTX_set_num_tickets(ctx, 1);
	bconn_ctx_tune(ctx);
	return ctx;
}

int
main(int argc, char **argv)
{
	const char *cert = NULL, *key = NULL;
	long shown = -1;
	int ch, lfd;

	while ((ch = getopt(argc, argv, "c:k:w:")) != -1) {
		switch (ch) {
		case 'c': cert = optarg; break;
		case 'k': key = optarg; break;
		case 'w': sink_timeout_s = atoi(optarg); break;
		default: goto usage;
		}
	}
	if (optind != argc - 1 || cert == NULL || key == NULL ||
	    sink_timeout_s < 1)
		goto usage;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, sink_on_term);
	signal(SIGINT, sink_on_term);
	sink_ctx = sink_tls(cert, key);
	lfd = sink_listen(argv[optind]);
	if (sink_ctx == NULL || lfd == -1)
		return 1;
	while (!sink_stop) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };

		if (poll(&p, 1, 100) == 1)
			sink_accept(lfd);
		long now = atomic_load(&sink_msgs);
		if (now != shown) {
			printf("mesg=%ld\n", now);
			fflush(stdout);
			shown = now;
		}
	}
	printf("mesg=%ld\n", atomic_load(&sink_msgs));
	return 0;
usage:
	fprintf(stderr, "usage: tlssink -c cert.pem -k key.pem [-w timeout_s] "
	    "IP:PORT\n");
	return 2;
}
