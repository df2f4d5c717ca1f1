/*
 * conn/rt.c: a loaded configuration and what is built from it (router, TLS
 * contexts), shared by the sessions that started under it and freed with
 * the last of them.  Building reads files: start-up and reload only.
 */
#include "conn/conn.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain/chain.h"
#include "config/config.h"
#include "deliver/deliver.h"
#include "log/log.h"
#include "proxy/proxy.h"
#include "route/route.h"
#include "table/table.h"
#include "tls/tls.h"
#include "util/util.h"

/*
 * What building a runtime found wrong, one "FILE:LINE: message" line each.
 * With check (postern check) nothing is made or changed on disk and every
 * part is tried after an error; otherwise building stops at the first.
 */
struct conn_rt_build {
	struct conn_rt	*rt;
	bool		 check;
	struct util_buf	 errs;
};

/* An error already naming its FILE:LINE; the same one twice is one. */
static void
conn_rt_note(struct conn_rt_build *b, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = b->errs.len > 0 ? util_buf_cstr(&b->errs) : "";
	    (p = strstr(p, line)) != NULL; p += n)
		if ((p == b->errs.data || p[-1] == '\n') && p[n] == '\n')
			return;
	util_buf_printf(&b->errs, "%s\n", line);
}

/* An error about the statement on line (0: none, the file is named). */
static void
conn_rt_err(struct conn_rt_build *b, int line, const char *err)
{
	const char *path = b->rt->cfg->path;

	conn_rt_note(b, line > 0 ? util_err("%s:%d: %s", path, line, err) :
	    util_err("%s: %s", path, err));
}

/* Go on with the next part: checking, or nothing went wrong yet. */
static bool
conn_rt_going(const struct conn_rt_build *b)
{
	return b->check || b->errs.len == 0;
}

/* The statement a TLS error blames: a certificate's, or a setting's. */
static int
conn_rt_tls_line(const struct config *cfg, const struct config_tls_cert *certs,
    size_t ncerts, const struct tls_server_fault *f)
{
	switch (f->part) {
	case TLS_PART_MIN_VERSION:
		return config_line_of(cfg, "tls", "min-version");
	case TLS_PART_CIPHERS:
		return config_line_of(cfg, "tls", "ciphers");
	case TLS_PART_CIPHERSUITES:
		return config_line_of(cfg, "tls", "ciphersuites");
	case TLS_PART_LIFETIME:
		return config_line_of(cfg, "tls", "session-lifetime");
	case TLS_PART_CERT:
		break;
	}
	return f->cert < ncerts ? certs[f->cert].line :
	    config_line_of(cfg, "tls", "self-signed");
}

/*
 * A server context of certs (and extra, the self-signed pair, unless
 * NULL).  Checking, with no certificate made yet, only its settings.
 */
static struct tls_server *
conn_rt_tls(struct conn_rt_build *b, const struct config_tls_cert *certs,
    size_t ncerts, const struct tls_cert_spec *extra)
{
	const struct config *cfg = b->rt->cfg;
	struct tls_cert_spec *specs = xcalloc(ncerts + 2, sizeof(*specs));
	struct tls_server_opts o = {
		.certs = specs,
		.min_version = cfg->tls_min_version,
		.ciphers = cfg->tls_ciphers,
		.ciphersuites = cfg->tls_ciphersuites,
		.session_lifetime_s = cfg->tls_session_lifetime_s,
	};
	struct tls_server_fault f;
	struct tls_server *t = NULL;
	const char *err = NULL;

	for (size_t i = 0; i < ncerts; i++) {
		specs[o.ncerts].cert_path = certs[i].cert;
		specs[o.ncerts].key_path = certs[i].key;
		specs[o.ncerts++].name = certs[i].name;
	}
	if (extra != NULL)
		specs[o.ncerts++] = *extra;
	if (o.ncerts == 0 ? tls_server_check_settings(&o, &f, &err) == 0 :
	    (t = tls_server_new(&o, &f, &err)) != NULL) {
		free(specs);
		return t;
	}
	conn_rt_err(b, conn_rt_tls_line(cfg, certs, ncerts, &f), err);
	free(specs);
	return NULL;
}

/*
 * Running as root with "user": the ids that user will have, so what is
 * made now stays readable by a reload after the drop.  -1 for both when
 * nothing is to be given away.
 */
static int
conn_rt_owner(const struct config *cfg, uid_t *uid_out, gid_t *gid_out,
    const char **err_out)
{
	*uid_out = (uid_t)-1;
	*gid_out = (gid_t)-1;
	if (geteuid() != 0 || cfg->user == NULL)
		return 0;
	return util_account_ids(cfg->user, cfg->group, uid_out, gid_out,
	    err_out);
}

