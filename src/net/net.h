/*
 * net/net.h: the server process: listeners, connection limits, the event
 * loop, signals (SIGTERM drain, SIGHUP reload).  Knows nothing of SMTP
 * grammar.
 */
#ifndef POSTERN_NET_H
#define POSTERN_NET_H

struct config;
struct net_server;

/*
 * Give the process the signal state a server needs, whatever its parent
 * left across execve: SIGCHLD to SIG_DFL (ignored, the kernel reaps every
 * child and no program's exit status can be had) and an empty signal
 * mask (SIGTERM, SIGHUP and the others must arrive).  First thing in
 * postern run, before any thread or child inherits the state.
 */
void	net_signals_reset(void);

/*
 * Build a server from a loaded config (ownership passes): open the spool,
 * start the delivery queue and bind every listener.  pid_file (borrowed),
 * when not NULL, wins over cfg's, at reloads too (postern run --pid-file).
 * Exits through fatal() when any of that fails (start-up only).
 */
struct net_server *net_server_new(const char *config_path, struct config *cfg,
	    const char *pid_file);
/*
 * Do cfg's "limit connections" and the descriptors postern keeps for
 * itself fit in the hard RLIMIT_NOFILE (the soft one is raised to it at
 * start)?  0, or -1 with *err_out (static text) saying what is needed,
 * as "FILE:LINE: message" (FILE: alone when the default is too high).
 */
int	net_check_nofile(const struct config *cfg, const char **err_out);
/*
 * What postern run would refuse in cfg (borrowed), found without binding,
 * forking, writing or contacting a database: the descriptor limit, the
 * user and group, the log file's folder, the spool's control socket path,
 * a metrics address apart from the listeners, then everything
 * conn_rt_new() builds (conn_rt_check()).  0, or -1 with *errs_out
 * holding one "FILE:LINE: message\n" line per error (owned: free()).
 */
int	net_check(struct config *cfg, char **errs_out);
/* Run until SIGTERM/SIGINT has drained the sessions; returns the exit code. */
int	net_server_run(struct net_server *srv);
void	net_server_free(struct net_server **srvp);

#endif
