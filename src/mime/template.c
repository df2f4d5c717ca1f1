/*
 * mime/template.c: %{path} templates over a JSON document.  In JSON mode
 * each variable knows whether it sits inside a JSON string of the
 * template, and its value is escaped for that place by jansson, so no
 * value can break the document.  Knows nothing of where the document
 * comes from.
 */
#include "mime/mime.h"

#include <ctype.h>
#include <string.h>

#include "mime/mime_private.h"

#define MIME_TPL_PATH_MAX	128

struct mime_tpl_seg {
	char		*lit;		/* owned literal text, or NULL: a var */
	size_t		 len;
	char		*path;		/* owned dotted path of a variable */
	bool		 in_string;	/* JSON mode: inside "..." */
};

struct mime_tpl {
	enum mime_tpl_mode	 mode;
	struct mime_tpl_seg	*segs;		/* owned */
	size_t			 nsegs;
};

/* Compiling: where we are in the text and what was found. */
struct mime_tpl_scan {
	struct mime_tpl		*t;
	const char		*p, *end;
	int			 line;
	bool			 in_str, esc;	/* JSON string state */
	struct util_buf		 lit;
	const char *const	*extra;
	char			*err;		/* first error */
};

static void
mime_tpl_flush(struct mime_tpl_scan *sc)
{
	struct mime_tpl *t = sc->t;

	if (sc->lit.len == 0)
		return;
	t->segs = xreallocarray(t->segs, t->nsegs + 1, sizeof(*t->segs));
	t->segs[t->nsegs++] = (struct mime_tpl_seg){ .lit = xstrndup(
	    sc->lit.data, sc->lit.len), .len = sc->lit.len };
	util_buf_reset(&sc->lit);
}

static bool
mime_tpl_in(const char *const *list, const char *s, size_t n)
{
	for (; list != NULL && *list != NULL; list++)
		if (strlen(*list) == n && memcmp(*list, s, n) == 0)
			return true;
	return false;
}

static bool
mime_tpl_root_ok(const struct mime_tpl_scan *sc, const char *path)
{
	size_t n = strcspn(path, ".");

	return mime_tpl_in(mime_json_members, path, n) ||
	    mime_tpl_in(sc->extra, path, n);
}

static bool
mime_tpl_path_ok(const char *s, size_t n)
{
	if (n == 0 || n > MIME_TPL_PATH_MAX || s[0] == '.' || s[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!(isalnum(c) || c == '_' || c == '-' ||
		    (c == '.' && s[i + 1] != '.')))
			return false;
	}
	return true;
}

/* sc->p at "%{": take the variable; false with sc->err on a bad one. */
static bool
mime_tpl_var(struct mime_tpl_scan *sc)
{
	const char *name = sc->p + 2;
	const char *close = memchr(name, '}', (size_t)(sc->end - name));
	struct mime_tpl *t = sc->t;
	char *path;

	if (close == NULL || memchr(name, '\n', (size_t)(close - name)) !=
	    NULL) {
		sc->err = xasprintf("line %d: \"%%{\" without \"}\"", sc->line);
		return false;
	}
	if (!mime_tpl_path_ok(name, (size_t)(close - name))) {
		sc->err = xasprintf("line %d: bad variable name \"%.*s\"",
		    sc->line, (int)(close - name > 60 ? 60 : close - name),
		    name);
		return false;
	}
	if (sc->esc) {		/* "\%{x}": the value would be escaped */
		sc->err = xasprintf("line %d: a variable right after \\",
		    sc->line);
		return false;
	}
	path = xstrndup(name, (size_t)(close - name));
	if (!mime_tpl_root_ok(sc, path)) {
		sc->err = xasprintf("line %d: unknown field \"%s\"", sc->line,
		    path);
		free(path);
		return false;
	}
	mime_tpl_flush(sc);
	t->segs = xreallocarray(t->segs, t->nsegs + 1, sizeof(*t->segs));
	t->segs[t->nsegs++] = (struct mime_tpl_seg){ .path = path,
	    .in_string = sc->in_str };
	sc->p = close + 1;
	return true;
}

/* One literal byte: tracks JSON strings ("...", with \ escapes). */
static void
mime_tpl_byte(struct mime_tpl_scan *sc, char c)
{
	util_buf_add(&sc->lit, &c, 1);
	if (c == '\n')
		sc->line++;
	if (sc->t->mode != MIME_TPL_JSON)
		return;
	if (sc->esc)
		sc->esc = false;
	else if (sc->in_str && c == '\\')
		sc->esc = true;
	else if (c == '"')
		sc->in_str = !sc->in_str;
}

