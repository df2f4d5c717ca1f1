/*
 * util/util.h: allocation that never fails, bounded string helpers, time and
 * small containers.  Includes nothing from postern.
 */
#ifndef POSTERN_UTIL_H
#define POSTERN_UTIL_H

#include <sys/types.h>
#include <stdarg.h>
#include <stdatomic.h>
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
/*
 * The strings that follow dstsz, up to a NULL, one after the other into
 * dst (NUL-terminated).  Returns 0, or -1 when they did not fit (dst then
 * holds what did).  For hot paths where snprintf's parsing shows.
 */
int	util_strjoin(char *dst, size_t dstsz, ...) __attribute__((sentinel));
/* Room for any int64_t in decimal, sign and NUL included. */
#define UTIL_DEC_MAX	21
/* v in decimal into out (UTIL_DEC_MAX bytes); returns out. */
char	*util_i64_dec(char *out, int64_t v);
/* A hash of the string s for the buckets of a table (FNV-1a, folded). */
size_t	util_hash_str(const char *s);
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
/*
 * Length of the well-formed UTF-8 sequence at p, which ends before lim
 * (RFC 3629 4: no overlong forms, no surrogates, nothing past U+10FFFF),
 * or 0 when there is none (an ASCII byte, a stray or cut sequence).
 */
size_t	util_utf8_len(const unsigned char *p, const unsigned char *lim);
/*
 * Where to cut s, which is longer than n bytes, to keep at most n of them
 * without splitting a UTF-8 character: n, or less when s[n] continues the
 * character before it.
 */
size_t	util_utf8_cut(const char *s, size_t n);
/* True when s holds no byte >= 0x80. */
bool	util_is_ascii(const char *s);
/*
 * Does the header line at line (len bytes, the start of a field) name field
 * name (case-insensitive, RFC 5322 1.2.2)?  Blanks between the name and its
 * colon, the obsolete "Name :" form (RFC 5322 4.5), count as well.
 */
bool	util_hdr_is(const char *line, size_t len, const char *name);

/*
 * The A-label form of a domain (RFC 5891 5: UTF-8 labels as Punycode
 * "xn--" labels, IDNA2008), lower case, in *out (owned by the caller).  An
 * ASCII domain with no "xn--" label is only lower-cased.  -1 with *err_out
 * when the domain is not valid IDNA (a bad "xn--" label, a character
 * IDNA2008 disallows, bad UTF-8).
 */
int	util_idna_alabel(const char *domain, char **out, const char **err_out);
/*
 * The canonical spellings of a domain written with UTF-8 or "xn--" labels,
 * whatever the case it was written in: its U-label form in lower case (as
 * Unicode lower case gives it: "BÜCHER.example" is "bücher.example") and
 * its A-label form.  Those that differ from domain as written (the A-label
 * compared ignoring ASCII case) go to out[0..n-1], owned by the caller;
 * returns n, 0 to 2.  0 for an ASCII domain with no "xn--" label, or one
 * that is not valid IDNA.
 */
size_t	util_idna_spellings(const char *domain, char *out[2]);

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
/* 32 random bits from the thread's supply (getrandom, 256 bytes at a
 * time); false when the kernel has none to give yet. */
bool	util_random32(uint32_t *out);
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
/* Room for n more bytes (and a NUL) without growing again. */
void	util_buf_reserve(struct util_buf *b, size_t n);
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
/*
 * An IPv4 client of a dual-stack socket (an IPv6 one without
 * IPV6_V6ONLY, as a service manager may pass, or a load balancer's)
 * comes as an IPv4-mapped address, ::ffff:192.0.2.1.  Is sa one?  Then
 * *v4 gets the IPv4 address and port it stands for.
 */
struct sockaddr_in;
bool	util_sockaddr_unmap(const struct sockaddr *sa, struct sockaddr_in *v4);

/*
 * A network in CIDR form ("192.0.2.0/24", "2001:db8::/32", or one address),
 * host bits cleared.
 */
struct util_cidr {
	int		family;		/* AF_INET or AF_INET6 */
	unsigned char	net[16];
	unsigned	prefix;		/* bits */
};
/* Parse s into *out; 0, or -1 when it is not a network. */
int	util_cidr_parse(const char *s, struct util_cidr *out);
/* Is the numeric address ip inside the network? */
bool	util_cidr_contains(const struct util_cidr *c, const char *ip);

