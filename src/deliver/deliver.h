/*
 * deliver/deliver.h: one file per action kind; each delivery blocks (worker
 * threads only).  An *err_out string comes from util_err() (or is static):
 * valid until the thread's next error.  Knows nothing of the listener
 * side.
 */
#ifndef POSTERN_DELIVER_H
#define POSTERN_DELIVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config/config.h"
#include "http/http.h"
#include "mime/mime.h"

/* What is known of where a message came from (payloads show it). */
struct deliver_origin {
	const char	*client_ip;	/* NULL: unknown (local submission) */
	const char	*helo;
	const char	*tls;		/* "TLSv1.3"; NULL: in clear */
	const char	*auth_user;	/* NULL: not authenticated */
	const char *const *rcpts;	/* all the message's recipients */
	size_t		 nrcpts;
};

/*
 * How a delivery puts a new message in the queue (an agent's reply, a
 * pass-through copy); the queue sets it when it delivers.  The content
 * (LF line ends) is head[0..head_len) then, when src is not NULL, src's
 * content from byte src_off on; the queue puts its own Received: field
 * first.  0 once the message is safely queued; -1 with *err_out when it
 * could not be (a retry may work); -2 when rcpt has no route at all.
 */
struct deliver_msg;
struct deliver_inject {
	int	(*fn)(void *arg, const char *sender, const char *rcpt,
		    const char *head, size_t head_len,
		    const struct deliver_msg *src, uint64_t src_off,
		    const char **err_out);
	void	*arg;
};

struct deliver_msg {
	const char	*content_path;	/* spooled content, LF line ends */
	const char	*content;	/* or the content in memory (then
					   content_path is unused), borrowed */
	size_t		 content_len;
	int		 content_fd;	/* > 0: or read the content from this
					   descriptor, from its start */
	bool		 fresh;		/* never tried before: skip the
					   already-delivered check */
	/*
	 * Optional: called on the delivering thread with the recipients an
	 * upstream accepted (its 250 to the data: rcpts[0..n), the pointers
	 * the delivery was given), once per transaction, before QUIT, so
	 * the caller can record them durably before anything else can go
	 * wrong.
	 */
	void		(*settled_cb)(void *arg, const char *const *rcpts,
			    size_t n);
	void		*settled_arg;
	const char	*return_path;	/* envelope sender, "" for <> */
	bool		 smtputf8;	/* received with SMTPUTF8 (RFC 6531):
					   sent on with it where offered */
	/*
	 * An SMTPUTF8 message by its type (a global DSN, RFC 6533): sent on
	 * only with SMTPUTF8, whatever its header block holds.
	 */
	bool		 smtputf8_needed;
	const char	*qid;
	size_t		 rcpt_idx;
	int64_t		 received;	/* epoch seconds */
	const char	*hostname;	/* for Maildir unique names */
	const struct deliver_origin *origin;	/* borrowed, or NULL */
	const struct deliver_inject *inject;	/* borrowed, or NULL: none */
	/*
	 * Optional (the fast path): a Maildir copy on a file system that
	 * journals in order is then written into tmp/ without any sync and
	 * noted here, and so are the others on its file system that are to
	 * be links to it; the caller records them (the spool log), names
	 * them in new/ (deliver_maildir_publish), and syncs them where it
	 * recorded nothing (deliver_maildir_sync).  NULL: each copy is
	 * durable on return.
	 */
	struct deliver_unsynced	*unsynced;
};

struct deliver_unsynced_copy {
	char	*path;		/* owned: "<folder>/new/<name>" */
	char	*folder, *name;	/* owned */
	dev_t	 dev;		/* of the folder */
	size_t	 rcpt;		/* the recipient's index (rcpt_idx) */
	bool	 held;		/* in tmp/ until deliver_maildir_publish */
	size_t	 src;		/* or linked to v[src] then; SIZE_MAX: not */
};
struct deliver_unsynced {
	char	*hdr;		/* owned: the copies' first line */
	struct deliver_unsynced_copy *v;	/* owned */
	size_t	 n;
};
void	deliver_unsynced_clear(struct deliver_unsynced *u);
/*
 * Make an unsynced copy durable (fsync of its file).  0, or -1 with
 * *err_out, the copy taken back (unlinked: it may not be whole).
 */
