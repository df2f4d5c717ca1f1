/*
 * conn/conn_private.h: what the files of conn/ share.
 */
#ifndef POSTERN_CONN_PRIVATE_H
#define POSTERN_CONN_PRIVATE_H

#include <stdbool.h>
#include <stdint.h>

#include <netinet/in.h>

#include "config/config.h"
#include "conn/conn.h"
#include "smtp/smtp.h"
#include "spool/spool.h"
#include "util/util.h"

struct conn_tx;
struct deliver_rcpt_status;

/* Header parts of a Received: line (RFC 5321 4.4); borrowed strings. */
struct conn_received {
	const char	*helo;		/* peer text, or NULL */
	const char	*rdns;		/* forward-confirmed name, or NULL */
	const char	*ip;
	bool		 ipv6;
	const char	*hostname;
	const char	*protocol;	/* "ESMTP", "ESMTPS", "SMTP", "UTF8SMTPS", ... */
	const char	*qid;
	const char	*tls;		/* "version=TLSv1.3 cipher=... bits=N", or NULL */
	const char	*single_rcpt;	/* NULL unless exactly one recipient */
	int64_t		 when;		/* epoch seconds */
};
/* Append the header, folded, LF line ends, to b. */
void	conn_received_build(struct util_buf *b, const struct conn_received *r);

/*
 * A transaction's content on its way to the spool (conn/tx.c).  It lives
 * on after its connection when a disk job is still running, so a client
 * that vanishes mid-commit never leaves a worker pointing at freed memory.
 */
struct conn_tx_ops {
	/* Commit finished (rc 0: accepted; -1: err holds why). */
	void	(*committed_cb)(void *arg, int rc, const char *err);
	/* A write finished and the backlog shrank: input may resume. */
	void	(*drained_cb)(void *arg);
	/* Sync mode: the web service's outcome (nothing was committed). */
	void	(*synced_cb)(void *arg, const struct deliver_rcpt_status *st);
};
struct conn_tx *conn_tx_new(struct conn_ctx *ctx, const struct conn_tx_ops *ops,
	    void *arg);
struct spool_env *conn_tx_env(struct conn_tx *tx);
/* Name the message (qid; hostname for Maildir names) before its content. */
void	conn_tx_begin(struct conn_tx *tx, const char *qid,
	    const char *hostname);
/* Append content; 0, or -1 once a disk write has failed. */
int	conn_tx_write(struct conn_tx *tx, const char *buf, size_t len);
/* True once a disk write has failed: the message cannot be accepted. */
bool	conn_tx_failed(const struct conn_tx *tx);
/*
 * The reply for a failed transaction: 452 4.3.1 when the disk or quota
 * was full (RFC 3463: mail system full; the client tries again later),
 * else 451 4.3.0.
 */
void	conn_tx_refusal(const struct conn_tx *tx, struct smtp_reply *r);
/* True while too much content waits for the disk: stop reading. */
bool	conn_tx_backlogged(const struct conn_tx *tx);
/*
 * Write out everything received so far (for handlers that read the message
 * file).  Returns true when nothing is left to write; otherwise drained_cb
 * reports later, once conn_tx_flushed() holds.
 */
bool	conn_tx_flush(struct conn_tx *tx);
bool	conn_tx_flushed(const struct conn_tx *tx);
/*
 * The whole content when it is all still in memory (nothing written, no
 * job running), else NULL.  Borrowed until the next call on tx.
 */
const char *conn_tx_memory(const struct conn_tx *tx, size_t *len_out);
/* The content file while receiving (malloc'd), once something was written. */
char	*conn_tx_path(const struct conn_tx *tx);
/* Flush and commit; committed_cb reports, later, on the loop. */
void	conn_tx_commit(struct conn_tx *tx);
/*
 * True once the commit (or the sync request) was asked for: the message
 * may be accepted, and only its outcome may answer it.
 */
