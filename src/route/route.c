/*
 * route/route.c: per recipient, walk the "match" rules in file order and
 * return the first rule's action whose every condition holds; also expand
 * maildir path templates safely.  Table lookups go through a
 * route_eval (route_private.h).  Knows nothing of how actions deliver.
 */
#include "route/route.h"

#include "route/route_private.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"
#include "log/log.h"
#include "table/table.h"
#include "util/util.h"

struct table *
route_table_of(struct router *r, const struct config_table *ct)
{
	size_t i = (size_t)(ct - r->c->tables);

	ASSERT(i < r->c->ntables);
	return r->tables[i];
}

struct router *
route_new(const struct config *c, const char **err_out)
{
	struct router *r = xcalloc(1, sizeof(*r));

	r->c = c;
	r->tables = xcalloc(c->ntables + 1, sizeof(*r->tables));
	for (size_t i = 0; i < c->ntables; i++)
		if ((r->tables[i] = table_open(&c->tables[i], err_out)) ==
		    NULL) {
			*err_out = util_err("%s:%d: %s", c->path,
			    c->tables[i].line, *err_out);
			route_free(&r);
			return NULL;
		}
	return r;
}

void
route_free(struct router **rp)
{
	struct router *r = *rp;

	if (r == NULL)
		return;
	for (size_t i = 0; r->c != NULL && i < r->c->ntables; i++)
		table_free(&r->tables[i]);
	free(r->tables);
	free(r);
	*rp = NULL;
}

const char *
route_domain(const char *addr)
{
	const char *at = strrchr(addr, '@');

	return at != NULL ? at + 1 : "";
}

/* The domain part of key: after its last '@', or all of it. */
static const char *
route_key_domain(const char *key)
{
	const char *at = strrchr(key, '@');

	return at != NULL ? at + 1 : key;
}

char *
route_canon(const char *key)
{
	const char *dom = route_key_domain(key);
	const char *err;
	char *a, *out;

	if (util_is_ascii(dom) || util_idna_alabel(dom, &a, &err) == -1)
		return xstrdup(key);
	out = xasprintf("%.*s%s", (int)(dom - key), key, a);
	free(a);
	return out;
}

/* ----- remembered lookups ----- */

int
route_eval_get(struct route_eval *e, const struct config_table *ct,
    const char *key, const struct table_values **vals_out)
{
	size_t ti = (size_t)(ct - e->r->c->tables);
	struct route_memo *m;

	for (size_t i = 0; i < e->nmemo; i++)
		if (e->memo[i].table == ti && strcasecmp(e->memo[i].key,
		    key) == 0) {
			*vals_out = &e->memo[i].vals;
			return e->memo[i].rc;
		}
	struct table *t = route_table_of(e->r, ct);
	if (!e->sync && table_is_remote(t)) {
		e->need = true;
		e->need_table = ti;
		free(e->need_key);
		e->need_key = xstrdup(key);
		return TABLE_PENDING;
	}
	e->memo = xreallocarray(e->memo, e->nmemo + 1, sizeof(*e->memo));
	m = &e->memo[e->nmemo++];
	memset(m, 0, sizeof(*m));
	m->table = ti;
	m->key = xstrdup(key);
	m->rc = table_get(t, key, &m->vals);
	*vals_out = &m->vals;
	return m->rc;
}

int
route_eval_get_dom(struct route_eval *e, const struct config_table *ct,
    const char *key, const struct table_values **vals_out)
{
	const char *dom = route_key_domain(key);
	char *sp[2], *k;
	int rc = route_eval_get(e, ct, key, vals_out);
	size_t n = rc == TABLE_MISSING ? util_idna_spellings(dom, sp) : 0;

	for (size_t i = 0; i < n; i++) {
		if (rc == TABLE_MISSING) {
			k = xasprintf("%.*s%s", (int)(dom - key), key, sp[i]);
			rc = route_eval_get(e, ct, k, vals_out);
			free(k);
		}
		free(sp[i]);
	}
	return rc;
}

void
route_eval_clear(struct route_eval *e)
{
	for (size_t i = 0; i < e->nmemo; i++) {
		free(e->memo[i].key);
		table_values_clear(&e->memo[i].vals);
	}
	free(e->memo);
	free(e->need_key);
	e->memo = NULL;
	e->nmemo = 0;
	e->need_key = NULL;
	e->need = false;
}

/* ----- the rules ----- */

/* 1 holds, 0 not, -1 a table failed, 2 a lookup is pending. */
static int
route_rc(int rc)
{
	return rc == TABLE_FOUND ? 1 : rc == TABLE_MISSING ? 0 :
	    rc == TABLE_PENDING ? 2 : -1;
}

/* addr in the table, as "local@domain" or through the "@domain" catch-all. */
static int
route_in_table(struct route_eval *e, const struct config_table *ct,
    const char *addr)
{
	const struct table_values *v;
	const char *dom = route_domain(addr);
	char key[512];
	int rc;

	if (addr[0] == '\0')
		return 0;
	if ((rc = route_rc(route_eval_get_dom(e, ct, addr, &v))) != 0)
		return rc;
	if (dom[0] == '\0' ||
	    util_snprintf(key, sizeof(key), "@%s", dom) == -1)
		return 0;
	return route_rc(route_eval_get_dom(e, ct, key, &v));
}

