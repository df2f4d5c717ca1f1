/*
 * chain/builtin_content.c: checks on what the client says about the
 * message: "verify <TABLE> [soft-invalid]" (the recipient exists),
 * "header ..." (required fields, duplicates, the size of the block) and
 * "size MAX [sender|rcpt ADDR|@DOMAIN]".
 */
#include "chain/chain_private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chain/session.h"
#include "config/config.h"
#include "table/table.h"
#include "util/util.h"

/* ----- verify ----- */

struct verify {
	struct table	*t;		/* owned */
	bool		 soft;		/* accept, never deliver */
};

static void
verify_free(void *inst)
{
	struct verify *v = inst;

	table_free(&v->t);
	free(v);
}

static void *
verify_new(const struct chain_handler_args *a, char **err_out)
{
	const struct config_table *ct;
	const char *err = NULL;
	size_t n;

	if (a->argc < 2 || a->argc > 3 || (n = strlen(a->argv[1])) < 3 ||
	    a->argv[1][0] != '<' || a->argv[1][n - 1] != '>' ||
	    (a->argc == 3 && strcmp(a->argv[2], "soft-invalid") != 0)) {
		*err_out = xstrdup("usage: verify <TABLE> [soft-invalid]");
		return NULL;
	}
	char *name = xstrndup(a->argv[1] + 1, n - 2);
	ct = config_table_find(a->cfg, name);
	if (ct == NULL) {
		*err_out = xasprintf("no table named \"%s\"", name);
		free(name);
		return NULL;
	}
	free(name);
	struct verify *v = xcalloc(1, sizeof(*v));
	v->soft = a->argc == 3;
	if ((v->t = table_open(ct, &err)) == NULL) {
		*err_out = xstrdup(err != NULL ? err : "cannot open the table");
		free(v);
		return NULL;
	}
	return v;
}

/* The verdict for a recipient the table has (rc 1) or not (0). */
static void
verify_verdict(const struct verify *vf, int rc, struct chain_verdict *v)
{
	chain_verdict_continue(v);
	if (rc == TABLE_FOUND)
		return;
	if (rc == TABLE_ERROR) {
		chain_verdict_fail(v, "verify table unavailable");
		return;
	}
	if (vf->soft) {
		/* Research mode: the client sees 250, nothing is delivered. */
		v->no_deliver = true;
		v->kind = CHAIN_ACCEPT;
		util_strlcpy(v->why, "unknown recipient (soft-invalid)",
		    sizeof(v->why));
		return;
	}
	chain_verdict_refuse(v, 550, "5.1.1", "<%{rcpt}>: Recipient address "
	    "rejected: User unknown", "unknown recipient (not in table %s)",
	    table_name(vf->t));
}

struct verify_job {
	struct chain_call	*call;
	const struct verify	*vf;
	struct table_req	*req;
};

static void
verify_done_cb(void *arg, int rc, const struct table_values *vals)
{
	struct verify_job *j = arg;
	struct chain_verdict v;

	(void)vals;
	*chain_call_data(j->call) = NULL;
	verify_verdict(j->vf, rc, &v);
	chain_call_done(j->call, &v);
	free(j);
}

static void
verify_cancel(void *inst, struct chain_call *call)
{
	struct verify_job *j = *chain_call_data(call);

	(void)inst;
	if (j == NULL)
		return;
	table_lookup_cancel(&j->req);
	*chain_call_data(call) = NULL;
	free(j);
}

static enum chain_status
verify_run(void *inst, struct chain_call *call, struct chain_verdict *v)
{
	struct verify *vf = inst;
	struct chain_session *cs = chain_call_session(call);
	struct verify_job *j;
	int rc;

	chain_verdict_continue(v);
	if (cs->rcpt == NULL)
		return CHAIN_DONE;
	j = xcalloc(1, sizeof(*j));
	j->call = call;
	j->vf = vf;
	rc = table_lookup_start(vf->t, chain_loop_tables(cs->loop), cs->rcpt,
	    verify_done_cb, j, NULL, &j->req);
	if (rc == TABLE_PENDING) {
		*chain_call_data(call) = j;
		return CHAIN_PENDING;
	}
	free(j);
	verify_verdict(vf, rc, v);
	return CHAIN_DONE;
}

