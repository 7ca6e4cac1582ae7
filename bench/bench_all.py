#!/usr/bin/python3
"""The whole benchmark suite, as `make bench` runs it: boot, snapshot/restore, live
migration and the virtio devices, ferry against QEMU/KVM, then the plots and
docs/BENCHMARKS.md.

    python3 bench/bench_all.py [--repeat N] [--only NAME[,NAME]] [--out FILE.json]
                               [--boot-repeat N] [--snapshot-repeat N] [--no-report]

Environment (what `make bench` passes on):
  BENCH_REPEAT=N         runs per migration scenario and system (default 3); when set,
                         the boot and snapshot parts use at most N as well
  BENCH_ONLY=a,b         only these parts: migration scenario names (see
                         bench/bench_migration.py), `boot`, `snapshot`, `virtio`, or
                         `migration` (every scenario)
  BENCH_BOOT_REPEAT, BENCH_SNAPSHOT_REPEAT   repeats of those parts (default 5 and 3,
                         their scripts' defaults; the whole default suite then takes 10-12
                         minutes of the 30-minute budget on this 2-CPU host, so nothing
                         is cut; lower these first if a slower host needs it)
  BENCH_QUIET_WAIT=S     max seconds to wait for a quiet host before each sample
  BENCH_T0               set by `make bench` (its start, epoch seconds): the result
                         records the whole make time as well

Each part runs as its own process (bench_boot.py, bench_snapshot.py,
bench_migration.py, each with a time limit) writing into a temporary directory; the
results are merged into ONE file, bench/results/bench-<UTC timestamp>.json: the machine
(kernel, CPU, QEMU and ferry versions), the settings, how long each part took, and each
part's full result (every sample, summaries, commands). A run of the whole default suite
then draws the plots (bench/plot.py -> bench/plots/*.png) and regenerates
docs/BENCHMARKS.md (bench/report.py). A partial run (BENCH_ONLY, an interrupted run, or
one where a part wrote no result) is marked "partial" and touches neither:
`python3 bench/report.py --bench FILE` renders one on request.
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B                    # noqa: E402
import bench_migration as M             # noqa: E402

PY = sys.executable or "/usr/bin/python3"
PART_TIMEOUT_S = {"boot": 600, "snapshot": 900, "migration": 2400, "virtio": 900}
BUDGET_S = 30 * 60
BOOT_REPEAT = 5                 # bench_boot.py's own default
SNAPSHOT_REPEAT = 3             # bench_snapshot.py's own default


def env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


def run_part(name, cmd, timeout):
    """Runs one part's script; its stderr (one line per sample) goes straight through.
    On timeout the script gets SIGTERM (it kills its VMMs) and then SIGKILL."""
    B.log(f"== {name}: {B.show_cmd(cmd)}")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=B.ROOT, start_new_session=True)
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        B.log(f"== {name}: over its {timeout} s limit, stopping it")
        os.killpg(p.pid, signal.SIGTERM)
        try:
            rc = p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            rc = p.wait()
    except BaseException:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
        raise
    took = time.monotonic() - t0
    B.log(f"== {name}: exit {rc} after {took:.0f} s")
    return rc, took


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=env_int("BENCH_REPEAT", 3))
    ap.add_argument("--only", default=os.environ.get("BENCH_ONLY", ""))
    ap.add_argument("--boot-repeat", type=int, default=None)
    ap.add_argument("--snapshot-repeat", type=int, default=None)
    ap.add_argument("--quiet-wait", type=float,
                    default=float(os.environ.get("BENCH_QUIET_WAIT") or 3.0))
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="migration: cancel after this many seconds (not converged)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-report", action="store_true",
                    help="do not draw plots nor rewrite docs/BENCHMARKS.md")
    args = ap.parse_args()
    # The boot and snapshot parts keep their scripts' defaults (5 and 3 runs): the suite
    # fits the budget with them. An explicit, smaller --repeat/BENCH_REPEAT caps them.
    cap = args.repeat if (os.environ.get("BENCH_REPEAT") or "--repeat" in " ".join(sys.argv)) \
        else 99
    boot_repeat = args.boot_repeat or env_int("BENCH_BOOT_REPEAT", min(BOOT_REPEAT, cap))
    snap_repeat = args.snapshot_repeat or env_int("BENCH_SNAPSHOT_REPEAT",
                                                  min(SNAPSHOT_REPEAT, cap))

    only = [n.strip() for n in args.only.split(",") if n.strip()]
    known = set(M.SCENARIOS) | {"boot", "snapshot", "migration", "virtio"}
    bad = [n for n in only if n not in known]
    if bad:
        sys.exit(f"BENCH_ONLY: unknown {bad}; known: boot, snapshot, migration, virtio, "
                 + ", ".join(M.SCENARIOS))
    parts = ["boot", "snapshot", "migration", "virtio"]
    scenarios = list(M.SCENARIOS)
    if only:
        named = [n for n in only if n in M.SCENARIOS]
        parts = [p for p in parts if p in only or (p == "migration" and named)]
        if "migration" not in only and named:
            scenarios = named
    partial = bool(only) and not (set(parts) == {"boot", "snapshot", "migration", "virtio"}
                                  and scenarios == list(M.SCENARIOS))

    B.check_tools(need_qemu=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = args.out or os.path.join(B.RESULTS, f"bench-{stamp}.json")
    tmp = tempfile.mkdtemp(prefix="ferry-bench-all-")
    info = B.machine_info()
    t0 = time.monotonic()
    q = ["--quiet-wait", f"{args.quiet_wait:g}"]
    cmds = {
        "boot": [PY, "bench/bench_boot.py", "--repeat", str(boot_repeat)] + q,
        "snapshot": [PY, "bench/bench_snapshot.py", "--repeat", str(snap_repeat)] + q,
        "migration": [PY, "bench/bench_migration.py", "--repeat", str(args.repeat),
                      "--only", ",".join(scenarios), "--timeout", f"{args.timeout:g}"] + q,
        "virtio": [PY, "bench/bench_virtio.py", "--repeat", str(min(args.repeat, 3))],
    }
    results, took, status = {}, {}, {}
    interrupted = False
    try:
        for part in parts:
            path = os.path.join(tmp, f"{part}.json")
            rc, took[part] = run_part(part, cmds[part] + ["--out", path], PART_TIMEOUT_S[part])
            status[part] = rc
            if os.path.exists(path):
                with open(path) as f:
                    results[part] = json.load(f)
            else:
                B.log(f"== {part}: no result file (exit {rc})")
    except KeyboardInterrupt:
        B.log("interrupted: writing what was measured")
        interrupted = True
    for part in parts:             # what an interrupted script still wrote
        path = os.path.join(tmp, f"{part}.json")
        if part not in results and os.path.exists(path):
            try:
                with open(path) as f:
                    results[part] = json.load(f)
            except ValueError:
                pass
    elapsed = time.monotonic() - t0
    # A run that lost a part (interrupted, or a script that wrote nothing) is partial too:
    # it must not replace the plots and the page made from a complete one.
    partial = partial or interrupted or any(p not in results for p in parts)
    result = {
        "benchmark": "suite",
        "machine": info,
        "config": {
            "argv": "make bench" if os.environ.get("MAKELEVEL") else
                    B.show_cmd(["python3"] + sys.argv),
            "env": {k: os.environ[k] for k in ("BENCH_REPEAT", "BENCH_ONLY",
                                               "BENCH_BOOT_REPEAT", "BENCH_SNAPSHOT_REPEAT",
                                               "BENCH_QUIET_WAIT") if os.environ.get(k)},
            "parts": parts, "scenarios": scenarios if "migration" in parts else [],
            "repeat": args.repeat, "boot_repeat": boot_repeat,
            "snapshot_repeat": snap_repeat, "quiet_wait_s": args.quiet_wait,
            "timeout_s": args.timeout, "partial": partial, "interrupted": interrupted,
            "part_seconds": {k: round(v, 1) for k, v in took.items()},
            "part_exit": status,
            "elapsed_s": round(elapsed, 1),
            # `make bench` passes its start time: deps check and build included
            "make_elapsed_s": round(time.time() - float(os.environ["BENCH_T0"]), 1)
            if os.environ.get("BENCH_T0") else None,
            "budget_s": BUDGET_S,
            "commands": {k: B.show_cmd(["python3"] + cmds[k][1:]) for k in parts},
        },
        "results": results,
    }
    B.write_result(out, result)
    shutil.rmtree(tmp, ignore_errors=True)
    B.log(f"suite: {elapsed / 60:.1f} min for {', '.join(parts)}"
          + (f" (over the {BUDGET_S // 60}-minute budget)" if elapsed > BUDGET_S else ""))
    if "migration" in results:
        print(results["migration"].get("report_markdown", ""))
    failed = [p for p in parts if p not in results]
    if interrupted:
        sys.exit(130)
    if partial or args.no_report:
        B.log(f"partial run: plots and docs/BENCHMARKS.md left alone; render it with "
              f"`python3 bench/report.py --bench {os.path.relpath(out, B.ROOT)}`")
    elif results:
        for cmd in ([PY, "bench/plot.py", out], [PY, "bench/report.py", "--bench", out]):
            r = subprocess.run(cmd, cwd=B.ROOT, timeout=300)
            if r.returncode != 0:
                failed.append(os.path.basename(cmd[1]))
    total = time.monotonic() - t0
    B.log(f"make bench: {total / 60:.1f} min in all")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
