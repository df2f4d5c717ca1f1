/*
 * config/parse.c: statements of postern.conf into struct config.  Every
 * error is collected as "FILE:LINE: message" so one run reports them all.
 * Knows nothing of sockets or SMTP: addresses are only checked for form.
 */
#include "config/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config_private.h"
#include "log/log.h"
#include "util/util.h"

struct cfg_parser {
	const char		*name;		/* borrowed: file name for messages */
	struct config		*c;
	struct cfg_line		*lines;		/* owned */
	size_t			 nlines;
	size_t			 cur;		/* index into lines */
	struct util_buf		 errs;
	/* Line of the first statement of each kind, 0 when not seen yet. */
	int			 seen_hostname, seen_spool, seen_greeting;
	int			 seen_log_dest, seen_log_level, seen_translog;
	int			 seen_user, seen_group, seen_workers, seen_auth;
	int			 seen_tls_selfsigned, seen_tls_minver;
	int			 seen_tls_ciphers, seen_tls_suites;
	int			 seen_conn_rate;
	int			 seen_limit[16];
};

/* util_buf_cstr() can write one past cap when len == cap; dodge it. */
static char *
cfg_cstr(struct util_buf *b)
{
	util_buf_add(b, "", 1);
	b->len--;
	return b->data;
}

void
cfg_err(struct cfg_parser *p, int line, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) == -1)
		fatal("vasprintf: out of memory");
	va_end(ap);
	util_buf_printf(&p->errs, "%s:%d: %s\n", p->name, line, msg);
	free(msg);
}

/* Quote user text for a message; the result lives until the next call. */
const char *
cfg_q(const char *s)
{
	static __thread char *last;

	free(last);
	last = cfg_quote(s);
	return last;
}

/*
 * Check that a statement has between min and max argument words (max < 0:
 * no limit) and no list punctuation; report otherwise.
 */
bool
cfg_nargs(struct cfg_parser *p, const struct cfg_line *ln, size_t min,
    size_t max, const char *usage)
{
	size_t n = ln->ntoks - 1;

	for (size_t i = 1; i < ln->ntoks; i++)
		if (ln->toks[i].kind != CFG_TOK_WORD) {
			cfg_err(p, ln->lineno, "%s: unexpected '%c' (usage: "
			    "%s)", ln->toks[0].text,
			    ln->toks[i].kind == CFG_TOK_LBRACE ? '{' :
			    ln->toks[i].kind == CFG_TOK_RBRACE ? '}' : ',',
			    usage);
			return false;
		}
	if (n < min) {
		cfg_err(p, ln->lineno, "%s: missing argument (usage: %s)",
		    ln->toks[0].text, usage);
		return false;
	}
	if (n > max) {
		cfg_err(p, ln->lineno, "%s: too many arguments (usage: %s)",
		    ln->toks[0].text, usage);
		return false;
	}
	return true;
}

/* Report a second statement of a kind that may appear once. */
static bool
cfg_once(struct cfg_parser *p, const struct cfg_line *ln, int *seen,
    const char *what)
{
	if (*seen != 0) {
		cfg_err(p, ln->lineno, "duplicate %s (first at line %d)",
		    what, *seen);
		return false;
	}
	*seen = ln->lineno;
	return true;
}

/* 1..max octets of letters, digits, '-', '.' and '_'. */
static bool
cfg_is_word(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n > max)
		return false;
	for (; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || *s == '-' || *s == '.' ||
		    *s == '_'))
			return false;
	return true;
}

static bool
cfg_is_hostname(const char *s)
{
	return cfg_is_word(s, 253);
}

/* Names of tables, actions and accounts. */
bool
cfg_is_name(const char *s)
{
	return cfg_is_word(s, 64);
}

static void
cfg_st_hostname(struct cfg_parser *p, const struct cfg_line *ln)
{
	if (!cfg_nargs(p, ln, 1, 1, "hostname NAME"))
		return;
	if (!cfg_once(p, ln, &p->seen_hostname, "hostname"))
		return;
	if (!cfg_is_hostname(ln->toks[1].text)) {
		cfg_err(p, ln->lineno, "hostname: %s is not a host name "
		    "(letters, digits, '-', '.')", cfg_q(ln->toks[1].text));
		return;
	}
	free(p->c->hostname);
	p->c->hostname = xstrdup(ln->toks[1].text);
}

static void
cfg_st_path(struct cfg_parser *p, const struct cfg_line *ln, int *seen,
    char **dst, const char *usage)
{
	if (!cfg_nargs(p, ln, 1, 1, usage))
		return;
	if (!cfg_once(p, ln, seen, ln->toks[0].text))
		return;
	if (ln->toks[1].text[0] == '\0') {
		cfg_err(p, ln->lineno, "%s: empty path", ln->toks[0].text);
		return;
	}
	free(*dst);
	*dst = xstrdup(ln->toks[1].text);
}

static void
cfg_st_spool(struct cfg_parser *p, const struct cfg_line *ln)
{
	cfg_st_path(p, ln, &p->seen_spool, &p->c->spool, "spool PATH");
}

static void
cfg_st_translog(struct cfg_parser *p, const struct cfg_line *ln)
{
	cfg_st_path(p, ln, &p->seen_translog, &p->c->translog_dir,
	    "transaction-log DIR");
}

/* "user NAME" / "group NAME": whom to run as after binding (as root). */
static void
cfg_st_account(struct cfg_parser *p, const struct cfg_line *ln)
{
	bool is_user = strcmp(ln->toks[0].text, "user") == 0;
	char **dst = is_user ? &p->c->user : &p->c->group;

	if (!cfg_nargs(p, ln, 1, 1, is_user ? "user NAME" : "group NAME"))
		return;
	if (!cfg_once(p, ln, is_user ? &p->seen_user : &p->seen_group,
	    ln->toks[0].text))
		return;
	if (!cfg_is_name(ln->toks[1].text)) {
		cfg_err(p, ln->lineno, "%s: %s is not a valid name",
		    ln->toks[0].text, cfg_q(ln->toks[1].text));
		return;
	}
	free(*dst);
	*dst = xstrdup(ln->toks[1].text);
}

