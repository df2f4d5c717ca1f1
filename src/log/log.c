/*
 * log/log.c: the event log.  Each event is formatted into one buffer and
 * written with one write(2) (or one syslog(3) call), so lines from several
 * threads never interleave.
 *
 * An event loop buffers its lines (log_buffer) and writes them together
 * once per turn of the loop (log_flush), before it waits again: a line is
 * late by at most one turn, and a loop under load writes several lines per
 * write(2) instead of one.  On a journaled file system each write(2) also
 * updates the file's times in the journal; at c=50 (bench/) the lines one
 * by one cost about a tenth of the server's CPU time.  Warnings and errors
 * are written at once, after the lines before them.
 */
#include "log/log_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* Set again by a reload while the loops log: atomic. */
static _Atomic bool	log_to_syslog;
static _Atomic bool	log_json;	/* "log format json" */
static _Atomic bool	log_journal;	/* stderr is systemd's journal */
static _Atomic enum log_level log_min = LOG_LVL_INFO;
static _Atomic bool	log_min_forced;	/* log_force_level: keep log_min */

enum {
	LOG_BUF_MAX = 16384,	/* a loop's lines of one turn */
	LOG_REST_MAX = 2048,	/* the text after the event, with its NUL */
	LOG_LINE_MAX = 4096,	/* a line: at most LOG_LINE_MAX - 1 octets */
};

/* The calling thread's buffered lines (log_buffer), NULL when unbuffered. */
static __thread char	*log_tbuf;
static __thread size_t	 log_tlen;
/* Where the calling thread's lines go for another to write (log_divert). */
static __thread struct util_buf *log_divert_to;

static const char *const log_names[] = { "error", "warn", "info", "debug" };

static int
log_facility_code(const char *name)
{
	static const struct { const char *name; int code; } f[] = {
		{ "mail", LOG_MAIL }, { "daemon", LOG_DAEMON },
		{ "user", LOG_USER }, { "local0", LOG_LOCAL0 },
		{ "local1", LOG_LOCAL1 }, { "local2", LOG_LOCAL2 },
		{ "local3", LOG_LOCAL3 }, { "local4", LOG_LOCAL4 },
		{ "local5", LOG_LOCAL5 }, { "local6", LOG_LOCAL6 },
		{ "local7", LOG_LOCAL7 },
	};
	for (size_t i = 0; name != NULL && i < sizeof(f) / sizeof(f[0]); i++)
		if (strcasecmp(name, f[i].name) == 0)
			return f[i].code;
	return LOG_MAIL;
}

/*
 * systemd sets JOURNAL_STREAM=DEV:INODE to the stream it gives stderr;
 * the variable is inherited further, so compare it with what stderr is.
 */
static bool
log_stderr_is_journal(void)
{
	const char *v = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	return v != NULL && sscanf(v, "%llu:%llu", &dev, &ino) == 2 &&
	    fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev ==
	    dev && (unsigned long long)st.st_ino == ino;
}

void
log_init(bool use_syslog, const char *facility, enum log_level min)
{
	if (log_to_syslog)
		closelog();
	log_to_syslog = use_syslog;
	log_set_level(min);
	util_on_fatal(log_flush);	/* buffered lines before a fatal one */
	if (use_syslog)
		openlog("postern", LOG_PID | LOG_NDELAY,
		    log_facility_code(facility));
	/* Back from a log file, stderr is written through the number the
	 * file had (file.c): ask where lines go, not through which number. */
	log_journal = !use_syslog && !log_has_file() &&
	    log_stderr_is_journal();
}

void
log_set_json(bool on)
{
	log_json = on;
}

void
log_set_level(enum log_level min)
{
	if (!log_min_forced)
		log_min = min;
}

void
log_force_level(enum log_level min)
{
	log_min = min;
	log_min_forced = true;
}

int
log_level_parse(const char *name)
{
	for (size_t i = 0; i < sizeof(log_names) / sizeof(log_names[0]); i++)
		if (strcmp(name, log_names[i]) == 0)
			return (int)i;
	return -1;
}

bool
log_enabled(enum log_level lvl)
{
	return lvl <= log_min;
}