bool	conn_tx_committing(const struct conn_tx *tx);
/*
 * Instead of conn_tx_commit(), for a transaction whose one recipient goes
 * to a webhook in sync mode: the content (edited as a commit would) goes
 * to the web service through runtime (the action's, borrowed) within
 * timeout_ms; synced_cb reports its outcome, later, on the loop.  Nothing
 * is committed.
 */
void	conn_tx_sync(struct conn_tx *tx, void *runtime, uint64_t timeout_ms);
/*
 * The client will not read DATA's reply (why: static, for the log): a
 * sync request under way or still to come is cancelled at once, its
 * outcome 4.4.1 why (unless the service had said 2xx).  The first why
 * stands.  Call it while the connection still holds its configuration.
 */
void	conn_tx_client_left(struct conn_tx *tx, const char *why);
/*
 * Before conn_tx_commit(): the old_len content bytes at offset become
 * head (taken over; a filter's header edits), applied by the commit.
 */
void	conn_tx_set_head(struct conn_tx *tx, size_t offset, size_t old_len,
	    struct util_buf *head);
/*
 * The message will not be committed (discarded, or refused after its
 * content): with "spool ... keep", its content is kept as
 * "<qid><suffix>.eml" (suffix static) when the connection lets go.
 */
void	conn_tx_keep_uncommitted(struct conn_tx *tx, const char *suffix);
/*
 * The connection lets go: uncommitted content is removed off the loop,
 * and a sync request under way is cancelled (conn_tx_client_left).
 */
void	conn_tx_release(struct conn_tx **txp);

/* chainstate.c */
/* Does a session under rt's config need the loop's chain state? */
bool	conn_rt_needs_chain_loop(const struct conn_rt *rt);
/*
 * A reference to the loop's chain state for a new session, or NULL with
 * *err_out (static) when it cannot be made.
 */
struct chain_loop *conn_chain_take(struct conn_ctx *ctx,
	    const char **err_out);

/* AUTH credential checks off the loop (conn/auth.c). */
struct conn_auth_job;
/*
 * rc: 1 valid, 0 refused, -1 a backend unavailable, -2 the IP is banned
 * for failed AUTHs (auth-guard, "ban on auth-failure"), -3 the IP is
 * banned for something else (a ban handler, trap, spf).
 */
typedef void conn_auth_done_cb(void *arg, int rc, const char *user);
/*
 * Check user/pass against rt's "auth" backends in order (after the
 * guard's ban check for ip); done_cb runs later on the loop, never from
 * inside this call.
 */
struct conn;
struct conn_auth_job *conn_auth_start(struct conn *c, const char *user,
	    const char *pass, conn_auth_done_cb *done_cb, void *arg);
/*
 * A refused AUTH of c's client: count it for the guard (may ban its
 * address); fire and forget.
 */
void	conn_auth_failed(struct conn *c, const char *user);
/* The caller goes away: the job ends quietly. */
void	conn_auth_abandon(struct conn_auth_job **jp);


/*
 * ----- one connection (start.c: its start; conn.c: socket and lifetime;
 * handshake.c: TLS; stage.c: stages; envelope.c: MAIL and RCPT;
 * message.c: DATA to the end of a message) -----
 */

struct bufferevent;
struct chain_session;
struct conn_proxy;
struct conn_auth_job;
struct event;
struct log_translog;
struct tls_server;

#define CONN_SID_MAX	24

/* What a connection waits for from its client (deadline.c). */
enum conn_read_mode {
	CONN_READ_NONE,		/* nothing: we are the slow side, or closing */
	CONN_READ_COMMAND,	/* a whole command line, by idle-timeout */
	CONN_READ_DATA,		/* message text, at data-rate at least */
};

