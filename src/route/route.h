/*
 * route/route.h: per recipient, the first "match" rule that holds decides
 * the action.  Knows nothing of how actions deliver.
 */
#ifndef POSTERN_ROUTE_H
#define POSTERN_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct config_action;
struct config_table;
struct table;
struct table_loop;
struct table_values;
struct router;

/*
 * Build a router over c (borrowed: must outlive the router); opens tables.
 * NULL with *err_out "FILE:LINE: table NAME: ..." naming the first that
 * did not open.
 */
struct router *route_new(const struct config *c, const char **err_out);
void	route_free(struct router **rp);

enum route_miss {
	ROUTE_UNKNOWN_USER,	/* domain is ours, user is not: 550 5.1.1 */
	ROUTE_RELAY_DENIED,	/* domain is not ours: 550 5.7.1 */
};

/* Who hands the message over, for the "from local|authenticated|ip" rules. */
struct route_client {
	const char	*ip;		/* numeric address, or NULL: local submission */
	const char	*auth_user;	/* NULL unless the client authenticated */
};

/*
 * The action for rcpt ("local@domain") of a message from sender ("" for
 * <>) handed over by client (NULL: a local submission or a message of our
 * own, like a bounce, which counts as "from local").  Returns the action
 * (borrowed from the config) or NULL with *miss_out.  Thread-safe.
 */
const struct config_action *route_find_client(struct router *r,
	    const struct route_client *client, const char *sender,
	    const char *rcpt, enum route_miss *miss_out);
/* The opened table of config table ct (borrowed, lives with the router). */

struct table *route_table_of(struct router *r, const struct config_table *ct);
/* route_find_client() for a local submission (client NULL). */
const struct config_action *route_find(struct router *r, const char *sender,
	    const char *rcpt, enum route_miss *miss_out);

/* ----- full resolution: aliases, rules, the action's own lookups ----- */

/*
 * The spool's action of an alias member no rule or mailbox takes: kept in
 * the envelope so the queue bounces it (its argument is the DSN's text,
 * "5.1.1 ..."), while the alias's other members are delivered.
 */
#define ROUTE_KIND_UNROUTABLE	"unroutable"

/* One place a recipient goes to. */
struct route_target {
	char			*rcpt;		/* owned: the address after aliases */
	const struct config_action *action;	/* borrowed from the config;
						   NULL for an unroutable
						   member */
	const char		*kind;		/* static: the spool's action
						   ("maildir", "maildir-owner",
						   "discard", "relay", ...,
						   ROUTE_KIND_UNROUTABLE) */
	char			*arg;		/* owned: maildir folder, owner's
						   "USER:FOLDER", remote action
						   name, an unroutable member's
						   "X.Y.Z why"; or NULL */
};

enum route_status {
	ROUTE_OK,		/* targets[0..n-1] */
	ROUTE_NO_USER,		/* 550 5.1.1 */
	ROUTE_NO_RELAY,		/* 550 5.7.1 */
	ROUTE_TEMPFAIL,		/* a table did not answer: 451 4.3.0 */
	ROUTE_LOOP,		/* alias loop or too deep: 451 4.4.6 */
	ROUTE_TOO_MANY,		/* alias fan-out over the limit: 452 4.5.3 */
	ROUTE_BAD_ALIAS,	/* an alias with no target, or one that is
				   not an address: 451 4.3.5 */
	ROUTE_BAD_MAILDIR,	/* a maildir table's value the action cannot
				   use (~ without "as"...): 451 4.3.5 */
	ROUTE_NO_MEMBER,	/* an alias none of whose members is
				   routed: 550 5.1.1 */
	ROUTE_SENDER_AUTH,	/* sender: a protected domain, no AUTH */
	ROUTE_SENDER_NOT_OWNED,	/* sender: not the authenticated user's */
};

struct route_result {
	enum route_status	 status;
	struct route_target	*targets;	/* owned array */
	size_t			 n;
	char			 why[256];	/* for the log when not OK */
};
void	route_result_clear(struct route_result *res);

/*
 * Resolve rcpt completely: alias tables (recursively, with the config's
 * depth and fan-out limits and a loop guard), then the match rules for
 * each address, then the action's lookups (a maildir path from a table,
 * the owner in a passwd table).  An alias member that no rule or mailbox
 * takes is a ROUTE_KIND_UNROUTABLE target while another member is routed,
 * and ROUTE_NO_MEMBER when none is.  Blocking: worker threads only.
 */
void	route_resolve(struct router *r, const struct route_client *client,
	    const char *sender, const char *rcpt, struct route_result *out);

struct route_query;
typedef void route_done_cb(void *arg, struct route_result *res);
/*
 * The same on an event loop, never blocking: 0 when *out is complete now,
 * or 1 (pending) and cb(arg, res) later on tl's loop (res is then owned by
 * the callee for the call only: take what is needed).  *q_out identifies
 * the query for route_resolve_cancel() until then.
 */
int	route_resolve_start(struct router *r, struct table_loop *tl,
	    const struct route_client *client, const char *sender,
	    const char *rcpt, route_done_cb *cb, void *arg,
	    struct route_result *out, struct route_query **q_out);
void	route_resolve_cancel(struct route_query **qp);

/*
 * May this client use sender in MAIL FROM?  Without AUTH, a domain named
 * by "sender-auth" (or, when protect is set, any domain of ours) is
 * refused: ROUTE_SENDER_AUTH; after AUTH, with "sender-login <TABLE>",
 * sender must be one of the user's values (an address or "@domain"):
 * ROUTE_SENDER_NOT_OWNED.  ROUTE_OK, or ROUTE_TEMPFAIL when a table did
 * not answer.  As route_resolve_start(); no targets.
 */
int	route_sender_start(struct router *r, struct table_loop *tl,
	    const struct route_client *client, bool protect,
	    const char *sender, route_done_cb *cb, void *arg,
	    struct route_result *out, struct route_query **q_out);

/*
 * Expand %{rcpt}, %{rcpt.user}, %{rcpt.domain} (and %% for %) in tmpl for
 * rcpt.  User and domain parts are sanitised: lower-cased, every byte but
 * [a-z0-9._+=-] becomes '_', and a leading '.' becomes '_', so no expansion
 * can climb out of its folder.  Returns 0 and a malloc'd string in *out, or
 * -1 with *err_out.
 */
int	route_expand(const char *tmpl, const char *rcpt, char **out,
	    const char **err_out);

#endif
