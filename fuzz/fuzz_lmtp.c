/*
 * fuzz/fuzz_lmtp.c: the LMTP client (deliver_smtp() with lmtp set) against
 * a server whose every byte is the input: greeting, LHLO reply, the
 * envelope replies and one reply per recipient after the content.  The
 * input is written at once on a unix socket and the write side shut, so
 * no step waits.  Every recipient ends decided, and the summary agrees.
 */
#include "deliver/deliver.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int	 fuzz_lfd = -1;
static char	 fuzz_path[108];

struct fuzz_srv {
	const uint8_t	*data;
	size_t		 size;
};

/* Accept one client, say the input, read until the client is done. */
static void *
fuzz_serve(void *arg)
{
	struct fuzz_srv *s = arg;
	int fd = accept(fuzz_lfd, NULL, NULL);
	char buf[4096];

	if (fd == -1)
		return NULL;
	for (size_t off = 0; off < s->size;) {
		ssize_t n = write(fd, s->data + off, s->size - off);

		if (n <= 0)
			break;
		off += (size_t)n;
	}
	shutdown(fd, SHUT_WR);
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
	return NULL;
}

static void
fuzz_unlink(void)
{
	unlink(fuzz_path);
}

static void
fuzz_listen(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };

	snprintf(fuzz_path, sizeof(fuzz_path), "/tmp/fuzz_lmtp.%d.sock",
	    (int)getpid());
	unlink(fuzz_path);
	memcpy(sun.sun_path, fuzz_path, strlen(fuzz_path) + 1);
	if ((fuzz_lfd = socket(AF_UNIX, SOCK_STREAM, 0)) == -1 ||
	    bind(fuzz_lfd, (struct sockaddr *)&sun, sizeof(sun)) == -1 ||
	    listen(fuzz_lfd, 4) == -1)
		abort();
	atexit(fuzz_unlink);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char msg[] = "Subject: x\n\n.dot\nbody\n";
	const char *rcpts[] = { "a@example.org", "b@example.org",
	    "c@example.org" };
	struct deliver_msg m = { .content = msg, .content_len = sizeof(msg) -
	    1, .return_path = "s@example.org", .qid = "F1" };
	struct deliver_smtp_opts o = { .unix_path = fuzz_path, .lmtp = true,
	    .timeouts = { 1000, 1000, 1000, 1000, 1000, 1000 } };
	struct deliver_rcpt_status st[3];
	struct fuzz_srv s = { data, size > 65536 ? 65536 : size };
	const char *err = NULL;
	enum deliver_result r;
	size_t ok = 0, perm = 0;
	pthread_t t;

	if (fuzz_lfd == -1)
		fuzz_listen();
	if (pthread_create(&t, NULL, fuzz_serve, &s) != 0)
		abort();
	r = deliver_smtp(&o, &m, rcpts, 3, st, &err);
	pthread_join(t, NULL);
	for (size_t i = 0; i < 3; i++) {
		if (st[i].code == -1 || memchr(st[i].text, '\0',
		    sizeof(st[i].text)) == NULL)
			abort();
		ok += st[i].result == DELIVER_OK;
		perm += st[i].result == DELIVER_PERMFAIL;
		/* Only a 2xx delivers. */
		if (st[i].result == DELIVER_OK && st[i].code / 100 != 2)
			abort();
	}
	if ((r == DELIVER_OK) != (ok == 3) ||
	    (r == DELIVER_PERMFAIL) != (perm == 3))
		abort();
	return 0;
}
