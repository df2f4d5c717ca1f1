/*
 * deliver/deliver_private.h: what the files of deliver/ share: the blocking
 * client connection of the SMTP and POP3 clients (dconn.c: connect, TLS,
 * line reads and writes, each bounded by a deadline), the content as it
 * goes out in DATA (content.c), what maildir.c tells the tmp/ sweep
 * (maildir_sweep.c), and one Maildir copy's steps, for the fast path's
 * publish (maildir_publish.c).  Not for other modules.
 */
#ifndef POSTERN_DELIVER_PRIVATE_H
#define POSTERN_DELIVER_PRIVATE_H

#include "deliver/deliver.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>
#include <openssl/ssl.h>

#include "util/util.h"

struct tls_client;

/* What ended the connection's last failed call, for the message. */
enum dconn_fail {
	DCONN_FAIL_OTHER = 0,	/* c->err says it all */
	DCONN_FAIL_TIMEOUT,	/* the step's time ran out */
	DCONN_FAIL_LOST,	/* the peer closed or reset the connection */
};

struct dconn {
	int		 fd;		/* -1 when closed */
	SSL		*ssl;		/* owned; NULL before TLS */
	char		 rbuf[8192];	/* bytes read, not yet consumed */
	size_t		 roff, rlen;
	char		 peer[300];	/* "host[ip]:port" for messages */
	char		 err[512];	/* why the last call failed */
	enum dconn_fail	 fail;		/* and what kind of failure */
	bool		 tls_verified;	/* the handshake verified the peer */
	bool		 loopback;	/* connected to 127.0.0.0/8 or ::1 */
};

void	dconn_init(struct dconn *c);
/*
 * Connect to host:port (a name is resolved with getaddrinfo; each address
 * is tried in turn within timeout_ms each).  0, or -1 with c->err.
 */
int	dconn_connect(struct dconn *c, const char *host, int port,
	    uint64_t timeout_ms);
/* Connect to the unix socket at path.  0, or -1 with c->err. */
int	dconn_connect_unix(struct dconn *c, const char *path,
	    uint64_t timeout_ms);
/*
 * TLS handshake as a client through tc (name: SNI and verified name, or
 * NULL).  Any buffered plain-text input is dropped first (RFC 3207 4.2).
 * 0, or -1 with c->err (verification failures name the reason).
 */
int	dconn_starttls(struct dconn *c, struct tls_client *tc,
	    const char *name, uint64_t timeout_ms);
/* Write all of p; 0, or -1 with c->err. */
int	dconn_write(struct dconn *c, const void *p, size_t n,
	    uint64_t timeout_ms);
/* Octets of one line read, its end included: more is an error. */
#define DCONN_LINE_RAW_MAX	(64 * 1024)

/*
 * Read one line (CRLF or LF stripped, NUL-terminated) into line (size
 * linesz; a longer line is truncated, its rest skipped).  Returns the
 * octets it took from the connection (> 0, line end included), or -1 with
 * c->err on timeout, EOF, error, or a line over DCONN_LINE_RAW_MAX.
 */
int	dconn_readline(struct dconn *c, char *line, size_t linesz,
	    uint64_t timeout_ms);
void	dconn_close(struct dconn *c);
/*
 * Is the idle connection c still usable: open, nothing unread and nothing
 * arrived (a server that closed or said 421 while it waited is not)?
 */
bool	dconn_idle_ok(struct dconn *c);

/* All done, all refused for good, or else temporary; *err_out the first
 * failure's text (util_err). */
enum deliver_result deliver_status_summary(
	    const struct deliver_rcpt_status *st, size_t n,
	    const char **err_out);

/*
 * The kinds' entries for kind.c (one file each): the runtime made from
 * the action, and the delivery of rcpts[0..n), one at a time.
 */
