/*
 * chain/builtin_basic.c: the verdict handlers (reject, accept, tarpit,
 * disconnect, discard, quarantine, tag), nomail (RFC 7504), trap (strict
 * dialogue) and the ban list (ban, banned); and the session-wide refusals
 * that trap and "nomail every-command" set up, which the session applies
 * before any chain runs.
 */
#include "chain/chain_private.h"

#include <stdlib.h>
#include <string.h>

#include "chain/session.h"
#include "config/config.h"
#include "log/log.h"
#include "store/store.h"
#include "util/util.h"

#define STAGES_CMD	(CHAIN_STAGES_ALL & ~CHAIN_STAGE_BIT(SMTP_STAGE_QUIT) & \
	~CHAIN_STAGE_BIT(SMTP_STAGE_DISCONNECT))
#define STAGES_TX	(CHAIN_STAGE_BIT(SMTP_STAGE_MAIL) | \
	CHAIN_STAGE_BIT(SMTP_STAGE_RCPT) | CHAIN_STAGE_BIT(SMTP_STAGE_DATA) | \
	CHAIN_STAGE_BIT(SMTP_STAGE_HEADER) | CHAIN_STAGE_BIT(SMTP_STAGE_EOM))
#define BAN_DEFAULT_MS	(3600u * 1000)

/* A verdict fixed at config time. */
struct basic_fixed {
	struct chain_verdict	v;
};

static void *
basic_fixed_new(const struct chain_verdict *v)
{
	struct basic_fixed *f = xmalloc(sizeof(*f));

	f->v = *v;
	return f;
}

static enum chain_status
basic_fixed_run(void *inst, struct chain_call *call, struct chain_verdict *v)
{
	(void)call;
	*v = ((struct basic_fixed *)inst)->v;
	return CHAIN_DONE;
}

static void *
basic_reject_new(const struct chain_handler_args *a, char **err_out)
{
	struct chain_verdict v;

	if (chain_parse_reply(a->argv + 1, a->argc - 1, &v, err_out) == -1)
		return NULL;
	return basic_fixed_new(&v);
}

static void *
basic_accept_new(const struct chain_handler_args *a, char **err_out)
{
	struct chain_verdict v;

	if (a->argc != 1) {
		*err_out = xstrdup("takes no argument");
		return NULL;
	}
	chain_verdict_continue(&v);
	v.kind = strcmp(a->argv[0], "discard") == 0 ? CHAIN_DISCARD :
	    CHAIN_ACCEPT;
	return basic_fixed_new(&v);
}

static void *
basic_tarpit_new(const struct chain_handler_args *a, char **err_out)
{
	struct chain_verdict v;
	uint64_t ms;

	if (a->argc != 2 || util_parse_duration_ms(a->argv[1], &ms) == -1 ||
	    ms > 15 * 60 * 1000) {
		*err_out = xstrdup("usage: tarpit DURATION (at most 15m)");
		return NULL;
	}
	chain_verdict_continue(&v);
	v.kind = CHAIN_DELAY;
	v.delay_ms = ms;
	util_strlcpy(v.why, "tarpit", sizeof(v.why));
	return basic_fixed_new(&v);
}

static void *
basic_disconnect_new(const struct chain_handler_args *a, char **err_out)
{
	struct chain_verdict v;

	/* Without a code, the words (ESC, text) go with 421. */
	bool coded = a->argc > 1 &&
	    strspn(a->argv[1], "0123456789") == strlen(a->argv[1]);
	const char **w = xcalloc(a->argc + 1, sizeof(*w));
	size_t n = 0;
	if (!coded)
		w[n++] = "421";
	for (size_t i = 1; i < a->argc; i++)
		w[n++] = a->argv[i];
	int rc = chain_parse_reply(w, n, &v, err_out);
	free(w);
	if (rc == -1)
		return NULL;
	if (v.code != 421 && v.code != 521) {
		*err_out = xstrdup("disconnect code must be 421 or 521");
		return NULL;
	}
	v.kind = CHAIN_DISCONNECT;
	return basic_fixed_new(&v);
}

