/*
 * chain/mods.c: the modifications a handler (a milter, at eom) asks for,
 * pending until its step completes, and their effect on the header block.
 * Header indexes count the fields
 * of the client's header block as it stands after the earlier edits, as
 * Sendmail applies a filter's edits one after another.
 */
#include "chain/chain_private.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chain/session.h"
#include "util/util.h"

#define CHAIN_MODS_MAX	1000	/* per transaction (named in an error) */

bool
chain_field_name_ok(const char *name)
{
	if (name == NULL || *name == '\0' || strlen(name) > 200)
		return false;
	for (const char *p = name; *p != '\0'; p++)
		if ((unsigned char)*p < 33 || (unsigned char)*p > 126 ||
		    *p == ':')
			return false;
	return true;
}

int
chain_session_add_mod(struct chain_session *cs, enum chain_mod_kind kind,
    unsigned idx, const char *name, const char *value, const char **err_out)
{
	bool hdr = kind == CHAIN_MOD_HDR_ADD || kind == CHAIN_MOD_HDR_INSERT ||
	    kind == CHAIN_MOD_HDR_CHANGE;

	if (cs->nmods == CHAIN_MODS_MAX)
		*err_out = "more than 1000 modifications of one message";
	else if (hdr && !chain_field_name_ok(name))
		*err_out = "bad header field name in a modification";
	else if (strchr(value, '\r') != NULL || strlen(value) > 64 * 1024)
		*err_out = "value with a CR or over 64 KiB in a modification";
	/* The empty sender is the null reverse-path (RFC 5321 4.5.5). */
	else if (!hdr && ((*value == '\0' && kind != CHAIN_MOD_SENDER) ||
	    strpbrk(value, " \t\n") != NULL))
		*err_out = "bad address in a modification";
	else
		*err_out = NULL;
	if (*err_out != NULL)
		return -1;
	cs->mods = xreallocarray(cs->mods, cs->nmods + 1, sizeof(*cs->mods));
	cs->mods[cs->nmods++] = (struct chain_mod){ .kind = kind, .idx = idx,
	    .name = hdr ? xstrdup(name) : NULL, .value = xstrdup(value) };
	return 0;
}

void
chain_session_mods_commit(struct chain_session *cs)
{
	/* Counted once committed: what later handlers see (session.c). */
	for (size_t i = cs->nmods_kept; i < cs->nmods; i++)
		if (cs->mods[i].name != NULL)
			cs->nhdr_mods++;
	cs->nmods_kept = cs->nmods;
}

void
chain_session_mods_drop(struct chain_session *cs)
{
	for (size_t i = cs->nmods_kept; i < cs->nmods; i++) {
		free(cs->mods[i].name);
		free(cs->mods[i].value);
	}
	cs->nmods = cs->nmods_kept;
}

const struct chain_mod *
chain_session_mods(const struct chain_session *cs, size_t *n_out)
{
	*n_out = cs->nmods_kept;
	return cs->mods;
}

void
chain_mods_clear(struct chain_session *cs)
{
	for (size_t i = 0; i < cs->nmods; i++) {
		free(cs->mods[i].name);
		free(cs->mods[i].value);
	}
	free(cs->mods);
	cs->mods = NULL;
	cs->nmods = cs->nmods_kept = 0;
	cs->nhdr_mods = 0;
	util_buf_clear(&cs->hdr_edited);
	cs->hdr_edited_n = 0;
}

/* ----- editing the header block ----- */

struct hfield {
	const char	*text;		/* the whole field, continuation lines
					   and the last LF included */
	size_t		 len;
	char		*owned;		/* text, when it is new */
};

struct hfields {
	struct hfield	*f;
	size_t		 n;
};

size_t
chain_header_field_end(const char *h, size_t len, size_t start)
{
	size_t i = start;

	/* RFC 5322 2.2.3: a line that starts with WSP continues the field. */
	do {
		const char *nl = memchr(h + i, '\n', len - i);
		i = nl != NULL ? (size_t)(nl - h) + 1 : len;
	} while (i < len && (h[i] == ' ' || h[i] == '\t'));
	return i;
}

