/*
 * chain/milter_conn.h: one session's conversation with one milter, shared
 * by handler_milter.c (the socket, the replies, the runs) and
 * milter_steps.c (what is sent next).
 */
#ifndef POSTERN_CHAIN_MILTER_CONN_H
#define POSTERN_CHAIN_MILTER_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "chain/chain.h"
#include "util/util.h"

struct bufferevent;
struct event;

enum milter_state {
	MS_IDLE,		/* not connected yet */
	MS_CONNECTING,
	MS_NEGOTIATING,		/* OPTNEG sent */
	MS_READY,
	MS_ACCEPTED,		/* the filter accepted the session: quiet */
	MS_BROKEN,		/* failed: every later run fails at once */
};

/* One session's conversation with one filter (a session slot). */
struct milter_conn {
	struct chain_session	*cs;		/* borrowed: owner */
	char			*spec;		/* owned copy, for messages */
	struct bufferevent	*bev;		/* owned */
	struct event		*timer;		/* owned: reply deadline */
	enum milter_state	 state;
	uint32_t		 proto;		/* as negotiated */
	/* What the filter has seen. */
	bool			 sent_connect;
	char			*sent_helo;	/* owned */
	bool			 sent_helo_tls;	/* that HELO came over TLS */
	bool			 tx_open;	/* MAIL sent, message not over */
	bool			 tx_quiet;	/* accepted or discarded: no more */
	char			**sent_rcpts;	/* owned */
	size_t			 nsent_rcpts;
	bool			 sent_data, sent_hdrs, body_done, sent_eom;
	size_t			 hdr_off;	/* header bytes sent */
	int			 body_fd;
	uint64_t		 body_off;
	/* The run in progress. */
	struct chain_call	*call;		/* NULL between runs */
	uint64_t		 timeout_ms;	/* the running instance's */
	enum smtp_stage		 target;
	bool			 cur_rcpt_sent;
	char			 await;		/* command answered next; 0: none */
	bool			 write_wait;	/* output full: wait for the drain */
};

/* (Re)start the deadline of what we wait for. */
void	milter_arm(struct milter_conn *mc);
/* Queue b's packets (b is emptied); await: the command answered next. */
void	milter_send(struct milter_conn *mc, struct util_buf *b, char await);
/*
 * Send the next step the filter has not seen, up to mc->target.  1 when
 * something went out, 0 when nothing is left, -1 with *err on error.
 */
int	milter_next(struct milter_conn *mc, struct util_buf *b,
	    const char **err);

#endif
