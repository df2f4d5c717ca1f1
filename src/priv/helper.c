/*
 * priv/helper.c: the privileged side.  The keeper only forks the helper,
 * hands its socket to postern and forks it again when it dies.  The helper
 * reads bounded requests and runs each in a child: PAM as root, a
 * delivery after dropping to the mailbox's owner (one the configuration
 * allows, into folders nobody else owns), or opening one of the
 * files named at start (the TLS keys and certificates a reload reads
 * again) for postern to read.  A child that crashes or
 * overruns PRIV_TIMEOUT_MS is killed and its request answered -1.  Both
 * processes close every other descriptor and die with their parent.
 */
#include "priv/priv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <linux/capability.h>
#include <security/pam_appl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "deliver/deliver.h"
#include "log/log.h"
#include "priv/priv_private.h"
#include "util/util.h"

struct priv_child {
	pid_t		pid;		/* 0: free slot */
	uint32_t	id;
	uint64_t	deadline_ms;
};

static struct priv_child priv_children[PRIV_CHILDREN_MAX];

/* Keep fds 0-2 and keep; close the rest. */
static void
priv_close_fds(int keep1, int keep2)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int dfd = d != NULL ? dirfd(d) : -1;

	if (d == NULL) {
		for (int fd = 3; fd < 1024; fd++)
			if (fd != keep1 && fd != keep2)
				close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		int fd = atoi(de->d_name);
		if (fd > 2 && fd != dfd && fd != keep1 && fd != keep2)
			close(fd);
	}
	closedir(d);
}

/*
 * What the helper needs of root: become a mailbox's owner (setuid,
 * setgid, its groups), kill a child that did and overran, read what PAM
 * reads and the TLS files, and let PAM write its audit records.  Every other capability
 * goes, from the bounding set too, and nothing run later gains any.
 */
#define PRIV_CAPS	((1ULL << CAP_SETUID) | (1ULL << CAP_SETGID) | \
			 (1ULL << CAP_KILL) | (1ULL << CAP_DAC_READ_SEARCH) | \
			 (1ULL << CAP_AUDIT_WRITE))

static void
priv_drop_caps(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	uint64_t have, keep;

	if (geteuid() != 0)
		return;		/* nothing to drop: PAM and owners will fail */
	/* Of those, what we have: a service manager's bounding set may have
	 * taken some already, and capset() cannot add them back. */
	memset(d, 0, sizeof(d));
	if (syscall(SYS_capget, &h, d) == -1)
		_exit(1);
	have = (uint64_t)d[1].permitted << 32 | d[0].permitted;
	keep = PRIV_CAPS & have;
	/* Without CAP_SETPCAP (a bounding set that took it) the bounding set
	 * stays: no_new_privs keeps an exec from gaining what capset()
	 * leaves out. */
	for (int c = 0; c <= 63; c++)
		if ((PRIV_CAPS & (1ULL << c)) == 0 &&
		    (have & (1ULL << CAP_SETPCAP)) != 0 &&
		    prctl(PR_CAPBSET_READ, c) == 1 &&
		    prctl(PR_CAPBSET_DROP, c) == -1)
			_exit(1);
	memset(d, 0, sizeof(d));
	d[0].effective = d[0].permitted = (uint32_t)keep;
	d[1].effective = d[1].permitted = (uint32_t)(keep >> 32);
	if (syscall(SYS_capset, &h, d) == -1 ||
	    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		_exit(1);
}

/* Die with the parent; no core dumps of passwords; only the caps needed. */
static void
priv_harden(void)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	prctl(PR_SET_DUMPABLE, 0);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	if (chdir("/") == -1)
		_exit(1);
	clearenv();
	priv_drop_caps();
}