static void *
basic_quarantine_new(const struct chain_handler_args *a, char **err_out)
{
	struct chain_verdict v;

	if (a->argc != 2) {
		*err_out = xstrdup("usage: quarantine ACTION");
		return NULL;
	}
	const struct config_action *act = config_action_find(a->cfg,
	    a->argv[1]);
	if (act == NULL || act->kind != CONFIG_ACTION_MAILDIR) {
		*err_out = xasprintf(act == NULL ? "no action named \"%s\"" :
		    "action \"%s\" is not a maildir (quarantine delivers "
		    "here, now)", a->argv[1]);
		return NULL;
	}
	chain_verdict_continue(&v);
	v.kind = CHAIN_QUARANTINE;
	if (util_strlcpy(v.name, a->argv[1], sizeof(v.name)) == -1) {
		*err_out = xstrdup("action name too long");
		return NULL;
	}
	return basic_fixed_new(&v);
}

/* tag KEY=VALUE [session|tx] */
static void *
basic_tag_new(const struct chain_handler_args *a, char **err_out)
{
	struct chain_verdict v;
	const char *eq = a->argc >= 2 ? strchr(a->argv[1], '=') : NULL;

	chain_verdict_continue(&v);
	v.kind = CHAIN_TAG;
	v.scope = a->stage >= SMTP_STAGE_MAIL && a->stage <= SMTP_STAGE_EOM ?
	    CHAIN_SCOPE_TX : CHAIN_SCOPE_SESSION;
	if (a->argc == 3 && strcmp(a->argv[2], "session") == 0)
		v.scope = CHAIN_SCOPE_SESSION;
	else if (a->argc == 3 && strcmp(a->argv[2], "tx") == 0)
		v.scope = CHAIN_SCOPE_TX;
	else if (a->argc != 2)
		eq = NULL;
	if (eq == NULL || eq == a->argv[1] || (size_t)(eq - a->argv[1]) >=
	    sizeof(v.name) || util_strlcpy(v.value, eq + 1,
	    sizeof(v.value)) == -1) {
		*err_out = xstrdup("usage: tag KEY=VALUE [session|tx]");
		return NULL;
	}
	memcpy(v.name, a->argv[1], (size_t)(eq - a->argv[1]));
	v.name[eq - a->argv[1]] = '\0';
	if (!chain_key_ok(v.name) || !chain_value_ok(v.value)) {
		*err_out = xasprintf("bad key or value in \"%s\"",
		    a->argv[1]);
		return NULL;
	}
	return basic_fixed_new(&v);
}

/*
 * nomail: RFC 7504 3.  At connect, "521 5.3.2" and close; with
 * "every-command" the greeting goes out and each later command (QUIT
 * aside) gets 521, as the RFC's second form allows.  "after-data", at any
 * stage, sets session.nomail=after-data: recipients are taken but never
 * routed, and the message, once its content is in, gets the 521 and the
 * close (conn/ applies it).
 */
static void *
basic_nomail_new(const struct chain_handler_args *a, char **err_out)
{
	struct chain_verdict v;
	const char *mode = a->argc == 2 ? a->argv[1] : "";
	bool every = strcmp(mode, "every-command") == 0;
	bool after = strcmp(mode, "after-data") == 0;

	if (a->argc > 2 || (a->argc == 2 && !every && !after)) {
		*err_out = xstrdup("usage: nomail [every-command|after-data]");
		return NULL;
	}
	chain_verdict_reject(&v, 521, "5.3.2",
	    "%{hostname} does not accept mail");
	v.kind = after || (every && a->stage == SMTP_STAGE_CONNECT) ?
	    CHAIN_TAG : a->stage == SMTP_STAGE_CONNECT ? CHAIN_DISCONNECT :
	    CHAIN_REJECT;
	if (v.kind == CHAIN_TAG) {
		v.scope = CHAIN_SCOPE_SESSION;
		util_strlcpy(v.name, "nomail", sizeof(v.name));
		util_strlcpy(v.value, mode, sizeof(v.value));
	}
	return basic_fixed_new(&v);
}

/* ----- the ban list ----- */

struct basic_ban {
	uint64_t		ms;
	unsigned		on;	/* ban: CHAIN_FAILED_BIT()s to wait for */
	struct chain_verdict	v;	/* banned: the refusal */
};

