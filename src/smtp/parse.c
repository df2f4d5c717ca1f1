/*
 * smtp/parse.c: the grammar of command lines, paths (RFC 5321 4.1.2, with
 * RFC 6531 UTF-8) and the parameters of MAIL, RCPT and BDAT.  Pure
 * functions over (pointer, length) views; no session state here.
 */
#include "smtp/smtp.h"
#include "smtp/smtp_private.h"

#include <string.h>
#include <strings.h>

static const struct {
	const char	*name;
	enum smtp_verb	 verb;
} smtp_verbs[] = {
	{ "HELO", SMTP_VERB_HELO }, { "EHLO", SMTP_VERB_EHLO },
	{ "MAIL", SMTP_VERB_MAIL }, { "RCPT", SMTP_VERB_RCPT },
	{ "DATA", SMTP_VERB_DATA }, { "BDAT", SMTP_VERB_BDAT },
	{ "RSET", SMTP_VERB_RSET }, { "NOOP", SMTP_VERB_NOOP },
	{ "QUIT", SMTP_VERB_QUIT }, { "VRFY", SMTP_VERB_VRFY },
	{ "EXPN", SMTP_VERB_EXPN }, { "HELP", SMTP_VERB_HELP },
	{ "STARTTLS", SMTP_VERB_STARTTLS }, { "AUTH", SMTP_VERB_AUTH },
};

static bool
smtp_is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
smtp_is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool
smtp_is_alnum(unsigned char c)
{
	return smtp_is_alpha(c) || smtp_is_digit(c);
}

static bool
smtp_is_hex(unsigned char c)
{
	return smtp_is_digit(c) || (c >= 'a' && c <= 'f') ||
	    (c >= 'A' && c <= 'F');
}

static char
smtp_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/*
 * Split a command line: a verb of letters, then end of line or one space
 * and the argument.  Trailing blanks of the argument are dropped (clients
 * send "RSET " too).  Unknown verbs give SMTP_VERB_UNKNOWN.
 */
int
smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *out)
{
	size_t i = 0, n;

	out->verb = SMTP_VERB_UNKNOWN;
	out->arg = "";
	out->arg_len = 0;
	while (i < len && smtp_is_alpha((unsigned char)line[i]))
		i++;
	if (i == 0 || (i < len && line[i] != ' '))
		return -1;
	for (n = 0; n < sizeof(smtp_verbs) / sizeof(smtp_verbs[0]); n++) {
		if (strlen(smtp_verbs[n].name) == i &&
		    strncasecmp(line, smtp_verbs[n].name, i) == 0) {
			out->verb = smtp_verbs[n].verb;
			break;
		}
	}
	if (i == len)
		return 1;
	i++;
	n = len;
	while (n > i && (line[n - 1] == ' ' || line[n - 1] == '\t'))
		n--;
	if (n > i) {
		out->arg = line + i;
		out->arg_len = n - i;
	}
	return 1;
}

/* RFC 4422 3.1: a mechanism's name is 1 to 20 of A-Z 0-9 - _. */
#define SMTP_SASL_NAME_MAX	20

size_t
smtp_cmd_loggable(const char *line, size_t len)
{
	size_t i = 4, m;

	if (len < 4 || strncasecmp(line, "AUTH", 4) != 0 ||
	    (len > 4 && smtp_is_alpha((unsigned char)line[4])))
		return len;
	/*
	 * Whatever the blank after the mechanism, or a line the parser
	 * refuses: what follows may be a password, and is not kept.
	 */
	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	for (m = i; m < len && m - i <= SMTP_SASL_NAME_MAX; m++)
		if (!smtp_is_alnum((unsigned char)line[m]) && line[m] != '-' &&
		    line[m] != '_')
			break;
	if (m - i > SMTP_SASL_NAME_MAX ||
	    (m < len && line[m] != ' ' && line[m] != '\t'))
		return 4;		/* no mechanism's name: a secret? */
	return m;
}

bool
smtp_has_8bit(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] >= 0x80)
			return true;
	return false;
}

/* RFC 5322 3.2.3 atext. */
static bool
smtp_is_atext(unsigned char c)
{
	return smtp_is_alnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~",
	    c) != NULL);
}