/* One answer datagram: header, optional text, optional descriptor. */
static void
priv_answer_fd(int sock, uint32_t id, int32_t rc, const char *text, int fd)
{
	char buf[1024], cbuf[CMSG_SPACE(sizeof(int))];
	struct priv_hdr h = { .id = id, .rc = rc, .nstr = text != NULL };
	struct iovec iov = { buf, sizeof(h) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	memcpy(buf, &h, sizeof(h));
	if (text != NULL) {
		size_t tl = strnlen(text, sizeof(buf) - iov.iov_len - 1);
		memcpy(buf + iov.iov_len, text, tl);
		buf[iov.iov_len + tl] = '\0';
		iov.iov_len += tl + 1;
	}
	if (fd != -1)
		priv_attach_fd(&mh, cbuf, fd);
	(void)sendmsg(sock, &mh, MSG_NOSIGNAL);
}

static void
priv_answer(int sock, uint32_t id, int32_t rc, const char *text)
{
	priv_answer_fd(sock, id, rc, text, -1);
}

/* ----- files named at start ----- */

/*
 * Only root can have put each step of path where it is: the folder that
 * holds it belongs to root and nobody else may write to it, or it is a
 * sticky one (/tmp) and the step is root's.  0, or -1 with *why.
 */
static int
priv_root_steps(const char *path, const char **why)
{
	char step[PATH_MAX];
	struct stat dir, st;
	size_t n = strlen(path);

	if (path[0] != '/' || n >= sizeof(step)) {
		*why = "not an absolute path";
		return -1;
	}
	if (stat("/", &dir) == -1) {
		*why = strerror(errno);
		return -1;
	}
	for (size_t i = 1; i <= n; i++) {
		if (path[i] != '/' && path[i] != '\0')
			continue;
		memcpy(step, path, i);
		step[i] = '\0';
		if (lstat(step, &st) == -1) {
			*why = strerror(errno);
			return -1;
		}
		if (dir.st_uid != 0 || ((dir.st_mode & (S_IWGRP | S_IWOTH)) !=
		    0 && ((dir.st_mode & S_ISVTX) == 0 || st.st_uid != 0))) {
			*why = "a folder on its way may be written by others "
			    "than root";
			return -1;
		}
		if (i < n && stat(step, &dir) == -1) {	/* through a link */
			*why = strerror(errno);
			return -1;
		}
	}
	return 0;
}

/*
 * In a child: open path if it is one of files and nobody but root can
 * have put it (or a link in it) there: the path as named and as resolved.
 * 0 with *fd_out, or -1.
 */
static int
priv_open_child(const char *path, char **files, int *fd_out,
    const char **why)
{
	char real[PATH_MAX];
	char **f = files;

	while (f != NULL && *f != NULL && strcmp(*f, path) != 0)
		f++;
	if (f == NULL || *f == NULL) {
		*why = "not a file named at start-up";
		return -1;
	}
	if (realpath(path, real) == NULL) {
		*why = strerror(errno);
		return -1;
	}
	if (priv_root_steps(path, why) == -1 ||
	    priv_root_steps(real, why) == -1)
		return -1;
	if ((*fd_out = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		*why = strerror(errno);
		return -1;
	}
	return 0;
}

/* ----- PAM ----- */

struct priv_pam_data {
	const char	*user;
	const char	*pass;
};

static int
priv_pam_conv(int n, const struct pam_message **msg,
    struct pam_response **resp, void *appdata)
{
	struct priv_pam_data *d = appdata;
	struct pam_response *r;

	if (n <= 0 || n > 32 || (r = calloc((size_t)n, sizeof(*r))) == NULL)
		return PAM_CONV_ERR;
	for (int i = 0; i < n; i++) {
		switch (msg[i]->msg_style) {
		case PAM_PROMPT_ECHO_OFF:
			r[i].resp = strdup(d->pass);
			break;
		case PAM_PROMPT_ECHO_ON:
			r[i].resp = strdup(d->user);
			break;
		default:
			break;		/* informational text: ignored */
		}
	}
	*resp = r;
	return PAM_SUCCESS;
}

/* In a child: 1 valid, 0 refused, -1 PAM itself failed. */
static int
priv_pam(const char *service, const char *user, const char *pass)
{
	struct priv_pam_data d = { user, pass };
	struct pam_conv conv = { priv_pam_conv, &d };
	pam_handle_t *h = NULL;
	int rc;

	if (pam_start(service, user, &conv, &h) != PAM_SUCCESS)
		return -1;
	rc = pam_authenticate(h, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
	if (rc == PAM_SUCCESS)
		rc = pam_acct_mgmt(h, PAM_SILENT);
	pam_end(h, rc);
	switch (rc) {
	case PAM_SUCCESS:
		return 1;
	case PAM_AUTHINFO_UNAVAIL:
	case PAM_SYSTEM_ERR:
	case PAM_BUF_ERR:
	case PAM_ABORT:
	case PAM_SERVICE_ERR:
	case PAM_CONV_ERR:
		return -1;
	default:
		return 0;	/* wrong password, unknown user, expired ... */
	}
}

/* ----- delivery as the owner ----- */

/*
 * Ordinary accounts, for owners taken from a table: UID_MIN..UID_MAX of
 * /etc/login.defs (1000..60000 where it says nothing), as useradd counts
 * them.  Read as root by the keeper at start.
 */
static void
priv_read_login_defs(struct priv_allow *a)
{
	char line[256], key[64];
	unsigned long v;
	FILE *f;

	a->uid_min = 1000;
	a->uid_max = 60000;
	if ((f = fopen("/etc/login.defs", "re")) == NULL)
		return;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, " %63s %lu", key, &v) != 2)
			continue;
		if (strcmp(key, "UID_MIN") == 0 && v > 0 && v <= UINT_MAX)
			a->uid_min = (uid_t)v;
		else if (strcmp(key, "UID_MAX") == 0 && v <= UINT_MAX)
			a->uid_max = (uid_t)v;
	}
	fclose(f);
}