struct config;
struct config_action;
#define DELIVER_KIND_DECL(k)						\
	void	*deliver_##k##_open(const struct config *c,		\
		    const struct config_action *a, const char **err_out); \
	void	 deliver_##k##_close(void *runtime);			\
	enum deliver_result deliver_##k##_kind(void *runtime,		\
		    const char *arg, const struct deliver_msg *m,	\
		    const char *const *rcpts, size_t n,			\
		    struct deliver_rcpt_status *st_out,			\
		    const char **err_out);
DELIVER_KIND_DECL(webhook)	/* webhook.c */
DELIVER_KIND_DECL(agent)	/* agent.c: "reply" */
DELIVER_KIND_DECL(passthrough)	/* passthrough.c: "pass-through" */
DELIVER_KIND_DECL(pipe)		/* pipe.c */
DELIVER_KIND_DECL(lmtp)		/* lmtp.c */
/* The checks of the kinds that have files or programs to look at. */
int	deliver_webhook_check(const struct config *c,
	    const struct config_action *a, const char **err_out);
int	deliver_agent_check(const struct config *c,
	    const struct config_action *a, const char **err_out);
int	deliver_pipe_check(const struct config *c,
	    const struct config_action *a, const char **err_out);
int	deliver_maildir_check(const struct config *c,
	    const struct config_action *a, const char **err_out);
/* The uid and gid of user; false when there is no such user (prog.c). */
bool	deliver_uid_of(const char *user, uid_t *uid_out, gid_t *gid_out);

/*
 * content.c: a message's content as DATA, for the SMTP and LMTP clients.
 * The scan is of what DATA sends, rewrites and all.
 */
struct deliver_content_scan {
	uint64_t	 size;		/* octets by RFC 1870 3: CRLFs count,
					   stuffing dots and the final "."
					   do not */
	bool		 eight_bit;	/* any byte >= 0x80 (RFC 6152) */
	bool		 hdr_eight_bit;	/* one in the header block (up to
					   its empty line, rewrites and
					   all) */
	bool		 nul;		/* a NUL: never to be sent (RFC 5321
					   4.5.2) */
	unsigned	 received;	/* Received: header fields */
};
/*
 * Spooled content up to this size is read into memory once per delivery
 * and both the scan and DATA use that copy; bigger content is read from
 * its file by each, never whole.
 */
#define DELIVER_CONTENT_HOLD_MAX	(256 * 1024)
/*
 * *out becomes a copy of m whose content is in memory when m's is a spool
 * file of at most DELIVER_CONTENT_HOLD_MAX octets.  Returns that memory
 * (the caller frees it once done with *out), or NULL when *out is m as it
 * was: content already in memory, a bigger file, or one that could not be
 * read (the scan then says why).
 */
char	*deliver_content_hold(const struct deliver_msg *m,
	    struct deliver_msg *out);
/*
 * Read m's content once for what the server must offer, as it would go out
 * with the rewrites of rw (NULL: none): what they add counts, what they
 * drop does not.  0, or -1 when it could not be read (*err_out).
 */
int	deliver_content_scan(const struct deliver_msg *m,
	    const struct deliver_rewrite *rw, struct deliver_content_scan *sc,
	    const char **err_out);
/*
 * m's content as DATA: "Return-Path:" first when rw asks, the other
 * rewrites of rw (NULL: none), CRLF line ends (a CR alone ends a line
 * too), lines over 998 octets folded with CRLF SP, dot-stuffing, then
 * ".\r\n"; the bytes go to put(arg, p, n), which returns 0 or -1.  0,
 * or -1 when put failed (its own error) or the content could not be read
 * (*err_out).
 */
int	deliver_content_stream(const struct deliver_msg *m,
	    const struct deliver_rewrite *rw,
	    int (*put)(void *arg, const void *p, size_t n), void *arg,
	    const char **err_out);

/*
 * A delivery writing tmp/<name> of a Maildir (maildir_sweep.c): enter it
 * before the file is created, leave it once the file is in new/ or gone,
 * so the tmp/ sweep never removes it.  Entering also tells the sweep that
 * folder is in use.  name and b are borrowed until leave.
 */
struct deliver_md_busy {
	struct deliver_md_busy	*next;
	const char		*name;
};
void	deliver_md_busy_enter(struct deliver_md_busy *b, const char *folder,
	    const char *name);
