#!/usr/bin/env python3
"""Turns the raw files of compare.sh into results.json, table.md and chart.svg.

Usage: report.py RAW_DIR OUT_DIR. Throughput, CPU and rates are medians over the rounds. Latency
percentiles are read from all the requests of a target's paced runs pooled into one distribution
(from the quantiles paced.lua prints), and latency added is the target's pooled percentile less
that of going direct; raw files without quantiles fall back to the median of each round's
difference from going direct.
"""
import glob
import json
import re
import statistics
import sys

raw, out = sys.argv[1], sys.argv[2]
ORDER = ["direct", "nginx", "haproxy", "haproxy-cap", "kappe", "kappe-cap", "kappe-cap-redis"]
LABEL = {
    "direct": "direct to the ad server",
    "nginx": "nginx, plain proxy",
    "haproxy": "HAProxy, plain proxy",
    "haproxy-cap": "HAProxy, stick-table cap",
    "kappe": "kappe, no caps",
    "kappe-cap": "kappe, caps on memory",
    "kappe-cap-redis": "kappe, caps on Redis",
}

machine = {}
for line in open(f"{raw}/machine"):
    if "=" in line and not line.startswith("series"):
        k, v = line.rstrip("\n").split("=", 1)
        machine[k] = v


def med(xs):
    return statistics.median(xs) if xs else None


def cpu(text):
    m = re.search(r"CPU ticks=(\d+) redis=(\d+) hz=(\d+)", text)
    return (int(m.group(1)) / int(m.group(3)), int(m.group(2)) / int(m.group(3))) if m else (None, None)


def closed(path):
    s = open(path).read()
    m = re.search(r"Requests/sec:\s+([\d.]+)", s)
    if not m:
        return None
    n = int(re.search(r"(\d+) requests in", s).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", s)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", s)
    c, rc = cpu(s)
    return {
        "rps": float(m.group(1)),
        "requests": n,
        "non2xx": int(bad.group(1)) if bad else 0,
        "errors": sum(map(int, errs.groups())) if errs else 0,
        "cpu_per_1000": c / n * 1000 if n else None,
        "redis_cpu_per_1000": rc / n * 1000 if n else None,
    }


def paced(path):
    s = open(path).read()
    m = re.search(r"PACED requests=(\d+) seconds=([\d.]+) non2xx=(\d+) errors=(\d+) p50=(\d+) p99=(\d+) p999=(\d+)", s)
    if not m:
        return None
    n = int(m.group(1))
    c, rc = cpu(s)
    return {
        "requests": n,
        "rps": n / float(m.group(2)),
        "non2xx": int(m.group(3)),
        "errors": int(m.group(4)),
        "p50": int(m.group(5)),
        "p99": int(m.group(6)),
        "p999": int(m.group(7)),
        "quantiles": quantiles(s),
        "cpu_per_1000": c / n * 1000 if n else None,
        "redis_cpu_per_1000": rc / n * 1000 if n else None,
    }


def quantiles(text):
    """The (percentile, µs) grid a paced run printed, or None."""
    m = re.search(r"^QUANTILES (.*)$", text, re.M)
    if not m:
        return None
    return [(float(p), int(v)) for p, v in (x.split(":") for x in m.group(1).split())]


PERCENTILE = {"p50": 50.0, "p99": 99.0, "p999": 99.9}


def pooled(runs, pct):
    """The `pct`-th percentile of all the requests of `runs`, or None when a run has no grid.

    Each step of a run's grid carries its share of the run's requests at the step's upper value
    (never below the true value), so runs of different lengths weigh by their requests.
    """
    if not runs or any(not v["quantiles"] for v in runs):
        return None
    mass = []
    for v in runs:
        below = 0.0
        for p, us in v["quantiles"]:
            mass.append((us, (p - below) / 100 * v["requests"]))
            below = p
    mass.sort()
    need = pct / 100 * sum(w for _, w in mass) * (1 - 1e-12)
    seen = 0.0
    for us, w in mass:
        seen += w
        if seen >= need:
            return us
    return mass[-1][0]


