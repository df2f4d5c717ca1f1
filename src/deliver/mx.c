/*
 * deliver/mx.c: where to send mail for a domain (RFC 5321 5.1): an
 * "mx-hosts" table entry, an address literal's one host, or the DNS MX
 * records (our own query over UDP, then TCP for a truncated answer, driven
 * by a private event_base) and each host's A/AAAA addresses (evdns on the
 * same base; TCP again for a truncated one), less the hosts that are this
 * server; then direct delivery that falls back host by host.  Knows
 * nothing of the queue.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/rand.h>

#include "table/table.h"
#include "util/util.h"

#define MX_MAX		32	/* MX records and addresses we keep */

struct mx_list {
	struct deliver_mx_host	*h;
	size_t			 n;
	uint32_t		*order;	/* random tie-breakers */
};

/*
 * Add a host.  Past MX_MAX the least preferred one goes, so the most
 * preferred MX_MAX are kept whatever order an answer lists them in.
 */
static void
mx_add(struct mx_list *l, const char *name, const char *addr, int port,
    int pref)
{
	size_t at = l->n;

	if (l->n >= MX_MAX) {
		at = 0;
		for (size_t i = 1; i < l->n; i++)
			if (l->h[i].pref >= l->h[at].pref)
				at = i;
		if (l->h[at].pref <= pref)
			return;
	} else {
		l->h = xreallocarray(l->h, l->n + 1, sizeof(*l->h));
		l->order = xreallocarray(l->order, l->n + 1,
		    sizeof(*l->order));
		l->n++;
	}
	struct deliver_mx_host *h = &l->h[at];
	memset(h, 0, sizeof(*h));
	util_strlcpy(h->name, name, sizeof(h->name));
	util_strlcpy(h->addr, addr, sizeof(h->addr));
	h->port = port;
	h->pref = pref;
	if (RAND_bytes((unsigned char *)&l->order[at],
	    sizeof(l->order[0])) != 1)
		l->order[at] = (uint32_t)random();
}

/* RFC 5321 5.1: by preference; equal preferences in random order. */
static void
mx_sort(struct mx_list *l)
{
	for (size_t i = 1; i < l->n; i++)
		for (size_t k = i; k > 0; k--) {
			struct deliver_mx_host *a = &l->h[k - 1], *b = &l->h[k];
			if (a->pref < b->pref || (a->pref == b->pref &&
			    l->order[k - 1] <= l->order[k]))
				break;
			struct deliver_mx_host t = *a;
			*a = *b;
			*b = t;
			uint32_t o = l->order[k - 1];
			l->order[k - 1] = l->order[k];
			l->order[k] = o;
		}
}

static bool
mx_is_ip(const char *s)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, s, buf) == 1 ||
	    inet_pton(AF_INET6, s, buf) == 1;
}

/*
 * A table value "10 127.0.0.1:2601, 20 [::1]:2602, mx.example.org" (the
 * preference defaults to 0, the port to dport).  0, or -1 with *err_out.
 */
