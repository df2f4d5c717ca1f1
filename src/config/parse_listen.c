/*
 * config/parse_listen.c: the listeners and TLS: "listen ADDR:PORT
 * [OPTIONS]", "tls ..." and the checks that tie them to the rest of the
 * file (auth needs a table, TLS needs a certificate).  Addresses are only
 * checked for form; net/ binds them.
 */
#include "config/config.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_private.h"
#include "util/util.h"

int
cfg_parse_hostport(const char *s, char **addr_out, int *port_out,
    const char **why)
{
	char host[INET6_ADDRSTRLEN + 2], norm[INET6_ADDRSTRLEN];
	unsigned char bin[sizeof(struct in6_addr)];
	const char *colon, *end;
	int af = AF_INET;

	*why = "is not ADDR:PORT with a numeric address (like "
	    "127.0.0.1:2525 or [::1]:2525)";
	if (s[0] == '[') {
		if ((end = strchr(s, ']')) == NULL || end[1] != ':')
			return -1;
		colon = end + 1;
		s++;
		af = AF_INET6;
	} else {
		if ((colon = strchr(s, ':')) == NULL)
			return -1;
		if (strchr(colon + 1, ':') != NULL) {
			*why = "has an IPv6 address without brackets (write "
			    "[::1]:2525)";
			return -1;
		}
		end = colon;
	}
	if ((size_t)(end - s) >= sizeof(host))
		return -1;
	memcpy(host, s, (size_t)(end - s));
	host[end - s] = '\0';
	if (inet_pton(af, host, bin) != 1)
		return -1;
	if (inet_ntop(af, bin, norm, sizeof(norm)) == NULL)
		return -1;

	const char *ps = colon + 1;
	long port = 0;
	if (*ps == '\0' || strlen(ps) > 5)
		goto badport;
	for (; *ps != '\0'; ps++) {
		if (*ps < '0' || *ps > '9')
			goto badport;
		port = port * 10 + (*ps - '0');
	}
	if (port < 1 || port > 65535)
		goto badport;
	*addr_out = xstrdup(norm);
	*port_out = (int)port;
	return 0;
badport:
	*why = "has a bad port (1..65535)";
	return -1;
}

bool
cfg_resolver_ok(const char *s)
{
	const char *colon = strchr(s, ':');
	char *full, *addr = NULL;
	const char *why;
	int port;

	if (s[0] == '[')	/* the port is optional */
		full = xasprintf(s[strlen(s) - 1] == ']' ? "%s:53" : "%s", s);
	else if (colon == NULL)
		full = xasprintf("%s:53", s);
	else if (strchr(colon + 1, ':') != NULL)	/* bare IPv6 */
		full = xasprintf("[%s]:53", s);
	else
		full = xstrdup(s);
	int rc = cfg_parse_hostport(full, &addr, &port, &why);
	free(full);
	free(addr);
	return rc == 0;
}

/* ::ffff:a.b.c.d (addr as cfg_parse_hostport normalised it). */
static bool
cfg_is_v4mapped(const char *addr)
{
	struct in6_addr a6;

	return inet_pton(AF_INET6, addr, &a6) == 1 &&
	    IN6_IS_ADDR_V4MAPPED(&a6);
}

/*
 * "cert "C" key "K" [name N]" starting at toks[*ip]; appends to *certs.
 * Returns false (after an error) when the words do not fit.
 */
static bool
cfg_parse_cert(struct cfg_parser *p, const struct cfg_line *ln, size_t *ip,
    struct config_tls_cert **certs, size_t *ncerts, const char *usage)
{
	size_t i = *ip;
	struct config_tls_cert tc = { .line = ln->lineno };

	if (i + 3 >= ln->ntoks + 0 || strcmp(ln->toks[i].text, "cert") != 0 ||
	    strcmp(ln->toks[i + 2].text, "key") != 0 ||
	    ln->toks[i + 1].text[0] == '\0' || ln->toks[i + 3].text[0] == '\0') {
		cfg_err(p, ln->lineno, "usage: %s", usage);
		return false;
	}
	tc.cert = xstrdup(ln->toks[i + 1].text);
	tc.key = xstrdup(ln->toks[i + 3].text);
	i += 4;
	if (i + 1 < ln->ntoks && strcmp(ln->toks[i].text, "name") == 0) {
		tc.name = util_strlower(xstrdup(ln->toks[i + 1].text));
		i += 2;
	}
	*certs = xreallocarray(*certs, *ncerts + 1, sizeof(**certs));
	(*certs)[(*ncerts)++] = tc;
	*ip = i;
	return true;
}

