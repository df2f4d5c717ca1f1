/*
 * http/http_private.h: the body reader shared by the transfer (client.c)
 * and the length and signature pass (body.c).
 */
#ifndef POSTERN_HTTP_PRIVATE_H
#define POSTERN_HTTP_PRIVATE_H

#include "http/http.h"

#include <sys/types.h>

#define HTTP_READ_CHUNK	(64u * 1024)

/* A body being read out: from memory, or a file with LF -> CRLF. */
struct http_reader {
	const struct http_body *b;	/* borrowed */
	int		 fd;		/* -1 until opened, for a file */
	size_t		 pos;		/* memory: bytes given */
	char		*buf;		/* owned: file bytes read ahead */
	size_t		 len, off;	/* in buf */
	bool		 cr_sent;	/* crlf: the CR of buf[off]'s LF is
					   out, the LF is still owed */
	bool		 eof;
};

/* 0, or -1 with *err_out (thread-local) when the file cannot be opened. */
int	http_reader_open(struct http_reader *rd, const struct http_body *b,
	    const char **err_out);
/*
 * Up to cap bytes of the body into out.  Returns the count (0 at the
 * end), or -1 with *err_out (thread-local) on a read error.
 */
ssize_t	http_reader_read(struct http_reader *rd, char *out, size_t cap,
	    const char **err_out);
void	http_reader_close(struct http_reader *rd);

#endif
