/*
 * chain/session.c: one connection's chain session: its facts, the session
 * and transaction key/value stores, reply templates, the header block, and
 * the order of runs (the header chain before eom, disconnect at the end).
 */
#include "chain/chain.h"

#include <event2/event.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain/chain_private.h"
#include "chain/session.h"
#include "log/log.h"
#include "store/store.h"
#include "util/util.h"

#define CHAIN_REP_TTL_MS	(30ull * 24 * 3600 * 1000)

static void
chain_str_set(char **dst, const char *v)
{
	free(*dst);
	*dst = v != NULL ? xstrdup(v) : NULL;
}

static void	chain_main_finish_cb(struct chain_run *run);
static void	chain_hdr_finish_cb(struct chain_run *run);

struct chain_session *
chain_session_new(struct chain_set *set, struct chain_loop *loop,
    const struct chain_session_info *info)
{
	struct chain_session *cs = xcalloc(1, sizeof(*cs));

	cs->set = chain_set_ref(set);
	cs->loop = loop;
	cs->sid = xstrdup(info->sid != NULL ? info->sid : "-");
	cs->ip = xstrdup(info->ip != NULL ? info->ip : "");
	cs->port = info->port;
	cs->local_ip = xstrdup(info->local_ip != NULL ? info->local_ip : "");
	cs->local_port = info->local_port;
	cs->hostname = xstrdup(info->hostname != NULL ? info->hostname :
	    "localhost");
	cs->run.finish_cb = chain_main_finish_cb;
	cs->hdr_run.finish_cb = chain_hdr_finish_cb;
	return cs;
}

static void
chain_kv_clear(struct chain_kv *kv)
{
	for (size_t i = 0; i < kv->n; i++) {
		free(kv->keys[i]);
		free(kv->vals[i]);
	}
	kv->n = 0;
}

static void
chain_kv_free(struct chain_kv *kv)
{
	chain_kv_clear(kv);
	free(kv->keys);
	free(kv->vals);
	kv->keys = kv->vals = NULL;
}

/* dst (empty) takes copies of src's pairs. */
static void
chain_kv_copy(struct chain_kv *dst, const struct chain_kv *src)
{
	ASSERT(dst->n == 0);
	if (src->n > 0 && dst->keys == NULL) {
		dst->keys = xcalloc(CHAIN_KV_MAX, sizeof(*dst->keys));
		dst->vals = xcalloc(CHAIN_KV_MAX, sizeof(*dst->vals));
	}
	for (size_t i = 0; i < src->n; i++) {
		dst->keys[i] = xstrdup(src->keys[i]);
		dst->vals[i] = xstrdup(src->vals[i]);
	}
	dst->n = src->n;
}

static const char *
chain_kv_find(const struct chain_kv *kv, const char *key)
{
	for (size_t i = 0; i < kv->n; i++)
		if (strcmp(kv->keys[i], key) == 0)
			return kv->vals[i];
	return NULL;
}

static bool
chain_str_same(const char *a, const char *b)
{
	return a == NULL || b == NULL ? a == b : strcmp(a, b) == 0;
}

static void
chain_mark_clear(struct chain_mark *m)
{
	chain_kv_free(&m->kv);
	chain_str_set(&m->disp_action, NULL);
	m->taken = false;
}

static void
chain_mark_take(struct chain_session *cs, struct chain_mark *m)
{
	chain_mark_clear(m);
	m->taken = true;
	chain_kv_copy(&m->kv, &cs->kv[CHAIN_SCOPE_SESSION]);
	m->disp = cs->disp[0];
	chain_str_set(&m->disp_action, cs->disp_action[0]);
}

static void
chain_rcpts_clear(struct chain_session *cs)
{
	for (size_t i = 0; i < cs->nrcpts; i++)
		free(cs->rcpts[i]);
	free(cs->rcpts);
	cs->rcpts = NULL;
	cs->nrcpts = 0;
	util_buf_clear(&cs->rcpts_list);
}

