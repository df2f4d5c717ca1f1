/*
 * spool/spool.h: the durable message store.  A message is a content file
 * (LF line ends, Received: header first) and an envelope file; it counts as
 * accepted once spool_msg_commit() has returned 0.  Every function here
 * blocks on the disk: call them from worker threads, never the event loop.
 * Thread-safe across different messages.  An *err_out string (like
 * "write(msg/<qid>): No space left on device") comes from util_err():
 * valid until the thread's next error.
 * Knows nothing of routing or SMTP.
 */
#ifndef POSTERN_SPOOL_H
#define POSTERN_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SPOOL_QID_MAX	24	/* bytes incl. NUL */

struct spool_rcpt {
	char	*addr;		/* owned: "local@domain" */
	char	*action;	/* owned: action kind, "maildir" or "discard" */
	char	*arg;		/* owned: action argument (maildir: folder), or NULL */
	bool	 done;		/* no more attempts: delivered, or failed */
	/* Delivery status, from the status records (see spool_mark_*). */
	bool	 failed;	/* done, but failed (permanently or expired) */
	bool	 bounced;	/* the failure was reported (or needs no DSN) */
	unsigned attempts;	/* attempts that ended in a deferral */
	uint64_t next_ms;	/* epoch ms of the next attempt; 0: now */
	char	 status[16];	/* RFC 3463 code of the last failure, or "" */
	char	*last_err;	/* owned: text of the last failure, or NULL */
	bool	 unrecorded;	/* done in memory only: delivered, but its
				   record could not be written (never loaded) */
};

/* The envelope: a plain value; spool_env_clear() frees what it owns. */
struct spool_env {
	char			 qid[SPOOL_QID_MAX];
	char			*sid;		/* owned: session id, or NULL */
	int64_t			 received;	/* epoch seconds */
	char			*sender;	/* owned: "" for <> */
	char			*client_ip;	/* owned, or NULL */
	char			*helo;		/* owned, or NULL (peer text: any bytes but CR/LF) */
	char			*tls;		/* owned: the TLS version the client
						   used ("TLSv1.3"), or NULL */
	char			*auth_user;	/* owned: who authenticated, or
						   NULL */
	bool			 smtputf8;	/* the client's SMTPUTF8 */
	/*
	 * An SMTPUTF8 message by its type (a global DSN, RFC 6533): goes on
	 * only with SMTPUTF8.  Implies smtputf8.
	 */
	bool			 smtputf8_needed;
	bool			 body_8bit;
	uint64_t		 size;		/* content octets */
	bool			 held;		/* "postern queue hold": not tried */
	bool			 warned;	/* the delay warning DSN was sent */
	struct spool_rcpt	*rcpts;		/* owned array */
	size_t			 nrcpts;
	char			**state;	/* owned: key, value, key, value...
						   (handler state, "tx.spam.score") */
	size_t			 nstate;	/* pairs */
};
void	spool_env_add_rcpt(struct spool_env *e, const char *addr,
	    const char *action, const char *arg);
/* Remove recipient idx (before the commit: a filter deleted it). */
void	spool_env_del_rcpt(struct spool_env *e, size_t idx);
/* Keep a handler's key/value with the message (copies both). */
void	spool_env_add_state(struct spool_env *e, const char *key,
	    const char *value);
void	spool_env_clear(struct spool_env *e);

struct spool;
struct spool_msg;

/*
 * Open (and create) the spool folder.  NULL with *err_out and errno (the
 * failed call's) on failure.
 */
struct spool *spool_open(const char *dir, const char **err_out);
void	spool_close(struct spool **sp);
/*
 * Take the spool for this process (the server): an exclusive flock on
 * <dir>/lock, which holds our pid, until spool_close.  -1 with *err_out
 * ("spool DIR is in use by another postern (pid N)") when another process
 * has it, or "... by postern queue ..." while one holds it shared (below).
 * postern send never takes it.
 */
