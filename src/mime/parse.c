/*
 * mime/parse.c: a message read with GMime into struct mime_msg.  The
 * parser keeps references into the file instead of copies, so only the
 * headers, the bounded text bodies and the kept attachments live in
 * memory.  A broken structure still gives a view: what GMime could read,
 * the raw body as text at worst, and parse_error.  Knows nothing of JSON.
 */
#include "mime/mime.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "mime/mime_private.h"

#define MIME_ERROR_MAX	300	/* bytes of parse_error */

struct mime_parse {
	struct mime_msg		*m;
	struct mime_limits	 lim;
	size_t			 attach_left;	/* attachment bytes to keep */
	unsigned		 leaves;
	bool			 hit_end;	/* the input ended too soon */
	struct util_buf		 err;		/* parse_error being built */
};

static __thread char	 mime_errbuf[256];

/* GMime's complaints that mean the structure could not be read as meant. */
static const char *
mime_warning_text(GMimeParserWarning w)
{
	switch (w) {
	case GMIME_WARN_MALFORMED_MULTIPART:
		return "multipart without close delimiter";
	case GMIME_WARN_INVALID_CONTENT_TYPE:
		return "invalid Content-Type";
	case GMIME_WARN_MALFORMED_MESSAGE:
		return "malformed message";
	case GMIME_CRIT_INVALID_HEADER_NAME:
		return "invalid header field";
	case GMIME_CRIT_CONFLICTING_HEADER:
		return "conflicting header fields";
	case GMIME_CRIT_MULTIPART_WITHOUT_BOUNDARY:
		return "multipart without boundary";
	case GMIME_CRIT_NESTING_OVERFLOW:
		return "MIME parts nested too deep";
	case GMIME_WARN_PART_WITHOUT_CONTENT:
		return "part without content";
	case GMIME_CRIT_PART_WITHOUT_HEADERS_OR_CONTENT:
		return "part without headers or content";
	default:
		return NULL;	/* minor: duplicates, bad encodings, ... */
	}
}

static void
mime_note(struct mime_parse *p, const char *what)
{
	if (p->err.len > 0 && strstr(util_buf_cstr(&p->err), what) != NULL)
		return;
	if (p->err.len + strlen(what) + 2 > MIME_ERROR_MAX)
		return;
	if (p->err.len > 0)
		util_buf_addstr(&p->err, "; ");
	util_buf_addstr(&p->err, what);
}

static void
mime_warning_cb(gint64 offset, GMimeParserWarning w, const gchar *item,
    gpointer arg)
{
	struct mime_parse *p = arg;
	const char *what = mime_warning_text(w);

	(void)offset;
	(void)item;
	if (w == GMIME_WARN_TRUNCATED_MESSAGE)
		p->hit_end = true;	/* judged once the body is known */
	else if (what != NULL)
		mime_note(p, what);
}

