/*
 * net/privdrop.c: give up root once the listeners are bound and the keys
 * and config are read, before the first client byte.  Order:
 * supplementary groups, then the group, then the user; then prove that
 * root cannot come back.
 */
#include "net/net_private.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "log/log.h"

int
net_drop_privileges(const char *user, const char *group, const char **err_out)
{
	const char *why = NULL;
	uid_t uid;
	gid_t gid;

	/* A normal user runs as itself; root without "user" is warned about. */
	if (geteuid() != 0 || user == NULL)
		return 0;
	if (util_account_ids(user, group, &uid, &gid, err_out) == -1)
		return -1;
	if (uid == 0) {
		*err_out = util_err("user %s is root: refusing to run as "
		    "root", user);
		return -1;
	}
	/* A log file made by this start is the user's, as a reopen's is. */
	if (log_file_give(uid, gid, &why) == -1)
		log_msg(LOG_LVL_WARN, "%s", why);
	if (setgroups(0, NULL) == -1 || setresgid(gid, gid, gid) == -1 ||
	    setresuid(uid, uid, uid) == -1) {
		*err_out = util_err("dropping to %s: %s", user,
		    strerror(errno));
		return -1;
	}
	/* The proof: regaining root must fail now. */
	if (setuid(0) != -1 || seteuid(0) != -1) {
		*err_out = util_err("dropped to %s but root could be "
		    "regained", user);
		return -1;
	}
	log_msg(LOG_LVL_INFO, "privileges dropped to user=%s uid=%u gid=%u",
	    user, (unsigned)uid, (unsigned)gid);
	return 0;
}
