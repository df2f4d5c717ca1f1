/*
 * log/json.c: an event line as a JSON object, for "log format json".  The
 * fields are those of the key=value line, read back from it: the values
 * the callers format are words or "quoted" text whose peer bytes are
 * escaped (\xNN, log_safe_into), so a value never holds a raw quote, and
 * a field's text in JSON is exactly its text in key=value.  Whatever a
 * value holds, no field comes twice: the line's own (time, level, event,
 * sid, qid) are not read from the text, and a key taken is text of msg.
 */
#include "log/log_private.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct log_json {
	char	*out;
	size_t	 size, len;
	bool	 full;
};

/* Append raw text if it fits, keeping room for the closing part. */
static bool
log_json_raw(struct log_json *j, const char *s, size_t n)
{
	enum { TAIL = 20 };	/* room for ,"truncated":true}\n */

	if (j->full || j->len + n + TAIL > j->size) {
		j->full = true;
		return false;
	}
	memcpy(j->out + j->len, s, n);
	j->len += n;
	return true;
}

/* A JSON string of s[0..n), escaped (RFC 8259 7), whole or not at all. */
static bool
log_json_str(struct log_json *j, const char *s, size_t n)
{
	size_t mark = j->len, i = 0, run;
	char esc[8];

	if (!log_json_raw(j, "\"", 1))
		return false;
	while (i < n) {
		for (run = 0; i + run < n; run++) {
			unsigned char c = (unsigned char)s[i + run];
			if (c == '"' || c == '\\' || c < 0x20 || c == 0x7f)
				break;
		}
		if (run > 0 && !log_json_raw(j, s + i, run))
			goto full;
		i += run;
		if (i == n)
			break;
		if (s[i] == '"' || s[i] == '\\') {
			esc[0] = '\\';
			esc[1] = s[i];
			run = 2;
		} else
			run = (size_t)snprintf(esc, sizeof(esc), "\\u%04x",
			    (unsigned char)s[i]);
		if (!log_json_raw(j, esc, run))
			goto full;
		i++;
	}
	if (log_json_raw(j, "\"", 1))
		return true;
full:
	j->len = mark;
	return false;
}

static bool
log_json_field(struct log_json *j, const char *key, size_t klen,
    const char *val, size_t vlen)
{
	size_t mark = j->len;

	if (log_json_raw(j, ",", 1) && log_json_str(j, key, klen) &&
	    log_json_raw(j, ":", 1) && log_json_str(j, val, vlen))
		return true;
	j->len = mark;		/* no half field */
	return false;
}

/* Length of KEY= at s (a letter, then letters, digits, . _ -), or 0. */
static size_t
log_json_key(const char *s)
{
	size_t n = 0;

	if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
		return 0;
	while (s[n] != '\0' && s[n] != ' ' && s[n] != '=' && s[n] != '"')
		n++;
	return s[n] == '=' ? n : 0;
}

enum { LOG_JSON_KEYS_MAX = 64 };	/* fields of the text; more are msg */

/* The keys a line has: its own (time, level...), then the text's so far. */
struct log_json_keys {
	struct { const char *k; size_t n; } seen[LOG_JSON_KEYS_MAX];
	size_t	 nseen;
};

/*
 * Whether KEY (k[0..n)) of the text may be a field: not one the line
 * itself writes, nor one already written (a value cannot forge another
 * field).  Yes counts it as written.
 */
static bool
log_json_fresh(struct log_json_keys *ks, const char *k, size_t n)
{
	static const char *const own[] = { "time", "level", "event", "sid",
	    "qid", "msg", "truncated" };

	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		if (strlen(own[i]) == n && memcmp(own[i], k, n) == 0)
			return false;
	for (size_t i = 0; i < ks->nseen; i++)
		if (ks->seen[i].n == n && memcmp(ks->seen[i].k, k, n) == 0)
			return false;
	if (ks->nseen == LOG_JSON_KEYS_MAX)
		return false;
	ks->seen[ks->nseen].k = k;
	ks->seen[ks->nseen++].n = n;
	return true;
}

/* Text for "msg": s[0..n) after what it has, a space between. */
static void
log_json_msg_add(char *msg, size_t *mlen, size_t msgsz, const char *s,
    size_t n)
{
	if (*mlen + n + 1 >= msgsz)
		return;
	if (*mlen > 0)
		msg[(*mlen)++] = ' ';
	memcpy(msg + *mlen, s, n);
	*mlen += n;
}

size_t
log_json_line(char *out, size_t outsz, const struct log_json_head *h,
    const char *rest)
{
	struct log_json j = { out, outsz, 0, false };
	struct log_json_keys ks = { .nseen = 0 };
	char msg[2048];
	size_t mlen = 0;

	log_json_raw(&j, "{", 1);
	if (h->stamp != NULL) {
		log_json_str(&j, "time", 4);
		log_json_raw(&j, ":", 1);
		log_json_str(&j, h->stamp, strlen(h->stamp));
		log_json_raw(&j, ",", 1);
	}
	log_json_raw(&j, "\"level\":", 8);
	log_json_str(&j, h->level, strlen(h->level));
	if (h->event != NULL)
		log_json_field(&j, "event", 5, h->event, strlen(h->event));
	if (h->sid != NULL)
		log_json_field(&j, "sid", 3, h->sid, strlen(h->sid));
	if (h->qid != NULL)
		log_json_field(&j, "qid", 3, h->qid, strlen(h->qid));
	for (const char *p = rest; *p != '\0'; ) {
		size_t k, vlen;
		const char *v, *q, *end;
		while (*p == ' ')
			p++;
		if (*p == '\0')
			break;
		/* One token: KEY="value", KEY=value or a word of prose. */
		k = log_json_key(p);
		if (k > 0 && p[k + 1] == '"' &&
		    (q = strchr(p + k + 2, '"')) != NULL) {
			v = p + k + 2;
			vlen = (size_t)(q - v);
			end = q + 1;
		} else {
			v = k > 0 ? p + k + 1 : p;
			vlen = strcspn(v, " ");
			end = v + vlen;
		}
		if (k == 3 && memcmp(p, "msg", 3) == 0)	/* msg="text" */
			log_json_msg_add(msg, &mlen, sizeof(msg), v, vlen);
		else if (k > 0 && log_json_fresh(&ks, p, k))
			log_json_field(&j, p, k, v, vlen);
		else		/* prose, or a key taken: text of msg */
			log_json_msg_add(msg, &mlen, sizeof(msg), p,
			    (size_t)(end - p));
		p = end;
	}
	if (mlen > 0)
		log_json_field(&j, "msg", 3, msg, mlen);
	/* The room kept back by log_json_raw (TAIL) takes the end. */
	if (j.full) {
		memcpy(out + j.len, ",\"truncated\":true", 17);
		j.len += 17;
	}
	memcpy(out + j.len, "}\n", 2);
	return j.len + 2;
}