static void
chain_session_destroy(struct chain_session *cs)
{
	chain_run_clear(&cs->run);
	chain_run_clear(&cs->hdr_run);
	chain_kv_free(&cs->kv[CHAIN_SCOPE_SESSION]);
	chain_kv_free(&cs->kv[CHAIN_SCOPE_TX]);
	chain_mark_clear(&cs->greeted);
	chain_mark_clear(&cs->at_starttls);
	chain_rcpts_clear(cs);
	free(cs->sid);
	free(cs->ip);
	free(cs->local_ip);
	free(cs->hostname);
	free(cs->rdns);
	free(cs->helo);
	free(cs->tls_proto);
	free(cs->tls_cipher);
	free(cs->tls_sni);
	free(cs->auth_user);
	free(cs->sender);
	free(cs->rcpt);
	free(cs->msg_file);
	free(cs->disp_action[0]);
	free(cs->disp_action[1]);
	util_buf_clear(&cs->hdr);
	chain_mods_clear(cs);
	for (size_t i = 0; i < cs->nslots; i++) {
		cs->slots[i].ops->free_fn(cs->slots[i].p);
		free(cs->slots[i].key);
	}
	chain_set_unref(&cs->set);
	free(cs);
}

void
chain_session_free(struct chain_session **csp)
{
	struct chain_session *cs = *csp;

	if (cs == NULL)
		return;
	*csp = NULL;
	/* No answer reaches the owner from now on. */
	cs->done_cb = NULL;
	cs->eom_waiting = false;
	chain_run_clear(&cs->run);
	chain_run_clear(&cs->hdr_run);
	cs->running = false;
	cs->detached = true;
	chain_session_set_message_mem(cs, NULL, 0, 0);	/* the owner's */
	if (cs->nrcpts_session == 0 && cs->sender != NULL)
		chain_session_reputation(cs, -1);	/* no valid recipient */
	if (chain_set_has(cs->set, SMTP_STAGE_DISCONNECT)) {
		struct smtp_event ev = { .stage = SMTP_STAGE_DISCONNECT,
		    .arg = "" };
		cs->running = true;
		chain_run_start(&cs->run, cs, &ev);
		if (cs->run.active)
			return;		/* chain_main_finish_cb frees it */
	}
	chain_session_destroy(cs);
}

void
chain_run_finish(struct chain_run *run)
{
	run->active = false;
	if (run->timer != NULL)
		evtimer_del(run->timer);
	if (run->pending && run->finish_cb != NULL)
		run->finish_cb(run);
}

/* ----- facts the connection reports ----- */

/* The session state back to the greeting, with what starttls changed. */
static void
chain_session_forget(struct chain_session *cs)
{
	struct chain_kv *kv = &cs->kv[CHAIN_SCOPE_SESSION];
	struct chain_kv now = *kv;
	const struct chain_mark *g = &cs->greeted, *st = &cs->at_starttls;

	if (!g->taken)
		return;		/* nothing ran after connect */
	*kv = (struct chain_kv){ 0 };
	chain_kv_copy(kv, &g->kv);
	for (size_t i = 0; st->taken && i < now.n; i++)
		if (!chain_str_same(chain_kv_find(&st->kv, now.keys[i]),
		    now.vals[i]))
			(void)chain_kv_set(cs, CHAIN_SCOPE_SESSION, now.keys[i],
			    now.vals[i]);
	for (size_t i = 0; st->taken && i < st->kv.n; i++)
		if (chain_kv_find(&now, st->kv.keys[i]) == NULL)
			(void)chain_kv_set(cs, CHAIN_SCOPE_SESSION,
			    st->kv.keys[i], NULL);
	if (!st->taken || (cs->disp[0] == st->disp &&
	    chain_str_same(cs->disp_action[0], st->disp_action)))
		chain_set_disposition(cs, false, g->disp, g->disp_action);
	chain_kv_free(&now);
	chain_mark_clear(&cs->at_starttls);
}

