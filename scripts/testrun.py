#!/usr/bin/python3
"""Build postern and run every test; print 'N passed, N failed, N skipped'
last.

Unit tests (cmocka binaries under build/tests/unit), libFuzzer targets for a
few seconds each (clang build in build-fuzz), and the pytest integration
suite (tests/integration) against build/postern.  Every test build uses
AddressSanitizer and UndefinedBehaviorSanitizer.

A test may skip itself only for what the machine lacks (no root, no loop
device, no device-mapper in the kernel): its reason then starts with
"machine lacks: " (conftest.machine_lacks() for pytest; a unit test prints
"machine lacks: WHAT" before cmocka's skip()).  Any other skip is a test
hiding a broken feature: it counts as a failure.

    POSTERN_FUZZ_SECONDS  seconds per fuzz target (default 3); the long run
                          is POSTERN_FUZZ_SECONDS=600 ./scripts/test fuzz
    POSTERN_LONG=1        also run the long variants (pytest mark "long")
"""
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ_SECONDS = int(os.environ.get("POSTERN_FUZZ_SECONDS", "3"))
ENV_SKIP = "machine lacks: "	# the one reason a test may skip for
SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}


def sh(cmd, **kw):
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, **kw)


def build(builddir, extra_env=None, options=()):
    env = dict(os.environ, **(extra_env or {}))
    if not os.path.exists(os.path.join(ROOT, builddir, "build.ninja")):
        if sh(["meson", "setup", builddir, *options], env=env).returncode:
            return False
    return sh(["ninja", "-C", builddir], env=env).returncode == 0


def note_skip(results, what, reason):
    """A skip: declared (the machine lacks something) or a failure."""
    if reason.startswith(ENV_SKIP):
        results["skipped"] += 1
        print("SKIPPED %s: %s" % (what, reason), flush=True)
    else:
        results["failed"] += 1
        print("FAILED %s: skipped without saying what the machine lacks "
              "(a broken feature must fail): %s" % (what, reason), flush=True)


def unit_skips(out):
    """[(test, reason)] of the cmocka tests that skipped; the reason is the
    "machine lacks: ..." line the test printed, or ""."""
    skips = []
    for m in re.finditer(r"^\[ RUN      \] (\S+)$(.*?)^\[  SKIPPED \] \1$",
                         out, re.M | re.S):
        lack = re.search(r"^.*?(%s.*)$" % re.escape(ENV_SKIP), m.group(2),
                         re.M)
        skips.append((m.group(1), lack.group(1).strip() if lack else ""))
    return skips


def run_unit(results):
    unitdir = os.path.join(ROOT, "build", "tests", "unit")
    for mod, exe in sorted(
            (mod, os.path.join(unitdir, mod, name))
            for mod in os.listdir(unitdir)
            if os.path.isdir(os.path.join(unitdir, mod))
            for name in os.listdir(os.path.join(unitdir, mod))
            if name.startswith("test_")
            and os.path.isfile(os.path.join(unitdir, mod, name))
            and os.access(os.path.join(unitdir, mod, name), os.X_OK)):
        p = subprocess.run([exe], cwd=os.path.join(ROOT, "tests", "unit", mod),
                           capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, **SAN_ENV))
        out = p.stdout + p.stderr
        ok = len(re.findall(r"^\[       OK \]", out, re.M))
        skips = unit_skips(out)
        m = re.search(r"^\[==========\] (\d+) test\(s\) run", out, re.M)
        total = int(m.group(1)) if m else ok + len(skips) + 1
        failed = total - ok - len(skips)
        if p.returncode != 0 and failed == 0:
            failed = 1   # a crash or sanitizer report after the tests
        if failed:
            sys.stdout.write(out)
        print(f"unit {os.path.basename(exe)}: {ok} passed, {failed} failed, "
              f"{len(skips)} skipped", flush=True)
        results["passed"] += ok
        results["failed"] += failed
        for test, reason in skips:
            note_skip(results, "unit %s %s" % (os.path.basename(exe), test),
                      reason)


def fuzz_targets():
    """Every fuzz/fuzz_*.c: one libFuzzer target each."""
    return sorted(n[:-2] for n in os.listdir(os.path.join(ROOT, "fuzz"))
                  if n.startswith("fuzz_") and n.endswith(".c"))


