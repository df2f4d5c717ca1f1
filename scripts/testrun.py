#!/usr/bin/python3
"""Build postern and run every test; print 'N passed, N failed' last.

Unit tests (cmocka binaries under build/tests/unit), libFuzzer targets for a
few seconds each (clang build in build-fuzz), and the pytest integration
suite (tests/integration) against build/postern.  Every test build uses
AddressSanitizer and UndefinedBehaviorSanitizer.
"""
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ_SECONDS = int(os.environ.get("POSTERN_FUZZ_SECONDS", "5"))
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
        m = re.search(r"^\[==========\] (\d+) test\(s\) run", out, re.M)
        total = int(m.group(1)) if m else ok + 1
        failed = total - ok
        if p.returncode != 0 and failed == 0:
            failed = 1   # a crash or sanitizer report after the tests
        if failed:
            sys.stdout.write(out)
        print(f"unit {os.path.basename(exe)}: {ok} passed, {failed} failed",
              flush=True)
        results["passed"] += ok
        results["failed"] += failed


def run_fuzz(results):
    if not build("build-fuzz", {"CC": "clang"},
                 ["-Dfuzz=true", "-Dtests=disabled"]):
        results["failed"] += 1
        print("fuzz: build failed", flush=True)
        return
    for name in ("fuzz_cmd", "fuzz_addr", "fuzz_data", "fuzz_config"):
        exe = os.path.join(ROOT, "build-fuzz", "fuzz", name)
        corpus = os.path.join(ROOT, "fuzz", "corpus", name)
        with tempfile.TemporaryDirectory() as work:
            args = [exe, f"-max_total_time={FUZZ_SECONDS}", "-timeout=10",
                    "-rss_limit_mb=2048", f"-artifact_prefix={work}/", work]
            if os.path.isdir(corpus):
                args.append(corpus)
            p = subprocess.run(args, capture_output=True, text=True,
                               timeout=FUZZ_SECONDS * 10 + 60,
                               env=dict(os.environ, **SAN_ENV))
        if p.returncode == 0:
            results["passed"] += 1
            print(f"fuzz {name}: ok", flush=True)
        else:
            results["failed"] += 1
            print(p.stderr[-4000:])
            print(f"fuzz {name}: FAILED", flush=True)


def run_integration(results):
    with tempfile.TemporaryDirectory() as tmp:
        xml = os.path.join(tmp, "junit.xml")
        env = dict(os.environ, POSTERN_BIN=os.path.join(ROOT, "build", "postern"),
                   PYTHONDONTWRITEBYTECODE="1", **SAN_ENV)
        p = sh(["/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                f"--junitxml={xml}", "tests/integration"], env=env)
        if not os.path.exists(xml):
            results["failed"] += 1
            return
        suite = ET.parse(xml).getroot()
        suites = suite.findall("testsuite") if suite.tag == "testsuites" else [suite]
        for s in suites:
            total = int(s.get("tests", 0))
            bad = int(s.get("failures", 0)) + int(s.get("errors", 0))
            skipped = int(s.get("skipped", 0))
            results["passed"] += total - bad - skipped
            results["failed"] += bad
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
    results = {"passed": 0, "failed": 0}
    if not build("build"):
        print("0 passed, 1 failed")
        return 1
    only = sys.argv[1:] or ["unit", "fuzz", "integration"]
    if "unit" in only:
        run_layering(results)
        run_unit(results)
    if "fuzz" in only:
        run_fuzz(results)
    if "integration" in only:
        run_integration(results)
    print(f"{results['passed']} passed, {results['failed']} failed", flush=True)
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
