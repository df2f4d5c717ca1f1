/*
 * deliver/hook.c: what a configured web service needs at run time (the
 * webhook action, and reply agents that ask a web service): its HTTP
 * client, its template compiled, its credential and secret tables
 * opened, and for each request the credentials looked up afresh (so a
 * table's edits apply).  Knows nothing of what is posted.
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"
#include "table/table.h"
#include "tls/tls.h"
#include "util/util.h"

#define HOOK_TEMPLATE_MAX	(256u * 1024)

struct deliver_hook {
	const struct config_hook *h;	/* borrowed from the config */
	char			*name;	/* the action's: the secret's key */
	char			*host;	/* the URL's: the credentials' key */
	struct mime_tpl		*tpl;
	struct table		*auth, *secret;
	struct http_client	*hc;
};

struct mime_tpl *
deliver_tpl_file(const char *path, enum mime_tpl_mode mode, const char *what,
    const char **err_out)
{
	struct util_buf b = { 0 };
	char buf[8192], *why = NULL;
	struct mime_tpl *t = NULL;
	size_t n;
	FILE *f = fopen(path, "re");

	if (f == NULL) {
		*err_out = util_err("%s %s: %m", what, path);
		return NULL;
	}
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0 &&
	    b.len <= HOOK_TEMPLATE_MAX)
		util_buf_add(&b, buf, n);
	fclose(f);
	if (b.len > HOOK_TEMPLATE_MAX)
		*err_out = util_err("%s %s: larger than %u bytes", what, path,
		    HOOK_TEMPLATE_MAX);
	else if ((t = mime_tpl_new(util_buf_cstr(&b), b.len, mode,
	    deliver_doc_roots, &why)) == NULL)
		*err_out = util_err("%s %s: %s", what, path, why);
	free(why);
	util_buf_clear(&b);
	return t;
}

/* "http://user@host:port/path" -> "host" (lower case). */
static char *
hook_url_host(const char *url)
{
	const char *h = strstr(url, "://");
	size_t n;

	h = h != NULL ? h + 3 : url;
	n = strcspn(h, "/?#");
	const char *at = memchr(h, '@', n);

	if (at != NULL) {
		n -= (size_t)(at + 1 - h);
		h = at + 1;
	}
	if (h[0] == '[')
		n = strcspn(h, "]") + 1;
	else
		n = strcspn(h, ":/?#");
	return util_strlower(xstrndup(h, n));
}

/*
 * The table's entry for key, else for "default" (*v_out malloc'd when
 * found): TABLE_FOUND, TABLE_MISSING when neither, or TABLE_ERROR.
 */
static int
hook_lookup(struct table *t, const char *key, char **v_out)
{
	struct table_values tv = { 0 };
	int rc = table_get(t, key, &tv);

	if (rc == TABLE_MISSING)
		rc = table_get(t, "default", &tv);
	if (rc == TABLE_FOUND)
		*v_out = xstrdup(tv.n > 0 ? tv.v[0] : "");
	table_values_clear(&tv);
	return rc;
}

