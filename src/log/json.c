/*
 * log/json.c: an event line as a JSON object, for "log format json".  The
 * fields are those of the key=value line, read back from it: the values
 * the callers format are words or "quoted" text whose peer bytes are
 * escaped (\xNN, log_safe_into), so a value never holds a raw quote, and
 * a field's text in JSON is exactly its text in key=value.
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

/* A JSON string of s[0..n), escaped (RFC 8259 7). */
static bool
log_json_str(struct log_json *j, const char *s, size_t n)
{
	char tmp[2048];
	size_t o = 0;

	tmp[o++] = '"';
	for (size_t i = 0; i < n && o + 8 < sizeof(tmp); i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			tmp[o++] = '\\';
			tmp[o++] = (char)c;
		} else if (c < 0x20 || c == 0x7f)
			o += (size_t)snprintf(tmp + o, sizeof(tmp) - o,
			    "\\u%04x", c);
		else
			tmp[o++] = (char)c;
	}
	tmp[o++] = '"';
	return log_json_raw(j, tmp, o);
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

size_t
log_json_line(char *out, size_t outsz, const char *stamp, const char *level,
    const char *event, const char *rest)
{
	struct log_json j = { out, outsz, 0, false };
	char msg[2048];
	size_t mlen = 0;

	log_json_raw(&j, "{", 1);
	if (stamp != NULL) {
		log_json_str(&j, "time", 4);
		log_json_raw(&j, ":", 1);
		log_json_str(&j, stamp, strlen(stamp));
		log_json_raw(&j, ",", 1);
	}
	log_json_raw(&j, "\"level\":", 8);
	log_json_str(&j, level, strlen(level));
	if (event != NULL)
		log_json_field(&j, "event", 5, event, strlen(event));
	for (const char *p = rest; *p != '\0'; ) {
		size_t k, vlen;
		const char *v;
		while (*p == ' ')
			p++;
		if (*p == '\0')
			break;
		if ((k = log_json_key(p)) > 0 && p[k + 1] == '"' &&
		    strchr(p + k + 2, '"') != NULL) {
			v = p + k + 2;
			vlen = (size_t)(strchr(v, '"') - v);
			log_json_field(&j, p, k, v, vlen);
			p = v + vlen + 1;
		} else if (k > 0) {
			v = p + k + 1;
			vlen = strcspn(v, " ");
			log_json_field(&j, p, k, v, vlen);
			p = v + vlen;
		} else {
			/* A word of prose: it goes to "msg". */
			size_t w = strcspn(p, " ");
			if (mlen + w + 1 < sizeof(msg)) {
				if (mlen > 0)
					msg[mlen++] = ' ';
				memcpy(msg + mlen, p, w);
				mlen += w;
			}
			p += w;
		}
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
