/*
 * cli/send.c: `postern send`, also run as `sendmail`: local submission.
 * Reads a message on stdin, routes each recipient with the server's own
 * router (same config), makes sure a server runs on that spool (its control
 * socket answers), commits the message durably into the spool without any
 * network connection, then tells the server (control socket) to pick it up.
 * Exit status (sysexits.h): 0 only once durably queued; EX_USAGE,
 * EX_DATAERR, EX_NOUSER or EX_TEMPFAIL with a message otherwise.
 */
#include "cli/cli.h"

#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "mime/mime.h"
#include "queue/queue.h"
#include "route/route.h"
#include "smtp/smtp.h"
#include "spool/spool.h"
#include "util/util.h"

#define EX_USAGE	64
#define EX_DATAERR	65
#define EX_NOUSER	67
#define EX_TEMPFAIL	75

static const char usage_send[] =
    "usage: postern send [options] [recipient ...]\n"
    "       sendmail [options] [recipient ...]\n"
    "\n"
    "Read a message on stdin and queue it for delivery.\n"
    "  -t          take recipients from To:, Cc: and Bcc: (Bcc: is removed)\n"
    "              as well as from the arguments\n"
    "  -f ADDR     envelope sender (default: your login @ hostname;\n"
    "              -f '<>' or -f '' for none); also -r ADDR\n"
    "  -F NAME     full name for a From: header added when missing\n"
    "              (UTF-8; written 7-bit, RFC 2047 when not ASCII)\n"
    "  -i, -oi     accepted: a line with a single '.' never ends the input\n"
    "  -bm         accepted (deliver mail: the default)\n"
    "  -bp         list the queue instead (as mailq does)\n"
    "  -bi         rebuild the aliases database: there is none (as\n"
    "              newaliases does); exit 0\n"
    "  -C FILE     configuration, -bp's too (default $POSTERN_CONFIG or\n"
    "              " CLI_DEFAULT_CONFIG ")\n"
    "  -o..., -v, -U, -N ARG, -B ARG, -R ARG, -X ARG: accepted, ignored\n"
    "Flags may be grouped (-ti).  Leading mbox 'From ' lines are dropped.\n"
    "Exit 0 once the message is durably queued; 64 usage, 65 bad data,\n"
    "67 unknown recipient, 75 temporary failure (try again).\n";

struct send_opts {
	enum { SEND_MAIL, SEND_MAILQ, SEND_NEWALIASES } mode; /* -bm -bp -bi */
	const char	*config;
	const char	*sender;	/* NULL: login@hostname */
	const char	*fullname;
	bool		 extract;	/* -t */
	char		**rcpts;	/* argv recipients, borrowed */
	size_t		 nrcpts;
};

struct send_list {
	char	**v;			/* owned strings */
	size_t	  n;
};

static void
send_list_add(struct send_list *l, const char *s, size_t len)
{
	l->v = xreallocarray(l->v, l->n + 1, sizeof(*l->v));
	l->v[l->n++] = xstrndup(s, len);
}

static void
send_list_clear(struct send_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/*
 * Parse sendmail's flags, grouped as getopt allows them ("-ti", "-tf ADDR":
 * a letter that takes an argument takes the rest of its word, else the next
 * word; -o only the rest).  Returns 0, -1 (help shown), or an exit status.
 */
static int
send_parse_args(int argc, char **argv, struct send_opts *o)
{
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (a[0] != '-' || a[1] == '\0')
			break;
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			fputs(usage_send, stdout);
			return -1;
		}
		for (const char *p = a + 1; *p != '\0'; p++) {
			const char *arg;

			if (*p == 't') {
				o->extract = true;
				continue;
			}
			/* -i: a "." never ends the input anyway */
			if (strchr("ivU", *p) != NULL)
				continue;
			if (strchr("bfrFCoNBRX", *p) == NULL) {
				fprintf(stderr, "postern send: unsupported "
				    "option -%c\n%s", *p, usage_send);
				return EX_USAGE;
			}
			if (p[1] != '\0' || *p == 'o')
				arg = p + 1;
			else if (++i < argc)
				arg = argv[i];
			else {
				fprintf(stderr, "postern send: -%c needs an "
				    "argument\n%s", *p, usage_send);
				return EX_USAGE;
			}
			if (*p == 'b' && strcmp(arg, "m") == 0)
				o->mode = SEND_MAIL;
			else if (*p == 'b' && strcmp(arg, "p") == 0)
				o->mode = SEND_MAILQ;
			else if (*p == 'b' && strcmp(arg, "i") == 0)
				o->mode = SEND_NEWALIASES;
			else if (*p == 'b') {
				fprintf(stderr, "postern send: unsupported "
				    "option -b%s\n%s", arg, usage_send);
				return EX_USAGE;
			} else if (*p == 'f' || *p == 'r')
				o->sender = arg;
			else if (*p == 'F')
				o->fullname = arg;
			else if (*p == 'C')
				o->config = arg;
			break;	/* -o, -N, -B, -R, -X: ignored */
		}
	}
	o->rcpts = argv + i;
	o->nrcpts = (size_t)(argc - i);
	return 0;
}

