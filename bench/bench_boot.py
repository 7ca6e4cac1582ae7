#!/usr/bin/python3
"""Boot time and idle memory: ferry vs QEMU on the same test guest.

    python3 bench/bench_boot.py [--repeat N] [--out bench/results/boot-<timestamp>.json]

For each system, N times (systems interleaved, one VM at a time):
  * boot time: host time from just before the VMM process is spawned until the guest's
    first `HB` line appears in the serial console file (polled every 2 ms); the times of
    the first console line and of `READY` are recorded too;
  * memory: about 3 s after the first heartbeat, the VMM process's VmRSS (and
    RssAnon/RssFile/RssShmem) from /proc/PID/status, and from /proc/PID/smaps the part
    resident in the guest-RAM mapping; VmRSS minus that is the VMM's own overhead.
    ferry's guest RAM is a memfd (counted in RssShmem), QEMU's is anonymous memory (in
    RssAnon, backed by transparent huge pages when the host allows it);
  * idle CPU: CPU time of the whole VMM process (vCPU threads included) over those 3 s.

Before every sample the script waits (up to --quiet-wait s) until the host has less
than 0.8 CPU busy, and records how busy it was: the machines are shared.

Guest: build/guest/testguest, 1 GiB, 1 vCPU, `dirtier.mib=64` (64 MiB written once at
boot, then only read back by the verifier; heartbeat every 100 ms).
Systems: ferry; QEMU as in the project's reference command (pc machine, SeaBIOS, default
devices); QEMU `-M microvm -nodefaults` (qboot firmware), QEMU's leanest setup; and the
same microvm with its guest RAM in a memfd like ferry's, which isolates the cost of
shared-memory guest RAM (no transparent huge pages) from the rest of the VMM.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B           # noqa: E402
from qmp import Qmp            # noqa: E402

MEM_MIB = 1024
CPUS = 1
CMDLINE = "dirtier.mib=64"
RSS_DELAY_S = 3.0
BOOT_TIMEOUT_S = 30
SYSTEMS = ("ferry", "qemu", "qemu-microvm", "qemu-microvm-memfd")
QEMU_VARIANT = {"qemu": "pc", "qemu-microvm": "microvm", "qemu-microvm-memfd": "microvm-memfd"}


def one_boot(system, tmp):
    console = os.path.join(tmp, f"{system}.console")
    sock = os.path.join(tmp, f"{system}.sock")
    for p in (console, sock):
        if os.path.exists(p):
            os.unlink(p)
    if system == "ferry":
        cmd = B.ferry_run_cmd(MEM_MIB, CPUS, CMDLINE, console, sock)
    else:
        cmd = B.qemu_cmd(MEM_MIB, CPUS, CMDLINE, console, sock, variant=QEMU_VARIANT[system])
    load = B.loadavg()
    con = B.Console(console)
    proc = B.Proc(cmd, os.path.join(tmp, f"{system}.log"))
    try:
        t0 = proc.t_start
        _, t_first, _ = con.wait_for(r"ferry-testguest 1", BOOT_TIMEOUT_S, proc=proc)
        _, t_ready, _ = con.wait_for(r"READY pages=", BOOT_TIMEOUT_S, proc=proc)
        i_hb, t_hb, m = con.wait_for(B.HB_RE.pattern, BOOT_TIMEOUT_S, proc=proc)
        cpu_at_hb = B.cpu_seconds(proc.pid)
        time.sleep(max(0.0, t_hb + RSS_DELAY_S - time.monotonic()))
        mem = B.memory_breakdown(proc.pid, MEM_MIB << 20)
        cpu_idle = B.cpu_seconds(proc.pid) - cpu_at_hb
        idle_window = time.monotonic() - t_hb
        con.poll()
        problems = con.problems()
        sample = {
            "boot_ms": (t_hb - t0) * 1e3,
            "first_line_ms": (t_first - t0) * 1e3,
            "ready_ms": (t_ready - t0) * 1e3,
            "fill_ms": (t_ready - t_first) * 1e3,   # mostly the guest's first touch of its pages
            "first_hb_guest_ns": int(m.group(2)),
            "cpu_s_until_hb": cpu_at_hb,
            "idle_cpu_pct": 100.0 * cpu_idle / idle_window,
            "heartbeats_seen": len(con.heartbeats()),
            "guest_problems": problems,
            "loadavg": load,
            **{k: v for k, v in mem.items()},
        }
        shutdown(system, sock, proc)
        return sample
    finally:
        proc.kill()


def shutdown(system, sock, proc):
    """Asks the VMM to quit; the caller kills it anyway if it does not."""
    try:
        if system == "ferry":
            B.ferry_api(sock, "PUT", "/v1/vm/shutdown", timeout=5)
        else:
            with Qmp(sock, timeout=5) as q:
                q.cmd("quit")
    except (OSError, TimeoutError, ConnectionError) as e:
        B.log(f"  {system}: shutdown request failed ({e}); killing it")
    proc.wait(5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=None)
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help="comma-separated subset of " + ",".join(SYSTEMS))
    ap.add_argument("--quiet-wait", type=float, default=5.0,
                    help="max seconds to wait for a quiet host before each sample")
    args = ap.parse_args()
    systems = [s for s in args.systems.split(",") if s]
    B.check_tools(need_qemu=any(s.startswith("qemu") for s in systems))
    out = args.out or B.default_out("boot")
    tmp = tempfile.mkdtemp(prefix="ferry-bench-boot-")
    B.pin_binaries(tmp)
    info = B.machine_info()
    samples = {s: [] for s in systems}
    try:
        for r in range(args.repeat):
            for s in systems:
                busy, waited = B.wait_quiet(0.8, args.quiet_wait)
                x = one_boot(s, tmp)
                x.update(host_busy_cpus_before=busy, quiet_wait_s=waited)
                samples[s].append(x)
                B.log(f"[{r + 1}/{args.repeat}] {s:18s} boot {x['boot_ms']:7.1f} ms  "
                      f"RSS {x['VmRSS_kib'] / 1024:6.1f} MiB  guest RAM "
                      f"{x['guest_ram_rss_kib'] / 1024:6.1f} MiB  VMM "
                      f"{x['vmm_overhead_kib'] / 1024:5.1f} MiB  idle CPU "
                      f"{x['idle_cpu_pct']:4.1f}%" +
                      (f"  PROBLEMS {x['guest_problems']}" if x["guest_problems"] else ""))
    finally:
        B.kill_all()
        shutil.rmtree(tmp, ignore_errors=True)

    metrics = ("boot_ms", "first_line_ms", "ready_ms", "fill_ms", "VmRSS_kib", "RssAnon_kib",
               "RssFile_kib", "RssShmem_kib", "guest_ram_rss_kib", "vmm_overhead_kib",
               "idle_cpu_pct", "cpu_s_until_hb", "host_busy_cpus_before")
    result = {
        "benchmark": "boot",
        "machine": info,
        "config": {"argv": B.show_cmd(["python3"] + sys.argv),
                   "memory_mib": MEM_MIB, "cpus": CPUS, "cmdline": CMDLINE,
                   "rss_delay_s": RSS_DELAY_S, "repeat": args.repeat, "systems": systems,
                   "quiet_wait_s": args.quiet_wait,
                   "commands": {s: B.show_cmd(_show_cmd(s)) for s in systems}},
        "summary": {s: {k: B.summary([x.get(k) for x in samples[s]]) for k in metrics}
                    for s in systems},
        "samples": samples,
    }
    B.write_result(out, result)
    for s in systems:
        sm = result["summary"][s]
        B.log(f"{s:18s} boot median {sm['boot_ms']['median']:.1f} ms, VmRSS median "
              f"{sm['VmRSS_kib']['median'] / 1024:.1f} MiB, VMM overhead median "
              f"{sm['vmm_overhead_kib']['median'] / 1024:.1f} MiB")


def _show_cmd(system):
    if system == "ferry":
        return B.ferry_run_cmd(MEM_MIB, CPUS, CMDLINE, "CONSOLE", "API.sock")
    return B.qemu_cmd(MEM_MIB, CPUS, CMDLINE, "CONSOLE", "QMP.sock",
                      variant=QEMU_VARIANT[system])


if __name__ == "__main__":
    B.main_guard(main)
