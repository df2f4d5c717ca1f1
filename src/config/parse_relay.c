/*
 * config/parse_relay.c: the outbound client's statements:
 * "action NAME relay URL [OPTIONS]", "action NAME mx [OPTIONS]",
 * "action NAME forward ADDR [OPTIONS]", "action NAME relay-by-sender
 * { KEY: ACCOUNT, ... }" and "account NAME relay URL [OPTIONS]".  Only
 * checks form; deliver/ connects.
 */
#include "config/config.h"

#include <stdlib.h>
#include <string.h>

#include "config/config_private.h"
#include "util/util.h"

static const char *const cfg_relay_steps[6] = { "connect", "greeting",
	"command", "data-init", "data-block", "data-term" };

static void
cfg_relay_clear(struct config_relay *r)
{
	free(r->url);
	free(r->host);
	free(r->ca_file);
	free(r->helo);
	free(r->pop_url);
	free(r->pop_host);
	free(r->pop_user);
	free(r->rw_return_path);
	free(r->rw_reply_to);
	free(r->rw_from);
	free(r->resolver);
	memset(r, 0, sizeof(*r));
}

void
cfg_relay_free(struct config *c)
{
	for (size_t i = 0; i < c->nactions; i++) {
		struct config_action *a = &c->actions[i];
		if (a->relay != NULL)
			cfg_relay_clear(a->relay);
		free(a->relay);
		free(a->forward_to);
		for (size_t k = 0; k < a->nby_sender; k++)
			free(a->by_sender[k].key);
		free(a->by_sender);
	}
	for (size_t i = 0; i < c->naccounts; i++) {
		cfg_relay_clear(&c->accounts[i]->relay);
		free(c->accounts[i]->name);
		free(c->accounts[i]);
	}
	free(c->accounts);
}

/*
 * "scheme://host[:port]" with host a name, IPv4 or [IPv6].  Returns the
 * index of the scheme in schemes[] (default port ports[i]) or -1 with
 * *why_out (static text).
 */
static int
cfg_relay_url(const char *url, const char *const *schemes, const int *ports,
    char **host_out, int *port_out, const char **why_out)
{
	const char *sep = strstr(url, "://");
	int k;

	*why_out = "expected SCHEME://HOST[:PORT]";
	if (sep == NULL)
		return -1;
	for (k = 0; schemes[k] != NULL; k++)
		if (strlen(schemes[k]) == (size_t)(sep - url) &&
		    strncmp(url, schemes[k], (size_t)(sep - url)) == 0)
			break;
	if (schemes[k] == NULL) {
		*why_out = "unknown scheme";
		return -1;
	}
	const char *h = sep + 3, *hend, *colon;
	if (*h == '[') {
		if ((hend = strchr(h, ']')) == NULL)
			return -1;
		h++;
		colon = hend[1] == ':' ? hend + 1 : NULL;
		if (hend[1] != '\0' && colon == NULL)
			return -1;
	} else {
		colon = strchr(h, ':');
		hend = colon != NULL ? colon : h + strlen(h);
	}
	if (hend == h || (size_t)(hend - h) > 253) {
		*why_out = "missing host";
		return -1;
	}
	for (const char *q = h; q < hend; q++)
		if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
		    (*q >= '0' && *q <= '9') || *q == '-' || *q == '.' ||
		    *q == '_' || *q == ':')) {
			*why_out = "bad character in host";
			return -1;
		}
	int port = ports[k];
	if (colon != NULL) {
		char *end;
		long v = strtol(colon + 1, &end, 10);
		if (colon[1] == '\0' || *end != '\0' || v < 1 || v > 65535) {
			*why_out = "port must be 1..65535";
			return -1;
		}
		port = (int)v;
	}
	*host_out = xstrndup(h, (size_t)(hend - h));
	*port_out = port;
	return k;
}

/* "<NAME>" naming a defined table; NULL after an error. */
static const struct config_table *
cfg_relay_table(struct cfg_parser *p, const struct cfg_line *ln,
    const char *opt, const struct cfg_tok *t)
{
	size_t n = strlen(t->text);

	if (t->quoted || n < 3 || t->text[0] != '<' || t->text[n - 1] != '>') {
		cfg_err(p, ln->lineno, "%s: expected <TABLE>", opt);
		return NULL;
	}
	char *name = xstrndup(t->text + 1, n - 2);
	const struct config_table *ct = config_table_find(
	    cfg_parser_config(p), name);
	if (ct == NULL)
		cfg_err_undefined(p, ln, opt, "table", name);
	free(name);
	return ct;
}