/* RFC 5321 4.1.3 IPv4-address-literal. */
static bool
smtp_ipv4_ok(const char *p, size_t n)
{
	size_t i = 0, j;
	int parts = 0;
	unsigned v;

	for (;;) {
		for (j = i, v = 0; j < n && j - i < 3 &&
		    smtp_is_digit((unsigned char)p[j]); j++)
			v = v * 10 + (unsigned)(p[j] - '0');
		if (j == i || v > 255)
			return false;
		parts++;
		i = j;
		if (i == n)
			break;
		if (p[i] != '.' || parts == 4)
			return false;
		i++;
	}
	return parts == 4;
}

/* RFC 5321 4.1.3 IPv6-addr (full, compressed, with an IPv4 tail). */
static bool
smtp_ipv6_ok(const char *p, size_t n)
{
	size_t i = 0, j;
	int groups = 0;
	bool dbl = false;

	if (n >= 2 && p[0] == ':' && p[1] == ':') {
		dbl = true;
		i = 2;
		if (i == n)
			return true;
	} else if (n == 0 || p[0] == ':')
		return false;
	for (;;) {
		for (j = i; j < n && j - i < 5 &&
		    smtp_is_hex((unsigned char)p[j]); j++)
			;
		if (j < n && p[j] == '.') {
			if (!smtp_ipv4_ok(p + i, n - i))
				return false;
			groups += 2;
			break;
		}
		if (j == i || j - i > 4)
			return false;
		groups++;
		i = j;
		if (i == n)
			break;
		if (p[i] != ':')
			return false;
		i++;
		if (i < n && p[i] == ':') {
			if (dbl)
				return false;
			dbl = true;
			i++;
			if (i == n)
				break;
		} else if (i == n)
			return false;
	}
	return dbl ? groups <= 7 : groups == 8;
}

/* RFC 5321 4.1.3 address-literal, between the brackets. */
static bool
smtp_literal_ok(const char *p, size_t n)
{
	size_t i;

	if (n > 5 && strncasecmp(p, "IPv6:", 5) == 0)
		return smtp_ipv6_ok(p + 5, n - 5);
	if (n > 0 && smtp_is_digit((unsigned char)p[0]))
		return smtp_ipv4_ok(p, n);
	/* General-address-literal: Standardized-tag ":" 1*dcontent */
	for (i = 0; i < n && (smtp_is_alnum((unsigned char)p[i]) ||
	    (p[i] == '-' && i > 0)); i++)
		;
	if (i == 0 || i == n || p[i] != ':' || p[i - 1] == '-' || i + 1 == n)
		return false;
	/*
	 * dcontent is %d33-90 / %d94-126; XXX: narrower here, without the
	 * path's own punctuation (<>@,;") so that no downstream parser can
	 * be misled by an address literal.
	 */
	for (i++; i < n; i++) {
		unsigned char c = (unsigned char)p[i];

		if (c < 33 || c > 126 || strchr("[\\]<>@,;\"", c) != NULL)
			return false;
	}
	return true;
}

/*
 * Scan a domain name at *pp: sub-domains of letters, digits, hyphens (not
 * at either end) and, for U-labels, UTF-8 (RFC 6531 3.3), each at most 63
 * octets (RFC 1035 2.3.4).  Advances *pp.  0 or -1.
 */
static int
smtp_domain_scan(const char **pp, const char *lim)
{
	const char *p = *pp;

	for (;;) {
		const char *label = p;

		while (p < lim) {
			unsigned char c = (unsigned char)*p;
			size_t k;

			if (smtp_is_alnum(c) || (c == '-' && p > label))
				p++;
			else if (c >= 0x80 && (k = util_utf8_len(
			    (const unsigned char *)p,
			    (const unsigned char *)lim)) > 0)
				p += k;
			else
				break;
		}
		if (p == label || p[-1] == '-' || p - label > 63)
			return -1;
		if (p < lim && *p == '.') {
			p++;
			continue;
		}
		break;
	}
	*pp = p;
	return 0;
}

