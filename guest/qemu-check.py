#!/usr/bin/env python3
"""Boots the test guest under QEMU (PVH entry) and checks what it prints.

Usage: guest/qemu-check.py [--guest build/guest/testguest] [--only NAME...] [--logs DIR]
Each check prints PASS/FAIL with the numbers it measured; exit status 1 if any failed.
With --logs, the guest output of every run is kept in DIR/<check>.log.
QEMU spends ~3.5 s in its firmware before the guest runs, so each check takes a while.
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib

QEMU = os.environ.get("QEMU", "qemu-system-x86_64")
RUNS = []           # runs of the current check, for --logs
HB_RE = re.compile(r"^HB (\d+) (\d+) (\d+)$")


class Run:
    """One QEMU run: guest lines (after the firmware's noise) with host timestamps."""

    def __init__(self, guest, smp, mem, append, secs, inputs=(), debugcon=None, qemu_args=(),
                 machine=(), prefix=()):
        cmd = [*prefix, QEMU, *machine, "-enable-kvm", "-cpu", "host,arch-capabilities=off", "-m", str(mem),
               "-smp", str(smp), "-kernel", guest, "-append", append, "-nographic",
               "-no-reboot", "-serial", "stdio", "-monitor", "none"]
        if debugcon:
            cmd += ["-device", "isa-debugcon,iobase=0xe9,chardev=dbg",
                    "-chardev", f"file,id=dbg,path={debugcon}"]
        cmd += qemu_args
        self.lines = []             # (host time, text)
        self.ready_at = None
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
        reader.start()
        start = time.monotonic()
        pending = list(inputs)      # (seconds after READY, bytes or a function of this run)
        while proc.poll() is None and time.monotonic() - start < secs:
            if self.ready_at and pending and time.monotonic() - self.ready_at >= pending[0][0]:
                what = pending.pop(0)[1]
                if callable(what):
                    what(self)
                else:
                    proc.stdin.write(what)
                    proc.stdin.flush()
            time.sleep(0.05)
        self.exited = proc.poll() is not None
        if not self.exited:
            proc.kill()
        proc.wait()
        reader.join(timeout=2)
        self.exit_code = proc.returncode
        RUNS.append(self)

    def _read(self, proc):
        seen = False
        for raw in proc.stdout:
            text = raw.decode(errors="replace").rstrip("\r\n")
            if not seen and "ferry-testguest" in text:
                text = text[text.index("ferry-testguest"):]     # after SeaBIOS's output
                seen = True
            if seen:
                self.lines.append((time.monotonic(), text))
                if text.startswith("READY") and not self.ready_at:
                    self.ready_at = time.monotonic()

    def text(self):
        return [t for _, t in self.lines]

    def grep(self, prefix):
        return [t for t in self.text() if t.startswith(prefix)]

    def hbs(self):
        return [tuple(map(int, m.groups())) for m in map(HB_RE.match, self.text()) if m]


def check_common(r, smp, mem, pages):
    """Boot lines in order, heartbeats every 100 ms, a VERIFY ok per second, no errors."""
    errs = []
    text = r.text()
    want = ["ferry-testguest 1", "CMDLINE ", f"CPUS {smp} MEM ", f"READY pages={pages}"]
    pos = 0
    for w in want:
        idx = next((i for i in range(pos, len(text)) if text[i].startswith(w)), None)
        if idx is None:
            errs.append(f"missing or out of order: {w!r}")
            break
        pos = idx + 1
    cpus = r.grep("CPUS ")
    if cpus:
        got = int(cpus[0].split()[3])
        if got not in (mem - 1, mem):   # SeaBIOS reserves 640K-1M and 128K below the top
            errs.append(f"MEM {got}, expected {mem} (or {mem - 1})")
    bad = [t for t in text
           if t.startswith(("PANIC", "ERROR", "VERIFY FAIL", "TIME BACKWARDS", "STALL"))]
    if bad:
        errs.append(f"error lines: {bad[:3]}")
    hb = r.hbs()
    if len(hb) < 20:
        errs.append(f"only {len(hb)} heartbeats")
        return errs, {}
    gaps = [(b[1] - a[1]) / 1e6 for a, b in zip(hb, hb[1:])]
    if any(b[0] != a[0] + 1 for a, b in zip(hb, hb[1:])):
        errs.append("heartbeat sequence has holes")
    # A hung guest stops for seconds; host preemption on a shared 2-core machine has
    # delayed single heartbeats by up to ~0.6 s. The mean catches drift.
    if abs(statistics.mean(gaps) - 100) > 1 or max(gaps) > 1000:
        errs.append(f"heartbeat gaps mean {statistics.mean(gaps):.2f} ms max {max(gaps):.1f} ms")
    secs = (hb[-1][1] - hb[0][1]) / 1e9
    ok = len(r.grep("VERIFY ok"))
    if ok < secs - 2 or ok > secs + 2:
        errs.append(f"{ok} VERIFY ok lines in {secs:.1f} s")
    if any(t != f"VERIFY ok {pages}" for t in r.grep("VERIFY ok")):
        errs.append("VERIFY ok with the wrong page count")
    rate = (hb[-1][2] - hb[1][2]) / ((hb[-1][1] - hb[1][1]) / 1e9)
    return errs, {"hb": len(hb), "hb_gap_max_ms": round(max(gaps), 1), "verify_ok": ok,
                  "pages_per_s": round(rate)}


def ready_ms(r):
    """Guest time from the first instruction to READY, from the boot.trace line."""
    t = [x for x in r.grep("TRACE boot_us")]
    return int(re.search(r"ready=(\d+)", t[0]).group(1)) / 1000 if t else None


def check_boot(guest, smp, mem, mib=64, secs=14):
    r = Run(guest, smp, mem, f"dirtier.mib={mib} dirtier.rate=5000 boot.trace=1", secs)
    errs, info = check_common(r, smp, mem, mib * 256)
    info["ready_ms"] = ready_ms(r)
    return errs, info


def check_clamp(guest):
    """More MiB than RAM: a WARN, then the largest RAM range above the image is used."""
    r = Run(guest, 2, 256, "dirtier.mib=1000 dirtier.rate=5000", 14)
    warn = r.grep("WARN dirtier.mib=1000 does not fit in RAM, using ")
    mib = int(warn[0].split()[-1]) if warn else 0
    errs, info = check_common(r, 2, 256, mib * 256)
    if not 240 <= mib <= 255:
        errs.append(f"clamped to {mib} MiB")
    info["clamped_mib"] = mib
    return errs, info


def check_options(guest):
    """One dirtier CPU of two, random pattern: same totals, CPU 0 owns no pages."""
    r = Run(guest, 2, 1024, "dirtier.mib=32 dirtier.rate=20000 dirtier.cpus=1 "
            "dirtier.pattern=random", 14)
    errs, info = check_common(r, 2, 1024, 32 * 256)
    if info and not 19000 <= info["pages_per_s"] <= 21000:
        errs.append(f"{info['pages_per_s']} pages/s")
    return errs, info


def check_rate(guest, smp, rate, lo, hi):
    r = Run(guest, smp, 1024, f"dirtier.mib=128 dirtier.rate={rate}", 15)
    errs, info = check_common(r, smp, 1024, 128 * 256)
    if info and not lo <= info["pages_per_s"] <= hi:
        errs.append(f"{info['pages_per_s']} pages/s, expected {lo}..{hi}")
    return errs, info


def check_console(guest):
    inputs = [(1.5, b"stat\r"), (2.0, b"  frobnicate now\n"), (2.5, b"stat\n"),
              (3.0, b"poweroff\r")]
    r = Run(guest, 2, 512, "dirtier.rate=1000 no.such=1", 25, inputs)
    errs = []
    stat_re = re.compile(r"^STAT cpus=2 mem=51[12] pages=16384 written=\d+ hb=\d+ "
                         r"rounds=\d+ ns=\d+$")
    stats = r.grep("STAT")
    if len(stats) != 2 or not all(stat_re.match(s) for s in stats):
        errs.append(f"STAT lines: {stats}")
    if "ERR unknown command frobnicate" not in r.text():
        errs.append("no ERR for the unknown command")
    if "WARN unknown option no.such" not in r.text():
        errs.append("no WARN for the unknown option")
    if "POWEROFF" not in r.text() or not r.exited or r.exit_code != 0:
        errs.append(f"poweroff: exited={r.exited} code={r.exit_code}")
    return errs, {"stat": stats[:1]}


def check_microvm(guest):
    """QEMU microvm: no SeaBIOS, hardware-reduced ACPI (poweroff via the sleep register)."""
    machine = ["-M", "microvm,memory-backend=ram", "-nodefaults",
               "-object", "memory-backend-memfd,id=ram,size=1024M"]
    r = Run(guest, 2, 1024, "dirtier.mib=128 dirtier.rate=20000", 25,
            inputs=[(8.0, b"poweroff\r")], machine=machine)
    errs, info = check_common(r, 2, 1024, 128 * 256)
    if "POWEROFF" not in r.text() or not r.exited or r.exit_code != 0:
        errs.append(f"poweroff: exited={r.exited} code={r.exit_code}")
    return errs, info


def check_tick(guest, smp, rate):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "dbg.out")
        r = Run(guest, smp, 1024, f"dirtier.mib=128 dirtier.rate={rate} tick.us=1000", 15,
                debugcon=path)
        errs, info = check_common(r, smp, 1024, 128 * 256)
        hb = r.hbs()
        data = open(path, "rb").read()
    # Ticks start at READY, like heartbeats; the guest ran hb[-1] - hb[0] + a bit.
    secs = (hb[-1][1] - hb[0][1]) / 1e9 if len(hb) > 1 else 1
    per_s = len(data) / secs
    if set(data) - {ord(".")} or not 950 <= per_s <= 1100:
        errs.append(f"{per_s:.0f} ticks/s")
    info["ticks_per_s"] = round(per_s)
    return errs, info