void
chain_session_ban(struct chain_session *cs, uint64_t ms, const char *why)
{
	char key[STORE_KEY_MAX];

	if (cs->loop->store == NULL || cs->ip[0] == '\0')
		return;
	chain_ban_key(cs->ip, key, sizeof(key));
	store_set(cs->loop->store, key, why != NULL && why[0] != '\0' ? why :
	    "banned", ms != 0 ? ms : BAN_DEFAULT_MS, NULL, NULL);
}

void
chain_session_failed(struct chain_session *cs, enum chain_failed what)
{
	if (cs->ban_on & CHAIN_FAILED_BIT(what))
		chain_session_ban(cs, cs->ban_on_ms, what == CHAIN_FAILED_AUTH ?
		    "auth-failure" : "relay-attempt");
}

/*
 * ban [DURATION] [on auth-failure|relay-attempt...]: put the client on the
 * ban list now, or (with "on") from the next such failure in the session;
 * then continue.
 */
static void *
basic_ban_new(const struct chain_handler_args *a, char **err_out)
{
	struct basic_ban *b = xcalloc(1, sizeof(*b));
	size_t i = 1;

	b->ms = BAN_DEFAULT_MS;
	if (i < a->argc && strcmp(a->argv[i], "on") != 0 &&
	    chain_parse_lifetime_ms(a->argv[i++], &b->ms) == -1)
		goto usage;
	if (i < a->argc && strcmp(a->argv[i++], "on") != 0)
		goto usage;
	if (i == a->argc && i > 1 && strcmp(a->argv[i - 1], "on") == 0)
		goto usage;
	for (; i < a->argc; i++) {
		if (strcmp(a->argv[i], "auth-failure") == 0)
			b->on |= CHAIN_FAILED_BIT(CHAIN_FAILED_AUTH);
		else if (strcmp(a->argv[i], "relay-attempt") == 0)
			b->on |= CHAIN_FAILED_BIT(CHAIN_FAILED_RELAY);
		else
			goto usage;
	}
	return b;
usage:
	free(b);
	*err_out = xstrdup("usage: ban [DURATION] [on auth-failure|"
	    "relay-attempt...]");
	return NULL;
}

static enum chain_status
basic_ban_run(void *inst, struct chain_call *call, struct chain_verdict *v)
{
	struct basic_ban *b = inst;
	struct chain_session *cs = chain_call_session(call);

	if (b->on != 0) {
		cs->ban_on |= b->on;
		cs->ban_on_ms = b->ms;
	} else
		chain_session_ban(cs, b->ms,
		    chain_stage_name(chain_call_stage(call)));
	chain_verdict_continue(v);
	return CHAIN_DONE;
}

/* banned [CODE ESC TEXT]: refuse a client on the ban list. */
static void *
basic_banned_new(const struct chain_handler_args *a, char **err_out)
{
	struct basic_ban *b = xcalloc(1, sizeof(*b));

	if (a->argc == 1)
		chain_verdict_reject(&b->v, 554, "5.7.1",
		    "%{client.ip} is banned for a while");
	else if (chain_parse_reply(a->argv + 1, a->argc - 1, &b->v,
	    err_out) == -1) {
		free(b);
		return NULL;
	}
	if (a->stage == SMTP_STAGE_CONNECT) {
		/* A disconnect's default would be 421: a ban is for good. */
		if (b->v.code == 0)
			b->v.code = 554;
		b->v.kind = CHAIN_DISCONNECT;
	}
	return b;
}

static void
basic_banned_cb(void *arg, int rc, const char *value)
{
	struct chain_call *call = arg;
	struct basic_ban *b = *chain_call_data(call);
	struct chain_verdict v;

	(void)value;
	if (rc == 1)
		v = b->v;
	else
		chain_verdict_continue(&v);
	chain_call_done(call, &v);
}

static enum chain_status
basic_banned_run(void *inst, struct chain_call *call, struct chain_verdict *v)
{
	struct chain_session *cs = chain_call_session(call);
	char key[STORE_KEY_MAX];

	(void)v;
	*chain_call_data(call) = inst;
	chain_ban_key(cs->ip, key, sizeof(key));
	store_get(cs->loop->store, key, basic_banned_cb, call);
	return CHAIN_PENDING;
}

/* ----- trap: the strict dialogue ----- */