static int
smtp_local_scan(const char **pp, const char *lim, const char **err_out)
{
	const char *p = *pp;
	size_t n = 0, k;

	if (p < lim && *p == '"') {
		/* RFC 5321 4.1.2 Quoted-string: qtextSMTP / quoted-pairSMTP */
		for (p++; p < lim && *p != '"'; n++) {
			unsigned char c = (unsigned char)*p;

			if (c == '\\') {
				p++;
				if (p == lim || *p < 32 || *p > 126)
					goto bad;
				p++;
			} else if (c >= 32 && c <= 126)
				p++;
			else if (c >= 0x80 && (k = util_utf8_len(
			    (const unsigned char *)p,
			    (const unsigned char *)lim)) > 0)
				p += k;
			else
				goto bad;
		}
		if (p == lim)
			goto bad;
		p++;
		n = (size_t)(p - *pp) - 2;
	} else {
		/* Dot-string: atoms separated by single dots. */
		for (;;) {
			const char *atom = p;

			while (p < lim) {
				unsigned char c = (unsigned char)*p;

				if (smtp_is_atext(c))
					p++;
				else if (c >= 0x80 && (k = util_utf8_len(
				    (const unsigned char *)p,
				    (const unsigned char *)lim)) > 0)
					p += k;
				else
					break;
			}
			if (p == atom)
				goto bad;
			if (p < lim && *p == '.') {
				p++;
				continue;
			}
			break;
		}
		n = (size_t)(p - *pp);
	}
	if (n == 0)
		goto bad;
	/* RFC 5321 4.5.3.1.1 (the quotes of a Quoted-string not counted) */
	if (n > SMTP_LOCAL_MAX) {
		*err_out = "local part too long";
		return -1;
	}
	*pp = p;
	return 0;
bad:
	*err_out = "bad local part";
	return -1;
}

/* The n octets at p are a Dot-string (RFC 5321 4.1.2), nothing more. */
static bool
smtp_is_dot_string(const char *p, size_t n)
{
	const char *q = p, *err;

	return n > 0 && p[0] != '"' && smtp_local_scan(&q, p + n, &err) == 0 &&
	    q == p + n;
}

/*
 * Write the local part scanned at [p, p + n) to out (NUL-terminated) in
 * its one canonical form, so that every spelling of a mailbox is one
 * address.  RFC 5322 3.2.4: the quotes and backslashes of a
 * Quoted-string are not part of its value; RFC 5321 4.1.2: one that
 * could be a Dot-string should not be quoted.  A Dot-string is kept as
 * it is; a Quoted-string loses its needless backslashes, then its quotes
 * too when what is left is a Dot-string; otherwise only '"' and '\\' stay
 * escaped.  Never longer than the input.  Returns the length written.
 */
static size_t
smtp_local_canon(const char *p, size_t n, char *out)
{
	size_t k = 0;

	if (p[0] != '"') {
		memcpy(out, p, n);
		out[n] = '\0';
		return n;
	}
	out[k++] = '"';
	for (size_t i = 1; i + 1 < n; i++) {
		char c = p[i];

		if (c == '\\')
			c = p[++i];
		/* qtextSMTP lacks only these two: they came escaped */
		if (c == '"' || c == '\\')
			out[k++] = '\\';
		out[k++] = c;
	}
	out[k++] = '"';
	out[k] = '\0';
	if (smtp_is_dot_string(out + 1, k - 2)) {
		k -= 2;
		memmove(out, out + 1, k);
		out[k] = '\0';
	}
	return k;
}

static int
smtp_addr_domain_scan(const char **pp, const char *lim, const char **err_out)
{
	const char *p = *pp, *close;

	if (p < lim && *p == '[') {
		close = memchr(p, ']', (size_t)(lim - p));
		if (close == NULL || !smtp_literal_ok(p + 1,
		    (size_t)(close - p - 1))) {
			*err_out = "bad address literal";
			return -1;
		}
		p = close + 1;
	} else if (smtp_domain_scan(&p, lim) == -1) {
		*err_out = "bad domain";
		return -1;
	}
	if ((size_t)(p - *pp) > SMTP_DOMAIN_MAX) {
		*err_out = "domain too long";
		return -1;
	}
	*pp = p;
	return 0;
}

/*
 * RFC 5321 4.1.2 Path = "<" [ A-d-l ":" ] Mailbox ">".  The source route is
 * parsed and dropped (RFC 5321 4.1.1.3 and appendix C).
 */
int
smtp_addr_parse(const char *s, size_t len, bool allow_null,
    struct smtp_addr *out, const char **end_out, const char **err_out)
{
	const char *p = s, *lim = s + len, *local, *domain;
	size_t local_len, domain_len;

