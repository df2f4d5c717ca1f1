/*
 * fuzz/fuzz_proxyhdr.c: util_proxyhdr_parse() on any bytes, checking what
 * each answer promises: a whole header lies inside the input and within
 * its version's bound, its addresses make the same header for a sender
 * (util_proxyhdr_set), and it writes back (both versions) to a header that
 * parses to the same addresses; "more, please" never comes for input past
 * the bounds; a refusal says why.
 */
#include "util/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_round_trip(const struct util_proxyhdr *h)
{
	unsigned char buf[256];
	struct util_proxyhdr back;
	const char *why = NULL;

	/* What a sender makes of the parsed addresses is the same header. */
	util_proxyhdr_set(&back, h->src_ip, h->src_port, h->dst_ip,
	    h->dst_port);
	if (h->kind != UTIL_PROXYHDR_LOCAL && (back.kind != h->kind ||
	    strcmp(back.src_ip, h->src_ip) != 0 ||
	    strcmp(back.dst_ip, h->dst_ip) != 0))
		abort();
	for (int v = 1; v <= 2; v++) {
		size_t n = util_proxyhdr_write(h, v, buf, sizeof(buf));
		if (n == 0 || util_proxyhdr_parse(buf, n, &back, &why) != 1 ||
		    back.len != n || back.kind != h->kind)
			abort();
		if (h->kind != UTIL_PROXYHDR_LOCAL &&
		    (strcmp(back.src_ip, h->src_ip) != 0 ||
		    strcmp(back.dst_ip, h->dst_ip) != 0 ||
		    back.src_port != h->src_port ||
		    back.dst_port != h->dst_port))
			abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct util_proxyhdr h;
	const char *why = NULL;
	int rc = util_proxyhdr_parse(data, size, &h, &why);

	switch (rc) {
	case 1:
		if (h.len == 0 || h.len > size || (h.version == 1 &&
		    h.len > UTIL_PROXYHDR_V1_MAX) || (h.version == 2 &&
		    h.len > UTIL_PROXYHDR_MAX) || (h.version != 1 &&
		    h.version != 2))
			abort();
		if (h.kind != UTIL_PROXYHDR_LOCAL &&
		    (memchr(h.src_ip, '\0', sizeof(h.src_ip)) == NULL ||
		    h.src_ip[0] == '\0' || h.dst_ip[0] == '\0'))
			abort();
		fuzz_round_trip(&h);
		/* The bytes after the header change nothing. */
		if (util_proxyhdr_parse(data, h.len, &h, &why) != 1)
			abort();
		break;
	case 0:
		if (size >= UTIL_PROXYHDR_MAX)
			abort();
		break;
	case -1:
		if (why == NULL)
			abort();
		break;
	default:
		abort();
	}
	return 0;
}
