/*
 * conn/conn.h: one client connection's life.  Feeds bytes from the socket
 * through smtp/, answers each stage (its own checks, the handler chains,
 * routing at RCPT), streams DATA to spool/ through the worker pool, and
 * hands committed messages to queue/; on the fast path it writes them to
 * their Maildirs itself.  Knows nothing of the wire formats of actions.
 */
#ifndef POSTERN_CONN_H
#define POSTERN_CONN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct config;
struct router;
struct event_base;
struct util_pool;
struct spool;
struct queue;
struct conn;
struct tls_server;
struct deliver_remote;
struct chain_loop;
struct chain_set;
struct priv;
struct log_translog_writer;
struct proxy_set;
struct proxy_loop;

/* A loaded configuration and what is built from it; shared, refcounted. */
struct conn_rt {
	atomic_int	 refs;
	struct config	*cfg;		/* owned */
	struct router	*router;	/* owned */
	struct tls_server *tls;		/* owned: the global certificates, or NULL */
	struct tls_server **tls_listen;	/* owned array, one per cfg->listens:
					   the listener's own (owned) or tls */
	void		**runtimes;	/* owned array, one per cfg->actions:
					   the runtime its kind opened
					   (deliver_kind), or NULL */
	struct chain_set	*chains;	/* ref: the handler chains */
	struct proxy_set	*proxies;	/* owned: the upstreams of proxy
						   listeners, or NULL */
	/* Who frees it (conn_rt_set_reaper), and the reaper's list link. */
	void		(*reap)(void *arg, struct conn_rt *rt);
	void		*reap_arg;
	struct conn_rt	*reap_next;
};
/*
 * Take ownership of cfg and build what it describes: the handler chains,
 * the router, the TLS contexts (making the self-signed pair first when
 * asked) and the runtimes of its actions.  Reads files: start-up and
 * reload only.  NULL with *err_out, "FILE:LINE: message" naming the
 * statement at fault.
 */
struct conn_rt *conn_rt_new(struct config *cfg, const char **err_out);
/*
 * What conn_rt_new() would find wrong with cfg (borrowed), making and
 * changing nothing: tables opened (SQLite read-only; PostgreSQL and Redis
 * not contacted), certificates and keys loaded (a self-signed pair only if
 * it is there), CA files read, the actions' templates, scripts and
 * programs checked, upstream names resolved.  0, or -1 with *errs_out
 * holding one "FILE:LINE: message\n" line per error (owned: free()).
 */
int	conn_rt_check(struct config *cfg, char **errs_out);
/*
 * The runtime of the action named name, with its kind in *kind_out; NULL
 * when there is no such action or its kind has no runtime.
 */
struct deliver_kind;
void	*conn_rt_runtime(const struct conn_rt *rt, const char *name,
	    const struct deliver_kind **kind_out);
/* True when some table of rt's config waits on a backend. */
bool	conn_rt_has_remote(const struct conn_rt *rt);
struct conn_rt *conn_rt_ref(struct conn_rt *rt);
/* The last reference frees rt, or hands it to its reaper. */
void	conn_rt_unref(struct conn_rt **rtp);
/*
 * Freeing joins the threads of rt's tables, which may be in a lookup up
 * to its timeout: no event loop may wait for that.  With a reaper, the
 * last conn_rt_unref() calls fn(arg, rt) instead, on whatever thread it
 * runs; fn hands rt to a thread that may wait, which calls conn_rt_free().
 */
void	conn_rt_set_reaper(struct conn_rt *rt,
	    void (*fn)(void *arg, struct conn_rt *rt), void *arg);
void	conn_rt_free(struct conn_rt *rt);