static int
mx_parse_hosts(const char *v, int dport, struct mx_list *l,
    const char **err_out)
{
	char *copy = xstrdup(v), *save = NULL;

	for (char *e = strtok_r(copy, ",", &save); e != NULL;
	    e = strtok_r(NULL, ",", &save)) {
		while (*e == ' ' || *e == '\t')
			e++;
		int pref = 0;
		char *num_end;
		long num = isdigit((unsigned char)*e) ? strtol(e, &num_end, 10) :
		    -1;
		if (num != -1 && *num_end == ' ') {
			if (num > 65535)	/* RFC 1035 3.3.9: 16 bits */
				goto bad;
			pref = (int)num;
			e = num_end;
			while (*e == ' ')
				e++;
		}
		char *end = e + strcspn(e, " \t");
		*end = '\0';
		char host[256];
		int port = dport;
		const char *colon;
		if (*e == '[') {
			const char *rb = strchr(e, ']');
			if (rb == NULL)
				goto bad;
			snprintf(host, sizeof(host), "%.*s", (int)(rb - e - 1),
			    e + 1);
			colon = rb[1] == ':' ? rb + 1 : NULL;
		} else {
			colon = strrchr(e, ':');
			if (colon != NULL && strchr(e, ':') != colon)
				colon = NULL;	/* bare IPv6 */
			snprintf(host, sizeof(host), "%.*s", colon != NULL ?
			    (int)(colon - e) : (int)strlen(e), e);
		}
		if (colon != NULL) {
			long p = isdigit((unsigned char)colon[1]) ?
			    strtol(colon + 1, &num_end, 10) : -1;
			if (p < 1 || p > 65535 || *num_end != '\0')
				goto bad;
			port = (int)p;
		}
		if (host[0] == '\0')
			goto bad;
		mx_add(l, host, mx_is_ip(host) ? host : "", port, pref);
	}
	free(copy);
	if (l->n == 0) {
		*err_out = util_err("4.3.5 mx-hosts entry %s has no host",
		    v);
		return -1;
	}
	return 0;
bad:
	free(copy);
	*err_out = util_err("4.3.5 bad mx-hosts entry: %s", v);
	return -1;
}

/*
 * ---- our own queries: MX over UDP, and over TCP whatever came back
 * truncated (RFC 1035 4.2.1, RFC 7766 5), on the private base ----
 */

#define MX_ANS_MAX	65535	/* RFC 1035 4.2.2: a TCP length is 16 bits */
#define MX_TYPE_A	1
#define MX_TYPE_MX	15
#define MX_TYPE_AAAA	28

struct mx_dns {
	struct event_base	*base;
	struct evdns_base	*dns;
	const char		*resolver;	/* borrowed: o->resolver */
	uint16_t		 id;
	unsigned char		*ans;		/* owned: MX_ANS_MAX bytes */
	size_t			 anslen;
	int			 pending;	/* A/AAAA queries out */
	bool			 addr_temp;	/* an A/AAAA query failed */
	unsigned		 addr_tc;	/* 1 A, 2 AAAA came truncated */
	struct mx_list		*out;		/* addresses go here */
	uint64_t		 timeout_ms;
};

/* The resolver to ask: o->resolver or resolv.conf's first nameserver. */
static int
mx_ns_addr(const char *resolver, struct sockaddr_storage *ss,
    socklen_t *len)
{
	char buf[128], ip[64];
	int port = 53;

	if (resolver == NULL) {
		FILE *f = fopen("/etc/resolv.conf", "r");
		ip[0] = '\0';
		while (f != NULL && fgets(buf, sizeof(buf), f) != NULL)
			if (sscanf(buf, " nameserver %63s", ip) == 1)
				break;
		if (f != NULL)
			fclose(f);
		if (ip[0] == '\0')
			util_strlcpy(ip, "127.0.0.1", sizeof(ip));
	} else if (resolver[0] == '[') {
		const char *rb = strchr(resolver, ']');
		if (rb == NULL)
			return -1;
		snprintf(ip, sizeof(ip), "%.*s", (int)(rb - resolver - 1),
		    resolver + 1);
		if (rb[1] == ':')
			port = atoi(rb + 2);
	} else {
		const char *colon = strrchr(resolver, ':');
		if (colon != NULL && strchr(resolver, ':') == colon) {
			snprintf(ip, sizeof(ip), "%.*s", (int)(colon -
			    resolver), resolver);
			port = atoi(colon + 1);
		} else
			util_strlcpy(ip, resolver, sizeof(ip));
	}
	if (util_sockaddr_make(ip, port, ss, len) == -1)
		return -1;
	return port < 1 || port > 65535 ? -1 : 0;
}

struct mx_addr_req {
	struct mx_dns	*d;
	char		 name[256];
	int		 port, pref;
	int		 qtype;		/* MX_TYPE_A or MX_TYPE_AAAA */
};

/*
 * One record's data rd[0..rdlen) of type (0: not wanted) into l, as
 * mx_parse() says.  0, or -1 when it is malformed.
 */
