"""The manual pages: built from man/*.scd by the build, rendered by man(1)
without warnings, and in step with docs/: every statement of the tables of
docs/config.md and every builtin handler of docs/chains.md is in
postern.conf(5), written the same way, and its example passes
`postern check`.  (tests/unit/config checks the other direction: every
keyword the parser knows is documented in postern.conf(5).)"""

import os
import re
import subprocess

import pytest

from conftest import REPO, binary, host_stand_ins, run_cli

PAGES = ("postern.8", "postern.conf.5", "postern-queue.8", "postern-send.8")


def page_path(page):
    p = os.path.join(os.path.dirname(binary()), "man", page)
    if not os.path.exists(p):
        pytest.fail("%s was not built: the build needs scdoc (scripts/"
            "bootstrap installs it)" % p)
    return p


def rendered(page):
    """The page as man(1) shows it, one paragraph per line (no line breaks,
    so no hyphenation), blanks collapsed."""
    r = subprocess.run(["man", "-l", page_path(page)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, timeout=30,
        env=dict(os.environ, MANWIDTH="4000", MAN_KEEP_FORMATTING="",
        LC_ALL="C.UTF-8"))
    assert r.returncode == 0, r.stderr
    return re.sub(r".\x08", "", r.stdout)


def flat(text):
    return " ".join(text.split())


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_warnings(page):
    r = subprocess.run(["groff", "-man", "-ww", "-z", "-t", page_path(page)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    text = rendered(page)
    name = page.rsplit(".", 1)[0]
    assert re.search(r"^NAME\n\s+%s\b" % re.escape(name), text, re.M), text[:500]
    for section in ("SYNOPSIS" if page.endswith(".8") else "DESCRIPTION",
            "SEE ALSO"):
        assert re.search(r"^%s$" % section, text, re.M), (page, section)


def config_md_statements():
    """(section, statement) for the first cell of each table row of
    docs/config.md; a row of the limits table is "limit NAME"."""
    with open(os.path.join(REPO, "docs", "config.md")) as f:
        doc = f.read()
    out, section = [], ""
    for line in doc.splitlines():
        if line.startswith("#"):
            section = line
        m = re.match(r"^\| (.*?) \|", line)
        if not m:
            continue
        for snip in re.findall(r"`([^`]+)`", m.group(1)):
            snip = snip.replace("\\|", "|")
            if section.startswith("## Limits"):
                snip = "limit " + snip
            out.append((section, " ".join(snip.split())))
    return out


def test_every_statement_of_config_md_is_in_postern_conf_5():
    stmts = config_md_statements()
    assert len(stmts) > 60, "docs/config.md: statement tables went missing"
    text = flat(rendered("postern.conf.5"))
    missing = ["%s: %s" % s for s in stmts if s[1] not in text]
    assert not missing, "in docs/config.md but not in postern.conf(5), " \
        "written the same way:\n" + "\n".join(missing)


def test_every_builtin_handler_of_chains_md_is_in_postern_conf_5():
    with open(os.path.join(REPO, "docs", "chains.md")) as f:
        doc = f.read()
    heads = re.findall(r"^### `([^`]+)`", doc, re.M)
    assert len(heads) > 20, "docs/chains.md: handler sections went missing"
    text = flat(rendered("postern.conf.5"))
    missing = []
    for h in heads:
        words = []
        for w in h.split():
            if not re.match(r"^[a-z][a-z|-]*$", w):
                break
            words.append(w)
        if " ".join(words) not in text:
            missing.append(h)
    assert not missing, "handlers of docs/chains.md not in postern.conf(5):" \
        "\n" + "\n".join(missing)


def test_example_of_postern_conf_5_passes_check(tmp_path):
    with open(os.path.join(REPO, "man", "postern.conf.5.scd")) as f:
        src = f.read()
    m = re.search(r"^# EXAMPLE\n\n```\n(.*?)^```", src, re.M | re.S)
    assert m, "postern.conf.5.scd: no EXAMPLE block"
    text = m.group(1)
    # The files it names exist on a real host; here they are made up.
    text = host_stand_ins(text, str(tmp_path))
    text = text.replace("/var/spool/postern", str(tmp_path / "spool"))
    conf = tmp_path / "postern.conf"
    conf.write_text(text)
    r = run_cli("check", "-c", str(conf), cwd=str(tmp_path))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r
