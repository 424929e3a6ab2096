#!/usr/bin/env python3
"""Checks that the deploy files only use kappe's flags, KAPPE_* variables and config keys.

A misspelt environment variable is silently ignored by a process, and a
misspelt config key may be too, so the operator files are checked against
kappe's interface: the flags in FLAGS, their KAPPE_* twins (upper case,
dashes to underscores) and config keys (the flag names). Scanned:
docker-compose.yml (command lines and environment), systemd/kappe.env
(including commented-out examples), the rendered Kubernetes manifests given on
the command line (container args and env) and every kappe.toml, inline ones in
ConfigMaps included.

Usage: check_flags.py DEPLOY_DIR [RENDERED.yaml ...]
"""

import os
import re
import sys
import tomllib

import yaml

# kappe's flags (see the interface in deploy/README.md); subcommands excluded.
FLAGS = {
    "upstream", "listen", "admin-listen", "config", "threads", "store", "redis-prefix",
    "store-timeout", "store-failure", "state-file", "snapshot-interval", "secret", "secret-file",
    "discard-corrupt-state", "max-visitors", "max-retention", "cap", "campaign-cap", "visitor-cap",
    "max-retargeting-age", "on-drop", "log-format", "access-log", "admin-token", "tls-cert",
    "tls-key", "shutdown-grace",
}
# Flags of the subcommands the deploy files run.
SUBCOMMAND_FLAGS = {"demo-upstream": {"listen"}, "demo": {"listen", "admin-listen"}, "healthcheck": {"admin-url"}}
ENV = {"KAPPE_" + f.upper().replace("-", "_") for f in FLAGS}


def check_args(where, args, problems):
    args = [str(a) for a in args]
    allowed = FLAGS
    if args and not args[0].startswith("-"):
        if args[0] not in SUBCOMMAND_FLAGS:
            problems.append(f"{where}: unknown subcommand {args[0]!r}")
            return
        allowed = SUBCOMMAND_FLAGS[args[0]]
    for a in args:
        if a.startswith("--"):
            flag = a[2:].split("=", 1)[0]
            if flag not in allowed:
                problems.append(f"{where}: unknown flag --{flag}")


def check_env(where, names, problems):
    for name in names:
        if name.startswith("KAPPE_") and name not in ENV:
            problems.append(f"{where}: unknown variable {name}")


def check_toml(where, text, problems):
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problems.append(f"{where}: not TOML: {e}")
        return
    for key in doc:
        if key not in FLAGS:
            problems.append(f"{where}: unknown config key {key!r}")


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    deploy = argv[1]
    problems = []
    seen = 0

    compose_path = os.path.join(deploy, "docker-compose.yml")
    with open(compose_path, encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    for name, svc in compose["services"].items():
        if svc.get("image", "").startswith("kappe"):
            check_args(f"{compose_path}: {name}", svc.get("command", []), problems)
            check_env(f"{compose_path}: {name}", (svc.get("environment") or {}).keys(), problems)
            seen += 1

    env_path = os.path.join(deploy, "systemd", "kappe.env")
    with open(env_path, encoding="utf-8") as f:
        names = re.findall(r"^#?\s*(KAPPE_[A-Z0-9_]+)=", f.read(), re.M)
    check_env(env_path, names, problems)
    seen += bool(names)

    for root, _, files in os.walk(deploy):
        for file in files:
            if file.endswith(".toml"):
                path = os.path.join(root, file)
                with open(path, encoding="utf-8") as f:
                    check_toml(path, f.read(), problems)
                seen += 1

    for path in argv[2:]:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for d in docs:
            where = f"{path}: {d['kind']}/{d['metadata']['name']}"
            if d["kind"] == "ConfigMap":
                for key, text in (d.get("data") or {}).items():
                    if key.endswith(".toml"):
                        check_toml(f"{where} {key}", text, problems)
                        seen += 1
            spec = d.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []):
                if "kappe" in c.get("image", "").split("/")[-1].split(":")[0]:
                    check_args(f"{where}", c.get("args", []), problems)
                    check_env(f"{where}", [e["name"] for e in c.get("env", [])], problems)
                    seen += 1

    for p in problems:
        print(p)
    print(f"{'FAIL' if problems else 'ok'}: {seen} places use kappe's flags, variables or config keys")
    return 1 if problems or not seen else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
