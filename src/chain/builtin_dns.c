/*
 * chain/builtin_dns.c: DNS list look-ups with evdns (never blocking the
 * loop): "dnsbl ZONE" (the client IP, RFC 5782 2.1), "rhsbl ZONE" (the
 * sender's domain, or the HELO name before MAIL; RFC 5782 2.2) and
 * "fcrdns" (forward-confirmed reverse DNS).  Answers are cached in the
 * state store for their TTL.  A name that cannot be a DNS query name is
 * not looked up (not listed); a zone that would make one is refused with
 * the config.
 */
#include "chain/chain_private.h"

#include <arpa/inet.h>
#include <event2/dns.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain/session.h"
#include "log/log.h"
#include "store/store.h"
#include "util/util.h"

#define DNS_MATCH_MAX	8
#define DNS_ANSWER_MAX	16	/* A records of an answer kept */
#define DNS_NAME_MAX	253	/* RFC 1035 2.3.4: 255 on the wire */
#define DNS_LABEL_MAX	63
#define DNS_IP6_NAME_LEN 64	/* 32 nibbles, each with its dot */
#define DNSL_TTL_MAX_S	86400	/* a listing is asked again after a day */
#define DNSL_NEG_TTL_S	300	/* not listed: asked again after 5 minutes */
/*
 * Less than any try of evdns takes to time out (5 s by default, whole
 * seconds in resolv.conf): a "timeout" sooner was a SERVFAIL answer.
 */
#define DNSL_FAST_FAIL_MS 1000

struct dnsl {
	char			 zone[256];
	bool			 rhs;
	bool			 tag_only;	/* "tag": record, never refuse */
	struct in_addr		 match[DNS_MATCH_MAX];	/* none: any 127/8 */
	size_t			 nmatch;
	struct chain_verdict	 v;
};

/*
 * Why name cannot be a DNS query name of at most max octets written out
 * (RFC 1035 2.3.4: labels of 1 to 63 octets), or NULL when it can.
 */
static const char *
dns_name_why(const char *name, size_t max)
{
	size_t label = 0;

	if (strlen(name) > max)
		return "is too long for a DNS name";
	for (const char *p = name;; p++) {
		if (*p != '.' && *p != '\0') {
			label++;
			continue;
		}
		if (label == 0)
			return "has an empty label";
		if (label > DNS_LABEL_MAX)
			return "has a label longer than 63 octets";
		if (*p == '\0')
			return NULL;
		label = 0;
	}
}

/* Strip the one trailing dot of a fully qualified name ("example.") */
static void
dns_name_unroot(char *name)
{
	size_t n = strlen(name);

	if (n > 1 && name[n - 1] == '.')
		name[n - 1] = '\0';
}

/*
 * The zone must leave room for the name put in front of it: an IPv6
 * client's nibbles for dnsbl, at least one label ("a.") for rhsbl.
 */