def by_round(w, kind, name, parse):
    """A target's figures of one kind ("max" or "lat") keyed by round."""
    runs = {int(f.rsplit(".", 1)[1]): parse(f) for f in glob.glob(f"{raw}/w{w}.{kind}.{name}.*")}
    return {r: v for r, v in runs.items() if v}


# The targets of kappe with caps on memory, each judged from the table and round by
# round: the targets of a round run one after the other within a minute, so a round's own ratio
# leaves out the drift of a shared machine between rounds, which moves single medians by 10 to
# 20% here. Each: label, peer, kind of run ("max" closed loop, "lat" constant rate), figure,
# whether kappe-cap's figure is divided by the peer's ("ratio") or, for latency added over direct
# in the same round, the peer's is subtracted ("diff": going direct cancels out), what is needed,
# the test of one value, and the figure's column in the table.
TARGETS = [
    ("throughput vs HAProxy cap", "haproxy-cap", "max", "rps", "ratio", "at least 1.00x",
     lambda v: v >= 1.0, "max_rps"),
    ("throughput vs nginx plain", "nginx", "max", "rps", "ratio", "at least 1.00x",
     lambda v: v >= 1.0, "max_rps"),
    ("CPU per request vs HAProxy cap", "haproxy-cap", "max", "cpu_per_1000", "ratio",
     "at most 1.00x", lambda v: v <= 1.0, "cpu_s_per_1000_max"),
    ("added p99 vs nginx", "nginx", "lat", "p99", "diff", "at most +0 µs", lambda v: v <= 0,
     "added_p99_us"),
    ("ambition: throughput vs HAProxy plain", "haproxy", "max", "rps", "ratio",
     "at least 1.20x", lambda v: v >= 1.2, "max_rps"),
]


def targets(rows, rounds):
    """The targets' verdicts from a series' rows and its runs, rounds[kind][name][round]."""
    out = []
    for label, peer, kind, fig, how, need, ok, column in TARGETS:
        mine = rounds[kind].get("kappe-cap", {})
        theirs = rounds[kind].get(peer, {})
        vals = []
        for r in sorted(set(mine) & set(theirs)):
            a, b = mine[r][fig], theirs[r][fig]
            if a is None or b is None:
                continue
            vals.append(a / b if how == "ratio" else a - b)
        if not vals:
            continue
        m = med(vals)
        a, b = rows.get("kappe-cap", {}).get(column), rows.get(peer, {}).get(column)
        table = None if a is None or b is None else a / b if how == "ratio" else a - b
        out.append({
            "target": label,
            "peer": peer,
            "need": need,
            "unit": "x" if how == "ratio" else "µs",
            "of_table": table,
            "of_table_met": table is not None and ok(table),
            "median": m,
            "min": min(vals),
            "max": max(vals),
            "rounds_met": sum(map(ok, vals)),
            "rounds": len(vals),
            "met": ok(m),
        })
    return out