/*
 * Read stdin whole into b with LF line ends, ending in LF: CRLF, and a CR
 * or an LF alone, each end a line (sendmail's local submission), so no bare
 * CR reaches the spool.  0; -1 past max bytes; -2 read error; -3 a NUL
 * byte, on line *line_out: SMTP cannot carry it (RFC 5321 4.5.2).
 */
static int
send_read_stdin(struct util_buf *b, uint64_t max, size_t *line_out)
{
	char buf[65536];
	size_t n, line = 1;
	bool cr = false;

	while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0) {
		for (size_t i = 0; i < n; i++) {
			if (buf[i] == '\0') {
				*line_out = line;
				return -3;
			}
			if (cr && buf[i] == '\n') {
				cr = false;	/* the LF of a CRLF */
				continue;
			}
			cr = buf[i] == '\r';
			util_buf_add(b, cr ? "\n" : &buf[i], 1);
			line += cr || buf[i] == '\n';
		}
		if (b->len > max)
			return -1;
	}
	if (ferror(stdin))
		return -2;
	if (b->len > 0 && b->data[b->len - 1] != '\n')
		util_buf_add(b, "\n", 1);
	return 0;
}

/*
 * Does the line (len bytes, without its LF) start a header field: a name
 * of printable US-ASCII but the colon, then the colon (RFC 5322 2.2,
 * 3.6.8), or blanks and the colon (the obsolete form, 4.5)?
 */
static bool
send_is_field(const char *line, size_t len)
{
	size_t n = 0;

	while (n < len && (unsigned char)line[n] > ' ' &&
	    (unsigned char)line[n] < 127 && line[n] != ':')
		n++;
	if (n == 0)
		return false;
	while (n < len && (line[n] == ' ' || line[n] == '\t'))
		n++;
	return n < len && line[n] == ':';
}

/* Length of the line at p without its LF (buffers here end in LF). */
static size_t
send_line_len(const char *p, size_t n)
{
	return (size_t)((const char *)memchr(p, '\n', n) - p);
}

/*
 * Drop the mbox "From " lines (">From " too) that begin a message piped
 * from a mailbox: they are no header field (RFC 5322 2.2), and sendmail
 * and Postfix's sendmail drop them too (the envelope sender stays -f's).
 * "From :" is the From field in the obsolete form (RFC 5322 4.5): kept.
 */
static void
send_skip_from_(struct util_buf *b)
{
	size_t skip = 0;

	while (skip < b->len) {	/* b ends in LF */
		const char *p = b->data + skip;
		size_t n = send_line_len(p, b->len - skip), gt = 0;

		while (gt < n && p[gt] == '>')
			gt++;
		if (n - gt < 5 || memcmp(p + gt, "From ", 5) != 0 ||
		    util_hdr_is(p + gt, n - gt, "From"))
			break;
		skip += n + 1;
	}
	if (skip == 0)
		return;
	memmove(b->data, b->data + skip, b->len - skip);
	b->len -= skip;
}

/*
 * Length of the header block: the lines that are header fields, each with
 * its continuation lines (RFC 5322 2.2.3).  It ends at the first other
 * line: the empty line before the body, or the first line of a body that
 * has none before it (send_content adds it).  A first line that starts
 * with a blank continues no field: it is body, as in sendmail and Postfix.
 */
static size_t
send_header_len(const struct util_buf *b)
{
	size_t pos = 0;

	while (pos < b->len) {	/* b ends in LF */
		const char *p = b->data + pos;
		size_t n = send_line_len(p, b->len - pos);
		bool cont = pos > 0 && (p[0] == ' ' || p[0] == '\t');

		if (!cont && !send_is_field(p, n))
			break;
		pos += n + 1;
	}
	return pos;
}