static int
mx_parse_rr(const unsigned char *msg, const unsigned char *eom,
    const unsigned char *rd, int rdlen, int type,
    const struct mx_addr_req *r, struct mx_list *l)
{
	char name[NS_MAXDNAME], ip[INET6_ADDRSTRLEN];

	if (type == MX_TYPE_MX && rdlen >= 3) {
		if (dn_expand(msg, eom, rd + 2, name, sizeof(name)) < 0)
			return -1;
		mx_add(l, name, "", 0, (rd[0] << 8) | rd[1]);
	} else if ((type == MX_TYPE_A && rdlen == 4) || (type ==
	    MX_TYPE_AAAA && rdlen == 16)) {
		inet_ntop(type == MX_TYPE_A ? AF_INET : AF_INET6, rd, ip,
		    sizeof(ip));
		mx_add(l, r->name, ip, r->port, r->pref);
	}
	return 0;
}

/* RFC 1035 4.1: a query for name's records of qtype; its length or -1. */
static int
mx_build_query(uint16_t id, const char *domain, int qtype, unsigned char *q,
    size_t qsz)
{
	size_t n = 12;

	if (strlen(domain) > 253 || qsz < 12 + 255 + 4)
		return -1;
	memset(q, 0, 12);
	q[0] = id >> 8;
	q[1] = id & 0xff;
	q[2] = 0x01;		/* RD */
	q[5] = 1;		/* QDCOUNT */
	const char *p = domain;
	while (*p != '\0') {
		const char *dot = strchr(p, '.');
		size_t ll = dot != NULL ? (size_t)(dot - p) : strlen(p);
		if (ll == 0 || ll > 63)
			return -1;
		q[n++] = (unsigned char)ll;
		memcpy(q + n, p, ll);
		n += ll;
		p += ll;
		if (*p == '.')
			p++;
	}
	q[n++] = 0;
	q[n++] = 0;
	q[n++] = (unsigned char)qtype;
	q[n++] = 0;
	q[n++] = 1;		/* IN */
	return (int)n;
}

static void
mx_wait_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	*(short *)arg = what;
}

/* Wait until fd is ready for what (EV_READ, EV_WRITE): 0, or -1. */
static int
mx_wait(struct mx_dns *d, int fd, short what, uint64_t deadline_ms)
{
	uint64_t now = util_now_ms();
	short got = 0;

	if (now >= deadline_ms)
		return -1;
	struct timeval tv = util_timeval_ms(deadline_ms - now);
	if (event_base_once(d->base, fd, what | EV_TIMEOUT, mx_wait_cb, &got,
	    &tv) == -1)
		return -1;
	while (got == 0)
		event_base_loop(d->base, EVLOOP_ONCE);
	return (got & EV_TIMEOUT) != 0 ? -1 : 0;
}

/* The response to our query d->id, or another message to ignore. */
static bool
mx_is_ours(const struct mx_dns *d, const unsigned char *m, size_t len)
{
	return len >= 12 && ((m[0] << 8) | m[1]) == d->id && (m[2] & 0x80);
}