/* Is pw one of the owners "as USER" names? */
static bool
priv_owner_named(const struct priv_allow *a, const struct passwd *pw)
{
	for (char **o = a->owners; o != NULL && *o != NULL; o++)
		if (strcmp(*o, pw->pw_name) == 0)
			return true;
	return false;
}

/* Does the configuration let pw own Maildirs: an "as USER" names it, or
 * an "as <TABLE>" exists and pw is an ordinary account? */
static bool
priv_owner_allowed(const struct priv_allow *a, const struct passwd *pw)
{
	return priv_owner_named(a, pw) || (a->owner_table &&
	    pw->pw_uid >= a->uid_min && pw->pw_uid <= a->uid_max);
}

/*
 * Could template (an "as" action's path) give folder for pw?  Each %{..}
 * stands for one folder name that does not start with a dot (route/
 * writes a value's leading '.' as '_'), "~" at its start for pw's home.
 */
static bool
priv_template_gives(const char *tmpl, const char *folder,
    const struct passwd *pw)
{
	struct util_buf b = { 0 };
	bool yes;

	if (tmpl[0] == '~') {
		util_buf_addstr(&b, pw->pw_dir);
		tmpl++;
	}
	for (const char *s = tmpl; *s != '\0'; s++) {
		const char *end = s[0] == '%' && s[1] == '{' ? strchr(s, '}') :
		    NULL;
		if (end != NULL) {
			util_buf_add(&b, "*", 1);
			s = end;
			continue;
		}
		if (s[0] == '%' && s[1] == '%')
			s++;
		if (strchr("*?[\\", *s) != NULL)
			util_buf_add(&b, "\\", 1);
		util_buf_add(&b, s, 1);
	}
	yes = fnmatch(util_buf_cstr(&b), folder, FNM_PATHNAME | FNM_PERIOD) ==
	    0;
	util_buf_clear(&b);
	return yes;
}

/*
 * Dot folders (~/.ssh, ~/.config) are not Maildirs: below the root, a
 * folder name starting with '.' is allowed only last and not first (a
 * Maildir++ folder such as Maildir/.Sent), or where a template of the
 * configuration spells it (~/.maildir).
 */
static bool
priv_dots_allowed(const struct priv_allow *a, const char *folder,
    size_t root_len, const struct passwd *pw)
{
	const char *p = folder + root_len;
	bool first = true, ok = true;

	for (; *p == '/'; first = false) {
		const char *name = p + 1;
		p = strchrnul(name, '/');
		if (name[0] == '.' && (first || *p != '\0'))
			ok = false;
	}
	for (char **t = a->templates; !ok && t != NULL && *t != NULL; t++)
		ok = priv_template_gives(*t, folder, pw);
	return ok;
}

