/* net/net_private.h: what the files of net/ share. */
#ifndef POSTERN_NET_PRIVATE_H
#define POSTERN_NET_PRIVATE_H

#include "net/net.h"

#include <event2/event.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "conn/conn.h"
#include "deliver/deliver.h"
#include "util/util.h"

struct config;
struct config_limits;
struct metrics_http;
struct evconnlistener;
struct spool_env;

#define NET_IP_BUCKETS		4096
#define NET_DISK_THREADS	64	/* fsyncs in flight at once: the journal
				   commits concurrent ones together */
#define NET_BACKLOG		4096
#define NET_DRAIN_NOTE_MS	5000	/* a stop says what it waits for */
#define NET_BALANCE_MS		200	/* pack: how often loads are sampled */
#define NET_BUSY_OPEN		0.75	/* pack: the open loops are this busy on
					   average: open more */
#define NET_BUSY_CLOSE		0.5	/* ... the load would leave one fewer
					   below this: close one */
#define NET_EMFILE_PAUSE_MS	100	/* out of descriptors: accept again
					   after this */
#define NET_EMFILE_REFUSE_MAX	256	/* ... meanwhile 421 to at most this
					   many waiting clients per pause */

struct net_ipcount {
	char			 ip[INET6_ADDRSTRLEN];
	unsigned		 n;
	struct net_ipcount	*next;
};

/*
 * Connections from one address in an ageing window: the count of the
 * current window plus the share of the previous one that still overlaps
 * the last PERIOD.
 */
struct net_rate {
	char			 ip[INET6_ADDRSTRLEN];
	unsigned		 cur, prev;
	uint64_t		 start_ms;	/* of the current window */
	struct net_rate		*next;
};

/* One listen address: a socket per loop, bound by the main thread. */
struct net_listen {
	char			*addr;		/* owned */
	int			 port;
	int			*fds;		/* one per loop; each loop owns its own */
	bool			 passed;	/* by the service manager: fds are
						   one socket, not a SO_REUSEPORT
						   group, so no steering */
};

/* A loop's own listener on one of those sockets. */
struct net_lev {
	int			 fd;
	char			 addr[INET6_ADDRSTRLEN];
	int			 port;
	struct net_loop		*loop;		/* borrowed: our owner */
	struct evconnlistener	*lev;		/* owned; closes fd (NULL in a mailbox) */
	bool			 nodelay_each;	/* passed: set TCP_NODELAY on each
						   connection (see net_nodelay) */
};

struct net_loop {
	struct net_server	*srv;		/* borrowed: our owner */
	unsigned		 idx;
	pthread_t		 thread;
	struct event_base	*base;		/* owned */
	struct conn_ctx		 ctx;
	struct net_lev		*levs;		/* owned array */
	size_t			 nlevs;
	struct event		*wake_ev;	/* owned: the main thread has news */
	struct event		*drain_ev;	/* owned: polls for the end of a stop */
	struct event		*resume_ev;	/* owned: accept again after an
						   EMFILE pause */
	bool			 accept_paused;
	int			 spare_fd;	/* owned: freed to answer 421 when
						   out of descriptors; -1: none */
	struct net_pph		*pphs;		/* owned: connections waiting for
						   their PROXY header */
	unsigned		 npphs;
	uint64_t		 drain_deadline_ms;
	uint64_t		 drain_note_ms;	/* next "waits for" log line */
	bool			 killed;
	int			 cut_pipe[2];	/* owned: written when the grace is
						   over; ctx.stop_fd reads it */
	unsigned		 quiet_ticks;	/* drain: ticks with nothing left */
	uint64_t		 cpu_ns;	/* pack: its CPU time at the last
						   sample (main thread) */
	/* Mailbox from the main thread, guarded by srv->mu. */
	struct conn_rt		*new_rt;	/* ref, or NULL */
	atomic_bool		 rt_posted;	/* new_rt set: read unlocked */
	struct net_lev		*new_levs;	/* owned: the listener set to have */
	size_t			 new_nlevs;
	bool			 new_listeners;
	int			*dropped_fds;	/* owned array: sockets of a set
						   posted but not taken, dropped
						   since: the loop closes
						   them */
	size_t			 ndropped_fds;
	bool			 stop;
};