void
chain_session_set_tls(struct chain_session *cs, const char *proto,
    const char *cipher, const char *sni)
{
	chain_str_set(&cs->tls_proto, proto);
	chain_str_set(&cs->tls_cipher, cipher);
	chain_str_set(&cs->tls_sni, sni);
	/*
	 * RFC 3207 4.2: the server MUST discard what it learnt from the
	 * client before TLS: its HELO, its AUTH identity, and what handlers
	 * concluded from them.  What connect found knows only the
	 * connection, and what starttls did is about TLS itself: both stay.
	 */
	chain_str_set(&cs->helo, NULL);
	cs->esmtp = false;
	chain_str_set(&cs->auth_user, NULL);
	chain_session_forget(cs);
}

void
chain_session_set_auth(struct chain_session *cs, const char *user)
{
	chain_str_set(&cs->auth_user, user);
}

void
chain_session_set_early_talker(struct chain_session *cs)
{
	cs->early_talker = true;
}

void
chain_session_set_rdns(struct chain_session *cs, const char *name,
    bool confirmed)
{
	chain_str_set(&cs->rdns, name);
	cs->rdns_confirmed = confirmed;
}

void
chain_session_rcpt_accepted(struct chain_session *cs, const char *rcpt)
{
	cs->rcpts = xreallocarray(cs->rcpts, cs->nrcpts + 1,
	    sizeof(*cs->rcpts));
	cs->rcpts[cs->nrcpts++] = xstrdup(rcpt);
	cs->nrcpts_session++;
	if (cs->nrcpts > 1)
		util_buf_add(&cs->rcpts_list, ",", 1);
	util_buf_addstr(&cs->rcpts_list, rcpt);
}

void
chain_session_set_bare_lf(struct chain_session *cs)
{
	cs->bare_lf = true;
}

void
chain_session_set_message_file(struct chain_session *cs, const char *path,
    uint64_t offset)
{
	cs->msg_offset = offset;
	chain_str_set(&cs->msg_file, path);
}

void
chain_session_set_message_mem(struct chain_session *cs, const char *data,
    size_t len, uint64_t offset)
{
	static atomic_uint_fast64_t serials;

	cs->msg_mem = data;
	cs->msg_mem_len = data != NULL ? len : 0;
	if (data != NULL)	/* kept after: the header edits want it */
		cs->msg_offset = offset;
	/* Unique in the process: an iterator kept from another message ends. */
	cs->msg_serial = data != NULL ? atomic_fetch_add(&serials, 1) + 1 : 0;
}

const char *
chain_session_message_mem(const struct chain_session *cs, size_t *len_out,
    uint64_t *serial_out)
{
	*len_out = cs->msg_mem_len;
	if (serial_out != NULL)
		*serial_out = cs->msg_serial;
	return cs->msg_mem;
}

void
chain_set_disposition(struct chain_session *cs, bool tx,
    enum chain_disposition d, const char *action)
{
	cs->disp[tx] = d;
	chain_str_set(&cs->disp_action[tx], d == CHAIN_DISP_QUARANTINE ?
	    action : NULL);
}

enum chain_disposition
chain_session_disposition(const struct chain_session *cs,
    const char **action_out)
{
	int i = cs->disp[1] != CHAIN_DISP_DELIVER ? 1 : 0;

	if (action_out != NULL)
		*action_out = cs->disp_action[i];
	return cs->disp[i];
}

void
chain_session_tx_reset(struct chain_session *cs)
{
	chain_kv_clear(&cs->kv[CHAIN_SCOPE_TX]);
	chain_rcpts_clear(cs);
	chain_str_set(&cs->sender, NULL);
	chain_str_set(&cs->rcpt, NULL);
	chain_str_set(&cs->msg_file, NULL);
	chain_session_set_message_mem(cs, NULL, 0, 0);
	chain_set_disposition(cs, true, CHAIN_DISP_DELIVER, NULL);
	cs->size = 0;
	util_buf_reset(&cs->hdr);
	cs->hdr_complete = false;
	cs->hdr_ended = false;
	cs->hdr_cut = false;
	cs->in_tx_data = false;
	chain_mods_clear(cs);
	for (size_t i = 0; i < cs->nslots; i++)
		if (cs->slots[i].ops->tx_reset_fn != NULL)
			cs->slots[i].ops->tx_reset_fn(cs->slots[i].p);
	if (cs->hdr_run.active)
		chain_run_clear(&cs->hdr_run);
	cs->hdr_state = CHAIN_HDR_NONE;
	chain_trap_tx_reset(cs);
}