/* Split head into fields. */
static void
hfields_split(const char *head, size_t len, struct hfields *hf)
{
	for (size_t i = 0, end; i < len; i = end) {
		end = chain_header_field_end(head, len, i);
		hf->f = xreallocarray(hf->f, hf->n + 1, sizeof(*hf->f));
		hf->f[hf->n++] = (struct hfield){ head + i, end - i, NULL };
	}
}

/*
 * The field "name: value\n", a value's line breaks kept as folds: never a
 * new field.  RFC 5322 3.2.2: a folded line of white space only MUST NOT
 * be generated, so the value's blank lines (a line break at its end
 * too) are left out.
 */
static struct hfield
hfield_make(const char *name, const char *value)
{
	struct util_buf b = { 0 };
	size_t n = strcspn(value, "\n");

	util_buf_printf(&b, "%s:", name);
	/* libmilter gives the value without the space after the colon. */
	if (*value != ' ' && *value != '\t' && *value != '\n' &&
	    *value != '\0')
		util_buf_add(&b, " ", 1);
	util_buf_add(&b, value, n);
	for (const char *p = value + n; *p == '\n'; p += n) {
		p++;
		n = strcspn(p, "\n");
		if (strspn(p, " \t") == n)
			continue;
		util_buf_add(&b, "\n", 1);
		if (*p != ' ' && *p != '\t')
			util_buf_add(&b, "\t", 1);
		util_buf_add(&b, p, n);
	}
	util_buf_add(&b, "\n", 1);
	struct hfield f = { .len = b.len };
	f.owned = util_buf_cstr(&b);
	f.text = f.owned;
	return f;
}

static void
hfields_insert(struct hfields *hf, size_t at, struct hfield f)
{
	if (at > hf->n)
		at = hf->n;
	hf->f = xreallocarray(hf->f, hf->n + 1, sizeof(*hf->f));
	memmove(hf->f + at + 1, hf->f + at, (hf->n - at) * sizeof(*hf->f));
	hf->f[at] = f;
	hf->n++;
}

static void
hfields_change(struct hfields *hf, const struct chain_mod *m)
{
	unsigned want = m->idx > 0 ? m->idx : 1, seen = 0;

	for (size_t i = 0; i < hf->n; i++) {
		if (!util_hdr_is(hf->f[i].text, hf->f[i].len, m->name) ||
		    ++seen < want)
			continue;
		free(hf->f[i].owned);
		if (*m->value == '\0') {
			memmove(hf->f + i, hf->f + i + 1,
			    (hf->n - i - 1) * sizeof(*hf->f));
			hf->n--;
		} else
			hf->f[i] = hfield_make(m->name, m->value);
		return;
	}
	/* No such occurrence: Sendmail adds the field. */
	if (*m->value != '\0')
		hfields_insert(hf, hf->n, hfield_make(m->name, m->value));
}

void
chain_headers_edit(const char *head, size_t len, const struct chain_mod *mods,
    size_t nmods, struct util_buf *out)
{
	struct hfields hf = { 0 };

	hfields_split(head, len, &hf);
	for (size_t i = 0; i < nmods; i++) {
		const struct chain_mod *m = &mods[i];
		switch (m->kind) {
		case CHAIN_MOD_HDR_ADD:
			hfields_insert(&hf, hf.n, hfield_make(m->name,
			    m->value));
			break;
		case CHAIN_MOD_HDR_INSERT:
			hfields_insert(&hf, m->idx, hfield_make(m->name,
			    m->value));
			break;
		case CHAIN_MOD_HDR_CHANGE:
			hfields_change(&hf, m);
			break;
		default:
			break;		/* the envelope's: not ours */
		}
	}
	for (size_t i = 0; i < hf.n; i++) {
		util_buf_add(out, hf.f[i].text, hf.f[i].len);
		free(hf.f[i].owned);
	}
	free(hf.f);
}
