/*
 * config/lex.c: splits one line of postern.conf into words, quoted strings
 * and the punctuation of inline lists.  Knows nothing of statements.
 */
#include "config/config_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

static bool
cfg_is_blank(char c)
{
	/* A CR before the newline (a file edited on Windows) counts as blank. */
	return c == ' ' || c == '\t' || c == '\r';
}

static bool
cfg_is_special(char c)
{
	return c == '{' || c == '}' || c == ',' || c == ';' || c == '#' ||
	    c == '"' ||
	    cfg_is_blank(c);
}

static void
cfg_add_tok(struct cfg_line *ln, enum cfg_tok_kind kind, char *text,
    bool quoted)
{
	ln->toks = xreallocarray(ln->toks, ln->ntoks + 1, sizeof(*ln->toks));
	ln->toks[ln->ntoks].kind = kind;
	ln->toks[ln->ntoks].text = text;
	ln->toks[ln->ntoks].quoted = quoted;
	ln->ntoks++;
}

/* Read "..." starting at s[*ip] == '"' into b; -1 with ln->lexerr. */
static int
cfg_lex_quoted(const char *s, size_t len, size_t *ip, struct util_buf *b,
    struct cfg_line *ln)
{
	size_t i = *ip + 1;

	for (; i < len && s[i] != '"'; i++) {
		if (s[i] == '\\') {
			if (i + 1 >= len) {
				i = len;	/* "abc\ at the end of the line */
				break;
			}
			i++;
			if (s[i] != '"' && s[i] != '\\') {
				ln->lexerr = xasprintf("bad escape \"\\%c\" in "
				    "quoted string (only \\\" and \\\\ are "
				    "allowed)", s[i] >= 0x20 && s[i] < 0x7f ?
				    s[i] : '?');
				return -1;
			}
		} else if (s[i] == '\0') {
			ln->lexerr = xstrdup("NUL byte in quoted string");
			return -1;
		}
		util_buf_add(b, &s[i], 1);
	}
	if (i >= len) {
		ln->lexerr = xstrdup("unterminated quoted string");
		return -1;
	}
	*ip = i + 1;
	return 0;
}

void
cfg_lex_line(const char *s, size_t len, int lineno, struct cfg_line *ln)
{
	struct util_buf b = { 0 };
	size_t i = 0;

	memset(ln, 0, sizeof(*ln));
	ln->lineno = lineno;
	while (i < len) {
		char c = s[i];
		if (cfg_is_blank(c)) {
			i++;
			continue;
		}
		if (c == '#')
			break;
		if (c == '{' || c == '}' || c == ',' || c == ';') {
			/* Punctuation has its character as text too, so a
			 * statement that compares words before checking kinds
			 * sees "}" rather than a null pointer. */
			cfg_add_tok(ln, c == '{' ? CFG_TOK_LBRACE :
			    c == '}' ? CFG_TOK_RBRACE : c == ';' ?
			    CFG_TOK_SEMI : CFG_TOK_COMMA, xstrndup(&s[i], 1),
			    false);
			i++;
			continue;
		}
		/* A word: bare and quoted parts glued together (file:"a b"). */
		bool quoted = false;
		util_buf_reset(&b);
		util_buf_add(&b, "", 0);
		while (i < len && (!cfg_is_special(s[i]) || s[i] == '"')) {
			if (s[i] == '"') {
				if (cfg_lex_quoted(s, len, &i, &b, ln) == -1)
					goto fail;
				quoted = true;
				continue;
			}
			if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
				ln->lexerr = xasprintf("control character "
				    "0x%02x outside quotes",
				    (unsigned)(unsigned char)s[i]);
				goto fail;
			}
			util_buf_add(&b, &s[i], 1);
			i++;
		}
		cfg_add_tok(ln, CFG_TOK_WORD, xstrndup(b.data, b.len),
		    quoted);
	}
	util_buf_clear(&b);
	return;
fail:
	util_buf_clear(&b);
	for (size_t k = 0; k < ln->ntoks; k++)
		free(ln->toks[k].text);
	free(ln->toks);
	ln->toks = NULL;
	ln->ntoks = 0;
}

void
cfg_line_clear(struct cfg_line *ln)
{
	for (size_t k = 0; k < ln->ntoks; k++)
		free(ln->toks[k].text);
	free(ln->toks);
	free(ln->lexerr);
	memset(ln, 0, sizeof(*ln));
}

char *
cfg_quote(const char *s)
{
	char buf[300];

	log_safe_into(buf, sizeof(buf), s, strlen(s) > 64 ? 64 : strlen(s));
	if (strlen(s) > 64)
		return xasprintf("\"%s...\"", buf);
	return xasprintf("\"%s\"", buf);
}