/* ----- header ----- */

enum hdr_check { HDR_REQUIRE, HDR_UNIQUE, HDR_MAX_SIZE };

struct hdr {
	enum hdr_check	 check;
	char		**names;	/* owned, NULL-terminated */
	uint64_t	 max;
};

static void
hdr_free(void *inst)
{
	struct hdr *h = inst;

	for (char **p = h->names; p != NULL && *p != NULL; p++)
		free(*p);
	free(h->names);
	free(h);
}

static void *
hdr_new(const struct chain_handler_args *a, char **err_out)
{
	struct hdr *h = xcalloc(1, sizeof(*h));

	if (a->argc != 3)
		goto usage;
	if (strcmp(a->argv[1], "max-size") == 0) {
		h->check = HDR_MAX_SIZE;
		if (util_parse_size(a->argv[2], &h->max) == -1 || h->max == 0)
			goto usage;
		if (h->max >= CHAIN_HDR_MAX) {
			*err_out = xasprintf("header max-size must be under "
			    "%uk (the header block kept)", CHAIN_HDR_MAX / 1024);
			free(h);
			return NULL;
		}
		return h;
	}
	if (strcmp(a->argv[1], "require") == 0)
		h->check = HDR_REQUIRE;
	else if (strcmp(a->argv[1], "unique") == 0)
		h->check = HDR_UNIQUE;
	else
		goto usage;
	size_t n = 0;
	char *list = xstrdup(a->argv[2]), *save = NULL;
	for (char *t = strtok_r(list, ",", &save); t != NULL;
	    t = strtok_r(NULL, ",", &save)) {
		/* One that could never match would refuse every message. */
		if (!chain_field_name_ok(t)) {
			*err_out = xasprintf("bad field name \"%s\": a name is "
			    "1..200 printable ASCII characters, no colon or "
			    "blank (RFC 5322 3.6.8)", t);
			free(list);
			hdr_free(h);
			return NULL;
		}
		h->names = xreallocarray(h->names, n + 2, sizeof(*h->names));
		h->names[n++] = xstrdup(t);
		h->names[n] = NULL;
	}
	free(list);
	if (n > 0)
		return h;
usage:
	hdr_free(h);
	*err_out = xstrdup("usage: header require|unique NAME,NAME... | "
	    "header max-size SIZE");
	return NULL;
}

/*
 * How many fields named name the block has (RFC 5322 2.2), the obsolete
 * "Name :" with blanks before the colon included (4.5).
 */
static unsigned
hdr_count(const char *b, size_t len, const char *name)
{
	unsigned n = 0;

	for (size_t i = 0; i < len; ) {
		n += util_hdr_is(b + i, len - i, name);
		const char *e = memchr(b + i, '\n', len - i);
		if (e == NULL)
			break;
		i = (size_t)(e - b) + 1;
	}
	return n;
}

static enum chain_status
hdr_run(void *inst, struct chain_call *call, struct chain_verdict *v)
{
	struct hdr *h = inst;
	struct chain_session *cs = chain_call_session(call);
	size_t len = 0;
	const char *b = chain_session_headers(cs, &len);
	char text[CHAIN_TEXT_MAX];

	chain_verdict_continue(v);
	if (h->check == HDR_MAX_SIZE) {
		if (len > h->max)
			chain_verdict_refuse(v, 552, "5.3.4", "Message header "
			    "block too large", "header block of %zu bytes over "
			    "%zu", len, (size_t)h->max);
		return CHAIN_DONE;
	}
	/* A block longer than what is kept: fields past it went unseen. */
	if (chain_header_block_refuse(cs, v))
		return CHAIN_DONE;
	for (char **p = h->names; *p != NULL; p++) {
		unsigned n = b != NULL ? hdr_count(b, len, *p) : 0;
		if (h->check == HDR_REQUIRE && n == 0) {
			/* RFC 5322 3.6: From and Date are required. */
			snprintf(text, sizeof(text), "Message lacks a %s: "
			    "header field", *p);
			chain_verdict_refuse(v, 550, "5.6.0", text, "no %s: "
			    "field", *p);
			return CHAIN_DONE;
		}
		if (h->check == HDR_UNIQUE && n > 1) {
			/* RFC 5322 3.6: at most one From, Subject, ... */
			snprintf(text, sizeof(text), "Message has %u %s: "
			    "header fields", n, *p);
			chain_verdict_refuse(v, 550, "5.6.0", text, "%u %s: "
			    "fields", n, *p);
			return CHAIN_DONE;
		}
	}
	return CHAIN_DONE;
}