/* "auth <TABLE>": the users and their crypt(3) password hashes. */
static void
cfg_st_auth(struct cfg_parser *p, const struct cfg_line *ln)
{
	const char *w;
	size_t wl;

	if (!cfg_nargs(p, ln, 1, 1, "auth <TABLE>"))
		return;
	if (!cfg_once(p, ln, &p->seen_auth, "auth"))
		return;
	w = ln->toks[1].text;
	wl = strlen(w);
	if (wl < 3 || w[0] != '<' || w[wl - 1] != '>') {
		cfg_err(p, ln->lineno, "auth: expected a table name in <>, "
		    "like <users>");
		return;
	}
	char *name = xstrndup(w + 1, wl - 2);
	p->c->auth_table = config_table_find(p->c, name);
	if (p->c->auth_table == NULL)
		cfg_err(p, ln->lineno, "auth: table %s is not defined (define "
		    "it with \"table\" before use)", cfg_q(name));
	free(name);
}

/* "workers N [pack|spread]": event loops, one per core by default. */
static void
cfg_st_workers(struct cfg_parser *p, const struct cfg_line *ln)
{
	uint64_t n;

	if (!cfg_nargs(p, ln, 1, 2, "workers N [pack|spread]"))
		return;
	if (!cfg_once(p, ln, &p->seen_workers, "workers"))
		return;
	if (util_parse_size(ln->toks[1].text, &n) == -1 ||
	    strspn(ln->toks[1].text, "0123456789") != strlen(ln->toks[1].text)
	    || n < 1 || n > 256) {
		cfg_err(p, ln->lineno, "workers: %s is not a number in 1..256",
		    cfg_q(ln->toks[1].text));
		return;
	}
	p->c->workers = (unsigned)n;
	if (ln->ntoks == 3) {
		const char *how = ln->toks[2].text;
		if (strcmp(how, "spread") != 0 && strcmp(how, "pack") != 0)
			cfg_err(p, ln->lineno, "workers: %s is not pack or "
			    "spread", cfg_q(how));
		p->c->workers_spread = strcmp(how, "spread") == 0;
	}
}

static void
cfg_st_greeting(struct cfg_parser *p, const struct cfg_line *ln)
{
	if (!cfg_nargs(p, ln, 1, 1, "greeting \"TEXT\""))
		return;
	if (!cfg_once(p, ln, &p->seen_greeting, "greeting"))
		return;
	/* It goes on the wire after "220 ": RFC 5321 4.2 textstring. */
	const char *s = ln->toks[1].text;
	if (strlen(s) > 200) {
		cfg_err(p, ln->lineno, "greeting: longer than 200 bytes");
		return;
	}
	for (const char *q = s; *q != '\0'; q++)
		if ((unsigned char)*q < 0x20 || (unsigned char)*q > 0x7e) {
			cfg_err(p, ln->lineno, "greeting: only printable "
			    "ASCII is allowed");
			return;
		}
	free(p->c->greeting);
	p->c->greeting = xstrdup(s);
}

/* "127.0.0.1:25" or "[::1]:25" into a normalised numeric address and port. */
static int
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
	"[require-tls] [nomail] [auth|auth-plaintext] " \
	"[cert \"CERT\" key \"KEY\" [name NAME]]..."

static void
cfg_st_listen(struct cfg_parser *p, const struct cfg_line *ln)
{
	struct config *c = p->c;
	struct config_listen l = { .line = ln->lineno };
	const char *why;

	if (!cfg_nargs(p, ln, 1, SIZE_MAX, CFG_LISTEN_USAGE))
		return;		/* words only, at least the address */
	if (cfg_parse_hostport(ln->toks[1].text, &l.addr, &l.port,
	    &why) == -1) {
		cfg_err(p, ln->lineno, "listen: %s %s",
		    cfg_q(ln->toks[1].text), why);
		return;
	}
	for (size_t i = 2; i < ln->ntoks; ) {
		const char *w = ln->toks[i].text;
		if (w != NULL && strcmp(w, "tls") == 0)
			l.implicit_tls = true;
		else if (w != NULL && strcmp(w, "no-starttls") == 0)
			l.no_starttls = true;
		else if (w != NULL && strcmp(w, "require-tls") == 0)
			l.require_tls = true;
		else if (w != NULL && strcmp(w, "nomail") == 0)
			l.nomail = true;
		else if (w != NULL && strcmp(w, "auth") == 0)
			l.auth = true;
		else if (w != NULL && strcmp(w, "auth-plaintext") == 0)
			l.auth = l.auth_plaintext = true;
		else if (w != NULL && strcmp(w, "cert") == 0) {
			if (!cfg_parse_cert(p, ln, &i, &l.certs, &l.ncerts,
			    CFG_LISTEN_USAGE))
				goto fail;
			continue;
		} else {
			cfg_err(p, ln->lineno, "listen: unknown option %s "
			    "(usage: %s)", cfg_q(w != NULL ? w : ","),
			    CFG_LISTEN_USAGE);
			goto fail;
		}
		i++;
	}
	if (l.require_tls && (l.no_starttls || l.implicit_tls)) {
		cfg_err(p, ln->lineno, "listen: require-tls needs STARTTLS "
		    "(not with tls or no-starttls)");
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
	cfg_certs_free(l.certs, l.ncerts);
}

#define CFG_TLS_USAGE "tls cert \"CERT\" key \"KEY\" [name NAME] | " \
	"tls self-signed DIR | tls min-version TLSv1.2|TLSv1.3 | " \
	"tls ciphers \"LIST\" | tls ciphersuites \"LIST\""

static void
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
	if (dst == &c->tls_min_version &&
	    strcmp(ln->toks[2].text, "TLSv1.2") != 0 &&
	    strcmp(ln->toks[2].text, "TLSv1.3") != 0) {
		cfg_err(p, ln->lineno, "tls min-version: %s is not TLSv1.2 or "
		    "TLSv1.3", cfg_q(ln->toks[2].text));
		return;
	}
	*dst = xstrdup(ln->toks[2].text);
}

