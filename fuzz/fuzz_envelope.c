/*
 * fuzz/fuzz_envelope.c: a damaged spool file.  The input is an envelope
 * file, then (after the first NUL, if any) the status log that goes with
 * it, read the way spool_env_load() reads them.  What parses must format
 * back into an envelope that parses to the same text again, whatever the
 * status log did to the recipients.
 */
#include "spool/spool_private.h"
#include "util/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* env formats to a text that parses back to the same text. */
static void
fz_round_trip(const struct spool_env *env)
{
	struct util_buf a = { 0 }, b = { 0 };
	struct spool_env again = { 0 };
	const char *why;

	spool_env_format(env, &a);
	if (spool_env_parse(a.data, a.len, &again, &why) == -1)
		abort();
	spool_env_format(&again, &b);
	if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
		abort();
	spool_env_clear(&again);
	util_buf_clear(&a);
	util_buf_clear(&b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data, *why = NULL;
	const char *nul = memchr(in, '\0', size);
	size_t elen = nul != NULL ? (size_t)(nul - in) : size;
	struct spool_env env = { 0 };

	if (spool_env_parse(in, elen, &env, &why) == -1) {
		if (why == NULL || env.nrcpts != 0 || env.sender != NULL)
			abort();	/* a reason, and nothing kept */
		return 0;
	}
	fz_round_trip(&env);
	if (nul != NULL && spool_done_parse(nul + 1, size - elen - 1, &env,
	    &why) == -1 && why == NULL)
		abort();
	for (size_t i = 0; i < env.nrcpts; i++)
		if (memchr(env.rcpts[i].status, '\0',
		    sizeof(env.rcpts[i].status)) == NULL ||
		    (env.rcpts[i].failed && !env.rcpts[i].done))
			abort();
	fz_round_trip(&env);
	spool_env_clear(&env);
	return 0;
}
