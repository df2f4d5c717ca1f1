/*
 * tls/selfsigned.c: make a key and a self-signed certificate, so a default
 * configuration offers STARTTLS without any set-up.  Writes only the two
 * files it is given.
 */
#include "tls/tls.h"
#include "tls/tls_private.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "util/util.h"

#define TLS_SS_DAYS	3650

/* Add extension nid with an openssl.cnf-style value to x. */
static int
tls_ss_add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	int	 rc;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	if ((ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value)) == NULL)
		return -1;
	rc = X509_add_ext(x, ext, -1) == 1 ? 0 : -1;
	X509_EXTENSION_free(ext);
	return rc;
}

/* A random serial of 159 bits (RFC 5280 4.1.2.2: positive, <= 20 octets). */
static int
tls_ss_serial(X509 *x)
{
	BIGNUM	*bn;
	int	 rc = -1;

	if ((bn = BN_new()) == NULL)
		return -1;
	if (BN_rand(bn, 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1 &&
	    !BN_is_zero(bn) &&
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL)
		rc = 0;
	BN_free(bn);
	return rc;
}

static X509 *
tls_ss_cert(const char *hostname, EVP_PKEY *key)
{
	X509_NAME *name;
	X509	*x;
	char	*san;
	int	 ok;

	if ((x = X509_new()) == NULL)
		return NULL;
	san = xasprintf("DNS:%s", hostname);
	name = X509_get_subject_name(x);
	ok = X509_set_version(x, X509_VERSION_3) == 1 &&
	    tls_ss_serial(x) == 0 &&
	    X509_gmtime_adj(X509_getm_notBefore(x), 0) != NULL &&
	    X509_time_adj_ex(X509_getm_notAfter(x), TLS_SS_DAYS, 0,
	    NULL) != NULL &&
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)hostname, -1, -1, 0) == 1 &&
	    X509_set_issuer_name(x, name) == 1 &&
	    X509_set_pubkey(x, key) == 1 &&
	    tls_ss_add_ext(x, NID_basic_constraints,
	    "critical,CA:FALSE") == 0 &&
	    tls_ss_add_ext(x, NID_key_usage,
	    "critical,digitalSignature") == 0 &&
	    tls_ss_add_ext(x, NID_ext_key_usage, "serverAuth") == 0 &&
	    tls_ss_add_ext(x, NID_subject_key_identifier, "hash") == 0 &&
	    tls_ss_add_ext(x, NID_subject_alt_name, san) == 0 &&
	    X509_sign(x, key, EVP_sha256()) > 0;
	free(san);
	if (!ok) {
		X509_free(x);
		return NULL;
	}
	return x;
}

/*
 * Write one PEM object to path through a temporary file in the same
 * folder: create it with mode, write, fsync, rename.  0 or -1.
 */
static int
tls_ss_write(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert,
    const char **err_out)
{
	char	*tmp;
	FILE	*fp = NULL;
	int	 fd, ok;

	tmp = xasprintf("%s.tmpXXXXXX", path);
	if ((fd = mkstemp(tmp)) == -1) {
		*err_out = util_err("mkstemp(%s): %s", tmp, strerror(errno));
		free(tmp);
		return -1;
	}
	if (fchmod(fd, mode) == -1) {
		*err_out = util_err("fchmod(%s): %s", tmp, strerror(errno));
		goto fail;
	}
	if ((fp = fdopen(fd, "w")) == NULL) {
		*err_out = util_err("fdopen(%s): %s", tmp, strerror(errno));
		goto fail;
	}
	fd = -1;
	ERR_clear_error();
	if (key != NULL)
		ok = PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL);
	else
		ok = PEM_write_X509(fp, cert);
	if (ok != 1) {
		*err_out = tls_err_ssl("write %s", tmp);
		goto fail;
	}
	if (fflush(fp) == EOF || util_fsync(fileno(fp)) == -1) {
		*err_out = util_err("write(%s): %s", tmp, strerror(errno));
		goto fail;
	}
	if (fclose(fp) == EOF) {
		fp = NULL;
		*err_out = util_err("close(%s): %s", tmp, strerror(errno));
		goto fail;
	}
	fp = NULL;
	if (rename(tmp, path) == -1) {
		*err_out = util_err("rename(%s, %s): %s", tmp, path,
		    strerror(errno));
		goto fail;
	}
	free(tmp);
	return 0;
fail:
	if (fp != NULL)
		fclose(fp);
	if (fd != -1)
		close(fd);
	unlink(tmp);
	free(tmp);
	return -1;
}

static int
tls_ss_fsync_parent(const char *path, const char **err_out)
{
	char	*copy = xstrdup(path);
	char	*dir = dirname(copy);
	int	 rc = 0;

	if (util_fsync_dir(dir) == -1) {
		*err_out = util_err("fsync(%s): %s", dir, strerror(errno));
		rc = -1;
	}
	free(copy);
	return rc;
}

int
tls_selfsigned_make(const char *hostname, const char *cert_path,
    const char *key_path, const char **err_out)
{
	EVP_PKEY *key;
	X509	*cert = NULL;
	int	 rc = -1;

	if (hostname == NULL || *hostname == '\0' || strlen(hostname) > 253 ||
	    strpbrk(hostname, " ,:\t\r\n") != NULL) {
		*err_out = util_err("bad hostname for a certificate");
		return -1;
	}
	ERR_clear_error();
	if ((key = EVP_EC_gen("P-256")) == NULL) {
		*err_out = tls_err_ssl("EC key generation");
		return -1;
	}
	if ((cert = tls_ss_cert(hostname, key)) == NULL) {
		*err_out = tls_err_ssl("certificate for %s", hostname);
		goto done;
	}
	/*
	 * Key first: a crash between the renames leaves a new key with an
	 * old certificate, which tls_server_new() refuses (key mismatch)
	 * instead of serving something odd.
	 */
	if (tls_ss_write(key_path, 0600, key, NULL, err_out) == -1 ||
	    tls_ss_write(cert_path, 0644, NULL, cert, err_out) == -1 ||
	    tls_ss_fsync_parent(key_path, err_out) == -1 ||
	    tls_ss_fsync_parent(cert_path, err_out) == -1)
		goto done;
	rc = 0;
done:
	X509_free(cert);
	EVP_PKEY_free(key);
	return rc;
}