/* trap [ban DURATION]: from here on, only HELO -> MAIL -> RCPT -> DATA. */
static void *
basic_trap_new(const struct chain_handler_args *a, char **err_out)
{
	struct basic_ban *b = xcalloc(1, sizeof(*b));

	b->ms = 0;
	if (a->argc == 3 && strcmp(a->argv[1], "ban") == 0 &&
	    chain_parse_lifetime_ms(a->argv[2], &b->ms) == 0)
		return b;
	if (a->argc == 1)
		return b;
	free(b);
	*err_out = xstrdup("usage: trap [ban DURATION]");
	return NULL;
}

static enum chain_status
basic_trap_run(void *inst, struct chain_call *call, struct chain_verdict *v)
{
	struct basic_ban *b = inst;

	chain_session_set_trap(chain_call_session(call), b->ms);
	chain_verdict_continue(v);
	return CHAIN_DONE;
}

const struct chain_handler_ops chain_basic_ops[] = {
	{ "reject", STAGES_CMD, basic_reject_new, free, basic_fixed_run,
	    NULL, NULL },
	{ "accept", CHAIN_STAGES_ALL, basic_accept_new, free, basic_fixed_run,
	    NULL, NULL },
	{ "discard", STAGES_TX, basic_accept_new, free, basic_fixed_run,
	    NULL, NULL },
	{ "quarantine", STAGES_TX, basic_quarantine_new, free,
	    basic_fixed_run, NULL, NULL },
	{ "tarpit", STAGES_CMD | CHAIN_STAGE_BIT(SMTP_STAGE_QUIT),
	    basic_tarpit_new, free, basic_fixed_run, NULL, NULL },
	{ "disconnect", STAGES_CMD, basic_disconnect_new, free,
	    basic_fixed_run, NULL, NULL },
	{ "tag", CHAIN_STAGES_ALL, basic_tag_new, free, basic_fixed_run,
	    NULL, NULL },
	{ "nomail", STAGES_CMD, basic_nomail_new, free, basic_fixed_run,
	    NULL, NULL },
	{ "ban", CHAIN_STAGES_ALL, basic_ban_new, free, basic_ban_run, NULL,
	    NULL },
	{ "banned", STAGES_CMD, basic_banned_new, free, basic_banned_run,
	    NULL, NULL },
	{ "trap", CHAIN_STAGE_BIT(SMTP_STAGE_CONNECT), basic_trap_new, free,
	    basic_trap_run, NULL, NULL },
	{ NULL, 0, NULL, NULL, NULL, NULL, NULL },
};

/* ----- session-wide policies: trap and nomail every-command ----- */

void
chain_session_set_trap(struct chain_session *cs, uint64_t ban_ms)
{
	cs->trap = true;
	cs->trap_ban_ms = ban_ms;
}

static void
chain_policy_reply(struct chain_result *res, enum smtp_verdict v, int code,
    const char *text)
{
	memset(res, 0, sizeof(*res));
	res->verdict = v;
	res->reply.code = code;
	util_strlcpy(res->reply.text, text, sizeof(res->reply.text));
}

/*
 * The strict dialogue: HELO/EHLO, then MAIL, RCPT..., DATA, and MAIL again
 * after a message.  Anything else is a trapped client: 550 and close.
 * From which steps each command may come, and to which it leads; the end
 * of a message is no command: chain_trap_tx_reset() takes that step.
 */
enum { CHAIN_TRAP_IN_DATA = 4, CHAIN_TRAP_AFTER_MSG = 5 };
static const struct { enum smtp_stage st; int from_mask; int to; }
    chain_trap_steps[] = {
	{ SMTP_STAGE_HELO, 1 << 0, 1 },
	{ SMTP_STAGE_MAIL, 1 << 1 | 1 << CHAIN_TRAP_AFTER_MSG, 2 },
	{ SMTP_STAGE_RCPT, 1 << 2 | 1 << 3, 3 },
	{ SMTP_STAGE_DATA, 1 << 3, CHAIN_TRAP_IN_DATA },
};

/*
 * The session dropped its transaction.  One that reached DATA is a
 * message ended, whether taken, refused or failed, and whatever chains
 * ran at its end: MAIL may come next.
 */
void
chain_trap_tx_reset(struct chain_session *cs)
{
	if (cs->trap_step == CHAIN_TRAP_IN_DATA)
		cs->trap_step = CHAIN_TRAP_AFTER_MSG;
}