/* Is path inside root ("/var/mail" holds "/var/mail/x", not "/var/mailx")? */
static bool
priv_under(const char *path, const char *root)
{
	size_t n = strlen(root);

	while (n > 1 && root[n - 1] == '/')
		n--;
	return strncmp(path, root, n) == 0 && (path[n] == '/' ||
	    path[n] == '\0');
}

static bool
priv_shared_mode(mode_t mode)
{
	return (mode & (S_ISVTX | S_IWOTH)) == (S_ISVTX | S_IWOTH);
}

/*
 * As root, under a maildir-root: make the folders missing on the way to
 * the Maildir inside folders of root's that everyone may write to and
 * that are sticky (1777): root's, with that mode, so a folder several
 * owners share (%{rcpt.domain}) is none of theirs.  Stops at a folder of
 * someone else's and at one named as the owner: that and the Maildir are
 * the owner's to make.  Through descriptors, never following a symlink.
 * Failures are left to the owner's check, which names the folder.
 */
static void
priv_make_shared(const char *folder, size_t root_len, const char *owner)
{
	char root[PATH_MAX], name[NAME_MAX + 1];
	const char *p = folder + root_len;
	struct stat st;
	int dfd;

	if (root_len >= sizeof(root))
		return;
	memcpy(root, folder, root_len);
	root[root_len] = '\0';
	if ((dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return;
	umask(0);
	while (*p == '/') {
		const char *end = strchrnul(p + 1, '/');
		size_t n = (size_t)(end - p - 1);
		if (*end == '\0' || n == 0 || n >= sizeof(name) ||
		    fstat(dfd, &st) == -1 || st.st_uid != 0 ||
		    !priv_shared_mode(st.st_mode))
			break;
		memcpy(name, p + 1, n);
		name[n] = '\0';
		if (strcmp(name, owner) == 0)
			break;
		int nfd = openat(dfd, name, O_RDONLY | O_DIRECTORY |
		    O_NOFOLLOW | O_CLOEXEC);
		if (nfd == -1 && errno == ENOENT &&
		    (mkdirat(dfd, name, 01777) == 0 || errno == EEXIST))
			nfd = openat(dfd, name, O_RDONLY | O_DIRECTORY |
			    O_NOFOLLOW | O_CLOEXEC);
		if (nfd == -1)
			break;
		close(dfd);
		dfd = nfd;
		p = end;
	}
	close(dfd);
}

/*
 * A folder path with nothing in it that names another (no "//", no "."
 * or ".." component): the checks below read each name as it is.
 */
static bool
priv_path_plain(const char *folder)
{
	size_t len = strlen(folder);

	return strstr(folder, "//") == NULL && strstr(folder, "/./") == NULL &&
	    strstr(folder, "/../") == NULL &&
	    !(len >= 2 && strcmp(folder + len - 2, "/.") == 0) &&
	    !(len >= 3 && strcmp(folder + len - 3, "/..") == 0);
}

/*
 * May the owner (uid) deliver through the folder at path?  The Maildir
 * and its tmp/ new/ cur/ (mine) must be the owner's, and no one else may
 * write to them; a folder above may be root's too, and may be written by
 * others only when sticky.  0, or -1 with *why naming the folder.
 */
static int
priv_check_folder(const char *path, const struct stat *st, uid_t uid,
    bool mine, const char **why)
{
	if (S_ISLNK(st->st_mode)) {
		*why = util_err("%s: a symlink in the path", path);
		return -1;
	}
	if (!S_ISDIR(st->st_mode)) {
		*why = util_err("%s: not a folder", path);
		return -1;
	}
	if (st->st_uid != uid && (mine || st->st_uid != 0)) {
		struct passwd *pw = getpwuid(st->st_uid);
		char num[UTIL_DEC_MAX];
		*why = util_err("%s belongs to %s, not to the owner%s", path,
		    pw != NULL ? pw->pw_name : util_i64_dec(num, st->st_uid),
		    mine ? "" : " or root");
		return -1;
	}
	if ((st->st_mode & (S_IWGRP | S_IWOTH)) != 0 &&
	    (mine || (st->st_mode & S_ISVTX) == 0)) {
		*why = util_err("%s may be written by others than its owner "
		    "(mode %04o)", path, (unsigned)(st->st_mode & 07777));
		return -1;
	}
	return 0;
}

/* One folder of priv_check_path: 0 passes, 1 missing, -1 refused. */
static int
priv_check_one(const char *path, uid_t uid, bool mine, const char **why)
{
	struct stat st;

	if (lstat(path, &st) == -1) {
		if (errno == ENOENT)
			return 1;	/* made by the delivery */
		*why = util_err("lstat(%s): %s", path, strerror(errno));
		return -1;
	}
	return priv_check_folder(path, &st, uid, mine, why);
}

/*
 * As the owner now: every folder below the root down to the Maildir, and
 * its tmp/ new/ cur/, that exists passes priv_check_folder (no symlink
 * either), so nobody else can have put the owner's mail where they may
 * read or move it.  0 when the folders down to the Maildir exist (a
 * missing tmp/ new/ cur/ is made inside it by the delivery), 1 when some
 * are still to make, -1 with *why naming the folder.
 */
static int
priv_check_path(const char *folder, size_t root_len, uid_t uid,
    const char **why)
{
	static const char *const subs[] = { "tmp", "new", "cur" };
	char path[PATH_MAX];
	size_t len = strlen(folder);
	int rc;

	if (len + 5 >= sizeof(path)) {
		*why = "path too long";
		return -1;
	}
	for (size_t i = root_len + 1; i < len; i++) {
		if (folder[i] != '/')
			continue;
		memcpy(path, folder, i);
		path[i] = '\0';
		if ((rc = priv_check_one(path, uid, false, why)) != 0)
			return rc;
	}
	if ((rc = priv_check_one(folder, uid, true, why)) != 0)
		return rc;
	/* One missing is made inside the owner's Maildir: check the others. */
	for (size_t k = 0; k < 3 && rc != -1; k++) {
		util_snprintf(path, sizeof(path), "%s/%s", folder, subs[k]);
		if (priv_check_one(path, uid, true, why) == -1)
			rc = -1;
	}
	return rc;
}

/* Log a delivery the helper refuses, in the helper: postern may not. */
static int
priv_refuse(const char *owner, const char *folder, const char *why)
{
	char o[128], f[PATH_MAX], w[PATH_MAX];

	log_msg(LOG_LVL_WARN, "privileged helper refused a delivery "
	    "owner=\"%s\" folder=\"%s\" why=\"%s\"",
	    log_safe_into(o, sizeof(o), owner, strlen(owner)),
	    log_safe_into(f, sizeof(f), folder, strlen(folder)),
	    log_safe_into(w, sizeof(w), why, strlen(why)));
	return DELIVER_TEMPFAIL;
}

/* In a child: check owner and folder, become the owner, deliver. */
static int
priv_deliver_child(char **s, int fd, const struct priv_allow *a,
    const char **why)
{
	struct passwd *pw = getpwnam(s[0]);
	const char *root = NULL;
	char folder[PATH_MAX];
	size_t root_len;
	int rc;

	if (pw == NULL || pw->pw_uid == 0) {
		*why = "no such user (or root)";
		return priv_refuse(s[0], s[1], *why);
	}
	if (!priv_owner_allowed(a, pw)) {
		*why = util_err("%s is not an owner the configuration allows",
		    pw->pw_name);
		return priv_refuse(s[0], s[1], *why);
	}
	if (s[1][0] == '~') {
		if (util_snprintf(folder, sizeof(folder), "%s%s", pw->pw_dir,
		    s[1] + 1) == -1) {
			*why = "path too long";
			return DELIVER_PERMFAIL;
		}
	} else if (util_strlcpy(folder, s[1], sizeof(folder)) == -1) {
		*why = "path too long";
		return DELIVER_PERMFAIL;
	}
	if (folder[0] != '/') {
		*why = "not an absolute path";
		return priv_refuse(s[0], s[1], *why);
	}
	if (!priv_path_plain(folder)) {
		*why = "path has an empty, . or .. folder name in it";
		return priv_refuse(s[0], s[1], *why);
	}
	if (priv_under(folder, pw->pw_dir) && strcmp(pw->pw_dir, "/") != 0)
		root = pw->pw_dir;
	for (char **r = a->roots; root == NULL && r != NULL && *r != NULL; r++)
		if (priv_under(folder, *r))
			root = *r;
	if (root == NULL) {
		*why = "the folder is outside the owner's home and every "
		    "maildir-root";
		return priv_refuse(s[0], s[1], *why);
	}
	root_len = strlen(root);
	while (root_len > 1 && root[root_len - 1] == '/')
		root_len--;
	if (!priv_dots_allowed(a, folder, root_len, pw)) {
		*why = "a dot folder (like ~/.ssh) that is no Maildir++ folder "
		    "and no template of the configuration gives";
		return priv_refuse(s[0], s[1], *why);
	}
	/* Shared folders are for owners a table names, never for a named
	 * one, who makes every folder of their own. */
	if (root != pw->pw_dir && !priv_owner_named(a, pw))
		priv_make_shared(folder, root_len, pw->pw_name);
	if (initgroups(pw->pw_name, pw->pw_gid) == -1 ||
	    setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) == -1 ||
	    setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) == -1 ||
	    setuid(0) != -1) {
		*why = "cannot become the owner";
		return DELIVER_TEMPFAIL;
	}
	umask(077);
	/* Made now, then checked again: a folder someone else slipped in
	 * meanwhile is found before anything is written into it. */
	if ((rc = priv_check_path(folder, root_len, pw->pw_uid, why)) == 1) {
		if (util_mkdirs(folder, 0700) == -1) {
			*why = util_err("mkdir(%s): %s", folder,
			    strerror(errno));
			return DELIVER_TEMPFAIL;
		}
		rc = priv_check_path(folder, root_len, pw->pw_uid, why);
	}
	if (rc == -1)
		return DELIVER_TEMPFAIL;
	struct deliver_msg m = {
		.content_fd = fd, .return_path = s[2], .qid = s[3],
		.hostname = s[4], .rcpt_idx = (size_t)strtoul(s[5], NULL, 10),
		.received = strtoll(s[6], NULL, 10), .fresh = s[7][0] == '1',
	};
	enum deliver_result r = deliver_maildir(folder, &m, why);
	/* The server's tmp/ sweep can neither see nor read this Maildir. */
	deliver_maildir_sweep_now(folder);
	return r;
}

