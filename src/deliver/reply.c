/*
 * deliver/reply.c: the outbound SMTP client's reading of what a server
 * says: reply lines gathered into one reply (RFC 5321 4.2) and the
 * extensions an EHLO reply announces.  Pure: no sockets, so a fuzz target
 * can feed it anything a hostile server might send.
 */
#include "deliver/deliver_private.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/util.h"

void
smtpc_reply_reset(struct smtpc_reply *r)
{
	r->code = -1;
	util_buf_reset(&r->lines);
	r->text[0] = '\0';
	r->text_cut = false;
	r->nlines = r->nbytes = 0;
}

/* "NNN", then the end of the line, a space or a hyphen. */
static bool
smtpc_is_reply_line(const char *line)
{
	return strlen(line) >= 3 && line[0] >= '2' && line[0] <= '5' &&
	    line[1] >= '0' && line[1] <= '9' && line[2] >= '0' &&
	    line[2] <= '9' && (line[3] == '\0' || line[3] == ' ' ||
	    line[3] == '-');
}

/*
 * Add a line's text to r->text as the server wrote it, after a space, up to
 * the size of r->text less room for "..."; what does not fit is cut there,
 * never inside a UTF-8 character, and "..." marks the cut.  Whoever shows
 * the text escapes it by its own rules (a log line's, a DSN's).
 */
static void
smtpc_reply_text_add(struct smtpc_reply *r, const char *part)
{
	size_t max = sizeof(r->text) - 4, tl = strlen(r->text);
	size_t n = strlen(part);

	if (r->text_cut)
		return;
	if (tl > 0 && tl < max)
		r->text[tl++] = ' ';
	if (n > max - tl) {
		n = util_utf8_cut(part, max - tl);
		r->text_cut = true;
	}
	memcpy(r->text + tl, part, n);
	tl += n;
	if (r->text_cut) {
		memcpy(r->text + tl, "...", 3);
		tl += 3;
	}
	r->text[tl] = '\0';
}

int
smtpc_reply_line(struct smtpc_reply *r, const char *line, size_t raw,
    const char **why_out)
{
	int code;

	r->nbytes += raw;
	if (++r->nlines > SMTPC_REPLY_LINES_MAX ||
	    r->nbytes > SMTPC_REPLY_BYTES_MAX) {
		*why_out = "a reply longer than 1000 lines or 65536 octets";
		return -1;
	}
	if (!smtpc_is_reply_line(line)) {
		*why_out = "a bad reply line";
		return -1;
	}
	code = atoi(line);
	if (r->code != -1 && code != r->code) {
		*why_out = "mixed reply codes in one reply";
		return -1;
	}
	r->code = code;
	util_buf_addstr(&r->lines, line);
	util_buf_add(&r->lines, "\n", 1);
	/* Every line as written, as Postfix's DSNs show them: a reader sees
	 * which lines the server sent, codes and all. */
	smtpc_reply_text_add(r, line);
	return line[3] == '-' ? 0 : 1;
}

/* "AUTH PLAIN LOGIN" or "AUTH=PLAIN": the mechanisms we know. */
static void
smtpc_caps_auth(const char *mechs, struct smtpc_caps *out)
{
	char *save = NULL, *copy = xstrdup(mechs);

	for (char *m = strtok_r(copy, " ", &save); m != NULL;
	    m = strtok_r(NULL, " ", &save)) {
		if (strcasecmp(m, "PLAIN") == 0)
			out->auth_plain = true;
		else if (strcasecmp(m, "LOGIN") == 0)
			out->auth_login = true;
	}
	free(copy);
}

void
smtpc_caps_parse(const char *lines, size_t len, struct smtpc_caps *out)
{
	char *save = NULL, *l, *copy = xstrndup(lines != NULL ? lines : "",
	    lines != NULL ? len : 0);
	bool first = true;

	memset(out, 0, sizeof(*out));
	for (l = strtok_r(copy, "\n", &save); l != NULL;
	    l = strtok_r(NULL, "\n", &save), first = false) {
		if (first || strlen(l) < 4)
			continue;	/* the first line is the greeting */
		const char *kw = l + 4;
		if (strcasecmp(kw, "PIPELINING") == 0)
			out->pipelining = true;
		else if (strcasecmp(kw, "STARTTLS") == 0)
			out->starttls = true;
		else if (strcasecmp(kw, "8BITMIME") == 0)
			out->eightbitmime = true;
		else if (strcasecmp(kw, "SMTPUTF8") == 0)
			out->smtputf8 = true;
		else if (strncasecmp(kw, "SIZE", 4) == 0 && (kw[4] == '\0' ||
		    kw[4] == ' ')) {
			out->has_size = true;
			out->size_max = kw[4] == ' ' ? strtoull(kw + 5, NULL,
			    10) : 0;
		} else if (strncasecmp(kw, "AUTH", 4) == 0 && (kw[4] == ' ' ||
		    kw[4] == '='))
			smtpc_caps_auth(kw + 5, out);
	}
	free(copy);
}
