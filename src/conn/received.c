/*
 * conn/received.c: the Received: trace header (RFC 5321 4.4, RFC 5322
 * 3.6.7).  The HELO name is peer text: only the bytes a domain or address
 * literal may hold pass through, so nothing a client sends can end the
 * header or inject another one.
 */
#include "conn/conn_private.h"

#include <ctype.h>
#include <string.h>

static void
conn_received_add_helo(struct util_buf *b, const char *helo)
{
	size_t n = 0;

	for (const char *p = helo; *p != '\0' && n < 255; p++, n++) {
		unsigned char c = (unsigned char)*p;
		bool ok = isalnum(c) || strchr(".-_:[]", c) != NULL;
		util_buf_add(b, ok ? (const char *)p : "?", 1);
	}
	if (n == 0)
		util_buf_addstr(b, "unknown");
}

void
conn_received_build(struct util_buf *b, const struct conn_received *r)
{
	char date[64];

	util_buf_addstr(b, "Received: from ");
	conn_received_add_helo(b, r->helo != NULL ? r->helo : "");
	/* TCP-info: the verified client name, or "unknown", and its address. */
	/* A DNS name is outside input too: filtered like the HELO name. */
	util_buf_addstr(b, " (");
	conn_received_add_helo(b, r->rdns != NULL ? r->rdns : "unknown");
	util_buf_printf(b, " [%s%s])", r->ipv6 ? "IPv6:" : "", r->ip);
	if (r->tls != NULL && r->tls[0] != '\0')
		util_buf_printf(b, "\n\t(%s)", r->tls);
	util_buf_printf(b, "\n\tby %s (postern) with %s id %s", r->hostname,
	    r->protocol, r->qid);
	if (r->single_rcpt != NULL)
		util_buf_printf(b, "\n\tfor <%s>", r->single_rcpt);
	util_rfc5322_date(date, sizeof(date), r->when);
	util_buf_printf(b, "; %s\n", date);
}