static int
cfg_relay_pop(struct cfg_parser *p, const struct cfg_line *ln,
    struct config_relay *r, const char *url)
{
	static const char *const schemes[] = { "pop3", "pop3+stls", "pop3s",
	    NULL };
	static const int ports[] = { 110, 110, 995 };
	static const enum config_relay_tls tls[] = { CONFIG_RELAY_PLAIN,
	    CONFIG_RELAY_STARTTLS, CONFIG_RELAY_TLS };
	const char *why;
	int k;

	if (r->pop_url != NULL) {
		cfg_err(p, ln->lineno, "pop: given twice");
		return -1;
	}
	if ((k = cfg_relay_url(url, schemes, ports, &r->pop_host,
	    &r->pop_port, &why)) == -1) {
		cfg_err(p, ln->lineno, "pop %s: %s (pop3://, pop3+stls://, "
		    "pop3s://)", cfg_q(url), why);
		return -1;
	}
	r->pop_url = xstrdup(url);
	r->pop_tls = tls[k];
	return 0;
}

static int
cfg_relay_rewrite(struct cfg_parser *p, const struct cfg_line *ln,
    struct config_relay *r, const char *what, const char *addr)
{
	char **dst = strcmp(what, "return-path") == 0 ? &r->rw_return_path :
	    strcmp(what, "reply-to") == 0 ? &r->rw_reply_to :
	    strcmp(what, "from") == 0 ? &r->rw_from : NULL;

	if (dst == NULL) {
		cfg_err(p, ln->lineno, "rewrite: %s is not return-path, "
		    "reply-to or from", cfg_q(what));
		return -1;
	}
	if (addr[0] == '\0' || strpbrk(addr, "\r\n") != NULL ||
	    strlen(addr) > 400 || (strcmp(what, "return-path") == 0 &&
	    (strchr(addr, '@') == NULL || strpbrk(addr, " <>") != NULL))) {
		cfg_err(p, ln->lineno, "rewrite %s: bad address %s", what,
		    cfg_q(addr));
		return -1;
	}
	free(*dst);
	*dst = xstrdup(addr);
	return 0;
}

static int
cfg_relay_timeout(struct cfg_parser *p, const struct cfg_line *ln,
    struct config_relay *r, const char *step, const char *dur)
{
	uint64_t ms;

	for (size_t k = 0; k < 6; k++) {
		if (strcmp(step, cfg_relay_steps[k]) != 0)
			continue;
		if (util_parse_duration_ms(dur, &ms) == -1 || ms < 1000 ||
		    ms > 3600000) {
			cfg_err(p, ln->lineno, "timeout %s: %s is not a "
			    "duration in 1s..1h", step, cfg_q(dur));
			return -1;
		}
		r->timeouts_ms[k] = ms;
		return 0;
	}
	cfg_err(p, ln->lineno, "timeout: unknown step %s (connect, greeting, "
	    "command, data-init, data-block, data-term)", cfg_q(step));
	return -1;
}

/* Which options a kind takes. */
enum { OPT_RELAY = 1, OPT_MX = 2, OPT_UP = 4 };

/* An upstream's own options: "sni pass|NAME", "proxy-protocol v1|v2". */
static int
cfg_relay_up_opt(struct cfg_parser *p, const struct cfg_line *ln,
    struct config_upstream *up, const char *o, const char *a1)
{
	if (strcmp(o, "proxy-protocol") == 0) {
		if (strcmp(a1, "v1") != 0 && strcmp(a1, "v2") != 0) {
			cfg_err(p, ln->lineno, "proxy-protocol: %s is not v1 "
			    "or v2", cfg_q(a1));
			return -1;
		}
		up->proxy_protocol = a1[1] - '0';
		return 0;
	}
	if (strcmp(a1, "pass") == 0) {
		up->sni_pass = true;
		return 0;
	}
	if (a1[0] == '\0' || strlen(a1) > 253 || strspn(a1, "abcdefghijklmn"
	    "opqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") !=
	    strlen(a1)) {
		cfg_err(p, ln->lineno, "sni: %s is not \"pass\" or a host "
		    "name", cfg_q(a1));
		return -1;
	}
	free(up->sni);
	up->sni = util_strlower(xstrdup(a1));
	return 0;
}

