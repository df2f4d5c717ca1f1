/*
 * chain/milter.h: the milter wire protocol, version 6 (Sendmail's
 * libmilter protocol, as the MTA side speaks it): packet framing, the
 * commands we send and the replies a filter gives.  Pure: no sockets, no
 * loop, so every split point of a reply can be unit-tested.
 *
 * A packet is a 32-bit length in network order (counting the command
 * byte), a command byte, then data; strings in data end in NUL.
 */
#ifndef POSTERN_CHAIN_MILTER_H
#define POSTERN_CHAIN_MILTER_H

#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

#define MILTER_VERSION		6
#define MILTER_CHUNK_MAX	65535		/* body bytes per 'B' */
#define MILTER_PACKET_MAX	(1024 * 1024)	/* largest reply we take */

/* Commands, MTA to filter. */
#define MILTER_C_ABORT		'A'
#define MILTER_C_BODY		'B'
#define MILTER_C_CONNECT	'C'
#define MILTER_C_MACRO		'D'
#define MILTER_C_EOB		'E'
#define MILTER_C_HELO		'H'
#define MILTER_C_HEADER		'L'
#define MILTER_C_MAIL		'M'
#define MILTER_C_EOH		'N'
#define MILTER_C_OPTNEG		'O'
#define MILTER_C_QUIT		'Q'
#define MILTER_C_RCPT		'R'
#define MILTER_C_DATA		'T'

/* Replies, filter to MTA. */
#define MILTER_R_ADDRCPT	'+'
#define MILTER_R_DELRCPT	'-'
#define MILTER_R_ADDRCPT_PAR	'2'
#define MILTER_R_SHUTDOWN	'4'
#define MILTER_R_ACCEPT		'a'
#define MILTER_R_REPLBODY	'b'
#define MILTER_R_CONTINUE	'c'
#define MILTER_R_DISCARD	'd'
#define MILTER_R_CHGFROM	'e'
#define MILTER_R_CONN_FAIL	'f'
#define MILTER_R_ADDHEADER	'h'
#define MILTER_R_INSHEADER	'i'
#define MILTER_R_CHGHEADER	'm'
#define MILTER_R_OPTNEG		'O'
#define MILTER_R_PROGRESS	'p'
#define MILTER_R_QUARANTINE	'q'
#define MILTER_R_REJECT		'r'
#define MILTER_R_SKIP		's'
#define MILTER_R_TEMPFAIL	't'
#define MILTER_R_REPLYCODE	'y'

/* Actions a filter may take (what we offer in OPTNEG). */
#define MILTER_A_ADDHDRS	0x001
#define MILTER_A_CHGBODY	0x002
#define MILTER_A_ADDRCPT	0x004
#define MILTER_A_DELRCPT	0x008
#define MILTER_A_CHGHDRS	0x010
#define MILTER_A_QUARANTINE	0x020
#define MILTER_A_CHGFROM	0x040
#define MILTER_A_ADDRCPT_PAR	0x080
#define MILTER_A_SETSYMLIST	0x100

/* Protocol steps a filter may ask us to leave out or not wait for. */
#define MILTER_P_NOCONNECT	0x000001
#define MILTER_P_NOHELO		0x000002
#define MILTER_P_NOMAIL		0x000004
#define MILTER_P_NORCPT		0x000008
#define MILTER_P_NOBODY		0x000010
#define MILTER_P_NOHDRS		0x000020
#define MILTER_P_NOEOH		0x000040
#define MILTER_P_NR_HDR		0x000080
#define MILTER_P_NOUNKNOWN	0x000100
#define MILTER_P_NODATA		0x000200
#define MILTER_P_SKIP		0x000400
#define MILTER_P_RCPT_REJ	0x000800
#define MILTER_P_NR_CONN	0x001000
#define MILTER_P_NR_HELO	0x002000
#define MILTER_P_NR_MAIL	0x004000
#define MILTER_P_NR_RCPT	0x008000
#define MILTER_P_NR_DATA	0x010000
#define MILTER_P_NR_UNKN	0x020000
#define MILTER_P_NR_EOH		0x040000
#define MILTER_P_NR_BODY	0x080000
#define MILTER_P_HDR_LEADSPC	0x100000

/* Append one packet: cmd and len bytes of data. */
void	milter_put(struct util_buf *b, char cmd, const void *data,
	    size_t len);
/* A packet whose data is n NUL-terminated strings. */
void	milter_put_strs(struct util_buf *b, char cmd,
	    const char *const *strs, size_t n);
/* OPTNEG: version, actions and protocol flags. */
void	milter_put_optneg(struct util_buf *b, uint32_t version,
	    uint32_t actions, uint32_t proto);
/* CONNECT: host name, then family '4'/'6' with port and address. */
void	milter_put_connect(struct util_buf *b, const char *host,
	    const char *ip, int port);

/* One reply; data points into the caller's buffer. */
struct milter_reply {
	char		 cmd;
	const char	*data;
	size_t		 len;
};

/*
 * Take one packet from the front of buf: 1 (*r and *used set), 0 when
 * more bytes are needed, -1 when malformed (*err_out: static text).
 */
int	milter_get(const char *buf, size_t len, struct milter_reply *r,
	    size_t *used, const char **err_out);
/* An OPTNEG reply's three words; -1 when too short. */
int	milter_get_optneg(const struct milter_reply *r, uint32_t *version,
	    uint32_t *actions, uint32_t *proto);
/*
 * Split r's data from offset skip into NUL-terminated strings: the count
 * (at most max), or -1 when the last one is not terminated or there are
 * more than max.
 */
int	milter_get_strs(const struct milter_reply *r, size_t skip,
	    const char **out, size_t max);
/* The 32-bit number at the start of r's data (INSHEADER, CHGHEADER). */
int	milter_get_u32(const struct milter_reply *r, uint32_t *out);

#define MILTER_LINE_MAX		432	/* of a 'y' reply, kept (cut after) */

/* A 'y' (REPLYCODE) reply's first line, taken apart. */
struct milter_replycode {
	int	 code;				/* 400..599 */
	char	 esc[16];			/* "4.7.1"; "" when none */
	char	 text[MILTER_LINE_MAX];		/* "" when none */
};
/*
 * Parse a 'y' reply: "CODE[ -]ESC TEXT", possibly several lines, of which
 * the first counts.  A "%{" in the text becomes "%(": reply texts are
 * templates, and the filter's must stay literal.  0, or -1 when it is not
 * a 4xx/5xx reply line.
 */
int	milter_get_replycode(const struct milter_reply *r,
	    struct milter_replycode *out);

/* A message modification, as a filter asks for it at end-of-message. */
struct milter_mod {
	char		 cmd;		/* MILTER_R_ADDHEADER ... QUARANTINE */
	uint32_t	 idx;		/* INSHEADER, CHGHEADER */
	const char	*name;		/* header name; NULL for the others */
	const char	*value;		/* header value, address, or reason */
	char		 addr[600];	/* the address without its <> */
};
/*
 * Parse a modification reply (add/insert/change header, change sender,
 * add/delete recipient, quarantine).  The strings point into r's data or
 * into out->addr.  ESMTP arguments after an address are not kept.  0, or
 * -1 when r is not a well-formed modification.
 */
int	milter_get_mod(const struct milter_reply *r, struct milter_mod *out);

#endif
