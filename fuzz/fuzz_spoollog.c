/*
 * fuzz/fuzz_spoollog.c: a damaged spool log.  The input is one record
 * whose length and checksum are made right here, and its magic one of the
 * kinds' (copies, a spooled message, a removal; the input's first byte
 * picks it): a checksum would stop nearly every input before the lengths
 * inside are read.  It is decoded, then the input as it is, scanned as a
 * whole log image.  A record decoded must encode back to the same bytes.
 */
#include "spool/spool_private.h"
#include "util/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fz_cb(const struct spool_logrec *r, void *arg)
{
	(void)arg;
	if (r->ncopies > 0 && r->copies[r->ncopies - 1].addr == NULL)
		abort();
}

static void
fz_round_trip(const struct spool_logrec *r, const unsigned char *in)
{
	size_t len = spool_logrec_size(r);
	unsigned char *out;

	if (len != r->len)
		abort();
	out = xmalloc(len);
	spool_logrec_encode(r, out);
	spool_logrec_seal(out, r->seq, 1);
	if (memcmp(out, in, len) != 0)
		abort();
	free(out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len = size & ~(size_t)7;
	unsigned char *b;
	struct spool_logrec r;
	uint32_t crc;

	if (len >= 48 && len < (1u << 20)) {
		b = xmalloc(len);
		memcpy(b, data, len);
		memcpy(b, data[0] % 3 == 0 ? "PSLR" : data[0] % 3 == 1 ?
		    "PSLS" : "PSLD", 4);
		b[4] = (unsigned char)len;
		b[5] = (unsigned char)(len >> 8);
		b[6] = (unsigned char)(len >> 16);
		b[7] = 0;
		crc = spool_crc32c(0, b + 24, len - 24);
		for (int i = 0; i < 4; i++)	/* little-endian, as stored */
			b[20 + i] = (unsigned char)(crc >> (8 * i));
		spool_logrec_seal(b, 1, 1);
		if (spool_logrec_decode(b, len, 1, 1, &r) == 1) {
			fz_round_trip(&r, b);
			spool_logrec_clear(&r);
		}
		free(b);
	}
	(void)spool_log_scan(data, size, 0, 0, 1, 1, fz_cb, NULL, NULL);
	return 0;
}
