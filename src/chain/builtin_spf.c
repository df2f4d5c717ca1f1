/*
 * chain/builtin_spf.c: (being written).
 */
#include "chain/chain_private.h"

#include <stddef.h>

const struct chain_handler_ops chain_spf_ops[] = {
	{ .name = NULL },
};