series = {}
for w in sorted({re.match(r".*/w(\d+)\.", f).group(1) for f in glob.glob(f"{raw}/w*.max.*")}):
    rss = {}
    if glob.glob(f"{raw}/w{w}.rss"):
        for line in open(f"{raw}/w{w}.rss"):
            k, v = line.strip().split("=")
            rss[k] = int(v)
    rows = {}
    maxes = {}
    lat = {}
    for name in ORDER:
        runs = by_round(w, "max", name, closed)
        if not runs:
            continue
        maxes[name] = runs
        lat[name] = by_round(w, "lat", name, paced)
        rows[name] = {
            "label": LABEL[name],
            "max_rps": med([v["rps"] for v in runs.values()]),
            "max_rps_rounds": [runs[r]["rps"] for r in sorted(runs)],
            "cpu_s_per_1000_max": med([v["cpu_per_1000"] for v in runs.values()]),
            "redis_cpu_s_per_1000_max": med([v["redis_cpu_per_1000"] for v in runs.values()]),
            "non2xx": sum(v["non2xx"] for v in runs.values()),
            "errors": sum(v["errors"] for v in runs.values()),
            "rss_mib": rss.get(name, 0) / 1024,
        }
    for name, row in rows.items():
        mine = lat.get(name, {})
        base = lat.get("direct", {})
        for p in ("p50", "p99", "p999"):
            own, direct = pooled(list(mine.values()), PERCENTILE[p]), pooled(list(base.values()), PERCENTILE[p])
            row[f"pooled_{p}"] = own is not None and direct is not None
            if row[f"pooled_{p}"]:
                row[f"{p}_us"], row[f"added_{p}_us"] = own, own - direct
            else:
                row[f"{p}_us"] = med([v[p] for v in mine.values()])
                row[f"added_{p}_us"] = med([mine[r][p] - base[r][p] for r in mine if r in base])
        row["const_rps"] = med([v["rps"] for v in mine.values()])
        row["cpu_s_per_1000_const"] = med([v["cpu_per_1000"] for v in mine.values()])
        row["redis_cpu_s_per_1000_const"] = med([v["redis_cpu_per_1000"] for v in mine.values()])
        row["const_errors"] = sum(v["errors"] for v in mine.values())
    series[w] = {
        "rate": machine.get(f"rate.{w}"),
        "load_start": machine.get(f"load.{w}.start"),
        "load_end": machine.get(f"load.{w}.end"),
        "rows": rows,
        "targets": targets(rows, {"max": maxes, "lat": lat}),
    }

json.dump({"machine": machine, "series": series}, open(f"{out}/results.json", "w"), indent=1)


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


HOW_POOLED = ("Throughput, CPU and the constant rate are medians over the rounds; latency is read from "
              "all the requests of a target's rounds together, less going direct the same way.")
HOW_MEDIANS = "Medians over the rounds."
all_pooled = all(r["pooled_p99"] for s in series.values() for r in s["rows"].values())
# The binary the run used, when compare.sh recorded it: a build other than the release build
# shows in the command, so that the command repeats the run.
kappe_bin = machine.get("kappe_bin")
kappe_desc = machine.get("kappe") + (f" (`{kappe_bin}`)" if kappe_bin else "")
command = machine.get("command")
if kappe_bin and kappe_bin != "target/release/kappe":
    command = f"KAPPE_BIN={kappe_bin} {command}"