static char *
mime_dup(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

/* ---- headers ---- */

static void
mime_addrs_add(struct mime_addr_list *l, InternetAddressList *il)
{
	int n = il != NULL ? internet_address_list_length(il) : 0;

	for (int i = 0; i < n; i++) {
		InternetAddress *ia = internet_address_list_get_address(il, i);
		const char *name = internet_address_get_name(ia);

		if (INTERNET_ADDRESS_IS_GROUP(ia)) {
			mime_addrs_add(l, internet_address_group_get_members(
			    INTERNET_ADDRESS_GROUP(ia)));
			continue;
		}
		l->v = xreallocarray(l->v, l->n + 1, sizeof(*l->v));
		l->v[l->n].name = xstrdup(name != NULL ? name : "");
		l->v[l->n].address = xstrdup(internet_address_mailbox_get_addr(
		    INTERNET_ADDRESS_MAILBOX(ia)));
		l->n++;
	}
}

/* The list's display text (decoded) into *text_out; its mailboxes to l. */
static void
mime_addr_field(InternetAddressList *il, char **text_out,
    struct mime_addr_list *l)
{
	char *s;

	if (il == NULL || internet_address_list_length(il) == 0)
		return;
	s = internet_address_list_to_string(il, NULL, FALSE);
	*text_out = mime_dup(s);
	g_free(s);
	mime_addrs_add(l, il);
}

/*
 * RFC 5322 3.6.4: "<" id-left "@" id-right ">", the inside (len bytes)
 * read liberally: printable ASCII without blanks, "<" or ">", with
 * something either side of an "@".
 */
bool
mime_msgid_ok(const char *id, size_t len)
{
	const char *at = memchr(id, '@', len);

	if (at == NULL || at == id || id[len - 1] == '@')
		return false;
	for (size_t i = 0; i < len; i++)
		if (id[i] <= ' ' || id[i] >= 127 || id[i] == '<' ||
		    id[i] == '>')
			return false;
	return true;
}

/* Past the comment at s[i] == '(' (nested, with quoted pairs). */
static size_t
mime_skip_comment(const char *s, size_t i)
{
	unsigned depth = 0;

	for (; s[i] != '\0'; i++) {
		if (s[i] == '\\' && s[i + 1] != '\0')
			i++;
		else if (s[i] == '(')
			depth++;
		else if (s[i] == ')' && --depth == 0)
			return i + 1;
	}
	return i;
}

/*
 * The next msg-id of a field's text as written, from *pos on: a "<...>"
 * outside comments and quoted strings (an obsolete phrase before it is
 * passed over).  1: *id_out (malloc'd, without <>) is a well-formed id;
 * 0: the next one is not (*id_out untouched); -1: there is none.  Never
 * RFC 2047 decoded: an id is no place for encoded words.
 */
static int
mime_msgid_next(const char *s, size_t *pos, char **id_out)
{
	size_t i = *pos, start;

	while (s[i] != '\0' && s[i] != '<') {
		if (s[i] == '(') {
			i = mime_skip_comment(s, i);
			continue;
		}
		if (s[i] == '"')
			while (s[++i] != '\0' && s[i] != '"')
				if (s[i] == '\\' && s[i + 1] != '\0')
					i++;
		if (s[i] != '\0')
			i++;
	}
	if (s[i] == '\0') {
		*pos = i;
		return -1;
	}
	start = ++i;
	while (s[i] != '\0' && s[i] != '>' && s[i] != '<')
		i++;
	/* A "<" before the ">" starts the next one. */
	*pos = s[i] == '>' ? i + 1 : i;
	if (s[i] != '>' || !mime_msgid_ok(s + start, i - start))
		return 0;
	*id_out = xstrndup(s + start, i - start);
	return 1;
}

/* The first field named name as written (folded, undecoded); or NULL. */
static const char *
mime_raw_field(GMimeHeaderList *hl, const char *name)
{
	GMimeHeader *h = g_mime_header_list_get_header(hl, name);

	return h != NULL ? g_mime_header_get_raw_value(h) : NULL;
}

/* The first msg-id of the field name as written, if well-formed; or NULL. */
static char *
mime_msgid_field(GMimeHeaderList *hl, const char *name)
{
	const char *v = mime_raw_field(hl, name);
	size_t pos = 0;
	char *id = NULL;

	if (v != NULL)
		(void)mime_msgid_next(v, &pos, &id);
	return id;
}

/* How many msg-ids (well-formed or not) the field name holds as written. */
static size_t
mime_msgid_count(GMimeHeaderList *hl, const char *name)
{
	const char *v = mime_raw_field(hl, name);
	size_t pos = 0, n = 0;
	char *id = NULL;
	int rc;

	while (v != NULL && (rc = mime_msgid_next(v, &pos, &id)) != -1) {
		n++;
		if (rc == 1) {
			free(id);
			id = NULL;
		}
	}
	return n;
}

/* The well-formed ids of References: as written; the others left out. */
static void
mime_references(struct mime_msg *m, GMimeHeaderList *hl)
{
	const char *v = mime_raw_field(hl, "References");
	size_t pos = 0;
	char *id;
	int rc;

	while (v != NULL && (rc = mime_msgid_next(v, &pos, &id)) != -1) {
		if (rc == 0)
			continue;
		m->references = xreallocarray(m->references,
		    m->nreferences + 1, sizeof(*m->references));
		m->references[m->nreferences++] = id;
	}
}

static void
mime_headers(struct mime_parse *p, GMimeMessage *gm)
{
	struct mime_msg *m = p->m;
	GMimeHeaderList *hl = g_mime_object_get_header_list(GMIME_OBJECT(gm));
	int n = g_mime_header_list_get_count(hl);

	for (int i = 0; i < n; i++) {
		GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
		const char *name = g_mime_header_get_name(h);
		const char *v = g_mime_header_get_value(h);

		if (g_ascii_strcasecmp(name, "Received") == 0)
			m->nreceived++;
		if (m->nheaders >= p->lim.headers_max)
			continue;
		m->headers = xreallocarray(m->headers, m->nheaders + 1,
		    sizeof(*m->headers));
		m->headers[m->nheaders].name = xstrdup(name);
		m->headers[m->nheaders].value = xstrdup(v != NULL ? v : "");
		m->nheaders++;
	}
	m->subject = mime_dup(g_mime_message_get_subject(gm));
	m->date = mime_dup(mime_msg_header(m, "Date"));
	/* Ids from the text as written: the decoded values are no ids. */
	m->message_id = mime_msgid_field(hl, "Message-ID");
	m->in_reply_to = mime_msgid_field(hl, "In-Reply-To");
	m->in_reply_to_alone = m->in_reply_to != NULL &&
	    mime_msgid_count(hl, "In-Reply-To") == 1;
	mime_references(m, hl);
	mime_addr_field(g_mime_message_get_from(gm), &m->from, &m->from_list);
	mime_addr_field(g_mime_message_get_to(gm), &m->to, &m->to_list);
	mime_addr_field(g_mime_message_get_cc(gm), &m->cc, &m->cc_list);
	mime_addr_field(g_mime_message_get_reply_to(gm), &m->reply_to,
	    &m->reply_to_list);
}

/* ---- parts ---- */

struct mime_collect {
	struct util_buf	 buf;
	size_t		 max;
	bool		 over;		/* more than max came */
};

static bool
mime_collect_cb(void *arg, const char *chunk, size_t n)
{
	struct mime_collect *c = arg;

	if (c->over)
		return true;		/* counting only */
	if (n > c->max - c->buf.len) {
		c->over = true;
		return true;
	}
	util_buf_add(&c->buf, chunk, n);
	return true;
}

static bool
mime_text_cb(void *arg, const char *chunk, size_t n)
{
	struct mime_collect *c = arg;

	if (n > c->max - c->buf.len) {
		util_buf_add(&c->buf, chunk, c->max - c->buf.len);
		c->over = true;
		return false;		/* text is cut at max */
	}
	util_buf_add(&c->buf, chunk, n);
	return true;
}

/*
 * raw[0..len) in charset into b as UTF-8 of max bytes at most: text_max
 * bounds what the view holds, and a charset may take more bytes in UTF-8
 * than it did as read.  cut: raw itself was cut short.
 */
static void
mime_body_set(struct mime_body *b, const char *raw, size_t len,
    const char *charset, bool cut, size_t max)
{
	struct util_buf u = { 0 };
	const char *used = mime_to_utf8(raw, len, charset, cut, &u);

	if (u.len > max) {
		size_t n = util_utf8_cut(u.data, max);

		u.len = n;
		u.data[n] = '\0';
		cut = true;
	}
	b->s = u.data != NULL ? u.data : xstrdup("");
	b->len = u.len;
	b->truncated = cut;
	b->charset = xstrdup(used);
}

static void
mime_text_part(struct mime_parse *p, GMimePart *part, struct mime_body *b)
{
	struct mime_collect c = { .max = p->lim.text_max };
	const char *cs = g_mime_object_get_content_type_parameter(
	    GMIME_OBJECT(part), "charset");

	if (mime_part_read(part, mime_text_cb, &c) == -1)
		mime_note(p, "unreadable part");
	mime_body_set(b, c.buf.data != NULL ? c.buf.data : "", c.buf.len, cs,
	    c.over, p->lim.text_max);
	util_buf_clear(&c.buf);
}

static bool
mime_is_type(GMimeObject *o, const char *type, const char *subtype)
{
	GMimeContentType *ct = g_mime_object_get_content_type(o);

	return ct != NULL && g_mime_content_type_is_type(ct, type, subtype);
}

/*
 * RFC 2045 5.2: a part whose Content-Type cannot be read is text/plain.
 * GMime's parser reads it so (as a text part) but gives the object
 * application/octet-stream as its type.
 */
static bool
mime_type_unreadable(GMimeObject *o)
{
	return GMIME_IS_TEXT_PART(o) && !mime_is_type(o, "text", "*");
}

/* o's "type/subtype" in lower case (malloc'd). */
static char *
mime_type_of(GMimeObject *o)
{
	GMimeContentType *ct = g_mime_object_get_content_type(o);
	char *type, *s;

	if (mime_type_unreadable(o) || ct == NULL)
		return xstrdup("text/plain");
	type = g_mime_content_type_get_mime_type(ct);
	s = util_strlower(xstrdup(type != NULL ? type :
	    "application/octet-stream"));
	g_free(type);
	return s;
}

static struct mime_attachment *
mime_att_new(struct mime_parse *p, GMimeObject *o)
{
	struct mime_msg *m = p->m;
	GMimeContentDisposition *cd = g_mime_object_get_content_disposition(o);
	struct mime_attachment *a;

	m->atts = xreallocarray(m->atts, m->natts + 1, sizeof(*m->atts));
	a = &m->atts[m->natts++];
	memset(a, 0, sizeof(*a));
	a->content_type = mime_type_of(o);
	if (cd != NULL && g_mime_content_disposition_get_disposition(cd) !=
	    NULL)
		a->disposition = util_strlower(xstrdup(
		    g_mime_content_disposition_get_disposition(cd)));
	a->content_id = mime_dup(g_mime_object_get_content_id(o));
	return a;
}

static void
mime_att_part(struct mime_parse *p, GMimePart *part)
{
	struct mime_attachment *a = mime_att_new(p, GMIME_OBJECT(part));
	struct mime_collect c = { .max = p->attach_left };
	int64_t n;

	a->filename = mime_dup(g_mime_part_get_filename(part));
	n = mime_part_read(part, mime_collect_cb, &c);
	if (n == -1)
		mime_note(p, "unreadable part");
	a->size = n > 0 ? (uint64_t)n : 0;
	if (!c.over && n >= 0) {
		a->data = (unsigned char *)c.buf.data;
		a->data_len = c.buf.len;
		p->attach_left -= c.buf.len;
		c.buf.data = NULL;
	}
	util_buf_clear(&c.buf);
}

/* The attached message inner as written (size bytes) into a's data. */
static void
mime_att_message_keep(struct mime_parse *p, struct mime_attachment *a,
    GMimeObject *inner, size_t size)
{
	GMimeStream *mem = g_mime_stream_mem_new();
	GByteArray *ba;

	g_mime_object_write_to_stream(inner, NULL, mem);
	ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
	if (ba->len == size) {
		a->data = xmalloc(size);
		memcpy(a->data, ba->data, size);
		a->data_len = size;
		p->attach_left -= size;
	}
	g_object_unref(mem);
}

/*
 * An attached message: its size as written, and its content too when
 * that fits in what is left of attach_max (written a second time then,
 * so a large message never sits in memory).
 */
static void
mime_att_message(struct mime_parse *p, GMimeMessagePart *mp)
{
	GMimeObject *o = GMIME_OBJECT(mp);
	struct mime_attachment *a = mime_att_new(p, o);
	GMimeMessage *inner = g_mime_message_part_get_message(mp);
	GMimeStream *null = g_mime_stream_null_new();
	const char *name = g_mime_object_get_content_disposition_parameter(o,
	    "filename");

	if (name == NULL)
		name = g_mime_object_get_content_type_parameter(o, "name");
	a->filename = mime_dup(name);
	if (inner != NULL) {
		g_mime_object_write_to_stream(GMIME_OBJECT(inner), NULL, null);
		a->size = GMIME_STREAM_NULL(null)->written;
		if (a->size > 0 && a->size <= p->attach_left)
			mime_att_message_keep(p, a, GMIME_OBJECT(inner),
			    (size_t)a->size);
	}
	g_object_unref(null);
}

static void
mime_leaf(struct mime_parse *p, GMimePart *part)
{
	GMimeObject *o = GMIME_OBJECT(part);
	bool attached = g_mime_part_is_attachment(part);

	if (p->leaves++ >= p->lim.parts_max) {
		p->m->parts_skipped++;
		return;
	}
	if (!attached && p->m->text.s == NULL &&
	    (mime_is_type(o, "text", "plain") || mime_type_unreadable(o)))
		mime_text_part(p, part, &p->m->text);
	else if (!attached && p->m->html.s == NULL &&
	    mime_is_type(o, "text", "html"))
		mime_text_part(p, part, &p->m->html);
	else
		mime_att_part(p, part);
}

static void
mime_walk(struct mime_parse *p, GMimeObject *o)
{
	if (GMIME_IS_MULTIPART(o)) {
		GMimeMultipart *mp = GMIME_MULTIPART(o);
		int n = g_mime_multipart_get_count(mp);

		/* RFC 2046 5.1.1: one body part at least. */
		if (n == 0 && g_mime_object_get_content_type_parameter(o,
		    "boundary") != NULL)
			mime_note(p, "multipart without parts");
		for (int i = 0; i < n; i++)
			mime_walk(p, g_mime_multipart_get_part(mp, i));
	} else if (GMIME_IS_MESSAGE_PART(o)) {
		if (p->leaves++ < p->lim.parts_max)
			mime_att_message(p, GMIME_MESSAGE_PART(o));
		else
			p->m->parts_skipped++;
	} else if (GMIME_IS_PART(o)) {
		mime_leaf(p, GMIME_PART(o));
	}
}

/* ---- the whole ---- */

/*
 * The raw bytes from offset on, as text: what a reader gets of a message
 * whose structure could not be read.
 */
static void
mime_raw_text(struct mime_parse *p, GMimeStream *s, gint64 offset)
{
	struct mime_collect c = { .max = p->lim.text_max };
	char buf[8192];
	ssize_t n;
	size_t skip;

	if (offset < 0 || g_mime_stream_seek(s, offset, GMIME_STREAM_SEEK_SET) ==
	    -1)
		return;
	/* The blank line that ends the header is not body. */
	n = g_mime_stream_read(s, buf, sizeof(buf));
	skip = n > 0 && buf[0] == '\n' ? 1 : n > 1 && buf[0] == '\r' &&
	    buf[1] == '\n' ? 2 : 0;
	if (n > 0 && mime_text_cb(&c, buf + skip, (size_t)n - skip))
		while ((n = g_mime_stream_read(s, buf, sizeof(buf))) > 0)
			if (!mime_text_cb(&c, buf, (size_t)n))
				break;
	free(p->m->text.s);
	free(p->m->text.charset);
	mime_body_set(&p->m->text, c.buf.data != NULL ? c.buf.data : "",
	    c.buf.len, NULL, c.over, p->lim.text_max);
	util_buf_clear(&c.buf);
}

static void
mime_limits_fill(struct mime_limits *l, const struct mime_limits *in)
{
	if (in != NULL)
		*l = *in;
	if (l->text_max == 0)
		l->text_max = MIME_TEXT_MAX_DEFAULT;
	if (l->parts_max == 0)
		l->parts_max = MIME_PARTS_MAX_DEFAULT;
	if (l->headers_max == 0)
		l->headers_max = MIME_HEADERS_MAX_DEFAULT;
}

static struct mime_msg *
mime_parse_stream(GMimeStream *s, const struct mime_limits *lim)
{
	static const char *fallback[] = { "UTF-8", "windows-1252", NULL };
	struct mime_parse p = { .m = xcalloc(1, sizeof(*p.m)) };
	GMimeParserOptions *po = g_mime_parser_options_new();
	GMimeParser *parser = g_mime_parser_new_with_stream(s);
	GMimeMessage *gm;

	mime_limits_fill(&p.lim, lim);
	p.attach_left = p.lim.attach_max;
	g_mime_parser_options_set_warning_callback(po, mime_warning_cb, &p);
	g_mime_parser_options_set_fallback_charsets(po, fallback);
	g_mime_parser_set_persist_stream(parser, TRUE);
	gm = g_mime_parser_construct_message(parser, po);
	if (gm == NULL) {
		mime_note(&p, "no message header");
		mime_raw_text(&p, s, 0);
	} else {
		GMimeObject *body = g_mime_message_get_mime_part(gm);

		mime_headers(&p, gm);
		p.m->content_type = body != NULL ? mime_type_of(body) :
		    xstrdup("text/plain");
		/*
		 * The input ended inside a header or a multipart.  In a
		 * multipart body that means its close delimiter is missing
		 * (RFC 2046 5.1.1); at the end of the header of any other
		 * message it is no fault (RFC 5322 3.5: the body is optional).
		 */
		if (p.hit_end && body != NULL && GMIME_IS_MULTIPART(body))
			mime_note(&p, "multipart without close delimiter");
		if (body != NULL)
			mime_walk(&p, body);
		/* The structure failed and no text came out: the raw body. */
		if (p.err.len > 0 && p.m->text.s == NULL && p.m->html.s == NULL)
			mime_raw_text(&p, s,
			    g_mime_parser_get_headers_end(parser));
		g_object_unref(gm);
	}
	if (p.err.len > 0)
		p.m->parse_error = xstrdup(util_buf_cstr(&p.err));
	util_buf_clear(&p.err);
	g_object_unref(parser);
	g_mime_parser_options_free(po);
	return p.m;
}

struct mime_msg *
mime_parse_file(const char *path, const struct mime_limits *lim,
    const char **err_out)
{
	struct mime_msg *m;
	GMimeStream *s;
	int fd;

	mime_gmime_init();
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		snprintf(mime_errbuf, sizeof(mime_errbuf), "open(%s): %s", path,
		    strerror(errno));
		*err_out = mime_errbuf;
		return NULL;
	}
	s = g_mime_stream_fs_new(fd);	/* owns fd now */
	m = mime_parse_stream(s, lim);
	g_object_unref(s);
	return m;
}