/*
 * Addresses of an address-list header value (RFC 5322 3.4): commas
 * outside quotes, comments and angle brackets separate; "<addr>" wins over
 * the display name; a group "name: a, b;" gives a and b.  Quoted text is
 * kept: before "<addr>" it is the display name, otherwise the quoted local
 * part of an addr-spec ("bob x"@example.org).
 */
static void
send_extract(const char *v, size_t len, struct send_list *out)
{
	struct util_buf tok = { 0 }, angle = { 0 };
	bool quoted = false, in_angle = false, had_angle = false;
	int depth = 0;

	for (size_t i = 0; i <= len; i++) {
		char c = i < len ? v[i] : ',';
		if (quoted && i < len) {	/* unclosed: ends at the end */
			util_buf_add(&tok, &c, 1);
			if (c == '\\' && i + 1 < len)
				util_buf_add(&tok, &v[++i], 1);
			else if (c == '"')
				quoted = false;
			continue;
		}
		if (depth > 0) {
			if (c == '\\' && i + 1 < len)
				i++;
			else if (c == '(')
				depth++;
			else if (c == ')')
				depth--;
			continue;
		}
		if (in_angle) {
			if (c == '>')
				in_angle = false;
			else
				util_buf_add(&angle, &c, 1);
			continue;
		}
		if (c == '"') {
			quoted = true;
			util_buf_add(&tok, &c, 1);
		} else if (c == '(')
			depth++;
		else if (c == '<') {
			in_angle = had_angle = true;
			util_buf_reset(&angle);
		} else if (c == ':')
			util_buf_reset(&tok);	/* a group's display name */
		else if (c == ',' || c == ';') {
			const struct util_buf *src = had_angle ? &angle : &tok;
			size_t s = 0, e = src->len;
			while (s < e && isspace((unsigned char)src->data[s]))
				s++;
			while (e > s && isspace((unsigned char)src->data[e - 1]))
				e--;
			if (e > s)
				send_list_add(out, src->data + s, e - s);
			util_buf_reset(&tok);
			util_buf_reset(&angle);
			had_angle = false;
		} else if (!isspace((unsigned char)c) || tok.len > 0)
			util_buf_add(&tok, &c, 1);
	}
	util_buf_clear(&tok);
	util_buf_clear(&angle);
}

/*
 * Walk the header block: collect recipients of To/Cc/Bcc (-t), drop Bcc
 * fields, note which of From/Date/Message-ID exist.  The kept headers go
 * to out.
 */
static void
send_headers(const char *h, size_t hlen, bool extract, struct send_list *rc,
    struct util_buf *out, bool *has_from, bool *has_date, bool *has_mid)
{
	size_t pos = 0;

	while (pos < hlen) {
		size_t end = pos;
		/* A field with its continuation lines. */
		do {
			const char *lf = memchr(h + end, '\n', hlen - end);
			end = lf != NULL ? (size_t)(lf - h) + 1 : hlen;
		} while (end < hlen && (h[end] == ' ' || h[end] == '\t'));
		const char *f = h + pos;
		size_t flen = end - pos;
		bool bcc = util_hdr_is(f, flen, "Bcc");

		if (extract && (bcc || util_hdr_is(f, flen, "To") ||
		    util_hdr_is(f, flen, "Cc"))) {
			const char *colon = memchr(f, ':', flen);
			send_extract(colon + 1, flen - (size_t)(colon + 1 - f),
			    rc);
		}
		*has_from |= util_hdr_is(f, flen, "From");
		*has_date |= util_hdr_is(f, flen, "Date");
		*has_mid |= util_hdr_is(f, flen, "Message-ID");
		/* RFC 5322 3.6.3: Bcc is never passed on. */
		if (!bcc)
			util_buf_add(out, f, flen);
		pos = end;
	}
}

/*
 * Check a ("local@domain") as the listener checks the path of MAIL and
 * RCPT (RFC 5321 4.1.2: a quoted local part too).  Returns it as the
 * listener keeps it, domain lower-cased (malloc'd), or NULL with *err_out.
 */