/* The self-signed folder and pair belong to the user postern runs as. */
static int
conn_rt_selfsigned_own(const struct config *cfg, const char *cert,
    const char *key, uid_t uid, gid_t gid, const char **err_out)
{
	const char *paths[] = { cfg->tls_selfsigned_dir, cert, key };
	struct stat st;

	if (uid == (uid_t)-1)
		return 0;
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		if (lstat(paths[i], &st) == -1) {
			*err_out = util_err("stat(%s): %s", paths[i],
			    strerror(errno));
			return -1;
		}
		if (S_ISLNK(st.st_mode))	/* chown would follow it */
			continue;
		if ((st.st_uid != uid || st.st_gid != gid) &&
		    chown(paths[i], uid, gid) == -1) {
			*err_out = util_err("chown(%s): %s", paths[i],
			    strerror(errno));
			return -1;
		}
	}
	return 0;
}

/*
 * "tls self-signed DIR": DIR/cert.pem and DIR/key.pem, made if missing;
 * as root with "user", DIR and the pair are that user's.
 */
static int
conn_rt_selfsigned(const struct config *cfg, char **cert_out, char **key_out,
    const char **err_out)
{
	struct stat st;
	const char *why;
	uid_t uid;
	gid_t gid;

	*cert_out = xasprintf("%s/cert.pem", cfg->tls_selfsigned_dir);
	*key_out = xasprintf("%s/key.pem", cfg->tls_selfsigned_dir);
	if (conn_rt_owner(cfg, &uid, &gid, err_out) == -1)
		return -1;
	if (stat(*cert_out, &st) == 0 && stat(*key_out, &st) == 0)
		return conn_rt_selfsigned_own(cfg, *cert_out, *key_out, uid,
		    gid, err_out);
	if (util_mkdirs_owned(cfg->tls_selfsigned_dir, 0700, uid, gid) == -1) {
		*err_out = util_err("mkdir %s: %m", cfg->tls_selfsigned_dir);
		return -1;
	}
	if (tls_selfsigned_make(cfg->hostname, *cert_out, *key_out,
	    &why) == -1) {
		*err_out = util_err("self-signed certificate: %s", why);
		return -1;
	}
	log_msg(LOG_LVL_INFO, "tls: made a self-signed certificate for %s in "
	    "%s", cfg->hostname, cfg->tls_selfsigned_dir);
	return conn_rt_selfsigned_own(cfg, *cert_out, *key_out, uid, gid,
	    err_out);
}

/*
 * The self-signed pair to load: made if missing when running; when
 * checking, loaded only if it is there (the start makes it).
 */
static void
conn_rt_build_selfsigned(struct conn_rt_build *b, char **cert_out,
    char **key_out)
{
	const struct config *cfg = b->rt->cfg;
	const char *err = NULL;
	struct stat st;

	*cert_out = *key_out = NULL;
	if (cfg->tls_selfsigned_dir == NULL)
		return;
	if (!b->check) {
		if (conn_rt_selfsigned(cfg, cert_out, key_out, &err) == -1)
			conn_rt_err(b, config_line_of(cfg, "tls",
			    "self-signed"), err);
		return;
	}
	*cert_out = xasprintf("%s/cert.pem", cfg->tls_selfsigned_dir);
	*key_out = xasprintf("%s/key.pem", cfg->tls_selfsigned_dir);
	if (stat(*cert_out, &st) == -1 || stat(*key_out, &st) == -1) {
		free(*cert_out);
		free(*key_out);
		*cert_out = *key_out = NULL;
	}
}

static void
conn_rt_build_tls(struct conn_rt_build *b)
{
	struct conn_rt *rt = b->rt;
	const struct config *cfg = rt->cfg;
	struct tls_cert_spec self = { 0 };
	char *cert, *key;

	rt->tls_listen = xcalloc(cfg->nlistens + 1, sizeof(*rt->tls_listen));
	conn_rt_build_selfsigned(b, &cert, &key);
	self.cert_path = cert;
	self.key_path = key;
	if (conn_rt_going(b) && config_has_tls(cfg))
		rt->tls = conn_rt_tls(b, cfg->tls_certs, cfg->ntls_certs,
		    cert != NULL ? &self : NULL);
	for (size_t i = 0; i < cfg->nlistens && conn_rt_going(b); i++) {
		const struct config_listen *l = &cfg->listens[i];
		rt->tls_listen[i] = rt->tls;
		if (l->ncerts > 0)
			rt->tls_listen[i] = conn_rt_tls(b, l->certs, l->ncerts,
			    NULL);
	}
	free(cert);
	free(key);
}

/*
 * The runtime of every action whose kind needs one (tables opened now).
 * Checking, a kind that can check its action without making anything
 * does that instead; a kind with no runtime is checked in both cases.
 */
static void
conn_rt_build_actions(struct conn_rt_build *b)
{
	struct conn_rt *rt = b->rt;
	const struct config *cfg = rt->cfg;

	rt->runtimes = xcalloc(cfg->nactions + 1, sizeof(*rt->runtimes));
	for (size_t i = 0; i < cfg->nactions && conn_rt_going(b); i++) {
		const struct config_action *a = &cfg->actions[i];
		const struct deliver_kind *k = deliver_kind_of(a->kind);
		const char *err = NULL;
		int rc = 0;

		if (k == NULL)
			continue;
		if (k->check != NULL && (b->check || k->open == NULL))
			rc = k->check(cfg, a, &err);
		else if (k->open != NULL && (rt->runtimes[i] = k->open(cfg, a,
		    &err)) == NULL)
			rc = -1;
		if (rc == -1)
			conn_rt_err(b, a->line, util_err("action %s: %s",
			    a->name, err));
	}
}

