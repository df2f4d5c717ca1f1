/*
 * route/route.c: per recipient, walk the "match" rules in file order and
 * return the first rule's action whose every condition holds; also expand
 * maildir path templates safely.  Knows nothing of how actions deliver.
 */
#include "route/route.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"
#include "log/log.h"
#include "table/table.h"
#include "util/util.h"

struct router {
	const struct config	*c;		/* borrowed */
	struct table		**tables;	/* owned; parallel to c->tables */
};

static struct table *
route_table(const struct router *r, const struct config_table *ct)
{
	size_t i = (size_t)(ct - r->c->tables);

	ASSERT(i < r->c->ntables);
	return r->tables[i];
}

struct table *
route_table_of(struct router *r, const struct config_table *ct)
{
	return route_table(r, ct);
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

/* The domain of "local@domain" (after the last '@'), or "" without one. */
static const char *
route_domain(const char *addr)
{
	const char *at = strrchr(addr, '@');

	return at != NULL ? at + 1 : "";
}

/* addr in the table, as "local@domain" or through the "@domain" catch-all. */
static bool
route_in_table(struct table *t, const char *addr)
{
	const char *dom = route_domain(addr);
	char key[512];

	if (addr[0] == '\0')
		return false;
	if (table_lookup(t, addr, NULL))
		return true;
	if (dom[0] == '\0' ||
	    util_snprintf(key, sizeof(key), "@%s", dom) == -1)
		return false;
	return table_lookup(t, key, NULL);
}

/* Is ip (numeric) inside the condition's network? */
static bool
route_ip_in(const struct config_cond *cond, const char *ip)
{
	unsigned char a[16];
	unsigned full = cond->prefix / 8, rest = cond->prefix % 8;

	if (ip == NULL || inet_pton(cond->family, ip, a) != 1)
		return false;
	if (memcmp(a, cond->net, full) != 0)
		return false;
	return rest == 0 || ((a[full] ^ cond->net[full]) &
	    (unsigned char)(0xff00u >> rest)) == 0;
}

/* Loopback: 127.0.0.0/8 and ::1 (and ::ffff:127.x, v4-mapped). */
static bool
route_is_loopback(const char *ip)
{
	return strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0 ||
	    strncmp(ip, "::ffff:127.", 11) == 0;
}

static bool
route_cond_holds(const struct router *r, const struct config_cond *cond,
    const struct route_client *cl, const char *sender, const char *rcpt)
{
	switch (cond->kind) {
	case CONFIG_COND_ANY:
		return true;
	case CONFIG_COND_FROM_LOCAL:
		return cl == NULL || (cl->ip != NULL &&
		    route_is_loopback(cl->ip));
	case CONFIG_COND_FROM_AUTH:
		return cl != NULL && cl->auth_user != NULL;
	case CONFIG_COND_FROM_IP:
		return cl != NULL && route_ip_in(cond, cl->ip);
	case CONFIG_COND_TO_DOMAIN:
		return strcasecmp(route_domain(rcpt), cond->arg) == 0;
	case CONFIG_COND_TO_ADDR:
		/* XXX: RFC 5321 2.4 lets local parts be case-sensitive; like
		 * most MTAs we compare them case-insensitively. */
		return strcasecmp(rcpt, cond->arg) == 0;
	case CONFIG_COND_TO_TABLE:
		return route_in_table(route_table(r, cond->table), rcpt);
	case CONFIG_COND_FROM_DOMAIN:
		/* The null sender <> has no domain, so never matches. */
		return sender[0] != '\0' &&
		    strcasecmp(route_domain(sender), cond->arg) == 0;
	case CONFIG_COND_FROM_ADDR:
		return sender[0] != '\0' && strcasecmp(sender, cond->arg) == 0;
	case CONFIG_COND_FROM_TABLE:
		return route_in_table(route_table(r, cond->table), sender);
	}
	return false;
}

/* Is domain ours: named by some "to" condition of some rule? */
static bool
route_domain_is_ours(const struct router *r, const char *domain)
{
	if (domain[0] == '\0')
		return false;
	for (size_t i = 0; i < r->c->nrules; i++) {
		const struct config_rule *rule = &r->c->rules[i];
		for (size_t k = 0; k < rule->nconds; k++) {
			const struct config_cond *cond = &rule->conds[k];
			switch (cond->kind) {
			case CONFIG_COND_TO_DOMAIN:
				if (strcasecmp(domain, cond->arg) == 0)
					return true;
				break;
			case CONFIG_COND_TO_ADDR:
				if (strcasecmp(domain,
				    route_domain(cond->arg)) == 0)
					return true;
				break;
			case CONFIG_COND_TO_TABLE:
				if (table_has_domain(route_table(r,
				    cond->table), domain))
					return true;
				break;
			default:
				break;
			}
		}
	}
	return false;
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
	if (sender == NULL)
		sender = "";
	for (size_t i = 0; i < r->c->nrules; i++) {
		const struct config_rule *rule = &r->c->rules[i];
		size_t k;
		for (k = 0; k < rule->nconds; k++)
			if (!route_cond_holds(r, &rule->conds[k], cl, sender,
			    rcpt))
				break;
		if (k == rule->nconds)
			return rule->action;
	}
	/* RFC 5321 3.6.2: we relay for nobody, so a foreign domain is refused. */
	*miss_out = route_domain_is_ours(r, route_domain(rcpt)) ?
	    ROUTE_UNKNOWN_USER : ROUTE_RELAY_DENIED;
	return NULL;
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
