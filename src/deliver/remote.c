/*
 * deliver/remote.c: a relay, mx, forward or relay-by-sender action made
 * ready to send: its tables opened, its TLS context made, POP-before-SMTP
 * state kept across messages; then deliver_smtp() or deliver_mx().  Knows
 * nothing of the queue's bookkeeping.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "config/config.h"
#include "log/log.h"
#include "table/table.h"
#include "tls/tls.h"
#include "util/util.h"

#define REMOTE_HOPS_MAX		100	/* RFC 5321 6.3: Received: limit */
#define REMOTE_FWD_HOPS_MAX	50	/* forward: a tighter loop guard */

/* The runtime side of one struct config_relay. */
struct remote_relay {
	const struct config_relay *cr;		/* borrowed from the config */
	struct table	*auth, *pop_pass, *mx_hosts;	/* owned */
	struct tls_client *tls;			/* owned; shared by threads */
	struct deliver_self *self;		/* owned: mx, forward; NULL for
						   the others */
	pthread_mutex_t	 pop_mu;
	uint64_t	 pop_last_ms;		/* last good POP login; 0 never */
	struct deliver_reuse reuse;		/* sessions kept: owner r */
};

struct deliver_remote {
	const struct config_action *a;		/* borrowed */
	struct remote_relay	 main;		/* relay, mx, forward */
	struct remote_relay	*accts;		/* relay-by-sender: one per
						   by_sender entry */
};

static int
remote_table(const struct config_table *ct, struct table **out,
    const char **err_out)
{
	if (ct == NULL)
		return 0;
	if ((*out = table_open(ct, err_out)) == NULL)
		return -1;
	return 0;
}

static int
remote_relay_init(struct remote_relay *r, const struct config *c,
    const struct config_relay *cr, bool is_mx, const char **err_out)
{
	struct tls_client_opts to = {
		/* RFC 7435: opportunistic TLS to MX hosts is unverified. */
		.no_verify = is_mx || cr->no_verify,
		.ca_file = cr->ca_file,
	};

	memset(r, 0, sizeof(*r));
	r->cr = cr;
	pthread_mutex_init(&r->pop_mu, NULL);
	if (c != NULL)
		r->reuse = (struct deliver_reuse){ .owner = r,
		    .idle_ms = c->queue.reuse_time_ms,
		    .max_uses = c->queue.reuse_limit,
		    .cache_max = c->queue.cache_size };
	scache_ref();
	if (remote_table(cr->auth, &r->auth, err_out) == -1 ||
	    remote_table(cr->pop_pass, &r->pop_pass, err_out) == -1 ||
	    remote_table(cr->mx_hosts, &r->mx_hosts, err_out) == -1)
		return -1;
	if ((r->tls = tls_client_new(&to, err_out)) == NULL)
		return -1;
	if (is_mx)
		r->self = deliver_self_new(c);
	return 0;
}

static void
remote_relay_clear(struct remote_relay *r)
{
	if (r->cr == NULL)
		return;
	scache_drop(r);
	scache_unref();
	table_free(&r->auth);
	table_free(&r->pop_pass);
	table_free(&r->mx_hosts);
	tls_client_free(&r->tls);
	deliver_self_free(&r->self);
	pthread_mutex_destroy(&r->pop_mu);
	r->cr = NULL;
}

struct deliver_remote *
deliver_remote_new(const struct config *c, const struct config_action *a,
    const char **err_out)
{
	struct deliver_remote *dr = xcalloc(1, sizeof(*dr));

	dr->a = a;
	switch (a->kind) {
	case CONFIG_ACTION_RELAY:
	case CONFIG_ACTION_MX:
	case CONFIG_ACTION_FORWARD:
		if (remote_relay_init(&dr->main, c, a->relay, a->kind !=
		    CONFIG_ACTION_RELAY, err_out) == -1)
			goto fail;
		break;
	case CONFIG_ACTION_RELAY_BY_SENDER:
		dr->accts = xcalloc(a->nby_sender, sizeof(*dr->accts));
		for (size_t i = 0; i < a->nby_sender; i++)
			if (remote_relay_init(&dr->accts[i], c,
			    &a->by_sender[i].account->relay, false,
			    err_out) == -1)
				goto fail;
		break;
	default:
		*err_out = util_err("action %s is not an outbound action",
		    a->name);
		goto fail;
	}
	return dr;
fail:
	deliver_remote_free(&dr);
	return NULL;
}