static void
cfg_certs_free(struct config_tls_cert *certs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(certs[i].cert);
		free(certs[i].key);
		free(certs[i].name);
	}
	free(certs);
}

#define CFG_LISTEN_USAGE "listen ADDR:PORT [tls] [no-starttls] " \
	"[require-tls] [nomail [after-data]] [auth|auth-plaintext] " \
	"[sender-auth] [proxy-protocol [from CIDR...]] " \
	"[cert \"CERT\" key \"KEY\" [name NAME]]... [proxy NAME|URL " \
	"[proxy-sni <TABLE>] [proxy-rcpt <TABLE>]]"

/*
 * "proxy-protocol [from CIDR...]" at toks[*ip]: the networks run to the
 * next word that is not one.  False after an error.  (cfg_nargs made
 * sure every token of a listen line is a word.)
 */
static bool
cfg_parse_proxy(struct cfg_parser *p, const struct cfg_line *ln, size_t *ip,
    struct config_listen *l)
{
	size_t i = *ip + 1;
	struct util_cidr net;

	l->proxy_protocol = true;
	if (i < ln->ntoks && strcmp(ln->toks[i].text, "from") == 0) {
		for (i++; i < ln->ntoks && util_cidr_parse(ln->toks[i].text,
		    &net) == 0; i++) {
			l->proxy_from = xreallocarray(l->proxy_from,
			    l->nproxy_from + 1, sizeof(*l->proxy_from));
			l->proxy_from[l->nproxy_from++] = net;
		}
		if (l->nproxy_from == 0) {
			cfg_err(p, ln->lineno, "listen: proxy-protocol from: "
			    "%s is not a network (like 10.0.0.0/8 or "
			    "2001:db8::/32)", i < ln->ntoks ?
			    cfg_q(ln->toks[i].text) : "nothing");
			return false;
		}
	}
	*ip = i;
	return true;
}

/* The listener options that may be given once (nomail: with after-data). */
enum { CFG_LF_AUTH = 4, CFG_LF_AUTH_PLAINTEXT = 5 };
static const char *const cfg_listen_flags[] = { "tls", "no-starttls",
	"require-tls", "nomail", "auth", "auth-plaintext", "sender-auth",
	"proxy-protocol", NULL };

/* toks[i] given twice, or auth with auth-plaintext: false after reporting. */
static bool
cfg_listen_flag_once(struct cfg_parser *p, const struct cfg_line *ln,
    size_t i, unsigned *seen)
{
	if (!cfg_opt_once(p, ln, "listen", cfg_listen_flags, ln->toks[i].text,
	    seen))
		return false;
	if ((*seen & (1u << CFG_LF_AUTH)) &&
	    (*seen & (1u << CFG_LF_AUTH_PLAINTEXT))) {
		cfg_err(p, ln->lineno, "listen: auth and auth-plaintext: give "
		    "one (auth-plaintext offers AUTH before TLS too)");
		return false;
	}
	return true;
}