static char *
send_addr_check(const char *a, const char **err_out)
{
	char *path = xasprintf("<%s>", a);
	struct smtp_addr sa;
	const char *end;
	int rc;

	rc = smtp_addr_parse(path, strlen(path), false, &sa, &end, err_out);
	if (rc == 1 && *end != '\0') {
		*err_out = "text after the address";
		rc = -1;
	}
	free(path);
	return rc == 1 ? xstrdup(sa.addr) : NULL;
}

/*
 * A bare local name gets @hostname (sendmail's "unqualified" rule); the
 * domain's '@' comes after any quoted local part.
 */
static char *
send_qualify(const char *a, const char *hostname)
{
	size_t len = strlen(a);
	const char *q;

	if (len >= 2 && a[0] == '<' && a[len - 1] == '>') {
		a++;
		len -= 2;
	}
	q = memrchr(a, '"', len);
	if (q == NULL)
		q = a;
	if (len > 0 && memchr(q, '@', len - (size_t)(q - a)) == NULL)
		return xasprintf("%.*s@%s", (int)len, a, hostname);
	return xstrndup(a, len);
}

static char *
send_login(void)
{
	struct passwd *pw = getpwuid(getuid());

	return xstrdup(pw != NULL && pw->pw_name != NULL ? pw->pw_name :
	    "nobody");
}

struct send_ctx {
	struct config		*cfg;
	struct router		*router;
	struct spool		*sp;
	struct spool_env	 env;
	struct util_buf		 in, kept, content;
	struct send_list	 rcpts;
	char			*login;
	uid_t			 uid;		/* who ran us, for Received: */
};

/* Append " word" to c, folded before the blank past 78 columns. */
static void
send_fold_add(struct util_buf *c, size_t *col, const char *word, size_t len)
{
	/* RFC 5322 2.1.1, 2.2.3; never a line of blanks alone. */
	if (*col > 1 && *col + 1 + len > 78) {
		util_buf_addstr(c, "\n");
		*col = 0;
	}
	util_buf_addstr(c, " ");
	util_buf_add(c, word, len);
	*col += 1 + len;
}

/*
 * The From: field for a message without one: -F's full name as a display
 * name, 7-bit however it is spelt (mime_encode_phrase), and the sender.
 */
static void
send_add_from(struct util_buf *c, const char *fullname, const char *sender,
    const char *hostname)
{
	char *phrase = mime_encode_phrase(fullname != NULL ? fullname : "");
	char *addr = sender[0] != '\0' ? xasprintf("<%s>", sender) :
	    /* The null sender's From: is a real address, as Postfix's. */
	    xasprintf("<MAILER-DAEMON@%s>", hostname);
	size_t col = strlen("From:");

	util_buf_addstr(c, "From:");
	for (const char *w = phrase; *w != '\0'; ) {
		size_t len = strcspn(w, " ");

		send_fold_add(c, &col, w, len);
		w += len + (w[len] == ' ');
	}
	send_fold_add(c, &col, addr, strlen(addr));
	util_buf_addstr(c, "\n");
	free(phrase);
	free(addr);
}

/*
 * Build x->content: Received:, missing From/Date/Message-ID, the kept
 * header fields (x->kept), an empty line unless the body starts with
 * one, then the body (x->in past hlen).
 */
static void
send_content(struct send_ctx *x, size_t hlen, const char *fullname,
    bool has_from, bool has_date, bool has_mid)
{
	struct util_buf *c = &x->content;
	const char *hostname = x->cfg->hostname, *qid = x->env.qid;
	const char *sender = x->env.sender;
	char date[64];
	int64_t now = (int64_t)(util_wall_us() / 1000000);

	util_rfc5322_date(date, sizeof(date), now);
	util_buf_printf(c, "Received: from local user %s (uid %u)\n\tby %s "
	    "(postern) with local id %s; %s\n", x->login, (unsigned)x->uid,
	    hostname, qid, date);
	if (!has_from)
		send_add_from(c, fullname, sender, hostname);
	if (!has_date)
		util_buf_printf(c, "Date: %s\n", date);
	if (!has_mid)
		util_buf_printf(c, "Message-ID: <%s@%s>\n", qid, hostname);
	util_buf_add(c, x->kept.data, x->kept.len);
	/* RFC 5322 2.1: an empty line, then the body. */
	if (hlen < x->in.len && x->in.data[hlen] != '\n')
		util_buf_addstr(c, "\n");
	util_buf_add(c, x->in.data + hlen, x->in.len - hlen);
}