/* ----- size ----- */

struct size {
	uint64_t	 max;
	int		 who;		/* 0 all, 1 sender, 2 rcpt */
	char		*match;		/* owned: "addr" or "@domain" */
};

static void
size_free(void *inst)
{
	struct size *s = inst;

	free(s->match);
	free(s);
}

static void *
size_new(const struct chain_handler_args *a, char **err_out)
{
	struct size *s = xcalloc(1, sizeof(*s));

	if ((a->argc != 2 && a->argc != 4) ||
	    util_parse_size(a->argv[1], &s->max) == -1 || s->max == 0)
		goto usage;
	if (a->argc == 4) {
		if (strcmp(a->argv[2], "sender") == 0)
			s->who = 1;
		else if (strcmp(a->argv[2], "rcpt") == 0)
			s->who = 2;
		else
			goto usage;
		s->match = util_strlower(xstrdup(a->argv[3]));
	}
	return s;
usage:
	size_free(s);
	*err_out = xstrdup("usage: size MAX [sender|rcpt ADDR|@DOMAIN]");
	return NULL;
}

static bool
size_matches(const char *match, const char *addr)
{
	if (addr == NULL)
		return false;
	if (match[0] == '@')
		return strcasecmp(chain_addr_domain(addr), match + 1) == 0;
	return strcasecmp(addr, match) == 0;
}

static enum chain_status
size_run(void *inst, struct chain_call *call, struct chain_verdict *v)
{
	struct size *s = inst;
	struct chain_session *cs = chain_call_session(call);
	bool applies = s->who == 0;

	chain_verdict_continue(v);
	if (s->who == 1)
		applies = size_matches(s->match, cs->sender);
	else if (s->who == 2) {
		if (chain_call_stage(call) == SMTP_STAGE_RCPT)
			applies = size_matches(s->match, cs->rcpt);
		for (size_t i = 0; i < cs->nrcpts && !applies; i++)
			applies = size_matches(s->match, cs->rcpts[i]);
	}
	/* MAIL/RCPT: the declared SIZE= (RFC 1870); EOM: the real size. */
	if (applies && cs->size > s->max)
		chain_verdict_refuse(v, 552, "5.3.4", "Message size exceeds "
		    "the limit for this address", "%s of %llu bytes over %llu",
		    chain_call_stage(call) == SMTP_STAGE_EOM ? "message" :
		    "declared SIZE", (unsigned long long)cs->size,
		    (unsigned long long)s->max);
	return CHAIN_DONE;
}

const struct chain_handler_ops chain_content_ops[] = {
	{ "verify", CHAIN_STAGE_BIT(SMTP_STAGE_RCPT), verify_new, verify_free,
	    verify_run, verify_cancel, NULL },
	{ "header", CHAIN_STAGE_BIT(SMTP_STAGE_HEADER) |
	    CHAIN_STAGE_BIT(SMTP_STAGE_EOM), hdr_new, hdr_free, hdr_run,
	    NULL, NULL },
	{ "size", CHAIN_STAGE_BIT(SMTP_STAGE_MAIL) |
	    CHAIN_STAGE_BIT(SMTP_STAGE_RCPT) | CHAIN_STAGE_BIT(SMTP_STAGE_EOM),
	    size_new, size_free, size_run, NULL, NULL },
	{ NULL, 0, NULL, NULL, NULL, NULL, NULL },
};