	out->local[0] = out->domain[0] = out->addr[0] = '\0';
	*err_out = NULL;
	if (p == lim || *p != '<') {
		*err_out = "missing '<'";
		return -1;
	}
	p++;
	if (p < lim && *p == '>') {
		if (!allow_null) {
			*err_out = "null path not allowed";
			return -1;
		}
		*end_out = p + 1;
		return 1;
	}
	if (p < lim && *p == '@') {
		for (;;) {
			p++;
			if (smtp_domain_scan(&p, lim) == -1)
				goto bad_route;
			if (p < lim && *p == ',') {
				p++;
				if (p == lim || *p != '@')
					goto bad_route;
				continue;
			}
			if (p < lim && *p == ':') {
				p++;
				break;
			}
			goto bad_route;
		}
	}
	local = p;
	if (smtp_local_scan(&p, lim, err_out) == -1)
		return -1;
	local_len = (size_t)(p - local);
	if (p == lim || *p != '@') {
		/*
		 * The scan stopped at a byte no local part holds: with an '@'
		 * still to come in the path, that byte is in the local part.
		 */
		const char *gt = memchr(p, '>', (size_t)(lim - p));
		size_t rest = (size_t)((gt != NULL ? gt : lim) - p);

		*err_out = memchr(p, '@', rest) != NULL ? "bad local part" :
		    "missing '@domain'";
		return -1;
	}
	domain = ++p;
	if (smtp_addr_domain_scan(&p, lim, err_out) == -1)
		return -1;
	domain_len = (size_t)(p - domain);
	if (p == lim || *p != '>') {
		/*
		 * The scan stopped at a byte no domain holds: with a '>' still
		 * to come, that byte is in the domain, which is what is wrong.
		 */
		if (memchr(p, '>', (size_t)(lim - p)) == NULL)
			*err_out = "missing '>'";
		else
			*err_out = *domain == '[' ? "bad address literal" :
			    "bad domain";
		return -1;
	}
	p++;
	/* RFC 5321 4.5.3.1.3: the path with its punctuation */
	if ((size_t)(p - s) > SMTP_PATH_MAX) {
		*err_out = "path too long";
		return -1;
	}
	ASSERT(local_len < sizeof(out->local));
	ASSERT(domain_len < sizeof(out->domain));
	ASSERT(local_len + 1 + domain_len < sizeof(out->addr));
	local_len = smtp_local_canon(local, local_len, out->local);
	for (size_t i = 0; i < domain_len; i++)
		out->domain[i] = smtp_lower(domain[i]);
	out->domain[domain_len] = '\0';
	memcpy(out->addr, out->local, local_len);
	out->addr[local_len] = '@';
	memcpy(out->addr + local_len + 1, out->domain, domain_len + 1);
	*end_out = p;
	return 1;
bad_route:
	*err_out = "bad source route";
	return -1;
}

void
smtp_addr_postmaster(const char *hostname, struct smtp_addr *out)
{
	size_t n = strlen(hostname);

	ASSERT(n < sizeof(out->domain));
	for (size_t i = 0; i <= n; i++)
		out->domain[i] = smtp_lower(hostname[i]);
	util_strlcpy(out->local, "postmaster", sizeof(out->local));
	util_strjoin(out->addr, sizeof(out->addr), out->local, "@",
	    out->domain, NULL);
}

/* RFC 5321 4.1.2: esmtp-keyword ["=" esmtp-value], separated by spaces. */
int
smtp_param_next(const char **pp, const char *lim, struct smtp_param *out)
{
	const char *p = *pp;

	while (p < lim && *p == ' ')
		p++;
	if (p == lim) {
		*pp = p;
		return 0;
	}
	out->key = p;
	if (!smtp_is_alnum((unsigned char)*p))
		return -1;
	while (p < lim && (smtp_is_alnum((unsigned char)*p) || *p == '-'))
		p++;
	out->key_len = (size_t)(p - out->key);
	out->val = NULL;
	out->val_len = 0;
	if (p < lim && *p == '=') {
		out->val = ++p;
		/* esmtp-value: %d33-60 / %d62-126, and UTF-8 (RFC 6531 3.3) */
		while (p < lim && *p != ' ' && *p != '=' &&
		    ((unsigned char)*p > 32 && (unsigned char)*p != 127))
			p++;
		out->val_len = (size_t)(p - out->val);
		if (out->val_len == 0)
			return -1;
	}
	if (p < lim && *p != ' ')
		return -1;
	*pp = p;
	return 1;
}

static bool
smtp_key_is(const struct smtp_param *prm, const char *name)
{
	return prm->key_len == strlen(name) &&
	    strncasecmp(prm->key, name, prm->key_len) == 0;
}

static bool
smtp_val_is(const struct smtp_param *prm, const char *name)
{
	return prm->val != NULL && prm->val_len == strlen(name) &&
	    strncasecmp(prm->val, name, prm->val_len) == 0;
}

static bool
smtp_all_digits(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] < '0' || p[i] > '9')
			return false;
	return n > 0;
}