/* ----- the header block ----- */

static void
chain_hdr_start(struct chain_session *cs)
{
	struct smtp_event ev = { .stage = SMTP_STAGE_HEADER, .arg = "" };

	cs->hdr_state = CHAIN_HDR_RUNNING;
	chain_run_start(&cs->hdr_run, cs, &ev);
	if (!cs->hdr_run.active) {
		cs->hdr_res = cs->hdr_run.res;
		cs->hdr_state = CHAIN_HDR_DONE;
	}
}

void
chain_session_body(struct chain_session *cs, const char *buf, size_t len)
{
	if (len == 0)
		return;
	if (cs->hdr_complete) {
		cs->hdr_cut = !cs->hdr_ended;
		return;
	}
	size_t old = cs->hdr.len;
	size_t take = len;
	/* A byte past what is kept: a block of just CHAIN_HDR_MAX bytes is
	 * whole when the empty line comes right after it. */
	if (take > CHAIN_HDR_MAX + 1 - old)
		take = CHAIN_HDR_MAX + 1 - old;
	util_buf_add(&cs->hdr, buf, take);
	/* The block ends at the first empty line (RFC 5322 2.1). */
	const char *d = cs->hdr.data;
	size_t from = old > 0 ? old - 1 : 0;
	size_t end = 0;
	if (d[0] == '\n')
		end = 1;
	for (size_t i = from; end == 0 && i + 1 < cs->hdr.len; i++)
		if (d[i] == '\n' && d[i + 1] == '\n')
			end = i + 1;
	/* Up to CHAIN_HDR_MAX bytes without the end: wait for more or EOM. */
	if (end == 0 && cs->hdr.len <= CHAIN_HDR_MAX)
		return;
	if (end != 0) {
		cs->hdr.len = end;
		cs->hdr_ended = true;
	} else {
		cs->hdr.len = CHAIN_HDR_MAX;
		cs->hdr_cut = true;
	}
	cs->hdr_complete = true;
	if (chain_set_has(cs->set, SMTP_STAGE_HEADER))
		chain_hdr_start(cs);
}

const char *
chain_session_headers(struct chain_session *cs, size_t *len_out)
{
	int64_t hl = chain_session_header_len(cs);

	/* Unedited, or too long to edit (the commit refuses it then). */
	if (cs->nhdr_mods == 0 || hl < 0) {
		*len_out = cs->hdr.len;
		return cs->hdr.len > 0 ? cs->hdr.data : NULL;
	}
	/* Edited: made again only when an edit came since. */
	if (cs->hdr_edited_n != cs->nhdr_mods) {
		util_buf_reset(&cs->hdr_edited);
		chain_headers_edit(cs->hdr.data != NULL ? cs->hdr.data : "",
		    (size_t)hl, cs->mods, cs->nmods_kept, &cs->hdr_edited);
		cs->hdr_edited_n = cs->nhdr_mods;
	}
	*len_out = cs->hdr_edited.len;
	return cs->hdr_edited.len > 0 ? cs->hdr_edited.data : NULL;
}

int64_t
chain_session_header_len(const struct chain_session *cs)
{
	/* A message that starts with the empty line has no header block. */
	if (cs->hdr_ended)
		return cs->hdr.len == 1 && cs->hdr.data[0] == '\n' ? 0 :
		    (int64_t)cs->hdr.len;
	/* No empty line: all of it is header, if all of it was kept. */
	return cs->hdr_cut ? -1 : (int64_t)cs->hdr.len;
}

bool
chain_header_block_refuse(const struct chain_session *cs,
    struct chain_verdict *v)
{
	char text[CHAIN_TEXT_MAX];