def gdb_write(port, addr, data):
    """Writes guest memory through QEMU's gdbstub (which pauses the VM meanwhile)."""
    def packet(body):
        return b"$%s#%02x" % (body, sum(body) & 0xff)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(packet(b"M%x,%x:%s" % (addr, len(data), data.hex().encode())))
        reply = b""     # QEMU may first send a stop reply ($T02...) for the pause
        while b"$OK#" not in reply and b"$E" not in reply:
            chunk = s.recv(256)
            if not chunk:
                break
            reply += chunk
        s.sendall(b"+" + packet(b"c"))
        time.sleep(0.2)
    return b"$OK#" in reply


def check_corrupt(guest):
    """Flip word 7 of page 100 behind the guest's back: the next round must report it."""
    port = 20000 + os.getpid() % 20000
    result = {}

    def corrupt(r):
        lay = next((t for t in r.text() if t.startswith("TRACE layout")), "")
        m = re.search(r"pages=0x([0-9a-f]+)", lay)
        if m:
            result["ok"] = gdb_write(port, int(m.group(1), 16) + 100 * 4096 + 7 * 8, b"\xff" * 8)

    r = Run(guest, 2, 512, "dirtier.mib=64 dirtier.rate=0 boot.trace=1", 16,
            inputs=[(3.0, corrupt)], qemu_args=["-gdb", f"tcp:127.0.0.1:{port}"])
    errs = []
    fails = r.grep("VERIFY FAIL")
    if not result.get("ok"):
        errs.append("gdbstub write failed")
    if not fails or not re.match(r"^VERIFY FAIL 100 gen=1 expected=1 word=7 bad=1$", fails[0]):
        errs.append(f"VERIFY FAIL lines: {fails[:2]}")
    if r.grep("TIME BACKWARDS"):
        errs.append("time went backwards across the gdb pause")
    return errs, {"fail": fails[:1]}


