/*
 * spool/envelope.c: the envelope value and its text file format.  Pure: no
 * disk access here, so the parser can be unit-tested and fuzzed on bytes.
 *
 * Format, version 1: one "key value..." record per line, fields separated by
 * one space, LF line ends, first line "v 1", last line "end":
 *
 *	v 1
 *	qid <qid>
 *	sid <F>
 *	received <epoch seconds>
 *	sender <F>
 *	client_ip <F>
 *	helo <F>
 *	smtputf8 0|1|2		(2: smtputf8_needed too)
 *	body_8bit 0|1
 *	size <octets>
 *	rcpt <F addr> <F action> <F arg>	(zero or more, in order)
 *	end
 *
 * Every <F> is an escaped field: "-" is NULL, "%" alone is the empty string,
 * and otherwise bytes below 0x21, above 0x7e and '%' itself are written %XX
 * (and a literal "-" as %2D), so no peer text can ever add a line or a field.
 * The parser is strict: unknown or repeated keys, missing keys, bad escapes,
 * NUL bytes or trailing garbage make the whole envelope an error.
 */
#include "spool/spool_private.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void
spool_env_add_rcpt(struct spool_env *e, const char *addr, const char *action,
    const char *arg)
{
	struct spool_rcpt *r;

	e->rcpts = xreallocarray(e->rcpts, e->nrcpts + 1, sizeof(*e->rcpts));
	r = &e->rcpts[e->nrcpts++];
	memset(r, 0, sizeof(*r));
	r->addr = xstrdup(addr);
	r->action = xstrdup(action);
	r->arg = arg != NULL ? xstrdup(arg) : NULL;
}

void
spool_env_del_rcpt(struct spool_env *e, size_t idx)
{
	struct spool_rcpt *r = &e->rcpts[idx];

	free(r->addr);
	free(r->action);
	free(r->arg);
	free(r->last_err);
	memmove(r, r + 1, (e->nrcpts - idx - 1) * sizeof(*r));
	e->nrcpts--;
}

void
spool_env_add_state(struct spool_env *e, const char *key, const char *value)
{
	e->state = xreallocarray(e->state, 2 * (e->nstate + 1),
	    sizeof(*e->state));
	e->state[2 * e->nstate] = xstrdup(key);
	e->state[2 * e->nstate + 1] = xstrdup(value);
	e->nstate++;
}

void
spool_env_clear(struct spool_env *e)
{
	for (size_t i = 0; i < 2 * e->nstate; i++)
		free(e->state[i]);
	free(e->state);
	e->state = NULL;
	e->nstate = 0;
	for (size_t i = 0; i < e->nrcpts; i++) {
		free(e->rcpts[i].addr);
		free(e->rcpts[i].action);
		free(e->rcpts[i].arg);
		free(e->rcpts[i].last_err);
	}
	free(e->rcpts);
	free(e->sid);
	free(e->sender);
	free(e->client_ip);
	free(e->helo);
	free(e->tls);
	free(e->auth_user);
	memset(e, 0, sizeof(*e));
}

bool
spool_qid_is_valid(const char *s)
{
	size_t n = 0;

	if (s == NULL)
		return false;
	for (; s[n] != '\0'; n++) {
		unsigned char c = (unsigned char)s[n];
		if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
		    (c >= 'a' && c <= 'z')))
			return false;
		if (n + 1 >= SPOOL_QID_MAX)
			return false;
	}
	return n > 0;
}

static void
spool_esc(struct util_buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	if (s == NULL) {
		util_buf_addstr(b, "-");
		return;
	}
	if (*s == '\0') {
		util_buf_addstr(b, "%");
		return;
	}
	if (strcmp(s, "-") == 0) {
		util_buf_addstr(b, "%2D");
		return;
	}
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x21 || c > 0x7e || c == '%') {
			char e[3] = { '%', hex[c >> 4], hex[c & 0xf] };
			util_buf_add(b, e, 3);
		} else
			util_buf_add(b, s, 1);
	}
}