int	deliver_maildir_sync(const char *path, const char **err_out);
struct deliver_rcpt_status;
/*
 * Name the copies u holds in tmp/ in new/ (a rename each), and link the
 * others to them, without a sync; a link that fails writes a copy of its
 * own, as deliver_maildir_copies does.  A copy that cannot be named gets
 * DELIVER_TEMPFAIL in st[its rcpt], its file in tmp/ removed.
 */
void	deliver_maildir_publish(struct deliver_unsynced *u,
	    const struct deliver_msg *m, struct deliver_rcpt_status *st);
/* The first line of each Maildir copy of m ("Return-Path: <...>\n"). */
char	*deliver_maildir_hdr(const struct deliver_msg *m);

enum deliver_result { DELIVER_OK, DELIVER_TEMPFAIL, DELIVER_PERMFAIL };

/*
 * Deliver one copy into the Maildir at folder (created with tmp/ new/ cur/
 * if missing): "Return-Path: <sender>" then the content, written to tmp/
 * under a name derived from qid and rcpt_idx, fsynced, renamed into new/,
 * new/ fsynced.  If that name is already in new/ or cur/ (a delivery
 * before a crash), nothing is written and DELIVER_OK is returned: exactly
 * once per recipient.  *err_out says why on failure.
 */
enum deliver_result deliver_maildir(const char *folder,
	    const struct deliver_msg *m, const char **err_out);
struct deliver_rcpt_status;
/*
 * The same for several recipients of m at once: recipient i's copy goes
 * into folders[i] under a name derived from qid and rcpt_idx[i]
 * (m->rcpt_idx is not used), and st_out[i] gets its outcome.  The copies
 * are the same bytes: the first on each file system is written, the
 * others are hard links to it, and one journal commit makes them all
 * durable where the file system allows (deliver/maildir.c).
 */
void	deliver_maildir_copies(const char *const *folders,
	    const size_t *rcpt_idx, size_t n, const struct deliver_msg *m,
	    struct deliver_rcpt_status *st_out);

/*
 * Descriptors all threads together keep open for Maildirs between
 * deliveries: at most fds, and never more than DELIVER_MD_KEEP_MAX (the
 * default).  A lower limit applies as the threads deliver next.
 */
#define DELIVER_MD_KEEP_MAX	1024
void	deliver_maildir_keep_limit(size_t fds);

/*
 * Start (or count one more user of) the thread that removes files a crash
 * left in the tmp/ of the Maildirs deliver_maildir writes to: those not
 * read or written for 36 hours, never one of our deliveries in progress.
 * Each folder is swept at its first delivery, then hourly while in use.
 * stop undoes one start; the last one joins the thread.
 */
void	deliver_maildir_sweeper_start(void);
void	deliver_maildir_sweeper_stop(void);
/*
 * The same for folder, once and now, in this thread (at most one pass's
 * worth of tmp/ entries): for a process that delivers into a Maildir and
 * exits, which the sweeper thread never hears of (the privileged helper's
 * child writing as the Maildir's owner, who alone may read it).
 */
void	deliver_maildir_sweep_now(const char *folder);

/* ==== Programs (pipe.c, over prog.c) ==== */

struct deliver_rcpt_status;

struct deliver_pipe_opts {
	char *const	*argv;		/* argv[0] an absolute path; each may
					   hold %{rcpt} %{rcpt.user}
					   %{rcpt.domain} %{sender} %{qid} */
	const char	*user;		/* run as (postern runs as root);
					   NULL: as postern runs */
	const char	*server_user;	/* the config's "user", or NULL */
	uint64_t	 timeout_ms;	/* 0: 10 min; then SIGKILL, retried */
};

/* 0 when tpl's variables are all known, else -1 with *err_out. */
int	deliver_pipe_check_arg(const char *tpl, const char **err_out);
/*
 * Run the program for rcpt with "Return-Path: <sender>" and "Delivered-To:
 * rcpt" then m's content on stdin, in a clean environment (PATH, SENDER,
 * RECIPIENT, LOCAL, DOMAIN, POSTERN_QID).  Exit 0 delivers; 75
 * (EX_TEMPFAIL), a signal, a timeout or a failure to start is temporary;
 * any other status is permanent, with the first stderr line in st->text
 * after an RFC 3463 code from sysexits(3).  Blocks: worker threads only.
 */
