/*
 * deliver/maildir_write.c: the bytes of a Maildir copy: its Return-Path
 * line, then the message's content, from memory in one writev(2) or
 * copied from the spool file, never whole in memory.  Knows nothing of
 * names, directories or syncs (maildir.c).
 */
#include "deliver/deliver.h"
#include "deliver/deliver_private.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util/util.h"

/* hdr, then body: one writev(2) unless the file system takes less. */
static int
md_write2(int fd, const char *hdr, size_t hlen, const char *body,
    size_t blen)
{
	struct iovec iov[2] = { { (void *)hdr, hlen }, { (void *)body, blen } };
	ssize_t n;

	do
		n = writev(fd, iov, 2);
	while (n == -1 && errno == EINTR);
	if (n == -1)
		return -1;
	if ((size_t)n < hlen)
		return util_write_all(fd, hdr + n, hlen - (size_t)n, -1) == -1 ?
		    -1 : util_write_all(fd, body, blen, -1);
	n -= (ssize_t)hlen;
	return util_write_all(fd, body + n, blen - (size_t)n, -1);
}

/* Copy in to out from their current offsets; never the whole in memory. */
static int
md_copy(int in, int out)
{
	char buf[65536];
	ssize_t n;

	for (;;) {
		n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
		if (n == 0)
			return 0;
		if (n > 0)
			continue;
		if (errno == EINTR)
			continue;
		if (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
		    errno == EOPNOTSUPP || errno == EBADF)
			break;		/* fall back to read/write */
		return -1;
	}
	for (;;) {
		n = read(in, buf, sizeof(buf));
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		if (n == 0)
			return 0;
		if (util_write_all(out, buf, (size_t)n, -1) == -1)
			return -1;
	}
}

int
deliver_md_write_content(int out, const char *hdr, const struct deliver_msg *m,
    int in)
{
	if (m->content != NULL)
		return md_write2(out, hdr, strlen(hdr), m->content,
		    m->content_len);
	if (util_write_all(out, hdr, strlen(hdr), -1) == -1)
		return -1;
	return md_copy(in, out);
}

char *
deliver_maildir_hdr(const struct deliver_msg *m)
{
	const char *rp = m->return_path != NULL ? m->return_path : "";
	size_t hdrsz = strlen(rp) + 17;		/* "Return-Path: <" ">\n" NUL */
	char *hdr = xmalloc(hdrsz);

	util_strjoin(hdr, hdrsz, "Return-Path: <", rp, ">\n", NULL);

	/*
	 * smtp/ never accepts such a sender, but the envelope is a file: a
	 * control byte here must not start a header of its own.
	 */
	for (char *p = hdr + 14; p[1] != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return hdr;
}
