#!/usr/bin/python3
"""Live migration over loopback TCP: ferry vs QEMU (pre-copy), same guest and settings.

    python3 bench/bench_migration.py [--repeat N] [--only NAME[,NAME]] [--out FILE.json]
                                     [--timeout S] [--bandwidth MiB/s] [--auto-converge]

Guest: build/guest/testguest, 1 GiB, 2 vCPUs, `tick.us=1000` plus the scenario's dirtier:
  idle-1g         `dirtier.mib=64 dirtier.rate=0`          downtime limit 300 ms
  dirty-20k       `dirtier.mib=128 dirtier.rate=20000`     downtime limit 300 ms
  dirty-20k-10ms  `dirtier.mib=128 dirtier.rate=20000`     downtime limit  10 ms
  idle-1g-10ms    `dirtier.mib=64 dirtier.rate=0`          downtime limit  10 ms
Bandwidth: no cap by default (ferry: no --bandwidth; QEMU: max-bandwidth 100 GiB/s, since
QEMU's default cap is 128 MiB/s); `--bandwidth N` caps both at N MiB/s. Auto-converge
is off unless `--auto-converge` (then on for both). The downtime limit is set explicitly
on both (QEMU: migrate-set-parameters downtime-limit; ferry: --downtime-ms).

One run: start the destination VMM (ferry `run --incoming tcp:127.0.0.1:PORT`; QEMU the
same command line as the source plus `-incoming tcp:127.0.0.1:PORT`), start the source,
wait for the guest's first heartbeat and `VERIFY ok` and --settle s more (2 s), start the
migration, wait for it to end (ferry: `ferry migrate ... --wait`, which returns when the
source has finished; QEMU: QMP `migrate`, then the MIGRATION event with a final status).
After --timeout s (120) it is cancelled (`ferry migrate-cancel`; QMP `migrate_cancel`)
and the run counts as not converged. Then the destination console must show two `VERIFY`
lines, both `ok` (the guest's checker found every test page as expected), and no
PANIC/ERROR/VERIFY FAIL/TIME BACKWARDS line.

Recorded per run:
  downtime_ms   as each system reports it. ferry: source pause -> destination resume
                (report downtime.total_ms). QEMU: `downtime` of query-migrate, measured
                on the source from the stop to the end of its completion (it does not
                include the destination loading the device state and starting).
  gap_ms        guest-visible gap, the same measure for both: the guest writes a byte to
                port 0xe9 every 1 ms; both VMMs' debug consoles go to one FIFO read by
                bench/gap_reader.py, which timestamps every read. gap = largest interval
                between consecutive arrivals from 0.2 s before the migration starts to 1 s
                after it ended, minus the 1 ms period. baseline_gap_ms is the same over the
                settle time before the migration: what host scheduling alone causes here.
  total_ms      as reported (ferry total_ms; QEMU total-time); wall_ms is the host time
                from issuing the migration to seeing it end, for both.
  bytes         bytes sent (ferry: report `bytes`, everything on the wire; QEMU:
                ram.transferred, RAM pages and their headers: QEMU's device state, some
                tens of KiB, is not in any query-migrate counter).
  rounds        ferry: entries of its report's rounds[] (pre-copy rounds, the stop-and-
                copy not counted). QEMU: ram.dirty-sync-count (bitmap syncs: the first
                pass and the final one at the stop included).
  converged     the migration completed before the timeout.
  src/dst_rss_peak_kib  peak RSS of the source and destination VMM processes: ru_maxrss
                from wait4() when they exit (VmHWM at exit; the ferry source exits by
                itself when done). VmHWM from /proc/PID/status just before shutdown is
                kept as well (*_vmhwm_kib).
  verify_ok     the two first VERIFY lines on the destination are `ok`, no problem lines.

Runs are sequential (one pair of VMMs at a time), ferry and QEMU alternate (the order
flips every repeat), and before every run the script waits (up to --quiet-wait s) for
the host to have less than one CPU busy, recording how busy it was.
Results: bench/results/migration-<UTC timestamp>.json and a summary table on stdout.
"""
import argparse
import datetime
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B                          # noqa: E402
import gap_reader                             # noqa: E402
from qmp import Qmp, QmpError                 # noqa: E402