static void
cfg_st_log(struct cfg_parser *p, const struct cfg_line *ln)
{
	static const char *const facilities[] = { "mail", "daemon", "user",
	    "local0", "local1", "local2", "local3", "local4", "local5",
	    "local6", "local7", NULL };
	static const char *const levels[] = { "error", "warn", "info",
	    "debug", NULL };
	const char *usage = "log stderr | log syslog [FACILITY] | "
	    "log level error|warn|info|debug";

	if (!cfg_nargs(p, ln, 1, 2, usage))
		return;
	const char *what = ln->toks[1].text;
	if (strcmp(what, "stderr") == 0) {
		if (!cfg_nargs(p, ln, 1, 1, usage) ||
		    !cfg_once(p, ln, &p->seen_log_dest, "log destination"))
			return;
		p->c->log_syslog = false;
	} else if (strcmp(what, "syslog") == 0) {
		if (!cfg_once(p, ln, &p->seen_log_dest, "log destination"))
			return;
		if (ln->ntoks == 3) {
			size_t i;
			for (i = 0; facilities[i] != NULL; i++)
				if (strcmp(ln->toks[2].text, facilities[i]) == 0)
					break;
			if (facilities[i] == NULL) {
				cfg_err(p, ln->lineno, "log syslog: unknown "
				    "facility %s (mail, daemon, user, "
				    "local0..local7)", cfg_q(ln->toks[2].text));
				return;
			}
			free(p->c->log_facility);
			p->c->log_facility = xstrdup(facilities[i]);
		}
		p->c->log_syslog = true;
	} else if (strcmp(what, "level") == 0) {
		if (!cfg_nargs(p, ln, 2, 2, usage) ||
		    !cfg_once(p, ln, &p->seen_log_level, "log level"))
			return;
		for (int i = 0; levels[i] != NULL; i++)
			if (strcmp(ln->toks[2].text, levels[i]) == 0) {
				p->c->log_level = i;
				return;
			}
		cfg_err(p, ln->lineno, "log level: unknown level %s (error, "
		    "warn, info, debug)", cfg_q(ln->toks[2].text));
	} else {
		cfg_err(p, ln->lineno, "log: unknown setting %s (usage: %s)",
		    cfg_q(what), usage);
	}
}

enum cfg_limit_kind { CFG_LIM_SIZE, CFG_LIM_COUNT, CFG_LIM_DURATION };

static const struct cfg_limit {
	const char		*name;
	enum cfg_limit_kind	 kind;
	uint64_t		 min, max, def;
	const char		*range;		/* for messages */
	size_t			 off;		/* into struct config_limits */
	size_t			 width;		/* sizeof the field */
} cfg_limits[] = {
#define L(f)	offsetof(struct config_limits, f), \
	sizeof(((struct config_limits *)NULL)->f)
	{ "message-size", CFG_LIM_SIZE, 1024, 2ULL << 30, 35ULL << 20,
	    "1k..2G", L(msg_max) },
	{ "recipients", CFG_LIM_COUNT, 1, 100000, 100, "1..100000",
	    L(rcpt_max) },
	{ "line-length", CFG_LIM_COUNT, 512, 65536, 1000, "512..65536",
	    L(line_max) },
	{ "errors", CFG_LIM_COUNT, 1, 1000, 10, "1..1000", L(err_max) },
	/* RFC 5321 4.5.3.2.7: the server should wait at least 5 minutes. */
	{ "idle-timeout", CFG_LIM_DURATION, 1000, 3600000, 300000, "1s..1h",
	    L(idle_ms) },
	{ "data-timeout", CFG_LIM_DURATION, 1000, 3600000, 600000, "1s..1h",
	    L(data_idle_ms) },
	{ "session-timeout", CFG_LIM_DURATION, 1000, 86400000, 1800000,
	    "1s..24h", L(session_ms) },
	{ "connections", CFG_LIM_COUNT, 1, 1000000, 1000, "1..1000000",
	    L(conn_max) },
	{ "connections-per-ip", CFG_LIM_COUNT, 1, 1000000, 50,
	    "1..1000000", L(conn_per_ip_max) },
	{ "shutdown-grace", CFG_LIM_DURATION, 0, 3600000, 30000, "0..1h",
	    L(shutdown_ms) },
	{ "messages-per-session", CFG_LIM_COUNT, 1, 1000000, 1000,
	    "1..1000000", L(msgs_per_session_max) },
	{ "recipients-per-session", CFG_LIM_COUNT, 1, 1000000, 1000,
	    "1..1000000", L(rcpts_per_session_max) },
	/* Off by default: a pause before the banner delays every client. */
	{ "greeting-delay", CFG_LIM_DURATION, 0, 60000, 0, "0..60s",
	    L(greeting_delay_ms) },
#undef L
};
#define CFG_NLIMITS	(sizeof(cfg_limits) / sizeof(cfg_limits[0]))

static void
cfg_limit_set(struct config_limits *lim, const struct cfg_limit *l,
    uint64_t v)
{
	char *f = (char *)lim + l->off;

	switch (l->width) {
	case sizeof(uint32_t): {
		uint32_t u = (uint32_t)v;
		memcpy(f, &u, sizeof(u));
		break;
	}
	case sizeof(uint64_t): {
		uint64_t u = v;
		memcpy(f, &u, sizeof(u));
		break;
	}
	default:
		ASSERT(!"limit field width");
	}
}