void
spool_env_format(const struct spool_env *env, struct util_buf *b)
{
	util_buf_addstr(b, "v 1\n");
	util_buf_printf(b, "qid %s\n", env->qid);
	util_buf_addstr(b, "sid ");
	spool_esc(b, env->sid);
	util_buf_printf(b, "\nreceived %" PRId64 "\n", env->received);
	util_buf_addstr(b, "sender ");
	spool_esc(b, env->sender != NULL ? env->sender : "");
	util_buf_addstr(b, "\nclient_ip ");
	spool_esc(b, env->client_ip);
	util_buf_addstr(b, "\nhelo ");
	spool_esc(b, env->helo);
	if (env->tls != NULL) {
		util_buf_addstr(b, "\ntls ");
		spool_esc(b, env->tls);
	}
	if (env->auth_user != NULL) {
		util_buf_addstr(b, "\nauth ");
		spool_esc(b, env->auth_user);
	}
	util_buf_printf(b, "\nsmtputf8 %d\nbody_8bit %d\nsize %" PRIu64 "\n",
	    env->smtputf8_needed ? 2 : env->smtputf8 ? 1 : 0,
	    env->body_8bit ? 1 : 0, env->size);
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];
		util_buf_addstr(b, "rcpt ");
		spool_esc(b, r->addr);
		util_buf_addstr(b, " ");
		spool_esc(b, r->action);
		util_buf_addstr(b, " ");
		spool_esc(b, r->arg);
		util_buf_addstr(b, "\n");
	}
	for (size_t i = 0; i < env->nstate; i++) {
		util_buf_addstr(b, "state ");
		spool_esc(b, env->state[2 * i]);
		util_buf_addstr(b, " ");
		spool_esc(b, env->state[2 * i + 1]);
		util_buf_addstr(b, "\n");
	}
	util_buf_addstr(b, "end\n");
}

static int
spool_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/*
 * Decode one field tok[0..len).  On 0, *out is NULL (for "-") or a new
 * string.  -1 on a bad escape, a raw byte outside 0x21..0x7e, or an
 * escaped NUL.
 */
static int
spool_unesc(const char *tok, size_t len, char **out)
{
	char *s, *p;

	*out = NULL;
	if (len == 1 && tok[0] == '-')
		return 0;
	if (len == 1 && tok[0] == '%') {
		*out = xstrdup("");
		return 0;
	}
	if (len == 0)
		return -1;
	p = s = xmalloc(len + 1);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)tok[i];
		if (c == '%') {
			int hi, lo;
			if (len - i < 3 || (hi = spool_hexval(tok[i + 1])) < 0 ||
			    (lo = spool_hexval(tok[i + 2])) < 0 ||
			    (hi == 0 && lo == 0))
				goto fail;
			*p++ = (char)(hi << 4 | lo);
			i += 2;
		} else if (c < 0x21 || c > 0x7e)
			goto fail;
		else
			*p++ = (char)c;
	}
	*p = '\0';
	*out = s;
	return 0;
fail:
	free(s);
	return -1;
}