void
deliver_remote_free(struct deliver_remote **drp)
{
	struct deliver_remote *dr = *drp;

	if (dr == NULL)
		return;
	*drp = NULL;
	remote_relay_clear(&dr->main);
	if (dr->accts != NULL)
		for (size_t i = 0; i < dr->a->nby_sender; i++)
			remote_relay_clear(&dr->accts[i]);
	free(dr->accts);
	free(dr);
}

static void
remote_smtp_opts(const struct remote_relay *r, const struct deliver_msg *m,
    struct deliver_smtp_opts *so, struct deliver_rewrite *rw)
{
	const struct config_relay *cr = r->cr;
	uint64_t *t = &so->timeouts.connect_ms;

	(void)m;
	memset(so, 0, sizeof(*so));
	so->host = cr->host;
	so->port = cr->port;
	so->tls = cr->tls == CONFIG_RELAY_TLS ? DELIVER_TLS_IMPLICIT :
	    cr->tls == CONFIG_RELAY_STARTTLS ? DELIVER_TLS_STARTTLS :
	    DELIVER_TLS_NONE;
	so->tls_ctx = r->tls;
	so->helo = cr->helo;
	so->reuse = &r->reuse;
	so->max_received = REMOTE_HOPS_MAX;
	/* connect, greeting, command, data-init, data-block, data-term */
	for (size_t k = 0; k < 6; k++)
		t[k] = cr->timeouts_ms[k];
	rw->return_path = cr->rw_return_path;
	rw->reply_to = cr->rw_reply_to;
	rw->from = cr->rw_from;
	if (rw->return_path != NULL || rw->reply_to != NULL ||
	    rw->from != NULL)
		so->rewrite = rw;
}

/* Wipe and free a secret of len bytes (the table's whole value). */
static void
remote_secret_free(char **sp, size_t len)
{
	if (*sp == NULL)
		return;
	OPENSSL_cleanse(*sp, len);
	free(*sp);
	*sp = NULL;
}

/*
 * POP-before-SMTP: log in again when the last login is older than the
 * interval (smtpproxy's popcheckdelay), then wait pop-wait (its
 * waitafterpop) so the server has registered us.  0, or -1 with *err_out.
 */
static int
remote_pop(struct remote_relay *r, const char **err_out)
{
	const struct config_relay *cr = r->cr;
	char *pass = NULL;
	int rc = 0;

	if (cr->pop_url == NULL)
		return 0;
	pthread_mutex_lock(&r->pop_mu);
	uint64_t now = util_now_ms();
	if (r->pop_last_ms != 0 && now - r->pop_last_ms < cr->pop_interval_ms)
		goto out;
	if ((rc = table_get_first(r->pop_pass, cr->pop_user, &pass)) !=
	    TABLE_FOUND) {
		*err_out = rc == TABLE_MISSING ? util_err("4.7.0 POP3: no "
		    "password for %s in the pass-table", cr->pop_user) :
		    util_err("4.3.0 POP3: pass-table <%s> did not answer",
		    table_name(r->pop_pass));
		rc = -1;
		goto out;
	}
	if (*pass == '\0') {
		*err_out = util_err("4.7.8 POP3: pass-table entry for %s has "
		    "no password", cr->pop_user);
		rc = -1;
		goto out;
	}
	rc = 0;
	struct deliver_pop_opts po = { .host = cr->pop_host,
	    .port = cr->pop_port, .user = cr->pop_user, .pass = pass,
	    .no_verify = cr->no_verify, .ca_file = cr->ca_file,
	    .tls = cr->pop_tls == CONFIG_RELAY_TLS ? DELIVER_TLS_IMPLICIT :
	    cr->pop_tls == CONFIG_RELAY_STARTTLS ? DELIVER_TLS_STARTTLS :
	    DELIVER_TLS_NONE };
	if (deliver_pop_login(&po, err_out) == -1) {
		rc = -1;
		goto out;
	}
	if (!deliver_sleep(cr->pop_wait_ms)) {
		*err_out = "4.3.0 POP3: wait after the login cut short: "
		    "postern is stopping";
		rc = -1;
		goto out;
	}
	r->pop_last_ms = util_now_ms();
out:
	pthread_mutex_unlock(&r->pop_mu);
	if (pass != NULL)
		remote_secret_free(&pass, strlen(pass));
	return rc;
}

