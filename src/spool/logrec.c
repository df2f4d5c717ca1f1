/*
 * spool/logrec.c: the records of the spool log (log.c), pure: their
 * encoding, their checks, the scan of a log image from its checkpoint and
 * the header block.  No I/O; any byte sequence is safe to decode.
 *
 * A record, little-endian, padded to 8 bytes:
 *	0  u32 magic: its kind	4  u32 length (whole record)
 *	8  u64 sequence		16 u32 epoch	20 u32 checksum
 *	24 i64 received		32 u16 qid length, u16 copies, u32 header
 *	40 u32 sender length	44 u32 content length
 *	48 qid, sender, the copies' header line ("Return-Path: <...>\n"),
 *	   each copy (u16 path length, u16 address length, path, address),
 *	   the content, zeros up to the length.
 * The checksum is a CRC-32C over bytes 24..length, continued over bytes
 * 0..24 with the checksum field zero: the writer sums the body before it
 * knows its sequence number.
 *
 * The kinds: "PSLR", a message's Maildir copies (above); "PSLS", a
 * message committed into the spool: no copies and no sender, the header
 * line's place holds the envelope file's bytes, then the content file's;
 * "PSLD", a spooled message removed: the queue id alone; "PSLA", a line
 * appended to a spooled message's done/<qid> (the header line's place
 * holds it), one written once per message.
 */
#include "spool/spool_private.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define LR_MAGIC	0x524c5350u	/* "PSLR": copies */
#define LR_MAGIC_SPOOLED 0x534c5350u	/* "PSLS" */
#define LR_MAGIC_REMOVED 0x444c5350u	/* "PSLD" */
#define LR_MAGIC_LINE	0x414c5350u	/* "PSLA" */
#define LR_FIXED	SPOOL_LOGREC_FIXED
#define LH_MAGIC	0x484c5350u	/* "PSLH" */

static uint32_t lr_table[256];

static void
lr_table_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		lr_table[i] = c;
	}
}

#if defined(__x86_64__)
/* The same sum with the CPU's crc32 instruction (SSE 4.2), 8 bytes a step. */
__attribute__((target("sse4.2"))) static uint32_t
lr_crc_hw(uint32_t crc, const unsigned char *p, size_t len)
{
	uint64_t c = crc;

	for (; len >= 8; p += 8, len -= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
	}
	crc = (uint32_t)c;
	while (len-- > 0)
		crc = __builtin_ia32_crc32qi(crc, *p++);
	return crc;
}
#endif

uint32_t
spool_crc32c(uint32_t crc, const void *buf, size_t len)
{
#if defined(__x86_64__)
	if (__builtin_cpu_supports("sse4.2"))
		return ~lr_crc_hw(~crc, buf, len);
#endif
	return spool_crc32c_table(crc, buf, len);
}

uint32_t
spool_crc32c_table(uint32_t crc, const void *buf, size_t len)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	const unsigned char *p = buf;

	pthread_once(&once, lr_table_init);
	crc = ~crc;
	while (len-- > 0)
		crc = lr_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static void