/* The domain of addr is a key of the table. */
static int
route_domain_in_table(struct route_eval *e, const struct config_table *ct,
    const char *addr)
{
	const struct table_values *v;
	const char *dom = route_domain(addr);

	if (dom[0] == '\0')
		return 0;
	return route_rc(route_eval_get_dom(e, ct, dom, &v));
}

/*
 * The domain D of "domain D": equal, ignoring case; ".D" is every domain
 * below D (sub.D, a.b.D) but not D itself, as in Postfix's tables.  Both
 * in their A-label form (route_canon, config/).
 */
static bool
route_domain_matches(const char *domain, const char *d)
{
	size_t n = strlen(domain), dn = strlen(d);

	if (d[0] != '.')
		return strcasecmp(domain, d) == 0;
	return n > dn && strcasecmp(domain + n - dn, d) == 0;
}

/* Loopback: 127.0.0.0/8 and ::1 (and ::ffff:127.x, v4-mapped). */
static bool
route_is_loopback(const char *ip)
{
	return strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0 ||
	    strncmp(ip, "::ffff:127.", 11) == 0;
}

/* 1 holds, 0 not, -1 a table failed, 2 a lookup is pending. */
static int
route_cond_holds(struct route_eval *e, const struct config_cond *cond,
    const struct route_client *cl, const char *sender, const char *rcpt)
{
	switch (cond->kind) {
	case CONFIG_COND_ANY:
		return 1;
	case CONFIG_COND_FROM_LOCAL:
		return cl == NULL || (cl->ip != NULL &&
		    route_is_loopback(cl->ip));
	case CONFIG_COND_FROM_AUTH:
		return cl != NULL && cl->auth_user != NULL;
	case CONFIG_COND_FROM_IP:
		return cl != NULL && util_cidr_contains(&cond->net, cl->ip);
	case CONFIG_COND_TO_DOMAIN:
		return route_domain_matches(route_domain(rcpt), cond->arg);
	case CONFIG_COND_TO_ADDR:
		/* XXX: RFC 5321 2.4 lets local parts be case-sensitive; like
		 * most MTAs we compare them case-insensitively. */
		return strcasecmp(rcpt, cond->arg) == 0;
	case CONFIG_COND_TO_TABLE:
		return route_in_table(e, cond->table, rcpt);
	case CONFIG_COND_TO_DOMAIN_TABLE:
		return route_domain_in_table(e, cond->table, rcpt);
	case CONFIG_COND_FROM_DOMAIN:
		/* The null sender <> has no domain, so never matches. */
		return sender[0] != '\0' &&
		    route_domain_matches(route_domain(sender), cond->arg);
	case CONFIG_COND_FROM_ADDR:
		return sender[0] != '\0' && strcasecmp(sender, cond->arg) == 0;
	case CONFIG_COND_FROM_TABLE:
		return route_in_table(e, cond->table, sender);
	case CONFIG_COND_FROM_DOMAIN_TABLE:
		return route_domain_in_table(e, cond->table, sender);
	}
	return 0;
}

/* A key of t is in domain, in any of its spellings (util_idna_spellings). */
static bool
route_table_has_domain(struct table *t, const char *domain)
{
	char *sp[2];
	bool has = table_has_domain(t, domain);
	size_t n = has ? 0 : util_idna_spellings(domain, sp);

	for (size_t i = 0; i < n; i++) {
		has = has || table_has_domain(t, sp[i]);
		free(sp[i]);
	}
	return has;
}

/* route_domain_is_ours() of domain in its A-label form. */
static int
route_canon_is_ours(struct route_eval *e, const char *domain)
{
	const struct router *r = e->r;
	char addr[300];
	int rc;

	for (size_t i = 0; i < r->c->nrules; i++) {
		const struct config_rule *rule = &r->c->rules[i];
		for (size_t k = 0; k < rule->nconds; k++) {
			const struct config_cond *cond = &rule->conds[k];
			switch (cond->kind) {
			case CONFIG_COND_TO_DOMAIN:
				if (route_domain_matches(domain, cond->arg))
					return 1;
				break;
			case CONFIG_COND_TO_ADDR:
				if (strcasecmp(domain,
				    route_domain(cond->arg)) == 0)
					return 1;
				break;
			case CONFIG_COND_TO_TABLE:
				if (route_table_has_domain(route_table_of(e->r,
				    cond->table), domain))
					return 1;
				break;
			case CONFIG_COND_TO_DOMAIN_TABLE:
				if (util_snprintf(addr, sizeof(addr), "@%s",
				    domain) == -1)
					break;
				if ((rc = route_domain_in_table(e, cond->table,
				    addr)) != 0)
					return rc;
				break;
			default:
				break;
			}
		}
	}
	return 0;
}

int
route_domain_is_ours(struct route_eval *e, const char *domain)
{
	char *canon;
	int rc;

	if (domain[0] == '\0')
		return 0;
	canon = route_canon(domain);
	rc = route_canon_is_ours(e, canon);
	free(canon);
	return rc;
}

