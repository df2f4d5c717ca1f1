/*
 * spool/spool_private.h: shared between the files of spool/ and its unit
 * tests and fuzz target; nobody else includes it.
 */
#ifndef POSTERN_SPOOL_PRIVATE_H
#define POSTERN_SPOOL_PRIVATE_H

#include "spool/spool.h"
#include "util/util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* In gone/: what the marks of removed messages that had no files link to
 * (remove.c); a start's emptying of gone/ leaves it. */
#define SPOOL_GONE_MARK	".removed"

/* The folders under the spool folder (see spool.c). */
enum spool_sub { SUB_TMP, SUB_MSG, SUB_ENV, SUB_DONE, SUB_GONE, SUB_N };
extern const char *const spool_sub_names[SUB_N];

struct spool {
	char	*dir;			/* owned */
	int	 fd[SUB_N];		/* directory fds, read-only after open */
	bool	 ordered;		/* the one-commit order (see spool.c) */
	int	 lock_fd;		/* <dir>/lock while spool_lock holds it */
	struct util_capdir *keep;	/* owned: "keep DIR", or NULL */
	struct spool_log *log;		/* owned: the log (log.c), or NULL */
	/* The removals' fsync of env/ (remove.c), under sync_mu. */
	pthread_mutex_t	 sync_mu;
	pthread_cond_t	 sync_cv;
	pthread_t	 sync_thread;
	bool		 sync_started;	/* sync_thread runs */
	bool		 sync_dirty;	/* an unlink in env/ not yet synced */
	char		**removed;	/* owned: their qids, for the log */
	size_t		 nremoved;
	bool		 sync_stop;
	/* Envelopes without records yet, and messages without files
	   (fresh.c), under fresh_mu. */
	pthread_mutex_t	 fresh_mu;
	pthread_cond_t	 fresh_cv;	/* an unwritten one's write ended */
	struct spool_fresh *fresh[256];	/* SPOOL_FRESH_SLOTS chains */
	size_t		 nfresh;
	size_t		 nunwritten;	/* of them without files */
	size_t		 unwritten_bytes;	/* what they count for (fresh.c) */
	size_t		 unwritten_room;	/* the most they may (fresh.c) */
};
#define SPOOL_FRESH_SLOTS	256

/*
 * The most messages whose envelope fresh.c keeps in memory: those
 * committed and not yet recorded or removed (a few per queue worker
 * while the queue keeps up); past it, messages are read from disk.
 */
#define SPOOL_FRESH_MAX		4096
/* fresh.c: at spool_open and spool_close. */
void	spool_fresh_init(struct spool *sp);
void	spool_fresh_clear(struct spool *sp);
/* qid was just committed with envelope text[0..len): no record yet. */
void	spool_fresh_put(struct spool *sp, const char *qid, const char *text,
	    size_t len);
/* A malloc'd copy of qid's envelope (*len_out bytes) when it has no
 * record on disk yet, else NULL: read it, and its records, from disk.
 * *lines_out: a malloc'd copy of the records held with it in memory
 * (*lines_len_out bytes; spool_unwritten_line), or NULL. */
char	*spool_fresh_get(struct spool *sp, const char *qid, size_t *len_out,
	    char **lines_out, size_t *lines_len_out);
/* Forget qid (a record is being written, or it is removed); true when
 * it had no record, so no done/<qid> exists. */
bool	spool_fresh_drop(struct spool *sp, const char *qid);

/*
 * The most octets unwritten messages (fresh.c) count for at once, their
 * contents in memory among them, and less where the spool's file system
 * has less room; past it, a message the log commits has its files written
 * at once.  Most leave within a checkpoint (a second).
 */
#define SPOOL_UNWRITTEN_MAX	(32u << 20)
/* Would a message of content_len octets be kept unwritten now? */
bool	spool_unwritten_may(struct spool *sp, size_t content_len);
/*
 * qid, committed by its log record seq (pinned), kept with its envelope
 * and content and no file written: true, or false when there is no room
 * (the caller writes the files and unpins the record).
 */
bool	spool_unwritten_put(struct spool *sp, const char *qid, const char *env,
	    size_t env_len, const char *content, size_t content_len,
	    uint64_t seq);
/* If qid is unwritten, keep record line (len bytes, with its LF) with it,
 * to be written into done/<qid> with its files: true, else false. */