void *
conn_rt_runtime(const struct conn_rt *rt, const char *name,
    const struct deliver_kind **kind_out)
{
	for (size_t i = 0; i < rt->cfg->nactions; i++)
		if (strcmp(rt->cfg->actions[i].name, name) == 0) {
			*kind_out = deliver_kind_of(rt->cfg->actions[i].kind);
			return rt->runtimes[i];
		}
	return NULL;
}

/* The handler chains; their errors name their FILE:LINE already. */
static void
conn_rt_build_chains(struct conn_rt_build *b)
{
	char *errs = NULL, *save = NULL;

	if ((b->rt->chains = chain_set_new(b->rt->cfg, &errs)) == NULL &&
	    errs == NULL)
		conn_rt_err(b, 0, "handler chains: error");
	for (char *line = errs != NULL ? strtok_r(errs, "\n", &save) : NULL;
	    line != NULL; line = strtok_r(NULL, "\n", &save))
		conn_rt_note(b, line);
	free(errs);
}

/*
 * Build what cfg describes into rt, part after part, each error noted:
 * the chains, the router with its tables, the TLS contexts, the actions'
 * runtimes, the upstreams.
 */
static void
conn_rt_build(struct conn_rt_build *b)
{
	struct conn_rt *rt = b->rt;
	const struct config *cfg = rt->cfg;
	const char *err = NULL;

	conn_rt_build_chains(b);
	if (conn_rt_going(b) && (rt->router = route_new(cfg, &err)) == NULL)
		conn_rt_note(b, err);
	if (conn_rt_going(b))
		conn_rt_build_tls(b);
	if (conn_rt_going(b))
		conn_rt_build_actions(b);
	if (conn_rt_going(b) && cfg->nupstreams > 0 &&
	    (rt->proxies = proxy_set_new(cfg, &err)) == NULL)
		conn_rt_note(b, err);
}

/* What was built from rt->cfg, not the config itself. */
static void
conn_rt_clear(struct conn_rt *rt)
{
	chain_set_unref(&rt->chains);
	proxy_set_free(&rt->proxies);
	for (size_t i = 0; rt->runtimes != NULL && i < rt->cfg->nactions; i++)
		if (rt->runtimes[i] != NULL)
			deliver_kind_of(rt->cfg->actions[i].kind)->close(
			    rt->runtimes[i]);
	free(rt->runtimes);
	for (size_t i = 0; rt->tls_listen != NULL && i < rt->cfg->nlistens;
	    i++)
		if (rt->tls_listen[i] != rt->tls)
			tls_server_free(&rt->tls_listen[i]);
	free(rt->tls_listen);
	tls_server_free(&rt->tls);
	route_free(&rt->router);
}

void
conn_rt_free(struct conn_rt *rt)
{
	conn_rt_clear(rt);
	config_free(&rt->cfg);
	free(rt);
}

struct conn_rt *
conn_rt_new(struct config *cfg, const char **err_out)
{
	struct conn_rt *rt = xcalloc(1, sizeof(*rt));
	struct conn_rt_build b = { .rt = rt };

	atomic_init(&rt->refs, 1);
	rt->cfg = cfg;
	conn_rt_build(&b);
	if (b.errs.len > 0) {
		const char *errs = util_buf_cstr(&b.errs);
		*err_out = util_err("%.*s", (int)strcspn(errs, "\n"), errs);
		util_buf_clear(&b.errs);
		conn_rt_free(rt);
		return NULL;
	}
	return rt;
}

int
conn_rt_check(struct config *cfg, char **errs_out)
{
	struct conn_rt rt = { .cfg = cfg };
	struct conn_rt_build b = { .rt = &rt, .check = true };

	conn_rt_build(&b);
	conn_rt_clear(&rt);
	if (b.errs.len == 0) {
		*errs_out = NULL;
		return 0;
	}
	*errs_out = xstrdup(util_buf_cstr(&b.errs));
	util_buf_clear(&b.errs);
	return -1;
}

bool
conn_rt_has_remote(const struct conn_rt *rt)
{
	for (size_t i = 0; i < rt->cfg->ntables; i++)
		if (table_is_remote(route_table_of(rt->router,
		    &rt->cfg->tables[i])))
			return true;
	return false;
}

struct conn_rt *
conn_rt_ref(struct conn_rt *rt)
{
	atomic_fetch_add(&rt->refs, 1);
	return rt;
}

void
conn_rt_unref(struct conn_rt **rtp)
{
	struct conn_rt *rt = *rtp;

	if (rt == NULL)
		return;
	*rtp = NULL;
	if (atomic_fetch_sub(&rt->refs, 1) != 1)
		return;
	if (rt->reap != NULL)
		rt->reap(rt->reap_arg, rt);
	else
		conn_rt_free(rt);
}

void
conn_rt_set_reaper(struct conn_rt *rt,
    void (*fn)(void *arg, struct conn_rt *rt), void *arg)
{
	rt->reap = fn;
	rt->reap_arg = arg;
}