/* route_rules() of the canonical sender and recipient (route_canon). */
static const struct config_action *
route_canon_rules(struct route_eval *e, const struct route_client *cl,
    const char *sender, const char *rcpt, enum route_status *status_out,
    bool *pending_out)
{
	int rc = 1;

	for (size_t i = 0; i < e->r->c->nrules; i++) {
		const struct config_rule *rule = &e->r->c->rules[i];
		size_t k;
		for (k = 0; k < rule->nconds; k++)
			if ((rc = route_cond_holds(e, &rule->conds[k], cl,
			    sender, rcpt)) != 1)
				break;
		if (rc == 2 || rc == -1)
			goto stop;
		if (k == rule->nconds)
			return rule->action;
	}
	/* RFC 5321 3.6.2: we relay for nobody, so a foreign domain is refused. */
	rc = route_domain(rcpt)[0] == '\0' ? 0 :
	    route_canon_is_ours(e, route_domain(rcpt));
	if (rc == 1 || rc == 0) {
		*status_out = rc == 1 ? ROUTE_NO_USER : ROUTE_NO_RELAY;
		return NULL;
	}
stop:
	*pending_out = rc == 2;
	*status_out = ROUTE_TEMPFAIL;
	return NULL;
}

const struct config_action *
route_rules(struct route_eval *e, const struct route_client *cl,
    const char *sender, const char *rcpt, enum route_status *status_out,
    bool *pending_out)
{
	/* RFC 5891 5.4: a domain's U-label and A-label forms are one
	 * domain; the rules hold their domains as A-labels. */
	char *cs = route_canon(sender != NULL ? sender : "");
	char *cr = route_canon(rcpt);
	const struct config_action *a;

	*pending_out = false;
	a = route_canon_rules(e, cl, cs, cr, status_out, pending_out);
	free(cs);
	free(cr);
	return a;
}

const struct config_action *
route_find(struct router *r, const char *sender, const char *rcpt,
    enum route_miss *miss_out)
{
	return route_find_client(r, NULL, sender, rcpt, miss_out);
}

const struct config_action *
route_find_client(struct router *r, const struct route_client *cl,
    const char *sender, const char *rcpt, enum route_miss *miss_out)
{
	struct route_eval e = { .r = r, .sync = true };
	enum route_status st = ROUTE_NO_RELAY;
	bool pending;
	const struct config_action *a = route_rules(&e, cl, sender, rcpt, &st,
	    &pending);

	route_eval_clear(&e);
	*miss_out = st == ROUTE_NO_USER ? ROUTE_UNKNOWN_USER :
	    ROUTE_RELAY_DENIED;
	return a;
}

/*
 * Append s (len bytes) made safe as one path component: lower-case, bytes
 * outside [a-z0-9._+=-] become '_', a leading '.' becomes '_', and an empty
 * part is "_".  So "..", "a/b" or ".hidden" cannot leave or hide.
 */
static void
route_add_safe(struct util_buf *b, const char *s, size_t len)
{
	if (len == 0) {
		util_buf_add(b, "_", 1);
		return;
	}
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '.' || c == '_' || c == '+' || c == '=' || c == '-'))
			c = '_';
		if (i == 0 && c == '.')
			c = '_';
		util_buf_add(b, &c, 1);
	}
}

int
route_expand(const char *tmpl, const char *rcpt, char **out,
    const char **err_out)
{
	struct util_buf b = { 0 };
	const char *at = strrchr(rcpt, '@');
	size_t ulen = at != NULL ? (size_t)(at - rcpt) : strlen(rcpt);
	const char *dom = at != NULL ? at + 1 : "";

	for (const char *s = tmpl; *s != '\0'; s++) {
		if (*s != '%') {
			util_buf_add(&b, s, 1);
			continue;
		}
		if (s[1] == '%') {
			util_buf_add(&b, "%", 1);
			s++;
			continue;
		}
		const char *end = s[1] == '{' ? strchr(s, '}') : NULL;
		if (end == NULL) {
			*err_out = "bad '%' in template (use %{rcpt}, "
			    "%{rcpt.user}, %{rcpt.domain} or %%)";
			goto fail;
		}
		size_t n = (size_t)(end - s - 2);
		if (n == 4 && strncmp(s + 2, "rcpt", 4) == 0) {
			route_add_safe(&b, rcpt, ulen);
			util_buf_add(&b, "@", 1);
			route_add_safe(&b, dom, strlen(dom));
		} else if (n == 9 && strncmp(s + 2, "rcpt.user", 9) == 0) {
			route_add_safe(&b, rcpt, ulen);
		} else if (n == 11 && strncmp(s + 2, "rcpt.domain", 11) == 0) {
			route_add_safe(&b, dom, strlen(dom));
		} else {
			*err_out = "unknown %{...} variable in template";
			goto fail;
		}
		s = end;
	}
	*out = xstrndup(b.data != NULL ? b.data : "", b.len);
	util_buf_clear(&b);
	return 0;
fail:
	util_buf_clear(&b);
	return -1;
}