/* "limit connection-rate N/PERIOD" (e.g. 20/120s), or "off". */
static void
cfg_limit_rate(struct cfg_parser *p, const struct cfg_line *ln)
{
	const char *s = ln->toks[2].text, *slash = strchr(s, '/');
	uint64_t n, ms;
	char num[24];

	if (!cfg_once(p, ln, &p->seen_conn_rate, "limit connection-rate"))
		return;
	if (strcmp(s, "off") == 0) {
		p->c->limits.conn_rate_max = 0;
		return;
	}
	if (slash == NULL || (size_t)(slash - s) >= sizeof(num) ||
	    slash == s)
		goto bad;
	memcpy(num, s, (size_t)(slash - s));
	num[slash - s] = '\0';
	if (num[strspn(num, "0123456789")] != '\0' ||
	    util_parse_size(num, &n) == -1 || n < 1 || n > 1000000 ||
	    util_parse_duration_ms(slash + 1, &ms) == -1 || ms < 1000 ||
	    ms > 86400000)
		goto bad;
	p->c->limits.conn_rate_max = (unsigned)n;
	p->c->limits.conn_rate_window_ms = ms;
	return;
bad:
	cfg_err(p, ln->lineno, "limit connection-rate: bad value %s (N/PERIOD "
	    "like 20/120s: N in 1..1000000, PERIOD in 1s..1d; or off)",
	    cfg_q(s));
}

static void
cfg_st_limit(struct cfg_parser *p, const struct cfg_line *ln)
{
	const struct cfg_limit *l = NULL;
	size_t i;
	uint64_t v;
	int rc;

	if (!cfg_nargs(p, ln, 2, 2, "limit NAME VALUE"))
		return;
	if (strcmp(ln->toks[1].text, "connection-rate") == 0) {
		cfg_limit_rate(p, ln);
		return;
	}
	for (i = 0; i < CFG_NLIMITS; i++)
		if (strcmp(ln->toks[1].text, cfg_limits[i].name) == 0) {
			l = &cfg_limits[i];
			break;
		}
	if (l == NULL) {
		cfg_err(p, ln->lineno, "limit: unknown limit %s (message-size, "
		    "recipients, line-length, errors, idle-timeout, "
		    "data-timeout, session-timeout, connections, "
		    "connections-per-ip, connection-rate, shutdown-grace, "
		    "messages-per-session, recipients-per-session, "
		    "greeting-delay)",
		    cfg_q(ln->toks[1].text));
		return;
	}
	char what[64];
	(void)util_snprintf(what, sizeof(what), "limit %s", l->name);
	if (!cfg_once(p, ln, &p->seen_limit[i], what))
		return;
	const char *s = ln->toks[2].text;
	switch (l->kind) {
	case CFG_LIM_SIZE:
		rc = util_parse_size(s, &v);
		break;
	case CFG_LIM_DURATION:
		rc = util_parse_duration_ms(s, &v);
		break;
	default:
		rc = util_parse_size(s, &v);
		/* A plain count: digits only, no size suffix. */
		if (s[strspn(s, "0123456789")] != '\0')
			rc = -1;
		break;
	}
	if (rc == -1) {
		cfg_err(p, ln->lineno, "%s: bad value %s (%s, range %s)", what,
		    cfg_q(s), l->kind == CFG_LIM_SIZE ? "a size like 35M" :
		    l->kind == CFG_LIM_DURATION ? "a duration like 30s, 5m" :
		    "a number", l->range);
		return;
	}
	if (v < l->min || v > l->max) {
		cfg_err(p, ln->lineno, "%s: %s is out of range (%s)", what,
		    cfg_q(s), l->range);
		return;
	}
	cfg_limit_set(&p->c->limits, l, v);
}

/* Does a later line define a table/action with this name?  Its line or 0. */
static int
cfg_defined_later(const struct cfg_parser *p, const char *kw,
    const char *name)
{
	for (size_t i = p->cur + 1; i < p->nlines; i++) {
		const struct cfg_line *ln = &p->lines[i];
		if (ln->ntoks >= 2 && ln->toks[0].kind == CFG_TOK_WORD &&
		    ln->toks[1].kind == CFG_TOK_WORD &&
		    strcmp(ln->toks[0].text, kw) == 0 &&
		    strcmp(ln->toks[1].text, name) == 0)
			return ln->lineno;
	}
	return 0;
}

/* Parse "{ a, b, c }" from toks[i]; NULL-terminated owned keys or NULL. */
static char **
cfg_parse_list(struct cfg_parser *p, const struct cfg_line *ln, size_t i,
    const char *what)
{
	char **items = NULL;
	size_t n = 0;
	bool want_item = true;

	ASSERT(ln->toks[i].kind == CFG_TOK_LBRACE);
	for (i++; i < ln->ntoks; i++) {
		const struct cfg_tok *t = &ln->toks[i];
		if (t->kind == CFG_TOK_RBRACE)
			break;
		if (want_item && t->kind == CFG_TOK_WORD) {
			if (t->text[0] == '\0') {
				cfg_err(p, ln->lineno, "%s: empty key in list",
				    what);
				goto fail;
			}
			items = xreallocarray(items, n + 2, sizeof(*items));
			items[n++] = xstrdup(t->text);
			items[n] = NULL;
			want_item = false;
		} else if (!want_item && t->kind == CFG_TOK_COMMA) {
			want_item = true;
		} else {
			cfg_err(p, ln->lineno, "%s: expected %s in list", what,
			    want_item ? "a key" : "',' or '}'");
			goto fail;
		}
	}
	if (i >= ln->ntoks) {
		cfg_err(p, ln->lineno, "%s: missing '}' (a list must end on "
		    "the line where it starts)", what);
		goto fail;
	}
	if (i + 1 < ln->ntoks) {
		cfg_err(p, ln->lineno, "%s: unexpected text after '}'", what);
		goto fail;
	}
	if (n == 0) {
		cfg_err(p, ln->lineno, "%s: empty list", what);
		goto fail;
	}
	return items;
fail:
	for (size_t k = 0; k < n; k++)
		free(items[k]);
	free(items);
	return NULL;
}

