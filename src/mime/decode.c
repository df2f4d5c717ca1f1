/*
 * mime/decode.c: GMime set-up, a part's content with its transfer encoding
 * undone (streamed in chunks, never whole), text in any charset turned
 * into valid UTF-8, and a Content-Type value read.  Knows nothing of what
 * the text is for.
 */
#include "mime/mime.h"

#include <errno.h>
#include <iconv.h>
#include <pthread.h>
#include <string.h>

#include "mime/mime_private.h"

#define MIME_CHUNK	16384

static pthread_once_t	mime_once = PTHREAD_ONCE_INIT;

static void
mime_gmime_init_once(void)
{
	g_mime_init();
}

void
mime_gmime_init(void)
{
	pthread_once(&mime_once, mime_gmime_init_once);
}

int64_t
mime_part_read(GMimePart *part, mime_chunk_fn *fn, void *arg)
{
	GMimeDataWrapper *w = g_mime_part_get_content(part);
	GMimeContentEncoding enc;
	GMimeStream *raw, *fs;
	char *buf;
	int64_t total = 0;
	ssize_t n;

	if (w == NULL || (raw = g_mime_data_wrapper_get_stream(w)) == NULL)
		return 0;
	if (g_mime_stream_reset(raw) == -1)
		return -1;
	fs = g_mime_stream_filter_new(raw);
	enc = g_mime_data_wrapper_get_encoding(w);
	switch (enc) {
	case GMIME_CONTENT_ENCODING_BASE64:
	case GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE:
	case GMIME_CONTENT_ENCODING_UUENCODE: {
		GMimeFilter *dec = g_mime_filter_basic_new(enc, FALSE);

		g_mime_stream_filter_add(GMIME_STREAM_FILTER(fs), dec);
		g_object_unref(dec);
		break;
	}
	default:
		break;
	}
	buf = xmalloc(MIME_CHUNK);
	while ((n = g_mime_stream_read(fs, buf, MIME_CHUNK)) > 0) {
		total += n;
		if (!fn(arg, buf, (size_t)n))
			break;
	}
	free(buf);
	g_object_unref(fs);
	return n < 0 ? -1 : total;
}

/* U+FFFD, the replacement character. */
static const char mime_repl[] = "\xef\xbf\xbd";

/* iconv from cd into out; a byte that does not convert becomes U+FFFD. */
static void
mime_iconv_lossy(iconv_t cd, const char *in, size_t len, bool cut,
    struct util_buf *out)
{
	char *inp = (char *)in;
	size_t inleft = len;
	char tmp[4096];

	while (inleft > 0) {
		char *o = tmp;
		size_t oleft = sizeof(tmp);
		size_t rc = iconv(cd, &inp, &inleft, &o, &oleft);

		util_buf_add(out, tmp, sizeof(tmp) - oleft);
		if (rc != (size_t)-1 || errno == E2BIG)
			continue;
		if (errno == EINVAL && cut)
			break;		/* a character cut at the end */
		util_buf_addstr(out, mime_repl);	/* EILSEQ, or EINVAL */
		inp++;
		inleft--;
		iconv(cd, NULL, NULL, NULL, NULL);
	}
	/* Flush a stateful encoding's shift back to the initial state. */
	char *o = tmp;
	size_t oleft = sizeof(tmp);
	iconv(cd, NULL, NULL, &o, &oleft);
	util_buf_add(out, tmp, sizeof(tmp) - oleft);
}

/* p[0..len) is a character cut short at the end of a cut text. */
static bool
mime_is_cut_char(const char *p, size_t len, bool cut)
{
	return cut && len < 4 && g_utf8_get_char_validated(p, (gssize)len) ==
	    (gunichar)-2;
}

/* Valid UTF-8 of in, invalid bytes replaced; a cut tail dropped. */
static void
mime_utf8_clean(const char *in, size_t len, bool cut, struct util_buf *out)
{
	const char *end;

	while (len > 0) {
		if (g_utf8_validate(in, (gssize)len, &end)) {
			util_buf_add(out, in, len);
			return;
		}
		size_t good = (size_t)(end - in);

		util_buf_add(out, in, good);
		in += good;
		len -= good;
		if (*in == '\0') {	/* NULs are dropped */
			in++;
			len--;
			continue;
		}
		if (mime_is_cut_char(in, len, cut))
			return;
		util_buf_addstr(out, mime_repl);
		in++;
		len--;
	}
}

/* in is UTF-8 but maybe for a character cut at the end of a cut text. */
static bool
mime_is_utf8(const char *in, size_t len, bool cut)
{
	const char *end;

	if (g_utf8_validate(in, (gssize)len, &end))
		return true;
	return mime_is_cut_char(end, len - (size_t)(end - in), cut);
}

static bool
mime_charset_is_utf8(const char *cs)
{
	return cs == NULL || g_ascii_strcasecmp(cs, "utf-8") == 0 ||
	    g_ascii_strcasecmp(cs, "utf8") == 0 ||
	    g_ascii_strcasecmp(cs, "us-ascii") == 0 ||
	    g_ascii_strcasecmp(cs, "ascii") == 0;
}

const char *
mime_to_utf8(const char *in, size_t len, const char *charset, bool cut,
    struct util_buf *out)
{
	const char *used = charset;
	iconv_t cd;

	if (mime_charset_is_utf8(charset)) {
		/* Undeclared 8-bit text that is not UTF-8: the usual case is
		 * Windows' Latin-1. */
		if (mime_is_utf8(in, len, cut) ||
		    (charset != NULL && g_ascii_strncasecmp(charset, "utf",
		    3) == 0)) {
			mime_utf8_clean(in, len, cut, out);
			util_buf_cstr(out);
			return charset != NULL ? charset : "utf-8";
		}
		used = "windows-1252";
	}
	cd = g_mime_iconv_open("UTF-8", used);
	if (cd == (iconv_t)-1) {
		/* An unknown charset: keep what is valid UTF-8. */
		mime_utf8_clean(in, len, cut, out);
		util_buf_cstr(out);
		return "utf-8";
	}
	struct util_buf tmp = { 0 };

	mime_iconv_lossy(cd, in, len, cut, &tmp);
	g_mime_iconv_close(cd);
	/* NULs and anything iconv let through invalid are cleaned too. */
	mime_utf8_clean(tmp.data != NULL ? tmp.data : "", tmp.len, false, out);
	util_buf_clear(&tmp);
	util_buf_cstr(out);
	return used;
}

void
mime_text_utf8(const char *in, size_t len, const char *charset,
    struct util_buf *out)
{
	(void)mime_to_utf8(in, len, charset, false, out);
}

char *
mime_media_type(const char *value, char **charset_out)
{
	GMimeContentType *ct;
	const char *cs;
	char *type, *s;

	mime_gmime_init();
	ct = g_mime_content_type_parse(NULL, value);
	s = g_mime_content_type_get_mime_type(ct);
	/* RFC 9110 8.3.1: type and subtype names are case-insensitive. */
	type = util_strlower(xstrdup(s));
	g_free(s);
	cs = g_mime_content_type_get_parameter(ct, "charset");
	*charset_out = cs != NULL && *cs != '\0' ? xstrdup(cs) : NULL;
	g_object_unref(ct);
	return type;
}
