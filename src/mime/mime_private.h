/*
 * mime/mime_private.h: what the files of mime/ share: GMime set-up, and
 * reading a part's decoded content in chunks.
 */
#ifndef POSTERN_MIME_PRIVATE_H
#define POSTERN_MIME_PRIVATE_H

#include <gmime/gmime.h>

#include "mime/mime.h"

/* g_mime_init() once per process, from whichever thread comes first. */
void	mime_gmime_init(void);

/*
 * Called with each chunk of a part's decoded content; return false to
 * stop reading.
 */
typedef bool mime_chunk_fn(void *arg, const char *buf, size_t n);
/*
 * Feed part's content, transfer encoding undone, to fn.  Returns the
 * bytes fed (all of them unless fn stopped), or -1 on a read error.
 */
int64_t	mime_part_read(GMimePart *part, mime_chunk_fn *fn, void *arg);

/*
 * in[0..len) in charset (NULL: undeclared) as UTF-8, appended to out
 * (NUL-terminated).  Bytes that do not convert become U+FFFD; an
 * undeclared charset is UTF-8 when the bytes are valid UTF-8, else
 * windows-1252.  cut: in was cut short, so an incomplete character at the
 * end is dropped.  Returns the charset the bytes were read as (static or
 * from charset).
 */
const char *mime_to_utf8(const char *in, size_t len, const char *charset,
	    bool cut, struct util_buf *out);

/*
 * Is id[0..len), the inside of "<...>", a well-formed msg-id (RFC 5322
 * 3.6.4, read liberally: printable ASCII, no blanks, "<" or ">", an "@"
 * with something either side)?  The view holds no other ids.
 */
bool	mime_msgid_ok(const char *id, size_t len);

/* The top-level members of mime_msg_json()'s object, NULL-terminated. */
extern const char *const mime_json_members[];

#endif