enum deliver_result deliver_pipe(const struct deliver_pipe_opts *o,
	    const struct deliver_msg *m, const char *rcpt,
	    struct deliver_rcpt_status *st, const char **err_out);

/* ==== Webhooks (webhook.c, payload.c) ==== */

enum deliver_webhook_format {
	DELIVER_WEBHOOK_JSON,		/* the parsed message as JSON */
	DELIVER_WEBHOOK_RAW,		/* message/rfc822, CRLF line ends */
	DELIVER_WEBHOOK_TEMPLATE,	/* a template over the JSON */
};

struct deliver_webhook_opts {
	const char	*url;
	const char	*method;	/* "POST" or "PUT"; NULL: POST */
	enum deliver_webhook_format format;
	const struct mime_tpl *tpl;	/* borrowed: TEMPLATE */
	const char *const *headers;	/* "Name: value", NULL-terminated */
	const char	*bearer;	/* or user and pass: basic */
	const char	*user, *pass;
	const void	*secret;	/* HMAC-SHA256 key; NULL: unsigned */
	size_t		 secret_len;
	const char	*ca_file;
	bool		 no_verify;
	uint64_t	 timeout_ms;	/* 0: 30 s */
	size_t		 response_max;	/* 0: 64 KiB */
	struct mime_limits limits;	/* JSON: text and attachments kept */
	const char	*agent;		/* the JSON's "agent": the mailbox a
					   reply agent answers for; or NULL */
};

/* A request ready for the HTTP client, and what it owns. */
struct deliver_webhook_req {
	struct http_request req;
	char		**hdrs;		/* owned, NULL-terminated */
	size_t		 nhdrs;
	struct util_buf	 body;		/* owned: JSON or a CRLF copy */
};

/*
 * Build the request for rcpt: the body (JSON, template or raw), its
 * length and signature ("X-Postern-Signature: t=TS,v1=HEX", HMAC-SHA256
 * of "TS." and the body), "Idempotency-Key: QID/RCPT" (the same on every
 * attempt), X-Postern-Queue-Id, -Envelope-From and -Envelope-To.  The
 * request borrows o and m.  0, or -1 with *err_out (the content could
 * not be read).  Worker threads only: it reads the content.
 */
int	deliver_webhook_req_new(const struct deliver_webhook_opts *o,
	    const struct deliver_msg *m, const char *rcpt,
	    struct deliver_webhook_req *w, const char **err_out);
void	deliver_webhook_req_clear(struct deliver_webhook_req *w);
/*
 * The answer as an outcome in *st: 2xx delivered; no answer, 408, 429
 * or 5xx temporary (retry_after_ms from Retry-After); anything else
 * permanent, with the status and the first line of the answer.
 */
enum deliver_result deliver_webhook_outcome(const struct http_result *res,
	    struct deliver_rcpt_status *st);
/* Both, and the request through hc between them.  Blocks. */
enum deliver_result deliver_webhook(struct http_client *hc,
	    const struct deliver_webhook_opts *o, const struct deliver_msg *m,
	    const char *rcpt, struct deliver_rcpt_status *st,
	    const char **err_out);

/* Who waits for a sync delivery, and how long. */
struct deliver_sync_waiter {
	uint64_t	 timeout_ms;
	int		 stop_fd;	/* borrowed: once readable the request
					   is cancelled; -1: none */
	atomic_bool	*cancel;	/* borrowed until done_cb: once true
					   (deliver_webhook_sync_cancel) the
					   request is cancelled */
	void		(*done_cb)(void *arg,
			    const struct deliver_rcpt_status *st);
	void		*arg;
};

/*
 * Sync mode: deliver m to rcpt through the webhook action's runtime (as
 * kept by the configuration in force) for an SMTP session that waits,
 * within w->timeout_ms.  The request is built now (on a worker: it reads
 * the content, which must stay until done_cb) and sent; w->done_cb(w->arg,
 * st) then runs once, on the HTTP client's thread, with the outcome as
 * deliver_webhook_outcome() gives it (cancelled: 4.4.1).  0, or -1 with
 * *err_out when the request could not be built (done_cb never runs).
 */
