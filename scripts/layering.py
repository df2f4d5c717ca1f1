#!/usr/bin/python3
"""The module layering of docs/architecture.md, checked against the code.

The "Modules" table of docs/architecture.md lists src/'s modules from the
top down, and a module may use only modules listed below it.  problems()
returns one line for each place where the code and the table disagree:

- a folder of src/ that has no row, or a row that has no folder;
- an #include "<m>/..." in src/<module>/ of a module not listed below it;
- a module in the `uses` of src/<module>/meson.build not listed below it;
- a "uses" cell that is not exactly the modules the folder's files include.

Run alone (python3 scripts/layering.py) it prints them and exits 1 if any.
"""
import os
import re
import sys

DOC = os.path.join("docs", "architecture.md")
ROW = re.compile(r"^\|\s*`([a-z]+)/`\s*\|.*\|([^|]*)\|\s*$")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z]+)/')


def table(root):
    """[(module, [modules named in its "uses" cell], line)], top down."""
    rows, in_section = [], False
    with open(os.path.join(root, DOC), encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.startswith("## "):
                in_section = line.strip() == "## Modules"
            m = ROW.match(line) if in_section else None
            if m:
                rows.append((m.group(1), re.findall(r"`([a-z]+)/`",
                    m.group(2)), n))
    return rows


def includes(root, folder):
    """{module: first "path:line"} of the modules the folder's files include."""
    found = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith((".c", ".h")):
            continue
        path = os.path.join(folder, name)
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                m = INCLUDE.match(line)
                if m:
                    found.setdefault(m.group(1), "%s:%d" % (
                        os.path.relpath(path, root), n))
    return found


def meson_uses(folder):
    """The modules in the `uses = [...]` of the folder's meson.build."""
    path = os.path.join(folder, "meson.build")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        m = re.search(r"^uses\s*=\s*\[([^\]]*)\]", f.read(), re.M)
    return re.findall(r"'([a-z]+)'", m.group(1)) if m else []


def problems(root):
    src = os.path.join(root, "src")
    rows = table(root)
    order = [mod for mod, _, _ in rows]
    folders = sorted(d for d in os.listdir(src)
                     if os.path.isdir(os.path.join(src, d)))
    bad = []
    if not rows:
        return ["%s: no module table under \"## Modules\"" % DOC]
    for d in folders:
        if d not in order:
            bad.append("%s: no row for src/%s/" % (DOC, d))
    for mod, listed, line in rows:
        folder = os.path.join(src, mod)
        if not os.path.isdir(folder):
            bad.append("%s:%d: %s/ is not a folder of src/" % (DOC, line, mod))
            continue
        below = set(order[order.index(mod) + 1:])
        used = includes(root, folder)
        for dep, where in sorted(used.items()):
            if dep != mod and dep not in below:
                bad.append("%s: %s/ uses %s/, which %s does not list below "
                           "it" % (where, mod, dep, DOC))
        for dep in meson_uses(folder):
            if dep not in below:
                bad.append("src/%s/meson.build: uses %s/, which %s does not "
                           "list below %s/" % (mod, dep, DOC, mod))
        real = sorted(set(used) - {mod})
        if sorted(listed) != real:
            bad.append("%s:%d: %s/ uses %s, the table says %s" % (DOC, line,
                       mod, " ".join(real) or "nothing",
                       " ".join(sorted(listed)) or "nothing"))
    return bad


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = problems(root)
    for p in found:
        print(p)
    sys.exit(1 if found else 0)
