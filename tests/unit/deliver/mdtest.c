/* tests/unit/deliver/mdtest.c: see mdtest.h. */
#include "mdtest.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <cmocka.h>

#include "util/util.h"

char *
mdtest_dir_new(const char *prefix)
{
	char *tmpl = xasprintf("/tmp/%s.XXXXXX", prefix);

	assert_non_null(mkdtemp(tmpl));
	return tmpl;
}

void
mdtest_dir_free(char **dirp)
{
	char *cmd = xasprintf("rm -rf '%s'", *dirp);

	assert_int_equal(system(cmd), 0);
	free(cmd);
	free(*dirp);
	*dirp = NULL;
}

int
mdtest_count_files(const char *dir, const char *sub)
{
	char *cmd = xasprintf("find '%s/%s/' -type f 2>/dev/null | wc -l",
	    dir, sub);
	FILE *f = popen(cmd, "r");
	int n = -1;

	assert_non_null(f);
	assert_int_equal(fscanf(f, "%d", &n), 1);
	pclose(f);
	free(cmd);
	return n;
}

size_t
mdtest_open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	size_t n = 0;

	assert_non_null(d);
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n - 3;		/* ".", ".." and d's own */
}
