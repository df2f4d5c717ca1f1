"""The ```conf examples of the docs are configs `postern check` accepts.

Every block fenced as ```conf in docs/chains.md, docs/scripts.md,
docs/config.md and docs/proxy.md is checked.  A block with a `listen` line is a whole config;
any other is a fragment and goes between a minimal head (hostname, spool,
listen) and a tail (one action, one match rule), so it may define its own
tables and actions but no action named "local".  What the docs show but a
check in a temporary folder cannot have is supplied, openly:

- a `\\` at the end of a line only wraps it for the page (config.md says
  so): the lines are joined;
- `lua "FILE"` (relative to the config's folder): FILE is written from the
  ```lua blocks of the same document;
- `program "/ABS/PATH"`, `reply command "/ABS/PATH"` and `pipe
  "/ABS/PATH"`: the path must exist and be executable, so it is replaced
  by a stub script in the temporary folder;
- `format template "FILE"` and `reply text "FILE"`: FILE is written from
  the ```json (templates) or ```text (texts) blocks of the same document;
- certificates, `file:` tables, `user` and `group` as conftest's
  host_stand_ins() makes them up (check loads them);
- a `file:` table a webhook's `secret <TABLE>` names holds a `default`
  key (check refuses a secret table with no key for the action).

A block that cannot be checked at all may be fenced ```conf-fragment-skip
(with the reason in the text); it is counted, not checked.
"""

import os
import re

import pytest

from conftest import REPO, host_stand_ins, run_cli

DOCS = ("docs/chains.md", "docs/scripts.md", "docs/config.md",
    "docs/actions.md", "docs/proxy.md")

HEAD = "hostname docs.example\nspool {tmp}/spool\nlisten 127.0.0.1:2525\n"
TAIL = ('action local maildir "{tmp}/mail/%{rcpt.user}/Maildir"\n'
    "match any action local\n")

FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def fenced(doc, lang):
    """(line number, text) of every block of doc fenced as ```lang."""
    with open(os.path.join(REPO, doc)) as f:
        text = f.read()
    return [(text.count("\n", 0, m.start()) + 1, m.group(2))
        for m in FENCE.finditer(text) if m.group(1) == lang]


def blocks():
    out = []
    for doc in DOCS:
        for line, text in fenced(doc, "conf"):
            out.append(pytest.param(doc, line, text,
                id="%s:%d" % (os.path.basename(doc), line)))
    return out


def materialize(doc, text, tmp):
    """The block as the config file to check (see the module docstring)."""
    text = re.sub(r"[ \t]*\\\n[ \t]*", " ", text)
    lua = "".join(t for _, t in fenced(doc, "lua"))
    for name in set(re.findall(r'\blua\s+"([^"/]+)"', text)):
        assert lua, "%s: lua %r but no ```lua block to write it" % (doc, name)
        with open(os.path.join(tmp, name), "w") as f:
            f.write(lua)
    stub = os.path.join(tmp, "program-stub")
    with open(stub, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(stub, 0o755)
    text = re.sub(r'\b(program|command|pipe)\s+"/[^"]*"',
        lambda m: '%s "%s"' % (m.group(1), stub), text)
    for kind, lang in (("template", "json"), ("text", "text")):
        body = "".join(t for _, t in fenced(doc, lang))
        for name in set(re.findall(r'\b%s\s+"([^"/]+)"' % kind, text)):
            assert body, "%s: %s %r but no ```%s block" % (doc, kind, name,
                lang)
            with open(os.path.join(tmp, name), "w") as f:
                f.write(body)
    text = host_stand_ins(text, tmp)
    for name in set(re.findall(r"\bsecret\s+<([^>]+)>", text)):
        m = re.search(r"^table\s+%s\s+file:(\S+)" % re.escape(name), text,
            re.M)
        if m:
            with open(os.path.join(tmp, m.group(1)), "w") as f:
                f.write("default stand-in-key\n")
    if not re.search(r"^\s*listen\s", text, re.M):
        text = HEAD + text + TAIL
    return text.replace("{tmp}", tmp)


def test_docs_have_conf_blocks():
    """The fences are still there (a renamed fence would check nothing)."""
    for doc in DOCS:
        n = len(fenced(doc, "conf"))
        assert n > 0, "%s: no ```conf block found" % doc


def test_every_builtin_section_has_an_example():
    """Each "### `handler ...`" section of chains.md's builtins shows a
    ```conf example (the scripted ones live in scripts.md)."""
    with open(os.path.join(REPO, "docs/chains.md")) as f:
        text = f.read()
    builtins = text.split("\n## Builtin handlers\n", 1)[1]
    sections = re.split(r"^### ", builtins, flags=re.M)[1:]
    assert len(sections) >= 20, "chains.md: builtin sections went missing"
    for sec in sections:
        title = sec.splitlines()[0]
        if title.startswith("`lua`"):
            continue
        assert "```conf\n" in sec, "chains.md: %s has no ```conf example" % (
            title)


@pytest.mark.parametrize("doc,line,text", blocks())
def test_doc_example_passes_check(tmp_path, doc, line, text):
    conf = tmp_path / "postern.conf"
    conf.write_text(materialize(doc, text, str(tmp_path)))
    r = run_cli("check", "-c", str(conf), cwd=str(tmp_path))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), (
        "%s:%d: the example fails `postern check` (exit %d):\n%s%s\n"
        "--- checked config:\n%s" % (doc, line, r.returncode, r.stdout,
        r.stderr, conf.read_text()))


def test_a_broken_example_would_fail(tmp_path):
    """The wrapper does not hide errors: a wrong handler line is reported."""
    conf = tmp_path / "postern.conf"
    conf.write_text(materialize("docs/chains.md",
        "on mail { disconnect 550 go away }\n", str(tmp_path)))
    r = run_cli("check", "-c", str(conf), cwd=str(tmp_path))
    assert r.returncode == 1 and "disconnect" in r.stdout, r