void
cfg_st_listen(struct cfg_parser *p, const struct cfg_line *ln)
{
	struct config *c = p->c;
	struct config_listen l = { .line = ln->lineno };
	const char *why;
	unsigned seen = 0;
	int rc;

	if (!cfg_nargs(p, ln, 1, SIZE_MAX, CFG_LISTEN_USAGE))
		return;		/* words only, at least the address */
	if (cfg_parse_hostport(ln->toks[1].text, &l.addr, &l.port,
	    &why) == -1) {
		cfg_err(p, ln->lineno, "listen: %s %s",
		    cfg_q(ln->toks[1].text), why);
		return;
	}
	if (cfg_is_v4mapped(l.addr)) {
		/* net/ makes its IPv6 sockets IPv6-only (IPv4 goes to IPv4
		 * sockets), and such a socket cannot bind ::ffff:a.b.c.d. */
		cfg_err(p, ln->lineno, "listen: %s is an IPv4-mapped IPv6 "
		    "address, which postern's IPv6-only sockets cannot bind: "
		    "write the IPv4 address (%s:%d)", cfg_q(ln->toks[1].text),
		    l.addr + strlen("::ffff:"), l.port);
		goto fail;
	}
	for (size_t i = 2; i < ln->ntoks; ) {
		const char *w = ln->toks[i].text;
		if (!cfg_listen_flag_once(p, ln, i, &seen))
			goto fail;
		if (strcmp(w, "tls") == 0)
			l.implicit_tls = true;
		else if (strcmp(w, "no-starttls") == 0)
			l.no_starttls = true;
		else if (strcmp(w, "require-tls") == 0)
			l.require_tls = true;
		else if (strcmp(w, "nomail") == 0) {
			l.nomail = true;
			if (i + 1 < ln->ntoks &&
			    strcmp(ln->toks[i + 1].text, "after-data") == 0) {
				l.nomail_after_data = true;
				i++;
			}
		}
		else if (strcmp(w, "auth") == 0)
			l.auth = true;
		else if (strcmp(w, "auth-plaintext") == 0)
			l.auth = l.auth_plaintext = true;
		else if (strcmp(w, "sender-auth") == 0)
			l.sender_auth = true;
		else if (strcmp(w, "proxy-protocol") == 0) {
			if (!cfg_parse_proxy(p, ln, &i, &l))
				goto fail;
			continue;
		} else if (strcmp(w, "cert") == 0) {
			if (!cfg_parse_cert(p, ln, &i, &l.certs, &l.ncerts,
			    CFG_LISTEN_USAGE))
				goto fail;
			continue;
		} else if ((rc = cfg_listen_proxy_opt(p, ln, &i, &l)) != 0) {
			if (rc == -1)
				goto fail;
			continue;
		} else {
			cfg_err(p, ln->lineno, "listen: unknown option %s "
			    "(usage: %s)", cfg_q(w), CFG_LISTEN_USAGE);
			goto fail;
		}
		i++;
	}
	if (l.require_tls && (l.no_starttls || l.implicit_tls)) {
		cfg_err(p, ln->lineno, "listen: require-tls needs STARTTLS "
		    "(not with tls or no-starttls)");
		goto fail;
	}
	/* require-tls refuses AUTH before TLS; auth-plaintext offers it. */
	if (l.require_tls && l.auth_plaintext) {
		cfg_err(p, ln->lineno, "listen: require-tls and auth-plaintext: "
		    "give one (require-tls refuses AUTH before STARTTLS; use "
		    "auth)");
		goto fail;
	}
	/* AUTH waits for TLS, which nothing could start here. */
	if (l.auth && !l.auth_plaintext && l.no_starttls && !l.implicit_tls) {
		cfg_err(p, ln->lineno, "listen: auth needs TLS, which "
		    "no-starttls leaves out (add tls, or give auth-plaintext "
		    "to offer AUTH in clear)");
		goto fail;
	}
	for (size_t i = 0; i < c->nlistens; i++)
		if (strcmp(c->listens[i].addr, l.addr) == 0 &&
		    c->listens[i].port == l.port) {
			cfg_err(p, ln->lineno, "duplicate listen %s (first at "
			    "line %d)", cfg_q(ln->toks[1].text),
			    c->listens[i].line);
			goto fail;
		}
	c->listens = xreallocarray(c->listens, c->nlistens + 1,
	    sizeof(*c->listens));
	c->listens[c->nlistens++] = l;
	return;
fail:
	free(l.addr);
	free(l.proxy_from);
	cfg_certs_free(l.certs, l.ncerts);
}

#define CFG_TLS_USAGE "tls cert \"CERT\" key \"KEY\" [name NAME] | " \
	"tls self-signed DIR | tls min-version TLSv1.2|TLSv1.3 | " \
	"tls ciphers \"LIST\" | tls ciphersuites \"LIST\" | " \
	"tls session-lifetime DURATION|off"

/* "tls session-lifetime 2h" (1s..12h) or "off" (0). */
static void
cfg_tls_lifetime(struct cfg_parser *p, const struct cfg_line *ln)
{
	struct config *c = p->c;
	const char *s = ln->toks[2].text;
	uint64_t ms;

	if (strcmp(s, "off") == 0) {
		c->tls_session_lifetime_s = 0;
		return;
	}
	if (util_parse_duration_ms(s, &ms) == -1 || ms < 1000 ||
	    ms > 12 * 3600 * 1000ULL || ms % 1000 != 0) {
		cfg_err(p, ln->lineno, "tls session-lifetime: %s is not off or "
		    "a duration in whole seconds (1s..12h)", cfg_q(s));
		return;
	}
	c->tls_session_lifetime_s = (unsigned)(ms / 1000);
}

