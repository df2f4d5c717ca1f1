/*
 * mime/build.c: reply messages built with GMime: the RFC 5322 and RFC 3834
 * header fields, text and HTML as multipart/alternative, attachments with
 * guessed types, or an agent's own MIME body under our header.  Every
 * part gets a 7-bit transfer encoding, so the reply can go anywhere; the
 * display name of a mailbox, for other builders of header fields too.
 * Knows nothing of where the reply goes.
 */
#include "mime/mime.h"

#include <gio/gio.h>
#include <string.h>

#include "mime/mime_private.h"

#define MIME_SNIFF_MAX	(64u * 1024)	/* bytes looked at for a header */

bool
mime_looks_like_message(const char *s, size_t len)
{
	size_t n = len < MIME_SNIFF_MAX ? len : MIME_SNIFF_MAX;
	const char *end = s + n;
	bool mime = false;

	while (s < end) {
		const char *nl = memchr(s, '\n', (size_t)(end - s));
		size_t ll = (nl != NULL ? nl : end) - s;
		size_t name = 0;

		if (ll > 0 && s[ll - 1] == '\r')
			ll--;
		if (ll == 0)
			return mime;	/* the blank line ends the header */
		if (s[0] != ' ' && s[0] != '\t') {	/* not a folded line */
			while (name < ll && s[name] > ' ' && s[name] < 127 &&
			    s[name] != ':')
				name++;
			if (name == 0 || name == ll || s[name] != ':')
				return false;
			if (name == 12 && (g_ascii_strncasecmp(s,
			    "MIME-Version", 12) == 0 || g_ascii_strncasecmp(s,
			    "Content-Type", 12) == 0))
				mime = true;
		}
		if (nl == NULL)
			break;
		s = nl + 1;
	}
	return false;
}

/*
 * The best 7-bit transfer encoding for every leaf under o; text stays
 * readable (quoted-printable rather than base64).
 */
static void
mime_build_7bit_cb(GMimeObject *parent, GMimeObject *o, gpointer arg)
{
	GMimeContentEncoding enc;

	(void)parent;
	(void)arg;
	if (!GMIME_IS_PART(o))
		return;
	enc = g_mime_part_get_best_content_encoding(GMIME_PART(o),
	    GMIME_ENCODING_CONSTRAINT_7BIT);
	if (enc == GMIME_CONTENT_ENCODING_BASE64 && GMIME_IS_TEXT_PART(o))
		enc = GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE;
	g_mime_part_set_content_encoding(GMIME_PART(o), enc);
}

char *
mime_encode_phrase(const char *text)
{
	const unsigned char *p = (const unsigned char *)text;
	const unsigned char *end = p + strlen(text);
	struct util_buf clean = { 0 };
	char *enc, *s;
	size_t k;

	mime_gmime_init();
	/* GMime would pass bytes that are not UTF-8 on as they are. */
	for (; p < end; p++) {
		if (*p >= 0x80 && (k = util_utf8_len(p, end)) > 0) {
			util_buf_add(&clean, p, k);
			p += k - 1;
		} else if (*p >= 0x80)
			util_buf_addstr(&clean, "\xef\xbf\xbd");	/* U+FFFD */
		else if (*p >= 0x20 && *p != 0x7f)
			util_buf_add(&clean, p, 1);
	}
	enc = g_mime_utils_header_encode_phrase(NULL, util_buf_cstr(&clean),
	    "utf-8");
	s = xstrdup(enc != NULL ? enc : "");
	g_free(enc);
	util_buf_clear(&clean);
	return s;
}

/* Content of len bytes at data (borrowed during the call) into p. */
static void
mime_build_content(GMimePart *p, const void *data, size_t len)
{
	GMimeStream *ms = g_mime_stream_mem_new_with_buffer(data, len);
	GMimeDataWrapper *w = g_mime_data_wrapper_new_with_stream(ms,
	    GMIME_CONTENT_ENCODING_DEFAULT);

	g_mime_part_set_content(p, w);
	g_object_unref(w);
	g_object_unref(ms);
	mime_build_7bit_cb(NULL, GMIME_OBJECT(p), NULL);
}

/* A text part, always in UTF-8 (GMime would pick Latin-1 when it can). */
static GMimeObject *
mime_build_text(const char *subtype, const char *text)
{
	GMimeTextPart *tp = g_mime_text_part_new_with_subtype(subtype);

	g_mime_object_set_content_type_parameter(GMIME_OBJECT(tp), "charset",
	    "utf-8");
	mime_build_content(GMIME_PART(tp), text, strlen(text));
	return GMIME_OBJECT(tp);
}

