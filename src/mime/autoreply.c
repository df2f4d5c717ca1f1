/*
 * mime/autoreply.c: RFC 3834 as a pure function of a parsed message and
 * its envelope: may an automatic reply go back?  Also the base of a
 * subject without its Re:/Fwd: prefixes.  Knows nothing of how often an
 * agent has answered (the caller keeps that).
 */
#include "mime/mime.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "mime/mime_private.h"

/* Local parts of senders that are programs (RFC 3834 2, "SHOULD NOT"). */
static const char *const mime_ar_robots[] = {
	"mailer-daemon", "mailer_daemon", "postmaster", "listserv",
	"majordomo", "noreply", "no-reply", "no_reply", "donotreply",
	"do-not-reply", "do_not_reply", "bounce", "bounces", NULL
};

static bool
mime_ar_prefix(const char *s, size_t n, const char *pre)
{
	size_t k = strlen(pre);

	return n >= k && strncasecmp(s, pre, k) == 0;
}

static bool
mime_ar_suffix(const char *s, size_t n, const char *suf)
{
	size_t k = strlen(suf);

	return n >= k && strncasecmp(s + n - k, suf, k) == 0;
}

/* MAILER-DAEMON, owner-list, list-request, bounces+..., noreply... */
static bool
mime_ar_is_robot(const char *addr)
{
	const char *at = strrchr(addr, '@');
	size_t n = at != NULL ? (size_t)(at - addr) : strlen(addr);
	size_t base = strcspn(addr, "+");	/* without a "+detail" */

	if (base < n)
		n = base;
	for (const char *const *r = mime_ar_robots; *r != NULL; r++)
		if (strlen(*r) == n && strncasecmp(addr, *r, n) == 0)
			return true;
	return mime_ar_prefix(addr, n, "owner-") ||
	    mime_ar_suffix(addr, n, "-owner") ||
	    mime_ar_suffix(addr, n, "-request") ||
	    mime_ar_suffix(addr, n, "-bounces") ||
	    mime_ar_prefix(addr, n, "bounce-");
}

/* The first word of a field value, compared without case. */
static bool
mime_ar_word_is(const char *v, const char *word)
{
	size_t k = strlen(word);

	while (*v == ' ' || *v == '\t')
		v++;
	return strncasecmp(v, word, k) == 0 &&
	    (v[k] == '\0' || v[k] == ';' || v[k] == ' ' || v[k] == '\t' ||
	    v[k] == '(');
}

/* Anything in the header that says "do not answer". */
static const char *
mime_ar_header_says_no(const struct mime_msg *m)
{
	for (size_t i = 0; i < m->nheaders; i++) {
		const char *n = m->headers[i].name, *v = m->headers[i].value;

		/* RFC 3834 5.1: any value but "no" is automatic. */
		if (strcasecmp(n, "Auto-Submitted") == 0 &&
		    !mime_ar_word_is(v, "no"))
			return "auto-submitted message";
		if (strcasecmp(n, "Precedence") == 0 &&
		    (mime_ar_word_is(v, "bulk") || mime_ar_word_is(v, "list") ||
		    mime_ar_word_is(v, "junk")))
			return "bulk or list precedence";
		/* RFC 2369, RFC 2919 */
		if (strncasecmp(n, "List-", 5) == 0)
			return "mailing list message";
		if (strcasecmp(n, "X-Auto-Response-Suppress") == 0 &&
		    (strcasestr(v, "all") != NULL ||
		    strcasestr(v, "autoreply") != NULL ||
		    strcasestr(v, "oof") != NULL))
			return "auto responses suppressed";
	}
	return NULL;
}

static bool
mime_ar_same(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcasecmp(a, b) == 0;
}

bool
mime_autoreply_allowed(const struct mime_ar_input *in, const char **why_out)
{
	const struct mime_msg *m = in->msg;
	unsigned rmax = in->received_max != 0 ? in->received_max :
	    MIME_AR_RECEIVED_MAX_DEFAULT;
	const char *why = NULL;

	if (in->sender == NULL || in->sender[0] == '\0')
		why = "null sender";
	else if (mime_ar_is_robot(in->sender))
		why = "automated sender";
	else if (mime_ar_same(in->sender, in->agent))
		why = "sent by the agent itself";
	else if (m->from_list.n > 0 && mime_ar_same(m->from_list.v[0].address,
	    in->agent))
		why = "from the agent itself";
	else if ((why = mime_ar_header_says_no(m)) != NULL)
		;
	else if (m->content_type != NULL &&
	    strcmp(m->content_type, "multipart/report") == 0)
		why = "delivery or feedback report";
	else if (m->nreceived > rmax)
		why = "mail loop (too many Received: fields)";
	if (why != NULL) {
		*why_out = why;
		return false;
	}
	return true;
}

/* Length of a reply/forward prefix at s ("Re:", "Fwd[3]:"), or 0. */
static size_t
mime_subject_prefix(const char *s)
{
	static const char *const pre[] = { "re", "fwd", "fw", "aw", "sv",
	    "wg", "vs", "antw", NULL };

	for (const char *const *p = pre; *p != NULL; p++) {
		size_t k = strlen(*p), i;

		if (strncasecmp(s, *p, k) != 0)
			continue;
		i = k;
		if (s[i] == '[' || s[i] == '(') {	/* "Re[2]:" */
			char close = s[i] == '[' ? ']' : ')';

			i++;
			while (isdigit((unsigned char)s[i]))
				i++;
			if (s[i] != close)
				continue;
			i++;
		}
		if (s[i] == ':')
			return i + 1;
	}
	return 0;
}

char *
mime_subject_base(const char *subject)
{
	const char *s = subject != NULL ? subject : "";
	size_t n, k;

	for (;;) {
		while (*s == ' ' || *s == '\t')
			s++;
		if ((k = mime_subject_prefix(s)) == 0)
			break;
		s += k;
	}
	n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	return xstrndup(s, n);
}