void	deliver_md_busy_leave(struct deliver_md_busy *b);

/*
 * The Maildirs a thread keeps open between deliveries (maildir_keep.c).
 * A kept one holds new/, and tmp/ once a copy was written through it; the
 * folder and cur/ are opened only when needed.  Between two uses of an
 * entry by one delivery it is busy: never evicted, never found again.
 */
struct stat;
#define DELIVER_MD_THREAD_FDS	16	/* a thread's kept descriptors */
struct deliver_md_dir {
	char		*folder;	/* owned: as the delivery named it */
	char		*new_path;	/* owned: folder/new */
	int		 new_fd;
	int		 tmp_fd;	/* -1 until deliver_md_tmp() */
	dev_t		 dev;
	ino_t		 new_ino;	/* of new/ */
	bool		 ordered;	/* util_fs_ordered(new/) */
	bool		 busy;		/* in use by this thread */
	bool		 kept;		/* counted in this thread's cache */
	uint64_t	 used;		/* the cache's clock at the last use */
};
/*
 * This thread's kept Maildir for folder, if the folder path still leads to
 * it (its new/ is the one kept); else NULL, and a stale one is closed.  The result is busy until deliver_md_release().
 */
struct deliver_md_dir *deliver_md_find(const char *folder);
/*
 * A Maildir just opened, for folder: new_fd (and tmp_fd, or -1) become
 * the entry's; kept for the thread if there is room (evicting the least
 * recently used), else closed at its release.  Busy; never NULL.
 */
struct deliver_md_dir *deliver_md_add(const char *folder, int new_fd,
	    int tmp_fd, bool ordered, const struct stat *new_st);
/* d's tmp/, opened next to its new/ when not yet open: the fd, or -1. */
int	deliver_md_tmp(struct deliver_md_dir *d);
/*
 * Done with *dp for now: keep it for the thread's next delivery (keep,
 * when it was kept), or close it.  Sets *dp to NULL; accepts NULL.
 */
void	deliver_md_release(struct deliver_md_dir **dp, bool keep);

/*
 * One Maildir copy on its way (maildir.c), shared with the fast path's
 * publish step (maildir_publish.c) and the writing of its bytes
 * (maildir_write.c).
 */
struct deliver_md_copy {
	const char	*folder;	/* borrowed */
	struct deliver_md_dir *dir;	/* the thread's, busy while open */
	char		 name[512];
	int		 out;		/* the copy, in tmp/ then new/ */
	bool		 ordered;	/* the one-commit order (maildir.c) */
	bool		 later;		/* not synced: noted in m->unsynced */
	bool		 hold;		/* left in tmp/ for publish */
	size_t		 rcpt;		/* the recipient's index */
	/* Several copies at once (deliver_maildir_copies): */
	dev_t		 dev;		/* of new/ */
	ino_t		 ino;		/* of new/: which Maildir it is */
	size_t		 src;		/* linked to that copy; SIZE_MAX: not */
	bool		 done;		/* made, found, or failed */
	enum deliver_result r;
	char		 err[512];	/* why not, when r is not DELIVER_OK */
};
/*
 * *err_out (util_err) says "call(folder/sub/name): strerror(err)" (sub
 * and name may be NULL); returns what err means: DELIVER_PERMFAIL only for
 * a name too long to ever exist, else DELIVER_TEMPFAIL.
 */
enum deliver_result deliver_md_fail(const char **err_out, int err,
	    const char *call, const char *folder, const char *sub,
	    const char *name);
/* c's outcome r, with the reason err (copied now). */
void	deliver_md_set(struct deliver_md_copy *c, enum deliver_result r,
	    const char *err);
/*
 * c->folder's Maildir into c->dir: the thread's kept one if still
 * current, or opened afresh, created where missing (tmp/ kept open too
 * when want_tmp).  DELIVER_OK, or the failure with *err_out.
 */
enum deliver_result deliver_md_open(struct deliver_md_copy *c, bool want_tmp,
	    const char **err_out);
