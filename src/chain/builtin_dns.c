/*
 * chain/builtin_dns.c: (being written).
 */
#include "chain/chain_private.h"

#include <stddef.h>

const struct chain_handler_ops chain_dns_ops[] = {
	{ .name = NULL },
};