/*
 * Lines a write(2) could not put (a full disk, a closed stderr): counted,
 * and told in a line of their own by the first write that works again.
 * A write that put part of a line leaves it torn: that line ends first.
 */
static _Atomic uint64_t	log_lost;
static _Atomic uint64_t	log_lost_total;
static _Atomic int	log_lost_errno;
static _Atomic bool	log_torn;

static size_t log_format_line(char *line, enum log_level lvl,
    const char *event, const char *fmt, ...) UTIL_PRINTF(4, 5);

static void
log_count_lost(const char *buf, size_t len, size_t put, int err)
{
	uint64_t lines = 0;

	for (size_t i = put; i < len; i++)
		lines += buf[i] == '\n';
	if (put > 0 && buf[put - 1] != '\n')
		atomic_store(&log_torn, true);
	atomic_store(&log_lost_errno, err);
	atomic_fetch_add(&log_lost_total, lines);
	atomic_fetch_add(&log_lost, lines);
}

uint64_t
log_lines_lost(void)
{
	return atomic_load(&log_lost_total);
}

static void
log_tell_lost(int fd)
{
	uint64_t lost = atomic_exchange(&log_lost, 0);
	char line[LOG_LINE_MAX + 1] = "\n";	/* ends a torn line */
	bool torn;
	size_t o;
	ssize_t n;

	if (lost == 0)
		return;
	torn = atomic_exchange(&log_torn, false);
	o = torn ? 1 : 0;
	o += log_format_line(line + o, LOG_LVL_WARN, "log-lost",
	    "lines=%llu error=\"%s\"", (unsigned long long)lost,
	    strerror(atomic_load(&log_lost_errno)));
	n = write(fd, line, o);
	if (n > 0)
		log_file_wrote((size_t)n);
	if (n != (ssize_t)o) {		/* not yet: tell them later */
		if (n > 0 ? line[n - 1] != '\n' : torn)
			atomic_store(&log_torn, true);
		atomic_fetch_add(&log_lost, lost);
	}
}

static void
log_write(const char *buf, size_t len)
{
	int fd = log_out_fd();
	ssize_t n;

	if (atomic_load_explicit(&log_lost, memory_order_relaxed) > 0)
		log_tell_lost(fd);
	n = write(fd, buf, len);
	if (n > 0)
		log_file_wrote((size_t)n);
	if (n != (ssize_t)len)
		log_count_lost(buf, len, n > 0 ? (size_t)n : 0,
		    n == -1 ? errno : ENOSPC);
}

/* Into the thread's buffer (log_tbuf): whole lines, len <= LOG_BUF_MAX. */
static void
log_hold(const char *lines, size_t len)
{
	if (log_tlen + len > LOG_BUF_MAX)
		log_flush();
	memcpy(log_tbuf + log_tlen, lines, len);
	log_tlen += len;
}

static void
log_emit(enum log_level lvl, const char *line, size_t len)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };

	if (log_to_syslog) {
		syslog(prio[lvl], "%.*s", (int)len, line);
		return;
	}
	if (log_divert_to != NULL) {
		if (lvl >= LOG_LVL_INFO) {
			util_buf_add(log_divert_to, line, len);
			return;
		}
		log_put(log_divert_to->data, log_divert_to->len);
		util_buf_reset(log_divert_to);
	}
	if (log_tbuf != NULL && lvl >= LOG_LVL_INFO) {
		log_hold(line, len);
		return;
	}
	log_flush();
	/* One write per line keeps lines whole across threads. */
	log_write(line, len);
}

struct util_buf *
log_divert(struct util_buf *into)
{
	struct util_buf *was = log_divert_to;

	log_divert_to = into;
	return was;
}

void
log_put(const char *lines, size_t len)
{
	if (len == 0)
		return;
	if (log_tbuf != NULL && len <= LOG_BUF_MAX) {
		log_hold(lines, len);
		return;
	}
	log_flush();
	log_write(lines, len);
}

void
log_buffer(bool on)
{
	log_flush();
	if (on && log_tbuf == NULL)
		log_tbuf = xmalloc(LOG_BUF_MAX);
	else if (!on) {
		free(log_tbuf);
		log_tbuf = NULL;
	}
}