int	deliver_webhook_sync(void *runtime, const struct deliver_msg *m,
	    const char *rcpt, const struct deliver_sync_waiter *w,
	    const char **err_out);
/*
 * The waiter will not read the outcome: the request started with
 * w->cancel == cancel through runtime (still held by the caller) is
 * cancelled at once, its connection to the service closed; done_cb runs
 * as ever (cancelled: 4.4.1).  Called before the request went out, it
 * never goes; after it ended, it changes nothing.  Thread-safe.
 */
void	deliver_webhook_sync_cancel(void *runtime, atomic_bool *cancel);

/* ==== Agents: mailboxes that answer (agent.c, memo.c) ==== */

enum deliver_agent_kind {
	DELIVER_AGENT_TEXT,		/* a canned text, with %{...} */
	DELIVER_AGENT_COMMAND,		/* a program: JSON in, reply out */
	DELIVER_AGENT_WEBHOOK,		/* a web service's answer */
	DELIVER_AGENT_LUA,		/* a Lua function's answer */
};

struct deliver_agent_opts {
	enum deliver_agent_kind kind;
	const struct mime_tpl *text;	/* TEXT: borrowed, MIME_TPL_TEXT */
	char *const	*argv;		/* COMMAND: argv[0] absolute */
	const char	*user;		/* COMMAND: run as; NULL: as we are */
	const char	*server_user;	/* COMMAND: the config's "user" */
	uint64_t	 timeout_ms;	/* COMMAND: 0: 60 s, then killed */
	size_t		 out_max;	/* COMMAND: stdout bound; 0: 1 MiB */
	struct deliver_hook *hook;	/* WEBHOOK: borrowed (hook.c), with
					   its client; format JSON or
					   TEMPLATE */
	struct chain_lua_box *lua;	/* LUA: borrowed */
	const char	*from_name;	/* the reply's From: display name */
	uint64_t	 period_ms;	/* one reply per sender per period;
					   0: a day */
	unsigned	 received_max;	/* loop guard; 0: 25 */
	struct mime_limits limits;	/* the message as the agent sees it */
};

struct chain_lua_box;
struct deliver_hook;
struct deliver_agent;
/*
 * An agent (o and what it points to borrowed: they must outlive it) with
 * its reply memory in the state store store_spec ("sqlite:PATH",
 * "redis:HOST:PORT", "memory:"; NULL: memory).  NULL with *err_out.
 */
struct deliver_agent *deliver_agent_new(const struct deliver_agent_opts *o,
	    const char *store_spec, const char **err_out);
void	deliver_agent_free(struct deliver_agent **ap);
/*
 * Answer m, sent to the agent's mailbox rcpt: nothing when RFC 3834 says
 * so or when the sender had a reply within the period; else the agent
 * runs and its reply (From: rcpt, To: the sender, Re: subject,
 * In-Reply-To, References, Auto-Submitted: auto-replied) goes into the
 * queue from <> through m->inject.  DELIVER_OK when the message is dealt
 * with (answered, rightly not answered, or the agent failed for good:
 * logged); DELIVER_TEMPFAIL when the agent timed out, crashed, asked for
 * later, or the store or queue failed.  Blocks: worker threads only.
 */
enum deliver_result deliver_agent_run(struct deliver_agent *a,
	    const struct deliver_msg *m, const char *rcpt,
	    struct deliver_rcpt_status *st, const char **err_out);

/*
 * Pass m, sent to the mailbox rcpt, on to target: the same content with
 * "Subject: [mailbox@] ..." (once; added when there is none) and a
 * Received: field, into the queue from the same sender through
 * m->inject.  Blocks: worker threads only.
 */
enum deliver_result deliver_passthrough(const char *target,
	    const struct deliver_msg *m, const char *rcpt,
	    struct deliver_rcpt_status *st, const char **err_out);