/*
 * Write c's copy of m into tmp/ and rename it into new/, unless c->hold
 * leaves it in tmp/ for deliver_maildir_publish; a failure is in c->r.
 * Not durable yet (maildir.c makes it so).
 */
void	deliver_md_place(struct deliver_md_copy *c,
	    const struct deliver_msg *m);
/* Close c's files; keep its Maildir open for the thread when keep. */
void	deliver_md_close(struct deliver_md_copy *c, bool keep);
/*
 * maildir_publish.c: note c's copy, made without a sync, in u; src: u's
 * index of the copy it is to be linked to, or SIZE_MAX.
 */
void	deliver_md_note(const struct deliver_md_copy *c,
	    struct deliver_unsynced *u, size_t src);
/*
 * maildir_write.c: hdr, then m's content (from memory, or from in at its
 * offset) into out at its offset.  0, or -1 with errno.
 */
int	deliver_md_write_content(int out, const char *hdr,
	    const struct deliver_msg *m, int in);

/* ---- the outbound client's reading of replies (reply.c: pure) ---- */

/*
 * One reply (RFC 5321 4.2.1 sets no count): more lines or octets than this
 * is a hostile or broken server, a temporary failure.
 */
#define SMTPC_REPLY_LINES_MAX	1000
#define SMTPC_REPLY_BYTES_MAX	(64 * 1024)

/* One reply of an SMTP server, read line by line (RFC 5321 4.2). */
struct smtpc_reply {
	int		 code;		/* -1 until its first line */
	struct util_buf	 lines;		/* owned: each line, '\n' after each */
	char		 text[512];	/* the lines joined by spaces, raw
					   (escaped by who shows them: logs,
					   DSNs), cut to fit with "..." */
	bool		 text_cut;	/* text is full */
	size_t		 nlines, nbytes;	/* so far */
};

/* Empty r for the next reply (its buffer is kept). */
void	smtpc_reply_reset(struct smtpc_reply *r);
/*
 * Take the next line of a reply (its CRLF stripped; raw: the octets it
 * took on the wire): 1 when it was the last one ("NNN "), 0 when more
 * follow ("NNN-"), -1 with *why_out (a static text) when the line is no
 * reply line, changes the code, or the reply grows over
 * SMTPC_REPLY_LINES_MAX lines or SMTPC_REPLY_BYTES_MAX octets.
 */
int	smtpc_reply_line(struct smtpc_reply *r, const char *line, size_t raw,
	    const char **why_out);

/* What an EHLO reply announces (RFC 5321 4.1.1.1). */
struct smtpc_caps {
	bool		 pipelining, starttls, eightbitmime, smtputf8;
	bool		 auth_plain, auth_login, has_size;
	uint64_t	 size_max;	/* SIZE n; 0: no limit announced */
};

/* The extensions of an EHLO reply's lines (the first is the greeting). */
void	smtpc_caps_parse(const char *lines, size_t len,
	    struct smtpc_caps *out);

/* ---- the outbound SMTP session (smtpc.c, its transaction smtpc_txn.c) ---- */

struct smtpc {
	const struct deliver_smtp_opts *o;
	const struct deliver_msg *m;
	struct dconn	 c;
	struct tls_client *tc_own;	/* made for this connection */
	struct util_buf	 out;		/* commands/content not yet sent */
	struct util_buf	 lines;		/* the last reply, lines joined '\n' */
	int		 code;		/* the last reply's code */
	char		 text[512];	/* the last reply, raw, one line */
	bool		 esmtp;
	struct smtpc_caps caps;		/* of the last EHLO reply */
	struct deliver_rcpt_status *st;
	size_t		 n;
	bool		*accepted;	/* per recipient: RCPT got 2xx */
	bool		 tls_failed;	/* the STARTTLS handshake failed */
	bool		 desync;	/* a reply broke the protocol: no QUIT */
	bool		 conn_failed;	/* the connection failed */
	bool		 closing;	/* the server said 421: it closes */
	const char	*step;		/* static: what we were doing, for a
					   failed connection's text ("sending
					   RCPT TO"); NULL in the connect and
					   TLS handshake, which dconn names */
	size_t		 rcpt_deferred;	/* RCPTs refused for now (4xx, 552) */
	/* A session kept from an earlier message (scache.c): */
	bool		 reused;	/* this one was */
	bool		 mail_refused;	/* MAIL got no 2xx */
	bool		 dot_sent;	/* the content began to go out */
	bool		 dirty;		/* a transaction is open: RSET first */
	unsigned	 uses;		/* transactions on this connection */
};

