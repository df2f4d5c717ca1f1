/*
 * proxy/ehlo.c: the upstream's EHLO reply read for what it offers (RFC
 * 5321 4.1.1.1), and the one the client gets: the upstream's lines kept
 * as they were for the extensions the proxy relays as they are, the rest
 * left out; STARTTLS and AUTH are the proxy's own to offer.  Pure.
 */
#include "proxy/proxy_private.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The keyword of an EHLO line (up to a space or '='), any case. */
static bool
proxy_kw_is(const char *t, size_t n, const char *kw)
{
	size_t k = strlen(kw);

	return n >= k && strncasecmp(t, kw, k) == 0 && (n == k ||
	    t[k] == ' ' || t[k] == '=');
}

/* The mechanisms of an AUTH line ("AUTH PLAIN LOGIN" or "AUTH=..."). */
static void
proxy_caps_auth(const char *t, size_t n, struct proxy_caps *c)
{
	size_t i = 5;

	while (i < n) {
		size_t j = i;
		while (j < n && t[j] != ' ')
			j++;
		if (j - i == 5 && strncasecmp(t + i, "PLAIN", 5) == 0)
			c->auth_plain = true;
		else if (j - i == 5 && strncasecmp(t + i, "LOGIN", 5) == 0)
			c->auth_login = true;
		i = j + 1;
	}
}

void
proxy_caps_parse(const struct proxy_reply *r, struct proxy_caps *out)
{
	const char *t;
	size_t n;

	memset(out, 0, sizeof(*out));
	out->esmtp = r->code / 100 == 2;
	for (unsigned k = 1; out->esmtp && proxy_reply_text(r, k, &t, &n);
	    k++) {
		if (proxy_kw_is(t, n, "STARTTLS"))
			out->starttls = true;
		else if (proxy_kw_is(t, n, "PIPELINING"))
			out->pipelining = true;
		else if (proxy_kw_is(t, n, "CHUNKING"))
			out->chunking = true;
		else if (proxy_kw_is(t, n, "8BITMIME"))
			out->eightbit = true;
		else if (proxy_kw_is(t, n, "SMTPUTF8"))
			out->smtputf8 = true;
		else if (proxy_kw_is(t, n, "AUTH"))
			proxy_caps_auth(t, n, out);
		else if (proxy_kw_is(t, n, "SIZE")) {
			out->has_size = true;
			out->size_max = n > 5 ? strtoull(t + 5, NULL, 10) : 0;
		}
	}
}

/*
 * Extensions whose commands and parameters the proxy's own parser takes
 * and passes on unchanged: kept when the upstream offers them.  DSN,
 * ETRN, XCLIENT, BINARYMIME and the like are left out: the proxy would
 * refuse their commands or parameters.  SIZE is kept when within ours.
 */
static const char *const proxy_ehlo_kept[] = { "PIPELINING", "8BITMIME",
	"SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", NULL };

static void
proxy_ehlo_add(struct util_buf *lines, const char *t, size_t n)
{
	util_buf_add(lines, t, n);
	util_buf_add(lines, "\n", 1);
}

void
proxy_ehlo_filter(const struct proxy_reply *r, const struct proxy_ehlo_opts *o,
    struct util_buf *out)
{
	struct util_buf lines = { 0 };
	struct proxy_caps caps;
	const char *t;
	size_t n;
	char size[48];

	proxy_caps_parse(r, &caps);
	for (unsigned k = 0; proxy_reply_text(r, k, &t, &n); k++) {
		bool keep = k == 0;
		for (size_t i = 0; !keep && proxy_ehlo_kept[i] != NULL; i++)
			keep = proxy_kw_is(t, n, proxy_ehlo_kept[i]);
		if (!keep && proxy_kw_is(t, n, "SIZE"))
			keep = o->size_max == 0 || (caps.size_max != 0 &&
			    caps.size_max <= o->size_max);
		if (keep)
			proxy_ehlo_add(&lines, t, n);
	}
	/* Our limit holds whatever the upstream's: say it (RFC 1870). */
	if (o->size_max != 0 && (!caps.has_size || caps.size_max == 0 ||
	    caps.size_max > o->size_max)) {
		snprintf(size, sizeof(size), "SIZE %" PRIu64, o->size_max);
		proxy_ehlo_add(&lines, size, strlen(size));
	}
	if (o->starttls)
		proxy_ehlo_add(&lines, "STARTTLS", 8);
	if (o->auth && (caps.auth_plain || caps.auth_login))
		proxy_ehlo_add(&lines, "AUTH PLAIN LOGIN", 16);
	util_buf_reset(out);
	const char *p = lines.data, *end = p + lines.len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		util_buf_printf(out, "%03d%c", r->code, nl + 1 < end ? '-' :
		    ' ');
		util_buf_add(out, p, (size_t)(nl - p));
		util_buf_add(out, "\r\n", 2);
		p = nl + 1;
	}
	util_buf_clear(&lines);
}
