#!/usr/bin/python3
"""Live migration over loopback TCP: ferry vs QEMU (pre-copy and post-copy), same guest
and settings.

    python3 bench/bench_migration.py [--repeat N] [--only NAME[,NAME]] [--out FILE.json]
                                     [--timeout S] [--bandwidth MiB/s] [--auto-converge]

Guest: build/guest/testguest with `tick.us=1000` plus the scenario's dirtier; 1 GiB and
2 vCPUs unless the scenario says otherwise:
  idle-1g            `dirtier.mib=64 dirtier.rate=0`          limit 300 ms
  idle-4g            the same, 4 GiB guest                    limit 300 ms
  dirty-20k          `dirtier.mib=128 dirtier.rate=20000`     limit 300 ms
  dirty-20k-1cpu     the same with 1 vCPU                     limit 300 ms
  dirty-max          `dirtier.mib=512 dirtier.rate=-1`, 2 GiB limit 300 ms, default settings
  dirty-max-ac       the same with auto-converge on both
  dirty-max-postcopy the same, post-copy after the first full pass (ferry `--mode
                     postcopy`; QEMU `postcopy-ram` on both sides and
                     `migrate-start-postcopy` once query-migrate shows dirty-sync-count >= 2)
  dirty-max-hybrid   the same, hybrid: ferry `--mode hybrid` decides by itself (post-copy
                     once a round after the first pass dirtied at least half of what it
                     sent); QEMU has no automatic switch, so the script applies that rule
                     to query-migrate's counters and then calls `migrate-start-postcopy`
  idle-1g-10ms       `dirtier.mib=64 dirtier.rate=0`          limit  10 ms
  idle-1g-tls, dirty-20k-tls, dirty-max-tls
                     idle-1g, dirty-20k and dirty-max over mutual TLS 1.3 on both
                     (certificates from scripts/certs.sh; ferry `--tls-dir` on both
                     sides; QEMU `tls-creds-x509` objects, endpoint=server on the
                     destination, client on the source, `tls-creds` set on both,
                     `tls-hostname` localhost on the source, destination `-incoming
                     defer` then migrate-incoming)
  dirty-20k-10ms     `dirtier.mib=128 dirtier.rate=20000`     limit  10 ms
(`dirtier.rate=-1` is "as fast as the vCPUs can write": every vCPU dirties its share.)
Bandwidth: no cap by default (ferry: no --bandwidth; QEMU: max-bandwidth 100 GiB/s, since
QEMU's default cap is 128 MiB/s); `--bandwidth N` caps both at N MiB/s. Auto-converge
is off unless the scenario turns it on or `--auto-converge` is given (then on for both in
every scenario). The downtime limit is set explicitly on both (QEMU: migrate-set-parameters
downtime-limit; ferry: --downtime-ms).

One run: start the destination VMM (ferry `run --incoming tcp:127.0.0.1:PORT`; QEMU the
same command line as the source plus `-incoming tcp:127.0.0.1:PORT`), start the source,
wait for the guest's first heartbeat and `VERIFY ok` and --settle s more (2 s), start the
migration, wait for it to end (ferry: `ferry migrate ... --wait`, which returns when the
source has finished; QEMU: QMP `migrate`, then the MIGRATION event with a final status,
polling query-migrate every --poll-ms (20 ms) meanwhile for the per-round timeline).
After --timeout s (120) it is cancelled (`ferry migrate-cancel`; QMP `migrate_cancel`)
and the run counts as not converged. Then the destination console must show two `VERIFY`
lines, both `ok` (the guest's checker found every test page as expected), and no
PANIC/ERROR/VERIFY FAIL/TIME BACKWARDS line.

Recorded per run:
  downtime_ms   as each system reports it. ferry: source pause -> destination resume
                (report downtime.total_ms). QEMU: `downtime` of query-migrate, measured
                on the source from the stop to the end of its completion (it does not
                include the destination loading the device state and starting); for
                post-copy, from the stop until the source has sent the device state and
                told the destination to run.
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
  timeline      per round: pages/bytes sent and dirty pages left at its end. ferry: its
                report's rounds[]. QEMU: from the query-migrate samples, grouped by
                dirty-sync-count (bytes = growth of ram.transferred between syncs, dirty
                pages = ram.remaining / page size just after the sync), so rounds shorter
                than the poll interval merge into the next one.
  guest_dirty_pps  pages/s the guest's dirtier wrote during the settle time, by its own
                clock (from its heartbeats): the same workload need not run equally fast
                on both VMMs.
  gap_switchover_ms, gap_before_switchover_ms   the same gap split by where the silence
                began: at the switchover (from 10 ms before `total_ms - downtime_ms` after
                the start on) or earlier, during the pre-copy rounds (pre-copy only).
  converged     the migration completed before the timeout.
  src/dst_rss_peak_kib  peak RSS of the source and destination VMM processes: ru_maxrss
                from wait4() when they exit (VmHWM at exit; the ferry source exits by
                itself when done). VmHWM from /proc/PID/status just before shutdown is
                kept as well (*_vmhwm_kib).
  verify_ok     the two first VERIFY lines on the destination are `ok`, no problem lines.
  dst_diag, dst_missed_wakeup   only when a completed migration did not verify: the
                destination's vCPUs (ferry: a snapshot decoded by vcpu_diag.py; QEMU:
                `info registers -a`, `info lapic`), heartbeats seen in the 1.5 s after that
                (reading the state kicks the vCPUs), and whether every vCPU sat halted with
                interrupts on while one had a wake-up due (a vector in its IRR, or a long-passed
                TSC deadline): an interrupt the host's KVM never delivered.
  post-copy     ferry: its report's postcopy{} (fault latency p50/p99/max, remote faults,
                summed fault wait, pages pushed/demanded, duration). QEMU 7.2's
                query-migrate has no fault latency (`postcopy-latency` came in 9.1); with
                the `postcopy-blocktime` capability on the destination it gives
                postcopy-blocktime and postcopy-vcpu-blocktime once the destination has
                completed (kept; on this host they stay 0, see docs/BENCHMARKS.md), and
                the source's ram.postcopy-requests counts page requests. QEMU's fault
                latencies are therefore taken from its destination's trace log: two trace
                events only (postcopy_ram_fault_thread_request: the fault thread read a
                fault; postcopy_page_req_del: that page was placed), with microsecond
                stamps; latency = placement - first fault, per page: the span ferry
                measures too (fault read -> UFFDIO_COPY done).

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
import vcpu_diag                             # noqa: E402
from qmp import Qmp, QmpError                 # noqa: E402

MEM_MIB = 1024
CPUS = 2
TICK_US = 1000
# mem (MiB) and cpus default to MEM_MIB and CPUS; "auto_converge": True turns it on for
# both systems; "mode": "postcopy" switches to post-copy after the first full pass,
# "hybrid" when a pre-copy round stalls.
SCENARIOS = {
    "idle-1g":            {"mib": 64,  "rate": 0,     "downtime_ms": 300},
    "idle-4g":            {"mib": 64,  "rate": 0,     "downtime_ms": 300, "mem": 4096},
    "dirty-20k":          {"mib": 128, "rate": 20000, "downtime_ms": 300},
    "dirty-20k-1cpu":     {"mib": 128, "rate": 20000, "downtime_ms": 300, "cpus": 1},
    "dirty-max":          {"mib": 512, "rate": -1,    "downtime_ms": 300, "mem": 2048},
    "dirty-max-ac":       {"mib": 512, "rate": -1,    "downtime_ms": 300, "mem": 2048,
                           "auto_converge": True},
    "dirty-max-postcopy": {"mib": 512, "rate": -1,    "downtime_ms": 300, "mem": 2048,
                           "mode": "postcopy"},
    "dirty-max-hybrid":   {"mib": 512, "rate": -1,    "downtime_ms": 300, "mem": 2048,
                           "mode": "hybrid"},
    "idle-1g-10ms":       {"mib": 64,  "rate": 0,     "downtime_ms": 10},
    # The transfer engine (issue 8): parallel connections and compression on both.
    "idle-4g-mfd":        {"mib": 64,  "rate": 0,     "downtime_ms": 300, "mem": 4096,
                           "connections": 2},
    "dirty-20k-10ms-zstd": {"mib": 128, "rate": 20000, "downtime_ms": 10,
                            "connections": 2, "compress": "zstd"},
    "dirty-20k-cap100":   {"mib": 128, "rate": 20000, "downtime_ms": 300,
                           "bandwidth": 100, "connections": 2, "compress": "zstd",
                           "ferry_compress": "auto", "ferry_args": ["--delta-cache", "256"]},
    "dirty-20k-10ms":     {"mib": 128, "rate": 20000, "downtime_ms": 10},
    # Mutual TLS on every connection (issue 15): the cost of encryption.
    "idle-1g-tls":        {"mib": 64,  "rate": 0,     "downtime_ms": 300, "tls": True},
    "dirty-20k-tls":      {"mib": 128, "rate": 20000, "downtime_ms": 300, "tls": True},
    "dirty-max-tls":      {"mib": 512, "rate": -1,    "downtime_ms": 300, "mem": 2048,
                           "tls": True},
}
SYSTEMS = ("ferry", "qemu")
QEMU_NO_CAP = 100 << 30             # bytes/s: "no cap" (QEMU's default is 128 MiB/s)
BOOT_TIMEOUT_S = 60
VERIFY_TIMEOUT_S = 10
GAP_BEFORE_S = 0.2
GAP_AFTER_S = 1.0
PROBLEMS = r"PANIC|ERROR|VERIFY FAIL|TIME BACKWARDS"


_certs = {}


def tls_dir(sc, tmp):
    """The certificates of a TLS scenario (made once per benchmark run), or None."""
    if not sc.get("tls"):
        return None
    if tmp not in _certs:
        B.run([os.path.join(B.ROOT, "scripts", "certs.sh"), os.path.join(tmp, "certs"),
               "bench"], timeout=60)
        _certs[tmp] = os.path.join(tmp, "certs", "bench")
        if not os.path.exists(os.path.join(_certs[tmp], "server-cert.pem")):
            raise RuntimeError("scripts/certs.sh made no certificates")
    return _certs[tmp]


def qemu_tls_args(d, endpoint):
    return ["-object", f"tls-creds-x509,id=tls0,dir={d},endpoint={endpoint},verify-peer=on"]


def cmdline(sc):
    return f"dirtier.mib={sc['mib']} dirtier.rate={sc['rate']} tick.us={TICK_US}"


def mem_mib(sc):
    return sc.get("mem", MEM_MIB)


def ncpus(sc):
    return sc.get("cpus", CPUS)


def postcopy(sc):
    """Post-copy may happen: "postcopy" (after the first pass) or "hybrid" (when stalled)."""
    return sc.get("mode") in ("postcopy", "hybrid")


def hybrid(sc):
    return sc.get("mode") == "hybrid"


def qemu_stalled(tl):
    """ferry's hybrid rule applied to QEMU's counters (QEMU has no automatic switch):
    from the third bitmap sync on, switch when the round that just ended dirtied at
    least half of what it sent (remaining after the sync * 2 >= bytes sent in it)."""
    rounds = tl.rounds()
    if len(rounds) < 3:
        return False
    last = rounds[-2]                 # the newest finished round; rounds[-1] is running
    return (last.get("dirty_pages") or 0) * 2 >= last["pages"] > 0


def bandwidth(sc, args):
    """MiB/s cap: the scenario's own, else --bandwidth, else none."""
    return sc.get("bandwidth") or getattr(args, "bandwidth", None)


