/*
 * fuzz/fuzz_addr.c: smtp_addr_parse() on any bytes, checking what a
 * success promises: limits (RFC 5321 4.5.3.1), a lower-case domain,
 * end_out inside the input just after '>', an address in its canonical
 * form (it parses again to itself).  Also the MAIL and BDAT parameter
 * parsers on the bytes after the path.
 */
#include "smtp/smtp.h"
#include "smtp/smtp_private.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The canonical form is a fixed point: "<addr>" parses to addr again. */
static bool
addr_is_canonical(const struct smtp_addr *a)
{
	char path[sizeof(a->addr) + 2];
	const char *end, *err;
	struct smtp_addr b;
	int n = snprintf(path, sizeof(path), "<%s>", a->addr);

	return n > 0 && (size_t)n < sizeof(path) && smtp_addr_parse(path,
	    (size_t)n, false, &b, &end, &err) == 1 && end == path + n &&
	    strcmp(a->addr, b.addr) == 0 && strcmp(a->local, b.local) == 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data, *end = NULL, *err = NULL;
	struct smtp_mail_params mp;
	struct smtp_addr a;
	uint64_t n;
	bool last;
	int rc, code;

	rc = smtp_addr_parse(s, size, size > 0 && (data[size - 1] & 1), &a,
	    &end, &err);
	if (rc == -1) {
		if (err == NULL)
			abort();
	} else {
		if (rc != 1 || end == NULL || end < s + 2 || end > s + size ||
		    end[-1] != '>')
			abort();
		if (strlen(a.addr) > SMTP_PATH_MAX - 2 ||
		    strlen(a.domain) > SMTP_DOMAIN_MAX)
			abort();
		if (a.addr[0] != '\0' && (strchr(a.addr, '@') == NULL ||
		    a.domain[0] == '\0' || a.local[0] == '\0'))
			abort();
		for (const char *p = a.domain; *p != '\0'; p++)
			if ((*p >= 'A' && *p <= 'Z') || *p == ' ' || *p == '>')
				abort();
		for (const char *p = a.addr; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20)
				abort();
		if (a.addr[0] != '\0' && !addr_is_canonical(&a))
			abort();
		if (smtp_mail_params_parse(end, s + size, true, 1000, &mp,
		    &code, &err) == -1 && (code < 500 || code > 555 ||
		    err == NULL))
			abort();
	}
	if (smtp_bdat_parse(s, size, &n, &last) == 0 && size == 0)
		abort();
	return 0;
}