/* ----- the helper's loop ----- */

/* Split the strings after the header; NULL-terminated pointers into buf. */
static int
priv_strings(char *buf, size_t len, uint32_t want, char **out)
{
	size_t off = sizeof(struct priv_hdr);

	for (uint32_t i = 0; i < want; i++) {
		char *end = off < len ? memchr(buf + off, '\0', len - off) :
		    NULL;
		if (end == NULL)
			return -1;
		out[i] = buf + off;
		off = (size_t)(end - buf) + 1;
	}
	out[want] = NULL;
	return off == len ? 0 : -1;
}

/* One request in a child; the parent tracks it. */
static void
priv_spawn(int sock, const struct priv_hdr *h, char **s, int fd,
    const struct priv_allow *a)
{
	size_t slot;
	pid_t pid;

	for (slot = 0; slot < PRIV_CHILDREN_MAX; slot++)
		if (priv_children[slot].pid == 0)
			break;
	if (slot == PRIV_CHILDREN_MAX) {
		priv_answer(sock, h->id, -1, "helper busy");
		return;
	}
	if ((pid = fork()) == -1) {
		priv_answer(sock, h->id, -1, "fork failed");
		return;
	}
	if (pid == 0) {
		const char *why = NULL;
		int rc, opened = -1;
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (h->type == PRIV_AUTH) {
			rc = priv_pam(s[0], s[1], s[2]);
			explicit_bzero(s[2], strlen(s[2]));
		} else if (h->type == PRIV_OPEN)
			rc = priv_open_child(s[0], a->files, &opened, &why);
		else
			rc = priv_deliver_child(s, fd, a, &why);
		priv_answer_fd(sock, h->id, rc, why, opened);
		_exit(0);
	}
	priv_children[slot].pid = pid;
	priv_children[slot].id = h->id;
	priv_children[slot].deadline_ms = util_now_ms() + PRIV_TIMEOUT_MS;
}

