/*
 * route/route_private.h: what route.c (the rules) and resolve.c (aliases,
 * actions, the asynchronous driver) share: an evaluation whose table
 * lookups are remembered, so it can stop at an unanswered lookup and run
 * again from the start once the answer is in.
 */
#ifndef POSTERN_ROUTE_PRIVATE_H
#define POSTERN_ROUTE_PRIVATE_H

#include "route/route.h"
#include "table/table.h"

struct router {
	const struct config	*c;		/* borrowed */
	struct table		**tables;	/* owned; parallel to c->tables */
};

struct route_memo {
	size_t			 table;		/* index in c->tables */
	char			*key;		/* owned */
	int			 rc;		/* TABLE_FOUND, _MISSING, _ERROR */
	struct table_values	 vals;
};

struct route_eval {
	struct router		*r;		/* borrowed */
	bool			 sync;		/* look up now, blocking */
	struct route_memo	*memo;		/* owned array */
	size_t			 nmemo;
	/* Async: the lookup to make before running again. */
	bool			 need;
	size_t			 need_table;
	char			*need_key;	/* owned */
};

/* The answer of table ct for key: TABLE_FOUND (*vals_out set, borrowed
 * from e), TABLE_MISSING, TABLE_ERROR, or TABLE_PENDING (e->need set). */
int	route_eval_get(struct route_eval *e, const struct config_table *ct,
	    const char *key, const struct table_values **vals_out);
/* route_eval_get() of key ("local@domain", "@domain" or "domain"), then,
 * while missing, of key with its domain's other canonical spellings (the
 * lower-case U-label, the A-label; util_idna_spellings): a table may name
 * a domain either way, whatever case the address has it in. */
int	route_eval_get_dom(struct route_eval *e, const struct config_table *ct,
	    const char *key, const struct table_values **vals_out);
void	route_eval_clear(struct route_eval *e);
/* A copy of key ("local@domain" or "domain", owned by the caller) with its
 * domain in its A-label form (util_idna_alabel) when it has UTF-8 labels;
 * as it is otherwise, or when the domain is not valid IDNA. */
char	*route_canon(const char *key);
/* The domain of "local@domain" (after the last '@'), or "". */
const char *route_domain(const char *addr);

/* Is domain ours (named by a "to" condition, in either spelling)?  1, 0,
 * -1 a table failed, 2 pending. */
int	route_domain_is_ours(struct route_eval *e, const char *domain);

/* Evaluate the rules for rcpt: the action, or NULL with *status_out
 * (ROUTE_NO_USER, ROUTE_NO_RELAY, ROUTE_TEMPFAIL) or TABLE_PENDING
 * returned through *pending_out. */
const struct config_action *route_rules(struct route_eval *e,
	    const struct route_client *cl, const char *sender, const char *rcpt,
	    enum route_status *status_out, bool *pending_out);

#endif