static void
send_ctx_clear(struct send_ctx *x)
{
	spool_env_clear(&x->env);
	util_buf_clear(&x->in);
	util_buf_clear(&x->kept);
	util_buf_clear(&x->content);
	send_list_clear(&x->rcpts);
	route_free(&x->router);
	spool_close(&x->sp);
	config_free(&x->cfg);
	free(x->login);
}

/* Route every recipient into x->env.  0 or an exit status. */
static int
send_route(struct send_ctx *x)
{
	for (size_t i = 0; i < x->rcpts.n; i++) {
		char *q = send_qualify(x->rcpts.v[i], x->cfg->hostname);
		const char *err = NULL;
		char *a = send_addr_check(q, &err);

		free(q);
		if (a == NULL) {
			fprintf(stderr, "postern send: bad recipient address "
			    "\"%s\": %s\n", x->rcpts.v[i], err);
			return EX_DATAERR;
		}
		/* The same address twice, or two into one Maildir: one copy. */
		if (queue_route_router(x->router, x->env.sender, a, &x->env,
		    &err) == -1) {
			fprintf(stderr, "postern send: <%s>: %s\n", a, err);
			free(a);
			return err[0] == '4' ? EX_TEMPFAIL : EX_NOUSER;
		}
		for (const char *p = a; *p != '\0'; p++)
			if ((unsigned char)*p >= 0x80)
				x->env.smtputf8 = true;
		free(a);
	}
	if (x->env.nrcpts == 0) {
		fprintf(stderr, "postern send: no recipients (give them as "
		    "arguments, or use -t)\n");
		return EX_USAGE;
	}
	return 0;
}

/*
 * The refusal of a user who may not use spool (err: the call refused).  No
 * mode of the spool folder changes that (its control socket and folders
 * are its owner's alone), so the hint names the owner, not the mode.
 */
static void
send_denied(const char *spool, const char *err)
{
	struct stat st;
	struct passwd *pw = stat(spool, &st) == 0 ? getpwuid(st.st_uid) :
	    NULL;
	char tail[256];

	(void)util_snprintf(tail, sizeof(tail), "; no other user may submit, "
	    "whatever the spool's mode%s%s%s; the message was not queued",
	    pw != NULL ? " (sudo -u " : "", pw != NULL ? pw->pw_name : "",
	    pw != NULL ? " postern send ...)" : "");
	cli_spool_denied("postern send", spool, err, tail);
}

/*
 * Only a running server delivers what lands in its spool: ask it on its
 * control socket before writing anything, or a spool no server reads would
 * keep an acknowledged message forever.  0 or EX_TEMPFAIL.
 */
static int
send_check_server(const struct send_ctx *x)
{
	char *reply = NULL;
	const char *err = NULL;

	if (queue_control_request(x->cfg->spool, "ping", &reply, &err) == 0) {
		free(reply);
		return 0;
	}
	/* A server may well run there: this user may not use its spool. */
	if (errno == EACCES || errno == EPERM)
		send_denied(x->cfg->spool, err);
	else
		fprintf(stderr, "postern send: no postern server is running "
		    "on the spool %s (%s); the message was not queued\n",
		    x->cfg->spool, err);
	return EX_TEMPFAIL;
}

/* Commit the message durably.  0 or EX_TEMPFAIL. */
static int
send_commit(struct send_ctx *x)
{
	struct spool_msg *m = spool_msg_new(x->sp, x->env.qid);
	const char *err = NULL;
	int rc = 0;

	if (spool_msg_write(m, x->content.data, x->content.len, &err) == -1 ||
	    spool_msg_commit(m, &x->env, &err) == -1) {
		fprintf(stderr, "postern send: cannot queue the message: %s\n",
		    err);
		rc = EX_TEMPFAIL;
	}
	spool_msg_free(&m);
	return rc;
}

