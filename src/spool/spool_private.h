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

/* The folders under the spool folder (see spool.c). */
enum spool_sub { SUB_TMP, SUB_MSG, SUB_ENV, SUB_DONE, SUB_N };
extern const char *const spool_sub_names[SUB_N];

struct spool {
	char	*dir;			/* owned */
	int	 fd[SUB_N];		/* directory fds, read-only after open */
	bool	 ordered;		/* the one-commit order (see spool.c) */
	int	 lock_fd;		/* <dir>/lock while spool_lock holds it */
	struct util_capdir *keep;	/* owned: "keep DIR", or NULL */
	/* The removals' fsync of env/ (remove.c), under sync_mu. */
	pthread_mutex_t	 sync_mu;
	pthread_cond_t	 sync_cv;
	pthread_t	 sync_thread;
	bool		 sync_started;	/* sync_thread runs */
	bool		 sync_dirty;	/* an unlink in env/ not yet synced */
	bool		 sync_stop;
	/* Envelopes without records yet (fresh.c), under fresh_mu. */
	pthread_mutex_t	 fresh_mu;
	struct spool_fresh *fresh[256];	/* SPOOL_FRESH_SLOTS chains */
	size_t		 nfresh;
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
 * record yet, else NULL: read it, and its records, from disk. */
char	*spool_fresh_get(struct spool *sp, const char *qid, size_t *len_out);
/* Forget qid (a record is being written, or it is removed); true when
 * it had no record, so no done/<qid> exists. */
bool	spool_fresh_drop(struct spool *sp, const char *qid);

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

/* write() all of buf (EINTR retried); 0, or -1 with errno. */
int	spool_write_all(int fd, const void *buf, size_t len);

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
/* The record line (with its LF) for a status change; see spool.h. */
void	spool_rec_deferred(struct util_buf *b, size_t idx, unsigned attempts,
	    uint64_t next_ms, const char *why);
void	spool_rec_failed(struct util_buf *b, size_t idx, const char *status,
	    const char *why);

#endif
