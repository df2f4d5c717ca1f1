/*
 * config/parse_proxy.c: proxy listeners: "upstream NAME URL [OPTIONS]" and
 * the listener options "proxy NAME|URL", "proxy-sni <TABLE>", "proxy-rcpt
 * <TABLE>", with the checks that tie them together.  Only form: proxy/
 * resolves and connects.
 */
#include "config/config.h"

#include <stdlib.h>
#include <string.h>

#include "config/config_private.h"
#include "util/util.h"

#define CFG_UPSTREAM_USAGE "upstream NAME smtp[+starttls|+tls]://HOST[:PORT] " \
	"[no-verify] [ca FILE] [timeout STEP DUR]... [sni pass|NAME] " \
	"[proxy-protocol v1|v2]"

const struct config_upstream *
config_upstream_find(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->nupstreams; i++)
		if (strcmp(c->upstreams[i]->name, name) == 0)
			return c->upstreams[i];
	return NULL;
}

/* A new upstream, kept even when its line is bad (no cascades). */
static struct config_upstream *
cfg_upstream_add(struct config *c, const char *name, int line)
{
	struct config_upstream *up = xcalloc(1, sizeof(*up));

	up->name = xstrdup(name);
	up->line = line;
	c->upstreams = xreallocarray(c->upstreams, c->nupstreams + 1,
	    sizeof(*c->upstreams));
	c->upstreams[c->nupstreams++] = up;
	return up;
}

void
cfg_st_upstream(struct cfg_parser *p, const struct cfg_line *ln)
{
	struct config *c = cfg_parser_config(p);
	const struct config_upstream *old;

	if (!cfg_nargs(p, ln, 2, SIZE_MAX, CFG_UPSTREAM_USAGE))
		return;
	const char *name = ln->toks[1].text;
	if (!cfg_is_name(name)) {
		cfg_err(p, ln->lineno, "upstream: bad name %s (letters, "
		    "digits, '_', '-', '.')", cfg_q(name));
		return;
	}
	if ((old = config_upstream_find(c, name)) != NULL) {
		cfg_err(p, ln->lineno, "duplicate upstream %s (first at line "
		    "%d)", cfg_q(name), old->line);
		return;
	}
	struct config_upstream *up = cfg_upstream_add(c, name, ln->lineno);
	if (cfg_relay_smtp_url(p, ln, "upstream", ln->toks[2].text,
	    &up->relay) == 0)
		(void)cfg_relay_upstream_opts(p, ln, 3, up);
}

/* "proxy NAME|URL": a named upstream, or one made for the URL. */
static const struct config_upstream *
cfg_proxy_target(struct cfg_parser *p, const struct cfg_line *ln,
    const char *w)
{
	struct config *c = cfg_parser_config(p);
	const struct config_upstream *up = config_upstream_find(c, w);

	if (up != NULL)
		return up;
	if (strstr(w, "://") != NULL) {
		struct config_upstream *n = cfg_upstream_add(c, w, ln->lineno);
		return cfg_relay_smtp_url(p, ln, "proxy", w, &n->relay) == 0 ?
		    n : NULL;
	}
	int later = cfg_defined_later(p, "upstream", w);
	if (later != 0)
		cfg_err(p, ln->lineno, "proxy: upstream %s is defined later, "
		    "at line %d; define it before use", cfg_q(w), later);
	else
		cfg_err(p, ln->lineno, "proxy: %s is neither an upstream "
		    "(define it with \"upstream NAME URL\") nor a URL like "
		    "smtp://10.0.0.5:25", cfg_q(w));
	return NULL;
}

int
cfg_listen_proxy_opt(struct cfg_parser *p, const struct cfg_line *ln,
    size_t *ip, struct config_listen *l)
{
	const char *w = ln->toks[*ip].text;
	bool is_sni = strcmp(w, "proxy-sni") == 0;

	if (strcmp(w, "proxy") != 0 && !is_sni &&
	    strcmp(w, "proxy-rcpt") != 0)
		return 0;
	if (*ip + 1 >= ln->ntoks) {
		cfg_err(p, ln->lineno, "listen: %s: missing %s", w,
		    is_sni || w[5] == '-' ? "<TABLE>" : "an upstream");
		return -1;
	}
	const char *a = ln->toks[*ip + 1].text;
	*ip += 2;
	if (strcmp(w, "proxy") == 0) {
		if (l->proxy != NULL) {
			cfg_err(p, ln->lineno, "listen: proxy given twice");
			return -1;
		}
		return (l->proxy = cfg_proxy_target(p, ln, a)) != NULL ? 1 :
		    -1;
	}
	const struct config_table **dst = is_sni ? &l->proxy_sni :
	    &l->proxy_rcpt;
	if (*dst != NULL) {
		cfg_err(p, ln->lineno, "listen: %s given twice", w);
		return -1;
	}
	return (*dst = cfg_table_ref(p, ln, a, w)) != NULL ? 1 : -1;
}

void
cfg_proxy_check(struct cfg_parser *p, const struct config_listen *l,
    bool has_tls)
{
	if (l->proxy == NULL) {
		if (l->proxy_sni != NULL || l->proxy_rcpt != NULL)
			cfg_err(p, l->line, "listen: proxy-sni and proxy-rcpt "
			    "need \"proxy NAME|URL\" (the upstream when the "
			    "table has no entry)");
		return;
	}
	if (l->nomail)
		cfg_err(p, l->line, "listen: a proxy listener cannot be "
		    "nomail");
	if (l->proxy_sni != NULL && !has_tls)
		cfg_err(p, l->line, "listen: proxy-sni needs TLS on the "
		    "listener (a certificate)");
	if (l->auth && l->proxy_rcpt != NULL)
		cfg_err(p, l->line, "listen: auth on a proxy listener relays "
		    "AUTH to the upstream, which proxy-rcpt only picks at the "
		    "first recipient: use one or the other");
}

void
cfg_proxy_free(struct config *c)
{
	for (size_t i = 0; i < c->nupstreams; i++) {
		cfg_relay_clear_upstream(c->upstreams[i]);
		free(c->upstreams[i]);
	}
	free(c->upstreams);
}
