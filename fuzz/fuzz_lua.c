/*
 * fuzz/fuzz_lua.c: what a Lua script hands back to postern.  A fixed
 * script (FZ_SCRIPT) reads the input, given to it hex-encoded as the HELO
 * name, and builds from it the values a careless or hostile script could
 * return or store: a verdict of any shape (strings, numbers, NaN,
 * booleans, functions, nested tables), state keys and values, log lines.
 * The chain turns the verdict into the SMTP reply; it must be a 4xx/5xx
 * (or the stage's default) whose text starts with an enhanced code of the
 * same class and holds only printable ASCII.
 */
#include "chain/chain.h"
#include "config/config.h"
#include "log/log.h"
#include "util/util.h"

#include <event2/event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int	LLVMFuzzerInitialize(int *argc, char ***argv);
int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char FZ_SCRIPT[] =
    "local words = { 'continue', 'accept', 'reject', 'disconnect',\n"
    "  'delay', 'quarantine', 'tag', 'discard', 'bogus', '' }\n"
    "local function decode(hex)\n"
    "  local s = hex:gsub('..', function(h)\n"
    "    return string.char(tonumber(h, 16)) end)\n"
    "  local pos = 1\n"
    "  local function byte()\n"
    "    local b = s:byte(pos) or 0\n"
    "    pos = pos + 1\n"
    "    return b\n"
    "  end\n"
    "  local function str()\n"
    "    local n = byte() % 80\n"
    "    local r = s:sub(pos, pos + n - 1)\n"
    "    pos = pos + n\n"
    "    return r\n"
    "  end\n"
    "  local value\n"
    "  value = function(depth)\n"
    "    local t = byte() % 11\n"
    "    if t == 0 then return nil\n"
    "    elseif t == 1 then return str()\n"
    "    elseif t == 2 then return (byte() - 128) * 256 + byte()\n"
    "    elseif t == 3 then return (byte() - 128) / 7\n"
    "    elseif t == 4 then return byte() % 2 == 0\n"
    "    elseif t == 5 and depth < 3 then\n"
    "      local tt = {}\n"
    "      for i = 1, byte() % 6 do tt[i] = value(depth + 1) end\n"
    "      return tt\n"
    "    elseif t == 6 then return words[byte() % #words + 1]\n"
    "    elseif t == 7 then return function() end\n"
    "    elseif t == 8 then return 0/0\n"
    "    elseif t == 9 then return math.maxinteger - byte()\n"
    "    else return math.huge * (byte() % 2 * 2 - 1) end\n"
    "  end\n"
    "  return byte, str, value\n"
    "end\n"
    "function helo(facts, state)\n"
    "  local byte, str, value = decode(facts.helo)\n"
    "  for _ = 1, byte() % 4 do\n"
    "    local op = byte() % 4\n"
    "    local scope = byte() % 2 == 0 and state.session or state.tx\n"
    "    if op == 0 then pcall(scope.set, str(), value(0))\n"
    "    elseif op == 1 then pcall(scope.get, value(0))\n"
    "    elseif op == 2 then pcall(postern.log, value(0))\n"
    "    else pcall(scope.set, str(), nil) end\n"
    "  end\n"
    "  if byte() % 2 == 0 then return value(0) end\n"
    "  return { words[byte() % #words + 1], value(1), value(1), value(1) }\n"
    "end\n";

static struct config *fz_cfg;
static struct chain_set *fz_set;
static struct chain_loop *fz_loop;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char path[] = "/tmp/fuzz_lua.XXXXXX", *conf, *errs = NULL;
	struct chain_loop_opts o = { .resolver = "127.0.0.1:9",
	    .store = "memory:" };
	const char *err = NULL;
	int fd = mkstemp(path);

	(void)argc;
	(void)argv;
	log_set_level(LOG_LVL_ERROR);	/* no line per verdict */
	if (fd == -1 || write(fd, FZ_SCRIPT, strlen(FZ_SCRIPT)) !=
	    (ssize_t)strlen(FZ_SCRIPT))
		abort();
	close(fd);
	conf = xasprintf("hostname mx.test\nlisten 127.0.0.1:2525\n"
	    "action local maildir \"/tmp/x/%%{rcpt.user}\"\n"
	    "action quar maildir \"/tmp/q\"\nmatch any action local\n"
	    "state memory\non helo { lua \"%s\" }\n", path);
	if ((fz_cfg = config_parse("fuzz.conf", conf, &errs)) == NULL ||
	    (fz_set = chain_set_new(fz_cfg, &errs)) == NULL ||
	    (fz_loop = chain_loop_new(event_base_new(), fz_cfg, &o, &err)) ==
	    NULL)
		abort();
	unlink(path);		/* read once, by chain_set_new */
	free(conf);
	return 0;
}

static void
fz_check(const struct chain_result *r)
{
	const char *t = r->reply.text;

	if (r->verdict == SMTP_OK && r->reply.code == 0)
		return;
	if (r->verdict != SMTP_REJECT && r->verdict != SMTP_CLOSE)
		abort();
	if (r->reply.code < 400 || r->reply.code > 599 ||
	    t[0] != '0' + r->reply.code / 100 || t[1] != '.')
		abort();
	for (; *t != '\0'; t++)
		if ((unsigned char)*t < 0x20 || (unsigned char)*t > 0x7e)
			abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct chain_session_info info = { .sid = "fz", .ip = "192.0.2.7",
	    .port = 40000, .hostname = "mx.test" };
	struct chain_session *cs;
	struct chain_result res;
	char *hex;

	if (size > 1000)
		return 0;
	hex = xmalloc(2 * size + 1);
	for (size_t i = 0; i < size; i++)
		snprintf(hex + 2 * i, 3, "%02x", data[i]);
	hex[2 * size] = '\0';
	struct smtp_event ev = { .stage = SMTP_STAGE_HELO, .arg = hex,
	    .esmtp = true };
	cs = chain_session_new(fz_set, fz_loop, &info);
	/* A delay verdict is pending: its answer is not ours to wait for. */
	if (chain_run(cs, &ev, NULL, NULL, &res) == CHAIN_DONE)
		fz_check(&res);
	chain_session_free(&cs);
	free(hex);
	return 0;
}