/* Parse a decimal without sign, leading '+' or overflow. */
static int
spool_parse_u64(const char *tok, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 20)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (tok[i] < '0' || tok[i] > '9')
			return -1;
		unsigned d = (unsigned)(tok[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

#define SPOOL_MAXF	4	/* key plus at most three fields */

/* Split line[0..len) at single spaces; -1 on an empty field or too many. */
static int
spool_split(const char *line, size_t len, const char *f[SPOOL_MAXF],
    size_t flen[SPOOL_MAXF], size_t *nf_out)
{
	size_t nf = 0, start = 0;

	for (size_t i = 0; i <= len; i++) {
		if (i < len && line[i] != ' ')
			continue;
		if (i == start || nf == SPOOL_MAXF)
			return -1;
		f[nf] = line + start;
		flen[nf++] = i - start;
		start = i + 1;
	}
	*nf_out = nf;
	return 0;
}

static bool
spool_tok_is(const char *tok, size_t len, const char *word)
{
	return strlen(word) == len && memcmp(tok, word, len) == 0;
}

enum {
	SEEN_QID = 1 << 0, SEEN_SID = 1 << 1, SEEN_RECEIVED = 1 << 2,
	SEEN_SENDER = 1 << 3, SEEN_IP = 1 << 4, SEEN_HELO = 1 << 5,
	SEEN_UTF8 = 1 << 6, SEEN_8BIT = 1 << 7, SEEN_SIZE = 1 << 8,
	SEEN_ALL = (1 << 9) - 1,
};

/* One record (not "v" nor "end"); 0 or -1 with *why_out. */
static int
spool_env_record(struct spool_env *out, const char **f, const size_t *fl,
    size_t nf, unsigned *seen, const char **why_out)
{
	static const struct { const char *key; unsigned bit; } keys[] = {
		{ "qid", SEEN_QID }, { "sid", SEEN_SID },
		{ "received", SEEN_RECEIVED }, { "sender", SEEN_SENDER },
		{ "client_ip", SEEN_IP }, { "helo", SEEN_HELO },
		{ "smtputf8", SEEN_UTF8 }, { "body_8bit", SEEN_8BIT },
		{ "size", SEEN_SIZE },
	};
	unsigned bit = 0;
	uint64_t v;

	if (spool_tok_is(f[0], fl[0], "rcpt")) {
		char *a[3];
		if (nf != 4) {
			*why_out = "bad rcpt record";
			return -1;
		}
		for (int i = 0; i < 3; i++)
			if (spool_unesc(f[i + 1], fl[i + 1], &a[i]) == -1) {
				while (i-- > 0)
					free(a[i]);
				*why_out = "bad escape in rcpt record";
				return -1;
			}
		if (a[0] == NULL || a[1] == NULL || a[1][0] == '\0') {
			free(a[0]), free(a[1]), free(a[2]);
			*why_out = "rcpt record without address or action";
			return -1;
		}
		spool_env_add_rcpt(out, a[0], a[1], a[2]);
		free(a[0]), free(a[1]), free(a[2]);
		return 0;
	}
	/* Optional, once each: the client's TLS and authentication. */
	if (spool_tok_is(f[0], fl[0], "tls") ||
	    spool_tok_is(f[0], fl[0], "auth")) {
		char **dst = f[0][0] == 't' ? &out->tls : &out->auth_user;
		char *text = NULL;

		if (nf != 2 || *dst != NULL || spool_unesc(f[1], fl[1],
		    &text) == -1 || text == NULL) {
			free(text);
			*why_out = f[0][0] == 't' ? "bad tls record" :
			    "bad auth record";
			return -1;
		}
		*dst = text;
		return 0;
	}
	if (spool_tok_is(f[0], fl[0], "state")) {
		char *sk = NULL, *sv = NULL;
		if (nf != 3 || spool_unesc(f[1], fl[1], &sk) == -1 ||
		    spool_unesc(f[2], fl[2], &sv) == -1 || sk == NULL ||
		    sv == NULL) {
			free(sk), free(sv);
			*why_out = "bad state record";
			return -1;
		}
		spool_env_add_state(out, sk, sv);
		free(sk), free(sv);
		return 0;
	}
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (spool_tok_is(f[0], fl[0], keys[i].key))
			bit = keys[i].bit;
	if (bit == 0) {
		*why_out = "unknown record";
		return -1;
	}
	if (*seen & bit) {
		*why_out = "repeated record";
		return -1;
	}
	*seen |= bit;
	if (nf != 2) {
		*why_out = "record needs exactly one value";
		return -1;
	}
	switch (bit) {
	case SEEN_QID:
		if (fl[1] >= SPOOL_QID_MAX) {
			*why_out = "bad qid";
			return -1;
		}
		memcpy(out->qid, f[1], fl[1]);
		out->qid[fl[1]] = '\0';
		if (!spool_qid_is_valid(out->qid)) {
			*why_out = "bad qid";
			return -1;
		}
		return 0;
	case SEEN_RECEIVED:
	case SEEN_SIZE:
	case SEEN_UTF8:
	case SEEN_8BIT:
		if (spool_parse_u64(f[1], fl[1], &v) == -1 ||
		    (bit == SEEN_RECEIVED && v > INT64_MAX) ||
		    (bit == SEEN_UTF8 && v > 2) ||
		    (bit == SEEN_8BIT && v > 1)) {
			*why_out = "bad number";
			return -1;
		}
		if (bit == SEEN_RECEIVED)
			out->received = (int64_t)v;
		else if (bit == SEEN_SIZE)
			out->size = v;
		else if (bit == SEEN_UTF8) {
			out->smtputf8 = v >= 1;
			out->smtputf8_needed = v == 2;
		} else
			out->body_8bit = v == 1;
		return 0;
	default:
		break;
	}
	char **dst = bit == SEEN_SID ? &out->sid : bit == SEEN_SENDER ?
	    &out->sender : bit == SEEN_IP ? &out->client_ip : &out->helo;
	if (spool_unesc(f[1], fl[1], dst) == -1) {
		*why_out = "bad escape";
		return -1;
	}
	if (bit == SEEN_SENDER && *dst == NULL) {
		*why_out = "sender may not be null";
		return -1;
	}
	return 0;
}

int
spool_env_parse(const char *buf, size_t len, struct spool_env *out,
    const char **why_out)
{
	const char *f[SPOOL_MAXF];
	size_t fl[SPOOL_MAXF], nf, pos = 0, lineno = 0;
	unsigned seen = 0;
	bool ended = false;

	if (memchr(buf, '\0', len) != NULL) {
		*why_out = "NUL byte";
		goto fail;
	}
	while (pos < len) {
		const char *line = buf + pos;
		const char *lf = memchr(line, '\n', len - pos);
		if (lf == NULL) {
			*why_out = "truncated line";
			goto fail;
		}
		size_t ll = (size_t)(lf - line);
		pos += ll + 1;
		if (ended) {
			*why_out = "data after end";
			goto fail;
		}
		if (spool_split(line, ll, f, fl, &nf) == -1) {
			*why_out = "bad field separators";
			goto fail;
		}
		if (lineno++ == 0) {
			if (nf != 2 || !spool_tok_is(f[0], fl[0], "v") ||
			    !spool_tok_is(f[1], fl[1], "1")) {
				*why_out = "not a version 1 envelope";
				goto fail;
			}
			continue;
		}
		if (nf == 1 && spool_tok_is(f[0], fl[0], "end")) {
			ended = true;
			continue;
		}
		if (spool_env_record(out, f, fl, nf, &seen, why_out) == -1)
			goto fail;
	}
	if (!ended) {
		*why_out = "no end record";
		goto fail;
	}
	if (seen != SEEN_ALL) {
		*why_out = "missing record";
		goto fail;
	}
	return 0;
fail:
	spool_env_clear(out);
	return -1;
}

void
spool_field_esc(struct util_buf *b, const char *s)
{
	spool_esc(b, s);
}

/* Error texts are kept to this many bytes in the status records. */
#define SPOOL_WHY_MAX	1000

static void
spool_esc_why(struct util_buf *b, const char *why)
{
	char *w = xstrndup(why != NULL && *why != '\0' ? why : "(unknown)",
	    SPOOL_WHY_MAX);

	spool_esc(b, w);
	free(w);
}

void
spool_rec_deferred(struct util_buf *b, size_t idx, unsigned attempts,
    uint64_t next_ms, const char *why)
{
	util_buf_printf(b, "defer %zu %u %" PRIu64 " ", idx, attempts,
	    next_ms);
	spool_esc_why(b, why);
	util_buf_addstr(b, "\n");
}

void
spool_rec_failed(struct util_buf *b, size_t idx, const char *status,
    const char *why)
{
	util_buf_printf(b, "fail %zu ", idx);
	spool_esc(b, status != NULL && *status != '\0' ? status : "5.0.0");
	util_buf_addstr(b, " ");
	spool_esc_why(b, why);
	util_buf_addstr(b, "\n");
}

#define SPOOL_REC_MAXF	5

/* Split a status record at single spaces; -1 on empty fields or too many. */
static int
spool_rec_split(const char *line, size_t len, const char *f[SPOOL_REC_MAXF],
    size_t fl[SPOOL_REC_MAXF], size_t *nf_out)
{
	size_t nf = 0, start = 0;

	for (size_t i = 0; i <= len; i++) {
		if (i < len && line[i] != ' ')
			continue;
		if (i == start || nf == SPOOL_REC_MAXF)
			return -1;
		f[nf] = line + start;
		fl[nf++] = i - start;
		start = i + 1;
	}
	*nf_out = nf;
	return 0;
}

/* The recipient named by field f (an index below env->nrcpts), or NULL. */
static struct spool_rcpt *
spool_rec_rcpt(struct spool_env *env, const char *f, size_t fl,
    const char **why_out)
{
	uint64_t idx;

	if (spool_parse_u64(f, fl, &idx) == -1) {
		*why_out = "bad status record";
		return NULL;
	}
	if (idx >= env->nrcpts) {
		*why_out = "done record for unknown recipient";
		return NULL;
	}
	return &env->rcpts[idx];
}

/* One status record; 0 or -1 with *why_out. */
static int
spool_status_record(struct spool_env *env, const char **f, const size_t *fl,
    size_t nf, const char **why_out)
{
	struct spool_rcpt *r;
	uint64_t attempts, next;
	char *status, *why;

	if (nf == 1 && spool_tok_is(f[0], fl[0], "warned"))
		env->warned = true;
	else if (nf == 1 && spool_tok_is(f[0], fl[0], "hold"))
		env->held = true;
	else if (nf == 1 && spool_tok_is(f[0], fl[0], "release"))
		env->held = false;
	else if (nf == 2 && spool_tok_is(f[0], fl[0], "done")) {
		if ((r = spool_rec_rcpt(env, f[1], fl[1], why_out)) == NULL)
			return -1;
		r->done = true;
	} else if (nf == 2 && spool_tok_is(f[0], fl[0], "bounced")) {
		if ((r = spool_rec_rcpt(env, f[1], fl[1], why_out)) == NULL)
			return -1;
		r->bounced = true;
	} else if (nf == 5 && spool_tok_is(f[0], fl[0], "defer")) {
		if ((r = spool_rec_rcpt(env, f[1], fl[1], why_out)) == NULL)
			return -1;
		if (spool_parse_u64(f[2], fl[2], &attempts) == -1 ||
		    attempts > UINT32_MAX ||
		    spool_parse_u64(f[3], fl[3], &next) == -1 ||
		    spool_unesc(f[4], fl[4], &why) == -1 || why == NULL) {
			*why_out = "bad defer record";
			return -1;
		}
		r->attempts = (unsigned)attempts;
		r->next_ms = next;
		free(r->last_err);
		r->last_err = why;
	} else if (nf == 4 && spool_tok_is(f[0], fl[0], "fail")) {
		if ((r = spool_rec_rcpt(env, f[1], fl[1], why_out)) == NULL)
			return -1;
		if (spool_unesc(f[2], fl[2], &status) == -1 || status == NULL ||
		    strlen(status) >= sizeof(r->status)) {
			free(status);
			*why_out = "bad fail record";
			return -1;
		}
		if (spool_unesc(f[3], fl[3], &why) == -1 || why == NULL) {
			free(status);
			*why_out = "bad fail record";
			return -1;
		}
		util_strlcpy(r->status, status, sizeof(r->status));
		free(status);
		free(r->last_err);
		r->last_err = why;
		r->done = r->failed = true;
	} else {
		*why_out = "bad done record";
		return -1;
	}
	return 0;
}

int
spool_done_parse(const char *buf, size_t len, struct spool_env *env,
    const char **why_out)
{
	const char *f[SPOOL_REC_MAXF];
	size_t fl[SPOOL_REC_MAXF], nf, pos = 0;

	while (pos < len) {
		const char *line = buf + pos;
		const char *lf = memchr(line, '\n', len - pos);

		if (lf == NULL)
			break;	/* torn append: that record never counted */
		size_t ll = (size_t)(lf - line);
		pos += ll + 1;
		if (memchr(line, '\0', ll) != NULL ||
		    spool_rec_split(line, ll, f, fl, &nf) == -1) {
			*why_out = "bad done record";
			return -1;
		}
		if (spool_status_record(env, f, fl, nf, why_out) == -1)
			return -1;
	}
	return 0;
}
