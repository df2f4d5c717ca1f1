/*
 * deliver/content.c: a message's content on its way out in DATA, for every
 * client that sends one (SMTP, LMTP): read in pieces of lines from the
 * spool file or from memory, never whole; scanned for what the server must
 * offer (size, 8-bit content, 8-bit header fields, Received: count);
 * streamed with CRLF line ends, dot-stuffing (RFC 5321 4.5.2) and the
 * action's header rewrites.  Knows nothing of sockets: the caller's put
 * function takes the bytes.  The scan runs the same writer into a counter,
 * so what it reports is what goes out.
 *
 * Whatever the spool holds, only canonical lines go out (RFC 5321 2.3.8,
 * 4.5.3.1.6), so postern never carries a smuggling payload to a weaker
 * receiver: a CR alone ends a line like LF, a CRLF is one line end, and a
 * line over 998 octets is folded with CRLF SP.  A NUL is reported by the
 * scan; the client must not send such a message.  The same lines can be
 * made from content pushed in pieces as it arrives (deliver_canon_feed()).
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/util.h"

/* ---- the source: pieces of lines, never the whole message ---- */

#define CONTENT_LINE_MAX	(64 * 1024)	/* longer lines come in pieces */
/* RFC 5321 4.5.3.1.6: octets of a text line before its CRLF. */
#define CONTENT_WIRE_LINE_MAX	998

struct content_src {
	const struct deliver_msg *m;
	int		 fd;		/* content_path, or -1 for memory */
	const char	*data;		/* buf, or the content in memory */
	char		 buf[65536];	/* never zeroed: read into first */
	size_t		 off, len;	/* of data */
	struct util_buf	 line;		/* the current piece */
	bool		 bol;		/* the piece starts a line */
	bool		 eol;		/* the piece ends with LF (kept) */
	bool		 next_bol;
	bool		 skip_lf;	/* a CR ended the last piece: an LF
					   right after it is its line end */
};

static int
content_src_open(struct content_src *s, const struct deliver_msg *m,
    const char **err_out)
{
	/* Each field but buf: zeroing 64 KiB costs more than a small scan. */
	s->m = m;
	s->fd = -1;
	s->data = s->buf;
	s->off = s->len = 0;
	memset(&s->line, 0, sizeof(s->line));
	s->bol = s->eol = s->skip_lf = false;
	s->next_bol = true;
	if (m->content != NULL) {	/* read in place, not copied */
		s->data = m->content;
		s->len = m->content_len;
		return 0;
	}
	if ((s->fd = open(m->content_path, O_RDONLY | O_CLOEXEC)) == -1) {
		*err_out = util_err("open %s: %s", m->content_path,
		    strerror(errno));
		return -1;
	}
	return 0;
}

static void
content_src_close(struct content_src *s)
{
	if (s->fd != -1)
		close(s->fd);
	s->fd = -1;
	util_buf_clear(&s->line);
}

/* Octets of p up to and with its first CR or LF, or all of it. */
static size_t
content_line_end(const char *p, size_t len)
{
	const char *lf = memchr(p, '\n', len);
	const char *cr = memchr(p, '\r', lf != NULL ? (size_t)(lf - p) : len);
	const char *end = cr != NULL ? cr : lf;

	return end != NULL ? (size_t)(end - p) + 1 : len;
}

/*
 * Next piece into s->line: 1 got one, 0 end, -1 read error (*err_out).  A
 * piece that ends a line ends with one LF, whatever ended it in the spool.
 */
