/*
 * util/util.c: allocation, bounded strings, size and duration parsing, time,
 * the growable buffer and small file-system helpers.  Knows nothing of
 * postern's modules.
 */
#include "util/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void	(*util_fatal_hook)(void);

void
util_on_fatal(void (*hook)(void))
{
	util_fatal_hook = hook;
}

static void
util_fatal_hook_run(void)
{
	void (*hook)(void) = util_fatal_hook;

	util_fatal_hook = NULL;		/* once, even if it fails in turn */
	if (hook != NULL)
		hook();
}

void
fatal(const char *fmt, ...)
{
	va_list ap;

	util_fatal_hook_run();
	fputs("postern: fatal: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

void
util_assert_fail(const char *what, const char *file, int line)
{
	util_fatal_hook_run();
	fprintf(stderr, "postern: assertion failed: %s at %s:%d\n", what, file,
	    line);
	abort();
}

static void *
util_oom(size_t n)
{
	fprintf(stderr, "postern: out of memory allocating %zu bytes\n", n);
	abort();
}

void *
xmalloc(size_t n)
{
	void *p = malloc(n == 0 ? 1 : n);

	return p != NULL ? p : util_oom(n);
}

void *
xcalloc(size_t nmemb, size_t size)
{
	void *p = calloc(nmemb == 0 ? 1 : nmemb, size == 0 ? 1 : size);

	return p != NULL ? p : util_oom(nmemb * size);
}

void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n == 0 ? 1 : n);

	return q != NULL ? q : util_oom(n);
}

void *
xreallocarray(void *p, size_t nmemb, size_t size)
{
	if (size != 0 && nmemb > SIZE_MAX / size)
		util_oom(SIZE_MAX);
	return xrealloc(p, nmemb * size);
}

char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *p = xmalloc(len + 1);

	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;

	va_start(ap, fmt);
	if (vasprintf(&p, fmt, ap) == -1)
		util_oom(0);
	va_end(ap);
	return p;
}

size_t
util_hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return (size_t)(h ^ (h >> 29));
}

int
util_strlcpy(char *dst, const char *src, size_t dstsz)
{
	size_t len = strlen(src);

	if (dstsz == 0)
		return -1;
	if (len >= dstsz) {
		memcpy(dst, src, dstsz - 1);
		dst[dstsz - 1] = '\0';
		return -1;
	}
	memcpy(dst, src, len + 1);
	return 0;
}

int
util_strjoin(char *dst, size_t dstsz, ...)
{
	va_list ap;
	const char *s;
	size_t o = 0;
	int rc = 0;

	if (dstsz == 0)
		return -1;
	va_start(ap, dstsz);
	while ((s = va_arg(ap, const char *)) != NULL) {
		size_t len = strlen(s);
		if (len >= dstsz - o) {
			len = dstsz - o - 1;
			rc = -1;
		}
		memcpy(dst + o, s, len);
		o += len;
	}
	va_end(ap);
	dst[o] = '\0';
	return rc;
}