BLK_XOR = 0x5a5a5a5a5a5a5a5a
HERE = os.path.dirname(os.path.abspath(__file__))


def blk_pattern():
    """The second MiB as blktest writes it: sector s, word w = (s << 32 | w) ^ 0x5a.."""
    import struct
    return b"".join(struct.pack("<64Q", *[((s << 32) | w) ^ BLK_XOR for w in range(64)])
                    for s in range(2048))


def blkw_errors(data, last_g, first_mib=2, mib=2):
    """blk.loop's area after poweroff: each sector holds pass last_g's words or
    last_g + 1's (the pass under way)."""
    import struct
    errs = []
    for s in range(first_mib * 2048, (first_mib + mib) * 2048):
        words = struct.unpack_from("<64Q", data, s * 512)
        ok = any(all(v == (g << 48) | (s << 16) | w for w, v in enumerate(words))
                 for g in (last_g, last_g + 1))
        if not ok:
            errs.append(f"sector {s}: word0 {words[0]:#x} (last pass {last_g})")
            break
    return errs


def blk_lines(r, n, data, errs):
    """`BLK n <sectors> <crc>` must match the file."""
    want = f"BLK {n} {len(data) // 512} {zlib.crc32(data[:1 << 20]):08x}"
    if want not in r.text():
        errs.append(f"no {want!r}: {[t for t in r.grep('BLK ') if t.startswith(f'BLK {n} ')]}")


