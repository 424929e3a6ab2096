#!/usr/bin/env python3
"""Checks that the Grafana dashboard and the alerting rules only use metrics kappe exports.

Every PromQL expression in the dashboard JSON (panel targets and template
queries) and in the rule files is scanned for `kappe_*` names. A name must be
one of kappe's metric families (a histogram may appear as `_bucket`, `_sum` or
`_count`), and a label compared with `=` or `!=` to a literal must be one of
that family's labels with one of its bounded values. Prometheus' own `up` is
allowed; `kappe_up` is not a metric and is rejected.

Usage: check_metrics.py DASHBOARD.json RULES.yml [RULES.yml ...]
Exit status 1 and one line per problem on failure.
"""

import json
import re
import sys

# kappe's metric families: name -> (type, {label: allowed values or None for any}).
# This mirrors the list the metrics module implements; keep the two in step.
# Target labels added by Prometheus (job, instance, ...) are allowed everywhere.
ANY = None
METRICS = {
    "kappe_build_info": ("gauge", {"version": ANY}),
    "kappe_http_requests_total": ("counter", {"code": {"1xx", "2xx", "3xx", "4xx", "5xx"}}),
    "kappe_request_duration_seconds": ("histogram", {}),
    "kappe_upstream_duration_seconds": ("histogram", {}),
    "kappe_upstream_errors_total": ("counter", {"kind": {"connect", "timeout", "broken"}}),
    "kappe_upstream_up": ("gauge", {}),
    "kappe_connections_active": ("gauge", {}),
    "kappe_connections_rejected_total": ("counter", {}),
    "kappe_impressions_total": ("counter", {}),
    "kappe_dropped_total": (
        "counter",
        {
            "reason": {
                "cap",
                "advertiser_cap",
                "visitor_cap",
                "max_age",
                "burned",
                "no_id",
                "optout",
                "store_unavailable",
            }
        },
    ),
    "kappe_passthrough_total": ("counter", {}),
    "kappe_dry_run_would_drop_total": ("counter", {"reason": ANY}),
    "kappe_inspect_skipped_total": ("counter", {"reason": {"too_large", "no_match"}}),
    "kappe_refetch_total": ("counter", {}),
    "kappe_privacy_signals_total": (
        "counter",
        {"signal": {"own_cookie", "gpc", "dnt", "gpp", "us_privacy", "tcf"}},
    ),
    "kappe_store_visitors": ("gauge", {}),
    "kappe_store_max_visitors": ("gauge", {}),
    "kappe_store_bytes": ("gauge", {}),
    "kappe_store_evictions_total": ("counter", {"reason": {"expired", "capacity"}}),
    "kappe_store_errors_total": ("counter", {"kind": ANY}),
    "kappe_store_up": ("gauge", {}),
    "kappe_config_reloads_total": ("counter", {"result": {"ok", "error"}}),
}
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# A `kappe_` identifier, optionally followed by a label selector.
SELECTOR = re.compile(r"\b(kappe_[a-zA-Z0-9_]*)\b\s*(\{[^}]*\})?")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def family_of(name):
    """The metric family a series name belongs to, or None."""
    if name in METRICS:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if METRICS.get(base, ("",))[0] == "histogram":
                return base
    return None


def check_expr(where, expr, used):
    problems = []
    for m in SELECTOR.finditer(expr):
        name, selector = m.group(1), m.group(2)
        family = family_of(name)
        if family is None:
            problems.append(f"{where}: unknown metric {name}")
            continue
        used.add(family)
        labels = METRICS[family][1]
        for label, op, value in MATCHER.findall(selector or ""):
            if label in TARGET_LABELS or (family.endswith("_duration_seconds") and label == "le"):
                continue
            if label not in labels:
                problems.append(f"{where}: {family} has no label {label}")
            elif op in ("=", "!=") and labels[label] is not ANY and value not in labels[label]:
                problems.append(f"{where}: {family}{{{label}}} has no value {value!r}")
    return problems


def dashboard_exprs(path):
    """(where, expr) for every target expression and template query in a dashboard."""
    with open(path, encoding="utf-8") as f:
        dash = json.load(f)
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            # A data source variable's query is a plugin type, not PromQL.
            if node.get("type") == "datasource":
                return
            title = node.get("title") or node.get("name") or where
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    found.append((f"{path}: {title}", value))
                elif key == "query" and isinstance(value, str):
                    found.append((f"{path}: {title}", value))
                else:
                    walk(value, title)
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(dash, "dashboard")
    panels = [p for p in dash.get("panels", []) if p.get("type") != "row"]
    empty = [p.get("title") for p in panels if not p.get("targets")]
    return found, panels, empty


def rule_exprs(path):
    # Imported here so that METRICS can be read without PyYAML installed.
    import yaml

    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    found = []
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            found.append((f"{path}: {name}", rule["expr"]))
    return found


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    problems = []
    used = set()
    exprs, panels, empty = dashboard_exprs(argv[1])
    if not panels:
        problems.append(f"{argv[1]}: no panels")
    problems += [f"{argv[1]}: panel {t!r} has no query" for t in empty]
    for path in argv[2:]:
        exprs += rule_exprs(path)
    for where, expr in exprs:
        if re.search(r"\bkappe_up\b", expr):
            problems.append(f"{where}: kappe_up is not a metric; use up")
        problems += check_expr(where, expr, used)
        if not SELECTOR.search(expr) and not re.search(r"\bup\b", expr):
            problems.append(f"{where}: expression uses no kappe metric: {expr}")
    for p in problems:
        print(p)
    unused = sorted(set(METRICS) - used)
    status = "FAIL" if problems else "ok"
    print(
        f"{status}: {len(exprs)} expressions, {len(used)}/{len(METRICS)} metric families used"
        + (f" (not shown: {', '.join(unused)})" if unused else "")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