static int
content_src_next(struct content_src *s, const char **err_out)
{
	util_buf_reset(&s->line);
	s->bol = s->next_bol;
	s->eol = false;
	for (;;) {
		if (s->off == s->len) {
			if (s->fd == -1) {	/* memory: all of it seen */
				s->off = s->len = 0;
			} else {
				ssize_t r = read(s->fd, s->buf,
				    sizeof(s->buf));
				if (r == -1 && errno == EINTR)
					continue;
				if (r == -1) {
					*err_out = util_err("read %s: %s",
					    s->m->content_path,
					    strerror(errno));
					return -1;
				}
				s->off = 0;
				s->len = (size_t)r;
			}
			if (s->len == 0)
				return s->line.len > 0 ? 1 : 0;
		}
		if (s->skip_lf && s->data[s->off] == '\n')
			s->off++;
		s->skip_lf = false;
		if (s->off == s->len)
			continue;
		const char *p = s->data + s->off;
		size_t avail = s->len - s->off;
		size_t take = content_line_end(p, avail);
		if (take > CONTENT_LINE_MAX - s->line.len)
			take = CONTENT_LINE_MAX - s->line.len;
		util_buf_add(&s->line, p, take);
		s->off += take;
		if (s->line.len > 0 && s->line.data[s->line.len - 1] == '\r') {
			/* A line end, CRLF or a CR alone: kept as LF. */
			s->line.data[s->line.len - 1] = '\n';
			s->skip_lf = true;
		}
		if (s->line.len > 0 && s->line.data[s->line.len - 1] == '\n') {
			s->eol = true;
			s->next_bol = true;
			return 1;
		}
		if (s->line.len >= CONTENT_LINE_MAX) {
			s->next_bol = false;
			return 1;
		}
	}
}

/* ---- held in memory for one delivery ---- */

char *
deliver_content_hold(const struct deliver_msg *m, struct deliver_msg *out)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	ssize_t n;
	int fd;

	*out = *m;
	if (m->content != NULL || m->content_path == NULL ||
	    (fd = open(m->content_path, O_RDONLY | O_CLOEXEC)) == -1)
		return NULL;	/* the scan reports what is wrong */
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    st.st_size <= DELIVER_CONTENT_HOLD_MAX) {
		buf = xmalloc((size_t)st.st_size + 1);
		/* Up to the size fstat saw: spooled content never changes. */
		if ((n = util_read_upto(fd, buf, (size_t)st.st_size, -1)) ==
		    -1) {	/* streamed instead, which says why */
			free(buf);
			buf = NULL;
		} else
			len = (size_t)n;
	}
	close(fd);
	if (buf != NULL) {
		out->content = buf;
		out->content_len = len;
	}
	return buf;
}

/* ---- out as DATA ---- */

/* The content going out with CRLF, dot-stuffing and header rewriting. */
struct content_writer {
	const struct deliver_rewrite *rw;	/* NULL: none */
	struct deliver_canon k;		/* the bytes' way out */
	bool		 in_hdr, dropping, did_from, did_reply;
	uint64_t	 stuffed;	/* dots added by dot-stuffing */
	unsigned	 received;	/* Received: fields sent */
};

static void
content_writer_init(struct content_writer *w,
    const struct deliver_rewrite *rw,
    int (*put)(void *arg, const void *p, size_t n), void *arg)
{
	memset(w, 0, sizeof(*w));
	w->rw = rw;
	w->in_hdr = true;
	deliver_canon_init(&w->k, put, arg);
}

static int
canon_put(struct deliver_canon *k, const void *p, size_t n)
{
	return k->put(k->arg, p, n);
}

static int
content_put(struct content_writer *w, const void *p, size_t n)
{
	return canon_put(&w->k, p, n);
}

/*
 * Text of the current line: folded with CRLF SP before it would pass
 * CONTENT_WIRE_LINE_MAX (as Postfix's smtp_line_length_limit), which keeps
 * a header a header and never puts a '.' first on a line.
 */
static int
canon_text(struct deliver_canon *k, const char *p, size_t n)
{
	while (n > 0) {
		if (k->col == CONTENT_WIRE_LINE_MAX) {
			if (canon_put(k, "\r\n ", 3) == -1)
				return -1;
			k->col = 1;
		}
		size_t take = CONTENT_WIRE_LINE_MAX - k->col;
		if (take > n)
			take = n;
		if (canon_put(k, p, take) == -1)
			return -1;
		k->col += take;
		p += take;
		n -= take;
	}
	return 0;
}