/* Read one request (and its descriptor); -1 when postern is gone. */
static int
priv_read_one(int sock, const struct priv_allow *a)
{
	char buf[PRIV_MSG_MAX + 1], cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { buf, sizeof(buf) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
	    .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	char *s[10];
	struct priv_hdr h;
	int fd = -1;
	ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);

	if (n == 0 || (n == -1 && errno != EINTR && errno != EAGAIN))
		return -1;
	if (n == -1)
		return 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL;
	    c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(&fd, CMSG_DATA(c), sizeof(fd));
	memset(&h, 0, sizeof(h));
	if ((size_t)n >= sizeof(h))
		memcpy(&h, buf, sizeof(h));
	if ((size_t)n < sizeof(h) || (size_t)n > PRIV_MSG_MAX ||
	    (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0)
		goto bad;
	if (!((h.type == PRIV_AUTH && h.nstr == 3) ||
	    (h.type == PRIV_DELIVER && h.nstr == 8 && fd != -1) ||
	    (h.type == PRIV_OPEN && h.nstr == 1 && fd == -1)) ||
	    priv_strings(buf, (size_t)n, h.nstr, s) == -1)
		goto bad;
	priv_spawn(sock, &h, s, fd, a);
	explicit_bzero(buf, sizeof(buf));
	if (fd != -1)
		close(fd);
	return 0;
bad:
	explicit_bzero(buf, sizeof(buf));
	if (fd != -1)
		close(fd);
	if ((size_t)n >= sizeof(h))
		priv_answer(sock, h.id, -1, "malformed request");
	return 0;
}

/* Children that ended or overran: answer for those that could not. */
static void
priv_reap(int sock)
{
	uint64_t now = util_now_ms();
	int status;

	for (size_t i = 0; i < PRIV_CHILDREN_MAX; i++) {
		struct priv_child *c = &priv_children[i];
		if (c->pid == 0)
			continue;
		pid_t r;
		while ((r = waitpid(c->pid, &status, WNOHANG)) == -1 &&
		    errno == EINTR)
			;
		if (r == 0 && now < c->deadline_ms)
			continue;
		if (r == -1) {
			/*
			 * Its status is unknown: a failure, never a success.
			 * An answer it already sent settled the request, and
			 * postern drops this one.
			 */
			priv_answer(sock, c->id, -1, "helper child lost");
		} else if (r == 0) {
			kill(c->pid, SIGKILL);
			waitpid(c->pid, &status, 0);
			priv_answer(sock, c->id, -1, "helper timed out");
		} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			priv_answer(sock, c->id, -1, "helper died");
		c->pid = 0;
	}
}

static void __attribute__((noreturn))
priv_helper_main(int sock, const struct priv_allow *a)
{
	struct pollfd pfd = { .fd = sock, .events = POLLIN };

	for (;;) {
		int n = poll(&pfd, 1, 50);
		if (n > 0 && priv_read_one(sock, a) == -1)
			_exit(0);
		priv_reap(sock);
	}
}

void
priv_keeper_main(int ctl, struct priv_allow *a)
{
	priv_read_login_defs(a);
	priv_harden();
	priv_close_fds(ctl, -1);
	for (;;) {
		int sp[2];
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0,
		    sp) == -1)
			_exit(1);
		pid_t pid = fork();
		if (pid == 0) {
			close(sp[0]);
			close(ctl);
			priv_harden();
			priv_helper_main(sp[1], a);
		}
		close(sp[1]);
		if (pid == -1) {
			close(sp[0]);
			sleep(1);
			continue;
		}
		char c = 'h', cbuf[CMSG_SPACE(sizeof(int))];
		struct iovec iov = { &c, 1 };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		priv_attach_fd(&mh, cbuf, sp[0]);
		if (sendmsg(ctl, &mh, MSG_NOSIGNAL) == -1)
			_exit(0);	/* postern is gone */
		close(sp[0]);
		while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
			;
		usleep(100 * 1000);	/* no busy loop if it dies at once */
	}
}
