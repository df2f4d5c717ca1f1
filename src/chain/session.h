/*
 * chain/session.h: the chain set, session and run structures shared by
 * chain.c (building chains), run.c (running handlers), loop.c (a loop's
 * chain state), session.c (facts, state, stage sequencing) and the builtins
 * that need the session itself.
 */
#ifndef POSTERN_CHAIN_SESSION_H
#define POSTERN_CHAIN_SESSION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "chain/chain.h"
#include "util/util.h"

struct event;

/* One handler of a chain, as built from the config (chain.c). */
struct chain_handler {
	const struct chain_handler_ops *ops;	/* borrowed: static tables */
	void			*inst;		/* owned through ops->free_fn */
	enum chain_on_error	 on_error;
	int			 line;
	unsigned		 kind;		/* metrics label: chain_kind_of */
};

/* The chains of one configuration, a stage's handlers in order. */
struct chain_set {
	atomic_int		 refs;
	struct chain_handler	*h[SMTP_STAGE_COUNT];	/* owned arrays */
	size_t			 n[SMTP_STAGE_COUNT];
};

struct chain_loop {
	unsigned		 refs;		/* loop thread only */
	struct event_base	*base;		/* borrowed */
	char			*store_spec;	/* owned: what it was made from */
	char			*resolver;	/* owned, or NULL: resolv.conf */
	struct evdns_base	*dns;		/* owned */
	struct store		*store;		/* owned */
	struct table_loop	*tables;	/* owned: table answers */
	uint64_t		 call_timeout_ms;
};

/* One pass over one stage's handlers. */
struct chain_run {
	struct chain_session	*cs;		/* borrowed: owner */
	struct smtp_event	 ev;		/* ev.arg points to arg */
	char			*arg;		/* owned copy */
	size_t			 idx;		/* handler running or next */
	struct chain_call	*call;		/* pending handler, or NULL */
	struct chain_call	*spare;		/* owned: a finished call, reused */
	uint64_t		 call_ns;	/* when the handler at idx started */
	struct event		*timer;		/* owned: delay or call timeout */
	bool			 pending;	/* answered later: finish_cb */
	bool			 active;
	struct chain_result	 res;
	void			(*finish_cb)(struct chain_run *run);
};

#define CHAIN_KV_MAX	64		/* entries per store */

struct chain_kv {
	char	**keys;		/* owned: CHAIN_KV_MAX, made at the first set */
	char	**vals;		/* owned: as keys */
	size_t	 n;
};

enum chain_hdr_state { CHAIN_HDR_NONE, CHAIN_HDR_RUNNING, CHAIN_HDR_DONE };

#define CHAIN_SLOTS_MAX	8		/* handler kinds with session data */
#define CHAIN_HDR_MAX	(256 * 1024)	/* header block kept for handlers */

struct chain_slot {
	char				*key;	/* owned */
	void				*p;
	const struct chain_slot_ops	*ops;
};

/* A copy of the session-wide state handlers keep. */
struct chain_mark {
	bool			 taken;
	struct chain_kv		 kv;
	enum chain_disposition	 disp;
	char			*disp_action;	/* owned */
};

struct chain_session {
	struct chain_set	*set;		/* ref */
	struct chain_loop	*loop;		/* borrowed */
	char			*sid, *ip, *local_ip, *hostname; /* owned */
	int			 port, local_port;
	char			*rdns;		/* owned or NULL */
	bool			 rdns_confirmed;
	char			*helo;		/* owned or NULL */
	bool			 esmtp;
	char			*tls_proto, *tls_cipher, *tls_sni;
	char			*auth_user;
	char			*sender;	/* owned; NULL before MAIL */
	char			*rcpt;		/* owned: the one being checked */
	char			**rcpts;	/* owned: accepted ones */
	size_t			 nrcpts;
	struct util_buf		 rcpts_list;	/* the "rcpts" fact: rcpts
						   joined by commas */
	unsigned		 nrcpts_session;
	unsigned		 nmsgs;
	uint64_t		 size;
	bool			 early_talker, bare_lf;
	char			*msg_file;	/* owned or NULL */
	uint64_t		 msg_offset;	/* the client's content there */
	const char		*msg_mem;	/* borrowed: the message or NULL */
	size_t			 msg_mem_len;
	uint64_t		 msg_serial;	/* names msg_mem */
	struct chain_kv		 kv[2];		/* session, tx */
	enum chain_disposition	 disp[2];	/* session-wide, tx */
	char			*disp_action[2]; /* owned: quarantine action */
	/*
	 * RFC 3207 4.2: at TLS's start the session state goes back to what
	 * connect left, plus what the starttls stage changed in what it found.
	 */
	struct chain_mark	 greeted, at_starttls;
	/* the header block */
	struct util_buf		 hdr;
	bool			 hdr_complete;
	bool			 hdr_ended;	/* an empty line closed it */
	bool			 hdr_cut;	/* content came past what was
						   kept, with no empty line */
	struct chain_mod	*mods;		/* owned: the transaction's */
	size_t			 nmods;
	size_t			 nmods_kept;	/* mods[0..nmods_kept)
						   committed, the rest
						   pending */
	size_t			 nhdr_mods;	/* of the committed, the header
						   block's */
	/* hdr as handlers see it (chain_session_headers): the committed
	 * header mods applied, the first hdr_edited_n of them when made;
	 * committed mods only grow. */
	struct util_buf		 hdr_edited;
	size_t			 hdr_edited_n;
	struct chain_slot	 slots[CHAIN_SLOTS_MAX];
	size_t			 nslots;
	bool			 in_tx_data;	/* between DATA and EOM */
	enum chain_hdr_state	 hdr_state;
	struct chain_run	 hdr_run;
	struct chain_result	 hdr_res;
	/* the caller's run */
	struct chain_run	 run;
	bool			 running;
	bool			 eom_waiting;	/* EOM waits for the header run */
	chain_done_cb		*done_cb;
	void			*done_arg;
	bool			 detached;	/* freed by the owner */
	bool			 trap;		/* strict dialogue on */
	int			 trap_step;	/* 0 greeted .. 5 after a message */
	uint64_t		 trap_ban_ms;	/* 0: no ban on a violation */
	unsigned		 ban_on;	/* CHAIN_FAILED_BIT()s that ban */
	uint64_t		 ban_on_ms;
};

/* run.c */
void	chain_run_start(struct chain_run *run, struct chain_session *cs,
	    const struct smtp_event *ev);
void	chain_run_clear(struct chain_run *run);
void	chain_call_cancel(struct chain_call *call);
/* mods.c */
void	chain_mods_clear(struct chain_session *cs);
/* session.c */
void	chain_run_finish(struct chain_run *run);
void	chain_set_disposition(struct chain_session *cs, bool tx,
	    enum chain_disposition d, const char *action);
/* builtin_basic.c: trap and nomail's session-wide refusals */
bool	chain_session_policy(struct chain_session *cs, enum smtp_stage st,
	    struct chain_result *res);
void	chain_session_set_trap(struct chain_session *cs, uint64_t ban_ms);
void	chain_trap_tx_reset(struct chain_session *cs);

#endif