/* ==== Outbound SMTP (the outbound client: smtpc.c mx.c pop.c remote.c
 * dconn.c) ====
 *
 * The runtime of the kinds relay, mx, forward and relay-by-sender (kind.c
 * opens, uses and closes it for the server):
 *
 *	at start-up and after each reload, once per such action:
 *	    struct deliver_remote *dr = deliver_remote_new(cfg, action, &err);
 *	    (NULL + err: a table could not be opened -> log it, defer mail)
 *	per message, with the pending recipients routed to that action (any
 *	domains; the relay sends them in one transaction, MX groups them by
 *	domain):
 *	    struct deliver_rcpt_status st[n];
 *	    deliver_remote_send(dr, &msg, rcpts, n, st, &err);
 *	then for each i: st[i].result DELIVER_OK -> record done durably;
 *	DELIVER_TEMPFAIL -> retry later; DELIVER_PERMFAIL -> bounce (RFC 3464:
 *	Status from st[i].code / st[i].text's enhanced code, Remote-MTA
 *	st[i].remote when not "", Diagnostic-Code "smtp; " st[i].text).
 *	    deliver_remote_free(&dr) once no worker uses it.
 *
 * deliver_remote_send() blocks (worker threads only, never an event loop);
 * one deliver_remote may be used by several threads at once.  msg.content
 * or msg.content_path (LF line ends) is sent: a spool file read into
 * memory once when small (DELIVER_CONTENT_HOLD_MAX, 256 KiB), a bigger one
 * streamed, never loaded whole;
 * msg.return_path is the envelope sender ("" for <>), msg.hostname our
 * EHLO name unless the action says "helo NAME".
 *
 * A permanent failure is decided by the remote (5xx) or by us: the message
 * is bigger than the server's SIZE, has 8-bit content and the server lacks
 * 8BITMIME (RFC 6152 3; a message sent with SMTPUTF8 needs no 8BITMIME,
 * RFC 6531 3.3), or needs SMTPUTF8 and the server lacks it (RFC 6531 3.4):
 * never downgraded or corrupted.  A message needs SMTPUTF8 when an
 * envelope address is not ASCII, when msg.smtputf8_needed, or when
 * msg.smtputf8 and its header block as sent has a byte over 0x7f; one
 * received with SMTPUTF8 that needs it for none of these goes to a server
 * without SMTPUTF8 as it is, without the parameter.
 */
struct config;
struct config_action;
struct table;
struct tls_client;

/* Per recipient, filled by every sending function below. */
struct deliver_rcpt_status {
	enum deliver_result	 result;
	int			 code;		/* the deciding SMTP reply
						   code; 0: no reply (ours) */
	char			 text[512];	/* that reply ("550 5.1.1 No
						   such user") as the server
						   wrote it, cut to fit: not
						   escaped, so who logs it
						   escapes it; or our reason
						   when code 0 */
	char			 remote[300];	/* "host[ip]:port" that said
						   it, "" when none */
	uint64_t		 retry_after_ms; /* on a temporary failure:
						   not again before this
						   (Retry-After); 0: no hint */
};

/* Every one of st[0..n) says r, with text (NULL: none); kind.c. */
void	deliver_status_all(struct deliver_rcpt_status *st, size_t n,
	    enum deliver_result r, const char *text);

enum deliver_tls {
	DELIVER_TLS_NONE,		/* plain text */
	DELIVER_TLS_OPPORTUNISTIC,	/* STARTTLS when offered (MX) */
	DELIVER_TLS_STARTTLS,		/* STARTTLS required: tempfail without */
	DELIVER_TLS_IMPLICIT,		/* TLS from the first byte (465) */
};

/* RFC 5321 4.5.3.2 client timeouts in ms; 0 takes the default shown. */
struct deliver_timeouts {
	uint64_t	connect_ms;	/* 30 s (not in the RFC) */
	uint64_t	greeting_ms;	/* 5 min: initial 220 */
	uint64_t	command_ms;	/* 5 min: EHLO, STARTTLS, AUTH, MAIL,
					   RCPT, QUIT replies */
	uint64_t	data_init_ms;	/* 2 min: the 354 */
	uint64_t	data_block_ms;	/* 3 min: each write of content */
	uint64_t	data_term_ms;	/* 10 min: the reply to "." */
};

/* Header changes made while streaming (NULL: leave alone). */
struct deliver_rewrite {
	const char	*return_path;	/* "Return-Path: <A>" first; old ones
					   dropped */
	const char	*reply_to;	/* "Reply-To: A" replaces or is added */
	const char	*from;		/* "From: A" replaces or is added */
};