/*
 * The auth table's entry for the relay host, else "default": "user
 * password".  An entry without a password (or user name) is a mistake in
 * the table, not an empty password to send: it defers.  On 0, so->user
 * and so->pass point into *cred_out, which the caller frees with
 * remote_secret_free(cred_out, *len_out); -1 with *err_out.
 */
static int
remote_creds(struct remote_relay *r, struct deliver_smtp_opts *so,
    char **cred_out, size_t *len_out, const char **err_out)
{
	const char *key = r->cr->host;
	char *cred = NULL;

	/* Looked up per message, so an edited table applies. */
	int rc = table_get_first(r->auth, key, &cred);
	if (rc == TABLE_MISSING) {
		key = "default";
		rc = table_get_first(r->auth, key, &cred);
	}
	if (rc != TABLE_FOUND) {
		*err_out = rc == TABLE_MISSING ? util_err("4.7.0 no "
		    "credentials for %s (or \"default\") in the auth table",
		    r->cr->host) : util_err("4.3.0 auth <%s>: the table did "
		    "not answer", table_name(r->auth));
		return -1;
	}
	*len_out = strlen(cred);	/* before the split below */
	char *sp = strpbrk(cred, " \t");
	so->user = cred;
	so->pass = "";
	if (sp != NULL) {
		*sp = '\0';
		so->pass = sp + 1 + strspn(sp + 1, " \t");
	}
	if (*so->user == '\0' || *so->pass == '\0') {
		*err_out = util_err("4.7.8 auth table entry for %s has no %s",
		    key, *so->user == '\0' ? "user name" : "password");
		remote_secret_free(&cred, *len_out);
		return -1;
	}
	*cred_out = cred;
	return 0;
}

static enum deliver_result
remote_relay_send(struct remote_relay *r, const struct deliver_msg *m,
    const char *const *rcpts, size_t n, struct deliver_rcpt_status *st,
    const char **err_out)
{
	struct deliver_smtp_opts so;
	struct deliver_rewrite rw;
	char *cred = NULL;
	size_t cred_len = 0;
	enum deliver_result res;

	remote_smtp_opts(r, m, &so, &rw);
	if (remote_pop(r, err_out) == -1 || (r->auth != NULL &&
	    remote_creds(r, &so, &cred, &cred_len, err_out) == -1)) {
		deliver_status_all(st, n, DELIVER_TEMPFAIL, *err_out);
		return DELIVER_TEMPFAIL;
	}
	res = deliver_smtp(&so, m, rcpts, n, st, err_out);
	remote_secret_free(&cred, cred_len);
	return res;
}

/* Direct MX delivery, one transaction per recipient domain. */
static enum deliver_result
remote_mx_send(struct remote_relay *r, const struct deliver_msg *m,
    const char *const *rcpts, size_t n, unsigned hops,
    struct deliver_rcpt_status *st, const char **err_out)
{
	struct deliver_mx_opts mo = { .resolver = r->cr->resolver,
	    .self = r->self, .mx_hosts = r->mx_hosts };
	struct deliver_smtp_opts so;
	struct deliver_rewrite rw;
	bool *done = xcalloc(n, sizeof(*done));
	const char **grp = xcalloc(n, sizeof(*grp));
	size_t *idx = xcalloc(n, sizeof(*idx));
	struct deliver_rcpt_status *gst = xcalloc(n, sizeof(*gst));
	size_t ok = 0, pf = 0;

