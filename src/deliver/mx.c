/*
 * deliver/mx.c: where to send mail for a domain (RFC 5321 5.1): an
 * "mx-hosts" table entry, or the DNS MX records (one UDP query driven by a
 * private event_base) and each host's A/AAAA addresses (evdns on the same
 * base); then direct delivery that falls back host by host.  Knows nothing
 * of the queue.
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

static void
mx_add(struct mx_list *l, const char *name, const char *addr, int port,
    int pref)
{
	if (l->n >= MX_MAX)
		return;
	l->h = xreallocarray(l->h, l->n + 1, sizeof(*l->h));
	l->order = xreallocarray(l->order, l->n + 1, sizeof(*l->order));
	struct deliver_mx_host *h = &l->h[l->n];
	memset(h, 0, sizeof(*h));
	util_strlcpy(h->name, name, sizeof(h->name));
	util_strlcpy(h->addr, addr, sizeof(h->addr));
	h->port = port;
	h->pref = pref;
	if (RAND_bytes((unsigned char *)&l->order[l->n],
	    sizeof(l->order[0])) != 1)
		l->order[l->n] = (uint32_t)random();
	l->n++;
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

/* ---- the MX query: one UDP exchange on the private base ---- */

struct mx_dns {
	struct event_base	*base;
	struct evdns_base	*dns;
	int			 fd;
	uint16_t		 id;
	unsigned char		 ans[4096];
	int			 anslen;	/* -1: timed out */
	int			 pending;	/* A/AAAA queries out */
	bool			 addr_temp;	/* an A/AAAA query failed */
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

/* RFC 1035 4.1: a query for domain's MX records; its length or -1. */
static int
mx_build_query(uint16_t id, const char *domain, unsigned char *q,
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
	q[n++] = 15;		/* MX */
	q[n++] = 0;
	q[n++] = 1;		/* IN */
	return (int)n;
}

static void
mx_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct mx_dns *d = arg;

	if (what & EV_TIMEOUT) {
		d->anslen = -1;
		return;
	}
	ssize_t r = recv(fd, d->ans, sizeof(d->ans), 0);
	/* Not our answer (wrong id, not a response): 0, keep waiting. */
	d->anslen = r >= 12 && ((d->ans[0] << 8) | d->ans[1]) == d->id &&
	    (d->ans[2] & 0x80) ? (int)r : 0;
}

/* Ask for MX records; 0 with the answer in d->ans, -1 on timeout/error. */
static int
mx_query(struct mx_dns *d, const char *resolver, const char *domain)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	unsigned char q[512];
	int qlen;

	if (mx_ns_addr(resolver, &ss, &sl) == -1)
		return -1;
	if (RAND_bytes((unsigned char *)&d->id, sizeof(d->id)) != 1)
		d->id = (uint16_t)random();
	if ((qlen = mx_build_query(d->id, domain, q, sizeof(q))) == -1)
		return -1;
	d->fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (d->fd == -1)
		return -1;
	if (connect(d->fd, (struct sockaddr *)&ss, sl) == -1)
		return -1;
	/* Three tries, each a third of the time allowed. */
	for (int attempt = 0; attempt < 3; attempt++) {
		if (send(d->fd, q, (size_t)qlen, 0) != qlen)
			return -1;
		uint64_t deadline = util_now_ms() + d->timeout_ms / 3;
		do {
			uint64_t now = util_now_ms();
			uint64_t t = deadline > now ? deadline - now : 1;
			struct timeval tv = util_timeval_ms(t);
			d->anslen = -2;		/* no callback yet */
			if (event_base_once(d->base, d->fd, EV_READ |
			    EV_TIMEOUT, mx_read_cb, d, &tv) == -1)
				return -1;
			while (d->anslen == -2)
				event_base_loop(d->base, EVLOOP_ONCE);
		} while (d->anslen == 0);
		if (d->anslen > 0)
			return 0;
	}
	/* XXX: no TCP retry for truncated answers; MX sets are small. */
	return -1;
}

/*
 * Parse the answer msg[0..len) into (pref, name) pairs.  Returns the RCODE
 * (0 with the records in mx), or -1 for a malformed answer.
 */
static int
mx_parse(const unsigned char *msg, size_t len, struct mx_list *mx)
{
	const unsigned char *eom = msg + len, *p = msg + 12;
	char name[NS_MAXDNAME];
	int rcode, qd, an, n;

	if (len < 12)
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
		if (type == 15 && rdlen >= 3) {
			int pref = (p[0] << 8) | p[1];
			if (dn_expand(msg, eom, p + 2, name, sizeof(name)) < 0)
				return -1;
			mx_add(mx, name, "", 0, pref);
		}
		p += rdlen;
	}
	return 0;
}

struct mx_addr_req {
	struct mx_dns	*d;
	char		 name[256];
	int		 port, pref;
};

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
	} else if (result != DNS_ERR_NOTEXIST && result != DNS_ERR_NODATA)
		r->d->addr_temp = true;
	r->d->pending--;
	free(r);
}

/* Resolve every name of mx (sorted) into out, in mx's order. */
static void
mx_addresses(struct mx_dns *d, const struct mx_list *mx, struct mx_list *out,
    int port)
{
	for (size_t i = 0; i < mx->n; i++) {
		struct mx_list one = { 0 };
		if (mx_is_ip(mx->h[i].name)) {
			mx_add(out, mx->h[i].name, mx->h[i].name, port,
			    mx->h[i].pref);
			continue;
		}
		d->out = &one;
		for (int fam = 0; fam < 2; fam++) {
			struct mx_addr_req *r = xcalloc(1, sizeof(*r));
			r->d = d;
			util_strlcpy(r->name, mx->h[i].name, sizeof(r->name));
			r->port = port;
			r->pref = mx->h[i].pref;
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
	struct mx_dns d = { .fd = -1, .timeout_ms = o->dns_timeout_ms != 0 ?
	    o->dns_timeout_ms : 10000 };
	struct mx_list mx = { 0 };
	int port = o->port != 0 ? o->port : 25, rc = -1, rcode;
	char tbuf[16];

	*perm_out = false;
	d.base = event_base_new();
	d.dns = evdns_base_new(d.base, 0);
	if (d.base == NULL || d.dns == NULL)
		fatal("event_base_new/evdns_base_new: out of memory");
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
	if (mx_query(&d, o->resolver, alabel) == -1) {
		*err_out = util_err("4.4.3 MX lookup for %s timed out or "
		    "failed", domain);
		goto out;
	}
	if ((rcode = mx_parse(d.ans, (size_t)d.anslen, &mx)) != 0) {
		*perm_out = rcode == 3;
		*err_out = rcode == 3 ? util_err("5.1.2 domain %s does not "
		    "exist (NXDOMAIN)", domain) : util_err("4.4.3 MX lookup "
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
	if (d.fd != -1)
		close(d.fd);
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
	int rcode = mx_parse(msg, len, &l);

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
	} else	/* RFC 5891 5: a UTF-8 domain is asked for as A-labels */
		rc = mx_dns_resolve(o, domain, alabel != NULL ? alabel :
		    domain, &l, perm_out, err_out);
	free(alabel);
	free(l.order);
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