/*
 * The PROXY protocol header (HAProxy's proxy-protocol.txt) a TCP load
 * balancer sends first on a connection: version 1 is one text line of at
 * most 107 bytes, version 2 a binary block, here at most
 * UTIL_PROXYHDR_MAX bytes (its TLVs are skipped).
 */
#define UTIL_PROXYHDR_V1_MAX	107
#define UTIL_PROXYHDR_MAX	2048
#define UTIL_PROXYHDR_IP_MAX	46	/* INET6_ADDRSTRLEN */
enum util_proxyhdr_kind {
	UTIL_PROXYHDR_LOCAL,	/* v2 LOCAL, v1 UNKNOWN, or an address family
				   of no use here: keep the real peer */
	UTIL_PROXYHDR_TCP4,
	UTIL_PROXYHDR_TCP6,
};
struct util_proxyhdr {
	int			 version;	/* 1 or 2 */
	enum util_proxyhdr_kind	 kind;
	char			 src_ip[UTIL_PROXYHDR_IP_MAX];	/* the client */
	char			 dst_ip[UTIL_PROXYHDR_IP_MAX];	/* whom it reached */
	uint16_t		 src_port, dst_port;
	size_t			 len;		/* bytes of the header */
};
/*
 * Parse the header at the start of buf (len bytes: what has arrived so
 * far; the bytes after the header are not looked at).  1: a whole header,
 * out->len bytes long; 0: a valid beginning, more bytes are needed (every
 * byte so far belongs to the header); -1: not a valid header, *why_out
 * says why (static text).
 */
int	util_proxyhdr_parse(const void *buf, size_t len,
	    struct util_proxyhdr *out, const char **why_out);
/*
 * The header a sender writes for a client at src_ip:src_port that reached
 * dst_ip:dst_port: TCP4 or TCP6 when both are numeric addresses of one
 * family and both ports 0..65535, else LOCAL (it tells nothing of them).
 */
void	util_proxyhdr_set(struct util_proxyhdr *out, const char *src_ip,
	    int src_port, const char *dst_ip, int dst_port);
/*
 * Write h as a version 1 or 2 header into buf (UTIL_PROXYHDR_V1_MAX + 1
 * bytes are enough for either); its length, or 0 when buf
 * is too small or h's addresses do not fit its kind.  A LOCAL h is written
 * as "PROXY UNKNOWN" (v1) or a LOCAL command (v2).
 */
size_t	util_proxyhdr_write(const struct util_proxyhdr *h, int version,
	    void *buf, size_t bufsz);

/*
 * A folder whose files may take max_bytes in all, oldest removed first
 * (its own files: a file put there by hand counts and goes in its turn).
 * A file being written counts as it grows and is never removed before
 * util_capdir_close().  Thread-safe; blocks on the disk.
 */
struct util_capdir;
struct util_capfile;
/* Make dir (mkdir -p), read what it holds, prune.  NULL with *err_out. */
struct util_capdir *util_capdir_new(const char *dir, uint64_t max_bytes,
	    const char **err_out);
void	util_capdir_set_max(struct util_capdir *d, uint64_t max_bytes);
/* A file named name is being written: it counts, n bytes at a time. */
struct util_capfile *util_capdir_open(struct util_capdir *d,
	    const char *name);
void	util_capdir_grow(struct util_capdir *d, struct util_capfile *f,
	    uint64_t n);
/* Written: it may go in its turn now.  *fp becomes NULL. */
void	util_capdir_close(struct util_capdir *d, struct util_capfile **fp);
/*
 * A whole file of size bytes was just made there.  -1 with *err_out when
 * it is larger than the cap on its own: it is not counted, nothing is
 * removed, and the caller removes it.
 */
int	util_capdir_add(struct util_capdir *d, const char *name,
	    uint64_t size, const char **err_out);
/*
 * After a call in the folder failed with ENOENT: when the folder itself
 * is gone (removed while in use), make it again as util_capdir_new() does,
 * under the same descriptor, and true: try the call once more.  False
 * otherwise, with errno that of the failure.
 */
