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

/* Not a script, program, milter or registered handler (chain.c). */
bool	chain_ops_is_builtin(const struct chain_handler_ops *ops);
/* Parse "550" / "4.7.1": code in 400..599; esc "C.S.D" whose class is C. */
bool	chain_code_ok(int code);
bool	chain_esc_ok(const char *esc, int code);
/* RFC 5321 4.2: reply text is printable US-ASCII (and spaces). */
bool	chain_text_ok(const char *s);
/*
 * Parse a reply spec "CODE [ESC] [TEXT...]" from argv (argc words) into v
 * as a REJECT; -1 with *err_out (malloc'd).  Without CODE, v->code is 0:
 * the stage's default when the reply is sent (554 at connect, else 550).
 */
int	chain_parse_reply(const char *const *argv, size_t argc,
	    struct chain_verdict *v, char **err_out);
/*
 * End of the header field that starts at h[start] (after its last LF,
 * folded lines included), within a header block of len octets.
 */
size_t	chain_header_field_end(const char *h, size_t len, size_t start);
/*
 * RFC 5322 2.2, 3.6.8: a header field name is 1..200 printable US-ASCII
 * characters but the colon (so no blank either) (mods.c).
 */
bool	chain_field_name_ok(const char *name);
/* A state key (bounded, [A-Za-z0-9._-]) and value (printable) are fine. */
bool	chain_key_ok(const char *k);
bool	chain_value_ok(const char *v);
/*
 * A header block longer than the part kept for handlers (256 KiB), whose
 * fields past it no handler saw: true, and v refuses the message with 552
 * 5.3.4, as each handler that judges the block does (session.c).
 */
bool	chain_header_block_refuse(const struct chain_session *cs,
	    struct chain_verdict *v);
/* The facts' names (chain_session_get's, but session.KEY and tx.KEY), in
 * the order of the docs; NULL ends the list (session.c). */
extern const char *const chain_fact_names[];
/* Domain of an address ("" for none); points into addr. */
const char *chain_addr_domain(const char *addr);
/*
 * Append an address from the client to the state store key in buf as one
 * part (store_key_add), its domain in lower case.  -1 when it does not fit.
 */
int	chain_key_add_addr(char *buf, size_t bufsz, const char *addr);
/* "ip" -> the /24 (IPv4) or /64 (IPv6) network as text. */
void	chain_ip_net(const char *ip, char *buf, size_t bufsz);
/*
 * A DURATION for how long the state store keeps a row (a ban, penalty
 * points, a whitelisting): more than 0, which the store reads as "for
 * ever".  -1 when s is not one.
 */
int	chain_parse_lifetime_ms(const char *s, uint64_t *out);
/* Client IP on the ban list (store key), for trap and friends. */
void	chain_ban_key(const char *ip, char *buf, size_t bufsz);

/* Reputation scores (session.c): which of the two. */
enum chain_rep_what { CHAIN_REP_IP = 1, CHAIN_REP_DOMAIN = 2,
	CHAIN_REP_BOTH = 3 };
/*
 * The store key of one score into buf: "rep:ip:IP", or "rep:domain:DOMAIN"
 * of the sender (lower case, a part as store_key_add writes it).  False
 * when the session has none: no client IP, or no sender domain yet (before
 * MAIL, or the null sender).
 */
bool	chain_rep_key(const struct chain_session *cs, enum chain_rep_what w,
	    char *buf, size_t bufsz);
/* Add delta to the scores in which (CHAIN_REP_* bits); fire and forget. */
void	chain_session_reputation_add(struct chain_session *cs, int delta,
	    unsigned which);

/* lua_sandbox.c: what every Lua script runs in (handlers, agents). */
struct lua_State;
struct lua_Debug;
#define CHAIN_LUA_ENV_KEY	"postern.env"	/* _ENV, in the registry */
#define CHAIN_LUA_SCRIPT_MAX	(1024u * 1024)
#define CHAIN_LUA_PATTERN_STEPS	10	/* pattern steps per instruction of
					   a call's budget (lua_pattern.h) */