/*
 * The options from toks[i] on into r; kind: OPT_RELAY (relay, account),
 * OPT_MX (mx, forward) or OPT_UP (an upstream: its own options go to up).
 * 0, or -1 after reporting.
 */
static int
cfg_relay_opts(struct cfg_parser *p, const struct cfg_line *ln, size_t i,
    struct config_relay *r, int kind, struct config_upstream *up)
{
	static const struct {
		const char	*opt;
		int		 nargs, kinds;
	} opts[] = {
		{ "auth", 1, OPT_RELAY },
		{ "no-verify", 0, OPT_RELAY | OPT_MX | OPT_UP },
		{ "ca", 1, OPT_RELAY | OPT_MX | OPT_UP },
		{ "helo", 1, OPT_RELAY | OPT_MX },
		{ "timeout", 2, OPT_RELAY | OPT_MX | OPT_UP },
		{ "sni", 1, OPT_UP }, { "proxy-protocol", 1, OPT_UP },
		{ "pop", 1, OPT_RELAY },
		{ "user", 1, OPT_RELAY }, { "pass-table", 1, OPT_RELAY },
		{ "pop-interval", 1, OPT_RELAY }, { "pop-wait", 1, OPT_RELAY },
		{ "rewrite", 2, OPT_RELAY | OPT_MX },
		{ "resolver", 1, OPT_MX }, { "mx-hosts", 1, OPT_MX },
		{ NULL, 0, 0 },
	};
	/* All but timeout and rewrite, which take a step or a field. */
	static const char *const once[] = { "auth", "no-verify", "ca", "helo",
	    "sni", "proxy-protocol", "pop", "user", "pass-table",
	    "pop-interval", "pop-wait", "resolver", "mx-hosts", NULL };
	unsigned seen = 0;
	bool interval_set = false;	/* 0 is "log in every time" */
	static const char *const names[] = { [OPT_RELAY] = "auth, no-verify, "
	    "ca, helo, timeout, pop, user, pass-table, pop-interval, pop-wait, "
	    "rewrite", [OPT_MX] = "no-verify, ca, helo, timeout, rewrite, "
	    "resolver, mx-hosts", [OPT_UP] = "no-verify, ca, timeout, sni, "
	    "proxy-protocol" };