def run_fuzz(results):
    if not build("build-fuzz", {"CC": "clang"},
                 ["-Dfuzz=true", "-Dtests=disabled"]):
        results["failed"] += 1
        print("fuzz: build failed", flush=True)
        return
    for name in fuzz_targets():
        exe = os.path.join(ROOT, "build-fuzz", "fuzz", name)
        corpus = os.path.join(ROOT, "fuzz", "corpus", name)
        if not os.path.isdir(corpus):
            results["failed"] += 1
            print(f"fuzz {name}: FAILED: no seed corpus in {corpus}",
                  flush=True)
            continue
        with tempfile.TemporaryDirectory() as work:
            # New inputs go to work/, so the seed corpus stays as committed.
            args = [exe, f"-max_total_time={FUZZ_SECONDS}", "-timeout=10",
                    "-rss_limit_mb=2048", "-print_final_stats=1",
                    f"-artifact_prefix={work}/", work, corpus]
            p = subprocess.run(args, capture_output=True, text=True,
                               timeout=FUZZ_SECONDS * 10 + 120,
                               env=dict(os.environ, **SAN_ENV))
        runs = re.search(r"^stat::number_of_executed_units:\s*(\d+)",
                         p.stderr, re.M)
        cov = re.findall(r"\bcov: (\d+) ft: (\d+)", p.stderr)
        figures = "%s runs, cov %s, ft %s" % (
            runs.group(1) if runs else "?", cov[-1][0] if cov else "?",
            cov[-1][1] if cov else "?")
        if p.returncode == 0:
            results["passed"] += 1
            print(f"fuzz {name}: ok ({figures})", flush=True)
        else:
            results["failed"] += 1
            print(p.stderr[-4000:])
            print(f"fuzz {name}: FAILED ({figures})", flush=True)


def run_integration(results):
    with tempfile.TemporaryDirectory() as tmp:
        xml = os.path.join(tmp, "junit.xml")
        env = dict(os.environ, POSTERN_BIN=os.path.join(ROOT, "build", "postern"),
                   PYTHONDONTWRITEBYTECODE="1", **SAN_ENV)
        p = sh(["/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "-rs", f"--junitxml={xml}",
                "--basetemp=" + os.path.join(tmp, "t"), "tests/integration"],
               env=env)
        if not os.path.exists(xml):
            results["failed"] += 1
            return
        root = ET.parse(xml).getroot()
        for case in root.iter("testcase"):
            what = "%s::%s" % (case.get("classname", "?"), case.get("name"))
            if case.find("failure") is not None or \
                    case.find("error") is not None:
                results["failed"] += 1
            elif case.find("skipped") is not None:
                note_skip(results, what,
                          case.find("skipped").get("message") or "")
            else:
                results["passed"] += 1
        if p.returncode not in (0, 1, 5):
            results["failed"] += 1


def run_layering(results):
    """docs/architecture.md: each module uses only the modules listed below
    it (scripts/layering.py), no module includes another's _private.h, and
    smtp/ (the pure dialogue) includes no socket, TLS, event-loop or file
    headers."""
    bad = []
    src = os.path.join(ROOT, "src")
    for mod in sorted(os.listdir(src)):
        for name in sorted(os.listdir(os.path.join(src, mod))):
            if not name.endswith((".c", ".h")):
                continue
            path = os.path.join(src, mod, name)
            with open(path, encoding="utf-8", errors="replace") as f:
                for n, line in enumerate(f, 1):
                    m = re.match(r'#include "([a-z]+)/[a-z_]+_private\.h"', line)
                    if m and m.group(1) != mod:
                        bad.append("%s:%d: includes %s's private header"
                                   % (path, n, m.group(1)))
                    if mod == "smtp" and re.match(
                            r"#include <(sys/socket|openssl/|event2/|fcntl|"
                            r"unistd|netinet/|arpa/)", line):
                        bad.append("%s:%d: smtp/ must stay pure: %s"
                                   % (path, n, line.strip()))
    from layering import problems   # scripts/layering.py
    bad += problems(ROOT)
    for b in bad:
        print(b)
    print("layering: %s" % ("ok" if not bad else "FAILED"), flush=True)
    results["passed" if not bad else "failed"] += 1


def main():
    results = {"passed": 0, "failed": 0, "skipped": 0}
    if not build("build"):
        print("0 passed, 1 failed, 0 skipped")
        return 1
    only = sys.argv[1:] or ["unit", "fuzz", "integration"]
    if "unit" in only:
        run_layering(results)
        run_unit(results)
    if "fuzz" in only:
        run_fuzz(results)
    if "integration" in only:
        run_integration(results)
    print(f"{results['passed']} passed, {results['failed']} failed, "
          f"{results['skipped']} skipped", flush=True)
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