/* Listening sockets a socket unit passed, not taken by a listener yet. */
struct net_passed {
	int	*fds;		/* owned array; each fd owned until taken */
	size_t	 n;
};

struct net_server {
	char			*config_path;	/* owned */
	bool			 ran;		/* net_server_run got to stop */
	struct event_base	*base;		/* owned: main thread, signals */
	struct conn_rt		*rt;		/* ref: the config in force */
	/* Configurations let go, freed by the reaper thread (server.c). */
	pthread_mutex_t		 reap_mu;
	pthread_cond_t		 reap_cv;
	struct conn_rt		*graves;	/* under reap_mu */
	bool			 reap_stop;	/* under reap_mu */
	pthread_t		 reaper;
	struct net_listen	*listens;	/* owned array */
	size_t			 nlistens;
	struct net_loop		*loops;		/* owned array */
	unsigned		 nloops;
	struct util_pool	*pool;		/* owned: disk work */
	struct spool		*spool;		/* owned */
	struct queue		*queue;		/* owned */
	struct priv		*priv;		/* owned: the privileged helper,
						   or NULL */
	struct log_translog_writer *tlw;	/* owned: transaction logs */
	struct event		*sig_term, *sig_int, *sig_hup, *sig_usr1;
	bool			 pid_file_forced; /* by the command line: a
						   reload keeps it */
	int			 notify_fd;	/* the service manager's, or -1 */
	int			 bind_errno;	/* why net_listens_sync failed */
	int			 startup_signal; /* SIGTERM/SIGINT while binding */
	int			 metrics_fd;	/* bound, until the endpoint runs */
	struct metrics_http	*metrics;	/* owned: the endpoint, or NULL */
	atomic_bool		 stopping;	/* SIGTERM: /healthz says so */
	atomic_uint		 nlistening;	/* listen addresses (for health) */
	struct net_passed	 passed;	/* start-up: sockets a socket unit
						   passed, not yet taken */
	pthread_mutex_t		 mu;		/* guards what follows, and mailboxes */
	unsigned		 nconns;	/* across loops */
	struct net_ipcount	*ips[NET_IP_BUCKETS];
	struct net_rate		*rates[NET_IP_BUCKETS];
	uint64_t		 rate_sweep_ms;	/* next sweep of stale rates */
	bool			 balance_asleep; /* pack: nothing to sample until
						   the next connection */
	/* pack, main thread only: */
	struct event		*balance_ev;	/* owned: the sampling timer */
	unsigned		 nopen;		/* new ones: loops 0..nopen-1 */
	uint64_t		 sample_ns;	/* last sampled at */
};

/*
 * When running as root and user is set: drop to user (and group, default
 * the user's primary group), clear supplementary groups, and check root
 * cannot be regained.  A no-op otherwise.  0, or -1 with *err_out.
 */
int	net_drop_privileges(const char *user, const char *group,
	    const char **err_out);

/* admit.c: connection limits, counted across loops under srv->mu. */
/*
 * Count a new connection from ip unless a limit of cfg says no (an
 * address in cfg's trusted networks skips the per-address ones); NULL
 * when it is admitted, else the refusal text.
 */
const char *net_admit(struct net_server *srv, const struct config *cfg,
	    const char *ip);
/* A connection counted by net_admit is gone (conn_ctx.closed_cb). */
void	net_conn_closed_cb(void *arg, const char *ip);
/* Forget every count (the server is going away). */
void	net_admit_clear(struct net_server *srv);

/* listen.c: listen sockets (main thread) and each loop's listeners. */
/*
 * The address the client of accepted socket fd reached, when the socket
 * gives it IPv4-mapped (a dual-stack socket): o, with o->local_ip = lip
 * (INET6_ADDRSTRLEN bytes) holding the IPv4 address, for conn_new().
 * NULL otherwise: conn/ asks the socket itself when it needs to.
 */
