/*
 * util/proxyhdr.c: the PROXY protocol header (HAProxy's proxy-protocol.txt,
 * version 1 text and version 2 binary) that a TCP load balancer puts in
 * front of a connection: parsed from bytes, and written.  Pure: no
 * sockets, no clock; the caller reads and writes the bytes.
 */
#include "util/util.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

/* proxy-protocol.txt 2.2: the twelve bytes that open a version 2 header. */
static const unsigned char util_pph_sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};
static const char util_pph_v1_sig[] = "PROXY ";
#define UTIL_PPH_V1_PREFIX	(sizeof(util_pph_v1_sig) - 1)

/* 2.2: the 13th byte (version 2, command) and the 14th (family, protocol). */
#define UTIL_PPH_CMD_LOCAL	0x20
#define UTIL_PPH_CMD_PROXY	0x21
#define UTIL_PPH_TCP4		0x11
#define UTIL_PPH_TCP6		0x21

/* A decimal port without leading zeros (2.1), 0..65535; -1 if not. */
static int
util_pph_port(const char *s, size_t len)
{
	unsigned v = 0;

	if (len == 0 || len > 5 || (s[0] == '0' && len > 1))
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	return v <= 65535 ? (int)v : -1;
}

/* One numeric address of family af (len bytes, no NUL) into ip. */
static bool
util_pph_addr(int af, const char *s, size_t len, char *ip, size_t ipsz)
{
	unsigned char bin[16];
	char tmp[UTIL_PROXYHDR_IP_MAX];

	if (len == 0 || len >= sizeof(tmp))
		return false;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	/* glibc's inet_pton refuses an IPv4 part with a leading zero. */
	return inet_pton(af, tmp, bin) == 1 &&
	    inet_ntop(af, bin, ip, (socklen_t)ipsz) != NULL;
}

/*
 * The fields of a version 1 line after "PROXY " (no CRLF): TCP4 or TCP6
 * and exactly four more, one space apart; or UNKNOWN and anything.
 */
static int
util_pph_v1_fields(const char *p, size_t len, struct util_proxyhdr *h,
    const char **why_out)
{
	const char *f[5], *end = p + len;
	size_t fl[5], n = 0;
	int af, sport, dport;

	while (n < 5) {
		const char *sp = memchr(p, ' ', (size_t)(end - p));
		f[n] = p;
		fl[n++] = (size_t)((sp != NULL ? sp : end) - p);
		if (sp == NULL)
			break;
		p = sp + 1;
	}
	if (fl[0] == 7 && memcmp(f[0], "UNKNOWN", 7) == 0) {
		/* 2.1: the rest of an UNKNOWN line is ignored. */
		h->kind = UTIL_PROXYHDR_LOCAL;
		return 1;
	}
	if (fl[0] != 4 || (memcmp(f[0], "TCP4", 4) != 0 &&
	    memcmp(f[0], "TCP6", 4) != 0)) {
		*why_out = "version 1: the protocol is not TCP4, TCP6 or "
		    "UNKNOWN";
		return -1;
	}
	if (n != 5 || f[4] + fl[4] != end) {
		*why_out = "version 1: expected two addresses and two ports, "
		    "one space apart";
		return -1;
	}
	af = f[0][3] == '4' ? AF_INET : AF_INET6;
	h->kind = af == AF_INET ? UTIL_PROXYHDR_TCP4 : UTIL_PROXYHDR_TCP6;
	if (!util_pph_addr(af, f[1], fl[1], h->src_ip, sizeof(h->src_ip)) ||
	    !util_pph_addr(af, f[2], fl[2], h->dst_ip, sizeof(h->dst_ip))) {
		*why_out = "version 1: an address is not a numeric address "
		    "of the family";
		return -1;
	}
	if ((sport = util_pph_port(f[3], fl[3])) == -1 ||
	    (dport = util_pph_port(f[4], fl[4])) == -1) {
		*why_out = "version 1: a port is not a number in 0..65535";
		return -1;
	}
	h->src_port = (uint16_t)sport;
	h->dst_port = (uint16_t)dport;
	return 1;
}