	remote_smtp_opts(r, m, &so, &rw);
	so.tls = DELIVER_TLS_OPPORTUNISTIC;
	so.max_received = hops;
	for (size_t i = 0; i < n; i++) {
		if (done[i])
			continue;
		const char *at = strrchr(rcpts[i], '@');
		const char *dom = at != NULL ? at + 1 : "";
		size_t g = 0;
		for (size_t k = i; k < n; k++) {
			const char *a2 = strrchr(rcpts[k], '@');
			if (!done[k] && util_strcaseeq(a2 != NULL ? a2 + 1 :
			    "", dom)) {
				grp[g] = rcpts[k];
				idx[g++] = k;
				done[k] = true;
			}
		}
		(void)deliver_mx(&mo, &so, dom, m, grp, g, gst, err_out);
		for (size_t k = 0; k < g; k++)
			st[idx[k]] = gst[k];
	}
	for (size_t i = 0; i < n; i++) {
		ok += st[i].result == DELIVER_OK;
		pf += st[i].result == DELIVER_PERMFAIL;
		if (st[i].result != DELIVER_OK)
			*err_out = util_err("%s", st[i].text);
	}
	free(done);
	free(grp);
	free(idx);
	free(gst);
	return ok == n ? DELIVER_OK : pf == n ? DELIVER_PERMFAIL :
	    DELIVER_TEMPFAIL;
}

/*
 * relay-by-sender: the exact address, then "@domain", then "default".  The
 * keys have their domains as A-labels (config/), so the sender's is
 * compared in that form: a U-label in any case, or an A-label, is one
 * domain.
 */
static struct remote_relay *
remote_pick(struct deliver_remote *dr, const char *sender)
{
	const struct config_action *a = dr->a;
	const char *at = strrchr(sender, '@'), *err;
	char *dom = NULL, *addr = NULL;
	struct remote_relay *found = NULL;

	/* A domain that is not valid IDNA is compared as written. */
	if (at != NULL && util_idna_alabel(at + 1, &dom, &err) == -1)
		dom = xstrdup(at + 1);
	if (at != NULL)
		addr = xasprintf("%.*s@%s", (int)(at - sender), sender, dom);
	for (int pass = 0; pass < 3 && found == NULL; pass++)
		for (size_t i = 0; i < a->nby_sender && found == NULL; i++) {
			const char *key = a->by_sender[i].key;
			bool hit = pass == 0 ? key[0] != '@' && addr != NULL &&
			    util_strcaseeq(key, addr) :
			    pass == 1 ? key[0] == '@' && dom != NULL &&
			    util_strcaseeq(key + 1, dom) :
			    strcmp(key, "default") == 0;
			if (hit)
				found = &dr->accts[i];
		}
	free(addr);
	free(dom);
	return found;
}

enum deliver_result
deliver_remote_send(struct deliver_remote *dr, const struct deliver_msg *m,
    const char *const *rcpts, size_t n, struct deliver_rcpt_status *st_out,
    const char **err_out)
{
	const char *sender = m->return_path != NULL ? m->return_path : "";

	if (n == 0)
		return DELIVER_OK;
	switch (dr->a->kind) {
	case CONFIG_ACTION_RELAY:
		return remote_relay_send(&dr->main, m, rcpts, n, st_out,
		    err_out);
	case CONFIG_ACTION_MX:
		return remote_mx_send(&dr->main, m, rcpts, n, REMOTE_HOPS_MAX,
		    st_out, err_out);
	case CONFIG_ACTION_FORWARD: {
		/*
		 * Every recipient becomes the one address: one copy (the
		 * queue hands over a message's recipients of the action
		 * together: DELIVER_ONE_COPY), and its outcome is each
		 * one's.
		 */
		const char *to[1] = { dr->a->forward_to };
		struct deliver_rcpt_status one;
		enum deliver_result r = remote_mx_send(&dr->main, m, to, 1,
		    REMOTE_FWD_HOPS_MAX, &one, err_out);
		for (size_t i = 0; i < n; i++)
			st_out[i] = one;
		return r;
	}
	case CONFIG_ACTION_RELAY_BY_SENDER: {
		struct remote_relay *r = remote_pick(dr, sender);
		if (r == NULL) {
			*err_out = util_err("5.7.1 no relay account for "
			    "sender <%s> and no default", sender);
			deliver_status_all(st_out, n, DELIVER_PERMFAIL, *err_out);
			return DELIVER_PERMFAIL;
		}
		return remote_relay_send(r, m, rcpts, n, st_out, err_out);
	}
	default:
		*err_out = util_err("4.3.5 action %s cannot send",
		    dr->a->name);
		deliver_status_all(st_out, n, DELIVER_TEMPFAIL, *err_out);
		return DELIVER_TEMPFAIL;
	}
}
