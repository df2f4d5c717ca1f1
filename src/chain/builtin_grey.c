/*
 * chain/builtin_grey.c: (being written).
 */
#include "chain/chain_private.h"

#include <stddef.h>

const struct chain_handler_ops chain_grey_ops[] = {
	{ .name = NULL },
};
