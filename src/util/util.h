/*
 * util/util.h: allocation that never fails, bounded string helpers, time and
 * small containers.  Includes nothing from postern.
 */
#ifndef POSTERN_UTIL_H
#define POSTERN_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#define UTIL_PRINTF(a, b)	__attribute__((format(printf, a, b)))
#define UTIL_NORETURN		__attribute__((noreturn))

/* Print "postern: fatal: MSG" to stderr and exit(1).  Start-up and config only. */
void	fatal(const char *fmt, ...) UTIL_PRINTF(1, 2) UTIL_NORETURN;

/*
 * Run hook (once) before fatal() or a failed ASSERT writes its line: the
 * log flushes the calling thread's buffered lines there, so they are not
 * lost and come before it.
 */
void	util_on_fatal(void (*hook)(void));

/* Checks our own contracts, never input; stays on in release builds. */
#define ASSERT(x)	do { if (!(x)) util_assert_fail(#x, __FILE__, __LINE__); } while (0)
void	util_assert_fail(const char *what, const char *file, int line)
	    UTIL_NORETURN;

/* Allocators that abort on exhaustion: callers never test for NULL. */
void	*xmalloc(size_t n);
void	*xcalloc(size_t nmemb, size_t size);
void	*xrealloc(void *p, size_t n);
void	*xreallocarray(void *p, size_t nmemb, size_t size);
char	*xstrdup(const char *s);
char	*xstrndup(const char *s, size_t n);
/* A new string from a printf format; never NULL. */
char	*xasprintf(const char *fmt, ...) UTIL_PRINTF(1, 2);

/*
 * Copy src into dst (size dstsz, NUL-terminated).  Returns 0, or -1 when src
 * did not fit (dst then holds a truncated copy).
 */
int	util_strlcpy(char *dst, const char *src, size_t dstsz);
/* snprintf that returns 0, or -1 on truncation or error. */
int	util_snprintf(char *dst, size_t dstsz, const char *fmt, ...)
	    UTIL_PRINTF(3, 4);

/*
 * Error text for an err_out: formatted into the calling thread's one error
 * buffer (1 KiB, longer text is cut) and returned.  It stays valid until
 * the thread's next util_err(): report or copy it before anything else
 * may fail.  The arguments may point into the buffer (an error wrapped
 * around another).  errno is kept.
 */
const char *util_err(const char *fmt, ...) UTIL_PRINTF(1, 2);
const char *util_verr(const char *fmt, va_list ap) UTIL_PRINTF(1, 0);

bool	util_strcaseeq(const char *a, const char *b);
/* Lower-case ASCII letters of s in place; returns s. */
char	*util_strlower(char *s);

/*
 * The length of the RFC 3463 enhanced status code at the start of s: a
 * class 2, 4 or 5, then twice "." and 1..3 digits, not followed by
 * another digit ("5.1.1" of "5.1.1 No such user": 5).  0 when s does not
 * start with one.
 */
size_t	util_esc_len(const char *s);

/* Parse "10", "10k", "35M", "1G" (powers of 1024).  0 or -1. */
int	util_parse_size(const char *s, uint64_t *out);
/* Parse "500ms", "30s", "5m", "2h", "1d"; a bare number means seconds. */
int	util_parse_duration_ms(const char *s, uint64_t *out);

/* Milliseconds of the monotonic clock. */
uint64_t util_now_ms(void);
/* ms as a struct timeval, for libevent's timers and timeouts. */
struct timeval util_timeval_ms(uint64_t ms);
/* Microseconds since the epoch (wall clock). */
uint64_t util_wall_us(void);
/* RFC 5322 date of t (local zone), e.g. "Mon, 23 Nov 2026 11:49:02 +0000". */
void	util_rfc5322_date(char *buf, size_t bufsz, int64_t t);

/*
 * Escape peer text (and anything else outside our control) for a log line,
 * the one way every such value is logged: printable ASCII is kept except
 * '"' and '\\', every other byte (controls, DEL, all of UTF-8, valid or
 * not) becomes \xNN, so a value can neither end its quotes and forge a
 * "KEY=value" nor carry a terminal escape.  For a value inside quotes
 * (why="..."); cut with "..." when buf is full.  Returns buf.
 */
char	*log_safe_into(char *buf, size_t bufsz, const char *s, size_t len);
/* The same for a value logged without quotes (stage=, to=<...>): a space
   becomes \x20 as well, so the value stays one word. */
char	*log_safe_word_into(char *buf, size_t bufsz, const char *s,
	    size_t len);

/* Growable byte buffer. */
struct util_buf {
	char	*data;		/* owned; NULL while empty */
	size_t	 len;
	size_t	 cap;
};
void	util_buf_add(struct util_buf *b, const void *p, size_t n);
void	util_buf_addstr(struct util_buf *b, const char *s);
void	util_buf_printf(struct util_buf *b, const char *fmt, ...)
	    UTIL_PRINTF(2, 3);
/* NUL-terminate without counting the NUL; returns b->data. */
char	*util_buf_cstr(struct util_buf *b);
void	util_buf_reset(struct util_buf *b);	/* len = 0, keeps memory */
void	util_buf_clear(struct util_buf *b);	/* frees memory */

/*
 * An IPv4 or IPv6 socket address as numeric text into ip (at least 46
 * bytes, INET6_ADDRSTRLEN) and, if port is not NULL, its port.  True for
 * IPv6.
 */
struct sockaddr;
bool	util_sockaddr_text(const struct sockaddr *sa, char *ip, int *port);
/*
 * The reverse: numeric IPv4 or IPv6 text and a port into ss (a struct
 * sockaddr_storage) and *len.  0, or -1 when ip is not a numeric address.
 */
struct sockaddr_storage;
int	util_sockaddr_make(const char *ip, int port,
	    struct sockaddr_storage *ss, unsigned *len);

/* fsync the directory that holds path (or the directory path itself). */
int	util_fsync_dir(const char *dirpath);
/* mkdir -p with mode; 0 or -1 (errno set). */
int	util_mkdirs(const char *path, unsigned mode);
/*
 * Does the file system holding fd journal its metadata in order (XFS, ext4
 * with a journal), so that a rename made durable carries everything done
 * to the files before it?  False when unsure.
 */
bool	util_fs_ordered(int fd);
/* fd's data written out and waited for, no journal commit; 0 or -1. */
int	util_settle(int fd);

#endif

/*
 * A fixed pool of worker threads running submitted functions in FIFO order
 * (used for disk work that must not run on an event loop).  fn runs on a
 * worker; it reports back to its loop itself (e.g. with event_active()).
 */
struct util_pool;
struct util_pool *util_pool_new(unsigned nthreads);
void	util_pool_submit(struct util_pool *p, void (*fn)(void *), void *arg);
/* Run what was submitted, then join the workers and free. */
void	util_pool_free(struct util_pool **pp);