int	spool_lock(struct spool *sp, const char **err_out);
/*
 * Keep the server off the spool while this process changes it directly
 * (postern queue with no server): a shared flock on <dir>/lock until
 * spool_close, so no server starts meanwhile.  -1 with *err_out and errno
 * EWOULDBLOCK ("spool DIR is in use by another postern (pid N)") when a
 * server holds the spool, even one that does not answer any more.
 */
int	spool_lock_shared(struct spool *sp, const char **err_out);
const char *spool_dir(const struct spool *sp);
/*
 * When the oldest message still in the spool was accepted (its envelope's
 * time, epoch seconds), or 0 when there is none.  Reads the env/ folder:
 * for a scrape, not for a hot path.
 */
int64_t	spool_oldest_s(struct spool *sp);
/*
 * Can a file be made in the spool now?  Creates and removes a probe in
 * tmp/.  0, or -1 with *err_out.
 */
int	spool_probe(struct spool *sp, const char **err_out);

/* A new queue id, unique across threads and restarts: [0-9A-Za-z], < SPOOL_QID_MAX. */
void	spool_new_qid(struct spool *sp, char qid_out[SPOOL_QID_MAX]);

/* A message being received; nothing touches the disk until the first write. */
struct spool_msg *spool_msg_new(struct spool *sp, const char *qid);
/* Append content bytes (creates the content file first).  0 or -1 + *err_out. */
int	spool_msg_write(struct spool_msg *m, const void *buf, size_t len,
	    const char **err_out);
/*
 * The content is exactly data (len bytes), unchanged until the commit
 * returns: the commit reads nothing back for the spool log's record.
 * Said after writes, it is what they wrote; said before any, data is the
 * whole message, which the commit writes into msg/<qid> itself, or, where
 * the spool log commits the message, keeps in memory with no file yet
 * (spool/fresh.c).  Nothing is written or replaced after it.
 */
void	spool_msg_whole(struct spool_msg *m, const char *data, size_t len);
/*
 * Replace the old_len content bytes at offset with data (a filter's
 * header edits): the content is copied around data into a new file that
 * takes the old one's place, under the message's lock.  Before the commit
 * only.  0 or -1 with *err_out.
 */
int	spool_msg_replace(struct spool_msg *m, uint64_t offset,
	    uint64_t old_len, const void *data, size_t len,
	    const char **err_out);
/*
 * Make the message durable: fsync the content, write and fsync the envelope
 * (env->qid must match), fsync the folder.  0 once accepted, or -1 with
 * *err_out (the message is then not accepted).
 */
int	spool_msg_commit(struct spool_msg *m, const struct spool_env *env,
	    const char **err_out);
/*
 * The same, but where the spool log records the message, the rest of the
 * commit is done by the thread that writes the record, which calls fn
 * with the outcome (rc and err as spool_msg_commit's; err valid during
 * the call): 1, and fn is called once, maybe before this returns; the
 * calling thread goes on at once when another sees to the record's
 * write.  Else the outcome now, 0 or -1 with *err_out, and fn is not
 * called.
 */
typedef void (*spool_commit_fn)(void *arg, int rc, const char *err);
int	spool_msg_commit_async(struct spool_msg *m,
	    const struct spool_env *env, spool_commit_fn fn, void *arg,
	    const char **err_out);
/* Close; a message not committed has its files removed. */
void	spool_msg_free(struct spool_msg **mp);

/* Path of a message's content, received or committed (malloc'd). */
char	*spool_content_path(const struct spool *sp, const char *qid);
/*
 * Is qid's committed content whole: msg/<qid> a file of exactly
 * env->size octets?  0, or -1 with *err_out naming the file and both
 * sizes (or the failed stat: "stat(msg/<qid>): No such file or
 * directory").  A message that fails this is damaged: never delivered.
 */
int	spool_content_check(struct spool *sp, const struct spool_env *env,
	    const char **err_out);