/* Would stage st keep to the strict dialogue now?  (No step taken.) */
static bool
chain_trap_allows(const struct chain_session *cs, enum smtp_stage st)
{
	if (!cs->trap)
		return true;
	for (size_t i = 0; i < sizeof(chain_trap_steps) /
	    sizeof(chain_trap_steps[0]); i++)
		if (chain_trap_steps[i].st == st &&
		    (chain_trap_steps[i].from_mask & (1 << cs->trap_step)) != 0)
			return true;
	return false;
}

static bool
chain_trap_check(struct chain_session *cs, enum smtp_stage st,
    struct chain_result *res)
{
	if (!cs->trap || st == SMTP_STAGE_QUIT || st == SMTP_STAGE_CONNECT ||
	    st == SMTP_STAGE_DISCONNECT || st == SMTP_STAGE_HEADER ||
	    st == SMTP_STAGE_EOM)
		return false;
	for (size_t i = 0; i < sizeof(chain_trap_steps) /
	    sizeof(chain_trap_steps[0]); i++)
		if (chain_trap_steps[i].st == st &&
		    (chain_trap_steps[i].from_mask & (1 << cs->trap_step)) != 0) {
			cs->trap_step = chain_trap_steps[i].to;
			return false;
		}
	log_event(LOG_LVL_INFO, "trap", cs->sid, NULL, "stage=%s step=%d",
	    chain_stage_name(st) != NULL ? chain_stage_name(st) : "command",
	    cs->trap_step);
	if (cs->trap_ban_ms != 0)
		chain_session_ban(cs, cs->trap_ban_ms, "trap");
	chain_session_reputation(cs, -5);
	chain_policy_reply(res, SMTP_CLOSE, 550,
	    "5.5.1 Command out of sequence, closing connection");
	return true;
}

static bool
chain_nomail_check(struct chain_session *cs, enum smtp_stage st,
    struct chain_result *res)
{
	const char *v = chain_kv_get(cs, CHAIN_SCOPE_SESSION, "nomail");
	char text[CHAIN_TEXT_MAX];

	if (v == NULL || strcmp(v, "every-command") != 0 ||
	    st == SMTP_STAGE_QUIT || st == SMTP_STAGE_CONNECT ||
	    st == SMTP_STAGE_DISCONNECT)
		return false;
	/* RFC 7504 3: 521 to every command but QUIT. */
	util_snprintf(text, sizeof(text), "5.3.2 %s does not accept mail",
	    cs->hostname);
	chain_policy_reply(res, SMTP_REJECT, 521, text);
	return true;
}

bool
chain_session_check_command(struct chain_session *cs, const char *verb,
    struct chain_result *res_out)
{
	static const struct { const char *verb; enum smtp_stage st; } dlg[] = {
		{ "HELO", SMTP_STAGE_HELO }, { "EHLO", SMTP_STAGE_HELO },
		{ "MAIL", SMTP_STAGE_MAIL }, { "RCPT", SMTP_STAGE_RCPT },
		{ "DATA", SMTP_STAGE_DATA }, { "STARTTLS", SMTP_STAGE_STARTTLS },
	};

	/* RFC 5321 4.1.1.10: QUIT always works. */
	if (strcmp(verb, "QUIT") == 0)
		return false;
	/*
	 * A dialogue command meets the every-command refusal before the
	 * session's own sequence checks; trap judges it at its stage.
	 */
	for (size_t i = 0; i < sizeof(dlg) / sizeof(dlg[0]); i++)
		if (strcmp(verb, dlg[i].verb) == 0)
			return chain_nomail_check(cs, dlg[i].st, res_out) ||
			    (!chain_trap_allows(cs, dlg[i].st) &&
			    chain_trap_check(cs, dlg[i].st, res_out));
	/* SMTP_STAGE_AUTH stands for "a command outside the dialogue". */
	return chain_nomail_check(cs, SMTP_STAGE_AUTH, res_out) ||
	    chain_trap_check(cs, SMTP_STAGE_AUTH, res_out);
}

/* Session-wide refusals that come before any chain. */
bool
chain_session_policy(struct chain_session *cs, enum smtp_stage st,
    struct chain_result *res)
{
	return chain_nomail_check(cs, st, res) || chain_trap_check(cs, st, res);
}
