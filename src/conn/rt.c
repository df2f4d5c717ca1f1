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

static struct tls_server *
conn_rt_tls(const struct config *cfg, const struct config_tls_cert *certs,
    size_t ncerts, const struct tls_cert_spec *extra, const char **err_out)
{
	struct tls_cert_spec *specs = xcalloc(ncerts + 2, sizeof(*specs));
	struct tls_server_opts o = {
		.certs = specs,
		.min_version = cfg->tls_min_version,
		.ciphers = cfg->tls_ciphers,
		.ciphersuites = cfg->tls_ciphersuites,
		.session_lifetime_s = cfg->tls_session_lifetime_s,
	};
	struct tls_server *t;

	for (size_t i = 0; i < ncerts; i++) {
		specs[o.ncerts].cert_path = certs[i].cert;
		specs[o.ncerts].key_path = certs[i].key;
		specs[o.ncerts++].name = certs[i].name;
	}
	if (extra != NULL)
		specs[o.ncerts++] = *extra;
	t = tls_server_new(&o, err_out);
	free(specs);
	return t;
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

static int
conn_rt_build_tls(struct conn_rt *rt, const char **err_out)
{
	const struct config *cfg = rt->cfg;
	struct tls_cert_spec self = { 0 };
	char *cert = NULL, *key = NULL;
	int rc = -1;

	rt->tls_listen = xcalloc(cfg->nlistens + 1, sizeof(*rt->tls_listen));
	if (cfg->tls_selfsigned_dir != NULL) {
		if (conn_rt_selfsigned(cfg, &cert, &key, err_out) == -1)
			goto out;
		self.cert_path = cert;
		self.key_path = key;
	}
	if (config_has_tls(cfg) && (rt->tls = conn_rt_tls(cfg, cfg->tls_certs,
	    cfg->ntls_certs, cert != NULL ? &self : NULL, err_out)) == NULL)
		goto out;
	for (size_t i = 0; i < cfg->nlistens; i++) {
		const struct config_listen *l = &cfg->listens[i];
		rt->tls_listen[i] = rt->tls;
		if (l->ncerts > 0 && (rt->tls_listen[i] = conn_rt_tls(cfg,
		    l->certs, l->ncerts, NULL, err_out)) == NULL)
			goto out;
	}
	rc = 0;
out:
	free(cert);
	free(key);
	return rc;
}

/* The runtime of every action whose kind needs one (tables opened now). */
static int
conn_rt_build_actions(struct conn_rt *rt, const char **err_out)
{
	const struct config *cfg = rt->cfg;

	rt->runtimes = xcalloc(cfg->nactions + 1, sizeof(*rt->runtimes));
	for (size_t i = 0; i < cfg->nactions; i++) {
		const struct deliver_kind *k =
		    deliver_kind_of(cfg->actions[i].kind);
		if (k == NULL || k->open == NULL)
			continue;
		rt->runtimes[i] = k->open(cfg, &cfg->actions[i], err_out);
		if (rt->runtimes[i] == NULL)
			return -1;
	}
	return 0;
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

/* The handler chains; their errors (FILE:LINE each) become one message. */
static struct chain_set *
conn_rt_chains(const struct config *cfg, const char **err_out)
{
	char *errs = NULL;
	struct chain_set *set = chain_set_new(cfg, &errs);

	if (set == NULL) {
		size_t n = errs != NULL ? strcspn(errs, "\n") : 0;
		*err_out = util_err("%.*s", (int)n,
		    errs != NULL ? errs : "handler chains");
	}
	free(errs);
	return set;
}

void
conn_rt_free(struct conn_rt *rt)
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
	config_free(&rt->cfg);
	free(rt);
}

struct conn_rt *
conn_rt_new(struct config *cfg, const char **err_out)
{
	struct conn_rt *rt = xcalloc(1, sizeof(*rt));

	atomic_init(&rt->refs, 1);
	rt->cfg = cfg;
	if ((rt->chains = conn_rt_chains(cfg, err_out)) == NULL ||
	    (rt->router = route_new(cfg, err_out)) == NULL ||
	    conn_rt_build_tls(rt, err_out) == -1 ||
	    conn_rt_build_actions(rt, err_out) == -1 ||
	    (cfg->nupstreams > 0 && (rt->proxies = proxy_set_new(cfg,
	    err_out)) == NULL)) {
		conn_rt_free(rt);
		return NULL;
	}
	return rt;
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
