/*
 * table/table_passwd.c: "passwd", the system's users through getpwnam_r
 * (files, or LDAP or whatever NSS is set up to ask, so never on an event
 * loop): the key is a user name, the value its home folder.  Root and
 * users without a home are not found: nobody receives mail as root.
 */
#include "table/table.h"

#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>

#include "table/table_private.h"
#include "util/util.h"

static int
passwd_open(struct table *t, const char **err_out)
{
	(void)t;
	(void)err_out;
	return 0;
}

static void
passwd_close(struct table *t)
{
	(void)t;
}

/* No connection to make: a token stands in for one. */
static void *
passwd_connect(struct table *t, uint64_t deadline_ms, const char **err_out)
{
	(void)deadline_ms;
	(void)err_out;
	return t;
}

static void
passwd_disconnect(struct table *t, void *conn)
{
	(void)t;
	(void)conn;
}

static int
passwd_get(struct table *t, void *conn, const char *key, uint64_t deadline_ms,
    struct table_values *out, const char **err_out)
{
	struct passwd pw, *res = NULL;
	char buf[4096];
	int rc;

	(void)t;
	(void)conn;
	(void)deadline_ms;
	rc = getpwnam_r(key, &pw, buf, sizeof(buf), &res);
	if (rc != 0 && rc != ENOENT && rc != ESRCH && rc != EBADF &&
	    rc != EPERM) {
		*err_out = util_err("getpwnam_r(%s): %s", key, strerror(rc));
		return -1;
	}
	if (res == NULL || pw.pw_uid == 0 || pw.pw_dir == NULL ||
	    pw.pw_dir[0] != '/')
		return 0;
	table_values_add(out, pw.pw_dir, strlen(pw.pw_dir));
	return 1;
}

const struct table_engine table_passwd_engine = {
	.name = "passwd", .open_fn = passwd_open, .close_fn = passwd_close,
	.connect_fn = passwd_connect, .disconnect_fn = passwd_disconnect,
	.get_fn = passwd_get,
};
