#!/usr/bin/python3
"""PNG plots (gnuplot) of a benchmark result, linked from docs/BENCHMARKS.md.

    python3 bench/plot.py [RESULT.json] [--dir bench/plots]

RESULT is a suite file (bench/results/bench-*.json, from bench/bench_all.py) or a
migration result (migration-*.json); default: the newest complete suite file. Writes:
  downtime.png          downtime as each system reports it, per scenario: median, with
                        the min-max range as an error bar (log scale)
  gap.png               the guest-visible gap (debug-console ticks), the same way
  timeline-<S>.png      one migration of each system in scenario S (the run with the
                        median total time): bytes sent per round (bars as wide as the
                        round lasted), dirty pages left at the end of each round, and the
                        stop (its last `downtime` ms) shaded
Needs gnuplot (scripts/deps.sh bench installs gnuplot-nox).
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
PLOTS = os.path.join(BENCH, "plots")
TIMELINE_SCENARIOS = ("dirty-max", "dirty-20k-10ms")
SYSTEMS = (("ferry", "ferry", "#1f77b4"), ("qemu", "QEMU", "#d62728"))
TERM = 'set terminal pngcairo size {w},{h} font "DejaVu Sans,10" noenhanced'


def newest_suite():
    for path in sorted(glob.glob(os.path.join(BENCH, "results", "bench-*.json")), reverse=True):
        with open(path) as f:
            res = json.load(f)
        if not res.get("config", {}).get("partial") and "migration" in res.get("results", {}):
            return path
    return None


def migration_of(res):
    return res["results"]["migration"] if res.get("benchmark") == "suite" else res


def gp(script, tmp):
    path = os.path.join(tmp, "plot.gp")
    with open(path, "w") as f:
        f.write(script)
    r = subprocess.run(["gnuplot", path], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"gnuplot failed: {r.stderr}\n--- script:\n{script}")


def val(v):
    return "NaN" if v is None else f"{v:.6g}"


def bars(mig, metric, title, ylabel, png, tmp):
    """Median per scenario and system with min-max error bars."""
    sm = mig["summary"]
    names = [n for n in sm if all(s in sm[n] for s, _, _ in SYSTEMS)]
    data = os.path.join(tmp, f"{metric}.dat")
    with open(data, "w") as f:
        for n in names:
            cols = []
            for s, _, _ in SYSTEMS:
                x = sm[n][s].get(metric) or {}
                # log scale: a 0 ms median (QEMU rounds to whole ms) is drawn at 0.1
                cols += [val(max(x[k], 0.1)) if x.get(k) is not None else "NaN"
                         for k in ("median", "min", "max")]
            f.write(f'"{n}" ' + " ".join(cols) + "\n")
    plots = []
    for i, (s, label, color) in enumerate(SYSTEMS):
        c = 2 + 3 * i
        plots.append(f"'{data}' using {c}:{c + 1}:{c + 2}" + (":xtic(1)" if i == 0 else "")
                     + f" title '{label}' lc rgb '{color}'")
    gp(f"""{TERM.format(w=1100, h=520)}