struct conn {
	struct conn_ctx		*ctx;		/* borrowed: the server's */
	struct conn_rt		*rt;		/* ref: the config this session started with */
	const struct config_listen *lcfg;	/* borrowed from rt: our listener */
	struct tls_server	*tls;		/* borrowed from rt; NULL: no TLS */
	struct bufferevent	*bev;		/* owned (the TLS filter once on) */
	struct util_buf		 out;		/* replies of this turn, not
						   written yet (conn_flush_out) */
	size_t			 feeding;	/* input bytes in the feed under way */
	struct event		*greet_ev;	/* owned: greeting delay, or NULL */
	struct event		*flush_ev;	/* owned: closing under TLS, or NULL */
	struct event		*hs_ev;		/* owned: TLS handshake deadline, or NULL */
	struct smtp_session	*smtp;		/* owned */
	struct smtp_params	 params;
	struct conn_tx		*tx;		/* owned; NULL outside a transaction */
	struct event		*deadline_ev;	/* owned: whole-session limit */
	struct event		*read_ev;	/* owned: the read deadline */
	uint64_t		 read_deadline_ms; /* 0: none running */
	uint64_t		 read_fire_ms;	/* read_ev set for then; 0: unset */
	enum conn_read_mode	 read_mode;
	uint32_t		 read_lines;	/* smtp_session_lines() seen */
	uint64_t		 rate_credit_us; /* DATA: credit under 1 ms */
	struct log_translog	*translog;	/* owned, or NULL */
	char			 sid[CONN_SID_MAX];
	char			 ip[INET6_ADDRSTRLEN];
	int			 port;
	bool			 ipv6;
	bool			 in_data;	/* timeouts currently set for DATA */
	bool			 closing;	/* flush the last reply, then free */
	bool			 peer_gone;
	/* A time limit that passed while a message's end was in others'
	   hands (conn_timeout): its 421 follows their answer. */
	const char		*timed_out;
	bool			 rd_eof;	/* the peer has sent all: answer it,
						   then close */
	bool			 started;	/* the greeting was sent (or refused) */
	bool			 early_talker;	/* talked when it had to wait */
	bool			 tls_pending;	/* STARTTLS accepted, handshake next */
	bool			 tls_ended;	/* close_notify sent, or TLS failed:
						   no more records of ours */
	bool			 plain_fd;	/* bev is the bare socket: replies
						   may go straight to it */
	struct event		*plain_rd;	/* owned: reads the bare socket
						   (plainread.c), or NULL */
	char			 tls_desc[160];	/* for Received:, "" before TLS */
	char			 tls_proto[32];	/* "TLSv1.3" for the envelope; ""
						   before TLS */
	struct chain_loop	*chain_loop;	/* ref: the loop's chain state when
						   this session started, or NULL */
	struct chain_session	*cs;		/* owned; NULL without chains */
	bool			 chain_broken;	/* chains configured, loop failed */
	bool			 eom_flushing;	/* eom chain waits for the file */
	size_t			 trace_len;	/* our Received: lines, content
						   first */
	struct smtp_event	 wait_ev;	/* the stage a chain works on */
	char			*wait_arg;	/* owned: wait_ev.arg */
	char			 greeting[256];	/* expanded greeting template */
	struct conn_auth_job	*auth_job;	/* a credential check under way */
	struct event		*tarpit_ev;	/* owned: a refused AUTH waits */
	struct route_query	*route_q;	/* owned: RCPT or MAIL lookups */
	struct conn_proxy	*px;		/* owned: on a proxy listener
						   (proxied.c), else NULL */
	char			 last_verb[16];	/* the command in hand, for
						   refusals; "" once answered */
	bool			 greeted;	/* the greeting (or its refusal)
						   went out */
	unsigned		 nmsgs;
	unsigned		 nrcpts;	/* accepted in the whole session */
	uint64_t		 start_ms;
	struct conn		*next, *prev;	/* in ctx->conns */
};


static inline const struct config *
conn_cfg(const struct conn *c)
{
	return c->rt->cfg;
}

#define CONN_READ_HIGH	(64 * 1024)	/* unparsed input that pauses reading */

/* conn.c */
/* The smtp hooks of every connection; their argument is the conn. */
extern const struct smtp_hooks conn_smtp_hooks;
/*
 * c->bev, new or just swapped for a TLS filter: its callbacks (conn.c's),
 * read and write marks, and write timeout.
 */