/*
 * The same for a delivery by this process: a message the spool log
 * committed may have no file yet, its content held in memory (see
 * spool/fresh.c); then *mem_out gets a malloc'd copy of it (*len_out
 * octets) instead of a file checked.  Else *mem_out is NULL and the
 * content is at spool_content_path.  0, or -1 with *err_out.
 */
int	spool_content_load(struct spool *sp, const struct spool_env *env,
	    char **mem_out, size_t *len_out, const char **err_out);
/*
 * Give a message whose content is held in memory its files in msg/ and
 * env/ now (a delivery that reads the file, a program or the helper,
 * needs them): 0 once it has them, or -1 with *err_out.
 */
int	spool_content_write(struct spool *sp, const char *qid,
	    const char **err_out);
/* The same for every message held so (`postern queue list` and `show`,
 * from another process, read the files).  Failures are logged. */
void	spool_content_write_all(struct spool *sp);
/*
 * Read a committed envelope, with each recipient's done flag: from memory,
 * with no file read, when this spool committed it and no record was
 * written since (spool/fresh.c).  0, or -1 with *err_out and errno
 * (ENOENT: no such message, EINVAL: malformed).
 */
int	spool_env_load(struct spool *sp, const char *qid, struct spool_env *out,
	    const char **err_out);
/* Durably record that recipient idx is delivered.  0 or -1. */
int	spool_mark_done(struct spool *sp, const char *qid, size_t idx,
	    const char **err_out);
/*
 * Status records, appended to the same durable log as the done-records
 * (each fdatasync'ed before returning 0; a later record overrides an
 * earlier one):
 *	deferred: recipient idx failed temporarily for the attempts-th time;
 *	    next attempt at epoch ms next_ms; why is the error text.
 *	failed: recipient idx failed for good (status is the RFC 3463 code,
 *	    e.g. "5.1.1", or "4.4.7" when its lifetime ran out): done too.
 *	bounced: the failure of idx was reported to the sender (or needs no
 *	    report), so the message may go once everything is done.
 * Each returns 0, or -1 with *err_out.  why may hold any bytes but NUL.
 */
int	spool_mark_deferred(struct spool *sp, const char *qid, size_t idx,
	    unsigned attempts, uint64_t next_ms, const char *why,
	    const char **err_out);
int	spool_mark_failed(struct spool *sp, const char *qid, size_t idx,
	    const char *status, const char *why, const char **err_out);
int	spool_mark_bounced(struct spool *sp, const char *qid, size_t idx,
	    const char **err_out);
/* Message flags: the delay warning was sent; held; released. */
enum spool_flag { SPOOL_FLAG_WARNED, SPOOL_FLAG_HOLD, SPOOL_FLAG_RELEASE };
int	spool_mark_flag(struct spool *sp, const char *qid, enum spool_flag f,
	    const char **err_out);
/*
 * True when this thread's last *err_out came from a full disk (ENOSPC) or
 * quota (EDQUOT): the mail system is full for now (RFC 3463 4.3.1).
 */
bool	spool_err_is_full(void);
/* True if qid is a well-formed queue id (any process may check input). */
bool	spool_qid_ok(const char *qid);

/*
 * The keep folder (keep.c): a copy of each message's content, for
 * research, in dir, whose files take at most max_bytes (oldest removed
 * first).  Copies are named "<qid>.eml" (a message delivered: copied when
 * every recipient is done, before spool_remove), "<qid>.discarded.eml"
 * (accepted, delivered to nobody) and "<qid>.refused.eml" (taken whole,
 * then refused).  Each returns 0, or -1 with *err_out.
 */
int	spool_keep_open(struct spool *sp, const char *dir, uint64_t max_bytes,
	    const char **err_out);
bool	spool_keeps(const struct spool *sp);
/* The committed content of qid. */
int	spool_keep_msg(struct spool *sp, const char *qid, const char **err_out);
/* Content that only the caller holds (suffix "" or ".discarded", ...). */
int	spool_keep_content(struct spool *sp, const char *qid,
	    const char *suffix, const void *buf, size_t len,
	    const char **err_out);