static int
canon_eol(struct deliver_canon *k)
{
	k->col = 0;
	return canon_put(k, "\r\n", 2);
}

void
deliver_canon_init(struct deliver_canon *k,
    int (*put)(void *arg, const void *p, size_t n), void *arg)
{
	memset(k, 0, sizeof(*k));
	k->put = put;
	k->arg = arg;
}

int
deliver_canon_feed(struct deliver_canon *k, const char *p, size_t n)
{
	while (n > 0) {
		if (k->skip_lf) {
			k->skip_lf = false;
			if (*p == '\n') {
				p++;
				n--;
				continue;
			}
		}
		size_t len = content_line_end(p, n);
		char last = p[len - 1];
		bool eol = last == '\r' || last == '\n';
		size_t text = eol ? len - 1 : len;
		/* RFC 5321 4.5.2: a line starting with '.' gets one more. */
		if (!k->mid && text > 0 && p[0] == '.' &&
		    canon_text(k, ".", 1) == -1)
			return -1;
		if (text > 0 && canon_text(k, p, text) == -1)
			return -1;
		k->mid = text > 0 || k->mid;
		if (eol) {
			if (canon_eol(k) == -1)
				return -1;
			k->mid = false;
			k->skip_lf = last == '\r';
		}
		p += len;
		n -= len;
	}
	return 0;
}

int
deliver_canon_end(struct deliver_canon *k)
{
	if (k->mid && canon_eol(k) == -1)
		return -1;
	k->mid = false;
	return canon_put(k, ".\r\n", 3);
}

static int
content_put_hdr(struct content_writer *w, const char *name, const char *v)
{
	char *h = xasprintf("%s: %s\r\n", name, v);
	int r;

	for (char *p = h; p[2] != '\0'; p++)	/* admin text: no CR/LF */
		if (*p == '\r' || *p == '\n')
			*p = ' ';
	r = content_put(w, h, strlen(h));
	free(h);
	return r;
}

/* At the end of the header section: the rewrites not yet placed. */
static int
content_hdr_end(struct content_writer *w, const struct deliver_rewrite *rw)
{
	w->in_hdr = false;
	if (rw == NULL)
		return 0;
	if (rw->reply_to != NULL && !w->did_reply &&
	    content_put_hdr(w, "Reply-To", rw->reply_to) == -1)
		return -1;
	if (rw->from != NULL && !w->did_from &&
	    content_put_hdr(w, "From", rw->from) == -1)
		return -1;
	return 0;
}

/* One header line starting a field: keep, drop or replace it. */
static int
content_hdr_line(struct content_writer *w, const struct deliver_rewrite *rw,
    const char *l, size_t len)
{
	w->dropping = false;
	if (rw == NULL)
		return 0;
	if (rw->return_path != NULL && util_hdr_is(l, len, "Return-Path")) {
		w->dropping = true;
	} else if (rw->reply_to != NULL && util_hdr_is(l, len, "Reply-To")) {
		w->dropping = true;
		if (!w->did_reply) {
			w->did_reply = true;
			return content_put_hdr(w, "Reply-To", rw->reply_to);
		}
	} else if (rw->from != NULL && util_hdr_is(l, len, "From")) {
		w->dropping = true;
		if (!w->did_from) {
			w->did_from = true;
			return content_put_hdr(w, "From", rw->from);
		}
	}
	return 0;
}

static int
content_piece(struct content_writer *w, const struct content_src *src)
{
	const struct deliver_rewrite *rw = w->rw;
	const char *l = src->line.data;
	size_t len = src->line.len - (src->eol ? 1 : 0);

	if (w->in_hdr && src->bol) {
		if (len == 0 && src->eol) {
			if (content_hdr_end(w, rw) == -1)
				return -1;
		} else if (l[0] != ' ' && l[0] != '\t') {
			w->received += util_hdr_is(l, len, "Received");
			if (content_hdr_line(w, rw, l, len) == -1)
				return -1;
		}
	}
	if (w->in_hdr && w->dropping)
		return 0;
	/* RFC 5321 4.5.2: a line starting with '.' gets one more. */
	if (src->bol && len > 0 && l[0] == '.') {
		if (canon_text(&w->k, ".", 1) == -1)
			return -1;
		w->stuffed++;
	}
	if (canon_text(&w->k, l, len) == -1)
		return -1;
	if (src->eol && canon_eol(&w->k) == -1)
		return -1;
	return 0;
}

