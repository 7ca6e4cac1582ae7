#!/usr/bin/python3
"""virtio devices: disk and network performance of ferry vs QEMU, same test guest.

    python3 bench/bench_virtio.py [--out bench/results/virtio-<timestamp>.json] [--repeat N]
                                  [--only blk|net] [--systems ferry,qemu,qemu-direct]

Each measurement is taken N times (default 3; systems interleaved, one VM at a time,
after waiting for a quiet host) and the median of each figure is reported.

Disk: the test guest with `blkbench=1` (guest/README.md) on a fresh 256 MiB raw file:
its polled virtio-blk driver (CPL3, on the last of 2 vCPUs) runs, for ~2 s of guest time
each, sequential 1 MiB writes then reads over 128 MiB (4 requests in flight), and 4 KiB
random reads at queue depth 1 and 16; it prints MB/s and IOPS (`BLKBENCH ...`).
  * ferry: `--disk path=FILE` (buffered I/O on the host page cache);
  * qemu: virtio-blk-pci, `cache=writeback,aio=threads` (QEMU's default: also the
    host page cache, the comparable setting);
  * qemu-direct: `cache=none,aio=io_uring` (O_DIRECT, QEMU's fastest path to a real
    disk; on this host the file is on the same filesystem).
Network: each VMM attaches a tap in a network namespace made for the run (10.99.0.1/24
on the host side, guest 10.99.0.2, `net=1`); from the namespace, guest/netprobe.py sends
200 pings (raw ICMP, 10 ms apart: RTT p50/p99) and streams UDP datagrams to the guest's
echo port with 32 outstanding, 3 s each for 64- and 1400-byte payloads (echoed
datagrams/s and payload MB/s). QEMU: virtio-net-pci on a tap (no vhost, like ferry).
Systems without --disk/--net (an older ferry) are skipped with a message. The disk
file is in $TMPDIR (here /tmp is on the root ext4/virtio disk, not tmpfs).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B           # noqa: E402

MEM_MIB = 256
CPUS = 2
DISK_MIB = 256
BLK_CMDLINE = "dirtier.mib=16 blkbench=1"
NET_CMDLINE = "dirtier.mib=16 net=1"
GUEST_IP = "10.99.0.2"
MAC = "52:54:00:12:34:56"
NETPROBE = os.path.join(B.ROOT, "guest", "netprobe.py")
BLK_RE = (r"BLKBENCH seqread MBps=(\d+) seqwrite MBps=(\d+) randread4k_qd1 iops=(\d+) "
          r"randread4k_qd16 iops=(\d+)")


def ferry_supports(opt):
    out = subprocess.run([B.FERRY, "run", "--help"], capture_output=True, text=True)
    return opt in out.stdout + out.stderr


def vmm_cmd(system, cmdline, console, tmp, disk=None, tap=None):
    if system == "ferry":
        cmd = [B.FERRY, "run", "--kernel", B.GUEST, "--memory", str(MEM_MIB), "--cpus",
               str(CPUS), "--cmdline", cmdline, "--console", "file:" + console, "--no-rng"]
        if disk:
            cmd += ["--disk", f"path={disk}"]
        if tap:
            cmd += ["--net", f"tap={tap},mac={MAC}"]
        return cmd
    cmd = B.qemu_cmd(MEM_MIB, CPUS, cmdline, console, os.path.join(tmp, "qmp.sock"))
    if disk:
        cache = "cache=none,aio=io_uring" if system == "qemu-direct" else \
            "cache=writeback,aio=threads"
        cmd += ["-device", "virtio-blk-pci,drive=d0,disable-legacy=on",
                "-drive", f"if=none,id=d0,file={disk},format=raw,{cache}"]
    if tap:
        cmd += ["-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
                "-device", f"virtio-net-pci,netdev=n0,disable-legacy=on,mac={MAC}"]
    return cmd


def bench_blk(system, tmp):
    disk = os.path.join(tmp, "disk.img")
    if os.path.exists(disk):
        os.unlink(disk)
    with open(disk, "wb") as f:
        f.truncate(DISK_MIB << 20)
    console = os.path.join(tmp, f"blk-{system}-{time.monotonic_ns()}.log")
    proc = B.Proc(vmm_cmd(system, BLK_CMDLINE, console, tmp, disk=disk), console + ".vmm")
    try:
        con = B.Console(console, interval=0.05)
        _, _, m = con.wait_for(BLK_RE, 120, proc=proc)
        ok = bool(con.grep(r"^BLK ok 0"))
        return {"seqread_MBps": int(m.group(1)), "seqwrite_MBps": int(m.group(2)),
                "randread4k_qd1_iops": int(m.group(3)),
                "randread4k_qd16_iops": int(m.group(4)), "blktest_ok": ok,
                "problems": con.problems()}
    finally:
        proc.kill()


def netns_up(ns):
    for cmd in (["ip", "netns", "add", ns],
                ["ip", "netns", "exec", ns, "ip", "tuntap", "add", "dev", "tap0", "mode", "tap"],
                ["ip", "netns", "exec", ns, "ip", "addr", "add", "10.99.0.1/24", "dev", "tap0"],
                ["ip", "netns", "exec", ns, "ip", "link", "set", "tap0", "up"],
                ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]):
        subprocess.run(cmd, check=True)


def netprobe(ns, *args):
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, NETPROBE, GUEST_IP,
                          *map(str, args)], capture_output=True, text=True, timeout=120)
    if out.returncode:
        raise RuntimeError(f"netprobe {args}: {out.stderr[-500:]}")
    return json.loads(out.stdout)


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100))] if v else None


def bench_net(system, tmp):
    ns = f"fbench{os.getpid()}"
    console = os.path.join(tmp, f"net-{system}-{time.monotonic_ns()}.log")
    netns_up(ns)
    proc = None
    try:
        proc = B.Proc(["ip", "netns", "exec", ns] +
                      vmm_cmd(system, NET_CMDLINE, console, tmp, tap="tap0"), console + ".vmm")
        con = B.Console(console, interval=0.05)
        con.wait_for(r"^NET ready", 60, proc=proc)
        netprobe(ns, "ping", 5, 0.01)          # ARP and warm-up
        ping = netprobe(ns, "ping", 200, 0.01)
        out = {"ping_sent": ping["sent"], "ping_received": ping["received"],
               "rtt_p50_us": pct(ping["rtt_us"], 50), "rtt_p99_us": pct(ping["rtt_us"], 99)}
        for size in (64, 1400):
            u = netprobe(ns, "udp", 7, size, 3.0, 32)
            out[f"udp{size}_pps"] = u["pps"]
            out[f"udp{size}_MBps"] = u["MBps"]
            out[f"udp{size}_lost"] = u["sent"] - u["received"]
            out[f"udp{size}_bad"] = u["bad"]
        out["problems"] = con.problems()
        return out
    finally:
        if proc:
            proc.kill()
        subprocess.run(["ip", "netns", "del", ns])


BLK_COLS = ["seqread_MBps", "seqwrite_MBps", "randread4k_qd1_iops", "randread4k_qd16_iops"]
NET_COLS = ["rtt_p50_us", "rtt_p99_us", "udp64_pps", "udp64_MBps", "udp1400_pps", "udp1400_MBps"]


def table(results):
    systems = list(results)
    lines = [f"{'':24}" + "".join(f"{s:>14}" for s in systems)]
    for kind, cols in (("blk", BLK_COLS), ("net", NET_COLS)):
        for c in cols:
            vals = [results[s].get(kind, {}).get(c) for s in systems]
            if any(v is not None for v in vals):
                lines.append(f"{kind + ' ' + c:24}" + "".join(
                    f"{'-' if v is None else round(v, 1):>14}" for v in vals))
    return "\n".join(lines)


ROWS = (  # (kind, key, label, unit)
    ("blk", "seqread_MBps", "sequential read, 1 MiB × 4 in flight", "MB/s"),
    ("blk", "seqwrite_MBps", "sequential write, 1 MiB × 4 in flight", "MB/s"),
    ("blk", "randread4k_qd1_iops", "4 KiB random read, QD 1", "IOPS"),
    ("blk", "randread4k_qd16_iops", "4 KiB random read, QD 16", "IOPS"),
    ("net", "rtt_p50_us", "ping RTT p50 (200 pings, 10 ms apart)", "µs"),
    ("net", "rtt_p99_us", "ping RTT p99", "µs"),
    ("net", "udp64_pps", "UDP echo, 64-byte payload, 32 outstanding", "/s"),
    ("net", "udp1400_pps", "UDP echo, 1400-byte payload, 32 outstanding", "/s"),
    ("net", "udp1400_MBps", "  the same in MB/s", "MB/s"),
)
TITLES = {"ferry": "ferry", "qemu": "QEMU (writeback, threads)",
          "qemu-direct": "QEMU (cache=none, io_uring)"}


def cell(res, kind, key, unit):
    r = res.get(kind) or {}
    if key not in r:
        return ""
    vals = [x[key] for x in r.get("runs", []) if x.get(key) is not None]
    rng = f" [{min(vals):.0f}–{max(vals):.0f}]" if len(vals) > 1 else ""
    return f"{r[key]:.0f} {unit}{rng}"


def render(res):
    """Markdown for docs/BENCHMARKS.md (bench/report.py calls it)."""
    systems = [s for s in ("ferry", "qemu", "qemu-direct") if s in res.get("results", {})]
    out = [f"Median of {res.get('repeat')} runs per figure, min–max in brackets; "
           f"{res.get('mem_mib')} MiB, {res.get('cpus')} vCPUs. Command: "
           "`python3 bench/bench_virtio.py` (part of `make bench`).", "",
           "| | " + " | ".join(TITLES[s] for s in systems) + " |",
           "|---|" + "---|" * len(systems)]
    for kind, key, label, unit in ROWS:
        cells = [cell(res["results"][s], kind, key, unit) for s in systems]
        if any(cells):
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    if res.get("skipped"):
        out += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in res["skipped"].items())]
    out += ["",
            "- Both run the test guest's own polled drivers (CPL 3, on the last of 2 vCPUs; "
            "`guest/README.md`) against virtio-pci devices.",
            "- Disk: a fresh sparse raw file per run; the guest writes 128 MiB sequentially "
            "for ~2 s (so the region is allocated and cached), reads it, then random 4 KiB "
            "reads for ~2 s at each depth (guest time). ferry's device does pread/pwrite on "
            "the host page cache from its worker thread, so QEMU's default "
            "(`cache=writeback,aio=threads`) is the comparable setting; "
            "`cache=none,aio=io_uring` (O_DIRECT) is shown for reference: it measures the "
            "host's disk, not the VMM.",
            "- Network: a tap in a namespace made for the run, no vhost for either; the host "
            "side is `guest/netprobe.py` (raw ICMP ping; UDP with 32 datagrams outstanding, "
            "3 s per size, every echo compared with what was sent).",
            "- ferry serves one request at a time per device on one worker thread; QEMU's "
            "thread pool overlaps the requests in flight, which is where its sequential "
            "reads gain. The ranges are wide on this shared 2-CPU host: only differences "
            "well beyond a factor of 2 mean anything."]
    return "\n".join(out)


def median_of(runs):
    """Per numeric key, the median over runs; the runs themselves are kept too."""
    out = {}
    for k, v in runs[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = statistics.median(r[k] for r in runs)
    out["blktest_ok"] = all(r.get("blktest_ok", True) for r in runs)
    out["problems"] = [p for r in runs for p in r.get("problems", [])]
    out["runs"] = runs
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=B.default_out("virtio"))
    ap.add_argument("--only", choices=["blk", "net"])
    ap.add_argument("--systems", default="ferry,qemu,qemu-direct")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    B.check_tools()
    if os.geteuid() != 0 and args.only != "blk":
        sys.exit("the network test needs root (network namespace, tap, raw ICMP)")
    systems = args.systems.split(",")
    runs, skipped = {s: {} for s in systems}, {}
    with tempfile.TemporaryDirectory(prefix="bench-virtio-") as tmp:
        for rep in range(args.repeat):
            for s in systems:
                for kind, fn, opt in (("blk", bench_blk, "--disk"), ("net", bench_net, "--net")):
                    if args.only and args.only != kind:
                        continue
                    if s == "qemu-direct" and kind == "net":
                        continue                    # same network path as "qemu"
                    if s == "ferry" and not ferry_supports(opt):
                        if rep == 0:
                            skipped[f"{s}-{kind}"] = f"ferry has no {opt} yet"
                            B.log(f"SKIP ferry {kind}: {B.FERRY} run has no {opt} option yet")
                        continue
                    busy, _ = B.wait_quiet(0.8, 20)
                    B.log(f"[{rep + 1}/{args.repeat}] {s} {kind} (host busy {busy:.2f} CPUs) ...")
                    t0 = time.monotonic()
                    r = fn(s, tmp)
                    r["host_busy_cpus"] = round(busy, 2)
                    r["wall_s"] = round(time.monotonic() - t0, 1)
                    B.log(f"  {json.dumps(r)}")
                    runs[s].setdefault(kind, []).append(r)
    results = {s: {k: median_of(v) for k, v in kinds.items()} for s, kinds in runs.items()}
    B.write_result(args.out, {"machine": B.machine_info(), "mem_mib": MEM_MIB, "cpus": CPUS,
                              "disk_mib": DISK_MIB, "blk_cmdline": BLK_CMDLINE,
                              "net_cmdline": NET_CMDLINE, "repeat": args.repeat,
                              "skipped": skipped,
                              "results": results})
    print(table(results))


if __name__ == "__main__":
    main()