static inline uint64_t
smtpc_to(uint64_t v, uint64_t def)
{
	return v != 0 ? v : def;
}

#define TO_CONNECT(s)	smtpc_to((s)->o->timeouts.connect_ms, 30000)
#define TO_GREET(s)	smtpc_to((s)->o->timeouts.greeting_ms, 300000)
#define TO_CMD(s)	smtpc_to((s)->o->timeouts.command_ms, 300000)
#define TO_DINIT(s)	smtpc_to((s)->o->timeouts.data_init_ms, 120000)
#define TO_DBLOCK(s)	smtpc_to((s)->o->timeouts.data_block_ms, 180000)
#define TO_DTERM(s)	smtpc_to((s)->o->timeouts.data_term_ms, 600000)

/* Set recipient i's status (text is printf'd). */
void	smtpc_set(struct smtpc *s, size_t i, enum deliver_result r, int code,
	    const char *fmt, ...) UTIL_PRINTF(5, 6);
/* Every recipient not yet decided (accepted ones too) gets this. */
void	smtpc_fail_rest(struct smtpc *s, enum deliver_result r, int code,
	    const char *text);
/* The last reply as a failure for every undecided recipient. */
void	smtpc_fail_reply(struct smtpc *s, const char *stage);
/*
 * The connection's error for every undecided recipient, saying which step
 * it cut short (s->step): "conversation with HOST timed out while ...",
 * "lost connection with HOST while ...", else c.err and the step.
 */
void	smtpc_fail_conn(struct smtpc *s);
/* Queue a command line (CR and LF in it become spaces). */
void	smtpc_cmd(struct smtpc *s, const char *fmt, ...) UTIL_PRINTF(2, 3);
/* Send what is queued.  0, or -1 with c.err. */
int	smtpc_flush(struct smtpc *s, uint64_t to);
/*
 * Read one reply (RFC 5321 4.2: "NNN-" lines then "NNN ").  Returns the
 * code, or -1 on a connection failure or a malformed or endless reply
 * (c.err).
 */
int	smtpc_reply(struct smtpc *s, uint64_t to);
/*
 * One transaction on the open session: MAIL, RCPTs (pipelined when
 * offered), DATA and the content; statuses set.  0, or -1 when it ended
 * early (statuses say why).
 */
int	smtpc_transaction(struct smtpc *s, const struct deliver_content_scan *sc,
	    const char *const *rcpts, const char **err_out);

/* ---- sessions kept between messages (scache.c) ---- */

/* An SMTP session between two transactions, as the cache keeps it. */
struct smtpc_idle {
	struct dconn	 c;
	struct tls_client *tc_own;	/* owned: made for this connection */
	struct smtpc_caps caps;		/* what its EHLO announced */
	bool		 esmtp;
	unsigned	 uses;		/* transactions done on it */
};

/*
 * One more (ref) or one less (unref) user of the cache; the last unref
 * closes every kept session (QUIT) and ends the thread that closes them
 * when idle too long.
 */
void	scache_ref(void);
void	scache_unref(void);
/*
 * Take the session kept last under key into *out: true, or false when
 * none is kept.  A taken session is the caller's to keep again or close.
 */
bool	scache_take(const char *key, struct smtpc_idle *out);
/*
 * Keep s (its contents move to the cache) under key for r->idle_ms, for
 * r->owner; the oldest kept session is closed when r->cache_max are kept.
 */
void	scache_put(const char *key, const struct deliver_reuse *r,
	    struct smtpc_idle *s);