bool	spool_unwritten_line(struct spool *sp, const char *qid,
	    const char *line, size_t len);
/* Take back the last line (len bytes) spool_unwritten_line kept with qid,
 * if it still holds it unwritten. */
void	spool_unwritten_unline(struct spool *sp, const char *qid,
	    const char *line, size_t len);
/* Write qid's files if it is unwritten (done/<qid> too when it holds
 * records), and unpin its record: 0 once it has them (or is not here),
 * -1 with *err_out. */
int	spool_unwritten_write(struct spool *sp, const char *qid,
	    const char **err_out);
/* The same for every unwritten message: the checkpoint's, before it
 * moves.  Failures are logged; their records stay. */
void	spool_unwritten_write_all(struct spool *sp);
/* How much unwritten messages may count for from now on: none unless
 * wrote (no write of their files failed), else what the spool's file
 * system has room for.  At the log's start and each checkpoint. */
void	spool_unwritten_check_room(struct spool *sp, bool wrote);
/* The removal of qid: true when it was unwritten (now forgotten: no file
 * to unlink; *seq_out its record, still pinned), false when it has
 * files. */
bool	spool_unwritten_forget(struct spool *sp, const char *qid,
	    uint64_t *seq_out);
/* A malloc'd copy of qid's content (*len_out octets) while it is held in
 * memory, unwritten or being written; else NULL. */
char	*spool_content_mem(struct spool *sp, const char *qid, size_t *len_out);

/*
 * The longest a removal waits for the fsync of env/ that makes it durable:
 * the removals of that interval share one fsync.  A crash within it may
 * deliver those messages again (remove.c).
 */
#define SPOOL_REMOVE_SYNC_MS	50
/* The removals' syncer (remove.c): at spool_open; at spool_close, where
 * what is pending is synced before the thread ends. */
void	spool_sync_init(struct spool *sp);
void	spool_sync_clear(struct spool *sp);


/*
 * Keep a copy of sub/<qid> as <qid><suffix>.eml (keep.c).  0, or -1 with
 * *err_out.
 */
int	spool_keep_from(struct spool *sp, enum spool_sub sub, const char *qid,
	    const char *suffix, const char **err_out);

/* "call(sub/qidsuffix): strerror(err)", from util_err(). */
const char *spool_err(const char *call, enum spool_sub sub, const char *qid,
	    const char *suffix, int err);

/* Longest envelope file we agree to read (a guard against a huge file). */
#define SPOOL_ENV_MAX	(16u << 20)

/* True if s is a well-formed queue id: 1..SPOOL_QID_MAX-1 of [0-9A-Za-z]. */
bool	spool_qid_is_valid(const char *s);

/*
 * Append the text form of env (format "v 1", see envelope.c) to b.
 */
void	spool_env_format(const struct spool_env *env, struct util_buf *b);

/*
 * Parse an envelope file held in buf[0..len) into out (which the caller has
 * zeroed; cleared again on failure).  0, or -1 with a static description in
 * *why_out.  Never trusts buf: any byte sequence is safe to pass.
 */
int	spool_env_parse(const char *buf, size_t len, struct spool_env *out,
	    const char **why_out);

/* Append the escaped field form of s (NULL: "-") to b; see envelope.c. */
void	spool_field_esc(struct util_buf *b, const char *s);

/*
 * Apply a status file (lines "done N", "defer N ATTEMPTS NEXT_MS WHY",
 * "fail N STATUS WHY", "bounced N", "warned", "hold", "release") to env.  A torn last line (no
 * LF: a crash mid-append) is ignored.  0, or -1 with *why_out.
 */
int	spool_done_parse(const char *buf, size_t len, struct spool_env *env,
	    const char **why_out);
/*
 * The replay of a LINE record: line (with its LF) appended to done/<qid>
 * unless the file holds it already, then the file synced, with no log.
 * What a crash leaves of the file is a start of what was written, but
 * for zeros in place of an append's data: cut off first, with what
 * follows them.  So a record it lacks was one of the last: appended, the
 * records keep their order.  0, or -1 with *err_out.
 */
int	spool_replay_line(struct spool *sp, const char *qid, const char *line,
	    const char **err_out);