static GMimeObject *
mime_build_file(const struct mime_file *f)
{
	gboolean unsure;
	char *guessed = NULL;
	const char *type = f->content_type;
	GMimeContentType *ct;
	GMimePart *p;

	if (type == NULL) {
		guessed = g_content_type_guess(f->filename, f->data, f->len,
		    &unsure);
		type = guessed != NULL && strchr(guessed, '/') != NULL ?
		    guessed : "application/octet-stream";
	}
	ct = g_mime_content_type_parse(NULL, type);
	p = g_mime_part_new();
	g_mime_object_set_content_type(GMIME_OBJECT(p), ct);
	if (g_mime_content_type_is_type(ct, "text", "*") &&
	    g_utf8_validate(f->data, (gssize)f->len, NULL))
		g_mime_object_set_content_type_parameter(GMIME_OBJECT(p),
		    "charset", "utf-8");
	g_object_unref(ct);
	g_free(guessed);
	if (f->filename != NULL)
		g_mime_part_set_filename(p, f->filename);
	g_mime_object_set_disposition(GMIME_OBJECT(p),
	    GMIME_DISPOSITION_ATTACHMENT);
	mime_build_content(p, f->data, f->len);
	return GMIME_OBJECT(p);
}

/* text, html or both (alternative), then the files (mixed); or NULL. */
static GMimeObject *
mime_build_body(const struct mime_reply *r)
{
	GMimeObject *body = NULL;

	if (r->text != NULL && r->html != NULL) {
		GMimeMultipart *alt = g_mime_multipart_new_with_subtype(
		    "alternative");
		GMimeObject *t = mime_build_text("plain", r->text);
		GMimeObject *h = mime_build_text("html", r->html);

		/* RFC 2046 5.1.4: the plainest first. */
		g_mime_multipart_add(alt, t);
		g_mime_multipart_add(alt, h);
		g_object_unref(t);
		g_object_unref(h);
		body = GMIME_OBJECT(alt);
	} else if (r->text != NULL || r->html != NULL) {
		body = r->text != NULL ? mime_build_text("plain", r->text) :
		    mime_build_text("html", r->html);
	}
	if (r->nfiles == 0)
		return body;
	GMimeMultipart *mixed = g_mime_multipart_new_with_subtype("mixed");

	if (body != NULL) {
		g_mime_multipart_add(mixed, body);
		g_object_unref(body);
	}
	for (size_t i = 0; i < r->nfiles; i++) {
		GMimeObject *f = mime_build_file(&r->files[i]);

		g_mime_multipart_add(mixed, f);
		g_object_unref(f);
	}
	return GMIME_OBJECT(mixed);
}

/* The agent's own message: its body (7-bit) and *subject_out. */
static GMimeObject *
mime_build_from_mime(const struct mime_reply *r, char **subject_out)
{
	GMimeStream *s = g_mime_stream_mem_new_with_buffer(r->mime,
	    r->mime_len);
	GMimeParser *parser = g_mime_parser_new_with_stream(s);
	GMimeMessage *src = g_mime_parser_construct_message(parser, NULL);
	GMimeObject *body = NULL;

	g_object_unref(parser);
	g_object_unref(s);
	if (src == NULL)
		return NULL;
	if ((body = g_mime_message_get_mime_part(src)) != NULL) {
		g_object_ref(body);
		g_mime_message_foreach(src, mime_build_7bit_cb, NULL);
		if (GMIME_IS_PART(body))
			mime_build_7bit_cb(NULL, body, NULL);
		if (g_mime_message_get_subject(src) != NULL)
			*subject_out = xstrdup(g_mime_message_get_subject(src));
	}
	g_object_unref(src);
	return body;
}

static char *
mime_build_subject(const struct mime_reply *r, const char *own)
{
	char *base;
	char *s;

	if (r->subject != NULL)
		return xstrdup(r->subject);
	if (own != NULL)
		return xstrdup(own);
	base = mime_subject_base(r->orig != NULL ? r->orig->subject : NULL);
	s = base[0] != '\0' ? xasprintf("Re: %s", base) : xstrdup("Re:");
	free(base);
	return s;
}

/*
 * In-Reply-To and References (RFC 5322 3.6.4) from the original: its
 * references, or without any its In-Reply-To when that holds a single id,
 * then its Message-ID.  Only well-formed ids are written, so no value here
 * can hold a line end whatever the view was given.
 */
