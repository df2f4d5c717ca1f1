/*
 * table/table_private.h: knobs for table/'s own tests.  Not for other
 * modules.
 */
#ifndef POSTERN_TABLE_PRIVATE_H
#define POSTERN_TABLE_PRIVATE_H

#include <stdint.h>

struct table;

/* How often a "file:" table stats its file (default 1000 ms). */
void	table_set_recheck_ms(struct table *t, uint64_t ms);

#endif
