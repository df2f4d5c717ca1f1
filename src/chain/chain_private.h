/*
 * chain/chain_private.h: what the files of chain/ share (the builtin
 * handler tables, argument helpers).  Not for other modules.
 */
#ifndef POSTERN_CHAIN_PRIVATE_H
#define POSTERN_CHAIN_PRIVATE_H

#include "chain/chain.h"

/* Builtin families, one file each; every table ends with a NULL name. */
extern const struct chain_handler_ops chain_basic_ops[];	/* builtin_basic.c */
extern const struct chain_handler_ops chain_limit_ops[];	/* builtin_limit.c */
extern const struct chain_handler_ops chain_dns_ops[];		/* builtin_dns.c */
extern const struct chain_handler_ops chain_spf_ops[];		/* builtin_spf.c */
extern const struct chain_handler_ops chain_grey_ops[];		/* builtin_grey.c */
extern const struct chain_handler_ops chain_content_ops[];	/* builtin_content.c */
extern const struct chain_handler_ops chain_rep_ops[];		/* builtin_rep.c */
extern const struct chain_handler_ops chain_lua_ops[];		/* handler_lua.c */
extern const struct chain_handler_ops chain_program_ops[];	/* handler_program.c */
extern const struct chain_handler_ops chain_milter_ops[];	/* handler_milter.c */

/* Parse "550" / "4.7.1": code in 400..599; esc "C.S.D" whose class is C. */
bool	chain_code_ok(int code);
bool	chain_esc_ok(const char *esc, int code);
/*
 * Parse a reply spec "CODE [ESC] [TEXT...]" from argv (argc words) into v
 * as a REJECT; -1 with *err_out (malloc'd).
 */
int	chain_parse_reply(const char *const *argv, size_t argc,
	    struct chain_verdict *v, char **err_out);
/*
 * End of the header field that starts at h[start] (after its last LF,
 * folded lines included), within a header block of len octets.
 */
size_t	chain_header_field_end(const char *h, size_t len, size_t start);
/* A state key (bounded, [A-Za-z0-9._-]) and value (printable) are fine. */
bool	chain_key_ok(const char *k);
bool	chain_value_ok(const char *v);
/* Domain of an address ("" for none); points into addr. */
const char *chain_addr_domain(const char *addr);
/* "ip" -> the /24 (IPv4) or /64 (IPv6) network as text. */
void	chain_ip_net(const char *ip, char *buf, size_t bufsz);
/* Client IP on the ban list (store key), for trap and friends. */
void	chain_ban_key(const char *ip, char *buf, size_t bufsz);

/* Reputation scores (session.c): which of the two. */
enum chain_rep_what { CHAIN_REP_IP = 1, CHAIN_REP_DOMAIN = 2,
	CHAIN_REP_BOTH = 3 };
/*
 * The store key of one score into buf: "rep:ip:IP", or "rep:domain:DOMAIN"
 * of the sender (lower case).  False when the session has none: no client
 * IP, or no sender domain yet (before MAIL, or the null sender).
 */
bool	chain_rep_key(const struct chain_session *cs, enum chain_rep_what w,
	    char *buf, size_t bufsz);
/* Add delta to the scores in which (CHAIN_REP_* bits); fire and forget. */
void	chain_session_reputation_add(struct chain_session *cs, int delta,
	    unsigned which);

/* Tests: SPF answers from "domain v=spf1 ..." records, no DNS (NULL: off). */
void	chain_spf_set_test_zone(const char *const *records);

/* A deferred call of fn(arg) on base (so nothing answers re-entrantly). */
void	chain_defer(struct event_base *base, void (*fn)(void *), void *arg);

#endif