static void
cfg_st_table(struct cfg_parser *p, const struct cfg_line *ln)
{
	const char *usage = "table NAME { key, ... } | table NAME file:PATH";
	struct config *c = p->c;
	struct config_table t = { 0 };

	if (ln->ntoks < 3) {
		cfg_err(p, ln->lineno, "table: missing argument (usage: %s)",
		    usage);
		return;
	}
	const char *name = ln->toks[1].text;
	if (ln->toks[1].kind != CFG_TOK_WORD || !cfg_is_name(name)) {
		cfg_err(p, ln->lineno, "table: bad name (letters, digits, "
		    "'_', '-', '.'; usage: %s)", usage);
		return;
	}
	char *what = xasprintf("table %s", name);
	const struct config_table *old = config_table_find(c, name);
	if (old != NULL) {
		cfg_err(p, ln->lineno, "duplicate table %s (first at line %d)",
		    cfg_q(name), old->line);
		goto out;
	}
	if (ln->toks[2].kind == CFG_TOK_LBRACE) {
		if ((t.items = cfg_parse_list(p, ln, 2, what)) == NULL)
			goto out;
		t.kind = CONFIG_TABLE_INLINE;
	} else if (ln->toks[2].kind == CFG_TOK_WORD &&
	    strncmp(ln->toks[2].text, "file:", 5) == 0) {
		if (!cfg_nargs(p, ln, 2, 2, usage))
			goto out;
		if (ln->toks[2].text[5] == '\0') {
			cfg_err(p, ln->lineno, "%s: empty file path", what);
			goto out;
		}
		t.kind = CONFIG_TABLE_FILE;
		t.path = xstrdup(ln->toks[2].text + 5);
	} else {
		cfg_err(p, ln->lineno, "%s: expected \"{ key, ... }\" or "
		    "file:PATH", what);
		goto out;
	}
	t.name = xstrdup(name);
	t.line = ln->lineno;
	c->tables[c->ntables++] = t;	/* room counted before parsing */
out:
	free(what);
}

/*
 * Check a maildir path template: %{rcpt}, %{rcpt.user}, %{rcpt.domain} and
 * %% only.  route_expand() applies the same rules.
 */
static int
cfg_check_template(const char *s, char **why_out)
{
	static const char *const vars[] = { "rcpt", "rcpt.user",
	    "rcpt.domain", NULL };

	for (; *s != '\0'; s++) {
		if (*s != '%')
			continue;
		if (s[1] == '%') {
			s++;
			continue;
		}
		if (s[1] != '{') {
			*why_out = xstrdup("'%' must start %{...} (write %% "
			    "for a literal %)");
			return -1;
		}
		const char *end = strchr(s, '}');
		if (end == NULL) {
			*why_out = xstrdup("unterminated %{");
			return -1;
		}
		size_t n = (size_t)(end - s - 2);
		size_t i;
		for (i = 0; vars[i] != NULL; i++)
			if (strlen(vars[i]) == n &&
			    strncmp(s + 2, vars[i], n) == 0)
				break;
		if (vars[i] == NULL) {
			char *v = xstrndup(s, (size_t)(end - s + 1));
			char *q = cfg_quote(v);
			*why_out = xasprintf("unknown variable %s (%%{rcpt}, "
			    "%%{rcpt.user}, %%{rcpt.domain})", q);
			free(q);
			free(v);
			return -1;
		}
		s = end;
	}
	return 0;
}

static void
cfg_st_action(struct cfg_parser *p, const struct cfg_line *ln)
{
	const char *usage = "action NAME maildir \"PATH\" | action NAME "
	    "discard";
	struct config *c = p->c;
	struct config_action a = { 0 };
	char *why;

	/* relay, mx, forward, relay-by-sender: parse_relay.c (issue 5) */
	if (ln->ntoks >= 3 && ln->toks[2].kind == CFG_TOK_WORD &&
	    cfg_relay_is_kind(ln->toks[2].text)) {
		cfg_st_action_remote(p, ln);
		return;
	}
	if (!cfg_nargs(p, ln, 2, 3, usage))
		return;
	const char *name = ln->toks[1].text;
	if (!cfg_is_name(name)) {
		cfg_err(p, ln->lineno, "action: bad name %s (letters, digits, "
		    "'_', '-', '.')", cfg_q(name));
		return;
	}
	const struct config_action *old = config_action_find(c, name);
	if (old != NULL) {
		cfg_err(p, ln->lineno, "duplicate action %s (first at line "
		    "%d)", cfg_q(name), old->line);
		return;
	}
	const char *kind = ln->toks[2].text;
	if (strcmp(kind, "maildir") == 0) {
		if (ln->ntoks != 4) {
			cfg_err(p, ln->lineno, "action %s: maildir needs a "
			    "path (usage: %s)", name, usage);
			return;
		}
		const char *path = ln->toks[3].text;
		if (path[0] == '\0') {
			cfg_err(p, ln->lineno, "action %s: empty maildir path",
			    name);
			return;
		}
		if (cfg_check_template(path, &why) == -1) {
			cfg_err(p, ln->lineno, "action %s: maildir path: %s",
			    name, why);
			free(why);
			return;
		}
		a.kind = CONFIG_ACTION_MAILDIR;
		a.path = xstrdup(path);
	} else if (strcmp(kind, "discard") == 0) {
		if (ln->ntoks != 3) {
			cfg_err(p, ln->lineno, "action %s: discard takes no "
			    "argument", name);
			return;
		}
		a.kind = CONFIG_ACTION_DISCARD;
	} else {
		cfg_err(p, ln->lineno, "action %s: unknown kind %s (maildir, "
		    "discard, relay, mx, forward, relay-by-sender)", name,
		    cfg_q(kind));
		return;
	}
	a.name = xstrdup(name);
	a.line = ln->lineno;
	c->actions[c->nactions++] = a;	/* room counted before parsing */
}

static void
cfg_cond_free(struct config_cond *conds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(conds[i].arg);
	free(conds);
}

