/*
 * mime/mime.h: a parsed view of a message (GMime): decoded headers, the
 * text and HTML bodies in UTF-8, attachment metadata, as JSON for
 * webhooks, agents and scripts; %{...} templates over that JSON; the RFC
 * 3834 auto-reply rules; the builder of well-formed reply messages.
 * Every function may run on any thread (GMime is set up once, lazily).
 * Knows nothing of sockets, the spool or the queue.
 */
#ifndef POSTERN_MIME_H
#define POSTERN_MIME_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

/* Bounds of a parse; 0 in a field takes the default shown. */
struct mime_limits {
	size_t		 text_max;	/* bytes of UTF-8 kept of the text and
					   of the HTML body: 1 MiB */
	size_t		 attach_max;	/* decoded bytes of attachment content
					   kept in all (first come, whole
					   attachments only): none unless
					   set; SIZE_MAX: every one */
	unsigned	 parts_max;	/* MIME leaves looked at: 100 */
	unsigned	 headers_max;	/* top-level header fields kept: 200 */
};
#define MIME_TEXT_MAX_DEFAULT		(1024u * 1024)
#define MIME_PARTS_MAX_DEFAULT		100u
#define MIME_HEADERS_MAX_DEFAULT	200u

struct mime_header {
	char		*name;		/* owned, as written */
	char		*value;		/* owned: unfolded, RFC 2047 decoded,
					   UTF-8 */
};

struct mime_addr {
	char		*name;		/* owned: decoded display name, "" if
					   none */
	char		*address;	/* owned: "user@domain" as written */
};

struct mime_addr_list {
	struct mime_addr *v;		/* owned array */
	size_t		 n;
};

struct mime_attachment {
	char		*filename;	/* owned, decoded UTF-8; NULL: none */
	char		*content_type;	/* owned: "type/subtype", lower case */
	char		*disposition;	/* owned: "attachment", "inline", or
					   NULL when the part has none */
	char		*content_id;	/* owned, without <>; or NULL */
	uint64_t	 size;		/* decoded bytes */
	unsigned char	*data;		/* owned: the decoded content (an
					   attached message as written) when
					   it fitted attach_max; else NULL */
	size_t		 data_len;
};

/* A decoded body: UTF-8, NUL-terminated, maybe holding NULs before len. */
struct mime_body {
	char		*s;		/* owned; NULL: the message has none */
	size_t		 len;
	bool		 truncated;	/* cut at text_max */
	char		*charset;	/* owned: what it was decoded from */
};

/* The parsed view; a plain value, freed with mime_msg_free(). */
struct mime_msg {
	struct mime_header *headers;	/* owned: top-level fields, in order */
	size_t		 nheaders;
	unsigned	 nreceived;	/* Received: fields (all counted) */
	/* Decoded UTF-8 copies of the usual fields; NULL when absent. */
	char		*subject, *date;
	char		*from, *to, *cc, *reply_to;	/* display text */
	struct mime_addr_list from_list, to_list, cc_list, reply_to_list;
	/*
	 * Message ids (owned) without <>, as written: never RFC 2047
	 * decoded, and only well-formed ones (RFC 5322 3.6.4: printable
	 * ASCII, no blanks, an "@" inside); NULL or left out otherwise.
	 * in_reply_to is the field's first id; in_reply_to_alone when the
	 * field holds no other.
	 */
	char		*message_id, *in_reply_to;
	bool		 in_reply_to_alone;
	char		**references;	/* owned: the well-formed ones */
	size_t		 nreferences;
	char		*content_type;	/* owned: top-level "type/subtype" */
	struct mime_body text, html;
	struct mime_attachment *atts;	/* owned array */
	size_t		 natts;
	unsigned	 parts_skipped;	/* leaves past parts_max */
	char		*parse_error;	/* owned: what was wrong with the
					   structure (the view then holds what
					   could be read, the raw body as
					   text at worst), or NULL */
};

/*
 * Parse the message in the file at path (LF or CRLF line ends).  Content
 * is read from the file as needed, never loaded whole: memory stays
 * within the limits whatever the message size.  NULL with *err_out
 * (thread-local text) only when the file cannot be read; a malformed
 * message still gives a view, with parse_error set.
 */
struct mime_msg *mime_parse_file(const char *path, const struct mime_limits *lim,
	    const char **err_out);
/* The same from memory (borrowed, only during the call).  Never NULL. */
struct mime_msg *mime_parse_mem(const void *buf, size_t len,
	    const struct mime_limits *lim);
void	mime_msg_free(struct mime_msg **mp);

/* The first top-level header named name (any case), decoded; or NULL. */
const char *mime_msg_header(const struct mime_msg *m, const char *name);

/*
 * The view as a JSON object (new reference):
 *   from to cc reply_to subject date message_id in_reply_to: strings or
 *     null; addresses: {from,to,cc,reply_to: [{name,address}]};
 *   references: [ids]; headers: [{name,value}]; content_type;
 *   text, html: strings or null; text_truncated, html_truncated;
 *   attachments: [{filename, content_type, disposition, content_id, size,
 *     content_base64 (when kept)}]; parts_skipped: leaves past
 *     parts_max, not looked at; parse_error: string or null.
 * The caller adds its own members (envelope, client, queue id).
 */
json_t	*mime_msg_json(const struct mime_msg *m);

/*
 * in[0..len), in charset (any case; NULL: none declared), as valid UTF-8
 * appended to out (NUL-terminated).  Undeclared text is kept when it is
 * UTF-8 and read as windows-1252 when it is not (the usual 8-bit text).
 */
void	mime_text_utf8(const char *in, size_t len, const char *charset,
	    struct util_buf *out);