static void
mime_build_thread(GMimeMessage *gm, const struct mime_msg *orig)
{
	struct util_buf refs = { 0 };
	GMimeObject *o = GMIME_OBJECT(gm);
	const char *id = orig != NULL ? orig->message_id : NULL;

	if (orig == NULL)
		return;
	if (id != NULL && !mime_msgid_ok(id, strlen(id)))
		id = NULL;
	for (size_t i = 0; i < orig->nreferences; i++) {
		const char *ref = orig->references[i];

		if (mime_msgid_ok(ref, strlen(ref)))
			util_buf_printf(&refs, "%s<%s>", refs.len > 0 ? " " :
			    "", ref);
	}
	if (orig->nreferences == 0 && orig->in_reply_to_alone &&
	    mime_msgid_ok(orig->in_reply_to, strlen(orig->in_reply_to)))
		util_buf_printf(&refs, "<%s>", orig->in_reply_to);
	if (id != NULL) {
		char *irt = xasprintf("<%s>", id);

		g_mime_object_set_header(o, "In-Reply-To", irt, NULL);
		free(irt);
		util_buf_printf(&refs, "%s<%s>", refs.len > 0 ? " " : "", id);
	}
	if (refs.len > 0)
		g_mime_object_set_header(o, "References",
		    util_buf_cstr(&refs), NULL);
	util_buf_clear(&refs);
}

static void
mime_build_header(GMimeMessage *gm, const struct mime_reply *r,
    const char *subject)
{
	GDateTime *dt = g_date_time_new_from_unix_local(r->date);
	char *id = g_mime_utils_generate_message_id(r->hostname != NULL ?
	    r->hostname : "localhost");

	g_mime_message_add_mailbox(gm, GMIME_ADDRESS_TYPE_FROM,
	    r->from_name != NULL ? r->from_name : "", r->from);
	g_mime_message_add_mailbox(gm, GMIME_ADDRESS_TYPE_TO, "", r->to);
	g_mime_message_set_subject(gm, subject, "utf-8");
	if (dt != NULL) {
		g_mime_message_set_date(gm, dt);
		g_date_time_unref(dt);
	}
	g_mime_message_set_message_id(gm, id);
	g_free(id);
	mime_build_thread(gm, r->orig);
	/* RFC 3834 5 */
	g_mime_object_set_header(GMIME_OBJECT(gm), "Auto-Submitted",
	    r->auto_submitted != NULL ? r->auto_submitted : "auto-replied",
	    NULL);
	g_mime_object_set_header(GMIME_OBJECT(gm), "MIME-Version", "1.0",
	    NULL);
}

static bool
mime_has_control(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < ' ' || *s == 127)
			return true;
	return false;
}

int
mime_reply_build(const struct mime_reply *r, struct util_buf *out,
    const char **err_out)
{
	char *own_subject = NULL, *subject;
	GMimeObject *body;
	GMimeMessage *gm;
	GMimeStream *ms;
	GMimeFormatOptions *fo;
	GByteArray *ba;

	mime_gmime_init();
	if (r->from == NULL || r->to == NULL || r->to[0] == '\0') {
		*err_out = "no sender or recipient";
		return -1;
	}
	/* GMime writes an addr-spec as it is: a line end would end From: or
	 * To: and start a field of the sender's choosing. */
	if (mime_has_control(r->from) || mime_has_control(r->to)) {
		*err_out = "control character in the sender or recipient";
		return -1;
	}
	body = r->mime != NULL ? mime_build_from_mime(r, &own_subject) :
	    mime_build_body(r);
	if (body == NULL) {
		*err_out = r->mime != NULL ? "the reply is not a MIME message" :
		    "empty reply";
		return -1;
	}
	gm = g_mime_message_new(TRUE);
	subject = mime_build_subject(r, own_subject);
	mime_build_header(gm, r, subject);
	g_mime_message_set_mime_part(gm, body);
	g_object_unref(body);
	fo = g_mime_format_options_new();
	g_mime_format_options_set_newline_format(fo, GMIME_NEWLINE_FORMAT_UNIX);
	ms = g_mime_stream_mem_new();
	g_mime_object_write_to_stream(GMIME_OBJECT(gm), fo, ms);
	ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(ms));
	util_buf_add(out, ba->data, ba->len);
	util_buf_cstr(out);
	g_object_unref(ms);
	g_mime_format_options_free(fo);
	g_object_unref(gm);
	free(subject);
	free(own_subject);
	return 0;
}
