/*
 * route/resolve.c: one recipient all the way to its targets: alias tables
 * first (recursively, as Postfix's virtual aliases: an address that maps
 * to itself is final, a cycle through any other or more than the depth
 * limit is a loop, the same target reached twice is delivered once, a
 * value that is not an address is an error), then the rules for each
 * address (a member none takes is kept for the queue to bounce), then
 * the action's own lookups (the maildir path from a table, the owner in a
 * passwd table).  The evaluation remembers every answer;
 * on an event loop it stops at the first lookup a backend must answer and
 * runs again from the start when it is in, so nothing ever blocks.
 */
#include "route/route.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"
#include "log/log.h"
#include "route/route_private.h"
#include "smtp/smtp.h"
#include "table/table.h"
#include "util/util.h"

#define ROUTE_ADDR_MAX	512

struct route_query {
	struct route_eval	 e;
	struct table_loop	*tl;		/* borrowed */
	struct table_req	*req;		/* the lookup under way */
	route_done_cb		*cb;
	void			*arg;
	struct route_client	 cl;		/* strings owned */
	char			*sender, *rcpt;	/* owned */
	bool			 sender_mode;	/* route_sender_start() */
	bool			 protect;
};

void
route_result_clear(struct route_result *res)
{
	for (size_t i = 0; i < res->n; i++) {
		free(res->targets[i].rcpt);
		free(res->targets[i].arg);
	}
	free(res->targets);
	memset(res, 0, sizeof(*res));
}

/* An evaluation step: 0 done, 2 pending, -1 stopped with res->status. */
enum { STEP_DONE = 0, STEP_PENDING = 2, STEP_STOP = -1 };

