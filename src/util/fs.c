/*
 * util/fs.c: what the write paths need to know of the file system below
 * them: whether it journals metadata in order, and writing a file's data
 * out without a journal commit.  deliver/maildir.c and spool/spool.c use
 * them for their one-commit write order.
 */
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

/*
 * Does ext4 on device dev run with a journal?  Its mount options in
 * /proc/fs/ext4/<name>/options carry a "data=" mode only then; <name> comes
 * from /sys/dev/block/MAJ:MIN/uevent.  Unreadable means no (safe).
 */
static bool
util_ext4_journaled(dev_t dev)
{
	char path[128], line[256], name[64] = "";
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/uevent",
	    major(dev), minor(dev));
	if ((f = fopen(path, "re")) == NULL)
		return false;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "DEVNAME=%63[^\n/]", name) == 1)
			break;
	fclose(f);
	if (name[0] == '\0')
		return false;
	snprintf(path, sizeof(path), "/proc/fs/ext4/%s/options", name);
	if ((f = fopen(path, "re")) == NULL)
		return false;
	while (!found && fgets(line, sizeof(line), f) != NULL)
		found = strncmp(line, "data=", 5) == 0;
	fclose(f);
	return found;
}

/*
 * Does the file system holding dirfd journal its metadata in order (XFS,
 * ext4 with a journal)?  Remembered per device for a minute: a delivery
 * should not read /proc each time, and a device can be remounted.
 */
bool
util_fs_ordered(int dirfd, const struct stat *st_in)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	static struct { dev_t dev; time_t until; bool ordered; } cache[8];
	static unsigned next;
	time_t now = time(NULL);
	struct statfs sf;
	struct stat st;
	bool ordered;

	if (st_in != NULL)
		st = *st_in;
	else if (fstat(dirfd, &st) == -1)
		return false;
	pthread_mutex_lock(&mu);
	for (size_t i = 0; i < sizeof(cache) / sizeof(cache[0]); i++)
		if (cache[i].dev == st.st_dev && cache[i].until > now) {
			ordered = cache[i].ordered;
			pthread_mutex_unlock(&mu);
			return ordered;
		}
	pthread_mutex_unlock(&mu);
	if (fstatfs(dirfd, &sf) == -1)
		return false;
	ordered = sf.f_type == 0x58465342 /* XFS */ ||
	    (sf.f_type == 0xEF53 /* ext2/3/4 */ &&
	    util_ext4_journaled(st.st_dev));
	pthread_mutex_lock(&mu);
	cache[next] = (typeof(cache[0])){ st.st_dev, now + 60, ordered };
	next = (next + 1) % (sizeof(cache) / sizeof(cache[0]));
	pthread_mutex_unlock(&mu);
	return ordered;
}

/*
 * The file's data on the device, waited for, without a journal commit:
 * sync_file_range reports a write error as fsync would.  Where it is not
 * supported, fsync (the classic order).
 */
int
util_settle(int fd)
{
	int rc;

	util_pool_block_begin();
	rc = sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE |
	    SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
	util_pool_block_end();
	if (rc == 0)
		return 0;
	if (errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP &&
	    errno != ESPIPE)
		return -1;
	return util_fsync(fd);
}

int
util_fsync(int fd)
{
	int rc;

	util_pool_block_begin();
	rc = fsync(fd);
	util_pool_block_end();
	return rc;
}

int
util_fdatasync(int fd)
{
	int rc;

	util_pool_block_begin();
	rc = fdatasync(fd);
	util_pool_block_end();
	return rc;
}

int
util_write_all(int fd, const void *buf, size_t len, off_t off)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = off == -1 ? write(fd, p, len) :
		    pwrite(fd, p, len, off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;	/* no progress: never loop */
			return -1;
		}
		p += n;
		len -= (size_t)n;
		if (off != -1)
			off += n;
	}
	return 0;
}

ssize_t
util_read_upto(int fd, void *buf, size_t len, off_t off)
{
	char *p = buf;
	size_t got = 0;

	while (got < len) {
		ssize_t n = off == -1 ? read(fd, p + got, len - got) :
		    pread(fd, p + got, len - got, off + (off_t)got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}