/* Decimal without sign, at most 20 digits and no wrap.  0 or -1. */
static int
smtp_parse_u64(const char *p, size_t n, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0 || n > 20)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned d;

		if (!smtp_is_digit((unsigned char)p[i]))
			return -1;
		d = (unsigned)(p[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

/*
 * RFC 3461 4: xtext = *( xchar / hexchar ): printable ASCII but '+' and
 * '=', or "+" and two upper-case hex digits.
 */
static bool
smtp_xtext_ok(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];

		if (c == '+') {
			if (n - i < 3 || !smtp_is_hex((unsigned char)p[i + 1]) ||
			    !smtp_is_hex((unsigned char)p[i + 2]) ||
			    (p[i + 1] >= 'a' && p[i + 1] <= 'f') ||
			    (p[i + 2] >= 'a' && p[i + 2] <= 'f'))
				return false;
			i += 2;
		} else if (c < 33 || c > 126 || c == '=')
			return false;
	}
	return true;
}

#define SMTP_SYNTAX(t)	do {						\
	*code_out = 501;							\
	*text_out = (t);							\
	return -1;								\
} while (0)

int
smtp_mail_params_parse(const char *p, const char *lim, bool esmtp,
    uint64_t msg_max, struct smtp_mail_params *out, int *code_out,
    const char **text_out)
{
	struct smtp_param prm;
	bool seen_size = false, seen_body = false;
	int rc;

	memset(out, 0, sizeof(*out));
	while ((rc = smtp_param_next(&p, lim, &prm)) == 1) {
		if (!esmtp) {
			/* RFC 1869 6: parameters only after EHLO */
			*code_out = 555;
			*text_out = "5.5.4 MAIL parameters need EHLO";
			return -1;
		}
		if (smtp_key_is(&prm, "SIZE")) {
			/* RFC 1870 5 */
			if (seen_size || prm.val == NULL ||
			    prm.val_len > 20 || !smtp_all_digits(prm.val,
			    prm.val_len))
				SMTP_SYNTAX("5.5.4 Bad SIZE parameter");
			/* Up to 20 digits are valid; past 2^64 is "too big". */
			if (smtp_parse_u64(prm.val, prm.val_len,
			    &out->size) == -1)
				out->size = UINT64_MAX;
			seen_size = true;
		} else if (smtp_key_is(&prm, "BODY")) {
			/* RFC 6152 2 */
			if (seen_body)
				SMTP_SYNTAX("5.5.4 Bad BODY parameter");
			if (smtp_val_is(&prm, "7BIT"))
				out->body = SMTP_BODY_7BIT;
			else if (smtp_val_is(&prm, "8BITMIME"))
				out->body = SMTP_BODY_8BITMIME;
			else
				SMTP_SYNTAX("5.5.4 Bad BODY parameter");
			seen_body = true;
		} else if (smtp_key_is(&prm, "AUTH")) {
			/* RFC 4954 5: AUTH=<> or AUTH=xtext (RFC 3461 4) */
			if (out->auth || prm.val == NULL ||
			    !smtp_xtext_ok(prm.val, prm.val_len))
				SMTP_SYNTAX("5.5.4 Bad AUTH parameter");
			out->auth = true;
		} else if (smtp_key_is(&prm, "SMTPUTF8")) {
			/* RFC 6531 3.4: no value */
			if (out->smtputf8 || prm.val != NULL)
				SMTP_SYNTAX("5.5.4 Bad SMTPUTF8 parameter");
			out->smtputf8 = true;
		} else {
			*code_out = 555;
			*text_out = "5.5.4 Unsupported MAIL parameter";
			return -1;
		}
	}
	if (rc == -1)
		SMTP_SYNTAX("5.5.4 Bad MAIL parameter syntax");
	/* RFC 1870 6.1: a declared size over the limit is refused now */
	if (msg_max != 0 && out->size > msg_max) {
		*code_out = 552;
		*text_out = "5.3.4 Message size exceeds fixed maximum "
		    "message size";
		return -1;
	}
	return 0;
}

int
smtp_bdat_parse(const char *arg, size_t len, uint64_t *n_out, bool *last_out)
{
	size_t i = 0;

	while (i < len && smtp_is_digit((unsigned char)arg[i]))
		i++;
	if (smtp_parse_u64(arg, i, n_out) == -1)
		return -1;
	*last_out = false;
	if (i == len)
		return 0;
	/* RFC 3030 4: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] */
	if (len - i == 5 && strncasecmp(arg + i, " LAST", 5) == 0) {
		*last_out = true;
		return 0;
	}
	return -1;
}