static int route_stop(struct route_result *res, enum route_status st,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int
route_stop(struct route_result *res, enum route_status st, const char *fmt,
    ...)
{
	va_list ap;

	res->status = st;
	va_start(ap, fmt);
	if (vsnprintf(res->why, sizeof(res->why), fmt, ap) < 0)
		res->why[0] = '\0';
	va_end(ap);
	return STEP_STOP;
}

/*
 * The alias values of addr: its own key in every table, then "@domain" in
 * every table, as Postfix's virtual_alias_maps (mail_addr_find), so that
 * one table's catch-all never hides an address another table names; rc as
 * tables.
 */
static int
route_alias_get(struct route_eval *e, const char *addr,
    const struct table_values **vals_out)
{
	const struct config *c = e->r->c;
	const char *dom = route_domain(addr);
	char catchall[ROUTE_ADDR_MAX + 2];
	const char *keys[2] = { addr, catchall };
	size_t nkeys = dom[0] != '\0' && util_snprintf(catchall,
	    sizeof(catchall), "@%s", dom) == 0 ? 2 : 1;
	int rc;

	for (size_t k = 0; k < nkeys; k++)
		for (size_t i = 0; i < c->naliases; i++) {
			rc = route_eval_get_dom(e, c->aliases[i], keys[k],
			    vals_out);
			if (rc != TABLE_MISSING)
				return rc;
		}
	return TABLE_MISSING;
}

static bool
route_have(const struct table_values *list, const char *addr)
{
	for (size_t i = 0; i < list->n; i++)
		if (strcasecmp(list->v[i], addr) == 0)
			return true;
	return false;
}

/*
 * An alias's value v as an address ("local@domain", with or without the
 * <>) or a bare user name (a system user's, as in /etc/aliases), checked
 * by the parser the listener uses and canonical in *out_addr as a
 * client's recipient is; -1 with *why_out.
 */
static int
route_alias_target(const char *v, char *out_addr, size_t outsz,
    const char **why_out)
{
	char path[SMTP_PATH_MAX + 3];
	bool bare = strchr(v, '@') == NULL && v[0] != '<';
	struct smtp_addr a;
	const char *end;
	size_t len;

	if (strpbrk(v, " \t") != NULL) {
		*why_out = "a blank in an address (separate addresses with "
		    "commas)";
		return -1;
	}
	/* A bare name is checked as the local part of an address. */
	if (util_snprintf(path, sizeof(path), bare ? "<%s@invalid>" :
	    v[0] == '<' ? "%s" : "<%s>", v) == -1) {
		*why_out = "longer than an address may be";
		return -1;
	}
	len = strlen(path);
	if (smtp_addr_parse(path, len, false, &a, &end, why_out) == -1)
		return -1;
	if (end != path + len) {
		*why_out = "text after the address";
		return -1;
	}
	*why_out = "longer than an address may be";
	return util_snprintf(out_addr, outsz, "%s", bare ? a.local : a.addr);
}

/* An expansion under way: what route_expand_alias() carries down. */
struct route_expansion {
	struct table_values	 path;		/* the ancestors */
	struct table_values	 selfs;		/* addresses that map to
						   themselves: final */
	struct table_values	 finals;	/* the final addresses */
	bool			 aliased;	/* some table had the address */
};

static void
route_expansion_clear(struct route_expansion *x)
{
	table_values_clear(&x->path);
	table_values_clear(&x->selfs);
	table_values_clear(&x->finals);
}

/*
 * addr's alias values as canonical addresses into *out; a value that is
 * not an address stops with ROUTE_BAD_ALIAS, as does an empty list: an
 * alias that names no one must not take mail in.
 */
static int
route_alias_targets(const struct table_values *vals, const char *addr,
    struct table_values *out, struct route_result *res)
{
	struct table_values list = { 0 };
	char a[SMTP_PATH_MAX + 1];
	const char *why;
	int rc = STEP_DONE;

	table_values_split(vals, &list);
	if (list.n == 0)
		rc = route_stop(res, ROUTE_BAD_ALIAS, "alias <%s> has no "
		    "target", addr);
	for (size_t i = 0; i < list.n && rc == STEP_DONE; i++) {
		if (route_alias_target(list.v[i], a, sizeof(a), &why) == -1)
			rc = route_stop(res, ROUTE_BAD_ALIAS, "alias <%s>: "
			    "target '%.100s%s' is not an address: %s", addr,
			    list.v[i], strlen(list.v[i]) > 100 ? "..." : "",
			    why);
		else if (!route_have(out, a))
			table_values_add(out, a, strlen(a));
	}
	table_values_clear(&list);
	return rc;
}

/* Expand addr into final addresses (x->finals). */
static int
route_expand_alias(struct route_eval *e, const char *addr,
    struct route_expansion *x, struct route_result *res)
{
	const struct config *c = e->r->c;
	const struct table_values *vals;
	struct table_values list = { 0 };
	int rc;

	if (x->path.n > c->alias_depth)
		return route_stop(res, ROUTE_LOOP, "alias nesting deeper than "
		    "the limit at <%s>", addr);
	rc = route_alias_get(e, addr, &vals);
	if (rc == TABLE_PENDING)
		return STEP_PENDING;
	if (rc == TABLE_ERROR)
		return route_stop(res, ROUTE_TEMPFAIL, "alias table "
		    "unavailable for <%s>", addr);
	if (rc == TABLE_MISSING) {
		if (!route_have(&x->finals, addr))
			table_values_add(&x->finals, addr, strlen(addr));
		goto count;
	}
	x->aliased = true;
	if ((rc = route_alias_targets(vals, addr, &list, res)) != STEP_DONE) {
		table_values_clear(&list);
		return rc;
	}
	if (route_have(&list, addr) && !route_have(&x->selfs, addr))
		table_values_add(&x->selfs, addr, strlen(addr));
	table_values_add(&x->path, addr, strlen(addr));
	for (size_t i = 0; i < list.n && rc == STEP_DONE; i++) {
		const char *v = list.v[i];
		/*
		 * Back at an ancestor: one that maps to itself is final (ann:
		 * ann, ben with ben: ben, ann), any other is a loop.
		 */
		if (!route_have(&x->path, v))
			rc = route_expand_alias(e, v, x, res);
		else if (!route_have(&x->selfs, v))
			rc = route_stop(res, ROUTE_LOOP, "alias loop through "
			    "<%s>", v);
		else if (!route_have(&x->finals, v))
			table_values_add(&x->finals, v, strlen(v));
	}
	free(x->path.v[--x->path.n]);
	table_values_clear(&list);
	if (rc != STEP_DONE)
		return rc;
count:
	if (x->finals.n > c->alias_targets)
		return route_stop(res, ROUTE_TOO_MANY, "more alias targets "
		    "than the limit for <%s>", addr);
	return STEP_DONE;
}

/* The user a passwd owner table is asked for: the local part, lower. */
static char *
route_owner_key(const char *addr)
{
	const char *at = strrchr(addr, '@');

	return util_strlower(xstrndup(addr, at != NULL ? (size_t)(at - addr) :
	    strlen(addr)));
}

/*
 * Folder path p spelled one way, in place: no "//", no "." component, no
 * trailing "/", so that one Maildir named in several spellings is one
 * destination, with one copy.  ".." stays: where it leads depends on
 * symlinks on the way.
 */
static void
route_folder_clean(char *p)
{
	const char *in = p;
	char *out = p;
	bool abs = *p == '/';

	while (*in != '\0') {
		size_t n = strcspn(in, "/");

		/* out stays behind in, by a '/' once a component is out. */
		if (n > 0 && !(n == 1 && in[0] == '.')) {
			if (out != p || abs)
				*out++ = '/';
			memmove(out, in, n);
			out += n;
		}
		in += n + (in[n] == '/');
	}
	if (out == p && abs)
		*out++ = '/';
	else if (out == p && *p != '\0')
		*out++ = '.';
	*out = '\0';
}

/* The spool entry of a maildir action for addr; see route_target. */
static int
route_maildir(struct route_eval *e, const struct config_action *a,
    const char *addr, struct route_target *t, struct route_result *res)
{
	const struct table_values *vals;
	char *owner = NULL, *folder = NULL;
	const char *err;
	int rc;

	if (a->path_table != NULL) {
		rc = route_eval_get_dom(e, a->path_table, addr, &vals);
		if (rc == TABLE_MISSING) {
			char key[ROUTE_ADDR_MAX + 2];
			if (util_snprintf(key, sizeof(key), "@%s",
			    route_domain(addr)) == 0 && route_domain(addr)[0])
				rc = route_eval_get_dom(e, a->path_table, key,
				    &vals);
		}
		if (rc == TABLE_PENDING)
			return STEP_PENDING;
		if (rc == TABLE_ERROR)
			return route_stop(res, ROUTE_TEMPFAIL, "maildir table "
			    "unavailable for <%s>", addr);
		if (rc == TABLE_MISSING || vals->n == 0 || vals->v[0][0] == '\0')
			return route_stop(res, ROUTE_NO_USER, "no maildir for "
			    "<%s>", addr);
		if (config_maildir_path_check(a, vals->v[0], &err) == -1)
			return route_stop(res, ROUTE_BAD_MAILDIR, "maildir "
			    "table <%s>: value '%.100s%s' for <%s>: %s",
			    a->path_table->name, vals->v[0],
			    strlen(vals->v[0]) > 100 ? "..." : "", addr, err);
		folder = xstrdup(vals->v[0]);
	} else if (route_expand(a->path, addr, &folder, &err) == -1)
		return route_stop(res, ROUTE_TEMPFAIL, "maildir template: %s",
		    err);
	route_folder_clean(folder);
	if (a->owner_table != NULL) {
		owner = route_owner_key(addr);
		rc = route_eval_get(e, a->owner_table, owner, &vals);
		if (rc != TABLE_FOUND) {
			free(owner);
			free(folder);
			if (rc == TABLE_PENDING)
				return STEP_PENDING;
			return route_stop(res, rc == TABLE_ERROR ?
			    ROUTE_TEMPFAIL : ROUTE_NO_USER, "no system user "
			    "for <%s>", addr);
		}
	} else if (a->owner != NULL)
		owner = xstrdup(a->owner);
	if (owner != NULL) {
		t->kind = "maildir-owner";
		t->arg = xasprintf("%s:%s", owner, folder);
		free(owner);
		free(folder);
	} else {
		t->kind = "maildir";
		t->arg = folder;
	}
	return STEP_DONE;
}

/* Route one final address into a target. */
static int
route_one(struct route_eval *e, const struct route_client *cl,
    const char *sender, const char *addr, struct route_result *res)
{
	enum route_status st;
	bool pending;
	const struct config_action *a = route_rules(e, cl, sender, addr, &st,
	    &pending);
	struct route_target t = { .action = a };
	int rc;

	if (a == NULL) {
		if (pending)
			return STEP_PENDING;
		return route_stop(res, st, "%s <%s>", st == ROUTE_TEMPFAIL ?
		    "a table lookup failed (no answer in time, or an error) "
		    "for" : "no rule for", addr);
	}
	if (a->kind == CONFIG_ACTION_MAILDIR) {
		if ((rc = route_maildir(e, a, addr, &t, res)) != STEP_DONE)
			return rc;
	} else {
		t.kind = config_action_kind_name(a->kind);
		if (a->kind != CONFIG_ACTION_DISCARD)
			t.arg = xstrdup(a->name);
	}
	for (size_t i = 0; i < res->n; i++)	/* the same place: once */
		if (res->targets[i].action == a && strcmp(res->targets[i].kind,
		    t.kind) == 0 && (t.arg == NULL ? res->targets[i].arg ==
		    NULL : res->targets[i].arg != NULL &&
		    strcmp(res->targets[i].arg, t.arg) == 0) &&
		    (t.arg != NULL || strcasecmp(res->targets[i].rcpt,
		    addr) == 0)) {
			free(t.arg);
			return STEP_DONE;
		}
	t.rcpt = xstrdup(addr);
	res->targets = xreallocarray(res->targets, res->n + 1,
	    sizeof(*res->targets));
	res->targets[res->n++] = t;
	return STEP_DONE;
}

/*
 * An alias member route_one() stopped at with a permanent miss (res's
 * status and why): a target for the queue to bounce, so the alias rcpt
 * still takes mail for its other members, never a relay attempt.
 */
static int
route_unroutable(const char *rcpt, const char *member,
    struct route_result *res)
{
	struct route_target t = { .rcpt = xstrdup(member),
	    .kind = ROUTE_KIND_UNROUTABLE };

	/* RFC 3463: X.1.1 no such mailbox, X.1.2 no route to its domain. */
	t.arg = xasprintf("%s %s, a member of <%s>", res->status ==
	    ROUTE_NO_USER ? "5.1.1" : "5.1.2", res->why, rcpt);
	res->targets = xreallocarray(res->targets, res->n + 1,
	    sizeof(*res->targets));
	res->targets[res->n++] = t;
	res->status = ROUTE_OK;
	res->why[0] = '\0';
	return STEP_DONE;
}

/* Does some target of res take mail (not only unroutable members)? */
static bool
route_some_routed(const struct route_result *res)
{
	for (size_t i = 0; i < res->n; i++)
		if (res->targets[i].action != NULL)
			return true;
	return false;
}

/* The whole evaluation from the start; STEP_PENDING when e->need. */
static int
route_run(struct route_eval *e, const struct route_client *cl,
    const char *sender, const char *rcpt, struct route_result *res)
{
	struct route_expansion x = { 0 };
	int rc;

	route_result_clear(res);
	if (strlen(rcpt) > ROUTE_ADDR_MAX) {
		route_stop(res, ROUTE_NO_USER, "address too long");
		return STEP_DONE;
	}
	rc = route_expand_alias(e, rcpt, &x, res);
	for (size_t i = 0; rc == STEP_DONE && i < x.finals.n; i++) {
		rc = route_one(e, cl, sender, x.finals.v[i], res);
		if (rc == STEP_STOP && x.aliased && (res->status ==
		    ROUTE_NO_USER || res->status == ROUTE_NO_RELAY))
			rc = route_unroutable(rcpt, x.finals.v[i], res);
	}
	route_expansion_clear(&x);
	if (rc == STEP_PENDING) {
		route_result_clear(res);	/* the next run starts again */
		return STEP_PENDING;
	}
	if (rc == STEP_DONE && !route_some_routed(res) && res->n > 0) {
		/* Every member failed: the targets stay, for the log. */
		route_stop(res, ROUTE_NO_MEMBER, "no member of alias <%s> is "
		    "routed", rcpt);
		return STEP_DONE;
	}
	if (rc == STEP_STOP) {
		for (size_t i = 0; i < res->n; i++) {
			free(res->targets[i].rcpt);
			free(res->targets[i].arg);
		}
		free(res->targets);
		res->targets = NULL;
		res->n = 0;
	} else
		res->status = ROUTE_OK;
	return STEP_DONE;
}

void
route_resolve(struct router *r, const struct route_client *cl,
    const char *sender, const char *rcpt, struct route_result *out)
{
	struct route_eval e = { .r = r, .sync = true };

	memset(out, 0, sizeof(*out));
	(void)route_run(&e, cl, sender != NULL ? sender : "", rcpt, out);
	route_eval_clear(&e);
}

/* ----- on an event loop ----- */

static void	route_lookup_done_cb(void *arg, int rc,
		    const struct table_values *vals);

/* Remember an answer for the pending lookup. */
static void
route_memo_add(struct route_eval *e, int rc, const struct table_values *v)
{
	struct route_memo *m;

	e->memo = xreallocarray(e->memo, e->nmemo + 1, sizeof(*e->memo));
	m = &e->memo[e->nmemo++];
	memset(m, 0, sizeof(*m));
	m->table = e->need_table;
	m->key = e->need_key;
	e->need_key = NULL;
	e->need = false;
	m->rc = rc;
	for (size_t i = 0; v != NULL && rc == TABLE_FOUND && i < v->n; i++)
		table_values_add(&m->vals, v->v[i], strlen(v->v[i]));
}

/* Map a condition answer (1, 0, -1, 2) to a step. */
static int
route_sender_step(int rc, struct route_result *res)
{
	if (rc == 2)
		return STEP_PENDING;
	if (rc == -1)
		return route_stop(res, ROUTE_TEMPFAIL, "a sender table did not "
		    "answer");
	return rc;
}

/* Does the sender's domain need AUTH?  1 yes, 0 no, or a step. */
static int
route_sender_protected(struct route_eval *e, const char *dom, bool protect,
    struct route_result *res)
{
	const struct config *c = e->r->c;
	const struct table_values *v;
	char *canon = route_canon(dom);	/* as config/ holds the list */
	bool listed = false;
	int rc;

	for (char **d = c->sender_auth; d != NULL && *d != NULL; d++)
		listed = listed || strcasecmp(*d, canon) == 0;
	free(canon);
	if (listed)
		return 1;
	for (size_t i = 0; c->sender_auth_tables != NULL &&
	    c->sender_auth_tables[i] != NULL; i++) {
		rc = route_eval_get_dom(e, c->sender_auth_tables[i], dom, &v);
		if (rc == TABLE_PENDING)
			return STEP_PENDING;
		if (rc == TABLE_ERROR)
			return route_stop(res, ROUTE_TEMPFAIL, "sender-auth "
			    "table unavailable");
		if (rc == TABLE_FOUND)
			return 1;
	}
	if (!protect)
		return 0;
	rc = route_domain_is_ours(e, dom);
	return rc == 1 || rc == 0 ? rc : route_sender_step(rc, res);
}

/* The sender check; see route_sender_start(). */
static int
route_run_sender(struct route_eval *e, const struct route_client *cl,
    bool protect, const char *sender, struct route_result *res)
{
	const struct config *c = e->r->c;
	const char *dom = route_domain(sender);
	const struct table_values *v;
	struct table_values list = { 0 };
	char at[ROUTE_ADDR_MAX + 2];
	int rc;

	route_result_clear(res);
	if (sender[0] == '\0' || dom[0] == '\0')
		return STEP_DONE;	/* <> and bare names: nothing to own */
	if (cl == NULL || cl->auth_user == NULL) {
		rc = route_sender_protected(e, dom, protect, res);
		if (rc == 1)
			route_stop(res, ROUTE_SENDER_AUTH, "sender domain %s "
			    "needs authentication", dom);
		return rc == STEP_PENDING ? rc : STEP_DONE;
	}
	if (c->sender_login == NULL)
		return STEP_DONE;
	rc = route_eval_get(e, c->sender_login, cl->auth_user, &v);
	if (rc == TABLE_PENDING)
		return STEP_PENDING;
	if (rc == TABLE_ERROR) {
		route_stop(res, ROUTE_TEMPFAIL, "sender-login table "
		    "unavailable");
		return STEP_DONE;
	}
	if (rc == TABLE_FOUND)
		table_values_split(v, &list);
	(void)util_snprintf(at, sizeof(at), "@%s", dom);
	bool owned = route_have(&list, sender) || route_have(&list, at);
	table_values_clear(&list);
	if (!owned)
		route_stop(res, ROUTE_SENDER_NOT_OWNED, "<%s> is not owned by "
		    "%s", sender, cl->auth_user);
	return STEP_DONE;
}

/* Run until done or a lookup really has to wait: 0 done, 1 pending. */
static int
route_drive(struct route_query *q, struct route_result *res)
{
	for (;;) {
		if ((q->sender_mode ? route_run_sender(&q->e, &q->cl,
		    q->protect, q->sender, res) : route_run(&q->e, &q->cl,
		    q->sender, q->rcpt, res)) == STEP_DONE)
			return 0;
		struct table_values v = { 0 };
		struct table *t = q->e.r->tables[q->e.need_table];
		int rc = table_lookup_start(t, q->tl, q->e.need_key,
		    route_lookup_done_cb, q, &v, &q->req);
		if (rc == TABLE_PENDING) {
			table_values_clear(&v);
			return 1;
		}
		route_memo_add(&q->e, rc, &v);
		table_values_clear(&v);
	}
}

static void
route_query_free(struct route_query *q)
{
	table_lookup_cancel(&q->req);
	route_eval_clear(&q->e);
	free((char *)q->cl.ip);
	free((char *)q->cl.auth_user);
	free(q->sender);
	free(q->rcpt);
	free(q);
}

static void
route_lookup_done_cb(void *arg, int rc, const struct table_values *vals)
{
	struct route_query *q = arg;
	struct route_result res = { 0 };

	q->req = NULL;
	route_memo_add(&q->e, rc, vals);
	if (route_drive(q, &res) == 1)
		return;
	q->cb(q->arg, &res);
	route_result_clear(&res);
	route_query_free(q);
}

static int	route_start(struct route_query *q, struct router *r,
		    struct table_loop *tl, const struct route_client *cl,
		    const char *sender, const char *rcpt, route_done_cb *cb,
		    void *arg, struct route_result *out,
		    struct route_query **q_out);

int
route_resolve_start(struct router *r, struct table_loop *tl,
    const struct route_client *cl, const char *sender, const char *rcpt,
    route_done_cb *cb, void *arg, struct route_result *out,
    struct route_query **q_out)
{
	return route_start(xcalloc(1, sizeof(struct route_query)), r, tl, cl,
	    sender, rcpt, cb, arg, out, q_out);
}

int
route_sender_start(struct router *r, struct table_loop *tl,
    const struct route_client *cl, bool protect, const char *sender,
    route_done_cb *cb, void *arg, struct route_result *out,
    struct route_query **q_out)
{
	struct route_query *q = xcalloc(1, sizeof(*q));

	q->sender_mode = true;
	q->protect = protect;
	return route_start(q, r, tl, cl, sender, "", cb, arg, out, q_out);
}

static int
route_start(struct route_query *q, struct router *r, struct table_loop *tl,
    const struct route_client *cl, const char *sender, const char *rcpt,
    route_done_cb *cb, void *arg, struct route_result *out,
    struct route_query **q_out)
{
	*q_out = NULL;
	memset(out, 0, sizeof(*out));
	q->e.r = r;
	q->tl = tl;
	q->cb = cb;
	q->arg = arg;
	if (cl != NULL) {
		q->cl.ip = cl->ip != NULL ? xstrdup(cl->ip) : NULL;
		q->cl.auth_user = cl->auth_user != NULL ?
		    xstrdup(cl->auth_user) : NULL;
	}
	q->sender = xstrdup(sender != NULL ? sender : "");
	q->rcpt = xstrdup(rcpt);
	if (route_drive(q, out) == 0) {
		route_query_free(q);
		return 0;
	}
	*q_out = q;
	return 1;
}

void
route_resolve_cancel(struct route_query **qp)
{
	if (*qp != NULL)
		route_query_free(*qp);
	*qp = NULL;
}