put16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void
put32(unsigned char *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static void
put64(unsigned char *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static uint16_t
get16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t
get32(const unsigned char *p)
{
	return get16(p) | (uint32_t)get16(p + 2) << 16;
}

static uint64_t
get64(const unsigned char *p)
{
	return get32(p) | (uint64_t)get32(p + 4) << 32;
}

size_t
spool_logrec_size(const struct spool_logrec *r)
{
	size_t n = LR_FIXED + strlen(r->qid) + strlen(r->sender) +
	    strlen(r->hdr) + r->content_len;

	for (size_t i = 0; i < r->ncopies; i++)
		n += 4 + strlen(r->copies[i].path) + strlen(r->copies[i].addr);
	return (n + 7) & ~(size_t)7;
}

size_t
spool_logrec_spooled_size(size_t qid_len, size_t env_len, size_t content_len)
{
	return (LR_FIXED + qid_len + env_len + content_len + 7) & ~(size_t)7;
}

static unsigned char *
lr_put(unsigned char *p, const void *s, size_t len)
{
	memcpy(p, s, len);
	return p + len;
}

void
spool_logrec_encode(const struct spool_logrec *r, unsigned char *out)
{
	size_t len = spool_logrec_size(r);
	unsigned char *p = out + LR_FIXED;

	/* Only what no field covers: the content is most of a record. */
	memset(out, 0, LR_FIXED);
	put32(out, r->kind == SPOOL_LR_SPOOLED ? LR_MAGIC_SPOOLED :
	    r->kind == SPOOL_LR_REMOVED ? LR_MAGIC_REMOVED :
	    r->kind == SPOOL_LR_LINE ? LR_MAGIC_LINE : LR_MAGIC);
	put32(out + 4, (uint32_t)len);
	put64(out + 24, (uint64_t)r->received);
	put16(out + 32, (uint16_t)strlen(r->qid));
	put16(out + 34, (uint16_t)r->ncopies);
	put32(out + 36, (uint32_t)strlen(r->hdr));
	put32(out + 40, (uint32_t)strlen(r->sender));
	put32(out + 44, (uint32_t)r->content_len);
	p = lr_put(p, r->qid, strlen(r->qid));
	p = lr_put(p, r->sender, strlen(r->sender));
	p = lr_put(p, r->hdr, strlen(r->hdr));
	for (size_t i = 0; i < r->ncopies; i++) {
		const struct spool_logcopy *c = &r->copies[i];
		put16(p, (uint16_t)strlen(c->path));
		put16(p + 2, (uint16_t)strlen(c->addr));
		p = lr_put(p + 4, c->path, strlen(c->path));
		p = lr_put(p, c->addr, strlen(c->addr));
	}
	if (r->content_len > 0)
		p = lr_put(p, r->content, r->content_len);
	memset(p, 0, (size_t)(out + len - p));	/* the padding */
	put32(out + 20, spool_crc32c(0, out + 24, len - 24));
}

void
spool_logrec_seal(unsigned char *rec, uint64_t seq, uint32_t epoch)
{
	uint32_t body = get32(rec + 20);

	put64(rec + 8, seq);
	put32(rec + 16, epoch);
	put32(rec + 20, 0);
	put32(rec + 20, spool_crc32c(body, rec, 24));
}

/* A NUL-terminated copy of len bytes at *pp, which moves past them. */
static char *
lr_str(const unsigned char **pp, size_t len)
{
	char *s = xmalloc(len + 1);

	memcpy(s, *pp, len);
	s[len] = '\0';
	*pp += len;
	return s;
}

void
spool_logrec_clear(struct spool_logrec *r)
{
	for (size_t i = 0; i < r->ncopies; i++) {
		free(r->copies[i].path);
		free(r->copies[i].addr);
	}
	free(r->copies);
	free(r->sender);
	free(r->hdr);
	*r = (struct spool_logrec){ 0 };
}

/* The kind of the record at rec (LR_FIXED bytes); false: no record. */
static bool
lr_kind(const unsigned char *rec, enum spool_logrec_kind *kind_out)
{
	bool bare = get16(rec + 34) == 0 && get32(rec + 40) == 0;

	switch (get32(rec)) {
	case LR_MAGIC:
		*kind_out = SPOOL_LR_COPIES;
		return true;
	case LR_MAGIC_SPOOLED:	/* no copies, no sender */
		*kind_out = SPOOL_LR_SPOOLED;
		return bare;
	case LR_MAGIC_REMOVED:	/* the queue id alone */
		*kind_out = SPOOL_LR_REMOVED;
		return bare && get32(rec + 36) == 0 && get32(rec + 44) == 0;
	case LR_MAGIC_LINE:	/* the queue id and the line */
		*kind_out = SPOOL_LR_LINE;
		return bare && get32(rec + 44) == 0;
	}
	return false;
}

/* Do the lengths inside rec (len bytes, checksum good) add up? */
static bool
lr_fits(const unsigned char *rec, size_t len)
{
	size_t n = LR_FIXED + (size_t)get16(rec + 32) + get32(rec + 36) +
	    get32(rec + 40) + get32(rec + 44);
	const unsigned char *p = rec + LR_FIXED + get16(rec + 32) +
	    get32(rec + 40) + get32(rec + 36);

	if (get16(rec + 32) == 0 || get16(rec + 32) >= SPOOL_QID_MAX ||
	    n > len)
		return false;
	for (size_t i = 0; i < get16(rec + 34); i++) {
		size_t c;
		if (n + 4 > len)
			return false;
		c = 4 + (size_t)get16(p) + get16(p + 2);
		n += c;
		p += c;
		if (n > len)
			return false;
	}
	/* Exactly as encode made it: padded with zeros to the length. */
	if (((n + 7) & ~(size_t)7) != len)
		return false;
	for (; n < len; n++)
		if (rec[n] != 0)
			return false;
	return true;
}

/* Does no string of r hold a NUL (its length as stored)? */
static bool
lr_strings_ok(const struct spool_logrec *r, const unsigned char *rec)
{
	const unsigned char *p = rec + LR_FIXED + get16(rec + 32) +
	    get32(rec + 40) + get32(rec + 36);

	if (strlen(r->qid) != get16(rec + 32) ||
	    strlen(r->sender) != get32(rec + 40) ||
	    strlen(r->hdr) != get32(rec + 36))
		return false;
	for (size_t i = 0; i < r->ncopies; i++) {
		if (strlen(r->copies[i].path) != get16(p) ||
		    strlen(r->copies[i].addr) != get16(p + 2))
			return false;
		p += 4 + (size_t)get16(p) + get16(p + 2);
	}
	return true;
}

int
spool_logrec_decode(const unsigned char *buf, size_t avail,
    uint64_t seq, uint32_t epoch, struct spool_logrec *out)
{
	unsigned char head[24];
	const unsigned char *p;
	size_t len;

	*out = (struct spool_logrec){ 0 };
	if (avail < LR_FIXED || !lr_kind(buf, &out->kind))
		return 0;
	len = get32(buf + 4);
	if (len < LR_FIXED || len > avail || len % 8 != 0 ||
	    get64(buf + 8) != seq || get32(buf + 16) != epoch)
		return 0;
	memcpy(head, buf, sizeof(head));
	put32(head + 20, 0);
	if (spool_crc32c(spool_crc32c(0, buf + 24, len - 24), head, 24) !=
	    get32(buf + 20) || !lr_fits(buf, len))
		return 0;
	out->seq = seq;
	out->len = len;
	out->received = (int64_t)get64(buf + 24);
	out->ncopies = get16(buf + 34);
	out->content_len = get32(buf + 44);
	p = buf + LR_FIXED;
	memcpy(out->qid, p, get16(buf + 32));
	p += get16(buf + 32);
	out->sender = lr_str(&p, get32(buf + 40));
	out->hdr = lr_str(&p, get32(buf + 36));
	out->copies = xcalloc(out->ncopies + 1, sizeof(*out->copies));
	for (size_t i = 0; i < out->ncopies; i++) {
		size_t pl = get16(p), al = get16(p + 2);
		p += 4;
		out->copies[i].path = lr_str(&p, pl);
		out->copies[i].addr = lr_str(&p, al);
	}
	out->content = (const char *)p;
	if (!lr_strings_ok(out, buf)) {
		spool_logrec_clear(out);
		return 0;
	}
	return 1;
}

size_t
spool_log_scan(const unsigned char *img, size_t size, size_t data_off,
    size_t off, uint64_t seq, uint32_t epoch,
    void (*cb)(const struct spool_logrec *r, void *arg), void *arg,
    size_t *end_out)
{
	struct spool_logrec r;
	size_t n = 0;

	if (off < data_off || off > size)
		off = data_off;
	for (;;) {
		/* The next record follows, or starts the area again. */
		if (spool_logrec_decode(img + off, size - off, seq, epoch,
		    &r) != 1) {
			if (off == data_off || spool_logrec_decode(img +
			    data_off, size - data_off, seq, epoch, &r) != 1)
				break;
			off = data_off;
		}
		cb(&r, arg);
		off += r.len;
		seq++;
		n++;
		spool_logrec_clear(&r);
	}
	if (end_out != NULL)
		*end_out = off;
	return n;
}

void
spool_loghdr_encode(const struct spool_loghdr *h, unsigned char out[64])
{
	memset(out, 0, 64);
	put32(out, LH_MAGIC);
	put32(out + 4, h->epoch);
	put64(out + 8, h->gen);
	put64(out + 16, h->seq);
	put64(out + 24, h->off);
	put64(out + 32, h->size);
	put32(out + 60, spool_crc32c(0, out, 60));
}

int
spool_loghdr_decode(const unsigned char in[64], struct spool_loghdr *out)
{
	if (get32(in) != LH_MAGIC || get32(in + 60) !=
	    spool_crc32c(0, in, 60))
		return 0;
	out->epoch = get32(in + 4);
	out->gen = get64(in + 8);
	out->seq = get64(in + 16);
	out->off = get64(in + 24);
	out->size = get64(in + 32);
	return 1;
}