/* The JSON mode check: with every variable empty, is it JSON? */
static bool
mime_tpl_check_json(struct mime_tpl_scan *sc)
{
	struct util_buf b = { 0 };
	json_error_t je;
	json_t *j;

	mime_tpl_expand(sc->t, NULL, &b);
	j = json_loadb(b.data != NULL ? b.data : "", b.len,
	    JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
	util_buf_clear(&b);
	if (j == NULL) {
		sc->err = xasprintf("line %d: not JSON: %s", je.line, je.text);
		return false;
	}
	json_decref(j);
	return true;
}

struct mime_tpl *
mime_tpl_new(const char *text, size_t len, enum mime_tpl_mode mode,
    const char *const *extra_roots, char **err_out)
{
	struct mime_tpl_scan sc = { .p = text, .end = text + len, .line = 1,
	    .extra = extra_roots };

	sc.t = xcalloc(1, sizeof(*sc.t));
	sc.t->mode = mode;
	while (sc.p < sc.end && sc.err == NULL) {
		if (sc.p[0] == '%' && sc.p + 1 < sc.end && sc.p[1] == '{') {
			mime_tpl_var(&sc);
			continue;
		}
		if (sc.p[0] == '\0') {
			sc.err = xasprintf("line %d: NUL byte", sc.line);
			break;
		}
		/* "%%" is one "%"; a lone "%" stays as it is. */
		if (sc.p[0] == '%' && sc.p + 1 < sc.end && sc.p[1] == '%')
			sc.p++;
		mime_tpl_byte(&sc, *sc.p++);
	}
	if (sc.err == NULL) {
		mime_tpl_flush(&sc);
		if (mode == MIME_TPL_JSON)
			mime_tpl_check_json(&sc);
	}
	util_buf_clear(&sc.lit);
	if (sc.err != NULL) {
		mime_tpl_free(&sc.t);
		*err_out = sc.err;
		return NULL;
	}
	return sc.t;
}

void
mime_tpl_free(struct mime_tpl **tp)
{
	struct mime_tpl *t = *tp;

	if (t == NULL)
		return;
	*tp = NULL;
	for (size_t i = 0; i < t->nsegs; i++) {
		free(t->segs[i].lit);
		free(t->segs[i].path);
	}
	free(t->segs);
	free(t);
}

/* ---- expansion ---- */

/* The value at a dotted path (object members, array indexes), or NULL. */
static const json_t *
mime_tpl_lookup(const json_t *doc, const char *path)
{
	const json_t *cur = doc;
	char part[MIME_TPL_PATH_MAX + 1];

	while (cur != NULL && *path != '\0') {
		size_t n = strcspn(path, ".");

		memcpy(part, path, n);
		part[n] = '\0';
		path += n + (path[n] == '.');
		if (json_is_object(cur)) {
			cur = json_object_get(cur, part);
		} else if (json_is_array(cur) && strspn(part, "0123456789") ==
		    n && n < 9) {
			cur = json_array_get(cur, strtoul(part, NULL, 10));
		} else {
			cur = NULL;
		}
	}
	return cur;
}

static int
mime_tpl_dump_cb(const char *buf, size_t n, void *arg)
{
	util_buf_add(arg, buf, n);
	return 0;
}

static void
mime_tpl_dump(const json_t *v, struct util_buf *out)
{
	json_dump_callback(v, mime_tpl_dump_cb, out,
	    JSON_ENCODE_ANY | JSON_COMPACT);
}

/* v's text escaped for the inside of a JSON string. */
static void
mime_tpl_escaped(const json_t *v, struct util_buf *out)
{
	struct util_buf b = { 0 };
	json_t *s;

	if (json_is_string(v)) {
		mime_tpl_dump(v, &b);
	} else {
		struct util_buf txt = { 0 };

		mime_tpl_dump(v, &txt);
		s = json_stringn(txt.data, txt.len);
		mime_tpl_dump(s, &b);
		json_decref(s);
		util_buf_clear(&txt);
	}
	if (b.len >= 2)		/* without its quotes */
		util_buf_add(out, b.data + 1, b.len - 2);
	util_buf_clear(&b);
}

static bool
mime_tpl_all_strings(const json_t *a)
{
	size_t i;
	json_t *v;

	json_array_foreach(a, i, v)
		if (!json_is_string(v))
			return false;
	return true;
}

static void
mime_tpl_text(const json_t *v, struct util_buf *out)
{
	size_t i;
	json_t *e;

	if (json_is_string(v)) {
		util_buf_add(out, json_string_value(v), json_string_length(v));
	} else if (json_is_array(v) && mime_tpl_all_strings(v)) {
		json_array_foreach(v, i, e) {
			if (i > 0)
				util_buf_addstr(out, ", ");
			util_buf_add(out, json_string_value(e),
			    json_string_length(e));
		}
	} else if (!json_is_null(v)) {
		mime_tpl_dump(v, out);
	}
}

static void
mime_tpl_value(const struct mime_tpl *t, const struct mime_tpl_seg *sg,
    const json_t *v, struct util_buf *out)
{
	if (t->mode == MIME_TPL_TEXT) {
		if (v != NULL)
			mime_tpl_text(v, out);
	} else if (sg->in_string) {
		if (v != NULL && !json_is_null(v))
			mime_tpl_escaped(v, out);
	} else if (v == NULL) {
		util_buf_addstr(out, "null");
	} else {
		mime_tpl_dump(v, out);
	}
}

void
mime_tpl_expand(const struct mime_tpl *t, const json_t *doc,
    struct util_buf *out)
{
	for (size_t i = 0; i < t->nsegs; i++) {
		const struct mime_tpl_seg *sg = &t->segs[i];

		if (sg->lit != NULL)
			util_buf_add(out, sg->lit, sg->len);
		else
			mime_tpl_value(t, sg, doc != NULL ?
			    mime_tpl_lookup(doc, sg->path) : NULL, out);
	}
	util_buf_cstr(out);
}
