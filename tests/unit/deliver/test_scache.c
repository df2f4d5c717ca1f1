/*
 * Unit tests of the outbound session cache (deliver/scache.c): what a
 * session's key tells apart, taking back what was kept, and the cache's
 * thread closing a session with QUIT when idle too long, when the cache
 * is full, and when its owner goes.  The "server" is the other end of a
 * socketpair: what it reads is what the cache said.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"
#include "util/util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static void
test_key(void **state)
{
	int owner1, owner2, tls1, tls2;
	struct deliver_reuse r1 = { .owner = &owner1, .idle_ms = 1000 },
	    r2 = { .owner = &owner2, .idle_ms = 1000 };
	struct deliver_smtp_opts base = { .host = "127.0.0.1", .port = 25,
	    .tls = DELIVER_TLS_STARTTLS, .tls_ctx = (void *)&tls1,
	    .user = "u", .pass = "p", .reuse = &r1 }, o;
	char *k0 = scache_key(&base, "me.example"), *k;

	(void)state;
	k = scache_key(&base, "me.example");
	assert_string_equal(k, k0);	/* the same session: the same key */
	free(k);
	assert_null(strstr(k0, " p "));	/* the password only digested */
	/* Each of these makes another session. */
	for (int i = 0; i < 9; i++) {
		o = base;
		const char *helo = "me.example";
		switch (i) {
		case 0: o.reuse = &r2; break;
		case 1: o.host = "127.0.0.2"; break;
		case 2: o.port = 587; break;
		case 3: o.tls = DELIVER_TLS_IMPLICIT; break;
		case 4: o.tls_ctx = (void *)&tls2; break;
		case 5: o.tls_name = "mx.example"; break;
		case 6: o.user = "v"; break;
		case 7: o.pass = "q"; break;
		default: helo = "other.example"; break;
		}
		k = scache_key(&o, helo);
		if (strcmp(k, k0) == 0)
			fail_msg("change %d gives the same key %s", i, k);
		free(k);
	}
	free(k0);
}

/* An idle session over a socketpair; *peer gets the server's end. */
static void
idle_pair(struct smtpc_idle *s, int *peer, unsigned uses)
{
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
	    sv), 0);
	assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);	/* as dconn's */
	memset(s, 0, sizeof(*s));
	dconn_init(&s->c);
	s->c.fd = sv[0];
	s->uses = uses;
	*peer = sv[1];
}

/* What the server end reads within timeout_ms, until EOF: "" if nothing. */
static void
read_all(int fd, char *buf, size_t sz, int timeout_ms)
{
	size_t len = 0;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	buf[0] = '\0';
	while (len + 1 < sz && poll(&pfd, 1, timeout_ms) == 1) {
		ssize_t n = read(fd, buf + len, sz - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = '\0';
		if (strstr(buf, "QUIT\r\n") != NULL && write(fd, "221 bye\r\n",
		    9) != 9)
			break;
	}
	buf[len] = '\0';
}

static void
test_take_put_expire(void **state)
{
	int owner, p1, p2, p3;
	struct deliver_reuse r = { .owner = &owner, .idle_ms = 60000,
	    .max_uses = 100, .cache_max = 2 };
	struct smtpc_idle s, got;
	char buf[64];

	(void)state;
	signal(SIGPIPE, SIG_IGN);	/* a peer may close first */
	scache_ref();
	assert_false(scache_take("k", &got));
	idle_pair(&s, &p1, 3);
	scache_put("k", &r, &s);
	assert_int_equal(s.c.fd, -1);		/* moved into the cache */
	assert_false(scache_take("other", &got));
	assert_true(scache_take("k", &got));
	assert_int_equal(got.uses, 3);
	assert_true(dconn_idle_ok(&got.c));
	assert_false(scache_take("k", &s));	/* taken: no longer kept */
	/* The peer said something while it waited: not usable. */
	assert_int_equal(write(p1, "421 bye\r\n", 9), 9);
	assert_false(dconn_idle_ok(&got.c));
	dconn_close(&got.c);
	close(p1);

	/* Full: the one kept longest goes, with QUIT. */
	idle_pair(&s, &p1, 1);
	scache_put("a", &r, &s);
	idle_pair(&s, &p2, 1);
	scache_put("b", &r, &s);
	idle_pair(&s, &p3, 1);
	scache_put("c", &r, &s);
	read_all(p1, buf, sizeof(buf), 5000);
	assert_string_equal(buf, "QUIT\r\n");
	assert_false(scache_take("a", &got));

	/* The owner goes: its sessions are closed. */
	scache_drop(&owner);
	read_all(p2, buf, sizeof(buf), 5000);
	assert_string_equal(buf, "QUIT\r\n");
	read_all(p3, buf, sizeof(buf), 5000);
	assert_string_equal(buf, "QUIT\r\n");
	assert_false(scache_take("b", &got));
	close(p1);
	close(p2);
	close(p3);

	/* Idle too long: closed by the cache's thread, not before. */
	r.idle_ms = 300;
	uint64_t t0 = util_now_ms();
	idle_pair(&s, &p1, 1);
	scache_put("k", &r, &s);
	read_all(p1, buf, sizeof(buf), 5000);
	assert_string_equal(buf, "QUIT\r\n");
	assert_true(util_now_ms() - t0 >= 250);
	close(p1);

	/* The last user gone: what is kept is closed, the thread ends. */
	r.idle_ms = 60000;
	idle_pair(&s, &p1, 1);
	scache_put("k", &r, &s);
	scache_unref();
	read_all(p1, buf, sizeof(buf), 5000);
	assert_string_equal(buf, "QUIT\r\n");
	close(p1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key),
		cmocka_unit_test(test_take_put_expire),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