/* A non-blocking socket of type connected (or connecting) to ss, or -1. */
static int
mx_connect(const struct sockaddr_storage *ss, socklen_t sl, int type)
{
	int fd = socket(ss->ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd != -1 && connect(fd, (const struct sockaddr *)ss, sl) == -1 &&
	    errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Three UDP tries on fd, each a third of the time allowed: 0, or -1. */
static int
mx_ask_udp(struct mx_dns *d, int fd, const unsigned char *q, int qlen)
{
	for (int attempt = 0; attempt < 3; attempt++) {
		if (send(fd, q, (size_t)qlen, 0) != qlen)
			return -1;
		uint64_t deadline = util_now_ms() + d->timeout_ms / 3;
		while (mx_wait(d, fd, EV_READ, deadline) == 0) {
			ssize_t r = recv(fd, d->ans, MX_ANS_MAX, 0);
			if (r > 0 && mx_is_ours(d, d->ans, (size_t)r)) {
				d->anslen = (size_t)r;
				return 0;
			}
		}
	}
	return -1;
}

/* Read exactly len bytes from fd by deadline_ms: 0, or -1. */
static int
mx_read_full(struct mx_dns *d, int fd, unsigned char *buf, size_t len,
    uint64_t deadline_ms)
{
	size_t have = 0;

	while (have < len) {
		ssize_t r = recv(fd, buf + have, len - have, 0);
		if (r > 0)
			have += (size_t)r;
		else if (r == 0 || (errno != EAGAIN && errno != EINTR) ||
		    mx_wait(d, fd, EV_READ, deadline_ms) == -1)
			return -1;
	}
	return 0;
}

/*
 * RFC 1035 4.2.2: the query over the TCP socket fd (connecting), within
 * the time allowed: 0, or -1.
 */
static int
mx_ask_tcp(struct mx_dns *d, int fd, const unsigned char *q, int qlen)
{
	uint64_t deadline = util_now_ms() + d->timeout_ms;
	unsigned char msg[2 + 512], lenb[2];
	int err = 0;
	socklen_t el = sizeof(err);

	if ((size_t)qlen > sizeof(msg) - 2 || mx_wait(d, fd, EV_WRITE,
	    deadline) == -1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err,
	    &el) == -1 || err != 0)
		return -1;
	msg[0] = (unsigned char)(qlen >> 8);
	msg[1] = qlen & 0xff;
	memcpy(msg + 2, q, (size_t)qlen);
	/* A fresh socket's send buffer takes these few bytes whole. */
	if (send(fd, msg, (size_t)qlen + 2, MSG_NOSIGNAL) != qlen + 2 ||
	    mx_read_full(d, fd, lenb, 2, deadline) == -1)
		return -1;
	d->anslen = (size_t)((lenb[0] << 8) | lenb[1]);
	return mx_read_full(d, fd, d->ans, d->anslen, deadline) == 0 &&
	    mx_is_ours(d, d->ans, d->anslen) ? 0 : -1;
}

/*
 * Ask d->resolver for name's records of qtype, over UDP unless tcp_only,
 * then over TCP when the answer was truncated (TC).  0 with the answer in
 * d->ans, -1 when none came.
 */
static int
mx_ask(struct mx_dns *d, const char *name, int qtype, bool tcp_only)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	unsigned char q[512];
	int qlen, fd, rc;

	if (mx_ns_addr(d->resolver, &ss, &sl) == -1)
		return -1;
	if (RAND_bytes((unsigned char *)&d->id, sizeof(d->id)) != 1)
		d->id = (uint16_t)random();
	if ((qlen = mx_build_query(d->id, name, qtype, q, sizeof(q))) == -1)
		return -1;
	if (!tcp_only) {
		if ((fd = mx_connect(&ss, sl, SOCK_DGRAM)) == -1)
			return -1;
		rc = mx_ask_udp(d, fd, q, qlen);
		close(fd);
		if (rc == -1 || (d->ans[2] & 0x02) == 0)
			return rc;
	}
	if ((fd = mx_connect(&ss, sl, SOCK_STREAM)) == -1)
		return -1;
	rc = mx_ask_tcp(d, fd, q, qlen);
	close(fd);
	return rc;
}

/*
 * The records of qtype (MX, A or AAAA) in the answer msg[0..len) into l:
 * an MX record as (its host, no address, pref); an address as (r's name,
 * the address, r's port and pref).  Returns the RCODE (0 with the records
 * in l), or -1 for an answer truncated (TC) or malformed.
 */