/*
 * Keeping sessions open between messages (scache.c): after a transaction
 * the session waits idle for the next message to the same server with the
 * same settings, instead of QUIT.
 */
struct deliver_reuse {
	const void	*owner;		/* the action's runtime: its sessions
					   are its own, dropped when it goes */
	uint64_t	 idle_ms;	/* kept idle at most this; 0: no reuse */
	unsigned	 max_uses;	/* transactions per connection */
	unsigned	 cache_max;	/* idle sessions kept at once, in all */
};

/* One SMTP server to talk to. */
struct deliver_smtp_opts {
	const char	*host;		/* name or IP literal to connect to */
	int		 port;
	const char	*tls_name;	/* SNI + verified name; NULL: host */
	enum deliver_tls tls;
	struct tls_client *tls_ctx;	/* borrowed; NULL: one is made per
					   connection from the two below */
	bool		 no_verify;	/* skip certificate verification */
	const char	*ca_file;	/* trust anchors; NULL: system store */
	const char	*helo;		/* EHLO name; NULL: msg->hostname */
	const char	*user;		/* AUTH PLAIN/LOGIN (RFC 4954); NULL:
					   no AUTH */
	const char	*pass;		/* never logged */
	const struct deliver_rewrite *rewrite;	/* NULL: none */
	struct deliver_timeouts timeouts;
	unsigned	 max_received;	/* >0: more Received: headers than
					   this is a loop, 554 5.4.6 */
	const char	*unix_path;	/* connect to this unix socket instead
					   of host:port */
	bool		 lmtp;		/* RFC 2033: LHLO, and one reply per
					   accepted recipient after DATA */
	const struct deliver_reuse *reuse;	/* NULL: QUIT after each
						   message */
};

/*
 * One SMTP transaction with one server for rcpts[0..n-1] (or LMTP when
 * o->lmtp: LHLO, and each accepted recipient's own reply to the end of
 * DATA): EHLO (HELO when refused), STARTTLS/AUTH as o says, MAIL with SIZE/BODY/SMTPUTF8 as
 * offered, RCPTs and DATA pipelined when PIPELINING is offered (RFC 2920),
 * the content dot-stuffed with CRLF line ends.  st_out[i] gets each
 * recipient's result; DATA's final reply applies to the accepted ones.
 * With o->reuse, an idle session to the same server with the same
 * settings is taken instead of a new connection when one is kept (one
 * the server closed or refuses MAIL on is given up for a new connection,
 * the message never sent twice), and the session is kept afterwards.
 * Returns DELIVER_OK when every recipient is done, DELIVER_PERMFAIL when
 * every one failed permanently, else DELIVER_TEMPFAIL; *err_out then names
 * the first problem (util_err(): valid until the thread's next error).
 */
enum deliver_result deliver_smtp(const struct deliver_smtp_opts *o,
	    const struct deliver_msg *m, const char *const *rcpts, size_t n,
	    struct deliver_rcpt_status *st_out, const char **err_out);

/* An MX target: what to connect to, in the order to try. */
struct deliver_mx_host {
	char		 name[256];	/* the MX host name (TLS name) */
	char		 addr[64];	/* IP literal, or "" to resolve name */
	int		 port;
	int		 pref;
};

struct deliver_self;

struct deliver_mx_opts {
	const char	*resolver;	/* "IP[:PORT]" nameserver; NULL:
					   /etc/resolv.conf */
	const struct deliver_self *self;	/* borrowed: this server's
					   listeners, or NULL: no check */
	struct table	*mx_hosts;	/* borrowed, or NULL: a "domain" entry
					   "PREF HOST:PORT[, PREF HOST:PORT]"
					   replaces DNS for that domain */
	uint64_t	 dns_timeout_ms;	/* per query; 0: 10 s */
	int		 port;		/* SMTP port for DNS answers; 0: 25 */
};