static void
hook_wipe(char *s)
{
	if (s != NULL) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

/* Why a request that must be signed has no key (rc from hook_lookup). */
static const char *
hook_no_secret(const struct deliver_hook *k, int rc)
{
	if (rc == TABLE_MISSING)
		return util_err("secret <%s>: no key for %s and no default",
		    table_name(k->secret), k->name);
	return util_err("secret <%s>: the table did not answer",
	    table_name(k->secret));
}

/*
 * curl reads the trust anchors at each connection: they are loaded now as
 * a relay's are (tls_client_new), so a file curl would refuse (unreadable,
 * or holding no certificate) is an error for postern check and the start.
 */
static int
hook_ca_check(const char *path, bool no_verify, const char **err_out)
{
	const struct tls_client_opts o = { .ca_file = path,
	    .no_verify = no_verify };
	struct tls_client *tc = tls_client_new(&o, err_out);

	if (tc == NULL)
		return -1;
	tls_client_free(&tc);
	return 0;
}

/*
 * A secret table with no key for the action is refused where it can be
 * read without waiting on a server (always for postern check).
 */
static int
hook_secret_check(const struct deliver_hook *k, bool client,
    const char **err_out)
{
	char *v = NULL;

	if (client && table_is_remote(k->secret))
		return 0;
	if (hook_lookup(k->secret, k->name, &v) == TABLE_MISSING) {
		*err_out = hook_no_secret(k, TABLE_MISSING);
		return -1;
	}
	hook_wipe(v);
	return 0;
}

void
deliver_hook_free(struct deliver_hook **kp)
{
	struct deliver_hook *k = *kp;

	if (k == NULL)
		return;
	*kp = NULL;
	http_client_free(&k->hc);
	mime_tpl_free(&k->tpl);
	table_free(&k->auth);
	table_free(&k->secret);
	free(k->name);
	free(k->host);
	free(k);
}

struct deliver_hook *
deliver_hook_new(const struct config_hook *h, const char *name,
    bool client, const char **err_out)
{
	struct deliver_hook *k = xcalloc(1, sizeof(*k));

	k->h = h;
	k->name = xstrdup(name);
	k->host = hook_url_host(h->url);
	if (h->format == CONFIG_HOOK_TEMPLATE &&
	    (k->tpl = deliver_tpl_file(h->template_path, MIME_TPL_JSON,
	    "template", err_out)) == NULL)
		goto fail;
	if (h->auth != NULL && (k->auth = table_open(h->auth, err_out)) ==
	    NULL)
		goto fail;
	if (h->secret != NULL && ((k->secret = table_open(h->secret,
	    err_out)) == NULL || hook_secret_check(k, client, err_out) == -1))
		goto fail;
	if (h->ca_file != NULL && hook_ca_check(h->ca_file,
	    h->no_verify, err_out) == -1)
		goto fail;
	if (client && (k->hc = http_client_new(err_out)) == NULL)
		goto fail;
	return k;
fail:
	deliver_hook_free(&k);
	return NULL;
}

struct http_client *
deliver_hook_client(const struct deliver_hook *k)
{
	return k->hc;
}

/* "bearer TOKEN" or "basic USER PASSWORD" into c. */
static void
hook_creds(struct deliver_hook_call *c, char *v)
{
	char *save = NULL, *kind = strtok_r(v, " \t", &save);
	char *a = kind != NULL ? strtok_r(NULL, " \t", &save) : NULL;
	char *b = a != NULL ? strtok_r(NULL, "", &save) : NULL;

	if (kind == NULL || a == NULL)
		return;
	if (strcasecmp(kind, "bearer") == 0)
		c->o.bearer = c->bearer = xstrdup(a);
	else if (strcasecmp(kind, "basic") == 0) {
		c->o.user = c->user = xstrdup(a);
		c->o.pass = c->pass = xstrdup(b != NULL ? b : "");
	}
}

int
deliver_hook_call_init(const struct deliver_hook *k,
    struct deliver_hook_call *c, const char **err_out)
{
	const struct config_hook *h = k->h;
	char *v = NULL;
	int rc;

	memset(c, 0, sizeof(*c));
	c->o.url = h->url;
	c->o.method = h->method;
	c->o.format = h->format == CONFIG_HOOK_RAW ? DELIVER_WEBHOOK_RAW :
	    h->format == CONFIG_HOOK_TEMPLATE ? DELIVER_WEBHOOK_TEMPLATE :
	    DELIVER_WEBHOOK_JSON;
	c->o.tpl = k->tpl;
	c->o.headers = (const char *const *)h->headers;
	c->o.ca_file = h->ca_file;
	c->o.no_verify = h->no_verify;
	c->o.timeout_ms = h->timeout_ms;
	c->o.response_max = (size_t)h->response_max;
	c->o.limits.text_max = (size_t)h->text_max;
	c->o.limits.attach_max = (size_t)h->attach_max;
	/* Looked up now: a table's edits apply as they do anywhere. */
	if (k->auth != NULL && hook_lookup(k->auth, k->host, &v) ==
	    TABLE_FOUND) {
		hook_creds(c, v);
		hook_wipe(v);
	}
	if (k->secret == NULL)
		return 0;
	/* A request that must be signed is never sent unsigned. */
	if ((rc = hook_lookup(k->secret, k->name, &c->secret)) !=
	    TABLE_FOUND) {
		*err_out = hook_no_secret(k, rc);
		return -1;
	}
	c->o.secret = c->secret;
	c->o.secret_len = strlen(c->secret);
	return 0;
}

void
deliver_hook_call_clear(struct deliver_hook_call *c)
{
	hook_wipe(c->bearer);
	hook_wipe(c->user);
	hook_wipe(c->pass);
	hook_wipe(c->secret);
	memset(c, 0, sizeof(*c));
}
