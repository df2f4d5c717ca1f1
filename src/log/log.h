/*
 * log/log.h: one structured event per line ("key=value"), to stderr or
 * syslog; thread-safe (each line is one write).  Never log AUTH payloads or
 * message bodies; pass peer text through log_safe_into() first.
 */
#ifndef POSTERN_LOG_H
#define POSTERN_LOG_H

#include <stdbool.h>
#include "util/util.h"

enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/*
 * Send lines to syslog (ident "postern", facility name like "mail") or to
 * stderr (or the log file, log_file_set).  On stderr under systemd
 * (JOURNAL_STREAM names it) each line starts with its syslog priority,
 * "<3>" error to "<7>" debug, which the journal takes.
 */
void	log_init(bool use_syslog, const char *facility, enum log_level min);
/* Lines as JSON objects, one a line, with the fields of key=value. */
void	log_set_json(bool on);
/*
 * Lines to path (appended; made 0640) instead of stderr, and, with
 * size_max, rotated when they pass it: path.1 .. path.keep are kept.
 * path NULL: back to stderr.  0, or -1 with *err_out (nothing changes).
 */
int	log_file_set(const char *path, uint64_t size_max, unsigned keep,
	    const char **err_out);
/* Do lines go to a log file (log_file_set), not to stderr? */
bool	log_has_file(void);
/*
 * Open the log file's path again (it was renamed): SIGUSR1.  0 or -1;
 * without a log file 0, and nothing is done.
 */
int	log_file_reopen(const char **err_out);
/*
 * Before a privilege drop to uid:gid: the log file this process made is
 * given to them, so that a reopen or rotation after the drop works.  0
 * (also without a log file, or one uid owns already); -1 with *err_out
 * when the file is someone else's and was there before (it is left as it
 * is) or the fchown failed.
 */
int	log_file_give(uid_t uid, gid_t gid, const char **err_out);
/* Lines a failed write lost (a full disk) since the start. */
uint64_t log_lines_lost(void);
void	log_set_level(enum log_level min);
bool	log_enabled(enum log_level lvl);
/*
 * Pin the level: later log_init and log_set_level calls (a reload of the
 * config) keep min.  For "postern run --log-level".
 */
void	log_force_level(enum log_level min);
/* The level named "error", "warn", "info" or "debug", or -1. */
int	log_level_parse(const char *name);

/*
 * Log one event: "<level> <event> sid=.. qid=.. <fmt...>".  sid and qid may
 * be NULL (then left out).
 */
void	log_event(enum log_level lvl, const char *event, const char *sid,
	    const char *qid, const char *fmt, ...) UTIL_PRINTF(5, 6);

/* Plain message lines outside any session (start-up, reload, bugs). */
void	log_msg(enum log_level lvl, const char *fmt, ...) UTIL_PRINTF(2, 3);

/*
 * Buffer the calling thread's info and debug lines on stderr until
 * log_flush (an event loop flushes once per turn, so a line may follow the
 * reply it tells of by that turn); off writes what is buffered.  Warnings
 * and errors are never held back.  A thread that exits must turn it off.
 */
void	log_buffer(bool on);
void	log_flush(void);

/*
 * A worker's lines for an event loop to write with its own: while into is
 * set (NULL ends it), the calling thread's info and debug lines on stderr
 * are appended to it; a warning or error first writes them, then itself.
 * The loop hands them to log_put, which buffers them as its own lines, so
 * a turn that finishes many jobs writes their lines in one write(2).
 * Returns where they went before, for a nested diversion to put back.
 */
struct util_buf *log_divert(struct util_buf *into);
void	log_put(const char *lines, size_t len);


/*
 * Per-session transaction logs for research use: one file per session,
 * "YYYYMMDDTHHMMSS-<ip>-<sid>.log" in the options' folder, one line per
 * record: "2026-01-02T03:04:05.123456Z MARK TEXT".  The marks:
 */
enum log_tl_mark {
	LOG_TL_IN,	/* ">"  a command line from the client */
	LOG_TL_OUT,	/* "<"  a reply line to the client */
	LOG_TL_DATA,	/* "D"  a line of message content, as received */
	LOG_TL_EOD,	/* "."  the end of the content, with its size */
	LOG_TL_NOTE,	/* "#"  an event of the session */
	LOG_TL_UP_OUT,	/* "}"  a line sent to the upstream (a proxy) */
	LOG_TL_UP_IN,	/* "{"  a reply line of the upstream */
};
struct log_translog_opts {
	const char	*dir;		/* borrowed for the open call */
	bool		 commands;	/* log ">" (and "}") lines */
	bool		 replies;	/* log "<" (and "{") lines */
	uint64_t	 data_max;	/* content octets per message; 0: none */
	uint64_t	 file_max;	/* per file; at least 4 KiB */
	uint64_t	 total_max;	/* the folder, oldest files removed */
};
/*
 * The writer: a thread of its own, started at the first record, writes
 * every file; callers only queue.  Free it once every log is closed: it
 * writes what is queued first.
 */
struct log_translog_writer;
struct log_translog_writer *log_translog_writer_new(void);
void	log_translog_writer_free(struct log_translog_writer **wp);

struct log_translog;
/* A new log (never NULL: a file that cannot be made costs a warning). */
struct log_translog *log_translog_open(struct log_translog_writer *w,
	    const struct log_translog_opts *o, const char *ip,
	    const char *sid);
/* One line (its CR LF dropped); peer bytes are escaped.  t may be NULL. */
void	log_translog_line(struct log_translog *t, enum log_tl_mark mark,
	    const char *line, size_t len);
/* Message content (LF line ends), up to data_max per message. */
void	log_translog_data(struct log_translog *t, const char *buf, size_t len);
/* The end of a message's content: a "." line with its size. */
void	log_translog_end_data(struct log_translog *t, uint64_t size);
/* Done: the writer closes the file.  *tp becomes NULL. */
void	log_translog_close(struct log_translog **tp);

#endif