def ferry_transfer_args(sc):
    """ferry's transfer-engine flags for a scenario (nothing: ferry's defaults)."""
    out = []
    if sc.get("connections"):
        out += ["--connections", str(sc["connections"])]
    comp = sc.get("ferry_compress") or sc.get("compress")
    if comp:
        out += ["--compress", comp]
    return out + list(sc.get("ferry_args") or [])


def qemu_multifd(sc):
    """(capabilities, parameters) for QEMU's multifd in a scenario, or None."""
    if not sc.get("connections"):
        return None
    params = {"multifd-channels": sc["connections"]}
    if sc.get("compress"):
        params["multifd-compression"] = sc["compress"]      # QEMU 7.2: none|zlib|zstd
    return [{"capability": "multifd", "state": True}], params


def auto_converge(sc, args):
    return bool(sc.get("auto_converge") or getattr(args, "auto_converge", False))


def describe(name, sc, args=None):
    """One line for humans: the scenario's guest and settings."""
    extra = []
    if sc.get("auto_converge") or (args is not None and args.auto_converge):
        extra.append("auto-converge")
    if hybrid(sc):
        extra.append("hybrid: post-copy once a pre-copy round stalls")
    elif postcopy(sc):
        extra.append("post-copy after the first pass")
    if sc.get("connections"):
        extra.append(f"{sc['connections']} connections (QEMU multifd)")
    if sc.get("compress"):
        extra.append(f"compression: ferry {sc.get('ferry_compress') or sc['compress']}"
                     + (" " + " ".join(sc["ferry_args"]) if sc.get("ferry_args") else "")
                     + f", QEMU multifd {sc['compress']}")
    if sc.get("bandwidth"):
        extra.append(f"bandwidth cap {sc['bandwidth']} MiB/s")
    return (f"{name}: {mem_mib(sc)} MiB, {ncpus(sc)} vCPU{'s' if ncpus(sc) > 1 else ''}, "
            f"`{cmdline(sc)}`, downtime limit {sc['downtime_ms']} ms"
            + (", " + ", ".join(extra) if extra else ""))


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
    return B.qemu_cmd(mem_mib(sc), ncpus(sc), cmdline(sc), console, qmp_sock,
                      variant=variant, incoming=incoming) + \
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
        self.tls = tls_dir(self.sc, tmp)
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
        # How fast this guest really writes here (the same guest may get more done on
        # one VMM than on the other): pages its dirtier wrote per second of its own
        # clock, between the first and the last heartbeat of the settle time.
        hbs = [h for h in con.heartbeats() if h[1] * 1e9 >= self.t_settle]
        if len(hbs) >= 2 and hbs[-1][3] > hbs[0][3]:
            self.s["guest_dirty_pps"] = round((hbs[-1][4] - hbs[0][4]) /
                                              ((hbs[-1][3] - hbs[0][3]) / 1e9))

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
        self.gap_split(arrivals, t0, t1)
        for k in ("t_start_ns", "t_end_ns", "t_src_exit_ns"):
            self.s.pop(k, None)

    def gap_split(self, arrivals, t0, t1):
        """Where the guest saw its longest silence: at the switchover (an interval that
        starts at most 10 ms before `total - downtime` after the migration was started,
        or later) or before it, during the pre-copy rounds (from 0.2 s before the start).
        Both systems' total time runs from the migration request to the destination
        running, so `total - downtime` is when the source paused (ferry's request reaches
        it a few ms after the host issued `ferry migrate`: its pause comes slightly
        later, never earlier). Completed pre-copy runs only; an interval counts where it
        starts."""
        total, dt = self.s.get("total_ms"), self.s.get("downtime_ms")
        if postcopy(self.sc) or not self.s.get("converged") or total is None or dt is None:
            return
        t_sw = t0 + int((total - dt - 10) * 1e6)
        lo, hi = t0 - int(GAP_BEFORE_S * 1e9), t1 + int(GAP_AFTER_S * 1e9)
        ts = [t for t, _ in arrivals if lo <= t <= hi]
        before = [b - a for a, b in zip(ts, ts[1:]) if a < t_sw]
        at = [b - a for a, b in zip(ts, ts[1:]) if a >= t_sw]
        per = gap_reader.PERIOD_NS
        self.s["gap_before_switchover_ms"] = max(0.0, (max(before) - per) / 1e6) if before \
            else None
        self.s["gap_switchover_ms"] = max(0.0, (max(at) - per) / 1e6) if at else None

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
        tls = ["--tls-dir", self.tls] if self.tls else []
        dst = B.Proc([B.FERRY, "run", "--incoming", f"tcp:127.0.0.1:{self.port}",
                      "--memory", str(mem_mib(self.sc)), "--cpus", str(ncpus(self.sc)),
                      "--api-socket", f["dst.sock"], "--console", "file:" + f["dst.console"],
                      "--debugcon", fifo] + tls, f["dst.log"])
        wait_log(dst, r"waiting for a migration", 10)
        src = B.Proc(B.ferry_run_cmd(mem_mib(self.sc), ncpus(self.sc), cmdline(self.sc),
                                     f["src.console"], f["src.sock"]) + ["--debugcon", fifo],
                     f["src.log"])
        scon, dcon = B.Console(f["src.console"]), B.Console(f["dst.console"])
        self.boot(scon, src)
        cmd = [B.FERRY, "migrate", "--api-socket", f["src.sock"], f"tcp:127.0.0.1:{self.port}",
               "--downtime-ms", str(self.sc["downtime_ms"]), "--wait", "--json"]
        if bandwidth(self.sc, a):
            cmd += ["--bandwidth", str(bandwidth(self.sc, a))]
        cmd += ferry_transfer_args(self.sc)
        if self.tls:
            cmd += tls + ["--tls-hostname", "localhost"]
        if auto_converge(self.sc, a):
            cmd += ["--auto-converge"]
        if postcopy(self.sc):
            cmd += ["--mode", self.sc["mode"]]
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
                      throttle_max_pct=rep.get("throttle_max_pct"),
                      timeline=ferry_timeline(rep))
        pc = rep.get("postcopy")
        if pc:
            self.s.update(fault_p50_us=pc.get("fault_latency_p50_us"),
                          fault_p99_us=pc.get("fault_latency_p99_us"),
                          fault_max_us=pc.get("fault_latency_max_us"),
                          remote_faults=pc.get("remote_faults"),
                          vcpu_blocked_ms=pc.get("vcpu_blocked_ms"),
                          postcopy_ms=pc.get("duration_ms"),
                          pages_pushed=pc.get("pages_pushed"),
                          pages_demanded=pc.get("pages_demanded"))
        if self.s["converged"]:
            if "src_exit" not in self.s:           # the source exits by itself
                st, maxrss = reap(src, 30)
                self.s.update(src_exit=st, src_rss_peak_kib=maxrss)
            self.verify(dcon, dst)
            if not self.s["verify_ok"]:
                self.stuck_diag(dcon, self.ferry_dump, vcpu_diag.ferry_missed_wakeup)
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
        self.finish(scon, dcon, src, dst)

    def stuck_diag(self, dcon, dump, missed_wakeup):
        """A destination that never showed the guest: `dump()` reads its vCPUs' state
        (which kicks them), then 1.5 s tell whether the guest ran again."""
        before = len(dcon.heartbeats())
        diag = dump()
        dcon.follow(1.5)
        diag["heartbeats_after_kick"] = len(dcon.heartbeats()) - before
        self.s["dst_diag"] = diag
        self.s["dst_missed_wakeup"] = "error" not in diag and missed_wakeup(diag)

    def ferry_dump(self):
        """The destination's vCPUs from a snapshot (a pause and resume)."""
        path = os.path.join(self.dir, "dst-stuck.snap")
        try:
            B.run([B.FERRY, "snapshot", "--api-socket", self.f["dst.sock"], path, "--resume"],
                  timeout=30)
            return vcpu_diag.diagnose(path)
        except Exception as e:             # diagnostics must not end the benchmark
            return {"error": f"{e.__class__.__name__}: {e}"}

    def qemu_dump(self, dq):
        """QEMU's register and LAPIC dumps of every vCPU."""
        cmds = ["info registers -a"] + [f"info lapic {i}" for i in range(ncpus(self.sc))]
        return {c: dq.hmp(c) for c in cmds}

    def finish(self, scon, dcon, src, dst):
        """Problem lines of both consoles, and the VMMs' logs if the run went wrong."""
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
        self.f["dst.trace"] = os.path.join(self.dir, "dst.trace")
        mfd = qemu_multifd(self.sc)
        uri = f"tcp:127.0.0.1:{self.port}"
        defer = mfd or self.tls
        dst = B.Proc(qemu_vm_cmd(self.sc, f["dst.console"], f["dst.sock"], fifo, a.qemu_variant,
                                 incoming="defer" if defer else uri)
                     + (qemu_fault_trace_args(f["dst.trace"]) if postcopy(self.sc) else [])
                     + (qemu_tls_args(self.tls, "server") if self.tls else []),
                     f["dst.log"])
        dq = Qmp.connect_retry(f["dst.sock"], timeout=30)
        try:
            if mfd:     # multifd must be on at both ends before the destination listens
                dq.cmd("migrate-set-capabilities", capabilities=mfd[0])
                dq.cmd("migrate-set-parameters", **mfd[1])
            if self.tls:
                dq.cmd("migrate-set-parameters", **{"tls-creds": "tls0"})
            if defer:
                dq.cmd("migrate-incoming", uri=uri)
            src = B.Proc(qemu_vm_cmd(self.sc, f["src.console"], f["src.sock"], fifo,
                                     a.qemu_variant)
                         + (qemu_tls_args(self.tls, "client") if self.tls else []),
                         f["src.log"])
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
        pc = postcopy(self.sc)
        if pc:
            # Both sides need postcopy-ram; blocktime is measured on the destination.
            dq.cmd("migrate-set-capabilities", capabilities=[
                {"capability": "postcopy-ram", "state": True},
                {"capability": "postcopy-blocktime", "state": True}])
        self.boot(scon, src)
        caps = [{"capability": "events", "state": True},
                {"capability": "auto-converge", "state": auto_converge(self.sc, a)}]
        if pc:
            caps.append({"capability": "postcopy-ram", "state": True})
        mfd = qemu_multifd(self.sc)
        if mfd:
            caps += mfd[0]
        sq.cmd("migrate-set-capabilities", capabilities=caps)
        if mfd:
            sq.cmd("migrate-set-parameters", **mfd[1])
        if self.tls:
            sq.cmd("migrate-set-parameters", **{"tls-creds": "tls0", "tls-hostname": "localhost"})
        sq.cmd("migrate-set-parameters", **{
            "downtime-limit": self.sc["downtime_ms"],
            "max-bandwidth": bandwidth(self.sc, a) << 20 if bandwidth(self.sc, a)
            else QEMU_NO_CAP})
        self.s["qemu_params"] = sq.cmd("query-migrate-parameters")
        sq.events()                                    # drop what came before
        self.s["t_start_ns"] = time.monotonic_ns()
        sq.cmd("migrate", uri=f"tcp:127.0.0.1:{self.port}")
        tl = QemuTimeline(self.s["t_start_ns"])
        ev = self.qemu_wait(sq, tl, a.timeout)
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
        tl.add(info)
        self.s["report"] = info
        ram = info.get("ram", {})
        state = info.get("status", ev["data"]["status"])
        self.s.update(state=state, converged=state == "completed",
                      downtime_ms=info.get("downtime") if state == "completed" else None,
                      total_ms=info.get("total-time"), bytes=ram.get("transferred"),
                      rounds=ram.get("dirty-sync-count"), pages_normal=ram.get("normal"),
                      pages_zero=ram.get("duplicate"),
                      throttle_max_pct=tl.throttle_max(),
                      timeline=tl.rounds(), qemu_samples=tl.compact())
        if pc:
            self.qemu_postcopy_stats(dq, ram)
        if self.s["converged"]:
            self.verify(dcon, dst)
            try:
                self.s["dst_status"] = dq.status()
                if not self.s["verify_ok"]:
                    self.stuck_diag(dcon, lambda: self.qemu_dump(dq),
                                    vcpu_diag.qemu_missed_wakeup)
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
        self.finish(scon, dcon, src, dst)

    def qemu_wait(self, sq, tl, timeout):
        """Waits for the final MIGRATION event, sampling query-migrate every --poll-ms
        meanwhile (every 2 ms until post-copy is started, in a post-copy scenario);
        cancels after `timeout` s. Returns the event."""
        final = ("completed", "failed", "cancelled")
        pc, pc_started = postcopy(self.sc), False
        interval = self.args.poll_ms / 1e3
        deadline = time.monotonic() + timeout
        cancelled = False
        while True:
            try:
                return sq.wait_event("MIGRATION", timeout=0.002 if pc and not pc_started
                                     else interval,
                                     match=lambda e: e["data"]["status"] in final)
            except TimeoutError:
                pass
            info = sq.cmd("query-migrate")
            tl.add(info)
            sync = (info.get("ram") or {}).get("dirty-sync-count") or 0
            if (pc and not pc_started and info.get("status") == "active"
                    and (qemu_stalled(tl) if hybrid(self.sc) else sync >= 2)):
                sq.cmd("migrate-start-postcopy")        # first pass done / stalled
                pc_started = True
                self.s["postcopy_start_ms"] = (time.monotonic_ns() - self.s["t_start_ns"]) / 1e6
            if time.monotonic() >= deadline:
                if cancelled:
                    raise TimeoutError("QEMU migration did not end 60 s after migrate_cancel")
                self.s["timed_out"] = True
                try:
                    sq.cmd("migrate_cancel")
                except QmpError as e:
                    self.s["cancel_result"] = str(e)
                cancelled = True
                deadline = time.monotonic() + 60

    def qemu_postcopy_stats(self, dq, src_ram):
        """QEMU 7.2's post-copy figures: page requests (source) and vCPU blocktime
        (destination, filled in once the destination has completed)."""
        info, deadline = {}, time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                info = dq.cmd("query-migrate")
            except (QmpError, OSError, TimeoutError) as e:
                info = {"error": str(e)}
                break
            if info.get("status") in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.02)
        self.s["dst_report"] = info
        per_vcpu = info.get("postcopy-vcpu-blocktime")
        requests = src_ram.get("postcopy-requests")
        blocked = sum(per_vcpu) if per_vcpu else None
        # query-migrate has no latency in QEMU 7.2: the destination's trace has it.
        lats, unmatched, tids = qemu_fault_latencies(self.f["dst.trace"])
        self.s.update(fault_p50_us=percentile(lats, 50), fault_p99_us=percentile(lats, 99),
                      fault_max_us=lats[-1] if lats else None,
                      fault_latency_source="QEMU trace events " + " -> ".join(QEMU_FAULT_EVENTS),
                      trace_faults=len(lats) if lats is not None else None,
                      trace_faults_unmatched=unmatched, trace_fault_tids=tids,
                      remote_faults=requests,
                      vcpu_blocked_ms=sum(lats) / 1e3 if lats else blocked,
                      qemu_postcopy_blocktime_ms=info.get("postcopy-blocktime"),
                      qemu_postcopy_vcpu_blocktime_ms=per_vcpu,
                      qemu_vcpu_blocktime_sum_ms=blocked,
                      postcopy_bytes=src_ram.get("postcopy-bytes"))
        # migrate-start-postcopy can come too late: QEMU then completes in pre-copy
        # and never shows postcopy-active. That run had no post-copy phase.
        rows = (self.s.get("qemu_samples") or {}).get("rows") or []
        went = any(r[1] == "postcopy-active" for r in rows)
        self.s["qemu_postcopy_active"] = went
        t_pc = self.s.get("postcopy_start_ms")
        if went and t_pc is not None and self.s.get("total_ms") is not None:
            self.s["postcopy_ms"] = self.s["total_ms"] - t_pc