/*
 * A Content-Type value (RFC 2045 5.1, RFC 9110 8.3.1) read: returns its
 * "type/subtype" in lower case, "application/octet-stream" for a value
 * that is none, and puts its charset parameter in *charset_out (NULL when
 * it has none); both malloc'd.
 */
char	*mime_media_type(const char *value, char **charset_out);

/* ---- templates (template.c) ---- */

/*
 * A template: text with %{path} variables (path: dotted members and array
 * indexes of a JSON document, "addresses.from.0.address") and %% for %.
 * MIME_TPL_JSON: the template must give JSON; a variable inside a JSON
 * string gets its value escaped for that string (objects and arrays as
 * compact JSON text, null as nothing), one outside a string gets the value
 * as JSON (a missing value is null).  MIME_TPL_TEXT: values as plain text
 * (strings as they are, arrays of strings joined by ", ", objects as
 * JSON, null as nothing).
 */
enum mime_tpl_mode { MIME_TPL_JSON, MIME_TPL_TEXT };
struct mime_tpl;

/*
 * Compile text (len bytes).  A path must start with a member of the view
 * (mime_msg_json()) or of extra_roots (NULL-terminated: what the caller
 * adds, or NULL), so a typo is an error.  In JSON mode the template must
 * parse as JSON with every variable empty.  NULL with *err_out (malloc'd,
 * "line 3: unknown field \"form\"").
 */
struct mime_tpl *mime_tpl_new(const char *text, size_t len,
	    enum mime_tpl_mode mode, const char *const *extra_roots,
	    char **err_out);
void	mime_tpl_free(struct mime_tpl **tp);
/* Append the expansion over doc (borrowed) to out. */
void	mime_tpl_expand(const struct mime_tpl *t, const json_t *doc,
	    struct util_buf *out);

/* ---- RFC 3834 (autoreply.c) ---- */

struct mime_ar_input {
	const struct mime_msg *msg;
	const char	*sender;	/* envelope sender, "" for <> */
	const char	*agent;		/* the answering mailbox "user@domain" */
	unsigned	 received_max;	/* more Received: is a loop; 0: 25 */
};
#define MIME_AR_RECEIVED_MAX_DEFAULT	25u

/*
 * May an automatic reply be sent to this message (RFC 3834 2, 3.1)?  No
 * for: the null sender, an automated sender (MAILER-DAEMON, postmaster,
 * owner-*, *-request, bounce and no-reply addresses), the agent itself
 * (sender or From:), Auto-Submitted other than "no", Precedence bulk,
 * list or junk, any List-* field, X-Auto-Response-Suppress, a delivery or
 * feedback report, more Received: fields than received_max.  On false,
 * *why_out (static text) says which.
 */
bool	mime_autoreply_allowed(const struct mime_ar_input *in,
	    const char **why_out);

/*
 * The subject without its reply and forward prefixes ("Re:", "RE[2]:",
 * "Fwd:", "Fw:", "AW:", "SV:", repeated), blanks trimmed (malloc'd).
 */
char	*mime_subject_base(const char *subject);

/* ---- reply messages (build.c) ---- */

struct mime_file {
	const char	*filename;	/* UTF-8 */
	const char	*content_type;	/* NULL: guessed from name and data */
	const void	*data;		/* borrowed */
	size_t		 len;
};

struct mime_reply {
	const char	*from;		/* the agent's mailbox "user@domain" */
	const char	*from_name;	/* display name, or NULL */
	const char	*to;		/* where the reply goes "user@domain" */
	const struct mime_msg *orig;	/* answered message, or NULL */
	const char	*subject;	/* NULL: "Re: " + the original's base
					   subject */
	const char	*text;		/* UTF-8 bodies; NULL: none */
	const char	*html;
	const struct mime_file *files;	/* attachments */
	size_t		 nfiles;
	/*
	 * Or a whole MIME message (an agent's output): its body and MIME
	 * structure are kept, its Subject used when subject is NULL, and the
	 * header fields above replace its own.  text/html/files unused.
	 */
	const char	*mime;
	size_t		 mime_len;
	const char	*hostname;	/* right side of the Message-ID */
	const char	*auto_submitted; /* NULL: "auto-replied" */
	int64_t		 date;		/* epoch seconds of the Date: field */
};

/*
 * Build the reply as a message (LF line ends) appended to out: From, To,
 * Subject (RFC 2047 when needed), Date, Message-ID, In-Reply-To and
 * References from orig's well-formed ids (none is written otherwise),
 * Auto-Submitted (RFC 3834 5), MIME-Version; one text/plain or text/html
 * part, multipart/alternative for both, in multipart/mixed with the
 * attachments; 7-bit transfer encodings throughout.  0, or -1 with
 * *err_out (static text) when nothing usable was given, from or to holds
 * a control character, or mime does not parse as a message.
 */
int	mime_reply_build(const struct mime_reply *r, struct util_buf *out,
	    const char **err_out);

/*
 * text (UTF-8) as the display name of a mailbox (RFC 5322 3.4 phrase), as
 * the reply's From: gets it: atoms as they are, a quoted string where
 * specials need one, RFC 2047 UTF-8 encoded-words for other text, so the
 * field stays 7-bit and needs no SMTPUTF8 (RFC 6532 3).  A byte that is
 * not UTF-8 becomes U+FFFD; control characters are dropped.  Words are
 * separated by blanks, none inside an encoded-word or escaped, so a
 * field may fold at any blank.  Returns a malloc'd string, "" for none.
 */
char	*mime_encode_phrase(const char *text);

/* True when out looks like a whole MIME message rather than a body. */
bool	mime_looks_like_message(const char *s, size_t len);

#endif