static char *
dnsl_zone_err(const char *zone, bool rhs)
{
	size_t room = rhs ? 2 : DNS_IP6_NAME_LEN;
	const char *why;

	if (strspn(zone, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789.-") != strlen(zone))
		return xasprintf("zone \"%s\" has a character other than "
		    "letters, digits, '-' and '.'", zone);
	if ((why = dns_name_why(zone, DNS_NAME_MAX)) != NULL)
		return xasprintf("zone \"%s\" %s", zone, why);
	if (strlen(zone) > DNS_NAME_MAX - room)
		return xasprintf("zone \"%s\" is too long: at most %zu octets "
		    "leave room for the name looked up in it", zone,
		    DNS_NAME_MAX - room);
	return NULL;
}

static void *
dnsl_new(const struct chain_handler_args *a, char **err_out)
{
	struct dnsl *d = xcalloc(1, sizeof(*d));
	size_t i = 2;

	d->rhs = strcmp(a->argv[0], "rhsbl") == 0;
	if (a->argc < 2)
		goto usage;
	char *zone = xstrdup(a->argv[1]);
	dns_name_unroot(zone);
	*err_out = dnsl_zone_err(zone, d->rhs);
	if (*err_out == NULL)
		util_strlcpy(d->zone, zone, sizeof(d->zone));	/* it fits */
	free(zone);
	if (*err_out != NULL) {
		free(d);
		return NULL;
	}
	if (i < a->argc && strcmp(a->argv[i], "match") == 0) {
		if (i + 1 == a->argc)
			goto usage;	/* "match" without its list */
		char *list = xstrdup(a->argv[i + 1]), *save = NULL;
		for (char *t = strtok_r(list, ",", &save); t != NULL;
		    t = strtok_r(NULL, ",", &save)) {
			if (d->nmatch == DNS_MATCH_MAX ||
			    inet_pton(AF_INET, t, &d->match[d->nmatch]) != 1) {
				free(list);
				goto usage;
			}
			d->nmatch++;
		}
		free(list);
		i += 2;
	}
	if (i < a->argc && strcmp(a->argv[i], "tag") == 0) {
		d->tag_only = true;
		i++;
	}
	if (i < a->argc) {
		if (d->tag_only || chain_parse_reply(a->argv + i, a->argc - i,
		    &d->v, err_out) == -1) {
			free(d);
			return NULL;
		}
	} else
		chain_verdict_reject(&d->v, 554, "5.7.1", d->rhs ?
		    "Service unavailable; sender domain listed" :
		    "Service unavailable; client [%{client.ip}] listed");
	return d;
usage:
	free(d);
	*err_out = xasprintf("usage: %s ZONE [match A.B.C.D,...] [tag | CODE "
	    "ESC TEXT]", a->argv[0]);
	return NULL;
}

/* The query name for an IP: reversed octets or nibbles, then the zone. */
static int
dnsl_ip_name(const char *ip, const char *zone, char *buf, size_t bufsz)
{
	unsigned char a[16];

	if (inet_pton(AF_INET, ip, a) == 1)
		return util_snprintf(buf, bufsz, "%u.%u.%u.%u.%s", a[3], a[2],
		    a[1], a[0], zone);
	if (inet_pton(AF_INET6, ip, a) != 1)
		return -1;
	size_t o = 0;
	for (int i = 15; i >= 0 && o + 4 < bufsz; i--) {
		static const char hex[] = "0123456789abcdef";
		buf[o++] = hex[a[i] & 15];
		buf[o++] = '.';
		buf[o++] = hex[a[i] >> 4];
		buf[o++] = '.';
	}
	buf[o] = '\0';
	return util_snprintf(buf + o, bufsz - o, "%s", zone);
}

struct dnsl_job {
	struct chain_call	*call;
	const struct dnsl	*d;
	struct store		*st;
	char			 name[300];
	char			 key[STORE_KEY_MAX];
	struct evdns_base	*dns;	/* borrowed: the loop's */
	uint64_t		 asked_ms;	/* when the query went out */
};

/* The first address of the answer d's match list takes, or NULL. */
static const char *
dnsl_listed(const struct dnsl *d, const char *answer, char *ip,
    size_t ipsz)
{
	const char *p = answer;

	while (*p != '\0') {
		size_t n = strcspn(p, " ");
		struct in_addr in;
		if (n < ipsz) {
			memcpy(ip, p, n);
			ip[n] = '\0';
			if (inet_pton(AF_INET, ip, &in) == 1) {
				bool hit = d->nmatch == 0 &&
				    (ntohl(in.s_addr) >> 24) == 127;
				for (size_t k = 0; k < d->nmatch; k++)
					hit |= in.s_addr == d->match[k].s_addr;
				if (hit)
					return ip;
			}
		}
		p += n + strspn(p + n, " ");
	}
	return NULL;
}

/* The answer (its addresses, "-" for none) -> the verdict, by d's match. */
static void
dnsl_answer(struct dnsl_job *j, const char *answer)
{
	struct chain_verdict v;
	struct chain_session *cs = chain_call_session(j->call);
	char buf[INET_ADDRSTRLEN];
	const char *ip = dnsl_listed(j->d, answer, buf, sizeof(buf));

	chain_verdict_continue(&v);
	if (ip != NULL) {
		if (cs != NULL) {
			char k[CHAIN_KEY_MAX];
			util_snprintf(k, sizeof(k), "%s.%s", j->d->rhs ?
			    "rhsbl" : "dnsbl", j->d->zone);
			chain_kv_set(cs, CHAIN_SCOPE_SESSION, k, ip);
		}
		if (!j->d->tag_only)
			v = j->d->v;
		util_snprintf(v.why, sizeof(v.why), "%s listed in %s (%s)",
		    j->name, j->d->zone, ip);
	}
	chain_call_done(j->call, &v);
	free(j);
}

/* What went wrong with a look-up, in words that say what happened. */
static const char *
dnsl_err_words(int result, uint64_t took_ms)
{
	switch (result) {
	case DNS_ERR_FORMAT:
		return "the server could not read the query (FORMERR)";
	case DNS_ERR_SERVERFAILED:
		return "server failure (SERVFAIL)";
	case DNS_ERR_NOTIMPL:
		return "the server does not answer such queries (NOTIMP)";
	case DNS_ERR_REFUSED:
		return "the server refused the query (REFUSED)";
	case DNS_ERR_TRUNCATED:
		return "truncated answer";
	case DNS_ERR_TIMEOUT:
		/*
		 * XXX: evdns turns a SERVFAIL into a timeout of that try, so
		 * only the time taken tells them apart.
		 */
		return took_ms < DNSL_FAST_FAIL_MS ?
		    "server failure (SERVFAIL)" : "no answer in time";
	case DNS_ERR_SHUTDOWN:
	case DNS_ERR_CANCEL:
		return "the resolver was shut down";
	default:
		return "unreadable answer";
	}
}

/*
 * Every handler on a zone shares the cached answer, so it holds what the
 * zone said (the A records), never one handler's reading of it.
 */
static void
dnsl_dns_cb(int result, char type, int count, int ttl, void *addrs,
    void *arg)
{
	struct dnsl_job *j = arg;
	char out[DNS_ANSWER_MAX * INET_ADDRSTRLEN] = "-";
	size_t o = 0;
	/*
	 * RFC 5782 2.1, RFC 2308 2.2: a name without A records (NODATA) is
	 * not listed, like one that does not exist.
	 */
	bool negative = result == DNS_ERR_NOTEXIST ||
	    result == DNS_ERR_NODATA;

	if (result != DNS_ERR_NONE && !negative) {
		struct chain_verdict v;
		chain_verdict_fail(&v, "DNS look-up of %s failed: %s", j->name,
		    dnsl_err_words(result, util_now_ms() - j->asked_ms));
		chain_call_done(j->call, &v);
		free(j);
		return;
	}
	if (result == DNS_ERR_NONE && type == DNS_IPv4_A) {
		const struct in_addr *in = addrs;
		for (int i = 0; i < count && i < DNS_ANSWER_MAX; i++) {
			if (o > 0)
				out[o++] = ' ';
			inet_ntop(AF_INET, &in[i], out + o, sizeof(out) - o);
			o += strlen(out + o);
		}
	}
	/*
	 * RFC 5782 5: cache for the TTL, at most a day; RFC 1035 3.2.1: a
	 * TTL of 0 is not cached.  A negative answer: 5 minutes.
	 */
	if (negative)
		ttl = DNSL_NEG_TTL_S;
	else if (ttl > DNSL_TTL_MAX_S)
		ttl = DNSL_TTL_MAX_S;
	if (ttl > 0)
		store_set(j->st, j->key, out, (uint64_t)ttl * 1000, NULL,
		    NULL);
	dnsl_answer(j, out);
}

static void
dnsl_cache_cb(void *arg, int rc, const char *value)
{
	struct dnsl_job *j = arg;

	if (rc == 1) {
		dnsl_answer(j, value);
		return;
	}
	j->asked_ms = util_now_ms();
	if (evdns_base_resolve_ipv4(j->dns, j->name,
	    DNS_QUERY_NO_SEARCH, dnsl_dns_cb, j) == NULL) {
		struct chain_verdict v;
		chain_verdict_fail(&v, "cannot start DNS look-up");
		chain_call_done(j->call, &v);
		free(j);
	}
}

/*
 * The query name for a domain (the sender's, or the HELO name) in zone:
 * its A-labels (RFC 5891 5), without a trailing dot.  -1 when there is
 * nothing to look up (<>, an address literal), with *why_out set when the
 * domain cannot be a DNS name.
 */
static int
dnsl_domain_name(const char *dom, const char *zone, char *buf, size_t bufsz,
    const char **why_out)
{
	char *a;
	int r;

	*why_out = NULL;
	if (dom == NULL || dom[0] == '\0' || dom[0] == '[')
		return -1;
	if (util_idna_alabel(dom, &a, why_out) == -1)
		return -1;
	dns_name_unroot(a);
	r = util_snprintf(buf, bufsz, "%s.%s", a, zone);
	free(a);
	if (r == -1)
		*why_out = "is too long for a DNS name";
	else
		*why_out = dns_name_why(buf, DNS_NAME_MAX);
	return *why_out != NULL ? -1 : 0;
}

static enum chain_status
dnsl_run(void *inst, struct chain_call *call, struct chain_verdict *v)
{
	const struct dnsl *d = inst;
	struct chain_session *cs = chain_call_session(call);
	struct dnsl_job *j;
	const char *why = NULL, *dom = NULL;
	int r;

	chain_verdict_continue(v);
	j = xcalloc(1, sizeof(*j));
	if (d->rhs) {
		dom = cs->sender != NULL ? chain_addr_domain(cs->sender) :
		    cs->helo;
		r = dnsl_domain_name(dom, d->zone, j->name, sizeof(j->name),
		    &why);
	} else
		r = dnsl_ip_name(cs->ip, d->zone, j->name, sizeof(j->name));
	if (r == -1) {
		/* Such a name cannot be listed: not a failure. */
		if (why != NULL) {
			char safe[CHAIN_TEXT_MAX + 16];
			log_event(LOG_LVL_DEBUG, "chain", cs->sid, NULL,
			    "handler=rhsbl zone=%s verdict=continue why=\"not "
			    "looked up: %s %s\"", d->zone, log_safe_into(safe,
			    sizeof(safe), dom, strlen(dom)), why);
		}
		free(j);
		return CHAIN_DONE;	/* nothing to look up */
	}
	j->call = call;
	j->d = d;
	j->dns = cs->loop->dns;
	j->st = cs->loop->store;
	/* One name in any letter case (RFC 4343), 8-bit bytes escaped. */
	util_strlcpy(j->key, "dnsa:", sizeof(j->key));
	r = store_key_add(j->key, sizeof(j->key), j->name, strlen(j->name), 0);
	ASSERT(r == 0);
	/*
	 * The cache first (the session may be gone when it answers).  It
	 * holds the zone's answer, which each handler reads by its own match.
	 */
	store_get(j->st, j->key, dnsl_cache_cb, j);
	return CHAIN_PENDING;
}

/* ----- fcrdns: PTR, then A/AAAA of the name must give the IP back ----- */

struct fcr_job {
	struct chain_call	*call;
	struct evdns_base	*dns;
	char			 ip[64];
	char			 name[256];
	bool			 v6;
	const struct chain_verdict *fail_v;
};

struct fcr {
	bool			 require;
	struct chain_verdict	 v;
};

static void *
fcr_new(const struct chain_handler_args *a, char **err_out)
{
	struct fcr *f = xcalloc(1, sizeof(*f));

	if (a->argc >= 2 && strcmp(a->argv[1], "require") == 0) {
		f->require = true;
		if (a->argc > 2) {
			if (chain_parse_reply(a->argv + 2, a->argc - 2, &f->v,
			    err_out) == -1) {
				free(f);
				return NULL;
			}
		} else
			chain_verdict_reject(&f->v, 450, "4.7.25", "Client "
			    "host rejected: cannot find your hostname, "
			    "[%{client.ip}]");
		return f;
	}
	if (a->argc != 1) {
		free(f);
		*err_out = xstrdup("usage: fcrdns [require [CODE ESC TEXT]]");
		return NULL;
	}
	return f;
}

static void
fcr_finish(struct fcr_job *j, const char *name, bool ok)
{
	struct chain_session *cs = chain_call_session(j->call);
	struct chain_verdict v;

	if (cs != NULL) {
		chain_session_set_rdns(cs, name, ok);
		chain_kv_set(cs, CHAIN_SCOPE_SESSION, "fcrdns", ok ? "pass" :
		    "fail");
	}
	chain_verdict_continue(&v);
	if (!ok && j->fail_v != NULL)
		v = *j->fail_v;
	chain_call_done(j->call, &v);
	free(j);
}

static void
fcr_fwd_cb(int result, char type, int count, int ttl, void *addrs, void *arg)
{
	struct fcr_job *j = arg;
	bool ok = false;
	char buf[INET6_ADDRSTRLEN];

	(void)ttl;
	for (int i = 0; result == DNS_ERR_NONE && i < count && !ok; i++) {
		if (type == DNS_IPv4_A)
			inet_ntop(AF_INET, (struct in_addr *)addrs + i, buf,
			    sizeof(buf));
		else if (type == DNS_IPv6_AAAA)
			inet_ntop(AF_INET6, (struct in6_addr *)addrs + i, buf,
			    sizeof(buf));
		else
			break;
		ok = strcmp(buf, j->ip) == 0;
	}
	fcr_finish(j, j->name, ok);
}

static void
fcr_ptr_cb(int result, char type, int count, int ttl, void *addrs, void *arg)
{
	struct fcr_job *j = arg;

	(void)ttl;
	if (result != DNS_ERR_NONE || type != DNS_PTR || count < 1) {
		fcr_finish(j, NULL, false);
		return;
	}
	/*
	 * XXX: evdns hands over the first PTR name only, so a host with
	 * several is judged by that one (docs/chains.md says so).
	 */
	util_strlcpy(j->name, ((char **)addrs)[0], sizeof(j->name));
	struct evdns_request *r = j->v6 ?
	    evdns_base_resolve_ipv6(j->dns, j->name, DNS_QUERY_NO_SEARCH,
	    fcr_fwd_cb, j) : evdns_base_resolve_ipv4(j->dns, j->name,
	    DNS_QUERY_NO_SEARCH, fcr_fwd_cb, j);
	if (r == NULL)
		fcr_finish(j, j->name, false);
}

static enum chain_status
fcr_run(void *inst, struct chain_call *call, struct chain_verdict *v)
{
	const struct fcr *f = inst;
	struct chain_session *cs = chain_call_session(call);
	struct fcr_job *j = xcalloc(1, sizeof(*j));
	struct in_addr in4;
	struct in6_addr in6;
	struct evdns_request *r = NULL;

	j->call = call;
	j->dns = cs->loop->dns;
	j->fail_v = f->require ? &f->v : NULL;
	util_strlcpy(j->ip, cs->ip, sizeof(j->ip));
	if (inet_pton(AF_INET, cs->ip, &in4) == 1)
		r = evdns_base_resolve_reverse(j->dns, &in4,
		    DNS_QUERY_NO_SEARCH, fcr_ptr_cb, j);
	else if (inet_pton(AF_INET6, cs->ip, &in6) == 1) {
		j->v6 = true;
		r = evdns_base_resolve_reverse_ipv6(j->dns, &in6,
		    DNS_QUERY_NO_SEARCH, fcr_ptr_cb, j);
	}
	if (r == NULL) {
		free(j);
		chain_verdict_fail(v, "cannot start the PTR look-up");
		return CHAIN_DONE;
	}
	return CHAIN_PENDING;
}

const struct chain_handler_ops chain_dns_ops[] = {
	{ "dnsbl", CHAIN_STAGES_ALL & ~CHAIN_STAGE_BIT(SMTP_STAGE_DISCONNECT),
	    dnsl_new, free, dnsl_run, NULL, NULL },
	{ "rhsbl", CHAIN_STAGE_BIT(SMTP_STAGE_HELO) |
	    CHAIN_STAGE_BIT(SMTP_STAGE_MAIL) | CHAIN_STAGE_BIT(SMTP_STAGE_RCPT) |
	    CHAIN_STAGE_BIT(SMTP_STAGE_DATA), dnsl_new, free, dnsl_run, NULL,
	    NULL },
	{ "fcrdns", CHAIN_STAGES_ALL & ~CHAIN_STAGE_BIT(SMTP_STAGE_DISCONNECT),
	    fcr_new, free, fcr_run, NULL, NULL },
	{ NULL, 0, NULL, NULL, NULL, NULL, NULL },
};