	while (i < ln->ntoks) {
		const struct cfg_tok *t = &ln->toks[i];
		size_t k;
		if (t->kind != CFG_TOK_WORD) {
			cfg_err(p, ln->lineno, "unexpected punctuation among "
			    "the options");
			return -1;
		}
		for (k = 0; opts[k].opt != NULL; k++)
			if (!t->quoted && strcmp(t->text, opts[k].opt) == 0)
				break;
		if (opts[k].opt == NULL || (opts[k].kinds & kind) == 0) {
			cfg_err(p, ln->lineno, "unknown option %s here (%s)",
			    cfg_q(t->text), names[kind]);
			return -1;
		}
		if (!cfg_opt_once(p, ln, NULL, once, t->text, &seen))
			return -1;
		if (i + (size_t)opts[k].nargs >= ln->ntoks) {
			cfg_err(p, ln->lineno, "%s: missing argument",
			    opts[k].opt);
			return -1;
		}
		for (int a = 1; a <= opts[k].nargs; a++)
			if (ln->toks[i + (size_t)a].kind != CFG_TOK_WORD) {
				cfg_err(p, ln->lineno, "%s: missing argument",
				    opts[k].opt);
				return -1;
			}
		const char *a1 = opts[k].nargs > 0 ? ln->toks[i + 1].text : "";
		const char *a2 = opts[k].nargs > 1 ? ln->toks[i + 2].text : "";
		const char *o = opts[k].opt;
		int rc = 0;
		uint64_t ms;
		if (strcmp(o, "auth") == 0) {
			if ((r->auth = cfg_relay_table(p, ln, o,
			    &ln->toks[i + 1])) == NULL)
				rc = -1;
		} else if (strcmp(o, "no-verify") == 0)
			r->no_verify = true;
		else if (strcmp(o, "ca") == 0) {
			free(r->ca_file);
			r->ca_file = xstrdup(a1);
		} else if (strcmp(o, "helo") == 0) {
			if (a1[0] == '\0' || strpbrk(a1, " \t\r\n") != NULL ||
			    strlen(a1) > 253) {
				cfg_err(p, ln->lineno, "helo: bad name %s",
				    cfg_q(a1));
				rc = -1;
			} else {
				free(r->helo);
				r->helo = xstrdup(a1);
			}
		} else if (strcmp(o, "timeout") == 0)
			rc = cfg_relay_timeout(p, ln, r, a1, a2);
		else if (strcmp(o, "pop") == 0)
			rc = cfg_relay_pop(p, ln, r, a1);
		else if (strcmp(o, "user") == 0) {
			free(r->pop_user);
			r->pop_user = xstrdup(a1);
		} else if (strcmp(o, "pass-table") == 0) {
			if ((r->pop_pass = cfg_relay_table(p, ln, o,
			    &ln->toks[i + 1])) == NULL)
				rc = -1;
		} else if (strcmp(o, "pop-interval") == 0 ||
		    strcmp(o, "pop-wait") == 0) {
			if (util_parse_duration_ms(a1, &ms) == -1 ||
			    ms > 86400000) {
				cfg_err(p, ln->lineno, "%s: %s is not a "
				    "duration up to 1d", o, cfg_q(a1));
				rc = -1;
			} else if (o[4] == 'i') {
				r->pop_interval_ms = ms;
				interval_set = true;
			} else
				r->pop_wait_ms = ms;
		} else if (strcmp(o, "rewrite") == 0)
			rc = cfg_relay_rewrite(p, ln, r, a1, a2);
		else if (strcmp(o, "resolver") == 0) {
			if (!cfg_resolver_ok(a1)) {
				cfg_err(p, ln->lineno, "resolver: %s is not "
				    "IP[:PORT] (a numeric address, a port of "
				    "1..65535)", cfg_q(a1));
				rc = -1;
			} else {
				free(r->resolver);
				r->resolver = xstrdup(a1);
			}
		} else if (strcmp(o, "mx-hosts") == 0) {
			if ((r->mx_hosts = cfg_relay_table(p, ln, o,
			    &ln->toks[i + 1])) == NULL)
				rc = -1;
		} else if (kind == OPT_UP)
			rc = cfg_relay_up_opt(p, ln, up, o, a1);
		if (rc == -1)
			return -1;
		i += 1 + (size_t)opts[k].nargs;
	}
	if (r->pop_url != NULL && (r->pop_user == NULL || r->pop_pass ==
	    NULL)) {
		cfg_err(p, ln->lineno, "pop: needs \"user U\" and "
		    "\"pass-table <T>\"");
		return -1;
	}
	if (r->pop_url == NULL && (r->pop_user != NULL || r->pop_pass !=
	    NULL)) {
		cfg_err(p, ln->lineno, "user/pass-table: only with \"pop "
		    "URL\"");
		return -1;
	}
	if (!interval_set)
		r->pop_interval_ms = 60000;
	return 0;
}

int
cfg_relay_smtp_url(struct cfg_parser *p, const struct cfg_line *ln,
    const char *what, const char *url, struct config_relay *r)
{
	static const char *const schemes[] = { "smtp", "smtp+starttls",
	    "smtp+tls", NULL };
	static const int ports[] = { 25, 587, 465 };
	static const enum config_relay_tls tls[] = { CONFIG_RELAY_PLAIN,
	    CONFIG_RELAY_STARTTLS, CONFIG_RELAY_TLS };
	const char *why;
	int k;

	if ((k = cfg_relay_url(url, schemes, ports, &r->host, &r->port,
	    &why)) == -1) {
		cfg_err(p, ln->lineno, "%s %s: %s (smtp://, "
		    "smtp+starttls://, smtp+tls://)", what, cfg_q(url), why);
		return -1;
	}
	r->url = xstrdup(url);
	r->tls = tls[k];
	return 0;
}