QEMU_FAULT_EVENTS = ("postcopy_ram_fault_thread_request", "postcopy_page_req_del")
_TRACE_RE = re.compile(r"^(\d+)@(\d+)\.(\d+):(postcopy_ram_fault_thread_request|"
                       r"postcopy_page_req_del) (?:Request for HVA=|resolved page req )"
                       r"(0x)?([0-9a-fA-F]+)(?:.* pid=(\d+))?")


def qemu_fault_trace_args(path):
    """QEMU destination options that log (with microsecond wall-clock stamps) each
    userfault its fault thread reads and each requested page once it is placed: only
    those two trace events, a few hundred lines per migration."""
    args = ["-msg", "timestamp=on", "-D", path]
    for ev in QEMU_FAULT_EVENTS:
        args += ["-trace", f"enable={ev}"]
    return args


def qemu_fault_latencies(path):
    """Fault latencies (µs) from a QEMU destination trace: for every host page, from
    the first fault the fault thread read for it to the UFFDIO_COPY that placed it
    (postcopy_page_req_del: a requested page arrived, by request or by the background
    stream). ferry measures the same span: fault read -> page installed. Returns
    (sorted latencies, faults without a matching placement, faulting thread ids)."""
    first, lats, tids = {}, [], {}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = _TRACE_RE.match(line)
                if not m:
                    continue
                t_us = int(m.group(2)) * 1_000_000 + int(m.group(3))
                addr = int(m.group(6), 16) & ~0xfff
                if m.group(4) == "postcopy_ram_fault_thread_request":
                    first.setdefault(addr, t_us)
                    if m.group(7):
                        tids[m.group(7)] = tids.get(m.group(7), 0) + 1
                elif addr in first:
                    lats.append(t_us - first.pop(addr))
    except FileNotFoundError:
        return None, None, None
    return sorted(lats), len(first), tids


