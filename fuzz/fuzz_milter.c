/*
 * fuzz/fuzz_milter.c: what a milter filter sends back.  The input is a
 * header block (two length octets, then the block) and then the filter's
 * byte stream.  Packets are taken the way the handler takes them (whole,
 * and again cut at a point the input chooses: a cut packet is "need
 * more", never a different one), each is read with every decoder, the
 * modifications go through chain_session_add_mod's checks, and the header
 * block is edited with them.  Aborts on: a reply code outside 4xx/5xx or
 * with a template left in its text; an edited block with CR, NUL, an empty
 * line (a header turned body) or a last line without LF.
 */
#include "chain/chain.h"
#include "chain/milter.h"
#include "config/config.h"
#include "util/util.h"

#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fz_conf[] =
    "hostname mx.test\n"
    "listen 127.0.0.1:2525\n"
    "action local maildir \"/tmp/x/%{rcpt.user}\"\n"
    "match any action local\n"
    "state memory\n";

int	LLVMFuzzerInitialize(int *argc, char ***argv);

/* One session for every input (its mods cleared after each). */
static struct config *fz_cfg;
static struct chain_set *fz_set;
static struct chain_loop *fz_loop;
static struct chain_session *fz_cs;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct chain_loop_opts o = { .resolver = "127.0.0.1:9",
	    .store = "memory:" };
	struct chain_session_info info = { .sid = "fz", .ip = "192.0.2.7",
	    .port = 40000, .hostname = "mx.test" };
	char *errs = NULL;
	const char *err = NULL;

	(void)argc;
	(void)argv;
	if ((fz_cfg = config_parse("fuzz.conf", fz_conf, &errs)) == NULL ||
	    (fz_set = chain_set_new(fz_cfg, &errs)) == NULL ||
	    (fz_loop = chain_loop_new(event_base_new(), fz_cfg, &o, &err)) ==
	    NULL)
		abort();
	fz_cs = chain_session_new(fz_set, fz_loop, &info);
	return 0;
}

static void
fz_check_replycode(const struct milter_replycode *rc)
{
	if (rc->code < 400 || rc->code > 599 || strstr(rc->text, "%{") !=
	    NULL || strpbrk(rc->text, "\r\n") != NULL)
		abort();
	if (rc->esc[0] != '\0' && (rc->esc[0] != '0' + rc->code / 100 ||
	    rc->esc[1] != '.'))
		abort();
}

/* Every decoder on one packet; its modification goes to the session. */
static void
fz_packet(const struct milter_reply *r)
{
	uint32_t w[3];
	const char *s[3];
	struct milter_replycode rc;
	struct milter_mod m;
	const char *err;

	(void)milter_get_optneg(r, &w[0], &w[1], &w[2]);
	(void)milter_get_u32(r, &w[0]);
	(void)milter_get_strs(r, 0, s, 3);
	(void)milter_get_strs(r, 4, s, 2);
	if (milter_get_replycode(r, &rc) == 0)
		fz_check_replycode(&rc);
	if (milter_get_mod(r, &m) == -1 || m.cmd == MILTER_R_QUARANTINE)
		return;
	if (m.name != NULL)
		(void)chain_session_add_mod(fz_cs, m.cmd == MILTER_R_ADDHEADER ?
		    CHAIN_MOD_HDR_ADD : m.cmd == MILTER_R_INSHEADER ?
		    CHAIN_MOD_HDR_INSERT : CHAIN_MOD_HDR_CHANGE, m.idx, m.name,
		    m.value, &err);
	else
		(void)chain_session_add_mod(fz_cs, m.cmd == MILTER_R_CHGFROM ?
		    CHAIN_MOD_SENDER : m.cmd == MILTER_R_DELRCPT ?
		    CHAIN_MOD_RCPT_DEL : CHAIN_MOD_RCPT_ADD, 0, NULL, m.value,
		    &err);
}

/* The packets of buf; a cut at cut is "need more" or the same packet. */
static void
fz_packets(const char *buf, size_t len, size_t cut)
{
	size_t off = 0, used, used2;
	struct milter_reply r, r2;
	const char *err;

	while (off < len) {
		int rc = milter_get(buf + off, len - off, &r, &used, &err);
		if (rc != 1)
			return;
		if (cut > off && cut < off + used) {
			int rc2 = milter_get(buf + off, cut - off, &r2, &used2,
			    &err);
			if (rc2 != 0)
				abort();
		}
		fz_packet(&r);
		off += used;
	}
}

/* A client's header block: no CR, no NUL, no empty line, LF at the end. */
static size_t
fz_head(const uint8_t *in, size_t n, char *out)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		if (in[i] == '\r' || in[i] == '\0' || (in[i] == '\n' &&
		    (o == 0 || out[o - 1] == '\n')))
			continue;
		out[o++] = (char)in[i];
	}
	if (o > 0 && out[o - 1] != '\n')
		out[o++] = '\n';
	return o;
}

static void
fz_check_head(const struct util_buf *b)
{
	if (b->len == 0)
		return;
	if (b->data[0] == '\n' || b->data[b->len - 1] != '\n' ||
	    memchr(b->data, '\r', b->len) != NULL ||
	    memchr(b->data, '\0', b->len) != NULL ||
	    memmem(b->data, b->len, "\n\n", 2) != NULL)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct util_buf out = { 0 };
	const struct chain_mod *mods;
	size_t raw, hl, nmods;
	char *head;

	if (size < 3)
		return 0;
	raw = ((size_t)data[0] << 8 | data[1]) % (size - 2);
	head = xmalloc(raw + 1);
	hl = fz_head(data + 3, raw, head);
	fz_packets((const char *)data + 3 + raw, size - 3 - raw, data[2]);
	chain_session_mods_commit(fz_cs);
	mods = chain_session_mods(fz_cs, &nmods);
	chain_headers_edit(head, hl, mods, nmods, &out);
	fz_check_head(&out);
	util_buf_clear(&out);
	free(head);
	chain_session_tx_reset(fz_cs);
	return 0;
}