lines = [
    f"Measured {machine.get('date')} on {machine.get('cpu')}, {machine.get('cores')} cores, "
    f"Linux {machine.get('kernel')}; kappe {kappe_desc}, nginx {machine.get('nginx')}, "
    f"HAProxy {machine.get('haproxy')}. Loopback; wrk, {machine.get('conns')} connections, "
    f"{machine.get('seconds')} s per run, {machine.get('rounds')} interleaved rounds, 1,000,000 random visitors. "
    f"{HOW_POOLED if all_pooled else HOW_MEDIANS} Command: `{command}`.",
    "",
]
for w, s in series.items():
    pin = ("proxy pinned to CPU 1; load generator, ad server and Redis on CPU 0" if w == "1"
           else "nothing pinned")
    lines += [
        f"**{w} worker{'s' if w != '1' else ''} each** ({pin}; load average {s['load_start']} at the start, "
        f"{s['load_end']} at the end; constant rate {s['rate']} req/s):",
        "",
        "| target | max req/s | vs HAProxy cap | CPU s / 1000 req at max | CPU s / 1000 req at constant rate "
        "| added p50 | added p99 | added p99.9 | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ref = s["rows"].get("haproxy-cap", {}).get("max_rps")
    for name, r in s["rows"].items():
        vs = f"{r['max_rps'] / ref:.2f}x" if ref else ""
        added = ("(baseline)",) * 3 if name == "direct" else tuple(
            f"{fmt(r[f'added_{p}_us'], '.0f')} µs" for p in ("p50", "p99", "p999"))
        extra = ""
        if name == "kappe-cap-redis" and r.get("redis_cpu_s_per_1000_max"):
            extra = f" + Redis {r['redis_cpu_s_per_1000_max']:.4f}"
        lines.append(
            f"| {r['label']} | {r['max_rps']:.0f} | {vs} | {fmt(r['cpu_s_per_1000_max'], '.4f')}{extra} "
            f"| {fmt(r['cpu_s_per_1000_const'], '.4f')} | {added[0]} | {added[1]} | {added[2]} "
            f"| {r['rss_mib']:.1f} MiB |")
    bad = {n: (r["non2xx"], r["errors"] + r.get("const_errors", 0)) for n, r in s["rows"].items()
           if r["errors"] + r.get("const_errors", 0)}
    if bad:
        lines += ["", "Socket errors: " + ", ".join(f"{n} {e}" for n, (_, e) in bad.items())]
    if s["targets"]:
        lines += [
            "",
            "Targets of kappe with caps on memory: from the table above, and round by round "
            "(each round's own ratio or difference, its median and range over the rounds):",
            "",
            "| target | needed | from the table | met | round by round: median | range "
            "| rounds met | met |",
            "|---|---|---:|---|---:|---:|---:|---|",
        ]
        for t in s["targets"]:
            spec = ".2f" if t["unit"] == "x" else "+.0f"
            unit = "x" if t["unit"] == "x" else " µs"

            def v(x):
                return "n/a" if x is None else f"{format(x, spec)}{unit}"

            lines.append(
                f"| {t['target']} | {t['need']} | {v(t['of_table'])} "
                f"| {'yes' if t['of_table_met'] else 'no'} | {v(t['median'])} "
                f"| {v(t['min'])} to {v(t['max'])} | {t['rounds_met']} of {t['rounds']} "
                f"| {'yes' if t['met'] else 'no'} |")
    lines.append("")
open(f"{out}/table.md", "w").write("\n".join(lines))

# chart: per series, max req/s and added p99 as horizontal bars
colors = {"direct": "#999999", "nginx": "#2e7d32", "haproxy": "#1565c0", "haproxy-cap": "#64b5f6",
          "kappe": "#e65100", "kappe-cap": "#ff9800", "kappe-cap-redis": "#ffcc80"}
bar_h, gap, left, width = 18, 4, 190, 300
svg = []
y = 30
for w, s in series.items():
    rows = s["rows"]
    if not rows:
        continue
    maxr = max(r["max_rps"] for r in rows.values())
    maxp = max([r["added_p99_us"] or 0 for n, r in rows.items() if n != "direct"] + [1])
    svg.append(f'<text x="10" y="{y}" font-weight="bold">{w} worker{"s" if w != "1" else ""} each</text>')
    svg.append(f'<text x="{left}" y="{y}">max req/s (closed loop)</text>')
    svg.append(f'<text x="{left + width + 120}" y="{y}">added p99 at {s["rate"]} req/s (µs)</text>')
    y += 10
    for name, r in rows.items():
        c = colors[name]
        svg.append(f'<text x="10" y="{y + 13}">{r["label"]}</text>')
        bw = width * r["max_rps"] / maxr
        svg.append(f'<rect x="{left}" y="{y}" width="{bw:.1f}" height="{bar_h}" fill="{c}"/>')
        svg.append(f'<text x="{left + bw + 4:.1f}" y="{y + 13}">{r["max_rps"]:.0f}</text>')
        if name != "direct" and r["added_p99_us"] is not None:
            pw = max(0, 200 * r["added_p99_us"] / maxp)
            x0 = left + width + 120
            svg.append(f'<rect x="{x0}" y="{y}" width="{pw:.1f}" height="{bar_h}" fill="{c}"/>')
            svg.append(f'<text x="{x0 + pw + 4:.1f}" y="{y + 13}">{r["added_p99_us"]:.0f}</text>')
        y += bar_h + gap
    y += 30
svg.append(f'<text x="10" y="{y}" fill="#555">{machine.get("date")}, {machine.get("cpu")}, '
           f'{machine.get("cores")} cores; {machine.get("rounds")} rounds</text>')
head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 400}" height="{y + 20}" '
        f'font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>')
open(f"{out}/chart.svg", "w").write(head + "\n".join(svg) + "</svg>\n")
print(open(f"{out}/table.md").read())
