/*
 * net/check.c: what a start would refuse in a configuration, found without
 * binding or writing anything (the one child it may start asks access(2)
 * as the user an action's program will run as, and exits): postern check
 * runs it, postern run before it starts anything, and a reload (SIGHUP)
 * before it takes the file, which is then refused as well.  Each error
 * names the statement at fault as "FILE:LINE: message".
 */
#include "net/net_private.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "queue/queue.h"

/* An error about the statement on line (0: none, the file is named). */
static void
net_check_err(struct util_buf *errs, const struct config *cfg, int line,
    const char *err)
{
	if (line > 0)
		util_buf_printf(errs, "%s:%d: %s\n", cfg->path, line, err);
	else
		util_buf_printf(errs, "%s: %s\n", cfg->path, err);
}

/* "user" and "group" name accounts of this system. */
static void
net_check_accounts(const struct config *cfg, struct util_buf *errs)
{
	if (cfg->user != NULL && getpwnam(cfg->user) == NULL)
		net_check_err(errs, cfg, config_line_of(cfg, "user", NULL),
		    util_err("user %s: no such user", cfg->user));
	if (cfg->group != NULL && getgrnam(cfg->group) == NULL)
		net_check_err(errs, cfg, config_line_of(cfg, "group", NULL),
		    util_err("group %s: no such group", cfg->group));
}

/* "log file": its folder is there (the file is made at start). */
static void
net_check_log_file(const struct config *cfg, struct util_buf *errs)
{
	const char *slash;
	char *dir;
	struct stat st;
	int e = 0;

	if (cfg->log_file == NULL)
		return;
	slash = strrchr(cfg->log_file, '/');
	dir = slash == NULL ? xstrdup(".") : slash == cfg->log_file ?
	    xstrdup("/") : xstrndup(cfg->log_file, (size_t)(slash -
	    cfg->log_file));
	if (stat(dir, &st) == -1)
		e = errno;
	else if (!S_ISDIR(st.st_mode))
		e = ENOTDIR;
	else if (access(dir, W_OK | X_OK) == -1)
		e = errno;
	if (e != 0)
		net_check_err(errs, cfg, config_line_of(cfg, "log", "file"),
		    util_err("log file %s: folder %s: %s", cfg->log_file, dir,
		    strerror(e)));
	free(dir);
}

/*
 * "spool": the control socket in it (postern queue and postern send reach
 * the server there) has a path a unix socket can take.
 */
static void
net_check_spool(const struct config *cfg, struct util_buf *errs)
{
	const char *err = NULL;

	if (queue_control_check(cfg->spool, &err) == -1)
		net_check_err(errs, cfg, config_line_of(cfg, "spool",
		    cfg->spool), util_err("spool: %s", err));
}

/*
 * Do a listener's address and the metrics endpoint's take the same port?
 * The same address, or a wildcard of the other's family: every IPv6
 * socket of ours is IPv6 only, so [::] and 127.0.0.1 are apart.
 */
static bool
net_check_same_addr(const char *a, const char *b)
{
	bool v6 = strchr(a, ':') != NULL;

	if (strcmp(a, b) == 0)
		return true;
	if (v6 != (strchr(b, ':') != NULL))
		return false;
	return strcmp(a, v6 ? "::" : "0.0.0.0") == 0 ||
	    strcmp(b, v6 ? "::" : "0.0.0.0") == 0;
}

int
net_check_metrics(const struct config *cfg, const char **err_out)
{
	if (cfg->metrics_addr == NULL)
		return 0;
	for (size_t i = 0; i < cfg->nlistens; i++) {
		const struct config_listen *l = &cfg->listens[i];
		int line;

		if (l->port != cfg->metrics_port ||
		    !net_check_same_addr(l->addr, cfg->metrics_addr))
			continue;
		line = config_line_of(cfg, "metrics", "listen");
		/* A reload keeps the running endpoint, which its file may no
		 * longer name: then the listener's line is at fault. */
		*err_out = util_err("%s:%d: metrics listen %s port %d: the "
		    "listener of line %d has that address and port", cfg->path,
		    line > 0 ? line : l->line, cfg->metrics_addr,
		    cfg->metrics_port, l->line);
		return -1;
	}
	return 0;
}

/*
 * What a start refuses in cfg; the log file's folder only with log_folder
 * (a reload leaves the file it has open where cfg names it again).
 */
static int
net_check_run(const struct config *cfg, bool log_folder, char **errs_out)
{
	struct util_buf errs = { 0 };
	const char *err = NULL;

	if (net_check_nofile(cfg, &err) == -1)
		util_buf_printf(&errs, "%s\n", err);
	net_check_accounts(cfg, &errs);
	if (log_folder)
		net_check_log_file(cfg, &errs);
	net_check_spool(cfg, &errs);
	if (net_check_metrics(cfg, &err) == -1)
		util_buf_printf(&errs, "%s\n", err);
	if (errs.len == 0) {
		*errs_out = NULL;
		return 0;
	}
	*errs_out = xstrdup(util_buf_cstr(&errs));
	util_buf_clear(&errs);
	return -1;
}

int
net_check_system(const struct config *cfg, char **errs_out)
{
	return net_check_run(cfg, true, errs_out);
}

int
net_check_reload(const struct config *cfg, const struct config *running,
    char **errs_out)
{
	bool same_log = cfg->log_file != NULL && running->log_file != NULL &&
	    strcmp(cfg->log_file, running->log_file) == 0;

	return net_check_run(cfg, !same_log, errs_out);
}

int
net_check(struct config *cfg, char **errs_out)
{
	char *sys = NULL, *rt = NULL;

	(void)net_check_system(cfg, &sys);
	(void)conn_rt_check(cfg, &rt);
	*errs_out = sys == NULL ? rt : rt == NULL ? sys : xasprintf("%s%s",
	    sys, rt);
	if (sys != NULL && rt != NULL) {
		free(sys);
		free(rt);
	}
	return *errs_out == NULL ? 0 : -1;
}