/* The record line (with its LF) for a status change; see spool.h. */
void	spool_rec_deferred(struct util_buf *b, size_t idx, unsigned attempts,
	    uint64_t next_ms, const char *why);
void	spool_rec_failed(struct util_buf *b, size_t idx, const char *status,
	    const char *why);

/*
 * The spool log (log.c) and its records (logrec.c): one record per message
 * acknowledged on the fast path, naming the Maildir copies it made and
 * holding their bytes, so that a start after a power cut can make them
 * again.
 */
struct spool_log;

struct spool_logcopy {
	char	*path;		/* "<folder>/new/<name>" */
	char	*addr;		/* the recipient */
};

/* What a record holds (logrec.c). */
enum spool_logrec_kind {
	SPOOL_LR_COPIES,	/* a message's Maildir copies (the fast path) */
	SPOOL_LR_SPOOLED,	/* a message committed into the spool */
	SPOOL_LR_REMOVED,	/* a spooled message removed: qid alone */
	SPOOL_LR_LINE		/* a line for done/<qid>, in hdr */
};

#define SPOOL_LOGREC_FIXED	48	/* a record's fixed part */
/* The largest REMOVED record: the fixed part, a qid, the padding. */
#define SPOOL_LOGREC_REMOVED_MAX (SPOOL_LOGREC_FIXED + SPOOL_QID_MAX + 8)
/* The longest line a LINE record holds: a failure's or deferral's
 * record, its reason escaped, fits. */
#define SPOOL_LOGREC_LINE_MAX	4096

struct spool_logrec {
	enum spool_logrec_kind kind;
	uint64_t	 seq;
	size_t		 len;		/* decoded: the record's length */
	int64_t		 received;	/* epoch seconds */
	char		 qid[SPOOL_QID_MAX];
	char		*sender;	/* "" for <>; "" unless COPIES */
	char		*hdr;		/* the copies' first line; SPOOLED:
					   the envelope file's bytes; LINE:
					   the line */
	struct spool_logcopy *copies;
	size_t		 ncopies;
	const char	*content;	/* borrowed: the buffer decoded */
	size_t		 content_len;
};

/* CRC-32C (Castagnoli) of buf, continuing crc (0 to start). */
uint32_t spool_crc32c(uint32_t crc, const void *buf, size_t len);
/* The same, a byte at a time from a table (where the CPU has no crc32). */
uint32_t spool_crc32c_table(uint32_t crc, const void *buf, size_t len);
/* Encoded length of r (a multiple of 8). */
size_t	spool_logrec_size(const struct spool_logrec *r);
/* The same for a SPOOLED record of these lengths. */
size_t	spool_logrec_spooled_size(size_t qid_len, size_t env_len,
	    size_t content_len);
/* Encode r into out (spool_logrec_size bytes), sequence not yet set. */
void	spool_logrec_encode(const struct spool_logrec *r, unsigned char *out);
/* Give an encoded record its sequence number and epoch (and checksum). */
void	spool_logrec_seal(unsigned char *rec, uint64_t seq, uint32_t epoch);
/*
 * Decode the record at buf (avail bytes readable) if it is whole and is
 * record seq of epoch: 1 (out owns its strings; spool_logrec_clear), else
 * 0 (torn, stale or garbage).
 */
int	spool_logrec_decode(const unsigned char *buf, size_t avail,
	    uint64_t seq, uint32_t epoch, struct spool_logrec *out);
void	spool_logrec_clear(struct spool_logrec *r);
/*
 * The records of a log image img[0..size), records stored from data_off on,
 * starting with record seq at off: each one follows the one before, or
 * starts the area again at data_off.  cb sees each in order; the first
 * that is not whole ends the scan.  How many; *end_out: where it ended.
 */
size_t	spool_log_scan(const unsigned char *img, size_t size, size_t data_off,
	    size_t off, uint64_t seq, uint32_t epoch,
	    void (*cb)(const struct spool_logrec *r, void *arg), void *arg,
	    size_t *end_out);

/* The log's header: where its records may still be needed from. */
struct spool_loghdr {
	uint32_t	 epoch;		/* records of other epochs are stale */
	uint64_t	 gen;		/* the newer of the two copies wins */
	uint64_t	 seq;		/* the first record still needed */
	uint64_t	 off;		/* ...and where it is */
	uint64_t	 size;		/* the log's size */
};
void	spool_loghdr_encode(const struct spool_loghdr *h, unsigned char out[64]);
int	spool_loghdr_decode(const unsigned char in[64], struct spool_loghdr *out);