#define CHAIN_LUA_C_STEPS	10	/* elements a library function walks in
					   C, per instruction of the budget */
#define CHAIN_LUA_CMP_BYTES	64	/* bytes of a string comparison that
					   cost one such step (table.sort) */
#define CHAIN_LUA_CHECK_EVERY	1000	/* instructions between the count
					   hook's checks, at most */
#define CHAIN_LUA_CHECK_BYTES	(128u * 1024 * 1024) /* and at most this
					   over the bytes the state holds:
					   one instruction may walk them all */
#define CHAIN_LUA_TIME_MIN_MS	1000	/* a call's run time, at least (else
					   one microsecond an instruction) */
/* A state's context: its allocator's ud (a user's struct may start so). */
struct chain_lua_ctx {
	size_t		 used, cap;	/* bytes allocated; the cap */
	int		 budget;	/* instructions per call */
	int		 done;		/* instructions counted this call */
	int		 every;		/* the count hook's interval now */
	size_t		 check_used;	/* past this, check at once */
	uint64_t	 deadline_ms;	/* monotonic: the call's end */
	uint64_t	 steps;		/* C steps charged to this call */
	uint64_t	 pm_steps;	/* pattern steps taken this call */
	bool		 over_budget;	/* the last call ran out (of either) */
	bool		 late;		/* of its time */
	struct lua_State *L;		/* the state of the call armed */
	const char	*path;		/* the script, for messages */
};
/* lua_newstate's allocator over a struct chain_lua_ctx. */
void	*chain_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
/* The count hook that ends a call out of budget (an error). */
void	chain_lua_budget_hook(struct lua_State *L, struct lua_Debug *ar);
/* Start a call's budget: the count hook armed, no C steps charged, its
 * run time from now. */
void	chain_lua_budget_arm(struct lua_State *L);
/* End it: the hook off. */
void	chain_lua_budget_disarm(struct lua_State *L);
/* End the call as its budget does ("run time of N ms exceeded") when it
 * is past its run time; for work done in C.  [-0, +0, v] */
void	chain_lua_check_time(struct lua_State *L);
/*
 * lua_pcall of the function under nargs arguments, no results; the budget
 * disarmed after.  On an error (the lua_pcall code returned) its value is
 * left on top and *err_out (malloc'd) says what and where, "FILE:LINE:
 * ..." also for a value that is no string ("error object is a table
 * value").  [-(nargs+1), +(0|1), -]
 */
int	chain_lua_pcall(struct lua_State *L, int nargs, char **err_out);
/* Push a new _ENV (the allow-list, postern.log) and keep it in the
 * registry under CHAIN_LUA_ENV_KEY.  The library functions that loop in C
 * are charged to the budget, setmetatable refuses __gc, and xpcall's
 * handler does not run for a call out of budget.  [-0, +1, m] */
void	chain_lua_env_push(struct lua_State *L, bool unsafe);
/* With _ENV on top: load src as text and run it in it, within the
 * context's budget.  [-0, +0, e] */
void	chain_lua_run_chunk(struct lua_State *L, const char *src, size_t len,
	    const char *chunkname);
/* Read a script (at most CHAIN_LUA_SCRIPT_MAX).  0, or -1 + *err_out. */
int	chain_lua_read(const char *path, char **src_out, size_t *len_out,
	    char **err_out);
/* A Lua identifier, for "function NAME". */
bool	chain_lua_name_ok(const char *s);

/* Tests: SPF answers from "domain v=spf1 ..." records, no DNS (NULL: off). */
void	chain_spf_set_test_zone(const char *const *records);

/* A deferred call of fn(arg) on base (so nothing answers re-entrantly). */
void	chain_defer(struct event_base *base, void (*fn)(void *), void *arg);

#endif