/* "user@Example.ORG" with the domain lower-cased; NULL if not an address. */
static char *
cfg_addr(const char *s)
{
	const char *at = strrchr(s, '@');

	if (at == NULL || at == s || at[1] == '\0' ||
	    strpbrk(s, " \t<>") != NULL)
		return NULL;
	char *a = xstrdup(s);
	util_strlower(a + (at - s) + 1);
	return a;
}

/* "192.0.2.0/24", "2001:db8::/32" or a bare address; host bits cleared. */
static int
cfg_parse_cidr(const char *s, struct config_cond *cond)
{
	char addr[INET6_ADDRSTRLEN];
	const char *slash = strchr(s, '/');
	size_t alen = slash != NULL ? (size_t)(slash - s) : strlen(s);
	unsigned max, prefix;

	if (alen == 0 || alen >= sizeof(addr))
		return -1;
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	cond->family = strchr(addr, ':') != NULL ? AF_INET6 : AF_INET;
	if (inet_pton(cond->family, addr, cond->net) != 1)
		return -1;
	max = cond->family == AF_INET ? 32 : 128;
	prefix = max;
	if (slash != NULL) {
		const char *d = slash + 1;
		if (*d == '\0' || strlen(d) > 3 ||
		    d[strspn(d, "0123456789")] != '\0')
			return -1;
		prefix = (unsigned)atoi(d);
		if (prefix > max)
			return -1;
	}
	cond->prefix = prefix;
	for (unsigned b = prefix; b < max; b++)
		cond->net[b / 8] &= (unsigned char)~(0x80u >> (b % 8));
	return 0;
}

/* One "to ..." or "from ..." condition starting at toks[*ip]; -1 on error. */
static int
cfg_parse_cond(struct cfg_parser *p, const struct cfg_line *ln, size_t *ip,
    struct config_cond *cond)
{
	size_t i = *ip;
	const char *dir = ln->toks[i].text;
	bool to = strcmp(dir, "to") == 0;

	memset(cond, 0, sizeof(*cond));
	if (strcmp(dir, "any") == 0) {
		cond->kind = CONFIG_COND_ANY;
		*ip = i + 1;
		return 0;
	}
	if (!to && strcmp(dir, "from") != 0) {
		cfg_err(p, ln->lineno, "match: unknown condition %s (any, "
		    "to ..., from ..., from local, from authenticated, from "
		    "ip CIDR)", cfg_q(dir));
		return -1;
	}
	if (i + 1 >= ln->ntoks || ln->toks[i + 1].kind != CFG_TOK_WORD) {
		cfg_err(p, ln->lineno, "match: %s: expected domain D, "
		    "\"user@domain\" or <table>", dir);
		return -1;
	}
	const struct cfg_tok *t = &ln->toks[i + 1];
	if (!to && !t->quoted && (strcmp(t->text, "local") == 0 ||
	    strcmp(t->text, "authenticated") == 0)) {
		cond->kind = t->text[0] == 'l' ? CONFIG_COND_FROM_LOCAL :
		    CONFIG_COND_FROM_AUTH;
		*ip = i + 2;
		return 0;
	}
	if (!to && !t->quoted && strcmp(t->text, "ip") == 0) {
		if (i + 2 >= ln->ntoks || cfg_parse_cidr(ln->toks[i + 2].text,
		    cond) == -1) {
			cfg_err(p, ln->lineno, "match: from ip: expected an "
			    "address or network like 192.0.2.0/24 or "
			    "2001:db8::/32");
			return -1;
		}
		cond->kind = CONFIG_COND_FROM_IP;
		cond->arg = xstrdup(ln->toks[i + 2].text);
		*ip = i + 3;
		return 0;
	}
	size_t tl = strlen(t->text);
	if (!t->quoted && strcmp(t->text, "domain") == 0) {
		if (i + 2 >= ln->ntoks || ln->toks[i + 2].kind !=
		    CFG_TOK_WORD || ln->toks[i + 2].text[0] == '\0' ||
		    (!ln->toks[i + 2].quoted &&
		    strcmp(ln->toks[i + 2].text, "action") == 0) ||
		    strchr(ln->toks[i + 2].text, '@') != NULL) {
			cfg_err(p, ln->lineno, "match: %s domain: expected a "
			    "domain name", dir);
			return -1;
		}
		cond->kind = to ? CONFIG_COND_TO_DOMAIN :
		    CONFIG_COND_FROM_DOMAIN;
		cond->arg = util_strlower(xstrdup(ln->toks[i + 2].text));
		*ip = i + 3;
		return 0;
	}
	if (!t->quoted && tl >= 2 && t->text[0] == '<' &&
	    t->text[tl - 1] == '>') {
		char *name = xstrndup(t->text + 1, tl - 2);
		cond->table = config_table_find(p->c, name);
		if (cond->table == NULL) {
			int later = cfg_defined_later(p, "table", name);
			if (later != 0)
				cfg_err(p, ln->lineno, "match: table %s is "
				    "defined later, at line %d; define it "
				    "before use", cfg_q(name), later);
			else
				cfg_err(p, ln->lineno, "match: table %s is "
				    "not defined (define it with \"table\" "
				    "before use)", cfg_q(name));
			free(name);
			return -1;
		}
		free(name);
		cond->kind = to ? CONFIG_COND_TO_TABLE :
		    CONFIG_COND_FROM_TABLE;
		*ip = i + 2;
		return 0;
	}
	if ((cond->arg = cfg_addr(t->text)) == NULL) {
		cfg_err(p, ln->lineno, "match: %s %s: expected domain D, "
		    "\"user@domain\" or <table>", dir, cfg_q(t->text));
		return -1;
	}
	cond->kind = to ? CONFIG_COND_TO_ADDR : CONFIG_COND_FROM_ADDR;
	*ip = i + 2;
	return 0;
}