/* The replay of SPOOLED records at start (logspool.c). */
struct spool_logspool {
	char	**removed;		/* owned: qids of REMOVED records */
	size_t	  nremoved;
	bool	  sorted;
	bool	  dirty;		/* a file written again or removed:
					   the folders to sync */
	size_t	  found, written, lost, skipped;
	size_t	  lines;		/* LINE records replayed */
	size_t	  finished;		/* removals whose envelope was left */
};
/* A REMOVED record, seen in the scan before the replay. */
void	spool_logspool_note_removed(struct spool_logspool *ls,
	    const struct spool_logrec *r);
/* Make the spooled message of r durable unless it was removed since. */
void	spool_logspool_record(struct spool_logspool *ls, struct spool *sp,
	    const struct spool_logrec *r);
/* Append the line of LINE record r to done/<qid>, durably, unless the
 * message was removed since or is not in the spool. */
void	spool_logspool_line(struct spool_logspool *ls, struct spool *sp,
	    const struct spool_logrec *r);
/* After the last record: unlink what is left of the messages removed,
 * sync the folders written into; free ls's. */
void	spool_logspool_finish(struct spool_logspool *ls, struct spool *sp);
/* Once the log no longer holds the records replayed (a new epoch begun,
 * or the log off): empty gone/, whose envelopes only told the replay that
 * their messages were removed. */
void	spool_logspool_forget_gone(struct spool *sp);

/* The log file: a header block, then the records' area. */
#define SPOOL_LOG_HDR	4096
/* Write h (its gen bumped) into the header and make it durable. 0 or -1. */
int	spool_log_write_hdr(int fd, struct spool_loghdr *h);
/* Run the log of fd (size bytes, checkpoint h): its checkpoint thread. */
struct spool_log *spool_log_start(struct spool *sp, int fd, uint64_t size,
	    const struct spool_loghdr *h);
/* Checkpoint everything, stop the thread, close fd. */
void	spool_log_stop(struct spool_log **lgp);
/*
 * A message committed into the spool (spool.c): its envelope file's bytes
 * (env, a string) and content recorded as spool_log_append records
 * copies.  With fn, answered as spool_log_append answers: by fn, or 1.
 * Without, waited for: 0 once the record is on the device (its sequence
 * in *seq_out), 1 when the log does not take it, -1 with *err_out when
 * the write failed.  After rc 0 the caller renames its files into msg/
 * and env/, then calls spool_log_named.  The caller asks
 * spool_log_fits_spooled first and counts a record too large itself.  The
 * checkpoint syncs the spool's file system from the first one on.
 */
int	spool_log_append_spooled(struct spool *sp, const char *qid,
	    const char *env, const char *content, size_t content_len,
	    spool_log_done_fn fn, void *arg, uint64_t *seq_out,
	    const char **err_out);
/* Would such a record fit (the log is on and takes records that large)? */
bool	spool_log_fits_spooled(const struct spool *sp, const char *qid,
	    size_t env_len, size_t content_len);
/*
 * Record the removal of qids[0..n) (their envelopes unlinked, and that
 * made durable), so that a start does not write them again from their
 * SPOOLED records: how many are durable (the first ones; fewer when the
 * log is full, 0 with *err_out when its write failed).
 */
size_t	spool_log_removed(struct spool *sp, char *const *qids, size_t n,
	    const char **err_out);
/*
 * Make line (len bytes, at most SPOOL_LOGREC_LINE_MAX, written into done/<qid>
 * already, not synced) durable by a LINE record, so that a start appends
 * it again if the file lost it, unless the message was removed since: 0
 * once the record is on the device, 1 when the log does not take it (off,
 * full, broken by an earlier failed write), -1 with *err_out when its
 * write failed.  Only for a line written once per message (spool.c).
 */
int	spool_log_line(struct spool *sp, const char *qid, const char *line,
	    size_t len, const char **err_out);
/* The largest record a log of size bytes takes. */
size_t	spool_log_record_max(uint64_t size);
size_t	spool_log_data_off(void);

#endif
