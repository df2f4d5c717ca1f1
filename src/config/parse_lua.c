/*
 * config/parse_lua.c: "lua [budget N] [memory SIZE] [allow-unsafe]", the
 * defaults of every lua handler; a handler's own words win.
 */
#include "config/config.h"

#include <string.h>

#include "config/config_private.h"
#include "util/util.h"

#define LUA_BUDGET_MIN	1000
#define LUA_BUDGET_MAX	1000000000
#define LUA_MEMORY_MIN	(64u * 1024)
#define LUA_MEMORY_MAX	(1024u * 1024 * 1024)

void
cfg_st_lua(struct cfg_parser *p, const struct cfg_line *ln)
{
	static const char usage[] = "lua [budget N] [memory SIZE] "
	    "[allow-unsafe]";
	struct config *c = cfg_parser_config(p);
	uint64_t n;

	if (!cfg_nargs(p, ln, 1, 5, usage))
		return;
	for (size_t i = 1; i < ln->ntoks; i++) {
		const char *w = ln->toks[i].text;
		const char *arg = i + 1 < ln->ntoks ? ln->toks[i + 1].text :
		    NULL;
		if (strcmp(w, "allow-unsafe") == 0) {
			c->lua_allow_unsafe = true;
			continue;
		}
		if (strcmp(w, "budget") == 0 && arg != NULL &&
		    util_parse_size(arg, &n) == 0 && n >= LUA_BUDGET_MIN &&
		    n <= LUA_BUDGET_MAX) {
			c->lua_budget = n;
			i++;
			continue;
		}
		if (strcmp(w, "memory") == 0 && arg != NULL &&
		    util_parse_size(arg, &n) == 0 && n >= LUA_MEMORY_MIN &&
		    n <= LUA_MEMORY_MAX) {
			c->lua_memory = n;
			i++;
			continue;
		}
		cfg_err(p, ln->lineno, "lua: bad %s (usage: %s; budget "
		    "%u..%u, memory 64k..1G)", cfg_q(w), usage,
		    LUA_BUDGET_MIN, LUA_BUDGET_MAX);
		return;
	}
}