/* m's content through w, all but the final ".": 0, or -1. */
static int
content_write(struct content_writer *w, const struct deliver_msg *m,
    const char **err_out)
{
	const struct deliver_rewrite *rw = w->rw;
	struct content_src src;
	bool last_eol = true;
	int r;

	if (content_src_open(&src, m, err_out) == -1)
		return -1;
	if (rw != NULL && rw->return_path != NULL) {
		char *v = xasprintf("<%s>", rw->return_path);
		r = content_put_hdr(w, "Return-Path", v);
		free(v);
		if (r == -1)
			goto out;
	}
	while ((r = content_src_next(&src, err_out)) == 1) {
		last_eol = src.eol;
		if ((r = content_piece(w, &src)) == -1)
			goto out;
	}
	if (r == -1)
		goto out;
	r = -1;
	if (w->in_hdr && content_hdr_end(w, rw) == -1)
		goto out;
	if (!last_eol && canon_eol(&w->k) == -1)
		goto out;
	r = 0;
out:
	content_src_close(&src);
	return r;
}

int
deliver_content_stream(const struct deliver_msg *m,
    const struct deliver_rewrite *rw,
    int (*put)(void *arg, const void *p, size_t n), void *arg,
    const char **err_out)
{
	struct content_writer w;

	content_writer_init(&w, rw, put, arg);
	if (content_write(&w, m, err_out) == -1)
		return -1;
	return content_put(&w, ".\r\n", 3);
}

/* ---- what the content needs ---- */

/* The scan's sink and where it is: in the header block or past it. */
struct content_count {
	struct deliver_content_scan *sc;	/* borrowed: the result */
	bool		 in_body;	/* the empty line that ends the
					   header block went by */
	bool		 bol;		/* at the start of a line */
};

/* The bytes DATA would send, counted and looked at. */
static int
content_count_cb(void *arg, const void *p, size_t n)
{
	struct content_count *cc = arg;
	struct deliver_content_scan *sc = cc->sc;
	const unsigned char *b = p;

	sc->size += n;
	for (size_t i = 0; i < n && !sc->eight_bit; i++)
		sc->eight_bit = b[i] >= 0x80;
	/*
	 * The header block as sent, the writer's own fields with it, ends
	 * at its first empty line: the bytes are canonical, so a CR comes
	 * only before an LF.
	 */
	for (size_t i = 0; i < n && !cc->in_body; i++) {
		sc->hdr_eight_bit |= b[i] >= 0x80;
		if (b[i] == '\n') {
			cc->in_body = cc->bol;
			cc->bol = true;
		} else if (b[i] != '\r')
			cc->bol = false;
	}
	sc->nul |= memchr(p, '\0', n) != NULL;
	return 0;
}

int
deliver_content_scan(const struct deliver_msg *m,
    const struct deliver_rewrite *rw, struct deliver_content_scan *sc,
    const char **err_out)
{
	struct content_writer w;
	struct content_count cc = { .sc = sc, .bol = true };

	/* What DATA sends, rewrites and all, so the server is asked about
	 * the very bytes it would get. */
	memset(sc, 0, sizeof(*sc));
	content_writer_init(&w, rw, content_count_cb, &cc);
	if (content_write(&w, m, err_out) == -1)
		return -1;
	/* RFC 1870 3: CRLFs count, the stuffing dots and the final "."
	 * do not. */
	sc->size -= w.stuffed;
	sc->received = w.received;
	return 0;
}