	if (chain_session_header_len(cs) >= 0)
		return false;
	util_snprintf(text, sizeof(text), "Message header block too large "
	    "(over %u KiB)", CHAIN_HDR_MAX / 1024);
	chain_verdict_refuse(v, 552, "5.3.4", text, "header block over %u KiB",
	    CHAIN_HDR_MAX / 1024);
	return true;
}

void *
chain_session_slot(struct chain_session *cs, const char *key)
{
	for (size_t i = 0; i < cs->nslots; i++)
		if (strcmp(cs->slots[i].key, key) == 0)
			return cs->slots[i].p;
	return NULL;
}

int
chain_session_slot_set(struct chain_session *cs, const char *key, void *p,
    const struct chain_slot_ops *ops)
{
	if (cs->nslots == CHAIN_SLOTS_MAX)
		return -1;
	cs->slots[cs->nslots].key = xstrdup(key);
	cs->slots[cs->nslots].p = p;
	cs->slots[cs->nslots].ops = ops;
	cs->nslots++;
	return 0;
}

const char *
chain_session_message_file(const struct chain_session *cs)
{
	return cs->msg_file;
}

/* ----- runs ----- */

static void
chain_deliver(struct chain_session *cs, const struct chain_result *res)
{
	chain_done_cb *cb = cs->done_cb;

	cs->running = false;
	cs->done_cb = NULL;
	if (cb != NULL)
		cb(cs->done_arg, res);
}

void
chain_session_message_accepted(struct chain_session *cs)
{
	cs->nmsgs++;
	chain_session_reputation(cs, 1);
}

static void
chain_main_finish_cb(struct chain_run *run)
{
	struct chain_session *cs = run->cs;

	if (cs->detached) {		/* the disconnect chain finished */
		chain_session_destroy(cs);
		return;
	}
	chain_deliver(cs, &run->res);
}

/* EOM after the header chain: its refusal wins, else the eom chain runs. */
static enum chain_status
chain_eom_go(struct chain_session *cs, const struct smtp_event *ev,
    struct chain_result *res_out)
{
	if (cs->hdr_state == CHAIN_HDR_DONE &&
	    cs->hdr_res.verdict != SMTP_OK) {
		*res_out = cs->hdr_res;
		return CHAIN_DONE;
	}
	chain_run_start(&cs->run, cs, ev);
	if (cs->run.active)
		return CHAIN_PENDING;
	*res_out = cs->run.res;
	return CHAIN_DONE;
}

static void
chain_hdr_finish_cb(struct chain_run *run)
{
	struct chain_session *cs = run->cs;
	struct chain_result res;

	cs->hdr_res = run->res;
	cs->hdr_state = CHAIN_HDR_DONE;
	if (!cs->eom_waiting)
		return;
	cs->eom_waiting = false;
	struct smtp_event ev = { .stage = SMTP_STAGE_EOM, .arg = "",
	    .size = cs->size };
	if (chain_eom_go(cs, &ev, &res) == CHAIN_DONE)
		chain_deliver(cs, &res);
}

/* Facts carried by the event itself. */
static void
chain_take_facts(struct chain_session *cs, const struct smtp_event *ev)
{
	switch (ev->stage) {
	case SMTP_STAGE_HELO:
		chain_str_set(&cs->helo, ev->arg);
		cs->esmtp = ev->esmtp;
		break;
	case SMTP_STAGE_MAIL:
		/* A new transaction: its state starts empty. */
		chain_session_tx_reset(cs);
		chain_str_set(&cs->sender, ev->arg != NULL ? ev->arg : "");
		cs->size = ev->size;
		break;
	case SMTP_STAGE_RCPT:
		chain_str_set(&cs->rcpt, ev->arg);
		break;
	case SMTP_STAGE_DATA:
		cs->in_tx_data = true;
		util_buf_reset(&cs->hdr);
		cs->hdr_complete = false;
		cs->hdr_cut = false;
		cs->hdr_state = CHAIN_HDR_NONE;
		break;
	case SMTP_STAGE_EOM:
		cs->size = ev->size;
		break;
	default:
		break;
	}
}