char *
util_i64_dec(char *out, int64_t v)
{
	char tmp[UTIL_DEC_MAX];
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
	size_t n = 0, o = 0;

	do {
		tmp[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u != 0);
	if (v < 0)
		out[o++] = '-';
	while (n > 0)
		out[o++] = tmp[--n];
	out[o] = '\0';
	return out;
}

int
util_snprintf(char *dst, size_t dstsz, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(dst, dstsz, fmt, ap);
	va_end(ap);
	return (n < 0 || (size_t)n >= dstsz) ? -1 : 0;
}

static __thread char util_errbuf[1024];

const char *
util_verr(const char *fmt, va_list ap)
{
	int saved = errno;
	char *s;

	/* Formatted apart first: an argument may be the buffer itself. */
	if (vasprintf(&s, fmt, ap) == -1)
		util_oom(0);
	(void)util_strlcpy(util_errbuf, s, sizeof(util_errbuf));
	free(s);
	errno = saved;
	return util_errbuf;
}

const char *
util_err(const char *fmt, ...)
{
	va_list ap;
	const char *s;

	va_start(ap, fmt);
	s = util_verr(fmt, ap);
	va_end(ap);
	return s;
}

bool
util_strcaseeq(const char *a, const char *b)
{
	return strcasecmp(a, b) == 0;
}

char *
util_strlower(char *s)
{
	for (char *p = s; *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	return s;
}

size_t
util_esc_len(const char *s)
{
	size_t i = 1;

	if (s[0] != '2' && s[0] != '4' && s[0] != '5')
		return 0;
	for (int part = 0; part < 2; part++) {
		size_t nd = 0;
		if (s[i++] != '.')
			return 0;
		while (s[i] >= '0' && s[i] <= '9' && nd < 3)
			i++, nd++;
		if (nd == 0)
			return 0;
	}
	return s[i] >= '0' && s[i] <= '9' ? 0 : i;
}

size_t
util_utf8_len(const unsigned char *p, const unsigned char *lim)
{
	size_t n, i;
	unsigned char lo = 0x80, hi = 0xbf;

	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		n = 3;
		if (p[0] == 0xe0)
			lo = 0xa0;
		else if (p[0] == 0xed)
			hi = 0x9f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4;
		if (p[0] == 0xf0)
			lo = 0x90;
		else if (p[0] == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if ((size_t)(lim - p) < n)
		return 0;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

size_t
util_utf8_cut(const char *s, size_t n)
{
	while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	return n;
}

bool
util_is_ascii(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return false;
	return true;
}

bool
util_hdr_is(const char *line, size_t len, const char *name)
{
	size_t n = strlen(name);

	if (len <= n || strncasecmp(line, name, n) != 0)
		return false;
	while (n < len && (line[n] == ' ' || line[n] == '\t'))
		n++;
	return n < len && line[n] == ':';
}

/* Split "123xyz" into 123 and "xyz"; -1 when there is no number or it wraps. */
static int
util_parse_num(const char *s, uint64_t *n_out, const char **unit_out)
{
	uint64_t n = 0;
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return -1;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');
		if (n > (UINT64_MAX - d) / 10)
			return -1;
		n = n * 10 + d;
	}
	*n_out = n;
	*unit_out = p;
	return 0;
}

static int
util_scale(uint64_t n, uint64_t mul, uint64_t *out)
{
	if (mul != 0 && n > UINT64_MAX / mul)
		return -1;
	*out = n * mul;
	return 0;
}

int
util_parse_size(const char *s, uint64_t *out)
{
	static const struct { const char *unit; uint64_t mul; } units[] = {
		{ "", 1 }, { "b", 1 }, { "k", 1024 }, { "kb", 1024 },
		{ "m", 1024 * 1024 }, { "mb", 1024 * 1024 },
		{ "g", 1024ULL * 1024 * 1024 }, { "gb", 1024ULL * 1024 * 1024 },
		{ "t", 1024ULL * 1024 * 1024 * 1024 },
		{ "tb", 1024ULL * 1024 * 1024 * 1024 },
	};
	uint64_t n;
	const char *unit;

	if (util_parse_num(s, &n, &unit) == -1)
		return -1;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcasecmp(unit, units[i].unit) == 0)
			return util_scale(n, units[i].mul, out);
	return -1;
}

int
util_parse_duration_ms(const char *s, uint64_t *out)
{
	static const struct { const char *unit; uint64_t mul; } units[] = {
		{ "", 1000 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 },
		{ "min", 60000 }, { "h", 3600000 }, { "d", 86400000 },
	};
	uint64_t n;
	const char *unit;

	if (util_parse_num(s, &n, &unit) == -1)
		return -1;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcmp(unit, units[i].unit) == 0)
			return util_scale(n, units[i].mul, out);
	return -1;
}

uint64_t
util_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct timeval
util_timeval_ms(uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000),
	    (suseconds_t)(ms % 1000) * 1000 };

	return tv;
}

bool
util_random32(uint32_t *out)
{
	static __thread uint32_t supply[64];
	static __thread size_t left;

	if (left == 0) {
		if (getrandom(supply, sizeof(supply), GRND_NONBLOCK) !=
		    (ssize_t)sizeof(supply))
			return false;
		left = sizeof(supply) / sizeof(supply[0]);
	}
	*out = supply[--left];
	return true;
}

uint64_t
util_wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void
util_rfc5322_2digits(char *p, int v)
{
	p[0] = (char)('0' + v / 10);
	p[1] = (char)('0' + v % 10);
}