static void
cfg_st_match(struct cfg_parser *p, const struct cfg_line *ln)
{
	struct config *c = p->c;
	struct config_rule r = { 0 };
	size_t i = 1;
	bool bad = false;

	for (size_t k = 1; k < ln->ntoks; k++)
		if (ln->toks[k].kind != CFG_TOK_WORD) {
			cfg_err(p, ln->lineno, "match: unexpected '%c'",
			    ln->toks[k].kind == CFG_TOK_LBRACE ? '{' :
			    ln->toks[k].kind == CFG_TOK_RBRACE ? '}' : ',');
			return;
		}
	while (i < ln->ntoks && !(strcmp(ln->toks[i].text, "action") == 0 &&
	    !ln->toks[i].quoted)) {
		struct config_cond cond;
		if (cfg_parse_cond(p, ln, &i, &cond) == -1) {
			bad = true;
			/* Skip to "action" to check the action name too. */
			while (i < ln->ntoks &&
			    strcmp(ln->toks[i].text, "action") != 0)
				i++;
			break;
		}
		r.conds = xreallocarray(r.conds, r.nconds + 1,
		    sizeof(*r.conds));
		r.conds[r.nconds++] = cond;
	}
	if (i >= ln->ntoks || i + 1 >= ln->ntoks) {
		cfg_err(p, ln->lineno, "match: missing \"action NAME\" (usage: "
		    "match COND... action NAME)");
		goto fail;
	}
	if (i + 2 < ln->ntoks) {
		cfg_err(p, ln->lineno, "match: unexpected %s after the action "
		    "name", cfg_q(ln->toks[i + 2].text));
		goto fail;
	}
	if (r.nconds == 0 && !bad) {
		cfg_err(p, ln->lineno, "match: no condition before \"action\" "
		    "(write \"match any action NAME\" to match everything)");
		bad = true;
	}
	const char *name = ln->toks[i + 1].text;
	if ((r.action = config_action_find(c, name)) == NULL) {
		int later = cfg_defined_later(p, "action", name);
		if (later != 0)
			cfg_err(p, ln->lineno, "match: action %s is defined "
			    "later, at line %d; define it before use",
			    cfg_q(name), later);
		else
			cfg_err(p, ln->lineno, "match: action %s is not "
			    "defined (define it with \"action\" before use)",
			    cfg_q(name));
		goto fail;
	}
	if (bad)
		goto fail;
	r.line = ln->lineno;
	c->rules = xreallocarray(c->rules, c->nrules + 1, sizeof(*c->rules));
	c->rules[c->nrules++] = r;
	return;
fail:
	cfg_cond_free(r.conds, r.nconds);
}

static const struct cfg_statement {
	const char	*keyword;
	void		(*fn)(struct cfg_parser *, const struct cfg_line *);
} cfg_statements[] = {
	{ "hostname",		cfg_st_hostname },
	{ "spool",		cfg_st_spool },
	{ "greeting",		cfg_st_greeting },
	{ "listen",		cfg_st_listen },
	{ "log",		cfg_st_log },
	{ "transaction-log",	cfg_st_translog },
	{ "limit",		cfg_st_limit },
	{ "table",		cfg_st_table },
	{ "action",		cfg_st_action },
	{ "account",		cfg_st_relay_account },
	{ "match",		cfg_st_match },
	{ "user",		cfg_st_account },
	{ "group",		cfg_st_account },
	{ "workers",		cfg_st_workers },
	{ "auth",		cfg_st_auth },
	{ "tls",		cfg_st_tls },
	{ "queue",		cfg_st_queue },
	{ "on",			cfg_st_on },
	{ "state",		cfg_st_state },
	{ "lua",		cfg_st_lua },
	{ NULL,			NULL },
};

static void
cfg_statement(struct cfg_parser *p, const struct cfg_line *ln)
{
	if (ln->lexerr != NULL) {
		cfg_err(p, ln->lineno, "%s", ln->lexerr);
		return;
	}
	if (ln->ntoks == 0)
		return;
	if (ln->toks[0].kind != CFG_TOK_WORD || ln->toks[0].quoted) {
		cfg_err(p, ln->lineno, "expected a keyword at the start of "
		    "the line");
		return;
	}
	for (const struct cfg_statement *st = cfg_statements;
	    st->keyword != NULL; st++)
		if (strcmp(ln->toks[0].text, st->keyword) == 0) {
			st->fn(p, ln);
			return;
		}
	cfg_err(p, ln->lineno, "unknown keyword %s", cfg_q(ln->toks[0].text));
}

static void
cfg_defaults(struct config *c)
{
	char host[256];

	if (gethostname(host, sizeof(host)) == -1 || host[0] == '\0' ||
	    memchr(host, '\0', sizeof(host)) == NULL)
		c->hostname = xstrdup("localhost");
	else
		c->hostname = xstrdup(host);
	c->spool = xstrdup("var/spool");
	c->log_facility = xstrdup("mail");
	c->log_level = LOG_LVL_INFO;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	c->workers = ncpu < 1 ? 1 : ncpu > 256 ? 256 : (unsigned)ncpu;
	for (size_t i = 0; i < CFG_NLIMITS; i++)
		cfg_limit_set(&c->limits, &cfg_limits[i], cfg_limits[i].def);
	cfg_queue_defaults(c);
}

struct config *
cfg_parser_config(struct cfg_parser *p)
{
	return p->c;
}

const struct cfg_line *
cfg_peek_line(struct cfg_parser *p)
{
	return p->cur + 1 < p->nlines ? &p->lines[p->cur + 1] : NULL;
}

void
cfg_take_line(struct cfg_parser *p)
{
	if (p->cur + 1 < p->nlines)
		p->cur++;
}