enum chain_status
chain_run(struct chain_session *cs, const struct smtp_event *ev,
    chain_done_cb *done_cb, void *cb_arg, struct chain_result *res_out)
{
	ASSERT(!cs->running);
	ASSERT((unsigned)ev->stage < SMTP_STAGE_COUNT);
	memset(res_out, 0, sizeof(*res_out));
	res_out->verdict = SMTP_OK;
	if (ev->stage != SMTP_STAGE_CONNECT && !cs->greeted.taken)
		chain_mark_take(cs, &cs->greeted);
	if (ev->stage == SMTP_STAGE_STARTTLS)
		chain_mark_take(cs, &cs->at_starttls);
	if (chain_session_policy(cs, ev->stage, res_out))
		return CHAIN_DONE;
	chain_take_facts(cs, ev);
	cs->done_cb = done_cb;
	cs->done_arg = cb_arg;
	cs->running = true;
	if (ev->stage == SMTP_STAGE_EOM &&
	    chain_set_has(cs->set, SMTP_STAGE_HEADER)) {
		if (cs->hdr_state == CHAIN_HDR_NONE) {
			/* No empty line before the end: all of it is header. */
			cs->hdr_complete = true;
			chain_hdr_start(cs);
		}
		if (cs->hdr_state == CHAIN_HDR_RUNNING) {
			cs->eom_waiting = true;
			return CHAIN_PENDING;
		}
	}
	enum chain_status st;
	if (ev->stage == SMTP_STAGE_EOM)
		st = chain_eom_go(cs, ev, res_out);
	else {
		chain_run_start(&cs->run, cs, ev);
		st = cs->run.active ? CHAIN_PENDING : CHAIN_DONE;
		if (st == CHAIN_DONE)
			*res_out = cs->run.res;
	}
	if (st == CHAIN_DONE) {
		cs->running = false;
		cs->done_cb = NULL;
	}
	return st;
}

bool
chain_session_is_running(const struct chain_session *cs)
{
	return cs->running;
}

/* ----- key/value state ----- */

bool
chain_key_ok(const char *k)
{
	size_t n = strlen(k);

	if (n == 0 || n >= CHAIN_KEY_MAX)
		return false;
	return strspn(k, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789._-") == n;
}

bool
chain_value_ok(const char *v)
{
	size_t n = strlen(v);

	if (n >= CHAIN_VALUE_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] > 0x7e)
			return false;
	return true;
}

const char *
chain_kv_get(const struct chain_session *cs, enum chain_scope scope,
    const char *key)
{
	return chain_kv_find(&cs->kv[scope == CHAIN_SCOPE_TX], key);
}

int
chain_kv_set(struct chain_session *cs, enum chain_scope scope,
    const char *key, const char *value)
{
	struct chain_kv *kv = &cs->kv[scope == CHAIN_SCOPE_TX];

	if (!chain_key_ok(key) || (value != NULL && !chain_value_ok(value)))
		return -1;
	for (size_t i = 0; i < kv->n; i++) {
		if (strcmp(kv->keys[i], key) != 0)
			continue;
		if (value != NULL) {
			chain_str_set(&kv->vals[i], value);
			return 0;
		}
		free(kv->keys[i]);
		free(kv->vals[i]);
		memmove(&kv->keys[i], &kv->keys[i + 1],
		    (kv->n - i - 1) * sizeof(kv->keys[0]));
		memmove(&kv->vals[i], &kv->vals[i + 1],
		    (kv->n - i - 1) * sizeof(kv->vals[0]));
		kv->n--;
		return 0;
	}
	if (value == NULL)
		return 0;
	if (kv->n == CHAIN_KV_MAX)
		return -1;
	if (kv->keys == NULL) {
		kv->keys = xcalloc(CHAIN_KV_MAX, sizeof(*kv->keys));
		kv->vals = xcalloc(CHAIN_KV_MAX, sizeof(*kv->vals));
	}
	kv->keys[kv->n] = xstrdup(key);
	kv->vals[kv->n++] = xstrdup(value);
	return 0;
}