void
log_flush(void)
{
	if (log_tlen > 0) {
		/* Whole lines only: several of them, still one write. */
		log_write(log_tbuf, log_tlen);
		log_tlen = 0;
	}
}

static void
log_vline(enum log_level lvl, const char *event, const char *sid,
    const char *qid, const char *fmt, va_list ap) UTIL_PRINTF(5, 0);

/*
 * A line is built in one pass, with one vsnprintf for the caller's fmt:
 * at info level a message logs about seven lines, and formatting each
 * piece with its own snprintf cost a fifth of the server's instructions.
 */

/* n octets of s at *o in buf if they fit before max; what fits if not. */
static void
log_cat(char *buf, size_t *o, size_t max, const char *s, size_t n)
{
	if (n > max - *o)
		n = max - *o;
	memcpy(buf + *o, s, n);
	*o += n;
}

/*
 * "2026-01-02T03:04:05.123456Z" into stamp (at least 64 octets); the
 * seconds once a second.  Returns its length.
 */
static size_t
log_stamp(char *stamp)
{
	static __thread time_t sec = -1;
	static __thread char secs[32];
	static __thread size_t secs_len;
	struct timespec ts;
	struct tm tm;
	long us;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != sec) {
		gmtime_r(&ts.tv_sec, &tm);
		secs_len = strftime(secs, sizeof(secs), "%Y-%m-%dT%H:%M:%S",
		    &tm);
		sec = ts.tv_sec;
	}
	memcpy(stamp, secs, secs_len);
	stamp[secs_len] = '.';
	us = ts.tv_nsec / 1000;
	for (size_t i = secs_len + 6; i > secs_len; i--, us /= 10)
		stamp[i] = (char)('0' + us % 10);
	memcpy(stamp + secs_len + 7, "Z", 2);
	return secs_len + 8;
}

/*
 * "sid=SID qid=QID " and fmt's text into rest (LOG_REST_MAX octets), cut
 * where it is full, up to a NUL fmt makes, without the blanks at its end
 * (so no fmt leaves none).  Returns its length.
 */
static size_t
log_rest(char *rest, const char *sid, const char *qid, const char *fmt,
    va_list ap) UTIL_PRINTF(4, 0);

static size_t
log_rest(char *rest, const char *sid, const char *qid, const char *fmt,
    va_list ap)
{
	const size_t max = LOG_REST_MAX - 1;
	size_t n = 0;

	if (sid != NULL) {
		log_cat(rest, &n, max, "sid=", 4);
		log_cat(rest, &n, max, sid, strlen(sid));
		log_cat(rest, &n, max, " ", 1);
	}
	if (qid != NULL) {
		log_cat(rest, &n, max, "qid=", 4);
		log_cat(rest, &n, max, qid, strlen(qid));
		log_cat(rest, &n, max, " ", 1);
	}
	rest[n] = '\0';
	if (fmt != NULL && n < max)
		n += log_format(rest + n, LOG_REST_MAX - n, fmt, ap);
	while (n > 0 && rest[n - 1] == ' ')
		n--;
	rest[n] = '\0';
	return n;
}

/*
 * The control bytes in line[from..*o) as \xNN, cut at max: text that came
 * in raw through a format's argument (a library's error message with its
 * newlines) still leaves one line.
 */
static void
log_unbreak(char *line, size_t from, size_t *o, size_t max)
{
	static const char hex[] = "0123456789abcdef";
	char tail[LOG_LINE_MAX];
	size_t i = from, n;

	while (i < *o && (unsigned char)line[i] >= 0x20 && line[i] != 0x7f)
		i++;
	if (i == *o)
		return;
	n = *o - i;
	memcpy(tail, line + i, n);
	*o = i;
	for (size_t k = 0; k < n; k++) {
		unsigned char ch = (unsigned char)tail[k];
		if (ch >= 0x20 && ch != 0x7f) {
			if (*o + 1 > max)
				break;
			line[(*o)++] = (char)ch;
			continue;
		}
		if (*o + 4 > max)
			break;
		line[(*o)++] = '\\';
		line[(*o)++] = 'x';
		line[(*o)++] = hex[ch >> 4];
		line[(*o)++] = hex[ch & 15];
	}
}