/* What m has received so far (its file before the commit). */
int	spool_msg_keep(struct spool_msg *m, const char *suffix,
	    const char **err_out);

/*
 * Remove a message whose recipients are all done: env/<qid> unlinked, then
 * its content and status records.  The envelope's unlink is made durable
 * within SPOOL_REMOVE_SYNC_MS (50 ms) by one fsync of env/ for all the
 * removals of that interval, and at spool_close; after that no restart
 * finds the message, so a caller may take the removal as the record of
 * its last delivery, a crash before it delivering that recipient again
 * (see remove.c).  0 or -1 with *err_out.
 */
int	spool_remove(struct spool *sp, const char *qid, const char **err_out);
/*
 * List committed messages (malloc'd array of malloc'd qids), oldest first.
 * Content left without an envelope (never acknowledged) is removed.
 */
int	spool_list(struct spool *sp, char ***qids_out, size_t *n_out,
	    const char **err_out);
/*
 * The same list, read only: nothing is removed and nothing logged; what
 * spool_list would remove is not listed.  For a reader beside a running
 * server (postern queue list), where a message being removed may have
 * lost its envelope already.
 */
int	spool_list_readonly(struct spool *sp, char ***qids_out, size_t *n_out,
	    const char **err_out);

/*
 * The spool log (log.c, logrecover.c, logspool.c): a preallocated
 * <dir>/log of size bytes in which the fast path records the Maildir
 * copies of a message, and spool_msg_commit a message's envelope and
 * content, so that they need no sync of their own before the 250.
 * Opening it replays what it holds first: each copy named by a record
 * after the checkpoint that is missing or short is written again
 * (durably); one that cannot be (its folder gone or not writable) is
 * spooled as a new message for the queue; each spooled message's files,
 * unless it was removed since, likewise.  size 0: no log (and an old one
 * is replayed, then removed); also none on tmpfs.  0, or -1 with
 * *err_out.
 */
int	spool_log_open(struct spool *sp, uint64_t size, const char **err_out);
bool	spool_log_on(const struct spool *sp);

struct spool_log_copy {
	const char	*path;		/* "<folder>/new/<name>" */
	const char	*addr;		/* its recipient */
	dev_t		 dev;		/* of the folder */
};
struct spool_log_msg {
	const char	*qid;
	int64_t		 received;	/* epoch seconds */
	const char	*sender;	/* "" for <> */
	const char	*hdr;		/* each copy's first line */
	const char	*content;	/* each copy: hdr, then this */
	size_t		 content_len;
	const struct spool_log_copy *copies;
	size_t		 ncopies;
};
/*
 * Record m's copies (written into tmp/, not synced, not named yet)
 * durably.  1 when the log does not take the record (no log, no room
 * before the checkpoint, larger than a quarter of the log, the log broken
 * by a failed write): the caller syncs the copies itself, and fn is not
 * called.  Else 0, and fn is called once with the outcome: rc 0 once the
 * record is on the device (seq its sequence), -1 when the write failed
 * (the log takes nothing more).  fn may run before spool_log_append
 * returns, on the calling thread, or on another appending thread, the one
 * that wrote the record, after the record's write (with no lock held: it
 * may append and wait itself).  With the log on, each call is counted by
 * its outcome (MET_SPOOL_LOG_COMMITS), and a full log warned of at most
 * once a minute.  Several threads' records share a write.  After rc 0
 * the caller names the copies in new/, then calls spool_log_named: no
 * checkpoint passes the record before that, since it would not make
 * those names durable.
 */
typedef void (*spool_log_done_fn)(void *arg, int rc, uint64_t seq);
int	spool_log_append(struct spool *sp, const struct spool_log_msg *m,
	    spool_log_done_fn fn, void *arg);
void	spool_log_named(struct spool *sp, uint64_t seq);

#endif