bool
chain_kv_at(const struct chain_session *cs, enum chain_scope scope,
    size_t i, const char **key_out, const char **value_out)
{
	const struct chain_kv *kv = &cs->kv[scope == CHAIN_SCOPE_TX];

	if (i >= kv->n)
		return false;
	*key_out = kv->keys[i];
	*value_out = kv->vals[i];
	return true;
}

/* ----- facts by name, templates ----- */

/* Every name chain_session_get answers but the state's: Lua's facts. */
const char *const chain_fact_names[] = {
	"client.ip", "client.port", "client.net", "client.rdns", "client.ptr",
	"local.ip", "local.port", "hostname", "sid", "helo", "esmtp", "sender",
	"sender.domain", "rcpt", "rcpt.domain", "rcpt.user", "rcpts", "nrcpts",
	"size", "tls.proto", "tls.cipher", "tls.sni", "auth.user",
	"early-talker", "crlf", NULL,
};

static const char *
chain_or_null(const char *s)
{
	return s;
}

const char *
chain_session_get(struct chain_session *cs, const char *name, char *buf,
    size_t bufsz)
{
	const char *rcpt = cs->rcpt != NULL ? cs->rcpt : "";

	if (strncmp(name, "session.", 8) == 0)
		return chain_kv_get(cs, CHAIN_SCOPE_SESSION, name + 8);
	if (strncmp(name, "tx.", 3) == 0)
		return chain_kv_get(cs, CHAIN_SCOPE_TX, name + 3);
	if (strcmp(name, "client.ip") == 0)
		return cs->ip;
	if (strcmp(name, "client.port") == 0) {
		util_snprintf(buf, bufsz, "%d", cs->port);
		return buf;
	}
	if (strcmp(name, "client.net") == 0) {
		chain_ip_net(cs->ip, buf, bufsz);
		return buf;
	}
	if (strcmp(name, "client.rdns") == 0)
		return cs->rdns_confirmed ? cs->rdns : NULL;
	if (strcmp(name, "client.ptr") == 0)
		return cs->rdns;
	if (strcmp(name, "local.ip") == 0)
		return cs->local_ip;
	if (strcmp(name, "local.port") == 0) {
		util_snprintf(buf, bufsz, "%d", cs->local_port);
		return buf;
	}
	if (strcmp(name, "hostname") == 0)
		return cs->hostname;
	if (strcmp(name, "sid") == 0)
		return cs->sid;
	if (strcmp(name, "helo") == 0)
		return chain_or_null(cs->helo);
	if (strcmp(name, "sender") == 0)
		return cs->sender;
	if (strcmp(name, "sender.domain") == 0)
		return cs->sender != NULL ? chain_addr_domain(cs->sender) :
		    NULL;
	if (strcmp(name, "rcpt") == 0)
		return cs->rcpt;
	if (strcmp(name, "rcpt.domain") == 0)
		return cs->rcpt != NULL ? chain_addr_domain(rcpt) : NULL;
	if (strcmp(name, "rcpt.user") == 0) {
		if (cs->rcpt == NULL)
			return NULL;
		const char *at = strrchr(rcpt, '@');
		util_snprintf(buf, bufsz, "%.*s", at != NULL ?
		    (int)(at - rcpt) : (int)strlen(rcpt), rcpt);
		return buf;
	}
	/* Whole, however many: never cut to fit buf. */
	if (strcmp(name, "rcpts") == 0)
		return cs->nrcpts > 0 ? util_buf_cstr(&cs->rcpts_list) : "";
	if (strcmp(name, "nrcpts") == 0) {
		util_snprintf(buf, bufsz, "%zu", cs->nrcpts);
		return buf;
	}
	if (strcmp(name, "size") == 0) {
		util_snprintf(buf, bufsz, "%llu",
		    (unsigned long long)cs->size);
		return buf;
	}
	if (strcmp(name, "tls.proto") == 0)
		return cs->tls_proto;
	if (strcmp(name, "tls.cipher") == 0)
		return cs->tls_cipher;
	if (strcmp(name, "tls.sni") == 0)
		return cs->tls_sni;
	if (strcmp(name, "auth.user") == 0)
		return cs->auth_user;
	if (strcmp(name, "early-talker") == 0)
		return cs->early_talker ? "yes" : "no";
	if (strcmp(name, "crlf") == 0)
		return cs->bare_lf ? "no" : "yes";
	if (strcmp(name, "esmtp") == 0)
		return cs->esmtp ? "yes" : "no";
	return NULL;
}

