/*
 * Unit tests of deliver/kind.c: every kind the config knows has one entry,
 * found by its keyword; which kinds can be the commit and which need a
 * runtime; deliveries through the table.
 */
#include "deliver/deliver.h"
#include "config/config.h"
#include "util/util.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static const char conf[] =
    "listen 127.0.0.1:2525\n"
    "action box maildir \"%s/%%{rcpt.domain}/%%{rcpt.user}\"\n"
    "action drop discard\n"
    "action out relay \"smtp://127.0.0.1:2526\"\n"
    "action direct mx\n"
    "action fwd forward \"ops@example.org\"\n"
    "match any action box\n";

static const struct {
	const char		*action;	/* in conf */
	enum config_action_kind	 kind;
	const char		*name;
	bool			 fast_path, runtime;
} kinds[] = {
	{ "box", CONFIG_ACTION_MAILDIR, "maildir", true, false },
	{ "drop", CONFIG_ACTION_DISCARD, "discard", true, false },
	{ "out", CONFIG_ACTION_RELAY, "relay", false, true },
	{ "direct", CONFIG_ACTION_MX, "mx", false, true },
	{ "fwd", CONFIG_ACTION_FORWARD, "forward", false, true },
	{ NULL, CONFIG_ACTION_RELAY_BY_SENDER, "relay-by-sender", false,
	    true },
};

static struct config *
load(const char *dir)
{
	char *text = xasprintf(conf, dir), *errs = NULL;
	struct config *c = config_parse("kind.conf", text, &errs);

	if (c == NULL)
		fail_msg("config: %s", errs);
	free(text);
	return c;
}

static void
test_every_kind_has_an_entry(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		const struct deliver_kind *k = deliver_kind_of(kinds[i].kind);
		if (k == NULL)
			fail_msg("kind %s: no entry", kinds[i].name);
		assert_string_equal(deliver_kind_name(k), kinds[i].name);
		assert_ptr_equal(deliver_kind_find(kinds[i].name), k);
		if (k->fast_path != kinds[i].fast_path ||
		    (k->open != NULL) != kinds[i].runtime ||
		    (k->close != NULL) != kinds[i].runtime)
			fail_msg("kind %s: fast_path %d, runtime %d",
			    kinds[i].name, k->fast_path, k->open != NULL);
	}
	assert_null(deliver_kind_find("smarthost"));
	assert_null(deliver_kind_find("Maildir"));
	assert_null(deliver_kind_find(NULL));
}

/* The entry's runtime: opened from the action, closed again. */
static void
test_open_close(void **state)
{
	struct config *c = load("/var/mail");
	const char *err = NULL;

	(void)state;
	for (size_t i = 2; kinds[i].action != NULL; i++) {
		const struct config_action *a =
		    config_action_find(c, kinds[i].action);
		const struct deliver_kind *k = deliver_kind_of(a->kind);
		void *run = k->open(c, a, &err);
		if (run == NULL)
			fail_msg("open %s: %s", kinds[i].action, err);
		k->close(run);
	}
	config_free(&c);
}

static size_t
count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static void
test_deliver_through_the_table(void **state)
{
	char tmpl[] = "/tmp/postern-kind-XXXXXX";
	char *dir = mkdtemp(tmpl), *folder, *arg, *newdir;
	struct config *c;
	const struct config_action *a;
	const struct deliver_kind *k;
	struct deliver_rcpt_status st;
	const char *err = NULL, *rcpt = "bob@example.org";
	struct deliver_msg m = { .content = "Subject: x\n\nhi\n",
	    .content_len = 15, .return_path = "a@example.net", .qid = "K1",
	    .received = 1700000000, .hostname = "mx.example" };

	(void)state;
	assert_non_null(dir);
	c = load(dir);
	a = config_action_find(c, "box");
	k = deliver_kind_of(a->kind);
	arg = xasprintf("%s/example.org/bob", dir);	/* route/'s answer */
	assert_int_equal(k->deliver(NULL, arg, &m, &rcpt, 1, &st, &err),
	    DELIVER_OK);
	assert_int_equal(st.result, DELIVER_OK);
	newdir = xasprintf("%s/new", arg);
	assert_int_equal(count_files(newdir), 1);
	/* Without a folder: permanent, said in the status too. */
	assert_int_equal(k->deliver(NULL, NULL, &m, &rcpt, 1, &st, &err),
	    DELIVER_PERMFAIL);
	assert_string_equal(err, "maildir action without a folder");
	assert_string_equal(st.text, err);
	/* discard writes nothing and succeeds. */
	k = deliver_kind_find("discard");
	assert_int_equal(k->deliver(NULL, NULL, &m, &rcpt, 1, &st, &err),
	    DELIVER_OK);
	assert_int_equal(st.result, DELIVER_OK);
	assert_int_equal(count_files(newdir), 1);
	folder = xasprintf("rm -rf '%s'", dir);
	assert_int_equal(system(folder), 0);
	free(folder);
	free(newdir);
	free(arg);
	config_free(&c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_kind_has_an_entry),
		cmocka_unit_test(test_open_close),
		cmocka_unit_test(test_deliver_through_the_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