static int
mx_parse(const unsigned char *msg, size_t len, int qtype,
    const struct mx_addr_req *r, struct mx_list *l)
{
	const unsigned char *eom = msg + len, *p = msg + 12;
	char name[NS_MAXDNAME];
	int rcode, qd, an, n;

	if (len < 12 || (msg[2] & 0x02) != 0)
		return -1;
	rcode = msg[3] & 0x0f;
	qd = (msg[4] << 8) | msg[5];
	an = (msg[6] << 8) | msg[7];
	if (rcode != 0)
		return rcode;
	for (int i = 0; i < qd; i++) {
		if ((n = dn_expand(msg, eom, p, name, sizeof(name))) < 0 ||
		    p + n + 4 > eom)
			return -1;
		p += n + 4;
	}
	for (int i = 0; i < an; i++) {
		if ((n = dn_expand(msg, eom, p, name, sizeof(name))) < 0 ||
		    p + n + 10 > eom)
			return -1;
		p += n;
		int type = (p[0] << 8) | p[1];
		int rdlen = (p[8] << 8) | p[9];
		p += 10;
		if (p + rdlen > eom)
			return -1;
		if (mx_parse_rr(msg, eom, p, rdlen, type == qtype ? type : 0,
		    r, l) == -1)
			return -1;
		p += rdlen;
	}
	return 0;
}

static void
mx_addr_cb(int result, char type, int count, int ttl, void *addrs,
    void *arg)
{
	struct mx_addr_req *r = arg;
	char ip[INET6_ADDRSTRLEN];

	(void)ttl;
	if (result == DNS_ERR_NONE) {
		for (int i = 0; i < count; i++) {
			if (type == DNS_IPv4_A)
				inet_ntop(AF_INET, (const char *)addrs + 4 * i,
				    ip, sizeof(ip));
			else if (type == DNS_IPv6_AAAA)
				inet_ntop(AF_INET6, (const char *)addrs + 16 *
				    i, ip, sizeof(ip));
			else
				continue;
			mx_add(r->d->out, r->name, ip, r->port, r->pref);
		}
	} else if (result == DNS_ERR_TRUNCATED)	/* asked again over TCP */
		r->d->addr_tc |= r->qtype == MX_TYPE_A ? 1 : 2;
	else if (result != DNS_ERR_NOTEXIST && result != DNS_ERR_NODATA)
		r->d->addr_temp = true;
	r->d->pending--;
	free(r);
}

/*
 * The addresses of qtype of r->name over TCP (evdns has no TCP) into
 * d->out; a failure sets d->addr_temp.
 */
static void
mx_addr_tcp(struct mx_dns *d, const struct mx_addr_req *r, int qtype)
{
	int rcode = mx_ask(d, r->name, qtype, true) == -1 ? -1 :
	    mx_parse(d->ans, d->anslen, qtype, r, d->out);

	if (rcode != 0 && rcode != 3)	/* NXDOMAIN: no address */
		d->addr_temp = true;
}

/* Resolve every name of mx (sorted) into out, in mx's order. */
static void
mx_addresses(struct mx_dns *d, const struct mx_list *mx, struct mx_list *out,
    int port)
{
	for (size_t i = 0; i < mx->n; i++) {
		struct mx_list one = { 0 };
		struct mx_addr_req tmpl = { .d = d, .port = port,
		    .pref = mx->h[i].pref };
		util_strlcpy(tmpl.name, mx->h[i].name, sizeof(tmpl.name));
		if (mx_is_ip(mx->h[i].name)) {
			mx_add(out, mx->h[i].name, mx->h[i].name, port,
			    mx->h[i].pref);
			continue;
		}
		d->out = &one;
		d->addr_tc = 0;
		for (int fam = 0; fam < 2; fam++) {
			struct mx_addr_req *r = xmalloc(sizeof(*r));
			*r = tmpl;
			r->qtype = fam == 0 ? MX_TYPE_A : MX_TYPE_AAAA;
			d->pending++;
			if ((fam == 0 ? evdns_base_resolve_ipv4(d->dns,
			    r->name, DNS_QUERY_NO_SEARCH, mx_addr_cb, r) :
			    evdns_base_resolve_ipv6(d->dns, r->name,
			    DNS_QUERY_NO_SEARCH, mx_addr_cb, r)) == NULL) {
				d->pending--;
				d->addr_temp = true;
				free(r);
			}
		}
		while (d->pending > 0)
			event_base_loop(d->base, EVLOOP_ONCE);
		if (d->addr_tc & 1)
			mx_addr_tcp(d, &tmpl, MX_TYPE_A);
		if (d->addr_tc & 2)
			mx_addr_tcp(d, &tmpl, MX_TYPE_AAAA);
		for (size_t k = 0; k < one.n; k++)
			mx_add(out, one.h[k].name, one.h[k].addr,
			    one.h[k].port, one.h[k].pref);
		free(one.h);
		free(one.order);
	}
}