void	conn_bev_attach(struct conn *c);
void	conn_process_input(struct conn *c);
/* Input arrived (greeting sent: parse it; before: an early talker). */
void	conn_readable(struct conn *c);
/* The client closed or the socket failed: free the connection. */
void	conn_lost(struct conn *c);
/* The peer's end of file: what it sent before is still answered. */
void	conn_eof(struct conn *c);
void	conn_check_close(struct conn *c);
/* The waiting command answered (v, r; none if SMTP_PENDING), then on. */
void	conn_resume(struct conn *c, enum smtp_verdict v,
	    const struct smtp_reply *r);
/* Write the replies gathered in this turn (c->out) at once. */
void	conn_flush_out(struct conn *c);
/*
 * Free c now: the disconnect log line and chain, its timers, socket and
 * place in c->ctx.  Never while a callback of c is below on the stack.
 */
void	conn_free(struct conn *c);
/* The client was too slow: log why, 421 4.4.2 and close. */
void	conn_timeout(struct conn *c, const char *why);
/* The server is stopping: 421 4.3.2 and close (RFC 5321 3.8). */
void	conn_close_stopping(struct conn *c);
/* A message's end was answered: the session closes after it if the
 * server is stopping (421 4.3.2) or a time limit passed meanwhile (421
 * 4.4.2, c->timed_out). */
void	conn_eom_answered(struct conn *c);
/*
 * The client talked when it had to wait: noted once per session (bytes:
 * how many it sent, or SIZE_MAX when not known).
 */
void	conn_note_early_talker(struct conn *c, const char *when,
	    size_t bytes);
/*
 * start.c: the greeting, at once or after greeting-delay (early talkers
 * are looked for meanwhile): the end of a plain connection's start, or of
 * an implicit TLS handshake.  May free c.
 */
void	conn_greet_start(struct conn *c);
/*
 * start.c: bytes before a delayed greeting: refused and closed, or left
 * in the socket for the greeting ("early-talker continue").
 */
void	conn_early_talker(struct conn *c);
/* handshake.c: STARTTLS was accepted and its 220 queued: swap to TLS. */
void	conn_starttls(struct conn *c);
/* A handshake gets idle-timeout to finish: start its deadline. */
void	conn_hs_deadline(struct conn *c);
/* The handshake is over: note what it agreed, and go on. */
void	conn_tls_done(struct conn *c);
/* A handshake over, its end perhaps not reported yet: note it (once). */
void	conn_tls_note(struct conn *c);
/*
 * The session is closing cleanly: once its last reply is in TLS records,
 * close_notify (once), then conn_tls_drain_under().
 */
void	conn_tls_close(struct conn *c);
/*
 * Under a STARTTLS filter, TLS's last records (close_notify, a failed
 * handshake's alert) may wait in the socket's own bufferevent: the filter
 * is done with, and that one writes them alone, calling conn_check_close()
 * once the socket took them.  False when nothing waits there.
 */
bool	conn_tls_drain_under(struct conn *c);
/* A TLS handshake (STARTTLS or implicit) is under way. */
bool	conn_in_handshake(const struct conn *c);
/*
 * plainread.c: a plain socket is read with one recv per wake-up, not
 * through the bufferevent (start, and stop before STARTTLS or the free);
 * reading on and off, plain or through the bufferevent.
 */
void	conn_read_plain_start(struct conn *c, int fd);
void	conn_read_plain_stop(struct conn *c);
void	conn_read_enable(struct conn *c);
void	conn_read_disable(struct conn *c);
/* deadline.c: the read deadlines */
void	conn_deadline_init(struct conn *c);
void	conn_deadline_clear(struct conn *c);
/* After a turn: start, move or stop the deadline; fed: octets fed. */
void	conn_deadline_update(struct conn *c, size_t fed);
/* stage.c: the smtp hooks */
enum smtp_verdict conn_decide_cb(void *arg, const struct smtp_event *ev,
	    struct smtp_reply *r);
/* Keep ev (its arg copied) in c->wait_ev for an answer that comes later. */
void	conn_keep_event(struct conn *c, const struct smtp_event *ev);
/* A reply of our own into r: code, and the text from fmt. */
void	conn_set_reply(struct smtp_reply *r, int code, const char *fmt, ...)
	    UTIL_PRINTF(3, 4);
