/*
 * fuzz/fuzz_mx.c: where mail for a domain goes.  The first octet chooses:
 * even, the rest is a DNS server's answer to an MX query (any octets, as
 * the UDP socket takes them); odd, the rest is an "mx-hosts" table value.
 * The hosts that come out must have a terminated name, a preference of 16
 * bits (a port of 1..65535 for table values) and be in preference order.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"
#include "util/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fz_check(const struct deliver_mx_host *h, size_t n, bool table)
{
	for (size_t i = 0; i < n; i++) {
		if (memchr(h[i].name, '\0', sizeof(h[i].name)) == NULL ||
		    memchr(h[i].addr, '\0', sizeof(h[i].addr)) == NULL)
			abort();
		if (h[i].pref < 0 || (!table && h[i].pref > 65535))
			abort();
		if (table && (h[i].port < 1 || h[i].port > 65535 ||
		    h[i].name[0] == '\0'))
			abort();
		if (i > 0 && h[i - 1].pref > h[i].pref)
			abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct deliver_mx_host *h = NULL;
	const char *err = NULL;
	size_t n = 0;

	if (size < 1)
		return 0;
	if ((data[0] & 1) == 0) {
		if (deliver_mx_answer(data + 1, size - 1, &h, &n) == 0)
			fz_check(h, n, false);
	} else {
		char *v = xstrndup((const char *)data + 1, size - 1);
		int rc = deliver_mx_hosts(v, 25, &h, &n, &err);
		if (rc == 0)
			fz_check(h, n, true);
		else if (err == NULL)
			abort();
		free(v);
	}
	free(h);
	return 0;
}