const struct conn_origin *net_local_origin(int fd, struct conn_origin *o,
	    char *lip);
struct config_listen;
/* The index of cfg's listener at addr:port, or -1 (gone in a reload). */
ssize_t	net_listen_idx(const struct config *cfg, const char *addr, int port);
/*
 * Say line (CRLF ended) to a client of listener l refused before its
 * session, and close fd.  Nothing is said on a tls listener (its client
 * waits for a handshake), nor when l is NULL (gone in a reload).
 */
void	net_refuse_line(const struct config_listen *l, int fd,
	    const char *line);
/*
 * Log the refusal of a connection to listener l, answer it "421 4.7.0
 * HOST why" (net_refuse_line) and close fd.
 */
void	net_refuse(const struct config *cfg, const struct config_listen *l,
	    int fd, const char *ip, const char *why);
/*
 * Make the loop's listeners exactly want[0..n): keep, close or open.  The
 * array moves into the loop (levs are reached by address from libevent).
 */
void	net_loop_sync_levs(struct net_loop *loop, struct net_lev *want,
	    size_t n);
/*
 * Close fds[0..n) (loop->dropped_fds), but those loop holds a listener
 * on: net_loop_sync_levs closes those, as it does every one the new set
 * leaves out.
 */
void	net_loop_close_dropped(struct net_loop *loop, const int *fds,
	    size_t n);
/*
 * The listener set of loop idx, from srv->listens (srv->mu held).  A set
 * posted before and not taken yet is replaced; its sockets the new set
 * leaves out go to loop->dropped_fds, since the loop that would close
 * them never heard of them.
 */
void	net_post_listeners(struct net_server *srv, struct net_loop *loop);
/* The loop's EMFILE pause is over (loop->resume_ev). */
void	net_accept_resume_cb(evutil_socket_t fd, short what, void *arg);
/*
 * Make srv->listens match cfg, all or nothing: kept addresses keep their
 * sockets, new ones get nloops fresh sockets (or the one the service
 * manager passed), bound beside those in use.  Sockets of dropped
 * addresses are closed by their loops when they take the new set.  -1
 * with *err_out when a new one cannot be bound: nothing has changed.
 */
int	net_listens_sync(struct net_server *srv, const struct config *cfg,
	    const char **err_out);

/* proxyin.c: the PROXY protocol header of a "proxy-protocol" listener. */
struct net_pph;
/* Does a connection from peer_ip on listener l start with a header? */
bool	net_pph_wanted(const struct config_listen *l, const char *peer_ip);
/*
 * Read the header of accepted socket fd (owned from now on) from peer sa
 * on listener l, then admit the client it names and start its session;
 * or refuse it (net_refuse) and close.
 */
void	net_pph_start(struct net_loop *loop, int fd, const struct sockaddr *sa,
	    const char *peer_ip, const struct config_listen *l);
/* Close every connection still waiting for its header (a stop). */
void	net_pph_drop_all(struct net_loop *loop);

/* loop.c: an event loop's life, on its own thread. */
void	net_loop_init(struct net_server *srv, struct net_loop *loop,
	    unsigned idx);
void	*net_loop_main(void *arg);
/* A configuration the main thread posted, taken now (loop thread). */
void	net_loop_adopt_rt(struct net_loop *loop);
/* Free what the loop owns (its sessions and listeners are gone). */
void	net_loop_clear(struct net_loop *loop);

/* nofile.c: descriptors. */
/* Raise the soft RLIMIT_NOFILE to the hard one (start-up). */
void	net_raise_nofile(void);
/*
 * Let the Maildirs kept open between deliveries use half of what the
 * descriptor limit leaves over after cfg's connections and what postern
 * keeps for itself (at most DELIVER_MD_KEEP_MAX).
 */
void	net_size_nofile(const struct config *cfg);

/* check.c: what a start would refuse, before anything is started. */
/*
 * net_check() without what conn_rt_new() builds: the descriptor limit,
 * "user" and "group", the log file's folder, the spool's control socket
 * path, the metrics address.  0, or
 * -1 with *errs_out, one "FILE:LINE: message\n" line each (free()).
 */
