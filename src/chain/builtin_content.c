/*
 * chain/builtin_content.c: (being written).
 */
#include "chain/chain_private.h"

#include <stddef.h>

const struct chain_handler_ops chain_content_ops[] = {
	{ .name = NULL },
};