/*
 * The hosts to try for domain, RFC 5321 5.1: MX records by preference
 * (equal ones shuffled; the 32 most preferred), each name's A and AAAA
 * addresses; no MX: the domain's own addresses (implicit MX); an address
 * literal ("[192.0.2.1]", "[IPv6:...]"): that address.  An mx-hosts entry
 * comes first.  Lookups are asynchronous (evdns and our MX query, over
 * TCP when the UDP answer is truncated, on a private event_base of this
 * thread).  A host that is o->self goes, with every one not more preferred.
 * Returns 0 with a malloc'd array (*hosts_out, *n_out >= 1), or -1 with
 * *err_out and *perm_out true when no host can ever exist (NXDOMAIN, null
 * MX RFC 7505, no address, only ourselves), false for a temporary DNS
 * failure.
 */
int	deliver_mx_resolve(const struct deliver_mx_opts *o, const char *domain,
	    struct deliver_mx_host **hosts_out, size_t *n_out, bool *perm_out,
	    const char **err_out);

/*
 * Direct delivery of rcpts (all in one domain) to the domain's MX hosts in
 * order, falling back to the next host for recipients that got a 4xx or a
 * connection failure.  smtp gives HELO name, TLS (opportunistic by
 * default) and timeouts; its host/port are ignored.  Returns as
 * deliver_smtp().
 */
enum deliver_result deliver_mx(const struct deliver_mx_opts *o,
	    const struct deliver_smtp_opts *smtp, const char *domain,
	    const struct deliver_msg *m, const char *const *rcpts, size_t n,
	    struct deliver_rcpt_status *st_out, const char **err_out);

/* POP-before-SMTP login (pop.c). */
struct deliver_pop_opts {
	const char	*host;
	int		 port;
	enum deliver_tls tls;		/* NONE, STARTTLS (STLS, RFC 2595) or
					   IMPLICIT (pop3s) */
	bool		 no_verify;
	const char	*ca_file;
	const char	*user;
	const char	*pass;		/* never logged */
	uint64_t	 timeout_ms;	/* per reply; 0: 60 s */
};
/* USER/PASS (RFC 1939 7) then QUIT.  0, or -1 with *err_out. */
int	deliver_pop_login(const struct deliver_pop_opts *o,
	    const char **err_out);

/*
 * Content pushed in pieces as it arrives, for a sender on an event loop (a
 * proxy relaying a message): the canonical DATA of deliver_content_stream()
 * (content.c) without its header rewrites.  Any line end (LF, CR, CRLF)
 * goes out as CRLF, a line over 998 octets is folded with CRLF SP, a
 * leading dot is doubled (RFC 5321 4.5.2); the bytes go to put(arg, p, n),
 * which returns 0 or -1.  A value: embed it, no free.
 */
struct deliver_canon {
	int		(*put)(void *arg, const void *p, size_t n);
	void		*arg;
	size_t		 col;		/* octets on the current wire line */
	bool		 mid;		/* inside a line */
	bool		 skip_lf;	/* a CR ended the last line: an LF
					   right after it is part of its end */
};
void	deliver_canon_init(struct deliver_canon *k,
	    int (*put)(void *arg, const void *p, size_t n), void *arg);
/* The next n octets of content.  0, or -1 when put failed. */
int	deliver_canon_feed(struct deliver_canon *k, const char *p, size_t n);
/* The end: a line end when the last line has none, then ".\r\n".  0/-1. */
int	deliver_canon_end(struct deliver_canon *k);

/* A relay/mx/forward/relay-by-sender action ready to send (remote.c). */
struct deliver_remote;
/*
 * Build the sender for action a of config c (borrowed: must outlive the
 * result); opens the tables it names.  NULL with *err_out.
 */
struct deliver_remote *deliver_remote_new(const struct config *c,
	    const struct config_action *a, const char **err_out);
void	deliver_remote_free(struct deliver_remote **drp);
/*
 * Send m to rcpts through the action: relay (POP-before-SMTP first when
 * the account has it, credentials looked up now so table edits apply),
 * direct MX per recipient domain, forward (to the action's address), or the
 * account chosen by m->return_path.  Thread-safe.  Returns as
 * deliver_smtp().
 */
enum deliver_result deliver_remote_send(struct deliver_remote *dr,
	    const struct deliver_msg *m, const char *const *rcpts, size_t n,
	    struct deliver_rcpt_status *st_out, const char **err_out);

