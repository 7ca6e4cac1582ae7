#!/usr/bin/python3
"""Snapshot and restore: ferry vs QEMU (migration to a file / -incoming from it).

    python3 bench/bench_snapshot.py [--repeat N] [--dir /dev/shm] [--out FILE.json]

Guest: build/guest/testguest, 1 GiB, 2 vCPUs, two workloads:
  idle  `dirtier.mib=64`                      64 MiB written once at boot, then only read
  busy  `dirtier.mib=512 dirtier.rate=-1`     512 MiB rewritten at full speed by both vCPUs
Each run boots a VM, waits for its first heartbeat, its first `VERIFY ok` and 2 s more,
then takes a snapshot and restores it in a new VMM process (one VM at a time).

Snapshot (the VM is paused, its state written, the file complete and fsync'ed):
  ferry  wall time of `ferry snapshot --api-socket SOCK FILE` (it pauses the VM, writes
         the file, fsyncs it and renames it into place); ferry's own duration_ms is
         recorded too;
  QEMU   QMP `stop`, then `migrate` to "exec:cat > FILE" with max-bandwidth unlimited
         (QEMU's default cap is 128 MiB/s), polling query-migrate every 2 ms until
         "completed", waiting for the `cat` helper to exit, and an fsync of the file
         (ferry fsyncs; on tmpfs, the default --dir, fsync costs nothing).
Throughput is guest RAM size (1 GiB) / snapshot time, in GiB/s.

Restore: host time from spawning the new VMM until the guest prints its next heartbeat
(`HB` with a higher sequence number than the last one before the snapshot):
  ferry  `ferry restore --snapshot FILE ...` (starts running by itself);
  QEMU   the same command line as the source plus `-incoming "exec:cat FILE"`, then QMP
         (polled every 5 ms) `cont` once the incoming state is loaded.
The guest prints a heartbeat every 100 ms of its own time, so "restore until next HB"
includes 0-100 ms of the guest waiting for its next heartbeat slot. That wait is
computed from the guest's clock (`hb_wait_ms`: the slot of the next HB, from the last
one before the snapshot and the fixed 100 ms schedule, minus the guest time at which the
guest resumed: for ferry read from the snapshot's clock section, for QEMU estimated from
the last heartbeat and the host time of `stop`, at which QEMU freezes the guest clock)
and subtracted in `restore_run_ms`, "until the guest runs again".
After the heartbeat, the guest's next VERIFY line must be `VERIFY ok` (its memory
checker found every page as expected).

Restore throughput is guest RAM size / restore_run_ms.

Systems: `ferry`; `qemu`, the project's reference command (pc machine; guest RAM is
anonymous memory, which this host backs with 2 MiB transparent huge pages); `qemu-4k`,
the same QEMU started with transparent huge pages disabled (prctl PR_SET_THP_DISABLE),
so that its guest RAM is in 4 KiB pages as ferry's memfd is here (the host's
shmem_enabled is "never"): a control for the page size. Optional (--systems):
`qemu-memfd`, QEMU with a memfd memory backend (QEMU reads every page of it, holes
included, which allocates them: slow, and not what ferry does).

Before every sample the script waits (up to --quiet-wait s) until the host has less
than 0.8 CPU busy, and records how busy it was: the machines are shared.
"""
import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B           # noqa: E402
from qmp import Qmp            # noqa: E402

MEM_MIB = 1024
CPUS = 2
WORKLOADS = {"idle": "dirtier.mib=64", "busy": "dirtier.mib=512 dirtier.rate=-1"}
SYSTEMS = ("ferry", "qemu", "qemu-4k")
OPTIONAL_SYSTEMS = ("qemu-memfd",)
QEMU_VARIANT = {"qemu": "pc", "qemu-4k": "pc", "qemu-memfd": "pc-memfd"}
NO_THP = ("qemu-4k",)
SETTLE_S = 2.0
HB_PERIOD_NS = 100_000_000         # the test guest's heartbeat period
BOOT_TIMEOUT_S = 30
SNAPSHOT_TIMEOUT_S = 300
RESTORE_TIMEOUT_S = 120


