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
struct router;

/* Build a router over c (borrowed: must outlive the router); opens tables. */
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
