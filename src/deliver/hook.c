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
	if (h->secret != NULL && (k->secret = table_open(h->secret,
	    err_out)) == NULL)
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

/* The table's entry for key, else for "default"; NULL when neither. */
static char *
hook_lookup(struct table *t, const char *key)
{
	char *v = NULL;

	if (t == NULL)
		return NULL;
	if (!table_lookup(t, key, &v) && !table_lookup(t, "default", &v))
		return NULL;
	return v;
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

void
deliver_hook_call_init(const struct deliver_hook *k,
    struct deliver_hook_call *c)
{
	const struct config_hook *h = k->h;
	char *v;

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
	if ((v = hook_lookup(k->auth, k->host)) != NULL) {
		hook_creds(c, v);
		OPENSSL_cleanse(v, strlen(v));
		free(v);
	}
	if ((c->secret = hook_lookup(k->secret, k->name)) != NULL) {
		c->o.secret = c->secret;
		c->o.secret_len = strlen(c->secret);
	}
}

static void
hook_wipe(char *s)
{
	if (s != NULL) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
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