void
util_rfc5322_date(char *buf, size_t bufsz, int64_t t)
{
	static const char days[] = "SunMonTueWedThuFriSat";
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	time_t tt = (time_t)t;
	struct tm tm;

	if (localtime_r(&tt, &tm) == NULL) {
		if (bufsz > 0)
			buf[0] = '\0';
		return;
	}
	/* The C locale's "%a, %d %b %Y %H:%M:%S %z", by hand for a common
	 * year; strftime for the rest. */
	if (bufsz < 32 || tm.tm_year < 1000 - 1900 ||
	    tm.tm_year > 9999 - 1900) {
		if (strftime(buf, bufsz, "%a, %d %b %Y %H:%M:%S %z", &tm) == 0 &&
		    bufsz > 0)
			buf[0] = '\0';
		return;
	}
	long off = tm.tm_gmtoff / 60;
	char sign = off < 0 ? '-' : '+';
	if (off < 0)
		off = -off;
	int year = tm.tm_year + 1900;
	int zone = (int)(off / 60 % 100 * 100 + off % 60);
	memcpy(buf, days + 3 * tm.tm_wday, 3);
	memcpy(buf + 3, ", ", 2);
	util_rfc5322_2digits(buf + 5, tm.tm_mday);
	buf[7] = ' ';
	memcpy(buf + 8, months + 3 * tm.tm_mon, 3);
	buf[11] = ' ';
	util_rfc5322_2digits(buf + 12, year / 100);
	util_rfc5322_2digits(buf + 14, year % 100);
	buf[16] = ' ';
	util_rfc5322_2digits(buf + 17, tm.tm_hour);
	buf[19] = ':';
	util_rfc5322_2digits(buf + 20, tm.tm_min);
	buf[22] = ':';
	util_rfc5322_2digits(buf + 23, tm.tm_sec);
	buf[25] = ' ';
	buf[26] = sign;
	util_rfc5322_2digits(buf + 27, zone / 100);
	util_rfc5322_2digits(buf + 29, zone % 100);
	buf[31] = '\0';
}

/* The one escape of peer text in log lines; see log_safe_into(). */
static char *
util_log_escape(char *buf, size_t bufsz, const char *s, size_t len,
    bool word)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	ASSERT(bufsz >= 8);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		size_t need = (c > 0x20 || (c == 0x20 && !word)) && c < 0x7f &&
		    c != '"' && c != '\\' ? 1 : 4;
		if (o + need + 4 > bufsz) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if (need == 1) {
			buf[o++] = (char)c;
		} else {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 15];
		}
	}
	buf[o] = '\0';
	return buf;
}

char *
log_safe_into(char *buf, size_t bufsz, const char *s, size_t len)
{
	return util_log_escape(buf, bufsz, s, len, false);
}

char *
log_safe_word_into(char *buf, size_t bufsz, const char *s, size_t len)
{
	return util_log_escape(buf, bufsz, s, len, true);
}

void
util_buf_reserve(struct util_buf *b, size_t n)
{
	if (b->data == NULL || n >= b->cap - b->len) {	/* room for a NUL too */
		size_t cap = b->cap ? b->cap : 64;
		while (cap - b->len < n + 1)
			cap *= 2;
		b->data = xrealloc(b->data, cap);
		b->cap = cap;
	}
}

void
util_buf_add(struct util_buf *b, const void *p, size_t n)
{
	if (b->data == NULL || n >= b->cap - b->len)
		util_buf_reserve(b, n);
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
}

void
util_buf_addstr(struct util_buf *b, const char *s)
{
	util_buf_add(b, s, strlen(s));
}

void
util_buf_printf(struct util_buf *b, const char *fmt, ...)
{
	va_list ap;
	char *p;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&p, fmt, ap);
	va_end(ap);
	if (n == -1)
		util_oom(0);
	util_buf_add(b, p, (size_t)n);
	free(p);
}

char *
util_buf_cstr(struct util_buf *b)
{
	util_buf_add(b, "", 0);	/* ensures data and room for the NUL */
	b->data[b->len] = '\0';
	return b->data;
}

void
util_buf_reset(struct util_buf *b)
{
	b->len = 0;
}

void
util_buf_clear(struct util_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

bool
util_sockaddr_text(const struct sockaddr *sa, char *ip, int *port)
{
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, INET6_ADDRSTRLEN);
		if (port != NULL)
			*port = ntohs(s6->sin6_port);
		return true;
	}
	const struct sockaddr_in *s4 = (const void *)sa;
	/* Dotted quad by hand: inet_ntop goes through sprintf, once per
	 * connection or more. */
	const unsigned char *b = (const unsigned char *)&s4->sin_addr;
	char *p = ip;
	for (int i = 0; i < 4; i++) {
		if (b[i] >= 100)
			*p++ = (char)('0' + b[i] / 100);
		if (b[i] >= 10)
			*p++ = (char)('0' + b[i] / 10 % 10);
		*p++ = (char)('0' + b[i] % 10);
		*p++ = i < 3 ? '.' : '\0';
	}
	if (port != NULL)
		*port = ntohs(s4->sin_port);
	return false;
}

