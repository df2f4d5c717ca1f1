/*
 * proxy/header.c: the PROXY protocol header (HAProxy's proxy-protocol.txt,
 * versions 1 and 2) a proxy sends first on its upstream connection, so the
 * upstream sees the client's address instead of ours.  Pure: it writes
 * bytes, the connection sends them.
 */
#include "proxy/proxy_private.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* The version 2 signature (proxy-protocol.txt 2.2). */
static const unsigned char proxy_v2_sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a,
	0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

/* ip as 4 or 16 octets; the family, or 0 when it is no numeric address. */
static int
proxy_hdr_addr(const char *ip, unsigned char *out)
{
	if (inet_pton(AF_INET, ip, out) == 1)
		return AF_INET;
	if (inet_pton(AF_INET6, ip, out) == 1)
		return AF_INET6;
	return 0;
}

static size_t
proxy_hdr_v1(int af, const struct proxy_hdr_addrs *a, char *buf,
    size_t bufsz)
{
	int n;

	if (af == 0)
		n = snprintf(buf, bufsz, "PROXY UNKNOWN\r\n");
	else
		n = snprintf(buf, bufsz, "PROXY %s %s %s %d %d\r\n",
		    af == AF_INET ? "TCP4" : "TCP6", a->src_ip, a->dst_ip,
		    a->src_port, a->dst_port);
	return n > 0 && (size_t)n < bufsz ? (size_t)n : 0;
}

static size_t
proxy_hdr_v2(int af, const unsigned char *src, const unsigned char *dst,
    const struct proxy_hdr_addrs *a, char *buf, size_t bufsz)
{
	size_t alen = af == AF_INET ? 4 : af == AF_INET6 ? 16 : 0;
	size_t len = alen == 0 ? 0 : 2 * alen + 4;
	unsigned char *p = (unsigned char *)buf;

	if (bufsz < 16 + len)
		return 0;
	memcpy(p, proxy_v2_sig, 12);
	/* Version 2; PROXY, or LOCAL when there is no address to tell. */
	p[12] = alen == 0 ? 0x20 : 0x21;
	/* TCP over IPv4 (0x11) or IPv6 (0x21); UNSPEC with LOCAL. */
	p[13] = alen == 4 ? 0x11 : alen == 16 ? 0x21 : 0x00;
	p[14] = (unsigned char)(len >> 8);
	p[15] = (unsigned char)len;
	if (alen == 0)
		return 16;
	memcpy(p + 16, src, alen);
	memcpy(p + 16 + alen, dst, alen);
	p[16 + 2 * alen] = (unsigned char)(a->src_port >> 8);
	p[17 + 2 * alen] = (unsigned char)a->src_port;
	p[18 + 2 * alen] = (unsigned char)(a->dst_port >> 8);
	p[19 + 2 * alen] = (unsigned char)a->dst_port;
	return 16 + len;
}

size_t
proxy_header_make(int version, const struct proxy_hdr_addrs *a, char *buf,
    size_t bufsz)
{
	unsigned char src[16], dst[16];
	int af = proxy_hdr_addr(a->src_ip, src);

	/* Both ends in one family, or the header says nothing of them. */
	if (af != proxy_hdr_addr(a->dst_ip, dst) || a->src_port < 0 ||
	    a->src_port > 65535 || a->dst_port < 0 || a->dst_port > 65535)
		af = 0;
	return version == 1 ? proxy_hdr_v1(af, a, buf, bufsz) :
	    proxy_hdr_v2(af, src, dst, a, buf, bufsz);
}