def percentile(sorted_vals, q):
    """Nearest-rank percentile of sorted values (None if empty)."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(-(-q * len(sorted_vals) // 100)) - 1))
    return sorted_vals[k]


def ferry_timeline(rep):
    """Per pre-copy round of a ferry report: when it ended (ms after the start), pages
    and bytes sent, pages dirtied meanwhile (what is left for the next round or the
    stop), the expected downtime the policy computed and the throttle."""
    out, t = [], 0.0
    for i, r in enumerate(rep.get("rounds") or [], 1):
        t += r.get("duration_ms") or 0
        out.append({"round": i, "t_end_ms": round(t, 2), "pages": r.get("pages"),
                    "bytes": r.get("bytes"), "dirty_pages": r.get("dirty_pages"),
                    "expected_downtime_ms": r.get("expected_downtime_ms"),
                    "throttle_pct": r.get("throttle_pct")})
    return out


class QemuTimeline:
    """query-migrate samples of a QEMU source, turned into rounds by dirty-sync-count."""

    COLUMNS = ("t_ms", "status", "sync", "transferred", "remaining", "dirty_rate",
               "expected_downtime_ms", "throttle_pct")

    def __init__(self, t0_ns):
        self.t0 = t0_ns
        self.samples = []

    def add(self, info):
        ram = info.get("ram") or {}
        self.samples.append([round((time.monotonic_ns() - self.t0) / 1e6, 2),
                             info.get("status"), ram.get("dirty-sync-count"),
                             ram.get("transferred"), ram.get("remaining"),
                             ram.get("dirty-pages-rate"), info.get("expected-downtime"),
                             info.get("cpu-throttle-percentage")])

    def throttle_max(self):
        vals = [x[7] for x in self.samples if x[7] is not None]
        return max(vals) if vals else 0

    def rounds(self, page=4096):
        """Round n = from the n-th bitmap sync to the next one: bytes = growth of
        ram.transferred between the first samples after each sync, dirty_pages =
        ram.remaining / page just after the next sync (what that sync found dirty)."""
        first = {}                  # sync -> first sample with it
        for x in self.samples:
            if x[2] is not None and x[2] not in first:
                first[x[2]] = x
        syncs = sorted(first)
        out = []
        for i, n in enumerate(syncs):
            a = first[n]
            b = first[syncs[i + 1]] if i + 1 < len(syncs) else self.samples[-1]
            if b is a:
                continue
            nbytes = (b[3] or 0) - (a[3] or 0)
            out.append({"round": n, "t_end_ms": b[0], "pages": nbytes // page,
                        "bytes": nbytes,
                        "dirty_pages": (b[4] // page if b[4] is not None else None)
                        if i + 1 < len(syncs) else 0,
                        "expected_downtime_ms": a[6], "throttle_pct": a[7],
                        "status": b[1]})
        return out

    def compact(self, keep=400):
        """The raw samples (at most `keep`, evenly thinned; the last one always kept)."""
        xs = self.samples
        if len(xs) > keep:
            step = len(xs) / keep
            xs = [xs[int(i * step)] for i in range(keep)] + [xs[-1]]
        return {"columns": list(self.COLUMNS), "rows": xs}


# ---- summary ----------------------------------------------------------------------------------
METRICS = (  # (key, label, unit, scale)
    ("downtime_ms", "downtime, reported (ms)", "ms", 1),
    ("gap_ms", "guest-visible gap (ms)", "ms", 1),
    ("baseline_gap_ms", "  gap before migrating (ms)", "ms", 1),
    ("gap_switchover_ms", "  gap at the switchover (ms)", "ms", 1),
    ("gap_before_switchover_ms", "  gap during the pre-copy rounds (ms)", "ms", 1),
    ("total_ms", "total time, reported (ms)", "ms", 1),
    ("wall_ms", "total time, host (ms)", "ms", 1),
    ("bytes", "bytes sent (MiB)", "MiB", 1 / 2**20),
    ("rounds", "rounds", "n", 1),
    ("src_rss_peak_kib", "source peak RSS (MiB)", "MiB", 1 / 1024),
    ("dst_rss_peak_kib", "destination peak RSS (MiB)", "MiB", 1 / 1024),
    ("throttle_max_pct", "highest vCPU throttle (%)", "%", 1),
    ("guest_dirty_pps", "guest writes before migrating (pages/s)", "n", 1),
    ("fault_p50_us", "post-copy fault latency p50 (µs)", "us", 1),
    ("fault_p99_us", "post-copy fault latency p99 (µs)", "us", 1),
    ("fault_max_us", "post-copy fault latency max (µs)", "us", 1),
    ("qemu_vcpu_blocktime_sum_ms", "QEMU query-migrate postcopy-vcpu-blocktime, sum (ms)",
     "ms", 1),
    ("remote_faults", "post-copy page requests", "n", 1),
    ("vcpu_blocked_ms", "post-copy fault wait, sum over faults (ms)", "ms", 1),
    ("postcopy_ms", "post-copy phase (ms)", "ms", 1),
    ("host_busy_cpus_before", "host busy CPUs before run", "n", 1),
)
# Rows shown only when some run of the scenario has them.
OPTIONAL_METRICS = ("throttle_max_pct", "guest_dirty_pps", "gap_switchover_ms",
                    "gap_before_switchover_ms", "fault_p50_us", "fault_p99_us", "fault_max_us",
                    "qemu_vcpu_blocktime_sum_ms", "remote_faults", "vcpu_blocked_ms",
                    "postcopy_ms")


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
            if key in OPTIONAL_METRICS and not any(
                    per[s][key]["n"] and (key not in ("throttle_max_pct", "guest_dirty_pps")
                                          or any(per[s][key]["values"]))
                    for s in systems):
                continue
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
        title = describe(name, SCENARIOS[name])
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
    ap.add_argument("--repeat", type=int, default=int(os.environ.get("BENCH_REPEAT") or 3),
                    help="runs per scenario and system (default: $BENCH_REPEAT or 3)")
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
    ap.add_argument("--poll-ms", type=float, default=20.0,
                    help="QEMU: query-migrate sampling interval during a migration")
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
                    B.log(f"[{r + 1}/{args.repeat}] {name:18s} {system:5s} "
                          f"{'ok  ' if x['converged'] else 'FAIL'} downtime "
                          f"{fmt(x.get('downtime_ms'), 1):>6} ms  gap {fmt(x.get('gap_ms'), 1):>6}"
                          f" ms (before {fmt(x.get('baseline_gap_ms'), 1)})  total "
                          f"{fmt(x.get('total_ms'), 1):>6} ms  "
                          f"{fmt(x.get('bytes'), 1 / 2**20):>6} MiB  rounds {x.get('rounds')}  "
                          f"verify {x.get('verify_ok')}  busy {busy:.2f}"
                          + (f"  throttle {x['throttle_max_pct']}%"
                             if x.get("throttle_max_pct") else "")
                          + (f"  faults {x.get('remote_faults')} p99 "
                             f"{x.get('fault_p99_us')} us blocked {x.get('vcpu_blocked_ms')} ms"
                             if "remote_faults" in x else "")
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
            "argv": B.show_cmd(["python3"] + sys.argv),
            "memory_mib": MEM_MIB, "cpus": CPUS, "tick_us": TICK_US,
            "scenarios": {n: dict(SCENARIOS[n], cmdline=cmdline(SCENARIOS[n]),
                                  mem=mem_mib(SCENARIOS[n]), cpus=ncpus(SCENARIOS[n]),
                                  auto_converge=auto_converge(SCENARIOS[n], args),
                                  mode=SCENARIOS[n].get("mode", "precopy"),
                                  title=describe(n, SCENARIOS[n], args))
                          for n in only},
            "poll_ms": args.poll_ms,
            "systems": systems, "repeat": args.repeat, "timeout_s": args.timeout,
            "bandwidth_mibs": args.bandwidth or None,
            "qemu_max_bandwidth": args.bandwidth << 20 if args.bandwidth else QEMU_NO_CAP,
            "auto_converge": args.auto_converge, "settle_s": args.settle,
            "quiet_wait_s": args.quiet_wait, "qemu_variant": args.qemu_variant,
            "gap_window_s": [-GAP_BEFORE_S, "end +", GAP_AFTER_S],
            "elapsed_s": round(time.monotonic() - t_begin, 1),
            "host_thp": B.read_text("/sys/kernel/mm/transparent_hugepage/enabled"),
            "commands": _commands(args),
        },
        "summary": summary,
        "report_markdown": table(summary, systems, md=True),
        "samples": samples,
    }
    B.write_result(out, result)
    print(table(summary, systems))


def _commands(args):
    """The commands of one run, with placeholders (MEM, CPUS, MIB, RATE, LIMIT, PORT)."""
    fifo = "DEBUGCON.fifo"
    mig = [B.FERRY, "migrate", "--api-socket", "SRC.sock", "tcp:127.0.0.1:PORT",
           "--downtime-ms", "LIMIT", "--wait", "--json"]
    if args.bandwidth:
        mig += ["--bandwidth", str(args.bandwidth)]
    if args.auto_converge:
        mig += ["--auto-converge"]
    sc = {"mib": "MIB", "rate": "RATE", "mem": "MEM", "cpus": "CPUS"}
    cap = args.bandwidth << 20 if args.bandwidth else QEMU_NO_CAP
    return {
        "ferry": [
            B.show_cmd([B.FERRY, "run", "--incoming", "tcp:127.0.0.1:PORT", "--memory",
                        "MEM", "--cpus", "CPUS", "--api-socket", "DST.sock",
                        "--console", "file:DST.console", "--debugcon", fifo]),
            B.show_cmd(B.ferry_run_cmd("MEM", "CPUS", cmdline(sc), "SRC.console", "SRC.sock")
                       + ["--debugcon", fifo]),
            B.show_cmd(mig) + "   # dirty-max-ac: + --auto-converge; dirty-max-postcopy: "
            "+ --mode postcopy; dirty-max-hybrid: + --mode hybrid",
            "# *-mfd, *-zstd, *-cap100: + --connections N [--compress zstd|auto] "
            "[--bandwidth 100] (see each scenario)",
            "on timeout: ferry migrate-cancel --api-socket SRC.sock; after: ferry shutdown "
            "--api-socket DST.sock",
        ],
        "qemu": [
            B.show_cmd(qemu_vm_cmd(sc, "DST.console", "DST.qmp", fifo, args.qemu_variant,
                                   incoming="tcp:127.0.0.1:PORT")),
            B.show_cmd(qemu_vm_cmd(sc, "SRC.console", "SRC.qmp", fifo, args.qemu_variant)),
            "QMP (source): migrate-set-capabilities events=on auto-converge=" +
            ("on" if args.auto_converge else "off (on in dirty-max-ac)") +
            f"; migrate-set-parameters downtime-limit=LIMIT max-bandwidth={cap}; "
            "migrate uri=tcp:127.0.0.1:PORT; query-migrate every "
            f"{args.poll_ms:g} ms until the event MIGRATION completed|failed|cancelled "
            "(migrate_cancel on timeout); query-migrate; quit both",
            "QMP, dirty-max-postcopy: postcopy-ram=on on both sides and postcopy-blocktime=on "
            "on the destination before migrate; migrate-start-postcopy once query-migrate "
            "shows dirty-sync-count >= 2; afterwards query-migrate on the destination",
            "QMP, dirty-max-hybrid: the same, but migrate-start-postcopy only once a pre-copy "
            "round after the first pass stalls (ferry's hybrid rule on QEMU's counters: the "
            "round dirtied at least half of what it sent)",
            "QMP, *-mfd / *-zstd / *-cap100: the destination starts with -incoming defer; "
            "migrate-set-capabilities multifd=on and migrate-set-parameters "
            "multifd-channels=N [multifd-compression=zstd] on both sides, then "
            "migrate-incoming on the destination; max-bandwidth=100 MiB/s in *-cap100",
        ],
        "gap_reader": "python3 bench/gap_reader.py DEBUGCON.fifo TIMES (both VMMs write the FIFO)",
    }


if __name__ == "__main__":
    B.main_guard(main)