/* "relay URL OPTS" from toks[i]: into r.  0 or -1. */
static int
cfg_relay_parse(struct cfg_parser *p, const struct cfg_line *ln, size_t i,
    struct config_relay *r)
{
	if (i >= ln->ntoks || ln->toks[i].kind != CFG_TOK_WORD) {
		cfg_err(p, ln->lineno, "relay: missing \"smtp://HOST:PORT\"");
		return -1;
	}
	if (cfg_relay_smtp_url(p, ln, "relay", ln->toks[i].text, r) == -1)
		return -1;
	return cfg_relay_opts(p, ln, i + 1, r, OPT_RELAY, NULL);
}

int
cfg_relay_upstream_opts(struct cfg_parser *p, const struct cfg_line *ln,
    size_t i, struct config_upstream *up)
{
	return cfg_relay_opts(p, ln, i, &up->relay, OPT_UP, up);
}

void
cfg_relay_clear_upstream(struct config_upstream *up)
{
	cfg_relay_clear(&up->relay);
	free(up->name);
	free(up->sni);
}

static const struct config_account *
cfg_account_find(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->naccounts; i++)
		if (strcmp(c->accounts[i]->name, name) == 0)
			return c->accounts[i];
	return NULL;
}

/*
 * A relay-by-sender key: "default", an address or "@domain", its domain in
 * its A-label form, lower case, the one deliver/ compares (RFC 5891 5.4:
 * "@bücher.example" and "@xn--bcher-kva.example" are one key, as a rule's
 * domain is).  Owned by the caller; NULL after reporting.
 */
static char *
cfg_by_sender_key(struct cfg_parser *p, const struct cfg_line *ln,
    const char *key)
{
	const char *at = strrchr(key, '@'), *why;
	char *dom, *out;

	if (strcmp(key, "default") == 0)
		return xstrdup(key);
	if (at == NULL || at[1] == '\0') {
		cfg_err(p, ln->lineno, "relay-by-sender: %s is not an address, "
		    "@domain or default", cfg_q(key));
		return NULL;
	}
	if (util_idna_alabel(at + 1, &dom, &why) == -1) {
		cfg_err(p, ln->lineno, "relay-by-sender: the domain %s is not "
		    "a valid internationalized domain name (%s)", cfg_q(at + 1),
		    why);
		return NULL;
	}
	out = xasprintf("%.*s@%s", (int)(at - key), key, dom);
	free(dom);
	return out;
}

/* "{ KEY: ACCOUNT, KEY:ACCOUNT, ... }" from toks[i]. */
static int
cfg_relay_by_sender(struct cfg_parser *p, const struct cfg_line *ln,
    size_t i, struct config_action *a)
{
	const struct config *c = cfg_parser_config(p);

	if (i >= ln->ntoks || ln->toks[i].kind != CFG_TOK_LBRACE) {
		cfg_err(p, ln->lineno, "relay-by-sender: expected \"{ "
		    "sender@example.org: ACCOUNT, @domain: ACCOUNT, default: "
		    "ACCOUNT }\"");
		return -1;
	}
	for (i++; i < ln->ntoks && ln->toks[i].kind != CFG_TOK_RBRACE; i++) {
		char *key = NULL, *acct = NULL;
		const struct cfg_tok *t = &ln->toks[i];
		if (t->kind != CFG_TOK_WORD)
			goto bad;
		const char *colon = strrchr(t->text, ':');
		if (colon != NULL && colon[1] != '\0') {
			key = xstrndup(t->text, (size_t)(colon - t->text));
			acct = xstrdup(colon + 1);
		} else if (colon != NULL && i + 1 < ln->ntoks &&
		    ln->toks[i + 1].kind == CFG_TOK_WORD) {
			key = xstrndup(t->text, (size_t)(colon - t->text));
			acct = xstrdup(ln->toks[++i].text);
		} else
			goto bad;
		const struct config_account *ac = cfg_account_find(c, acct);
		char *canon = cfg_by_sender_key(p, ln, key);
		free(key);
		if (canon != NULL && ac == NULL)
			cfg_err_undefined(p, ln, "relay-by-sender", "account",
			    acct);
		if (ac == NULL || canon == NULL) {
			free(canon);
			free(acct);
			return -1;
		}
		key = canon;
		a->by_sender = xreallocarray(a->by_sender, a->nby_sender + 1,
		    sizeof(*a->by_sender));
		a->by_sender[a->nby_sender].key = key;
		a->by_sender[a->nby_sender++].account = ac;
		free(acct);
		if (i + 1 < ln->ntoks && ln->toks[i + 1].kind == CFG_TOK_COMMA)
			i++;
		continue;
bad:
		cfg_err(p, ln->lineno, "relay-by-sender: expected \"KEY: "
		    "ACCOUNT\" in the list");
		return -1;
	}
	if (i >= ln->ntoks || i + 1 != ln->ntoks) {
		cfg_err(p, ln->lineno, "relay-by-sender: the list must end "
		    "with '}' at the end of the line");
		return -1;
	}
	if (a->nby_sender == 0) {
		cfg_err(p, ln->lineno, "relay-by-sender: empty list");
		return -1;
	}
	return 0;
}