bool	util_capdir_remade(struct util_capdir *d);
/* The folder, open (owned by d): for openat() and linkat(). */
int	util_capdir_fd(const struct util_capdir *d);
/* Its path, as given to util_capdir_new() (owned by d). */
const char *util_capdir_path(const struct util_capdir *d);
/* Bytes counted now; *removed_out (if not NULL): files removed so far. */
uint64_t util_capdir_total(struct util_capdir *d, uint64_t *removed_out);
void	util_capdir_free(struct util_capdir **dp);

/* fsync the directory that holds path (or the directory path itself). */
int	util_fsync_dir(const char *dirpath);
/* mkdir -p with mode; 0 or -1 (errno set). */
int	util_mkdirs(const char *path, unsigned mode);
/*
 * The same; on -1, *failed_len_out is the length of the leading part of
 * path, a folder on the way or path itself, that could not be made.
 */
int	util_mkdirs_where(const char *path, unsigned mode,
	    size_t *failed_len_out);
/*
 * The same, giving each folder it makes to uid:gid (as root; -1 keeps
 * that id).  0 or -1 (errno set).
 */
int	util_mkdirs_owned(const char *path, unsigned mode, uid_t uid,
	    gid_t gid);
/*
 * The ids of account user, with group's id instead of its primary group
 * when group is not NULL.  0, or -1 with *err_out ("user X: no such
 * user").
 */
int	util_account_ids(const char *user, const char *group, uid_t *uid_out,
	    gid_t *gid_out, const char **err_out);
struct stat;
/*
 * Does the file system holding fd journal its metadata in order (XFS, ext4
 * with a journal), so that a rename made durable carries everything done
 * to the files before it?  False when unsure.  st: fd's fstat when the
 * caller has it (one call fewer), or NULL.
 */
bool	util_fs_ordered(int fd, const struct stat *st);
/* fd's data written out and waited for, no journal commit; 0 or -1. */
int	util_settle(int fd);
/*
 * fsync(2) and fdatasync(2), as waits in the kernel on a pool's worker
 * (util_pool_block_begin): every sync of the server goes through these.
 */
int	util_fsync(int fd);
int	util_fdatasync(int fd);
/*
 * All of buf written to fd (EINTR retried): at off with pwrite(2), or at
 * the file's position with off -1.  0, or -1 with errno.
 */
int	util_write_all(int fd, const void *buf, size_t len, off_t off);
/*
 * Up to len bytes read from fd into buf (EINTR retried), as util_write_all
 * places them; fewer only at the end of the file.  The count, or -1.
 */
ssize_t	util_read_upto(int fd, void *buf, size_t len, off_t off);

#endif

/*
 * A fixed pool of worker threads running submitted functions in FIFO order
 * (used for disk work that must not run on an event loop).  fn runs on a
 * worker; it reports back to its loop itself (e.g. with event_active()).
 */
struct util_pool;
/*
 * maxrun: how many workers may run jobs at once before a queued job
 * waits for one of them rather than waking a sleeper (0: no limit).
 */
struct util_pool *util_pool_new(unsigned nthreads, unsigned maxrun);
void	util_pool_submit(struct util_pool *p, void (*fn)(void *), void *arg);
/*
 * Submit, the wake-up of a sleeping worker held back until this thread
 * calls util_pool_kick (an event loop: at the end of each turn), so that
 * the jobs of one turn wake their workers together, as many as may run.
 */
void	util_pool_submit_held(struct util_pool *p, void (*fn)(void *),
	    void *arg);
void	util_pool_kick(void);
/*
 * Around a wait (an fsync, another thread's work) or a long computation on
 * a pool's worker: it leaves its place among maxrun running workers to a
 * sleeper meanwhile, so that queued jobs do not wait behind it.  Nests;
 * does nothing on other threads.
 */
void	util_pool_block_begin(void);
void	util_pool_block_end(void);
/* Run what was submitted, then join the workers and free. */
void	util_pool_free(struct util_pool **pp);
/*
 * Sleep while *word is still seen (a wake-up, a change or a signal ends
 * it: callers check their condition again); wake up to n of its sleepers.
 */
void	util_futex_wait(atomic_uint *word, unsigned seen);
void	util_futex_wake(atomic_uint *word, unsigned n);
