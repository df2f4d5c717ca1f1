/*
 * config/parse_route.c: where mail goes: the "match COND... action NAME"
 * rules, first match wins, over the actions defined before them
 * (parse_action.c).  route/ applies them.
 */
#include "config/config.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_private.h"
#include "util/util.h"

static void
cfg_cond_free(struct config_cond *conds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(conds[i].arg);
	free(conds);
}

/* RFC 5322 3.2.3 atext, and UTF-8 octets (RFC 6531 3.3). */
static bool
cfg_is_atext(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c >= 0x80 ||
	    (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/*
 * The length of the local part at the start of s (RFC 5321 4.1.2: a
 * Dot-string, or a Quoted-string), up to its '@'; 0 when it is not one.
 */
static size_t
cfg_local_len(const char *s)
{
	size_t i = 0;

	if (s[0] == '"') {
		for (i = 1; s[i] != '"'; i++) {
			if (s[i] == '\\' && s[i + 1] != '\0')
				i++;
			if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
				return 0;	/* the end, or a control */
		}
		return i + 1;
	}
	for (;; i++) {
		size_t atom = i;
		while (cfg_is_atext((unsigned char)s[i]))
			i++;
		if (i == atom)
			return 0;	/* a '.' at either end, or two */
		if (s[i] != '.')
			return i;
	}
}

/*
 * "user@Example.ORG" with the domain in its A-label form, lower case, or
 * NULL and *why_out (owned by the caller) saying what is wrong.
 */
static char *
cfg_addr(const char *s, char **why_out)
{
	size_t n = cfg_local_len(s);
	const char *why;
	char *dom;

	if (s[0] == '@')
		*why_out = xstrdup("nothing before the '@' (a whole domain "
		    "is \"domain D\")");
	else if (strchr(s, '@') == NULL)
		*why_out = xstrdup("no '@'");
	else if (n == 0 || s[n] != '@')
		*why_out = xstrdup("the local part is not letters, digits, "
		    "!#$%&'*+-/=?^_`{|}~ and single dots, nor a \"quoted "
		    "string\", followed by one '@'");
	else if (n > 64)
		*why_out = xstrdup("the local part is longer than 64 octets");
	else if (s[n + 1] == '\0')
		*why_out = xstrdup("nothing after the '@'");
	else if ((why = cfg_domain_why(s + n + 1, true)) != NULL)
		*why_out = xasprintf("the domain %s %s", cfg_q(s + n + 1),
		    why);
	else if (util_idna_alabel(s + n + 1, &dom, &why) == -1)
		*why_out = xasprintf("the domain %s is not a valid "
		    "internationalized domain name (%s)", cfg_q(s + n + 1),
		    why);
	else {
		char *a = xasprintf("%.*s@%s", (int)n, s, dom);
		free(dom);
		return a;
	}
	return NULL;
}

/*
 * The D of "to domain D" (from too): a domain name, or ".D" for every
 * domain below D; in its A-label form, lower case, the one route/ compares
 * (RFC 5891 5.4: "bücher.example" and "xn--bcher-kva.example" are one
 * domain).  Owned by the caller; NULL after reporting.
 */
static char *
cfg_cond_domain(struct cfg_parser *p, const struct cfg_line *ln,
    const char *dir, const char *d)
{
	const char *why;
	char *a, *dot;

	if (d[0] == '*' && d[1] == '.') {
		cfg_err(p, ln->lineno, "match: %s domain %s: no wildcards; "
		    "write %s to match every domain below %s", dir, cfg_q(d),
		    d + 1, d + 2);
		return NULL;
	}
	if ((why = cfg_domain_why(d[0] == '.' ? d + 1 : d, true)) != NULL) {
		cfg_err(p, ln->lineno, "match: %s domain %s%s %s", dir,
		    cfg_q(d), d[0] == '.' ? " after its leading '.'" : "",
		    why);
		return NULL;
	}
	if (util_idna_alabel(d[0] == '.' ? d + 1 : d, &a, &why) == -1) {
		cfg_err(p, ln->lineno, "match: %s domain %s is not a valid "
		    "internationalized domain name (%s)", dir, cfg_q(d), why);
		return NULL;
	}
	if (d[0] != '.')
		return a;
	dot = xasprintf(".%s", a);
	free(a);
	return dot;
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
		if (i + 2 >= ln->ntoks || util_cidr_parse(ln->toks[i + 2].text,
		    &cond->net) == -1) {
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
		const char *d = ln->toks[i + 2].text;
		size_t dl = strlen(d);
		if (!ln->toks[i + 2].quoted && dl >= 3 && d[0] == '<' &&
		    d[dl - 1] == '>') {
			if ((cond->table = cfg_table_ref(p, ln, d,
			    "match")) == NULL)
				return -1;
			cond->kind = to ? CONFIG_COND_TO_DOMAIN_TABLE :
			    CONFIG_COND_FROM_DOMAIN_TABLE;
			*ip = i + 3;
			return 0;
		}
		if ((cond->arg = cfg_cond_domain(p, ln, dir, d)) == NULL)
			return -1;
		cond->kind = to ? CONFIG_COND_TO_DOMAIN :
		    CONFIG_COND_FROM_DOMAIN;
		*ip = i + 3;
		return 0;
	}
	if (!t->quoted && tl >= 2 && t->text[0] == '<' &&
	    t->text[tl - 1] == '>') {
		char *name = xstrndup(t->text + 1, tl - 2);
		cond->table = config_table_find(p->c, name);
		if (cond->table == NULL) {
			cfg_err_undefined(p, ln, "match", "table", name);
			free(name);
			return -1;
		}
		free(name);
		cond->kind = to ? CONFIG_COND_TO_TABLE :
		    CONFIG_COND_FROM_TABLE;
		*ip = i + 2;
		return 0;
	}
	char *why = NULL;
	if ((cond->arg = cfg_addr(t->text, &why)) == NULL) {
		cfg_err(p, ln->lineno, "match: %s %s: %s (expected domain D, "
		    "\"user@domain\" or <table>)", dir, cfg_q(t->text), why);
		free(why);
		return -1;
	}
	cond->kind = to ? CONFIG_COND_TO_ADDR : CONFIG_COND_FROM_ADDR;
	*ip = i + 2;
	return 0;
}

void
cfg_st_match(struct cfg_parser *p, const struct cfg_line *ln)
{
	struct config *c = p->c;
	struct config_rule r = { 0 };
	size_t i = 1;
	bool bad = false;

	for (size_t k = 1; k < ln->ntoks; k++)
		if (ln->toks[k].kind != CFG_TOK_WORD) {
			cfg_err(p, ln->lineno, "match: unexpected '%s'",
			    ln->toks[k].text);
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
		cfg_err_undefined(p, ln, "match", "action", name);
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

void
cfg_route_free(struct config *c)
{
	for (size_t i = 0; i < c->nactions; i++) {
		free(c->actions[i].name);
		free(c->actions[i].path);
	}
	free(c->actions);
	for (size_t i = 0; i < c->nrules; i++)
		cfg_cond_free(c->rules[i].conds, c->rules[i].nconds);
	free(c->rules);
}