class Run:
    """One boot -> snapshot -> restore cycle of one system and workload."""

    def __init__(self, system, workload, tmp, snapdir):
        self.system, self.workload = system, workload
        self.cmdline = WORKLOADS[workload]
        tag = f"{system}-{workload}"
        self.files = {k: os.path.join(tmp, f"{tag}.{k}") for k in
                      ("console1", "console2", "sock1", "sock2", "log1", "log2")}
        self.snap = os.path.join(snapdir, f"ferry-bench-{os.getpid()}-{tag}.snap")
        self.s = {"loadavg": B.loadavg()}
        for p in list(self.files.values()) + [self.snap]:
            if os.path.exists(p):
                os.unlink(p)

    def vm_cmd(self, console, sock, incoming=None):
        if self.system == "ferry":
            return B.ferry_run_cmd(MEM_MIB, CPUS, self.cmdline, console, sock)
        return B.qemu_cmd(MEM_MIB, CPUS, self.cmdline, console, sock,
                          variant=QEMU_VARIANT[self.system], incoming=incoming)

    def run(self):
        try:
            self.source()
            self.restore()
        finally:
            B.kill_all()
            for p in (self.snap, self.snap + ".partial"):
                if os.path.exists(p):
                    os.unlink(p)
        return self.s

    # -- source VM and snapshot -------------------------------------------------------------
    def source(self):
        f = self.files
        con = B.Console(f["console1"])
        proc = B.Proc(self.vm_cmd(f["console1"], f["sock1"]), f["log1"],
                      thp_disable=self.system in NO_THP)
        con.wait_for(B.HB_RE.pattern, BOOT_TIMEOUT_S, proc=proc)
        con.wait_for(r"VERIFY ok", 10, proc=proc)
        con.follow(SETTLE_S)
        if self.system == "ferry":
            self.snapshot_ferry(con)
            B.ferry_api(f["sock1"], "PUT", "/v1/vm/shutdown", timeout=10)
        else:
            self.snapshot_qemu(con, proc)
        proc.wait(10)
        proc.kill()
        con.poll()
        self.s["source_problems"] = con.problems()
        st = os.stat(self.snap)
        self.s["file_bytes"] = st.st_size
        self.s["file_allocated_bytes"] = st.st_blocks * 512
        self.s["snapshot_gibps"] = (MEM_MIB / 1024) / (self.s["snapshot_ms"] / 1e3)
        self.s["snapshot_data_mbps"] = st.st_size / 1e6 / (self.s["snapshot_ms"] / 1e3)

    def snapshot_ferry(self, con):
        r, wall = B.run([B.FERRY, "snapshot", "--api-socket", self.files["sock1"], self.snap],
                        timeout=SNAPSHOT_TIMEOUT_S)
        if r.returncode != 0:
            raise RuntimeError(f"ferry snapshot failed ({r.returncode}): {r.stderr}{r.stdout}")
        rep = json.loads(r.stdout)
        self.s.update(snapshot_ms=wall * 1e3, ferry_duration_ms=rep.get("duration_ms"),
                      ferry_reported_bytes=rep.get("bytes"), pages=rep.get("pages"),
                      zero_pages=rep.get("zero_pages"))
        con.poll()
        hbs = con.heartbeats()
        self.s["last_hb_seq"], self.s["last_hb_ns"] = hbs[-1][2], hbs[-1][3]
        self.s["resume_guest_ns"] = B.ferry_snapshot_clock_ns(self.snap)

    def snapshot_qemu(self, con, proc):
        with Qmp(self.files["sock1"], timeout=30) as q:
            q.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
            t0 = time.monotonic()
            q.cmd("stop")
            t_stop = (t0 + time.monotonic()) / 2
            q.cmd("migrate", uri=f"exec:cat > {self.snap}")
            info = q.wait_migration(timeout=SNAPSHOT_TIMEOUT_S, interval=0.002)
            t1 = time.monotonic()
            B.wait_children_gone(proc.pid, 30)
            t2 = time.monotonic()
            fd = os.open(self.snap, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            t3 = time.monotonic()
            ram = info.get("ram", {})
            self.s.update(snapshot_ms=(t3 - t0) * 1e3, qemu_migrate_ms=(t1 - t0) * 1e3,
                          qemu_writer_done_ms=(t2 - t0) * 1e3, qemu_fsync_ms=(t3 - t2) * 1e3,
                          qemu_total_time_ms=info.get("total-time"),
                          qemu_transferred=ram.get("transferred"), pages=ram.get("normal"),
                          zero_pages=ram.get("duplicate"))
            # QEMU freezes the guest clock at `stop`: estimate the guest time then from
            # the last heartbeat seen before it (and the host time that passed since).
            con.poll()
            before = [h for h in con.heartbeats() if h[1] <= t_stop]
            last = before[-1]
            self.s["last_hb_seq"], self.s["last_hb_ns"] = last[2], last[3]
            self.s["resume_guest_ns"] = last[3] + int((t_stop - last[1]) * 1e9)
            self.s["qemu_status_after"] = q.status()
            q.cmd("quit")

    # -- restore ------------------------------------------------------------------------------
    def restore(self):
        f = self.files
        con = B.Console(f["console2"])
        if self.system == "ferry":
            proc = B.Proc(B.ferry_restore_cmd(self.snap, f["console2"], f["sock2"]), f["log2"])
        else:
            proc = B.Proc(self.vm_cmd(f["console2"], f["sock2"], f"exec:cat {self.snap}"),
                          f["log2"], thp_disable=self.system in NO_THP)
            with Qmp.connect_retry(f["sock2"], timeout=RESTORE_TIMEOUT_S) as q:
                st = q.wait_status({"paused", "running"}, timeout=RESTORE_TIMEOUT_S)
                self.s["restore_load_ms"] = (time.monotonic() - proc.t_start) * 1e3
                if st == "paused":
                    q.cmd("cont")
        seq = self.s["last_hb_seq"]
        i, t_hb, m = con.wait_for(r"HB (\d+) (\d+) (\d+)$", RESTORE_TIMEOUT_S, proc=proc)
        while int(m.group(1)) <= seq:          # output the guest had not sent before
            i, t_hb, m = con.wait_for(B.HB_RE.pattern, 10, start=i + 1, proc=proc)
        hb_seq, hb_ns = int(m.group(1)), int(m.group(2))
        restore_ms = (t_hb - proc.t_start) * 1e3
        # How long the resumed guest waited for this heartbeat's slot, by its own clock.
        # The guest's heartbeats are on a fixed 100 ms schedule, restarted from "now" only
        # when it finds itself late (as after a clock jump): the slot is the last one seen
        # plus 100 ms per heartbeat since, and the wait is from the resume until then (never
        # longer than until the line was actually printed). Time the guest was runnable
        # but did not get a CPU is not part of the wait; it stays in restore_run_ms.
        resume = self.s["resume_guest_ns"]
        slot = self.s["last_hb_ns"] + (hb_seq - seq) * HB_PERIOD_NS
        hb_wait_ms = max(0, min(slot - resume, hb_ns - resume)) / 1e6
        self.s.update(restore_ms=restore_ms, hb_wait_ms=hb_wait_ms,
                      restore_run_ms=restore_ms - hb_wait_ms,
                      restore_gibps=(MEM_MIB / 1024) / ((restore_ms - hb_wait_ms) / 1e3),
                      first_hb_seq_after=hb_seq, hb_seq_continues=hb_seq == seq + 1,
                      guest_time_gap_ms=(hb_ns - self.s["last_hb_ns"]) / 1e6)
        try:
            _, _, v = con.wait_for(r"VERIFY (ok|FAIL)", 5, start=i, proc=proc)
            self.s["verify_after_restore"] = v.group(1)
        except (TimeoutError, RuntimeError) as e:
            self.s["verify_after_restore"] = f"none ({e.__class__.__name__})"
        if self.system == "ferry":
            B.ferry_api(f["sock2"], "PUT", "/v1/vm/shutdown", timeout=10)
        else:
            with Qmp(f["sock2"], timeout=10) as q:
                q.cmd("quit")
        proc.wait(10)
        proc.kill()
        con.poll()
        self.s["restore_problems"] = con.problems()
        if self.system == "ferry":
            m = re.search(r"restored .* in (\d+) ms", proc.output())
            self.s["restore_load_ms"] = int(m.group(1)) if m else None


METRICS = ("snapshot_ms", "snapshot_gibps", "file_bytes", "file_allocated_bytes",
           "restore_ms", "restore_run_ms", "hb_wait_ms", "restore_load_ms", "restore_gibps",
           "guest_time_gap_ms", "ferry_duration_ms", "qemu_migrate_ms", "qemu_fsync_ms",
           "pages", "zero_pages", "host_busy_cpus_before")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="where snapshot files go (default /dev/shm, a tmpfs)")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help="comma-separated, from " + ",".join(SYSTEMS + OPTIONAL_SYSTEMS))
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--quiet-wait", type=float, default=5.0,
                    help="max seconds to wait for a quiet host before each sample")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    systems = [s for s in args.systems.split(",") if s]
    workloads = [w for w in args.workloads.split(",") if w]
    B.check_tools(need_qemu=any(s.startswith("qemu") for s in systems))
    out = args.out or B.default_out("snapshot")
    tmp = tempfile.mkdtemp(prefix="ferry-bench-snap-")
    B.pin_binaries(tmp)
    info = B.machine_info()
    snapdir = args.dir or tmp
    fs = os.statvfs(snapdir)
    if fs.f_bavail * fs.f_frsize < 2 << 30:
        sys.exit(f"{snapdir}: less than 2 GiB free")
    samples = {w: {s: [] for s in systems} for w in workloads}
    try:
        for r in range(args.repeat):
            for w in workloads:
                for s in systems:
                    busy, waited = B.wait_quiet(0.8, args.quiet_wait)
                    x = Run(s, w, tmp, snapdir).run()
                    x.update(host_busy_cpus_before=busy, quiet_wait_s=waited)
                    samples[w][s].append(x)
                    bad = x["source_problems"] + x["restore_problems"]
                    B.log(f"[{r + 1}/{args.repeat}] {w:4s} {s:10s} snapshot "
                          f"{x['snapshot_ms']:7.1f} ms ({x['snapshot_gibps']:5.2f} GiB/s) "
                          f"{x['file_bytes'] / 2**20:6.1f} MiB | restore {x['restore_ms']:7.1f}"
                          f" ms (run {x['restore_run_ms']:7.1f}, load "
                          f"{x['restore_load_ms'] or 0:6.1f}) | gap "
                          f"{x['guest_time_gap_ms']:6.0f} ms | verify "
                          f"{x['verify_after_restore']}" + (f" PROBLEMS {bad}" if bad else ""))
    finally:
        B.kill_all()
        shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "benchmark": "snapshot",
        "machine": info,
        "config": {
            "argv": B.show_cmd(["python3"] + sys.argv),
            "memory_mib": MEM_MIB, "cpus": CPUS, "workloads": {w: WORKLOADS[w] for w in workloads},
            "systems": systems, "repeat": args.repeat, "settle_s": SETTLE_S,
            "quiet_wait_s": args.quiet_wait,
            "host_thp": B.read_text("/sys/kernel/mm/transparent_hugepage/enabled"),
            "host_shmem_thp": B.read_text("/sys/kernel/mm/transparent_hugepage/shmem_enabled"),
            "snapshot_dir": snapdir,
            "snapshot_dir_fs": _fstype(snapdir),
            "commands": _commands(systems),
        },
        "summary": {w: {s: {k: B.summary([x.get(k) for x in samples[w][s]]) for k in METRICS}
                        for s in systems} for w in workloads},
        "samples": samples,
    }
    B.write_result(out, result)


