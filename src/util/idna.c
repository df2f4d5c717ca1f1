/*
 * util/idna.c: a domain's two spellings, IDNA2008 with libidn2 (RFC 5890,
 * RFC 5891): UTF-8 labels (U-labels) and their Punycode "xn--" forms
 * (A-labels).  Domains are compared, and looked up in the DNS, as A-labels.
 * Knows nothing of where a domain comes from.
 */
#include "util/util.h"

#include <idn2.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Does a label of domain start with "xn--" (an A-label, RFC 5890 2.3.2.1)? */
static bool
util_idna_has_alabel(const char *domain)
{
	for (const char *p = domain; p != NULL; p = strchr(p, '.')) {
		if (*p == '.')
			p++;
		if (strncasecmp(p, "xn--", 4) == 0)
			return true;
	}
	return false;
}

int
util_idna_alabel(const char *domain, char **out, const char **err_out)
{
	char *a = NULL;
	int rc;

	if (util_is_ascii(domain) && !util_idna_has_alabel(domain)) {
		*out = util_strlower(xstrdup(domain));
		return 0;
	}
	/* RFC 5891 5.2: the input is NFC-normalised; no TR46 mapping beyond
	 * that, as IDNA2008 has none. */
	rc = idn2_lookup_u8((const uint8_t *)domain, (uint8_t **)&a,
	    IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
	if (rc != IDN2_OK) {
		*err_out = util_err("%s", idn2_strerror(rc));
		return -1;
	}
	*out = util_strlower(xstrdup(a));
	idn2_free(a);
	return 0;
}

size_t
util_idna_spellings(const char *domain, char *out[2])
{
	char *a, *u = NULL;
	const char *err;
	size_t n = 0;

	if (util_is_ascii(domain) && !util_idna_has_alabel(domain))
		return 0;
	if (util_idna_alabel(domain, &a, &err) == -1)
		return 0;
	/* The U-labels come from the A-labels, lower case whatever case
	 * domain has: "BÜCHER" and "bücher" have one A-label. */
	if (idn2_to_unicode_8z8z(a, &u, 0) == IDN2_OK && strcmp(u, a) != 0 &&
	    strcmp(u, domain) != 0)
		out[n++] = xstrdup(u);
	idn2_free(u);
	if (strcasecmp(a, domain) != 0)
		out[n++] = a;
	else
		free(a);
	return n;
}