/* Close (on the cache's thread, soon) every session kept for owner. */
void	scache_drop(const void *owner);
/*
 * The key of a session to o's server as o sets it up, EHLO name helo:
 * everything that makes the session what it is (the action, address,
 * TLS mode, context and name, EHLO name, AUTH identity).  Malloc'd.
 */
char	*scache_key(const struct deliver_smtp_opts *o, const char *helo);
/* QUIT (waiting at most a moment for its reply) and close s. */
void	scache_close(struct smtpc_idle *s);

/* ---- where mail for a domain goes (mx.c) ---- */

struct deliver_mx_host;

/*
 * The MX records of a DNS answer msg[0..len) (RFC 1035 4.1), by
 * preference, the 32 most preferred: *hosts_out (malloc'd, the caller
 * frees it; name and pref set).  Returns the answer's RCODE (0: *n_out
 * records), or -1 when it is truncated (TC) or malformed (*hosts_out may
 * still hold what was read before).
 */
int	deliver_mx_answer(const unsigned char *msg, size_t len,
	    struct deliver_mx_host **hosts_out, size_t *n_out);
/*
 * An "mx-hosts" table value ("10 127.0.0.1:2601, 20 [::1]:2602, mx.example")
 * as hosts by preference (malloc'd into *hosts_out; the port defaults to
 * dport).  0, or -1 with *err_out.
 */
int	deliver_mx_hosts(const char *v, int dport,
	    struct deliver_mx_host **hosts_out, size_t *n_out,
	    const char **err_out);

/*
 * mxself.c: this server's own SMTP listeners as an MX host would name
 * them, from c's "listen" lines (a wildcard one as each local address),
 * made once per loaded configuration; NULL when c is NULL.
 */
struct deliver_self *deliver_self_new(const struct config *c);
void	deliver_self_free(struct deliver_self **sp);
/* Whether addr (numeric IPv4 or IPv6) and port reach one of them. */
bool	deliver_self_has(const struct deliver_self *s, const char *addr,
	    int port);

/* payload.c: the JSON document of webhooks and agents. */
struct mime_limits;
struct mime_msg;
/* The first members of that document's paths, for templates. */
extern const char *const deliver_doc_roots[];
/* m's content parsed (mime_parse_file/mem); NULL with *err_out. */
struct mime_msg *deliver_doc_parse(const struct deliver_msg *m,
	    const struct mime_limits *lim, const char **err_out);
/*
 * The document (new reference): mime_msg_json(mm) and qid, envelope
 * {sender, recipients, rcpt}, client {ip, helo, tls, auth}, received_at
 * (ISO 8601, UTC), agent (the answering mailbox, or null).
 */
json_t	*deliver_doc_new(const struct deliver_msg *m, const char *rcpt,
	    const struct mime_msg *mm, const char *agent);

/*
 * The template in the file at path (at most 256 KiB), its paths checked
 * against the document's; NULL with *err_out ("WHAT PATH: why").
 */
struct mime_tpl *deliver_tpl_file(const char *path, enum mime_tpl_mode mode,
	    const char *what, const char **err_out);

/* hook.c: a configured web service at run time. */
struct config_hook;
struct deliver_hook;
/*
 * Its template compiled, tables opened and ca file read; with client, its
 * own HTTP client thread.  name: the action's (the secret's key): a
 * secret table with no key for it nor "default" is an error (with client,
 * only for a table that answers without a server).  NULL with *err_out.
 */
struct deliver_hook *deliver_hook_new(const struct config_hook *h,
	    const char *name, bool client, const char **err_out);
void	deliver_hook_free(struct deliver_hook **kp);
struct http_client *deliver_hook_client(const struct deliver_hook *k);
/* The options of one request, with credentials read now. */
struct deliver_hook_call {
	struct deliver_webhook_opts o;
	char		*bearer, *user, *pass, *secret;	/* owned, wiped */
};
/*
 * c for one request.  -1 with *err_out when the hook signs and its secret
 * table has no key for it (nor "default") or did not answer: the request
 * must not go.  Clear c either way.
 */