/*
 * The MX hosts of domain and their addresses from the DNS, asked by the
 * domain's A-label form (alabel); errors name the domain as written.
 */
static int
mx_dns_resolve(const struct deliver_mx_opts *o, const char *domain,
    const char *alabel, struct mx_list *out, bool *perm_out,
    const char **err_out)
{
	struct mx_dns d = { .resolver = o->resolver, .timeout_ms =
	    o->dns_timeout_ms != 0 ? o->dns_timeout_ms : 10000 };
	struct mx_list mx = { 0 };
	int port = o->port != 0 ? o->port : 25, rc = -1, rcode;
	char tbuf[16];

	*perm_out = false;
	d.base = event_base_new();
	d.dns = evdns_base_new(d.base, 0);
	if (d.base == NULL || d.dns == NULL)
		fatal("event_base_new/evdns_base_new: out of memory");
	d.ans = xmalloc(MX_ANS_MAX);
	if (o->resolver != NULL ? evdns_base_nameserver_ip_add(d.dns,
	    o->resolver) != 0 : evdns_base_resolv_conf_parse(d.dns,
	    DNS_OPTION_NAMESERVERS, "/etc/resolv.conf") != 0) {
		*err_out = util_err("4.4.3 no usable nameserver (%s)",
		    o->resolver != NULL ? o->resolver : "/etc/resolv.conf");
		goto out;
	}
	snprintf(tbuf, sizeof(tbuf), "%u", (unsigned)(d.timeout_ms / 3000 +
	    1));
	evdns_base_set_option(d.dns, "timeout:", tbuf);
	evdns_base_set_option(d.dns, "attempts:", "3");
	if (mx_ask(&d, alabel, MX_TYPE_MX, false) == -1) {
		*err_out = util_err("4.4.3 MX lookup for %s timed out or "
		    "failed", domain);
		goto out;
	}
	if ((rcode = mx_parse(d.ans, d.anslen, MX_TYPE_MX, NULL, &mx)) !=
	    0) {
		*perm_out = rcode == 3;
		*err_out = rcode == 3 ? util_err("5.1.2 domain %s does not "
		    "exist (NXDOMAIN)", domain) : rcode == -1 ?
		    util_err("4.4.3 MX lookup for %s failed (answer truncated "
		    "or ill-formed)", domain) : util_err("4.4.3 MX lookup "
		    "for %s failed (rcode %d)", domain, rcode);
		goto out;
	}
	/* RFC 7505 3: a single MX "." means no mail service. */
	if (mx.n == 1 && mx.h[0].name[0] == '\0') {
		*perm_out = true;
		*err_out = util_err("5.1.10 domain %s accepts no mail "
		    "(null MX, RFC 7505)", domain);
		goto out;
	}
	if (mx.n == 0)		/* RFC 5321 5.1: the implicit MX */
		mx_add(&mx, alabel, "", port, 0);
	mx_sort(&mx);
	mx_addresses(&d, &mx, out, port);
	if (out->n == 0) {
		*perm_out = !d.addr_temp;
		*err_out = d.addr_temp ? util_err("4.4.3 address lookup "
		    "for the MX hosts of %s failed", domain) :
		    util_err("5.1.2 no address for the mail hosts of %s",
		    domain);
		goto out;
	}
	rc = 0;
out:
	free(d.ans);
	evdns_base_free(d.dns, 0);
	event_base_free(d.base);
	free(mx.h);
	free(mx.order);
	return rc;
}

int
deliver_mx_answer(const unsigned char *msg, size_t len,
    struct deliver_mx_host **hosts_out, size_t *n_out)
{
	struct mx_list l = { 0 };
	int rcode = mx_parse(msg, len, MX_TYPE_MX, NULL, &l);

	mx_sort(&l);
	free(l.order);
	*hosts_out = l.h;
	*n_out = l.n;
	return rcode;
}

