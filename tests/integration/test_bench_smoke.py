"""Smoke test of the benchmark harness behind `make bench`: one short live-migration
scenario (idle 1 GiB guest), one run on each system (ferry and QEMU/KVM, each between
two of its own processes over loopback TCP), into a temporary result file that must be
well-formed. QEMU is required: without it the test fails, it does not skip.

ferry is $FERRY_BIN (default build/asan/ferry, as for the other integration tests), the
guest $FERRY_GUEST; QEMU is $QEMU (default qemu-system-x86_64)."""
import json
import numbers
import os
import shutil
import signal
import subprocess
import sys
import time

from ferrylib import FERRY, GUEST, ROOT, SAN_ENV

QEMU = os.environ.get("QEMU", "qemu-system-x86_64")
SCRIPT = os.path.join(ROOT, "bench", "bench_migration.py")
RESULTS = os.path.join(ROOT, "bench", "results")
SCENARIO = "idle-1g"
LIMIT_S = 55


def listing(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def run_harness(out, log, systems=("ferry", "qemu")):
    """Runs the harness; on overrun it gets SIGTERM (it kills its VMMs), then SIGKILL."""
    cmd = [sys.executable, SCRIPT, "--repeat", "1", "--only", SCENARIO, "--out", str(out),
           "--settle", "0.5", "--quiet-wait", "0", "--timeout", "30",
           "--systems", ",".join(systems)]
    env = dict(os.environ, FERRY=FERRY, GUEST=GUEST, QEMU=QEMU, **SAN_ENV)
    env.pop("BENCH_REPEAT", None)
    with open(log, "wb") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
        try:
            return p.wait(timeout=LIMIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            return None


def is_num(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def rerun_missed_wakeups(res, tmp_path):
    """This host's KVM (PVM) now and then leaves a migrated guest asleep for good: every
    vCPU halted with interrupts enabled and an interrupt pending that it never delivers
    (seen with QEMU and with ferry alike, rarely). The harness diagnoses it
    from the destination's vCPU state (dst_missed_wakeup); such a run says nothing about
    the harness, so that system's run is done once more, and that one must pass. Any
    other failure, or the same one twice, still fails the test."""
    for system, runs in res["samples"][SCENARIO].items():
        r = runs[0] if len(runs) == 1 else {}
        if not (r.get("converged") and not r.get("verify_ok") and r.get("dst_missed_wakeup")):
            continue
        print(f"{system}: the destination missed a wake-up ({json.dumps(r.get('dst_diag'))[:2000]});"
              " running it again")
        out, log = tmp_path / f"smoke-{system}.json", tmp_path / f"harness-{system}.log"
        rc = run_harness(out, log, systems=(system,))
        assert rc == 0 and out.exists(), f"re-run of {system}: exit {rc}:\n" + \
            log.read_text(errors="replace")[-3000:]
        again = json.loads(out.read_text())
        res["samples"][SCENARIO][system] = again["samples"][SCENARIO][system]
        res["summary"][SCENARIO][system] = again["summary"][SCENARIO][system]


def test_bench_smoke_one_scenario_both_systems(tmp_path):
    assert shutil.which(QEMU), (
        f"{QEMU} not found: the benchmarks compare ferry with QEMU/KVM; install it with "
        "`scripts/deps.sh bench` (qemu-system-x86)")
    doc = os.path.join(ROOT, "docs", "BENCHMARKS.md")
    results_before = listing(RESULTS)
    doc_before = os.stat(doc).st_mtime_ns if os.path.exists(doc) else None
    out, log = tmp_path / "smoke.json", tmp_path / "harness.log"
    t0 = time.monotonic()
    rc = run_harness(out, log)
    took = time.monotonic() - t0
    text = log.read_text(errors="replace")
    assert rc is not None, f"harness still running after {LIMIT_S} s:\n{text[-3000:]}"
    assert rc == 0, f"harness exit {rc}:\n{text[-3000:]}"
    assert out.exists(), f"no result file:\n{text[-3000:]}"
    res = json.loads(out.read_text())
    rerun_missed_wakeups(res, tmp_path)

    assert res["benchmark"] == "migration"
    m = res["machine"]
    for k in ("kernel", "qemu_version", "ferry_version", "ferry_sha256", "testguest_sha256"):
        assert m.get(k), f"machine.{k} missing: {m}"
    assert res["config"]["systems"] == ["ferry", "qemu"]
    per = res["samples"][SCENARIO]
    assert set(per) == {"ferry", "qemu"}, per.keys()
    for system in ("ferry", "qemu"):
        runs = per[system]
        assert len(runs) == 1, (system, len(runs))
        r = runs[0]
        why = f"{system}: {json.dumps({k: v for k, v in r.items() if k not in ('report', 'qemu_samples', 'gap_detail')})[:3000]}"
        assert "error" not in r, why
        assert r["converged"] is True, why
        assert r["verify_ok"] is True, why
        for k in ("downtime_ms", "gap_ms", "total_ms", "wall_ms", "bytes", "rounds",
                  "src_rss_peak_kib", "dst_rss_peak_kib"):
            assert is_num(r.get(k)), f"{k} not a number: {why}"
        assert 0 <= r["downtime_ms"] < 1000 and 0 <= r["gap_ms"] < 1000, why
        assert r["total_ms"] > 0 and r["rounds"] >= 1, why
        assert r["bytes"] > 60 << 20, why          # the guest's 64 MiB went over
        assert r["timeline"] and all(is_num(x["bytes"]) for x in r["timeline"]), why
        assert not r["src_problems"] and not r["dst_problems"], why
        sm = res["summary"][SCENARIO][system]
        assert sm["converged"] == {"n": 1, "count": 1}
        assert is_num(sm["downtime_ms"]["median"]) and is_num(sm["bytes"]["median"])
    ferry = per["ferry"][0]
    assert ferry["src_exit"] == 0 and ferry["dst_exit"] == 0, \
        f"ferry exits: source {ferry['src_exit']}, destination {ferry['dst_exit']}"
    assert SCENARIO in res["report_markdown"]

    # Nothing was written where the real results and the docs live.
    assert listing(RESULTS) == results_before
    assert (os.stat(doc).st_mtime_ns if os.path.exists(doc) else None) == doc_before
    assert took < LIMIT_S, f"the harness took {took:.0f} s"
