/* net/net_private.h: what the files of net/ share. */
#ifndef POSTERN_NET_PRIVATE_H
#define POSTERN_NET_PRIVATE_H

#include "net/net.h"
#include "util/util.h"

/*
 * When running as root and user is set: drop to user (and group, default
 * the user's primary group), clear supplementary groups, and check root
 * cannot be regained.  A no-op otherwise.  0, or -1 with *err_out.
 */
int	net_drop_privileges(const char *user, const char *group,
	    const char **err_out);

#endif