/* "action NAME relay|mx|forward|relay-by-sender ..." */
void
cfg_st_action_remote(struct cfg_parser *p, const struct cfg_line *ln,
    enum config_action_kind kind)
{
	struct config *c = cfg_parser_config(p);
	struct config_action a = { .kind = kind };
	const char *name = ln->toks[1].text;
	int rc;

	if (ln->toks[1].kind != CFG_TOK_WORD || !cfg_is_name(name)) {
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
	if (kind == CONFIG_ACTION_RELAY_BY_SENDER) {
		rc = cfg_relay_by_sender(p, ln, 3, &a);
	} else {
		a.relay = xcalloc(1, sizeof(*a.relay));
		if (kind == CONFIG_ACTION_RELAY) {
			rc = cfg_relay_parse(p, ln, 3, a.relay);
		} else if (kind == CONFIG_ACTION_MX) {
			rc = cfg_relay_opts(p, ln, 3, a.relay, OPT_MX,
			    NULL);
		} else {
			const char *to = ln->ntoks > 3 && ln->toks[3].kind ==
			    CFG_TOK_WORD ? ln->toks[3].text : "";
			const char *at = strrchr(to, '@');
			if (at == NULL || at == to || at[1] == '\0' ||
			    strpbrk(to, " \t<>\r\n") != NULL) {
				cfg_err(p, ln->lineno, "action %s: forward "
				    "needs an address (action NAME forward "
				    "\"user@domain\")", name);
				rc = -1;
			} else {
				a.forward_to = xstrdup(to);
				rc = cfg_relay_opts(p, ln, 4, a.relay, OPT_MX,
				    NULL);
			}
		}
	}
	a.name = xstrdup(name);
	a.line = ln->lineno;
	/* Room for every action line was made before parsing. */
	c->actions[c->nactions++] = a;
	(void)rc;	/* a bad line is freed with the config, which fails */
}

/* "account NAME relay URL [OPTIONS]" */
void
cfg_st_relay_account(struct cfg_parser *p, const struct cfg_line *ln)
{
	struct config *c = cfg_parser_config(p);

	if (ln->ntoks < 4 || ln->toks[1].kind != CFG_TOK_WORD ||
	    ln->toks[2].kind != CFG_TOK_WORD ||
	    strcmp(ln->toks[2].text, "relay") != 0) {
		cfg_err(p, ln->lineno, "account: usage: account NAME relay "
		    "URL [OPTIONS]");
		return;
	}
	const char *name = ln->toks[1].text;
	if (!cfg_is_name(name)) {
		cfg_err(p, ln->lineno, "account: bad name %s", cfg_q(name));
		return;
	}
	const struct config_account *old = cfg_account_find(c, name);
	if (old != NULL) {
		cfg_err(p, ln->lineno, "duplicate account %s (first at line "
		    "%d)", cfg_q(name), old->line);
		return;
	}
	struct config_account *ac = xcalloc(1, sizeof(*ac));
	ac->name = xstrdup(name);
	ac->line = ln->lineno;
	/* Kept even when bad, so later references do not cascade. */
	c->accounts = xreallocarray(c->accounts, c->naccounts + 1,
	    sizeof(*c->accounts));
	c->accounts[c->naccounts++] = ac;
	(void)cfg_relay_parse(p, ln, 3, &ac->relay);
}
