/*
 * fuzz/fuzz_table.c: a "file:" table as an operator or a script writes it.
 * The input is the file (in a memfd, opened by path like any table); each
 * of its lines is read again here by the rule docs/config.md gives
 * ("key value", "key: value", "key"; blank and '#' lines skipped; the
 * first of duplicate keys kept) and looked up: the table must hold every
 * key with its first value, and "user@domain" keys' domains.
 */
#include "config/config.h"
#include "log/log.h"
#include "table/table.h"
#include "util/util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

int	LLVMFuzzerInitialize(int *argc, char ***argv);
int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(LOG_LVL_ERROR);	/* no warning per duplicate key */
	return 0;
}

/* The key and value of one line (changed in place); false: no entry. */
static bool
fz_line(char *line, char **key, char **value)
{
	size_t len = strlen(line);
	char *end;

	while (len > 0 && strchr("\r \t", line[len - 1]) != NULL)
		line[--len] = '\0';
	*key = line + strspn(line, " \t");
	if (**key == '\0' || **key == '#')
		return false;
	end = *key + strcspn(*key, " \t");
	*value = end + strspn(end, " \t");
	*end = '\0';
	if (end > *key + 1 && end[-1] == ':')
		end[-1] = '\0';
	return true;
}

/* Has an earlier line (of lines[0..n)) the same key? */
static bool
fz_seen(char **keys, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(keys[i], key) == 0)
			return true;
	return false;
}

static void
fz_check(struct table *t, char *text)
{
	char **keys = NULL, *save = NULL, *key, *value, *got;
	size_t n = 0;

	for (char *l = strtok_r(text, "\n", &save); l != NULL;
	    l = strtok_r(NULL, "\n", &save)) {
		if (!fz_line(l, &key, &value) || fz_seen(keys, n, key))
			continue;
		keys = xreallocarray(keys, n + 1, sizeof(*keys));
		keys[n++] = key;
		if (table_get_first(t, key, &got) != TABLE_FOUND ||
		    strcmp(got, value) != 0)
			abort();
		free(got);
		const char *at = strrchr(key, '@');
		if (at != NULL && at[1] != '\0' && !table_has_domain(t, at + 1))
			abort();
	}
	free(keys);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[64], *text;
	const char *err = NULL;
	struct config_table ct = { .name = "fz", .kind = CONFIG_TABLE_FILE,
	    .path = path };
	struct table *t;
	int fd = memfd_create("table", MFD_CLOEXEC);

	if (fd == -1 || write(fd, data, size) != (ssize_t)size)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if ((t = table_open(&ct, &err)) == NULL)
		abort();		/* a regular file: always readable */
	/* Each line as C sees it: up to its first NUL. */
	text = xmalloc(size + 2);	/* an LF after the last line, a NUL */
	size_t o = 0;
	for (size_t i = 0; i < size; ) {
		const uint8_t *nl = memchr(data + i, '\n', size - i);
		size_t ll = (nl != NULL ? (size_t)(nl - data) : size) - i;
		size_t cl = strnlen((const char *)data + i, ll);
		memcpy(text + o, data + i, cl);
		o += cl;
		text[o++] = '\n';
		i += ll + 1;
	}
	text[o] = '\0';
	fz_check(t, text);
	free(text);
	table_free(&t);
	close(fd);
	return 0;
}