void
cfg_st_tls(struct cfg_parser *p, const struct cfg_line *ln)
{
	struct config *c = p->c;
	const char *what = ln->ntoks > 1 ? ln->toks[1].text : NULL;
	char **dst = NULL;
	int *seen = NULL;

	if (!cfg_nargs(p, ln, 1, SIZE_MAX, CFG_TLS_USAGE))
		return;		/* words only */
	if (strcmp(what, "cert") == 0) {
		size_t i = 1;
		if (cfg_parse_cert(p, ln, &i, &c->tls_certs, &c->ntls_certs,
		    CFG_TLS_USAGE) && i != ln->ntoks)
			cfg_err(p, ln->lineno, "tls cert: unexpected %s",
			    cfg_q(ln->toks[i].text));
		return;
	}
	if (strcmp(what, "self-signed") == 0) {
		dst = &c->tls_selfsigned_dir;
		seen = &p->seen_tls_selfsigned;
	} else if (strcmp(what, "min-version") == 0) {
		dst = &c->tls_min_version;
		seen = &p->seen_tls_minver;
	} else if (strcmp(what, "ciphers") == 0) {
		dst = &c->tls_ciphers;
		seen = &p->seen_tls_ciphers;
	} else if (strcmp(what, "ciphersuites") == 0) {
		dst = &c->tls_ciphersuites;
		seen = &p->seen_tls_suites;
	} else if (strcmp(what, "session-lifetime") == 0) {
		seen = &p->seen_tls_lifetime;
	} else {
		cfg_err(p, ln->lineno, "tls: unknown setting %s (usage: %s)",
		    cfg_q(what), CFG_TLS_USAGE);
		return;
	}
	if (ln->ntoks != 3 || ln->toks[2].text[0] == '\0') {
		cfg_err(p, ln->lineno, "tls %s: needs one value", what);
		return;
	}
	char once[48];
	(void)util_snprintf(once, sizeof(once), "tls %s", what);
	if (!cfg_once(p, ln, seen, once))
		return;
	if (dst == NULL) {
		cfg_tls_lifetime(p, ln);
		return;
	}
	if (dst == &c->tls_min_version &&
	    strcmp(ln->toks[2].text, "TLSv1.2") != 0 &&
	    strcmp(ln->toks[2].text, "TLSv1.3") != 0) {
		cfg_err(p, ln->lineno, "tls min-version: %s is not TLSv1.2 or "
		    "TLSv1.3", cfg_q(ln->toks[2].text));
		return;
	}
	*dst = xstrdup(ln->toks[2].text);
}

#define CFG_CERT_HOW	"a \"tls cert\" or \"tls self-signed\" statement, " \
	"or cert/key on the listener"

/* Listeners that need what another statement provides. */
void
cfg_listen_check(struct cfg_parser *p, int last)
{
	struct config *c = p->c;

	if (c->nlistens == 0 && cfg_defined_in(p, "listen", NULL, 0,
	    p->nlines) == 0)
		cfg_err(p, last, "no listen statement (add one, like "
		    "\"listen 127.0.0.1:2525\")");
	for (size_t i = 0; i < c->nlistens; i++) {
		const struct config_listen *l = &c->listens[i];
		bool has_cert = l->ncerts > 0 || config_has_tls(c);
		/* On a proxy listener, AUTH is the upstream's to check. */
		if (l->auth && c->nauths == 0 && l->proxy == NULL)
			cfg_err(p, l->line, "listen: auth needs an \"auth "
			    "<TABLE>\" or \"auth pam\" statement");
		cfg_proxy_check(p, l, has_cert);
		if (has_cert)
			continue;
		if (l->implicit_tls || l->require_tls)
			cfg_err(p, l->line, "listen: %s needs a certificate "
			    "(%s)", l->implicit_tls ? "tls" : "require-tls",
			    CFG_CERT_HOW);
		else if (l->auth && !l->auth_plaintext)	/* AUTH waits for TLS */
			cfg_err(p, l->line, "listen: auth needs a certificate "
			    "(%s), or auth-plaintext to offer AUTH in clear",
			    CFG_CERT_HOW);
	}
}

void
cfg_listen_free(struct config *c)
{
	for (size_t i = 0; i < c->nlistens; i++) {
		free(c->listens[i].addr);
		free(c->listens[i].proxy_from);
		cfg_certs_free(c->listens[i].certs, c->listens[i].ncerts);
	}
	free(c->listens);
	cfg_certs_free(c->tls_certs, c->ntls_certs);
	free(c->tls_selfsigned_dir);
	free(c->tls_min_version);
	free(c->tls_ciphers);
	free(c->tls_ciphersuites);
}