set output '{png}'
set title '{title}'
set ylabel '{ylabel}'
set logscale y
set yrange [0.1:*]
set grid ytics mytics
set style data histograms
set style histogram errorbars gap 1.5 lw 1.2
set style fill solid 0.75 border -1
set boxwidth 0.9
set xtics rotate by -25 scale 0
set key top left
set bmargin 6
plot {", ".join(plots)}
""", tmp)


def representative(runs):
    """The converged run with the median total time (the lower middle one)."""
    ok = sorted((r for r in runs if r.get("converged") and r.get("timeline")),
                key=lambda r: r.get("total_ms") or 0)
    return ok[(len(ok) - 1) // 2] if ok else None


def timeline_rows(run, system):
    """[(label, t_start_ms, t_end_ms, MiB, dirty pages left)] of one run."""
    rows, t = [], 0.0
    for r in run["timeline"]:
        rows.append((str(r["round"]), t, r["t_end_ms"], (r["bytes"] or 0) / 2**20,
                     r.get("dirty_pages")))
        t = r["t_end_ms"]
    if system == "ferry" and run.get("total_ms") and run.get("state") == "completed":
        rest = (run.get("bytes") or 0) - sum((r["bytes"] or 0) for r in run["timeline"])
        label = "post-copy" if (run.get("report") or {}).get("postcopy") else "stop"
        rows.append((label, t, max(run["total_ms"], t + 1), rest / 2**20, 0))
    return rows


def timeline(mig, name, png, tmp):
    per = mig["samples"].get(name) or {}
    panels = []
    for s, label, color in SYSTEMS:
        run = representative(per.get(s) or [])
        if run is None:
            continue
        data = os.path.join(tmp, f"tl-{name}-{s}.dat")
        with open(data, "w") as f:
            for lab, a, b, mib, dirty in timeline_rows(run, s):
                f.write(f'"{lab}" {a:.3f} {b:.3f} {mib:.4f} {val(dirty)}\n')
        dt, total = run.get("downtime_ms"), run.get("total_ms") or 0
        title = (f"{label}: {run.get('rounds')} rounds, total {total:.0f} ms, "
                 f"downtime {dt:.1f} ms, {(run.get('bytes') or 0) / 2**20:.0f} MiB")
        shade = ""
        if dt is not None and not (run.get("report") or {}).get("postcopy") \
                and not run.get("qemu_postcopy_vcpu_blocktime_ms"):
            # the stop: the last `downtime` ms of the migration (ferry: before the source
            # reports the end; QEMU: its completion), shaded
            shade = (f"set object 1 rect from {total - dt:.3f}, graph 0 to {total:.3f}, "
                     "graph 1 fc rgb 'gray40' fs transparent solid 0.35 noborder behind\n")
        panels.append(f"""set title '{title}'
unset object 1
{shade}plot '{data}' using (($2+$3)/2):4:($3-$2) with boxes lc rgb '{color}' title 'MiB sent in the round', \\
     '' using 3:($5/1000) axes x1y2 with linespoints pt 7 ps 0.8 lw 2 lc rgb 'black' title 'dirty pages left at its end (thousands)'
""")
    if not panels:
        return False
    sc = (mig.get("config", {}).get("scenarios") or {}).get(name, {})
    gp(f"""{TERM.format(w=1200, h=460)}
set output '{png}'
set multiplot layout 1,{len(panels)} title '{sc.get("title", name).replace("`", "")}'
set xlabel 'ms since the migration started'
set ylabel 'MiB sent'
set y2label 'dirty pages left (thousands)'
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set style fill solid 0.5 border -1
set key below font ',9'
set grid xtics ytics
{"".join(panels)}
unset multiplot
""", tmp)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("result", nargs="?")
    ap.add_argument("--dir", default=PLOTS)
    args = ap.parse_args()
    path = args.result or newest_suite()
    if not path:
        sys.exit("no complete bench/results/bench-*.json: run `make bench` first")
    if not shutil.which("gnuplot"):
        sys.exit("gnuplot not found: run `scripts/deps.sh bench` (installs gnuplot-nox)")
    with open(path) as f:
        mig = migration_of(json.load(f))
    os.makedirs(args.dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="ferry-plot-")
    made = []
    try:
        for metric, title, png in (
                ("downtime_ms", "Live migration downtime as each VMM reports it "
                 "(median, min-max)", "downtime.png"),
                ("gap_ms", "Guest-visible gap: longest silence of the 1 ms debug-console "
                 "tick (median, min-max)", "gap.png")):
            out = os.path.join(args.dir, png)
            bars(mig, metric, title, "ms (log scale)", out, tmp)
            made.append(out)
        for name in TIMELINE_SCENARIOS:
            out = os.path.join(args.dir, f"timeline-{name}.png")
            if timeline(mig, name, out, tmp):
                made.append(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for m in made:
        print(f"wrote {os.path.relpath(m, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