int
deliver_mx_hosts(const char *v, int dport, struct deliver_mx_host **hosts_out,
    size_t *n_out, const char **err_out)
{
	struct mx_list l = { 0 };
	int rc = mx_parse_hosts(v, dport, &l, err_out);

	mx_sort(&l);
	free(l.order);
	*hosts_out = l.h;
	*n_out = l.n;
	return rc;
}

/*
 * The mx-hosts entry of domain, a key in any of its spellings: TABLE_FOUND
 * (*value_out malloc'd), TABLE_MISSING, or TABLE_ERROR when no spelling was
 * found and the table failed to answer for one of them.
 */
static int
mx_hosts_lookup(struct table *t, const char *domain, char **value_out)
{
	char *sp[2];
	int rc = table_get_first(t, domain, value_out);
	size_t n = rc == TABLE_FOUND ? 0 : util_idna_spellings(domain, sp);

	for (size_t i = 0; i < n; i++) {
		if (rc != TABLE_FOUND) {
			int rc2 = table_get_first(t, sp[i], value_out);
			rc = rc2 == TABLE_MISSING ? rc : rc2;
		}
		free(sp[i]);
	}
	return rc;
}

/*
 * RFC 5321 5.1, 4.1.3: an address-literal domain ("[192.0.2.1]",
 * "[IPv6:2001:db8::1]") is the one host to connect to, without DNS.
 */
static int
mx_literal(const char *domain, int port, struct mx_list *l,
    bool *perm_out, const char **err_out)
{
	size_t len = strlen(domain);
	char ip[INET6_ADDRSTRLEN];
	unsigned char bin[16];
	int af = AF_INET;
	const char *p = domain + 1;

	if (len > 6 && strncasecmp(p, "IPv6:", 5) == 0) {
		af = AF_INET6;
		p += 5;
	}
	if (domain[len - 1] != ']' || (size_t)(domain + len - 1 - p) >=
	    sizeof(ip)) {
		*perm_out = true;
		*err_out = util_err("5.1.2 bad address literal %s", domain);
		return -1;
	}
	snprintf(ip, sizeof(ip), "%.*s", (int)(domain + len - 1 - p), p);
	if (inet_pton(af, ip, bin) != 1) {
		*perm_out = true;
		*err_out = util_err("5.1.2 address literal %s is not an "
		    "IPv4 or IPv6 address", domain);
		return -1;
	}
	inet_ntop(af, bin, ip, sizeof(ip));
	mx_add(l, ip, ip, port, 0);
	return 0;
}

/*
 * RFC 5321 5.1: a host that is this server (one of its listeners) goes,
 * with every host not more preferred than it; none left, the mail would
 * loop.  0, or -1 with *err_out.
 */
static int
mx_drop_self(const struct deliver_self *self, const char *domain,
    struct mx_list *l, const char **err_out)
{
	size_t keep = l->n;

	for (size_t i = 0; i < l->n; i++)
		if (l->h[i].addr[0] != '\0' && deliver_self_has(self,
		    l->h[i].addr, l->h[i].port)) {
			keep = i;
			break;
		}
	/* The list is sorted: those before keep are more preferred. */
	while (keep > 0 && keep < l->n && l->h[keep - 1].pref ==
	    l->h[keep].pref)
		keep--;
	l->n = keep;
	if (keep == 0) {
		*err_out = util_err("5.4.6 mail for %s loops back to myself",
		    domain);
		return -1;
	}
	return 0;
}