def check_virtio_blk(guest):
    """Two disks (the second read-only) and rng: checksums, the pattern in the second MiB,
    BLK ro, MSI-X interrupts counted during blktest, blk.loop passes whose pattern is in the file after poweroff; then blk.loop
    on one vCPU, which must interleave with the heartbeats."""
    errs, info = [], {}
    with tempfile.TemporaryDirectory() as d:
        d0, d1 = os.path.join(d, "d0.img"), os.path.join(d, "d1.img")
        orig0, orig1 = os.urandom(8 << 20), os.urandom(3 << 20)
        for path, data in ((d0, orig0), (d1, orig1)):
            with open(path, "wb") as f:
                f.write(data)
        dev = ["-device", "virtio-blk-pci,drive=d0,disable-legacy=on",
               "-drive", f"if=none,id=d0,file={d0},format=raw",
               "-device", "virtio-rng-pci,disable-legacy=on",
               "-device", "virtio-blk-pci,drive=d1,disable-legacy=on",
               "-drive", f"if=none,id=d1,file={d1},format=raw,readonly=on"]
        r = Run(guest, 2, 256, "dirtier.rate=5000 blktest=1 blk.loop=1 blk.mib=2", 30,
                inputs=[(4.0, b"poweroff\r")], qemu_args=dev)
        e, info = check_common(r, 2, 256, 64 * 256)
        errs += e
        virtio = r.grep("VIRTIO 00:")
        if [v.split()[2] for v in virtio] != ["1042", "1044", "1042"]:
            errs.append(f"VIRTIO lines: {virtio}")
        blk_lines(r, 0, orig0, errs)
        blk_lines(r, 1, orig1, errs)
        for want in ("BLK ok 0", "BLK ro 1"):
            if want not in r.text():
                errs.append(f"no {want!r}: {r.grep('BLK')}")
        irqs = r.grep("VIRTIO irqs ")
        if not irqs or int(irqs[0].split()[2]) < 2:     # MSI-X: at least one per disk
            errs.append(f"MSI-X interrupts: {irqs}")
        info["irqs"] = irqs[0].split()[2] if irqs else None
        if "POWEROFF" not in r.text() or not r.exited:
            errs.append("no poweroff")
        data0, data1 = open(d0, "rb").read(), open(d1, "rb").read()
        if data0[1 << 20:2 << 20] != blk_pattern():
            errs.append("second MiB of disk 0 lacks the pattern")
        if data0[:1 << 20] != orig0[:1 << 20] or data0[4 << 20:] != orig0[4 << 20:]:
            errs.append("disk 0 changed outside MiB 1..4")
        if data1 != orig1:
            errs.append("the read-only disk changed")
        passes = [t.split() for t in r.grep("BLKW ")]
        if not passes or any(p[2] != "ok" or int(p[1]) != i + 1 for i, p in enumerate(passes)):
            errs.append(f"BLKW lines: {[' '.join(p) for p in passes[:3]]} ... ({len(passes)})")
        else:
            errs += blkw_errors(data0, len(passes))
        info["blkw_passes"] = len(passes)
        # One vCPU: the driver interleaves with heartbeats.
        r1 = Run(guest, 1, 128, "dirtier.rate=5000 blktest=1 blk.loop=1 blk.mib=2", 14,
                 qemu_args=dev[:4])
        e1, info1 = check_common(r1, 1, 128, 64 * 256)
        errs += [f"1 vCPU: {x}" for x in e1]
        if "BLK ok 0" not in r1.text() or len(r1.grep("BLKW ")) < 5:
            errs.append(f"1 vCPU: {r1.grep('BLK')[:3]}")
        info["1cpu_blkw"] = len(r1.grep("BLKW "))
        info["1cpu_hb_gap_max_ms"] = info1.get("hb_gap_max_ms")
    return errs, info


def netns_setup(tag):
    """A network namespace with a tap (10.99.0.1/24) for QEMU or ferry to attach to."""
    ns = f"fgq{tag}{os.getpid()}"
    for cmd in (["ip", "netns", "add", ns],
                ["ip", "netns", "exec", ns, "ip", "tuntap", "add", "dev", "tap0", "mode", "tap"],
                ["ip", "netns", "exec", ns, "ip", "addr", "add", "10.99.0.1/24", "dev", "tap0"],
                ["ip", "netns", "exec", ns, "ip", "link", "set", "tap0", "up"],
                ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]):
        subprocess.run(cmd, check=True)
    return ns


def netprobe(ns, *args):
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable,
                          os.path.join(HERE, "netprobe.py"), *map(str, args)],
                         capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr[-300:]}


