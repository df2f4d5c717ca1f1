/*
 * conn/received.c: the Received: trace header (RFC 5321 4.4, RFC 5322
 * 3.6.7).  The HELO name is peer text: only the bytes a domain or address
 * literal may hold pass through, so nothing a client sends can end the
 * header or inject another one.
 */
#include "conn/conn_private.h"

#include <ctype.h>
#include <stdbool.h>
#include <string.h>

/* The bytes a domain name or an address literal may hold. */
static bool
conn_received_ok(unsigned char c)
{
	return isalnum(c) || c == '.' || c == '-' || c == '_' || c == ':' ||
	    c == '[' || c == ']';
}

static void
conn_received_add_helo(struct util_buf *b, const char *helo)
{
	char out[255];
	size_t n = 0;

	for (const char *p = helo; *p != '\0' && n < sizeof(out); p++, n++)
		out[n] = conn_received_ok((unsigned char)*p) ? *p : '?';
	if (n == 0)
		util_buf_add(b, "unknown", 7);
	else
		util_buf_add(b, out, n);
}

void
conn_received_build(struct util_buf *b, const struct conn_received *r)
{
	char date[64];

	util_buf_add(b, "Received: from ", 15);
	conn_received_add_helo(b, r->helo != NULL ? r->helo : "");
	/* TCP-info: the verified client name, or "unknown", and its address. */
	/* A DNS name is outside input too: filtered like the HELO name. */
	util_buf_add(b, " (", 2);
	conn_received_add_helo(b, r->rdns != NULL ? r->rdns : "unknown");
	util_buf_add(b, r->ipv6 ? " [IPv6:" : " [", r->ipv6 ? 7 : 2);
	util_buf_addstr(b, r->ip);
	util_buf_add(b, "])", 2);
	if (r->tls != NULL && r->tls[0] != '\0') {
		util_buf_add(b, "\n\t(", 3);
		util_buf_addstr(b, r->tls);
		util_buf_add(b, ")", 1);
	}
	util_buf_add(b, "\n\tby ", 5);
	util_buf_addstr(b, r->hostname);
	util_buf_add(b, " (postern) with ", 16);
	util_buf_addstr(b, r->protocol);
	util_buf_add(b, " id ", 4);
	util_buf_addstr(b, r->qid);
	if (r->single_rcpt != NULL) {
		util_buf_add(b, "\n\tfor <", 7);
		util_buf_addstr(b, r->single_rcpt);
		util_buf_add(b, ">", 1);
	}
	util_rfc5322_date(date, sizeof(date), r->when);
	util_buf_add(b, "; ", 2);
	util_buf_addstr(b, date);
	util_buf_add(b, "\n", 1);
}
