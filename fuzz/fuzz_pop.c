/*
 * fuzz/fuzz_pop.c: what a POP3 server answers POP-before-SMTP.  The input
 * is the server's byte stream: a thread of this program listens on
 * 127.0.0.1, sends it to each connection and reads what the client says
 * until it hangs up; deliver_pop_login() runs against it.  A login may
 * only succeed when the greeting and the answers to USER and PASS all
 * start with "+OK", and a failure's text holds no control byte.
 */
#include "deliver/deliver.h"
#include "log/log.h"
#include "util/util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int	LLVMFuzzerInitialize(int *argc, char ***argv);
int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fz_port;
static pthread_mutex_t fz_mu = PTHREAD_MUTEX_INITIALIZER;
static struct util_buf fz_script;	/* what the server sends next */

/* The server: one connection at a time, the script, then drain. */
static void *
fz_server(void *arg)
{
	int lfd = *(int *)arg;
	char buf[4096];

	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		if (fd == -1)
			continue;
		pthread_mutex_lock(&fz_mu);
		if (fz_script.len > 0 && write(fd, fz_script.data,
		    fz_script.len) != (ssize_t)fz_script.len)
			abort();
		pthread_mutex_unlock(&fz_mu);
		shutdown(fd, SHUT_WR);
		while (read(fd, buf, sizeof(buf)) > 0)
			;
		close(fd);
	}
	return NULL;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static int lfd;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	pthread_t t;

	(void)argc;
	(void)argv;
	log_set_level(LOG_LVL_ERROR);	/* no line per login */
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd == -1 || bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) ==
	    -1 || listen(lfd, 16) == -1 || getsockname(lfd,
	    (struct sockaddr *)&sin, &sl) == -1 ||
	    pthread_create(&t, NULL, fz_server, &lfd) != 0)
		abort();
	fz_port = ntohs(sin.sin_port);
	return 0;
}

/* Do the first n lines of the script start with "+OK"? */
static bool
fz_oks(const uint8_t *data, size_t size, int n)
{
	size_t off = 0;

	for (int i = 0; i < n; i++) {
		const uint8_t *nl = memchr(data + off, '\n', size - off);
		if (nl == NULL || size - off < 3 || memcmp(data + off, "+OK",
		    3) != 0)
			return false;
		off = (size_t)(nl - data) + 1;
	}
	return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct deliver_pop_opts o = { .host = "127.0.0.1", .port = fz_port,
	    .tls = DELIVER_TLS_NONE, .user = "user", .pass = "secret",
	    .timeout_ms = 2000 };
	const char *err = NULL;

	/* The socket buffer takes it all: the server never waits. */
	if (size > 65536)
		return 0;
	pthread_mutex_lock(&fz_mu);
	util_buf_reset(&fz_script);
	util_buf_add(&fz_script, data, size);
	pthread_mutex_unlock(&fz_mu);
	if (deliver_pop_login(&o, &err) == 0) {
		if (!fz_oks(data, size, 3))
			abort();
	} else {
		if (err == NULL)
			abort();
		for (const char *p = err; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20 ||
			    (unsigned char)*p > 0x7e)
				abort();
	}
	return 0;
}