def check_virtio_net(guest):
    """Ping (ARP + ICMP) and UDP echo from a netns through a tap; then poweroff."""
    if os.geteuid() != 0:
        return ["needs root (network namespace, tap, raw ICMP)"], {}
    ns = netns_setup("n")
    res = {}
    mac = "52:54:00:12:34:99"

    def probe(r):
        res["ping"] = netprobe(ns, "10.99.0.3", "ping", 20, 0.05)
        res["udp64"] = netprobe(ns, "10.99.0.3", "udp", 5555, 64, 1.0, 8)
        res["udp1400"] = netprobe(ns, "10.99.0.3", "udp", 5555, 1400, 1.0, 8)
        time.sleep(1.2)     # one more NET stat line

    try:
        r = Run(guest, 2, 256, "net=1 net.ip=10.99.0.3 net.udp=5555", 40,
                inputs=[(1.0, probe), (1.5, b"poweroff\r")],
                prefix=["ip", "netns", "exec", ns], qemu_args=["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
                           "-device", f"virtio-net-pci,netdev=n0,disable-legacy=on,mac={mac}"])
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    errs = []
    if f"NET ready {mac}" not in r.text():
        errs.append(f"NET ready: {r.grep('NET')[:2]}")
    p = res.get("ping", {})
    if p.get("received") != 20 or p.get("bad"):
        errs.append(f"ping: {p}")
    for k in ("udp64", "udp1400"):
        u = res.get(k, {})
        if not u.get("received") or u.get("bad") or u["received"] < u["sent"] - 8:
            errs.append(f"{k}: {u}")
    stats = [re.match(r"^NET rx=(\d+) tx=(\d+) drop=(\d+)$", t) for t in r.grep("NET rx=")]
    if not stats or not all(stats) or int(stats[-1].group(2)) < p.get("received", 0) + sum(
            res.get(k, {}).get("received", 0) for k in ("udp64", "udp1400")):
        errs.append(f"NET stat lines: {r.grep('NET rx=')[-1:]}")
    if [t for t in r.text() if t.startswith(("PANIC", "ERROR", "STALL"))]:
        errs.append("error lines")
    rtt = sorted(p.get("rtt_us", [0]))
    return errs, {"rtt_p50_us": rtt[len(rtt) // 2],
                  "udp64_pps": res.get("udp64", {}).get("pps"),
                  "udp1400_MBps": res.get("udp1400", {}).get("MBps")}


CHECKS = {
    "boot-1cpu-128M": lambda g: check_boot(g, 1, 128),
    "boot-2cpu-1024M": lambda g: check_boot(g, 2, 1024, 256),
    "boot-4cpu-4096M": lambda g: check_boot(g, 4, 4096, 1024),
    "boot-4cpu-128M": lambda g: check_boot(g, 4, 128),
    "boot-1cpu-4096M": lambda g: check_boot(g, 1, 4096, 3000, secs=30),   # ~10 s fill
    "clamp": check_clamp,
    "options": check_options,
    "rate-20000": lambda g: check_rate(g, 2, 20000, 19000, 21000),
    "rate-max-2cpu": lambda g: check_rate(g, 2, -1, 500000, 10**9),
    "rate-max-4cpu": lambda g: check_rate(g, 4, -1, 500000, 10**9),
    "console": check_console,
    "corrupt": check_corrupt,
    "microvm": check_microvm,
    "tick-1000us": lambda g: check_tick(g, 2, 20000),
    "virtio-blk": check_virtio_blk,
    "virtio-net": check_virtio_net,
}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guest", default=os.path.join(here, "..", "build", "guest", "testguest"))
    ap.add_argument("--only", nargs="*", choices=sorted(CHECKS), default=None)
    ap.add_argument("--logs", help="keep each run's guest output in this directory")
    args = ap.parse_args()
    failed = 0
    for name in args.only or CHECKS:
        RUNS.clear()
        errs, info = CHECKS[name](args.guest)
        if args.logs:
            os.makedirs(args.logs, exist_ok=True)
            with open(os.path.join(args.logs, f"{name}.log"), "w") as f:
                for r in RUNS:
                    f.writelines(f"{t - r.lines[0][0]:9.3f} {x}\n" for t, x in r.lines)
        failed += bool(errs)
        print(f"{'FAIL' if errs else 'PASS'} {name} {info}" + "".join(f"\n    {e}" for e in errs),
              flush=True)
    print(f"{len(args.only or CHECKS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