struct mime_msg *
mime_parse_mem(const void *buf, size_t len, const struct mime_limits *lim)
{
	struct mime_msg *m;
	GMimeStream *s;

	mime_gmime_init();
	s = g_mime_stream_mem_new_with_buffer(buf, len);
	m = mime_parse_stream(s, lim);
	g_object_unref(s);
	return m;
}

const char *
mime_msg_header(const struct mime_msg *m, const char *name)
{
	for (size_t i = 0; i < m->nheaders; i++)
		if (g_ascii_strcasecmp(m->headers[i].name, name) == 0)
			return m->headers[i].value;
	return NULL;
}

static void
mime_addr_list_clear(struct mime_addr_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].name);
		free(l->v[i].address);
	}
	free(l->v);
}

void
mime_msg_free(struct mime_msg **mp)
{
	struct mime_msg *m = *mp;

	if (m == NULL)
		return;
	*mp = NULL;
	for (size_t i = 0; i < m->nheaders; i++) {
		free(m->headers[i].name);
		free(m->headers[i].value);
	}
	free(m->headers);
	free(m->subject);
	free(m->date);
	free(m->message_id);
	free(m->in_reply_to);
	free(m->from);
	free(m->to);
	free(m->cc);
	free(m->reply_to);
	mime_addr_list_clear(&m->from_list);
	mime_addr_list_clear(&m->to_list);
	mime_addr_list_clear(&m->cc_list);
	mime_addr_list_clear(&m->reply_to_list);
	for (size_t i = 0; i < m->nreferences; i++)
		free(m->references[i]);
	free(m->references);
	free(m->content_type);
	free(m->text.s);
	free(m->text.charset);
	free(m->html.s);
	free(m->html.charset);
	for (size_t i = 0; i < m->natts; i++) {
		free(m->atts[i].filename);
		free(m->atts[i].content_type);
		free(m->atts[i].disposition);
		free(m->atts[i].content_id);
		free(m->atts[i].data);
	}
	free(m->atts);
	free(m->parse_error);
	free(m);
}
