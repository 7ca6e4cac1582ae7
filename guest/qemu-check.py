#!/usr/bin/env python3
"""Boots the test guest under QEMU (PVH entry) and checks what it prints.

Usage: guest/qemu-check.py [--guest build/guest/testguest] [--only NAME...] [--logs DIR]
Each check prints PASS/FAIL with the numbers it measured; exit status 1 if any failed.
With --logs, the guest output of every run is kept in DIR/<check>.log.
QEMU spends ~3.5 s in its firmware before the guest runs, so each check takes a while.
"""
import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

QEMU = os.environ.get("QEMU", "qemu-system-x86_64")
RUNS = []           # runs of the current check, for --logs
HB_RE = re.compile(r"^HB (\d+) (\d+) (\d+)$")


class Run:
    """One QEMU run: guest lines (after the firmware's noise) with host timestamps."""

    def __init__(self, guest, smp, mem, append, secs, inputs=(), debugcon=None, qemu_args=(),
                 machine=()):
        cmd = [QEMU, *machine, "-enable-kvm", "-cpu", "host,arch-capabilities=off", "-m", str(mem),
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