/* Split text into lexed lines; count table and action statements. */
static void
cfg_split(struct cfg_parser *p, const char *text, size_t *ntables,
    size_t *nactions)
{
	const char *s = text;
	int lineno = 0;

	*ntables = *nactions = 0;
	while (*s != '\0') {
		const char *nl = strchr(s, '\n');
		size_t len = nl != NULL ? (size_t)(nl - s) : strlen(s);
		p->lines = xreallocarray(p->lines, p->nlines + 1,
		    sizeof(*p->lines));
		struct cfg_line *ln = &p->lines[p->nlines++];
		cfg_lex_line(s, len, ++lineno, ln);
		if (ln->ntoks > 0 && ln->toks[0].kind == CFG_TOK_WORD) {
			if (strcmp(ln->toks[0].text, "table") == 0)
				(*ntables)++;
			else if (strcmp(ln->toks[0].text, "action") == 0)
				(*nactions)++;
		}
		s += len;
		if (*s == '\n')
			s++;
	}
}

struct config *
config_parse(const char *name, const char *text, char **errs_out)
{
	struct cfg_parser p = { 0 };
	struct config *c = xcalloc(1, sizeof(*c));
	size_t ntables, nactions;

	p.name = name;
	p.c = c;
	c->path = xstrdup(name);
	cfg_defaults(c);
	cfg_split(&p, text, &ntables, &nactions);
	/*
	 * Rules borrow pointers into these arrays, so they never move: room
	 * for every table and action statement is made up front.
	 */
	c->tables = xcalloc(ntables + 1, sizeof(*c->tables));
	c->actions = xcalloc(nactions + 1, sizeof(*c->actions));
	for (p.cur = 0; p.cur < p.nlines; p.cur++)
		cfg_statement(&p, &p.lines[p.cur]);

	int last = p.nlines > 0 ? p.lines[p.nlines - 1].lineno : 1;
	if (c->nlistens == 0)
		cfg_err(&p, last, "no listen statement (add one, like "
		    "\"listen 127.0.0.1:2525\")");
	for (size_t i = 0; i < c->nlistens; i++) {
		const struct config_listen *l = &c->listens[i];
		if (l->auth && c->auth_table == NULL)
			cfg_err(&p, l->line, "listen: auth needs an \"auth "
			    "<TABLE>\" statement naming the users");
		if ((l->implicit_tls || l->require_tls) && l->ncerts == 0 &&
		    !config_has_tls(c))
			cfg_err(&p, l->line, "listen: %s needs a certificate "
			    "(a \"tls cert\" or \"tls self-signed\" statement, "
			    "or cert/key on the listener)", l->implicit_tls ?
			    "tls" : "require-tls");
	}
	if (c->nrules == 0)
		cfg_err(&p, last, "no match rule, so no mail can be accepted "
		    "(add one, like \"match to domain example.org action "
		    "NAME\")");
	for (size_t i = 0; i < p.nlines; i++)
		cfg_line_clear(&p.lines[i]);
	free(p.lines);
	cfg_q("");	/* keep the last quote from looking leaked */
	if (p.errs.len > 0) {
		*errs_out = xstrdup(cfg_cstr(&p.errs));
		util_buf_clear(&p.errs);
		config_free(&c);
		return NULL;
	}
	*errs_out = NULL;
	return c;
}

struct config *
config_load(const char *path, char **errs_out)
{
	struct util_buf b = { 0 };
	char chunk[8192];
	size_t n;
	FILE *f;

	if ((f = fopen(path, "r")) == NULL) {
		*errs_out = xasprintf("%s:0: cannot open: %s\n", path,
		    strerror(errno));
		return NULL;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		util_buf_add(&b, chunk, n);
	if (ferror(f)) {
		*errs_out = xasprintf("%s:0: cannot read: %s\n", path,
		    strerror(errno));
		fclose(f);
		util_buf_clear(&b);
		return NULL;
	}
	fclose(f);
	const char *text = cfg_cstr(&b);
	if (memchr(text, '\0', b.len) != NULL) {
		const char *z = memchr(text, '\0', b.len);
		int line = 1;
		for (const char *q = text; q < z; q++)
			line += *q == '\n';
		*errs_out = xasprintf("%s:%d: NUL byte in the file\n", path,
		    line);
		util_buf_clear(&b);
		return NULL;
	}
	struct config *c = config_parse(path, text, errs_out);
	util_buf_clear(&b);
	return c;
}

void
config_free(struct config **cp)
{
	struct config *c = *cp;

	if (c == NULL)
		return;
	free(c->path);
	free(c->hostname);
	free(c->spool);
	free(c->greeting);
	free(c->log_facility);
	free(c->translog_dir);
	free(c->user);
	free(c->group);
	for (size_t i = 0; i < c->nlistens; i++) {
		free(c->listens[i].addr);
		cfg_certs_free(c->listens[i].certs, c->listens[i].ncerts);
	}
	free(c->listens);
	cfg_certs_free(c->tls_certs, c->ntls_certs);
	free(c->tls_selfsigned_dir);
	free(c->tls_min_version);
	free(c->tls_ciphers);
	free(c->tls_ciphersuites);
	for (size_t i = 0; i < c->ntables; i++) {
		free(c->tables[i].name);
		free(c->tables[i].path);
		for (char **it = c->tables[i].items; it != NULL && *it != NULL;
		    it++)
			free(*it);
		free(c->tables[i].items);
	}
	free(c->tables);
	cfg_relay_free(c);	/* before the actions it looks into */
	for (size_t i = 0; i < c->nactions; i++) {
		free(c->actions[i].name);
		free(c->actions[i].path);
	}
	free(c->actions);
	for (size_t i = 0; i < c->nrules; i++)
		cfg_cond_free(c->rules[i].conds, c->rules[i].nconds);
	free(c->rules);
	cfg_chain_free(c);
	free(c);
	*cp = NULL;
}

bool
config_has_tls(const struct config *c)
{
	return c->ntls_certs > 0 || c->tls_selfsigned_dir != NULL;
}

const struct config_action *
config_action_find(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->nactions; i++)
		if (strcmp(c->actions[i].name, name) == 0)
			return &c->actions[i];
	return NULL;
}

const struct config_table *
config_table_find(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->ntables; i++)
		if (strcmp(c->tables[i].name, name) == 0)
			return &c->tables[i];
	return NULL;
}
