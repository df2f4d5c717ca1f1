/*
 * tests/unit/deliver/mdtest.h: what the Maildir tests look at besides
 * the copies themselves: a scratch folder, the files under it, this
 * process's descriptors.
 */
#ifndef POSTERN_TEST_MDTEST_H
#define POSTERN_TEST_MDTEST_H

#include <stddef.h>

/* A new empty folder /tmp/<prefix>.XXXXXX: free with mdtest_dir_free. */
char	*mdtest_dir_new(const char *prefix);
/* Remove *dirp and all in it; free it and set it to NULL. */
void	mdtest_dir_free(char **dirp);
/* Files under dir/sub (find -type f; dir/sub itself followed if it is a
 * symlink, nothing below it); 0 if none. */
int	mdtest_count_files(const char *dir, const char *sub);
/* Descriptors open in this process now. */
size_t	mdtest_open_fds(void);

#endif