int	net_check_system(const struct config *cfg, char **errs_out);
/*
 * net_check_system() of the file a reload read, as written (before the
 * settings only a restart changes take their running values): what the
 * next start would refuse.  The log file's folder is left out when the
 * file is the running one, which stays open (and may be root's alone).
 */
int	net_check_reload(const struct config *cfg,
	    const struct config *running, char **errs_out);
/*
 * Is cfg's "metrics listen" apart from every listener's address and port
 * (start-up, and a reload against the endpoint that runs)?  0, or -1 with
 * *err_out (static text) as "FILE:LINE: message".
 */
int	net_check_metrics(const struct config *cfg, const char **err_out);

/* steer.c: which loop takes a new connection (main thread). */
/*
 * Steer new connections on the listen address of fd (addr:port) to loops
 * 0..n-1: a classic BPF program on its SO_REUSEPORT group returns the
 * index of a socket in the group, and the sockets joined it in loop order
 * (net_listen_open), fd first: the program is in place before a second
 * one joins (net_bind_one).
 */
void	net_steer_fd(int fd, unsigned n, const char *addr, int port);
/* How many loops a new listen address is steered to now. */
unsigned net_steer_nopen(const struct net_server *srv);
/* The sampling timer of "workers N pack" (srv->balance_ev). */
void	net_balance_cb(evutil_socket_t fd, short what, void *arg);

/* wiring.c: what the server plugs into the queue (queue threads). */
int	net_queue_route(void *arg, const char *sender, const char *rcpt,
	    struct spool_env *env, const char **err_out);
void	net_queue_deliver(void *arg, const struct spool_env *env,
	    const size_t *idx, size_t n, const char *content_path,
	    const char *hostname, struct deliver_rcpt_status *st_out);

/*
 * notify.c: the service manager.  A datagram socket connected to
 * $NOTIFY_SOCKET (which is then unset), or -1 when there is none; open it
 * before the privilege drop.
 */
int	net_notify_open(void);
/* Send it fmt's text ("READY=1", ...); nothing when fd is -1. */
void	net_notify(int fd, const char *fmt, ...) UTIL_PRINTF(2, 3);
/*
 * observe.c: the metrics endpoint.  Bind its socket (start-up, before the
 * drop; none without "metrics listen").  0, or -1 with *err_out.
 */
int	net_observe_bind(struct net_server *srv, const struct config *cfg,
	    const char **err_out);
/* Serve it, with /healthz and the server's gauges (the loops run). */
void	net_observe_start(struct net_server *srv);
/* Stop serving (before the queue and spool go). */
void	net_observe_stop(struct net_server *srv);

/*
 * pidfile.c: write our process id into path and hold an exclusive lock on
 * it until net_pidfile_close, or the process's exit, which closes it too
 * (a start that fails).  A file another live postern holds is an error
 * (and stays as it is); one left by a dead process is taken over.  0, or
 * -1 with *err_out.  One file a process.
 */
int	net_pidfile_open(const char *path, const char **err_out);
/* Remove the file (or empty it, when we may not) and let the lock go. */
void	net_pidfile_close(void);

/* Take the sockets passed through LISTEN_FDS into np (start-up). */
void	net_passed_take_all(struct net_passed *np);
/* The passed socket listening on addr:port, now the caller's, or -1. */
int	net_passed_take(struct net_passed *np, const char *addr, int port);
/* Give back fd, which net_passed_take returned (it was not used). */
void	net_passed_give(struct net_passed *np, int fd);
/* Close (with a warning each) the sockets no listener took; np empties. */
void	net_passed_close_rest(struct net_passed *np);
/*
 * fds[0..n): fd, then duplicates of it (one per loop; each loop owns and
 * closes its own).  0, or -1 with *err_out (fd is left to the caller).
 */
int	net_passed_spread(int fd, int *fds, unsigned n, const char **err_out);

#endif