int
util_sockaddr_make(const char *ip, int port, struct sockaddr_storage *ss,
    unsigned *len)
{
	struct sockaddr_in *s4 = (void *)ss;
	struct sockaddr_in6 *s6 = (void *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		*len = sizeof(*s4);
	} else if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*s6);
	} else
		return -1;
	return 0;
}

bool
util_sockaddr_unmap(const struct sockaddr *sa, struct sockaddr_in *v4)
{
	const struct sockaddr_in6 *s6 = (const void *)sa;

	if (sa->sa_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
		return false;
	memset(v4, 0, sizeof(*v4));
	v4->sin_family = AF_INET;
	v4->sin_port = s6->sin6_port;
	memcpy(&v4->sin_addr, &s6->sin6_addr.s6_addr[12], 4);
	return true;
}

int
util_cidr_parse(const char *s, struct util_cidr *out)
{
	char addr[INET6_ADDRSTRLEN];
	const char *slash = strchr(s, '/');
	size_t alen = slash != NULL ? (size_t)(slash - s) : strlen(s);
	unsigned max, prefix;

	memset(out, 0, sizeof(*out));
	if (alen == 0 || alen >= sizeof(addr))
		return -1;
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	out->family = strchr(addr, ':') != NULL ? AF_INET6 : AF_INET;
	if (inet_pton(out->family, addr, out->net) != 1)
		return -1;
	max = out->family == AF_INET ? 32 : 128;
	prefix = max;
	if (slash != NULL) {
		const char *d = slash + 1;
		if (*d == '\0' || strlen(d) > 3 ||
		    d[strspn(d, "0123456789")] != '\0')
			return -1;
		prefix = (unsigned)atoi(d);
		if (prefix > max)
			return -1;
	}
	out->prefix = prefix;
	for (unsigned b = prefix; b < max; b++)
		out->net[b / 8] &= (unsigned char)~(0x80u >> (b % 8));
	return 0;
}

bool
util_cidr_contains(const struct util_cidr *c, const char *ip)
{
	unsigned char a[16];
	unsigned full = c->prefix / 8, rest = c->prefix % 8;

	if (ip == NULL || inet_pton(c->family, ip, a) != 1)
		return false;
	if (memcmp(a, c->net, full) != 0)
		return false;
	return rest == 0 || ((a[full] ^ c->net[full]) &
	    (unsigned char)(0xff00u >> rest)) == 0;
}

int
util_fsync_dir(const char *dirpath)
{
	int fd = open(dirpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc;

	if (fd == -1)
		return -1;
	rc = util_fsync(fd);
	close(fd);
	return rc;
}

/* mkdir -p giving what it makes to uid:gid; *failed_len_out as below. */
static int
util_mkdirs_at(const char *path, unsigned mode, uid_t uid, gid_t gid,
    size_t *failed_len_out)
{
	char *p = xstrdup(path);
	int rc = 0;

	for (char *s = p + 1; ; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		char c = *s;
		*s = '\0';
		if (mkdir(p, (mode_t)mode) == 0) {
			if ((uid != (uid_t)-1 || gid != (gid_t)-1) &&
			    chown(p, uid, gid) == -1) {
				rc = -1;
				break;
			}
		} else if (errno != EEXIST) {
			rc = -1;
			break;
		}
		*s = c;
		if (c == '\0')
			break;
	}
	*failed_len_out = strlen(p);
	free(p);
	return rc;
}

int
util_mkdirs(const char *path, unsigned mode)
{
	size_t n;

	return util_mkdirs_at(path, mode, (uid_t)-1, (gid_t)-1, &n);
}

int
util_mkdirs_where(const char *path, unsigned mode, size_t *failed_len_out)
{
	return util_mkdirs_at(path, mode, (uid_t)-1, (gid_t)-1,
	    failed_len_out);
}

int
util_mkdirs_owned(const char *path, unsigned mode, uid_t uid, gid_t gid)
{
	size_t n;

	return util_mkdirs_at(path, mode, uid, gid, &n);
}

int
util_account_ids(const char *user, const char *group, uid_t *uid_out,
    gid_t *gid_out, const char **err_out)
{
	struct passwd *pw;
	struct group *gr;

	if ((pw = getpwnam(user)) == NULL) {
		*err_out = util_err("user %s: no such user", user);
		return -1;
	}
	*uid_out = pw->pw_uid;
	*gid_out = pw->pw_gid;	/* the user's primary group by default */
	if (group != NULL) {
		if ((gr = getgrnam(group)) == NULL) {
			*err_out = util_err("group %s: no such group", group);
			return -1;
		}
		*gid_out = gr->gr_gid;
	}
	return 0;
}