/* 2.1: one line of at most 107 bytes ending in CRLF. */
static int
util_pph_v1(const char *s, size_t len, struct util_proxyhdr *h,
    const char **why_out)
{
	size_t max = len < UTIL_PROXYHDR_V1_MAX ? len : UTIL_PROXYHDR_V1_MAX;

	for (size_t i = UTIL_PPH_V1_PREFIX; i < max; i++) {
		if (s[i] == '\n') {
			*why_out = "version 1: a line ending in a bare LF";
			return -1;
		}
		if (s[i] != '\r' && (s[i] < 0x20 || s[i] > 0x7e)) {
			*why_out = "version 1: a byte that is not printable "
			    "ASCII";
			return -1;
		}
		if (s[i] != '\r')
			continue;
		if (i + 2 > UTIL_PROXYHDR_V1_MAX)
			break;		/* the LF would be byte 108 */
		if (i + 1 == len)
			return 0;
		if (s[i + 1] != '\n') {
			*why_out = "version 1: a bare CR in the line";
			return -1;
		}
		h->version = 1;
		h->len = i + 2;
		return util_pph_v1_fields(s + UTIL_PPH_V1_PREFIX,
		    i - UTIL_PPH_V1_PREFIX, h, why_out);
	}
	if (len < UTIL_PROXYHDR_V1_MAX)
		return 0;
	*why_out = "version 1: no CRLF within 107 bytes";
	return -1;
}

/* The addresses of a v2 PROXY command: TCP over IPv4 or IPv6. */
static int
util_pph_v2_addrs(const unsigned char *a, size_t alen, unsigned fam,
    struct util_proxyhdr *h, const char **why_out)
{
	size_t n = fam == UTIL_PPH_TCP4 ? 4 : 16;
	int af = fam == UTIL_PPH_TCP4 ? AF_INET : AF_INET6;

	if (alen < 2 * n + 4) {
		*why_out = "version 2: the address block is too short for its "
		    "family";
		return -1;
	}
	h->kind = af == AF_INET ? UTIL_PROXYHDR_TCP4 : UTIL_PROXYHDR_TCP6;
	inet_ntop(af, a, h->src_ip, sizeof(h->src_ip));
	inet_ntop(af, a + n, h->dst_ip, sizeof(h->dst_ip));
	h->src_port = (uint16_t)(a[2 * n] << 8 | a[2 * n + 1]);
	h->dst_port = (uint16_t)(a[2 * n + 2] << 8 | a[2 * n + 3]);
	return 1;
}

/* 2.2: 16 bytes, then as many as the length field says. */
static int
util_pph_v2(const unsigned char *b, size_t len, struct util_proxyhdr *h,
    const char **why_out)
{
	size_t alen, total;
	unsigned cmd, fam;

	if (len < 16)
		return 0;
	cmd = b[12];
	fam = b[13];
	alen = (size_t)b[14] << 8 | b[15];
	total = 16 + alen;
	if ((cmd & 0xf0) != 0x20) {
		*why_out = "version 2: the version is not 2";
		return -1;
	}
	if (cmd != UTIL_PPH_CMD_LOCAL && cmd != UTIL_PPH_CMD_PROXY) {
		*why_out = "version 2: the command is neither LOCAL nor PROXY";
		return -1;
	}
	/* Families UNSPEC, INET, INET6, UNIX; protocols UNSPEC, STREAM, DGRAM. */
	if (fam >> 4 > 3 || (fam & 0x0f) > 2) {
		*why_out = "version 2: an unknown address family or protocol";
		return -1;
	}
	if (total > UTIL_PROXYHDR_MAX) {
		*why_out = "version 2: longer than the bound";
		return -1;
	}
	if (len < total)
		return 0;
	h->version = 2;
	h->len = total;
	/*
	 * LOCAL (a health check), and what an SMTP server cannot use (no
	 * address family, UNIX sockets, datagrams): the real peer stays.
	 */
	if (cmd == UTIL_PPH_CMD_LOCAL || (fam != UTIL_PPH_TCP4 &&
	    fam != UTIL_PPH_TCP6)) {
		h->kind = UTIL_PROXYHDR_LOCAL;
		return 1;
	}
	/* TLVs after the addresses are skipped (2.2: the receiver may). */
	return util_pph_v2_addrs(b + 16, alen, fam, h, why_out);
}