int
deliver_mx_resolve(const struct deliver_mx_opts *o, const char *domain,
    struct deliver_mx_host **hosts_out, size_t *n_out, bool *perm_out,
    const char **err_out)
{
	struct mx_list l = { 0 };
	char *v = NULL, *alabel = NULL;
	const char *why;
	int rc;

	*perm_out = false;
	rc = o->mx_hosts != NULL ? mx_hosts_lookup(o->mx_hosts, domain, &v) :
	    TABLE_MISSING;
	if (rc == TABLE_ERROR) {
		/* Not "no entry": DNS could give another answer, or none. */
		*err_out = util_err("4.4.3 mx-hosts <%s>: the table did not "
		    "answer for %s", table_name(o->mx_hosts), domain);
		rc = -1;
	} else if (rc == TABLE_FOUND) {
		rc = deliver_mx_hosts(v, o->port != 0 ? o->port : 25, &l.h,
		    &l.n, err_out);
		free(v);
	} else if (!util_is_ascii(domain) && util_idna_alabel(domain, &alabel,
	    &why) == -1) {
		*perm_out = true;
		*err_out = util_err("5.1.2 domain %s is not a valid "
		    "internationalized domain name (%s)", domain, why);
		rc = -1;
	} else if (domain[0] == '[')
		rc = mx_literal(domain, o->port != 0 ? o->port : 25, &l,
		    perm_out, err_out);
	else	/* RFC 5891 5: a UTF-8 domain is asked for as A-labels */
		rc = mx_dns_resolve(o, domain, alabel != NULL ? alabel :
		    domain, &l, perm_out, err_out);
	free(alabel);
	free(l.order);
	if (rc == 0 && o->self != NULL && mx_drop_self(o->self, domain, &l,
	    err_out) == -1) {
		*perm_out = true;
		rc = -1;
	}
	if (rc == -1) {
		free(l.h);
		return -1;
	}
	*hosts_out = l.h;
	*n_out = l.n;
	return 0;
}

enum deliver_result
deliver_mx(const struct deliver_mx_opts *o,
    const struct deliver_smtp_opts *smtp, const char *domain,
    const struct deliver_msg *m, const char *const *rcpts, size_t n,
    struct deliver_rcpt_status *st_out, const char **err_out)
{
	struct deliver_mx_host *hosts = NULL;
	struct deliver_rcpt_status *st = xcalloc(n, sizeof(*st));
	const char **left = xcalloc(n, sizeof(*left));
	size_t *idx = xcalloc(n, sizeof(*idx)), nhosts = 0;
	bool perm;
	const char *err;

	for (size_t i = 0; i < n; i++) {
		memset(&st_out[i], 0, sizeof(st_out[i]));
		st_out[i].result = DELIVER_TEMPFAIL;
	}
	if (deliver_mx_resolve(o, domain, &hosts, &nhosts, &perm, &err) ==
	    -1) {
		for (size_t i = 0; i < n; i++) {
			st_out[i].result = perm ? DELIVER_PERMFAIL :
			    DELIVER_TEMPFAIL;
			util_strlcpy(st_out[i].text, err,
			    sizeof(st_out[i].text));
		}
		goto out;
	}
	/* RFC 5321 5.1: next host for whatever got a 4xx or no answer. */
	for (size_t h = 0; h < nhosts; h++) {
		size_t nleft = 0;
		for (size_t i = 0; i < n; i++)
			if (st_out[i].result == DELIVER_TEMPFAIL) {
				left[nleft] = rcpts[i];
				idx[nleft++] = i;
			}
		if (nleft == 0)
			break;
		struct deliver_smtp_opts so = *smtp;
		so.host = hosts[h].addr[0] != '\0' ? hosts[h].addr :
		    hosts[h].name;
		so.port = hosts[h].port;
		so.tls_name = hosts[h].name;
		(void)deliver_smtp(&so, m, left, nleft, st, &err);
		for (size_t k = 0; k < nleft; k++)
			st_out[idx[k]] = st[k];
	}
out:
	free(hosts);
	free(st);
	free(left);
	free(idx);
	size_t ok = 0, pf = 0;
	for (size_t i = 0; i < n; i++) {
		ok += st_out[i].result == DELIVER_OK;
		pf += st_out[i].result == DELIVER_PERMFAIL;
	}
	for (size_t i = 0; i < n; i++)
		if (st_out[i].result != DELIVER_OK) {
			*err_out = util_err("%s", st_out[i].text);
			break;
		}
	return ok == n ? DELIVER_OK : pf == n ? DELIVER_PERMFAIL :
	    DELIVER_TEMPFAIL;
}
