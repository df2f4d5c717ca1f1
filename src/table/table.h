/*
 * table/table.h: lookup tables (inline lists, "file:" key/value files that
 * are reloaded when they change).  Knows nothing of who asks.
 */
#ifndef POSTERN_TABLE_H
#define POSTERN_TABLE_H

#include <stdbool.h>

struct config_table;
struct table;

/* Open a table described by the config; NULL with *err_out on failure. */
struct table *table_open(const struct config_table *ct, const char **err_out);
void	table_free(struct table **tp);

/*
 * Look key up (ASCII case-insensitive).  Returns true when found; then
 * *value_out (if not NULL) is a malloc'd copy of the value ("" when the
 * entry has none), owned by the caller.  A "file:" table re-reads its file
 * when its mtime or size changed since the last look-up; if the new file is
 * unreadable the old contents stay and a warning is logged.  Thread-safe.
 */
bool	table_lookup(struct table *t, const char *key, char **value_out);

/* For "to <table>": is any key of the table in this domain ("user@domain" or "@domain")? */
bool	table_has_domain(struct table *t, const char *domain);

#endif
