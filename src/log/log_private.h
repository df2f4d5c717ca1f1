/* log/log_private.h: what the files of log/ share. */
#ifndef POSTERN_LOG_PRIVATE_H
#define POSTERN_LOG_PRIVATE_H

#include "log/log.h"

#include <stdarg.h>

/* file.c: the descriptor lines go to: stderr, or the log file. */
int	log_out_fd(void);
/* n octets were written to it: rotate the file when it is full. */
void	log_file_wrote(size_t n);

/* What a JSON line has before the fields of its text; NULL: left out. */
struct log_json_head {
	const char	*stamp;		/* "time" */
	const char	*level;		/* never NULL */
	const char	*event;
	const char	*sid;
	const char	*qid;
};
/*
 * json.c: one line as a JSON object ending in a newline, into out (at
 * least 512 octets): the fields of h, then each KEY=value and
 * KEY="value" of rest as a field, and the other words of rest, in order,
 * as "msg" (msg="text" gives its text to it).  A key of h's, "msg",
 * "truncated", a key rest has given already, or one past the 64th is not
 * a field: its KEY=value is a word of msg.  Returns the length; a line
 * that does not fit ends with "truncated":true.
 */
size_t	log_json_line(char *out, size_t outsz, const struct log_json_head *h,
	    const char *rest);

/*
 * format.c: fmt with ap into out (size > 0), as vsnprintf makes it: cut
 * to fit, NUL-terminated.  Returns the length of the text up to its first
 * NUL.
 */
size_t	log_format(char *out, size_t size, const char *fmt, va_list ap)
	    UTIL_PRINTF(3, 0);

#endif
