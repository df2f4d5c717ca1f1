/*
 * chain/builtin_limit.c: (being written).
 */
#include "chain/chain_private.h"

#include <stddef.h>

const struct chain_handler_ops chain_limit_ops[] = {
	{ .name = NULL },
};