/* How a kind takes a message's recipients of one action (one spool arg). */
enum deliver_together {
	DELIVER_ALONE,		/* one at a time */
	/*
	 * All due ones at once, as one copy to one address whoever they
	 * are (forward): the address gets one copy, and each of them gets
	 * that copy's outcome.
	 */
	DELIVER_ONE_COPY,
	/*
	 * All due ones at once, in one transaction a destination (relay,
	 * mx): one copy of the content upstream for them all, and
	 * each its own reply.
	 */
	DELIVER_ONE_TXN,
};

/* ==== Action kinds (kind.c): the one place that knows what each does ====
 *
 * One entry per kind of action.  config/ reads each kind's statement
 * (config/parse_action.c: its keyword and parser); everything else postern
 * does with a kind goes through its entry: whether its delivery can be
 * the commit (the fast path), the runtime it needs per loaded
 * configuration, and the delivery itself.  What the spool keeps for a
 * recipient (its arg) is route/'s answer.
 */
struct deliver_kind {
	enum config_action_kind	 kind;
	/*
	 * Its delivery can be the commit at the end of DATA: it writes each
	 * copy durably itself, from the message in memory (maildir, discard).
	 */
	bool			 fast_path;
	/* Whether the queue hands it a message's due recipients of one
	 * action together. */
	enum deliver_together	 together;
	/*
	 * Build the runtime of action a of config c (c borrowed: it must
	 * outlive the runtime) at start-up and after each reload; NULL with
	 * *err_out.  NULL open: the kind needs none.  close frees it.
	 */
	void			*(*open)(const struct config *c,
				    const struct config_action *a,
				    const char **err_out);
	void			(*close)(void *runtime);
	/*
	 * Deliver m to rcpts[0..n), recipients of one action with the same
	 * spool arg (n == 1 unless the kind takes them together),
	 * through runtime (open's result, NULL without one); st_out[i] gets
	 * each recipient's result.  Returns as deliver_smtp().  Blocks:
	 * worker threads only.
	 */
	enum deliver_result	(*deliver)(void *runtime, const char *arg,
				    const struct deliver_msg *m,
				    const char *const *rcpts, size_t n,
				    struct deliver_rcpt_status *st_out,
				    const char **err_out);
	/*
	 * Optional, for a kind without a runtime that writes one copy per
	 * recipient (maildir): deliver m to n of them at once, recipient
	 * i with its own spool arg args[i] and index rcpt_idx[i] in the
	 * envelope (m->rcpt_idx is not used), so that identical copies can
	 * share their writes and commits.  st_out[i] gets each one's
	 * result.  Blocks: worker threads only.
	 */
	void			(*deliver_copies)(const char *const *args,
				    const size_t *rcpt_idx, size_t n,
				    const struct deliver_msg *m,
				    struct deliver_rcpt_status *st_out);
	/*
	 * Optional: what open would find wrong (files that do not load,
	 * programs that do not run), without starting or making anything;
	 * "postern check" calls it instead of open (conn_rt_check), and a
	 * start or reload calls it for a kind without open.  0, or -1 with
	 * *err_out.
	 */
	int			(*check)(const struct config *c,
				    const struct config_action *a,
				    const char **err_out);
	/*
	 * It reads a spooled message from m->content when that is set
	 * (content_path NULL), so the queue may hand it a message the spool
	 * holds in memory, not written yet.  Kinds that give the file to
	 * another process or open it by name have the message written first.
	 */
	bool			 from_memory;
};
/*
 * Cut this thread's deliveries short once fd is readable (a queue that
 * stops): from then on each of their waits ends at once as a failure (a
 * connection or a reply: the delivery is deferred; a program: killed; an
 * HTTP request: cancelled), so a delivery in progress returns a temporary
 * failure soon.  fd is borrowed and must stay open while the thread
 * delivers; -1 (each thread's default): never.
 */
void	deliver_stop_fd_set(int fd);

/* The entry of kind; NULL when there is none (never for a parsed action). */
const struct deliver_kind *deliver_kind_of(enum config_action_kind kind);
/* The entry of an action kind as the spool keeps it, or NULL for none. */
const struct deliver_kind *deliver_kind_find(const char *name);
/* Its keyword: "maildir", "relay", ... (as the spool keeps it). */
const char *deliver_kind_name(const struct deliver_kind *k);

#endif