int
chain_expand(struct chain_session *cs, const char *tmpl, char *buf,
    size_t bufsz)
{
	struct util_buf b = { 0 };
	char scratch[1024], name[CHAIN_KEY_MAX + 16];
	int r = 0;

	for (const char *p = tmpl; *p != '\0'; p++) {
		const char *close;
		if (p[0] == '%' && p[1] == '{' &&
		    (close = strchr(p + 2, '}')) != NULL &&
		    (size_t)(close - p - 2) < sizeof(name)) {
			memcpy(name, p + 2, (size_t)(close - p - 2));
			name[close - p - 2] = '\0';
			const char *v = chain_session_get(cs, name, scratch,
			    sizeof(scratch));
			/* Peer text goes out printable only (no CR/LF). */
			for (; v != NULL && *v != '\0'; v++) {
				char c = (unsigned char)*v < 0x20 ||
				    (unsigned char)*v > 0x7e ? '?' : *v;
				util_buf_add(&b, &c, 1);
			}
			p = close;
			continue;
		}
		char c = (unsigned char)*p < 0x20 ? ' ' : *p;
		util_buf_add(&b, &c, 1);
	}
	util_buf_add(&b, "", 1);
	if (util_strlcpy(buf, b.data, bufsz) == -1)
		r = -1;
	util_buf_clear(&b);
	return r;
}

/* ----- loop resources ----- */

struct event_base *
chain_session_base(struct chain_session *cs)
{
	return cs->loop->base;
}

struct evdns_base *
chain_session_dns(struct chain_session *cs)
{
	return cs->loop->dns;
}

struct store *
chain_session_store(struct chain_session *cs)
{
	return cs->loop->store;
}

const char *
chain_session_sid(const struct chain_session *cs)
{
	return cs->sid;
}

bool
chain_rep_key(const struct chain_session *cs, enum chain_rep_what w,
    char *buf, size_t bufsz)
{
	const char *dom;

	if (w == CHAIN_REP_IP) {
		if (cs->ip[0] == '\0')
			return false;
		util_strjoin(buf, bufsz, "rep:ip:", cs->ip, NULL);
		return true;
	}
	dom = cs->sender != NULL ? chain_addr_domain(cs->sender) : "";
	if (dom[0] == '\0')
		return false;
	/* RFC 5321 2.4: domains are case-insensitive; one score per name. */
	util_strlcpy(buf, "rep:domain:", bufsz);
	return store_key_add(buf, bufsz, dom, strlen(dom), 0) == 0;
}

void
chain_session_reputation_add(struct chain_session *cs, int delta,
    unsigned which)
{
	static const enum chain_rep_what ws[] = { CHAIN_REP_IP,
	    CHAIN_REP_DOMAIN };
	char key[STORE_KEY_MAX];

	if (cs->loop->store == NULL || delta == 0)
		return;
	for (size_t i = 0; i < sizeof(ws) / sizeof(ws[0]); i++)
		if ((which & ws[i]) != 0 && chain_rep_key(cs, ws[i], key,
		    sizeof(key)))
			store_incr(cs->loop->store, key, delta,
			    CHAIN_REP_TTL_MS, NULL, NULL);
}

void
chain_session_reputation(struct chain_session *cs, int delta)
{
	chain_session_reputation_add(cs, delta, CHAIN_REP_BOTH);
}