static int
send_run(struct send_ctx *x, const struct send_opts *o)
{
	const char *err = NULL;
	char *path, *errs = NULL, *reply = NULL, cmd[64];
	bool has_from = false, has_date = false, has_mid = false;
	size_t hlen, line = 0;
	int rc;

	if ((path = cli_enter_config_dir(o->config, &err)) == NULL) {
		fprintf(stderr, "postern send: %s\n", err);
		return EX_TEMPFAIL;
	}
	x->cfg = config_load(path, &errs);
	free(path);
	if (x->cfg == NULL) {
		fputs(errs, stderr);
		free(errs);
		fprintf(stderr, "postern send: %s: configuration has errors\n",
		    o->config);
		return EX_TEMPFAIL;
	}
	if ((x->router = route_new(x->cfg, &err)) == NULL) {
		fprintf(stderr, "postern send: %s\n", err);
		return EX_TEMPFAIL;
	}
	x->login = send_login();
	x->uid = getuid();
	/* -f '<>' or -f '': the null sender. */
	if (o->sender != NULL && (strcmp(o->sender, "<>") == 0 ||
	    o->sender[0] == '\0'))
		x->env.sender = xstrdup("");
	else {
		char *q = o->sender != NULL ? send_qualify(o->sender,
		    x->cfg->hostname) : xasprintf("%s@%s", x->login,
		    x->cfg->hostname);
		x->env.sender = send_addr_check(q, &err);
		free(q);
		if (x->env.sender == NULL) {
			fprintf(stderr, "postern send: bad sender address "
			    "\"%s\": %s\n", o->sender != NULL ? o->sender :
			    x->login, err);
			return EX_DATAERR;
		}
	}
	rc = send_read_stdin(&x->in, x->cfg->limits.msg_max, &line);
	if (rc == -3) {
		fprintf(stderr, "postern send: line %zu of the message holds "
		    "a NUL byte, which SMTP cannot carry; not queued\n", line);
		return EX_DATAERR;
	}
	if (rc != 0) {
		fprintf(stderr, "postern send: %s\n", rc == -1 ?
		    "message too big for 'limit message-size'" :
		    "cannot read the message on stdin");
		return rc == -1 ? EX_DATAERR : EX_TEMPFAIL;
	}
	send_skip_from_(&x->in);
	for (size_t i = 0; i < o->nrcpts; i++)
		send_extract(o->rcpts[i], strlen(o->rcpts[i]), &x->rcpts);
	hlen = send_header_len(&x->in);
	send_headers(x->in.data, hlen, o->extract, &x->rcpts, &x->kept,
	    &has_from, &has_date, &has_mid);
	if ((rc = send_route(x)) != 0 || (rc = send_check_server(x)) != 0)
		return rc;
	if (cli_become_spool_owner(x->cfg->spool, &err) == -1) {
		fprintf(stderr, "postern send: %s\n", err);
		return EX_TEMPFAIL;
	}
	if ((x->sp = spool_open(x->cfg->spool, &err)) == NULL) {
		fprintf(stderr, "postern send: spool %s: %s\n", x->cfg->spool,
		    err);
		return EX_TEMPFAIL;
	}
	spool_new_qid(x->sp, x->env.qid);
	x->env.received = (int64_t)(util_wall_us() / 1000000);
	send_content(x, hlen, o->fullname, has_from, has_date, has_mid);
	x->env.size = x->content.len;
	for (size_t i = 0; i < x->content.len; i++)
		if ((unsigned char)x->content.data[i] >= 0x80)
			x->env.body_8bit = true;
	if ((rc = send_commit(x)) != 0)
		return rc;
	/*
	 * Queued in the spool of a server that answered a moment ago: from
	 * here on, exit 0 (a retry by the caller would send it twice).  If
	 * the server stopped meanwhile, it finds the message when it starts.
	 */
	(void)util_snprintf(cmd, sizeof(cmd), "submit %s", x->env.qid);
	if (queue_control_request(spool_dir(x->sp), cmd, &reply, &err) == -1)
		fprintf(stderr, "postern send: queued as %s, but the server "
		    "did not take it (%s): it is delivered when the server "
		    "next starts\n", x->env.qid, err);
	free(reply);
	return 0;
}

int
cli_newaliases(void)
{
	fputs("postern has no aliases database: addresses are routed by the "
	    "match rules of postern.conf; nothing to rebuild\n", stderr);
	return 0;
}

int
cli_send(int argc, char **argv)
{
	struct send_opts o = { .config = cli_default_config() };
	struct send_ctx x = { 0 };
	int rc;

	if ((rc = send_parse_args(argc, argv, &o)) != 0)
		return rc == -1 ? 0 : rc;
	if (o.mode == SEND_MAILQ)
		return cli_mailq(o.config);
	if (o.mode == SEND_NEWALIASES)
		return cli_newaliases();
	rc = send_run(&x, &o);
	send_ctx_clear(&x);
	return rc;
}