int	deliver_hook_call_init(const struct deliver_hook *k,
	    struct deliver_hook_call *c, const char **err_out);
void	deliver_hook_call_clear(struct deliver_hook_call *c);

/* memo.c: the agents' reply memory in the state store. */
struct deliver_memo;
/*
 * A store of spec on a private loop, opened at the first question (so a
 * store that is not there yet costs a retry, not the start).  NULL with
 * *err_out.
 */
struct deliver_memo *deliver_memo_open(const char *spec,
	    const char **err_out);
void	deliver_memo_close(struct deliver_memo **mp);
/*
 * May agent answer sender now?  take false: 1 yes, 0 answered within the
 * period.  take true: record an answer for period_ms and return 1 when it
 * is the first in the period (another node may have been quicker: 0).
 * -1 when the store fails or does not answer within 5 s.
 */
int	deliver_memo_check(struct deliver_memo *mm, const char *agent,
	    const char *sender, bool take, uint64_t period_ms);
/* Undo a take (the reply could not be queued). */
void	deliver_memo_forget(struct deliver_memo *mm, const char *agent,
	    const char *sender);

/* prog.c: a program run for a delivery, blocking a worker thread. */
struct deliver_prog {
	char *const	*argv;		/* argv[0]: an absolute path */
	char *const	*envp;		/* the whole environment */
	const char	*user;		/* run as this user (we must be root,
					   or be it already); NULL: as we are */
	const char	*server_user;	/* the config's "user": what a root
					   postern dropped to, or NULL */
	uint64_t	 timeout_ms;	/* for all of it; then SIGKILL */
	size_t		 out_max;	/* stdout bytes kept (the rest read
					   and dropped); 0: none kept */
	/* stdin: head, then body (memory) or the file body_path. */
	const char	*head;
	size_t		 head_len;
	const char	*body;
	size_t		 body_len;
	const char	*body_path;
};
struct deliver_prog_result {
	int		 exit_code;	/* -1: killed (signal or timeout) */
	int		 signal;	/* the signal that ended it, or 0 */
	bool		 timed_out;	/* killed at the deadline, or */
	bool		 stopped;	/* killed for the thread's stop */
	struct util_buf	 out;		/* stdout, NUL-terminated */
	bool		 out_cut;	/* stdout passed out_max */
	char		 err_line[256];	/* its first non-empty stderr line,
					   raw (who logs it escapes it) */
};
/*
 * Run p and wait for it (worker threads only), until the program itself
 * exits: a background child it leaves is not waited for.  The thread's
 * stop descriptor (deliver_stop_fd_set) kills it as its deadline does.
 * 0 with *res filled (free with deliver_prog_result_clear()), or -1 with
 * *err_out when it could not be started (unknown user, no root, fork, or
 * in the child: changing user, execve) or its exit status could not be
 * had (waitpid failed), never to be read as its exit status.
 */
int	deliver_prog_run(const struct deliver_prog *p,
	    struct deliver_prog_result *res, const char **err_out);
/*
 * Can the program at path run as user (NULL: as postern runs) in a server
 * with server_user and server_group (the config's "user" and "group", or
 * NULL)?  The user must exist and be one postern can become, and may
 * execute path.  Judged for the ids the program will have at delivery,
 * whether asked before the drop to server_user (the start, postern check
 * as root) or after it (a reload), so all of them agree.  0, or -1 with
 * *err_out.
 */
int	deliver_prog_check(const char *path, const char *user,
	    const char *server_user, const char *server_group,
	    const char **err_out);
void	deliver_prog_result_clear(struct deliver_prog_result *res);

/* This thread's stop descriptor (deliver_stop_fd_set), or -1. */
int	deliver_stop_fd(void);
/* Is this thread's stop descriptor readable (its deliveries cut short)? */
bool	deliver_is_stopped(void);
/* Wait ms; false when this thread's stop descriptor cut the wait short. */
bool	deliver_sleep(uint64_t ms);

#endif