/*
 * "[STAMP ]LEVEL[ EVENT][ REST]\n" at line + o: a line too long is cut
 * and keeps its newline.  The text after the event is made in place when
 * it fits.  Returns the line's length.
 */
static size_t
log_text_line(char *line, size_t o, enum log_level lvl, const char *event,
    const char *sid, const char *qid, const char *fmt, va_list ap)
    UTIL_PRINTF(7, 0);

static size_t
log_text_line(char *line, size_t o, enum log_level lvl, const char *event,
    const char *sid, const char *qid, const char *fmt, va_list ap)
{
	const size_t max = LOG_LINE_MAX - 2;	/* room for the newline */
	const char *name = log_names[lvl];
	char restbuf[LOG_REST_MAX];
	size_t n, from;

	if (!log_to_syslog) {
		o += log_stamp(line + o);
		line[o++] = ' ';
	}
	log_cat(line, &o, max, name, strlen(name));
	if (event != NULL) {
		log_cat(line, &o, max, " ", 1);
		log_cat(line, &o, max, event, strlen(event));
	}
	from = o;
	if (o + 1 + LOG_REST_MAX <= LOG_LINE_MAX) {
		if ((n = log_rest(line + o + 1, sid, qid, fmt, ap)) > 0) {
			line[o] = ' ';
			o = o + 1 + n < max ? o + 1 + n : max;
		}
	} else if ((n = log_rest(restbuf, sid, qid, fmt, ap)) > 0) {
		log_cat(line, &o, max, " ", 1);
		log_cat(line, &o, max, restbuf, n);
	}
	log_unbreak(line, from, &o, max);
	line[o++] = '\n';
	return o;
}

/* One line, as the log's settings make it, into line (LOG_LINE_MAX). */
static size_t
log_vformat(char *line, enum log_level lvl, const char *event,
    const char *sid, const char *qid, const char *fmt, va_list ap)
    UTIL_PRINTF(6, 0);

static size_t
log_vformat(char *line, enum log_level lvl, const char *event,
    const char *sid, const char *qid, const char *fmt, va_list ap)
{
	/* The journal reads a line's priority from a "<N>" before it. */
	static const char *const jprio[] = { "<3>", "<4>", "<6>", "<7>" };
	size_t o = 0;

	if (log_journal) {
		memcpy(line, jprio[lvl], 3);
		o = 3;
	}
	if (log_json) {
		char stamp[64], rest[LOG_REST_MAX];
		struct log_json_head h = { log_to_syslog ? NULL : stamp,
		    log_names[lvl], event, sid, qid };
		if (!log_to_syslog)
			log_stamp(stamp);
		log_rest(rest, NULL, NULL, fmt, ap);
		o += log_json_line(line + o, LOG_LINE_MAX - o, &h, rest);
	} else
		o = log_text_line(line, o, lvl, event, sid, qid, fmt, ap);
	return o;
}

static size_t
log_format_line(char *line, enum log_level lvl, const char *event,
    const char *fmt, ...)
{
	va_list ap;
	size_t o;

	va_start(ap, fmt);
	o = log_vformat(line, lvl, event, NULL, NULL, fmt, ap);
	va_end(ap);
	return o;
}

static void
log_vline(enum log_level lvl, const char *event, const char *sid,
    const char *qid, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX];

	log_emit(lvl, line, log_vformat(line, lvl, event, sid, qid, fmt, ap));
}

void
log_event(enum log_level lvl, const char *event, const char *sid,
    const char *qid, const char *fmt, ...)
{
	va_list ap;

	if (!log_enabled(lvl))
		return;
	va_start(ap, fmt);
	log_vline(lvl, event, sid, qid, fmt, ap);
	va_end(ap);
}

void
log_msg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;

	if (!log_enabled(lvl))
		return;
	va_start(ap, fmt);
	log_vline(lvl, NULL, NULL, NULL, fmt, ap);
	va_end(ap);
}