/* What every connection of a server shares (borrowed by connections). */
struct conn_ctx {
	struct event_base	*base;
	struct util_pool	*pool;		/* disk work */
	struct spool		*spool;
	struct queue		*queue;
	struct conn_rt		*rt;		/* current config; new sessions take a ref */
	unsigned		 loop_idx;	/* its event loop, for the log */
	bool			 shutting_down;	/* finished sessions get 421 and close */
	unsigned		 nconns;	/* live connections (loop thread only) */
	unsigned		 ntx;		/* transactions still alive, with or
						   without their connection */
	/* Called once when a connection is gone, with its peer address. */
	void			(*closed_cb)(void *arg, const char *ip);
	void			*closed_arg;
	struct conn		*conns;		/* live connections (loop thread only) */
	struct chain_loop	*chain_loop;	/* ref: DNS, state store and table
						   answers of this loop for rt,
						   or NULL (none needed, or it
						   could not be made) */
	const char		*chain_err;	/* static: why it could not */
	uint64_t		 chain_retry_ms; /* then tried again at connect
						   from this time on */
	struct proxy_loop	*proxy_loop;	/* owned: upstream connections
						   ending after QUIT, or NULL
						   before the first proxy
						   session */
	struct priv		*priv;		/* borrowed: the privileged helper,
						   or NULL */
	struct log_translog_writer *tlw;	/* borrowed: writes the
						   transaction logs */
	int			 stop_fd;	/* borrowed: readable once a stop's
						   grace is over, which cancels
						   what transactions wait for
						   (a sync webhook) */
};

/*
 * Where a connection that came through a TCP load balancer really comes
 * from, as its PROXY protocol header says (strings borrowed for the call);
 * with via_ip NULL, no header: only the address the client reached, as
 * net/ gives it for an IPv4 client of a dual-stack socket (its IPv4
 * address, where the socket would say ::ffff:192.0.2.1).
 */
struct conn_origin {
	const char	*via_ip;	/* the balancer: the socket's peer;
					   NULL: no PROXY header */
	const char	*local_ip;	/* the address the client reached, or
					   NULL: the socket's */
	int		 local_port;
	int		 version;	/* of the header: 1 or 2 */
};

/*
 * The loop's chain state (chain/'s resolver, state store and table
 * answers) as ctx->rt needs it: made when the loop starts, made again
 * when a new rt names another store or resolver (running sessions keep
 * theirs), dropped when rt needs none.  When it cannot be made, the
 * sessions that need it get 421 at connect, and a connection tries again
 * (at most once a second).  The loop's thread, or before it runs.
 */
void	conn_ctx_chain_sync(struct conn_ctx *ctx);
/* Let go of the loop's chain state (the loop is going away). */
void	conn_ctx_chain_clear(struct conn_ctx *ctx);
/*
 * Close the upstream connections of the loop's proxy sessions that are
 * still waiting for the reply to their QUIT (the loop is going away).
 */
void	conn_ctx_proxy_clear(struct conn_ctx *ctx);

/*
 * Start a session on an accepted socket (owned from now on), that came in
 * on ctx->rt->cfg->listens[listen_idx] from sa (the client's address: the
 * PROXY header's when origin->via_ip is not NULL).  The connection lives in
 * ctx->conns until it closes; closed_cb then tells.
 */
void	conn_new(struct conn_ctx *ctx, int fd, const struct sockaddr *sa,
	    socklen_t salen, size_t listen_idx,
	    const struct conn_origin *origin);
/*
 * Shutdown (ctx->shutting_down set): every session between commands gets
 * "421 4.3.2" and is closed, and its last reply has a short while to go
 * out; one in DATA may finish its message first, one waiting for a
 * decision gets it first (then each is closed); one in a TLS handshake
 * is dropped.
 */
void	conn_shutdown_all(struct conn_ctx *ctx);
/*
 * The shutdown grace ran out: close every connection.  One still under
 * way (a command, its greeting or a message's end waiting on a handler, a
 * lookup or a tarpit; a message's text or BDAT chunks) gets "421 4.3.2"
 * first, its wait called off; one whose message is being committed gets
 * the commit's reply, then 421; the rest (in a TLS handshake, closing
 * already, a message's end up at a proxy's upstream) are dropped at once.
 */
void	conn_kill_all(struct conn_ctx *ctx);
/* Free every session of ctx at once, with no reply: its loop has ended. */
void	conn_free_all(struct conn_ctx *ctx);

#endif
