/*
 * log/format.c: the text of a log line's fmt, byte for byte as vsnprintf
 * makes it.  vsnprintf was the bulk of what a line cost; the lines use a
 * few conversions (%s, %d %i %u with no length or l ll z j, %.*s, %%),
 * made here directly.  A format with any other (a flag, a width, %x, a
 * NULL string) goes to vsnprintf whole.
 */
#include "log/log_private.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

struct log_out {
	char	*p;
	size_t	 n, max;	/* max: the room, less the NUL's */
};

static void
log_out_put(struct log_out *o, const char *s, size_t n)
{
	if (n > o->max - o->n)
		n = o->max - o->n;
	memcpy(o->p + o->n, s, n);
	o->n += n;
}

static void
log_out_num(struct log_out *o, uintmax_t v, bool neg)
{
	char b[24];
	size_t i = sizeof(b);

	do {
		b[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	if (neg)
		b[--i] = '-';
	log_out_put(o, b + i, sizeof(b) - i);
}

enum log_len { LEN_NONE, LEN_L, LEN_LL, LEN_Z, LEN_J };

static void
log_out_signed(struct log_out *o, enum log_len len, va_list *ap)
{
	intmax_t v;

	switch (len) {
	case LEN_L:	v = va_arg(*ap, long); break;
	case LEN_LL:	v = va_arg(*ap, long long); break;
	case LEN_Z:	v = va_arg(*ap, ssize_t); break;
	case LEN_J:	v = va_arg(*ap, intmax_t); break;
	default:	v = va_arg(*ap, int); break;
	}
	log_out_num(o, v < 0 ? -(uintmax_t)v : (uintmax_t)v, v < 0);
}

static void
log_out_unsigned(struct log_out *o, enum log_len len, va_list *ap)
{
	uintmax_t v;

	switch (len) {
	case LEN_L:	v = va_arg(*ap, unsigned long); break;
	case LEN_LL:	v = va_arg(*ap, unsigned long long); break;
	case LEN_Z:	v = va_arg(*ap, size_t); break;
	case LEN_J:	v = va_arg(*ap, uintmax_t); break;
	default:	v = va_arg(*ap, unsigned); break;
	}
	log_out_num(o, v, false);
}

/* The conversion at *fp (past its '%'), *fp moved past it; false: not ours. */
static bool
log_out_conv(struct log_out *o, const char **fp, va_list *ap)
{
	const char *f = *fp, *s;
	enum log_len len = LEN_NONE;
	int prec;

	if (f[0] == '%' || (f[0] == '.' && f[1] == '*' && f[2] == 's')) {
		if (f[0] == '%') {
			log_out_put(o, "%", 1);
			*fp = f + 1;
			return true;
		}
		prec = va_arg(*ap, int);
		if ((s = va_arg(*ap, const char *)) == NULL)
			return false;
		log_out_put(o, s, prec < 0 ? strlen(s) :
		    strnlen(s, (size_t)prec));
		*fp = f + 3;
		return true;
	}
	if (f[0] == 'l' && f[1] == 'l')
		len = LEN_LL, f += 2;
	else if (f[0] == 'l')
		len = LEN_L, f++;
	else if (f[0] == 'z')
		len = LEN_Z, f++;
	else if (f[0] == 'j')
		len = LEN_J, f++;
	if (f[0] == 'd' || f[0] == 'i')
		log_out_signed(o, len, ap);
	else if (f[0] == 'u')
		log_out_unsigned(o, len, ap);
	else if (f[0] == 's' && len == LEN_NONE) {
		if ((s = va_arg(*ap, const char *)) == NULL)
			return false;
		log_out_put(o, s, strlen(s));
	} else
		return false;
	*fp = f + 1;
	return true;
}

size_t
log_format(char *out, size_t size, const char *fmt, va_list ap)
{
	struct log_out o = { out, 0, size - 1 };
	const char *f = fmt, *pct;
	bool ours = true;
	va_list aq;

	va_copy(aq, ap);
	while (ours && *f != '\0') {
		pct = strchrnul(f, '%');
		log_out_put(&o, f, (size_t)(pct - f));
		f = pct;
		if (*f == '%') {
			f++;
			ours = log_out_conv(&o, &f, &aq);
		}
	}
	va_end(aq);
	if (ours) {
		out[o.n] = '\0';
		return o.n;
	}
	vsnprintf(out, size, fmt, ap);
	return strlen(out);
}
