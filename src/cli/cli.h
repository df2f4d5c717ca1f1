/*
 * cli/cli.h: the subcommands main.c dispatches to, beyond run/check/version.
 */
#ifndef POSTERN_CLI_H
#define POSTERN_CLI_H

/*
 * Config file when none is given: $POSTERN_CONFIG, else this (the build
 * sets it to SYSCONFDIR/postern/postern.conf).
 */
#ifndef CLI_DEFAULT_CONFIG
#define CLI_DEFAULT_CONFIG	"/etc/postern/postern.conf"
#endif

/* postern queue list|show|flush|hold|release|delete (cli/queue.c). */
int	cli_queue(int argc, char **argv);
/* postern send, also run as "sendmail" (cli/send.c). */
int	cli_send(int argc, char **argv);

/* The config path for -c/-C: $POSTERN_CONFIG, else CLI_DEFAULT_CONFIG. */
const char *cli_default_config(void);

/*
 * Relative paths in a configuration are relative to the folder of the
 * file (docs/config.md): make path absolute from the current folder, then
 * change into its folder, so every command finds the same spool, Maildirs,
 * tables and scripts wherever it is started.  Returns the absolute path
 * (malloc'd) to load and reload, or NULL with *err_out (static text,
 * valid until the next call) when the folder cannot be entered.
 */
char	*cli_enter_config_dir(const char *path, const char **err_out);

/*
 * The spool belongs to the server's user (the one it drops to).  Run by
 * root, act as the owner of the existing folder spool from here on, so
 * that nothing made there is root's and the server can read and remove all
 * of it (spool files are 0600).  Nothing to do for another user, a missing
 * folder or one root owns.  0, or -1 with *err_out (static text).
 */
int	cli_become_spool_owner(const char *spool, const char **err_out);

/*
 * Tell the user on stderr that they may not use spool (err: the call it
 * refused), in the one wording every command uses: "CMD: access to the
 * spool SPOOL was denied (ERR): run CMD as the spool's owner or as root",
 * then tail (may be "").  For an EACCES or EPERM of the spool or its
 * control socket.
 */
void	cli_spool_denied(const char *cmd, const char *spool, const char *err,
	    const char *tail);

/* mailq (also sendmail -bp): postern queue -c config list. */
int	cli_mailq(const char *config);
/* newaliases (also sendmail -bi): there is no aliases database; exit 0. */
int	cli_newaliases(void);

#endif