MEM_MIB = 1024
CPUS = 2
TICK_US = 1000
SCENARIOS = {
    "idle-1g":        {"mib": 64,  "rate": 0,     "downtime_ms": 300},
    "dirty-20k":      {"mib": 128, "rate": 20000, "downtime_ms": 300},
    "dirty-20k-10ms": {"mib": 128, "rate": 20000, "downtime_ms": 10},
    "idle-1g-10ms":   {"mib": 64,  "rate": 0,     "downtime_ms": 10},
}
SYSTEMS = ("ferry", "qemu")
QEMU_NO_CAP = 100 << 30             # bytes/s: "no cap" (QEMU's default is 128 MiB/s)
BOOT_TIMEOUT_S = 60
VERIFY_TIMEOUT_S = 10
GAP_BEFORE_S = 0.2
GAP_AFTER_S = 1.0
PROBLEMS = r"PANIC|ERROR|VERIFY FAIL|TIME BACKWARDS"


def cmdline(sc):
    return f"dirtier.mib={sc['mib']} dirtier.rate={sc['rate']} tick.us={TICK_US}"


def free_port():
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def reap(proc, timeout):
    """Waits for `proc` (a benchlib.Proc) to exit and reaps it with wait4() to get its
    ru_maxrss (KiB). Returns (exit status or None, maxrss KiB or None)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.p.returncode is not None:      # already reaped by Popen: no rusage
            return proc.p.returncode, None
        try:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:
            proc.p.poll()
            return proc.p.returncode, None
        if pid == proc.pid:
            proc.p.returncode = os.waitstatus_to_exitcode(status)
            return proc.p.returncode, ru.ru_maxrss
        if time.monotonic() >= deadline:
            return None, None
        time.sleep(0.002)


def vmhwm(proc):
    try:
        return B.proc_status(proc.pid).get("VmHWM_kib")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def wait_log(proc, pattern, timeout):
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while not rx.search(proc.output()):
        if proc.p.poll() is not None:
            raise RuntimeError(f"{proc.cmd[0]} exited ({proc.p.returncode}):\n"
                               f"{proc.output()[-2000:]}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no {pattern!r} in {proc.logfile}")
        time.sleep(0.005)


def qemu_vm_cmd(sc, console, qmp_sock, fifo, variant, incoming=None):
    return B.qemu_cmd(MEM_MIB, CPUS, cmdline(sc), console, qmp_sock, variant=variant,
                      incoming=incoming) + \
        ["-chardev", f"file,id=dbg,path={fifo}",
         "-device", "isa-debugcon,iobase=0xe9,chardev=dbg"]


class Run:
    """One migration of one system in one scenario."""

    def __init__(self, system, name, args, tmp):
        self.system, self.name, self.args = system, name, args
        self.sc = SCENARIOS[name]
        self.dir = os.path.join(tmp, f"{system}-{name}-{time.monotonic_ns()}")
        os.makedirs(self.dir)
        self.f = {k: os.path.join(self.dir, k) for k in
                  ("src.console", "dst.console", "src.sock", "dst.sock", "src.log",
                   "dst.log", "migrate.log")}
        self.port = free_port()
        self.s = {"system": system, "scenario": name, "port": self.port,
                  "loadavg": B.loadavg(), "converged": False, "verify_ok": False}

    def run(self):
        gap = None
        try:
            gap = gap_reader.GapReader(self.dir)
            if self.system == "ferry":
                self.ferry(gap.fifo)
            else:
                self.qemu(gap.fifo)
        except Exception as e:              # recorded, the benchmark goes on
            self.s["error"] = f"{e.__class__.__name__}: {e}"
            B.log(f"  ERROR {self.system} {self.name}: {self.s['error'][:2000]}")
        finally:
            if gap is not None:
                self.gap(gap.stop())
            B.kill_all()                    # VMMs, migrate client
        return self.s

    # -- common pieces ----------------------------------------------------------------------
    def boot(self, con, proc):
        con.wait_for(B.HB_RE.pattern, BOOT_TIMEOUT_S, proc=proc)
        con.wait_for(r"VERIFY ok", 30, proc=proc)
        self.t_settle = time.monotonic_ns()
        con.follow(self.args.settle)

    def gap(self, arrivals):
        t0, t1 = self.s.get("t_start_ns"), self.s.get("t_end_ns")
        if t0 is None:
            return
        t1 = t1 or time.monotonic_ns()
        g = gap_reader.analyse(arrivals, t0 - int(GAP_BEFORE_S * 1e9),
                               t1 + int(GAP_AFTER_S * 1e9), ref_ns=t0)
        base = gap_reader.analyse(arrivals, self.t_settle + int(0.2e9),
                                  t0 - int(GAP_BEFORE_S * 1e9), ref_ns=t0)
        self.s.update(gap_ms=g["gap_ms"], gap_start_ms=g["gap_start_ms"],
                      gap_open=g["open"], gap_detail=g, baseline_gap_ms=base["gap_ms"],
                      ticks_total=sum(n for _, n in arrivals))
        for k in ("t_start_ns", "t_end_ns", "t_src_exit_ns"):
            self.s.pop(k, None)

    def verify(self, con, proc):
        """The first two VERIFY lines on the destination, and any problem line."""
        lines, i = [], 0
        try:
            for _ in range(2):
                i, _, m = con.wait_for(r"VERIFY (ok|FAIL)", VERIFY_TIMEOUT_S, start=i,
                                       proc=proc)
                lines.append(con.lines[i][1])
                i += 1
        except (TimeoutError, RuntimeError) as e:
            lines.append(f"(none: {e.__class__.__name__})")
        con.poll()
        problems = con.grep(PROBLEMS)
        self.s.update(verify_lines=lines, dst_problems=problems,
                      dst_heartbeats=len(con.heartbeats()),
                      verify_ok=len(lines) == 2 and all(l.startswith("VERIFY ok") or
                                                        " VERIFY ok" in l for l in lines)
                      and not problems)

    def wait_gap_window(self):
        left = self.s["t_end_ns"] + int(GAP_AFTER_S * 1e9) - time.monotonic_ns()
        if left > 0:
            time.sleep(left / 1e9)

    # -- ferry --------------------------------------------------------------------------------
    def ferry(self, fifo):
        f, a = self.f, self.args
        dst = B.Proc([B.FERRY, "run", "--incoming", f"tcp:127.0.0.1:{self.port}",
                      "--memory", str(MEM_MIB), "--cpus", str(CPUS),
                      "--api-socket", f["dst.sock"], "--console", "file:" + f["dst.console"],
                      "--debugcon", fifo], f["dst.log"])
        wait_log(dst, r"waiting for a migration", 10)
        src = B.Proc(B.ferry_run_cmd(MEM_MIB, CPUS, cmdline(self.sc), f["src.console"],
                                     f["src.sock"]) + ["--debugcon", fifo], f["src.log"])
        scon, dcon = B.Console(f["src.console"]), B.Console(f["dst.console"])
        self.boot(scon, src)
        cmd = [B.FERRY, "migrate", "--api-socket", f["src.sock"], f"tcp:127.0.0.1:{self.port}",
               "--downtime-ms", str(self.sc["downtime_ms"]), "--wait"]
        if a.bandwidth:
            cmd += ["--bandwidth", str(a.bandwidth)]
        if a.auto_converge:
            cmd += ["--auto-converge"]
        self.s["t_start_ns"] = time.monotonic_ns()
        mig = B.Proc(cmd, f["migrate.log"])
        rc = self.ferry_wait(mig, src, a.timeout)
        if rc is None:
            self.s["timed_out"] = True
            r, _ = B.run([B.FERRY, "migrate-cancel", "--api-socket", f["src.sock"]], timeout=30)
            self.s["cancel_result"] = (r.returncode, (r.stdout + r.stderr)[-500:])
            rc = mig.wait(60)
        self.s["t_end_ns"] = time.monotonic_ns()
        self.s["migrate_cli_ms"] = (self.s["t_end_ns"] - self.s["t_start_ns"]) / 1e6
        # `ferry migrate --wait` checks for the answer every 250 ms: the source's exit
        # (right after the destination said RUNNING) is the better end time.
        t_end = self.s.get("t_src_exit_ns") or self.s["t_end_ns"]
        self.s["wall_ms"] = (min(t_end, self.s["t_end_ns"]) - self.s["t_start_ns"]) / 1e6
        out = mig.output()
        self.s["migrate_exit"] = rc
        rep = None
        for line in out.splitlines():
            if line.startswith("{"):
                try:
                    rep = json.loads(line)
                except ValueError:
                    pass
        if rep is None:
            raise RuntimeError(f"no report from ferry migrate (exit {rc}): {out[-2000:]}")
        self.s["report"] = rep
        dt = rep.get("downtime") or {}
        state = rep.get("state")
        self.s.update(state=state, converged=state == "completed" and rc == 0,
                      downtime_ms=dt.get("total_ms") if state == "completed" else None,
                      total_ms=rep.get("total_ms"), bytes=rep.get("bytes"),
                      rounds=len(rep.get("rounds") or []),
                      pages_normal=rep.get("pages_normal"), pages_zero=rep.get("pages_zero"),
                      throttle_max_pct=rep.get("throttle_max_pct"))
        if self.s["converged"]:
            if "src_exit" not in self.s:           # the source exits by itself
                st, maxrss = reap(src, 30)
                self.s.update(src_exit=st, src_rss_peak_kib=maxrss)
            self.verify(dcon, dst)
            self.wait_gap_window()
            self.s["dst_vmhwm_kib"] = vmhwm(dst)
            B.run([B.FERRY, "shutdown", "--api-socket", f["dst.sock"]], timeout=10)
            st, maxrss = reap(dst, 15)
            self.s.update(dst_exit=st, dst_rss_peak_kib=maxrss or self.s["dst_vmhwm_kib"])
        else:
            self.wait_gap_window()
            self.s["src_vmhwm_kib"] = vmhwm(src)
            self.s["src_still_running"] = src.p.returncode is None and src.p.poll() is None
            self.s["dst_vmhwm_kib"] = vmhwm(dst)
            B.run([B.FERRY, "shutdown", "--api-socket", f["src.sock"]], timeout=10)
            st, maxrss = reap(src, 15)
            self.s.update(src_exit=st, src_rss_peak_kib=maxrss or self.s["src_vmhwm_kib"])
            st, maxrss = reap(dst, 5)
            self.s.update(dst_exit=st, dst_rss_peak_kib=maxrss or self.s["dst_vmhwm_kib"])
        scon.poll()
        self.s["src_problems"] = scon.grep(PROBLEMS)
        if "dst_problems" not in self.s:
            dcon.poll()
            self.s["dst_problems"] = dcon.grep(PROBLEMS)
        self.keep_logs(src, dst)

    def keep_logs(self, src, dst):
        """The VMMs' own logs of a run that went wrong, in the sample."""
        if self.s.get("converged") and self.s.get("verify_ok"):
            return
        for side, p in (("src", src), ("dst", dst)):
            self.s[f"{side}_log_tail"] = p.output()[-3000:]

    def ferry_wait(self, mig, src, timeout):
        """Waits for the migrate client to exit (returns its status, None on timeout),
        reaping the source (and noting when) if it exits meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            if "src_exit" not in self.s:
                st, maxrss = reap(src, 0)
                if st is not None:
                    self.s.update(t_src_exit_ns=time.monotonic_ns(), src_exit=st,
                                  src_rss_peak_kib=maxrss)
            rc = mig.p.poll()
            if rc is not None or time.monotonic() >= deadline:
                return rc
            time.sleep(0.001)

    # -- QEMU ---------------------------------------------------------------------------------
    def qemu(self, fifo):
        f, a = self.f, self.args
        dst = B.Proc(qemu_vm_cmd(self.sc, f["dst.console"], f["dst.sock"], fifo, a.qemu_variant,
                                 incoming=f"tcp:127.0.0.1:{self.port}"), f["dst.log"])
        dq = Qmp.connect_retry(f["dst.sock"], timeout=30)
        try:
            src = B.Proc(qemu_vm_cmd(self.sc, f["src.console"], f["src.sock"], fifo,
                                     a.qemu_variant), f["src.log"])
            sq = Qmp.connect_retry(f["src.sock"], timeout=30)
            try:
                self.qemu_migrate(src, dst, sq, dq)
            finally:
                sq.close()
        finally:
            dq.close()

    def qemu_migrate(self, src, dst, sq, dq):
        f, a = self.f, self.args
        scon, dcon = B.Console(f["src.console"]), B.Console(f["dst.console"])
        self.boot(scon, src)
        caps = [{"capability": "events", "state": True},
                {"capability": "auto-converge", "state": bool(a.auto_converge)}]
        sq.cmd("migrate-set-capabilities", capabilities=caps)
        sq.cmd("migrate-set-parameters", **{
            "downtime-limit": self.sc["downtime_ms"],
            "max-bandwidth": a.bandwidth << 20 if a.bandwidth else QEMU_NO_CAP})
        self.s["qemu_params"] = sq.cmd("query-migrate-parameters")
        sq.events()                                    # drop what came before
        final = ("completed", "failed", "cancelled")
        self.s["t_start_ns"] = time.monotonic_ns()
        sq.cmd("migrate", uri=f"tcp:127.0.0.1:{self.port}")
        try:
            ev = sq.wait_event("MIGRATION", timeout=a.timeout,
                               match=lambda e: e["data"]["status"] in final)
        except TimeoutError:
            self.s["timed_out"] = True
            sq.cmd("migrate_cancel")
            ev = sq.wait_event("MIGRATION", timeout=60,
                               match=lambda e: e["data"]["status"] in final)
        self.s["t_end_ns"] = time.monotonic_ns()
        self.s["wall_ms"] = (self.s["t_end_ns"] - self.s["t_start_ns"]) / 1e6
        info = sq.cmd("query-migrate")
        # QEMU 7.2 sends the "completed" event before it has filled in total-time and
        # downtime (migration_calculate_complete runs after the state change).
        deadline = time.monotonic() + 2.0
        while (info.get("status") == "completed" and not info.get("total-time")
               and time.monotonic() < deadline):
            time.sleep(0.01)
            info = sq.cmd("query-migrate")
        self.s["report"] = info
        ram = info.get("ram", {})
        state = info.get("status", ev["data"]["status"])
        self.s.update(state=state, converged=state == "completed",
                      downtime_ms=info.get("downtime") if state == "completed" else None,
                      total_ms=info.get("total-time"), bytes=ram.get("transferred"),
                      rounds=ram.get("dirty-sync-count"), pages_normal=ram.get("normal"),
                      pages_zero=ram.get("duplicate"),
                      throttle_max_pct=info.get("cpu-throttle-percentage"))
        if self.s["converged"]:
            self.verify(dcon, dst)
            try:
                self.s["dst_status"] = dq.status()
            except (QmpError, OSError, TimeoutError) as e:
                self.s["dst_status"] = f"? {e}"
            self.wait_gap_window()
        else:
            self.wait_gap_window()
        for side, q, p in (("src", sq, src), ("dst", dq, dst)):
            self.s[f"{side}_vmhwm_kib"] = vmhwm(p)
            try:
                q.cmd("quit")
            except (QmpError, OSError, TimeoutError):
                pass
            st, maxrss = reap(p, 15)
            self.s.update({f"{side}_exit": st,
                           f"{side}_rss_peak_kib": maxrss or self.s[f"{side}_vmhwm_kib"]})
        scon.poll()
        self.s["src_problems"] = scon.grep(PROBLEMS)
        if "dst_problems" not in self.s:
            dcon.poll()
            self.s["dst_problems"] = dcon.grep(PROBLEMS)
        self.keep_logs(src, dst)


# ---- summary ----------------------------------------------------------------------------------
METRICS = (  # (key, label, unit, scale)
    ("downtime_ms", "downtime, reported (ms)", "ms", 1),
    ("gap_ms", "guest-visible gap (ms)", "ms", 1),
    ("baseline_gap_ms", "  gap before migrating (ms)", "ms", 1),
    ("total_ms", "total time, reported (ms)", "ms", 1),
    ("wall_ms", "total time, host (ms)", "ms", 1),
    ("bytes", "bytes sent (MiB)", "MiB", 1 / 2**20),
    ("rounds", "rounds", "n", 1),
    ("src_rss_peak_kib", "source peak RSS (MiB)", "MiB", 1 / 1024),
    ("dst_rss_peak_kib", "destination peak RSS (MiB)", "MiB", 1 / 1024),
    ("host_busy_cpus_before", "host busy CPUs before run", "n", 1),
)


def summarise(samples):
    out = {}
    for name, per in samples.items():
        out[name] = {}
        for system, runs in per.items():
            sm = {k: B.summary([r.get(k) for r in runs]) for k, *_ in METRICS}
            sm["converged"] = {"n": len(runs), "count": sum(bool(r.get("converged")) for r in runs)}
            sm["verify_ok"] = {"n": len(runs), "count": sum(bool(r.get("verify_ok")) for r in runs)}
            out[name][system] = sm
    return out


def fmt(v, scale):
    if v is None:
        return "-"
    v *= scale
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def table(summary, systems, md=False):
    lines = []
    for name, per in summary.items():
        head = ["", *systems]
        if "ferry" in systems and "qemu" in systems:
            head.append("ferry/QEMU")
        rows = []
        for key, label, unit, scale in METRICS:
            row = [label.strip() if md else label]
            for s in systems:
                sm = per[s][key]
                if sm["n"] == 0:
                    row.append("-")
                elif sm["n"] == 1 or sm["min"] == sm["max"]:
                    row.append(fmt(sm["median"], scale))
                else:
                    row.append(f"{fmt(sm['median'], scale)} ({fmt(sm['min'], scale)}–"
                               f"{fmt(sm['max'], scale)})")
            if len(head) > len(systems) + 1:
                r = B.ratio(per["ferry"][key]["median"], per["qemu"][key]["median"])
                row.append("-" if r is None or key == "host_busy_cpus_before" else f"{r:.2f}")
            rows.append(row)
        for key, label in (("converged", "converged"), ("verify_ok", "VERIFY ok on dest")):
            row = [label] + [f"{per[s][key]['count']}/{per[s][key]['n']}" for s in systems]
            if len(head) > len(systems) + 1:
                row.append("")
            rows.append(row)
        sc = SCENARIOS[name]
        title = (f"{name}: {MEM_MIB} MiB, {CPUS} vCPUs, `{cmdline(sc)}`, downtime limit "
                 f"{sc['downtime_ms']} ms")
        if md:
            lines += [f"### {title}", "", "| " + " | ".join(head) + " |",
                      "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
        else:
            w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
            lines += ["", title]
            for r in [head] + rows:
                lines.append("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i])
                                       for i, c in enumerate(r)))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", action="append", default=[],
                    help="scenario(s) to run (repeatable or comma-separated): " +
                    ", ".join(SCENARIOS))
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="cancel a migration after this many seconds (not converged)")
    ap.add_argument("--bandwidth", type=int, default=0,
                    help="cap both at this many MiB/s (default: no cap)")
    ap.add_argument("--auto-converge", action="store_true")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds the guest runs after its first VERIFY ok before migrating")
    ap.add_argument("--qemu-variant", default="pc", help="benchlib.qemu_cmd variant")
    ap.add_argument("--quiet-wait", type=float, default=3.0,
                    help="max seconds to wait for a quiet host before each run")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    only = [n for o in args.only for n in o.split(",") if n] or list(SCENARIOS)
    bad = [n for n in only if n not in SCENARIOS]
    if bad:
        sys.exit(f"unknown scenario(s) {bad}; known: {list(SCENARIOS)}")
    systems = [s for s in args.systems.split(",") if s]
    if any(s not in SYSTEMS for s in systems):
        sys.exit(f"--systems: from {SYSTEMS}")
    B.check_tools(need_qemu="qemu" in systems)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = args.out or os.path.join(B.RESULTS, f"migration-{stamp}.json")
    tmp = tempfile.mkdtemp(prefix="ferry-bench-mig-")
    B.pin_binaries(tmp)
    info = B.machine_info()
    samples = {n: {s: [] for s in systems} for n in only}
    t_begin = time.monotonic()
    try:
        for r in range(args.repeat):
            for name in only:
                order = systems if r % 2 == 0 else systems[::-1]
                for system in order:
                    busy, waited = B.wait_quiet(1.0, args.quiet_wait)
                    x = Run(system, name, args, tmp).run()
                    x.update(repeat=r, host_busy_cpus_before=busy, quiet_wait_s=waited)
                    samples[name][system].append(x)
                    B.log(f"[{r + 1}/{args.repeat}] {name:15s} {system:5s} "
                          f"{'ok  ' if x['converged'] else 'FAIL'} downtime "
                          f"{fmt(x.get('downtime_ms'), 1):>6} ms  gap {fmt(x.get('gap_ms'), 1):>6}"
                          f" ms (before {fmt(x.get('baseline_gap_ms'), 1)})  total "
                          f"{fmt(x.get('total_ms'), 1):>6} ms  "
                          f"{fmt(x.get('bytes'), 1 / 2**20):>6} MiB  rounds {x.get('rounds')}  "
                          f"verify {x.get('verify_ok')}  busy {busy:.2f}"
                          + (f"  PROBLEMS {x.get('src_problems', []) + x.get('dst_problems', [])}"
                             if x.get('src_problems') or x.get('dst_problems') else "")
                          + (f"  ERROR {x['error'][:300]}" if x.get("error") else ""))
    except KeyboardInterrupt:
        B.log("interrupted: writing what was measured")
    finally:
        B.kill_all()
        keep = any(x.get("error") or not x.get("verify_ok")
                   for per in samples.values() for runs in per.values() for x in runs)
        if keep:
            B.log(f"logs of the runs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    summary = summarise(samples)
    result = {
        "benchmark": "migration",
        "machine": info,
        "config": {
            "memory_mib": MEM_MIB, "cpus": CPUS, "tick_us": TICK_US,
            "scenarios": {n: dict(SCENARIOS[n], cmdline=cmdline(SCENARIOS[n])) for n in only},
            "systems": systems, "repeat": args.repeat, "timeout_s": args.timeout,
            "bandwidth_mibs": args.bandwidth or None,
            "qemu_max_bandwidth": args.bandwidth << 20 if args.bandwidth else QEMU_NO_CAP,
            "auto_converge": args.auto_converge, "settle_s": args.settle,
            "quiet_wait_s": args.quiet_wait, "qemu_variant": args.qemu_variant,
            "gap_window_s": [-GAP_BEFORE_S, "end +", GAP_AFTER_S],
            "elapsed_s": round(time.monotonic() - t_begin, 1),
            "host_thp": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
            "commands": _commands(args),
        },
        "summary": summary,
        "report_markdown": table(summary, systems, md=True),
        "samples": samples,
    }
    B.write_result(out, result)
    print(table(summary, systems))


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _commands(args):
    fifo = "DEBUGCON.fifo"
    mig = [B.FERRY, "migrate", "--api-socket", "SRC.sock", "tcp:127.0.0.1:PORT",
           "--downtime-ms", "LIMIT", "--wait"]
    if args.bandwidth:
        mig += ["--bandwidth", str(args.bandwidth)]
    if args.auto_converge:
        mig += ["--auto-converge"]
    sc = {"mib": "MIB", "rate": "RATE"}
    return {
        "ferry": [
            B.show_cmd([B.FERRY, "run", "--incoming", "tcp:127.0.0.1:PORT", "--memory",
                        str(MEM_MIB), "--cpus", str(CPUS), "--api-socket", "DST.sock",
                        "--console", "file:DST.console", "--debugcon", fifo]),
            B.show_cmd(B.ferry_run_cmd(MEM_MIB, CPUS, cmdline(sc), "SRC.console", "SRC.sock")
                       + ["--debugcon", fifo]),
            B.show_cmd(mig),
            "on timeout: ferry migrate-cancel --api-socket SRC.sock; after: ferry shutdown "
            "--api-socket DST.sock",
        ],
        "qemu": [
            B.show_cmd(qemu_vm_cmd(sc, "DST.console", "DST.qmp", fifo, args.qemu_variant,
                                   incoming="tcp:127.0.0.1:PORT")),
            B.show_cmd(qemu_vm_cmd(sc, "SRC.console", "SRC.qmp", fifo, args.qemu_variant)),
            "QMP (source): migrate-set-capabilities events=on auto-converge=" +
            ("on" if args.auto_converge else "off") +
            f"; migrate-set-parameters downtime-limit=LIMIT max-bandwidth="
            f"{args.bandwidth << 20 if args.bandwidth else QEMU_NO_CAP}; "
            "migrate uri=tcp:127.0.0.1:PORT; wait for event MIGRATION completed|failed|"
            "cancelled (migrate_cancel on timeout); query-migrate; quit both",
        ],
        "gap_reader": "python3 bench/gap_reader.py DEBUGCON.fifo TIMES (both VMMs write the FIFO)",
    }


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        B.kill_all()
        sys.exit(130)