def _fstype(path):
    best, fstype = "", None
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, typ = line.split()[:3]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                best, fstype = mnt, typ
    return fstype


def _commands(systems):
    out = {}
    for s in systems:
        if s == "ferry":
            out[s] = [B.show_cmd(B.ferry_run_cmd(MEM_MIB, CPUS, "WORKLOAD", "CONSOLE", "API.sock")),
                      B.show_cmd([B.FERRY, "snapshot", "--api-socket", "API.sock", "FILE"]),
                      B.show_cmd(B.ferry_restore_cmd("FILE", "CONSOLE2", "API2.sock"))]
        else:
            v = QEMU_VARIANT[s]
            out[s] = [B.show_cmd(B.qemu_cmd(MEM_MIB, CPUS, "WORKLOAD", "CONSOLE", "QMP.sock",
                                            variant=v)),
                      'QMP: migrate-set-parameters {"max-bandwidth": 1099511627776}; stop; '
                      'migrate {"uri": "exec:cat > FILE"}; query-migrate until completed',
                      B.show_cmd(B.qemu_cmd(MEM_MIB, CPUS, "WORKLOAD", "CONSOLE2", "QMP2.sock",
                                            variant=v, incoming="exec:cat FILE")) +
                      "   # then QMP: cont"]
            if s in NO_THP:
                out[s].append("both QEMU processes started with prctl(PR_SET_THP_DISABLE, 1)")
    return out


if __name__ == "__main__":
    B.main_guard(main)