int
util_proxyhdr_parse(const void *buf, size_t len, struct util_proxyhdr *out,
    const char **why_out)
{
	const unsigned char *b = buf;
	size_t n;

	memset(out, 0, sizeof(*out));
	n = len < sizeof(util_pph_sig) ? len : sizeof(util_pph_sig);
	if (memcmp(b, util_pph_sig, n) == 0)
		return len < sizeof(util_pph_sig) ? 0 :
		    util_pph_v2(b, len, out, why_out);
	n = len < UTIL_PPH_V1_PREFIX ? len : UTIL_PPH_V1_PREFIX;
	if (memcmp(b, util_pph_v1_sig, n) == 0)
		return len < UTIL_PPH_V1_PREFIX ? 0 :
		    util_pph_v1((const char *)b, len, out, why_out);
	*why_out = "no PROXY protocol signature";
	return -1;
}

/* The family of the numeric address ip, or 0. */
static int
util_pph_family(const char *ip)
{
	unsigned char a[16];

	if (ip == NULL || strlen(ip) >= UTIL_PROXYHDR_IP_MAX)
		return 0;
	if (inet_pton(AF_INET, ip, a) == 1)
		return AF_INET;
	return inet_pton(AF_INET6, ip, a) == 1 ? AF_INET6 : 0;
}

void
util_proxyhdr_set(struct util_proxyhdr *out, const char *src_ip,
    int src_port, const char *dst_ip, int dst_port)
{
	int af = util_pph_family(src_ip);

	memset(out, 0, sizeof(*out));
	out->kind = UTIL_PROXYHDR_LOCAL;
	/* Both ends in one family, or the header says nothing of them. */
	if (af == 0 || af != util_pph_family(dst_ip) || src_port < 0 ||
	    src_port > 65535 || dst_port < 0 || dst_port > 65535)
		return;
	out->kind = af == AF_INET ? UTIL_PROXYHDR_TCP4 : UTIL_PROXYHDR_TCP6;
	util_strlcpy(out->src_ip, src_ip, sizeof(out->src_ip));
	util_strlcpy(out->dst_ip, dst_ip, sizeof(out->dst_ip));
	out->src_port = (uint16_t)src_port;
	out->dst_port = (uint16_t)dst_port;
}

/* The binary form of h's addresses into a (16 or 4 bytes each). */
static bool
util_pph_bin(const struct util_proxyhdr *h, unsigned char *a, size_t n)
{
	int af = h->kind == UTIL_PROXYHDR_TCP4 ? AF_INET : AF_INET6;

	return inet_pton(af, h->src_ip, a) == 1 &&
	    inet_pton(af, h->dst_ip, a + n) == 1;
}

size_t
util_proxyhdr_write(const struct util_proxyhdr *h, int version, void *buf,
    size_t bufsz)
{
	unsigned char a[36], *b = buf;
	size_t n = h->kind == UTIL_PROXYHDR_TCP4 ? 4 : 16, alen;

	if (h->kind != UTIL_PROXYHDR_LOCAL && !util_pph_bin(h, a, n))
		return 0;
	if (version == 1) {
		int w = h->kind == UTIL_PROXYHDR_LOCAL ?
		    snprintf(buf, bufsz, "PROXY UNKNOWN\r\n") :
		    snprintf(buf, bufsz, "PROXY %s %s %s %u %u\r\n",
		    h->kind == UTIL_PROXYHDR_TCP4 ? "TCP4" : "TCP6", h->src_ip,
		    h->dst_ip, h->src_port, h->dst_port);
		return w > 0 && (size_t)w < bufsz ? (size_t)w : 0;
	}
	alen = h->kind == UTIL_PROXYHDR_LOCAL ? 0 : 2 * n + 4;
	if (version != 2 || bufsz < 16 + alen)
		return 0;
	memcpy(b, util_pph_sig, sizeof(util_pph_sig));
	b[12] = h->kind == UTIL_PROXYHDR_LOCAL ? UTIL_PPH_CMD_LOCAL :
	    UTIL_PPH_CMD_PROXY;
	b[13] = h->kind == UTIL_PROXYHDR_LOCAL ? 0x00 :
	    h->kind == UTIL_PROXYHDR_TCP4 ? UTIL_PPH_TCP4 : UTIL_PPH_TCP6;
	b[14] = (unsigned char)(alen >> 8);
	b[15] = (unsigned char)alen;
	if (alen > 0) {
		memcpy(b + 16, a, 2 * n);
		b[16 + 2 * n] = (unsigned char)(h->src_port >> 8);
		b[17 + 2 * n] = (unsigned char)h->src_port;
		b[18 + 2 * n] = (unsigned char)(h->dst_port >> 8);
		b[19 + 2 * n] = (unsigned char)h->dst_port;
	}
	return 16 + alen;
}
