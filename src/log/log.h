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
/* Open the log file's path again (it was renamed): SIGUSR1.  0 or -1. */
int	log_file_reopen(const char **err_out);
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
 * Per-session transaction log for research use: one file per session named
 * "YYYYMMDDTHHMMSS-<ip>-<sid>.log" in dir, one line per command ('>') and
 * reply ('<') with a microsecond UTC timestamp.  NULL (and a warning) when
 * the file cannot be created.
 */
struct log_translog;
struct log_translog *log_translog_open(const char *dir, const char *ip,
	    const char *sid);
void	log_translog_line(struct log_translog *t, char dir, const char *line,
	    size_t len);
void	log_translog_close(struct log_translog **tp);

#endif
