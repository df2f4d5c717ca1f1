/*
 * chain/verdict.c: what a handler answers: its verdict, a reply spec from
 * the config ("CODE [ESC] [TEXT...]"), and the checks a reply passes (code,
 * enhanced code, printable text) before it goes to a client.
 */
#include "chain/chain.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain/chain_private.h"
#include "util/util.h"

void
chain_verdict_continue(struct chain_verdict *v)
{
	memset(v, 0, sizeof(*v));
	v->kind = CHAIN_CONTINUE;
}

void
chain_verdict_reject(struct chain_verdict *v, int code, const char *esc,
    const char *text)
{
	memset(v, 0, sizeof(*v));
	v->kind = CHAIN_REJECT;
	v->code = code;
	if (esc != NULL)
		util_strlcpy(v->esc, esc, sizeof(v->esc));
	if (text != NULL)
		util_strlcpy(v->text, text, sizeof(v->text));
}

void
chain_verdict_refuse(struct chain_verdict *v, int code, const char *esc,
    const char *text, const char *why_fmt, ...)
{
	va_list ap;

	chain_verdict_reject(v, code, esc, text);
	va_start(ap, why_fmt);
	vsnprintf(v->why, sizeof(v->why), why_fmt, ap);
	va_end(ap);
}

void
chain_verdict_fail(struct chain_verdict *v, const char *fmt, ...)
{
	va_list ap;

	memset(v, 0, sizeof(*v));
	v->kind = CHAIN_FAIL;
	va_start(ap, fmt);
	vsnprintf(v->why, sizeof(v->why), fmt, ap);
	va_end(ap);
}

bool
chain_code_ok(int code)
{
	return code >= 400 && code <= 599;
}

/* RFC 3463 2: esc is an enhanced status code, of the class of code. */
bool
chain_esc_ok(const char *esc, int code)
{
	size_t n = util_esc_len(esc);

	return n > 0 && esc[n] == '\0' && esc[0] == '0' + code / 100;
}

/* RFC 5321 4.2: reply text is printable US-ASCII (and spaces). */
bool
chain_text_ok(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

int
chain_parse_reply(const char *const *argv, size_t argc,
    struct chain_verdict *v, char **err_out)
{
	size_t i = 0;
	char *end;

	chain_verdict_reject(v, 550, NULL, NULL);
	if (i < argc && strspn(argv[i], "0123456789") == strlen(argv[i])) {
		long code = strtol(argv[i], &end, 10);
		if (!chain_code_ok((int)code) || strlen(argv[i]) != 3) {
			*err_out = xasprintf("reply code %s must be 4xx or "
			    "5xx", argv[i]);
			return -1;
		}
		v->code = (int)code;
		i++;
	}
	bool coded = i > 0;
	if (i < argc && argv[i][0] >= '2' && argv[i][0] <= '5' &&
	    argv[i][1] == '.') {
		if (!chain_esc_ok(argv[i], v->code)) {
			*err_out = xasprintf("enhanced code %s does not fit "
			    "reply code %d", argv[i], v->code);
			return -1;
		}
		util_strlcpy(v->esc, argv[i], sizeof(v->esc));
		i++;
	}
	struct util_buf b = { 0 };
	for (; i < argc; i++) {
		if (b.len > 0)
			util_buf_add(&b, " ", 1);
		util_buf_addstr(&b, argv[i]);
	}
	util_buf_add(&b, "", 1);
	int r = util_strlcpy(v->text, b.data, sizeof(v->text));
	util_buf_clear(&b);
	if (r == -1 || !chain_text_ok(v->text)) {
		*err_out = xstrdup("reply text too long or not printable");
		return -1;
	}
	/* No code given: the stage's default when it is sent (run.c). */
	if (!coded)
		v->code = 0;
	return 0;
}
