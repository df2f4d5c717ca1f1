/*
 * tests/unit/chain/dnsd.c: a tiny UDP DNS responder on loopback, run by the
 * test's own event loop (included by test_chain.c).  A and PTR answers
 * from a table, NXDOMAIN otherwise; it counts the queries it got.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

struct dnsd_rr {
	const char	*name;
	int		 type;		/* 1 A, 12 PTR */
	const char	*data;		/* dotted IPv4, or a name */
};

static const struct dnsd_rr dnsd_rrs[] = {
	{ "7.2.0.192.bl.test", 1, "127.0.0.2" },
	{ "9.2.0.192.bl.test", 1, "127.0.0.4" },
	{ "spam.example.rhs.test", 1, "127.0.0.2" },
	{ "7.2.0.192.in-addr.arpa", 12, "mail.example.net" },
	{ "mail.example.net", 1, "192.0.2.7" },
	{ "9.2.0.192.in-addr.arpa", 12, "liar.example.net" },
	{ "liar.example.net", 1, "198.51.100.1" },
	{ NULL, 0, NULL },
};

struct dnsd {
	int		 fd;
	int		 port;
	struct event	*ev;
	int		 queries;
	char		 resolver[32];
};

static size_t
dnsd_put_name(unsigned char *p, const char *name)
{
	size_t o = 0;

	while (*name != '\0' && o < 200) {
		const char *dot = strchr(name, '.');
		size_t n = dot != NULL ? (size_t)(dot - name) : strlen(name);
		if (n > 63)
			n = 63;
		p[o++] = (unsigned char)n;
		memcpy(p + o, name, n);
		o += n;
		name += n + (dot != NULL);
	}
	p[o++] = 0;
	return o;
}

static void
dnsd_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dnsd *d = arg;
	unsigned char q[512], r[512];
	struct sockaddr_storage from;
	socklen_t flen = sizeof(from);
	char name[256];
	size_t o = 0, i = 12;

	(void)what;
	ssize_t n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *)&from,
	    &flen);
	if (n < 17)
		return;
	d->queries++;
	while (i < (size_t)n && q[i] != 0) {	/* the question name */
		size_t l = q[i];
		if (o > 0)
			name[o++] = '.';
		for (size_t k = 0; k < l && o + 1 < sizeof(name); k++)
			name[o++] = (char)tolower(q[i + 1 + k]);
		i += l + 1;
	}
	name[o] = '\0';
	size_t qend = i + 5;
	if (qend > (size_t)n || qend > 256)
		return;
	int qtype = q[i + 1] << 8 | q[i + 2];
	memcpy(r, q, qend);
	r[2] = 0x81;
	r[3] = 0x80;
	r[6] = r[7] = r[8] = r[9] = r[10] = r[11] = 0;
	size_t len = qend;
	const struct dnsd_rr *rr;
	for (rr = dnsd_rrs; rr->name != NULL; rr++)
		if (strcmp(rr->name, name) == 0 && rr->type == qtype)
			break;
	if (rr->name == NULL) {
		r[3] = 0x83;	/* NXDOMAIN */
	} else {
		r[7] = 1;
		unsigned char *a = r + len;
		a[0] = 0xc0; a[1] = 12;
		a[2] = 0; a[3] = (unsigned char)qtype;
		a[4] = 0; a[5] = 1;
		a[6] = 0; a[7] = 0; a[8] = 0; a[9] = 60;	/* TTL */
		size_t dl;
		if (qtype == 1) {
			dl = 4;
			inet_pton(AF_INET, rr->data, a + 12);
		} else
			dl = dnsd_put_name(a + 12, rr->data);
		a[10] = (unsigned char)(dl >> 8);
		a[11] = (unsigned char)dl;
		len += 12 + dl;
	}
	sendto(fd, r, len, 0, (struct sockaddr *)&from, flen);
}

static void
dnsd_attach(struct dnsd *d, struct event_base *base)
{
	d->ev = event_new(base, d->fd, EV_READ | EV_PERSIST, dnsd_cb, d);
	event_add(d->ev, NULL);
}

static void
dnsd_bind(struct dnsd *d)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);

	memset(d, 0, sizeof(*d));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	d->fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (bind(d->fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    getsockname(d->fd, (struct sockaddr *)&sin, &len) == -1)
		fail_msg("dnsd: cannot bind");
	d->port = ntohs(sin.sin_port);
	snprintf(d->resolver, sizeof(d->resolver), "127.0.0.1:%d", d->port);
}

static void
dnsd_stop(struct dnsd *d)
{
	event_free(d->ev);
	close(d->fd);
}
