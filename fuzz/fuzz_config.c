/*
 * fuzz/fuzz_config.c: libFuzzer target for the config parser.  Any bytes
 * must give either a config or an error list, never a crash or a leak;
 * and every error line must have the "FILE:LINE: message" form.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "util/util.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = xmalloc(size + 1);
	char *errs = NULL;
	struct config *c;

	memcpy(text, data, size);
	text[size] = '\0';	/* config_parse reads up to the first NUL */
	c = config_parse("fuzz.conf", text, &errs);
	if ((c == NULL) == (errs == NULL))
		abort();
	for (const char *p = errs; p != NULL && *p != '\0';) {
		const char *nl = strchr(p, '\n');
		if (nl == NULL || strncmp(p, "fuzz.conf:", 10) != 0)
			abort();
		p = nl + 1;
	}
	if (c != NULL) {
		if (c->nlistens == 0 || c->nrules == 0)
			abort();
		for (size_t i = 0; i < c->nrules; i++)
			if (c->rules[i].action == NULL ||
			    config_action_find(c, c->rules[i].action->name) !=
			    c->rules[i].action)
				abort();
	}
	config_free(&c);
	free(errs);
	free(text);
	return 0;
}