/*
 * "nomail after-data" (the listener's or a handler's): every recipient is
 * taken, never routed, and the content answered 521.
 */
bool	conn_nomail_after_data(const struct conn *c);
/* Run the eom chain (c->cs); its answer may come later (SMTP_PENDING). */
enum smtp_verdict conn_eom_chain(struct conn *c, struct smtp_reply *r);
/* envelope.c: MAIL and RCPT */
/* MAIL: the sender checked (its lookups may wait), then conn_mail_begin. */
enum smtp_verdict conn_stage_mail(struct conn *c, const struct smtp_event *ev,
	    struct smtp_reply *r);
/* Who names a recipient: the client (perhaps never to deliver), a filter. */
enum conn_rcpt_from {
	CONN_RCPT_CLIENT,
	CONN_RCPT_CLIENT_NO_DELIVER,
	CONN_RCPT_FILTER
};
/* Route rcpt into the envelope (c->tx), or refuse it in r. */
enum smtp_verdict conn_stage_rcpt(struct conn *c, const char *rcpt,
	    enum conn_rcpt_from from, struct smtp_reply *r);
/*
 * The action of a transaction in sync mode (its one recipient goes to a
 * webhook with "sync"), or NULL.
 */
const struct config_action *conn_sync_action(struct conn *c);
/* message.c: the transaction and its message */
/* The sender is accepted: the transaction starts (c->tx). */
enum smtp_verdict conn_mail_begin(struct conn *c, const struct smtp_event *ev);
/* DATA: the message is named and its Received: header written first. */
enum smtp_verdict conn_stage_data(struct conn *c);
/* The end of the message: the eom chain, once its content can be read. */
enum smtp_verdict conn_stage_eom(struct conn *c, struct smtp_reply *r);
/* The chains have spoken: their edits, then the commit (its reply later). */
enum smtp_verdict conn_eom_commit(struct conn *c, struct smtp_reply *r);
/*
 * The header block with a filter's header edits into head; *old_len_out:
 * the octets of the client's it replaces.  0, or -1 with r set.
 */
int	conn_mods_head(struct conn *c, struct util_buf *head,
	    size_t *old_len_out, struct smtp_reply *r);

/*
 * proxied.c: a connection on a proxy listener (c->px).  origin: the
 * PROXY header it came with (its address reached goes up), or NULL.
 */
void	conn_proxy_start(struct conn *c, int fd,
	    const struct conn_origin *origin);
void	conn_proxy_free(struct conn *c);
/* The client's command line as read (the trace hook), kept for relaying. */
void	conn_proxy_line(struct conn *c, const char *line, size_t len);
/* AUTH's password (copied, wiped once relayed; NULL wipes it now). */
void	conn_proxy_keep_secret(struct conn *c, const char *secret);
/* Our work at a stage the chains let through: relay it (not EOM). */
enum smtp_verdict conn_proxy_stage(struct conn *c, const struct smtp_event *ev,
	    struct smtp_reply *r);
/* The end of a message the chains accepted: up it goes. */
enum smtp_verdict conn_proxy_eom(struct conn *c, struct smtp_reply *r);
/* Content waits in the spool file until the header/eom chains decide. */
bool	conn_proxy_holds(const struct conn *c);
/* A message's end went up and its reply is still to come. */
bool	conn_proxy_eom_out(const struct conn *c);
bool	conn_proxy_backlogged(struct conn *c);
int	conn_proxy_body(struct conn *c, const char *buf, size_t len);
void	conn_proxy_reset(struct conn *c);
void	conn_proxy_tls(struct conn *c, const char *sni);
/* A command the proxy refuses itself (AUTH when not relayed): true, r. */
bool	conn_proxy_refuses_auth(const struct conn *c, const char *verb,
	    struct smtp_reply *r);
int	conn_body_cb(void *arg, const char *buf, size_t len);
void	conn_reset_cb(void *arg);

#endif
