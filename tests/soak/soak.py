"""`make soak`: ping-pong migrations of a busy 2-vCPU test guest with a disk and
the network responder, on real KVM, with a random fault in about one of five
(kill -9 of either side, a link cut, a flipped bit, a cancel) at a random
phase, cycling pre-copy, post-copy and hybrid and the transfer options.

After each migration: exactly one VMM runs the VM, or none when the fault
killed the VM's only copy (the source before the switchover, either side in
post-copy); its guest verifies memory and disk and answers pings; no stray
ferry process, extra socket or left-over file stays. The table of outcomes per fault and phase goes to
docs/RELIABILITY.md (--report).

    SOAK_N=200 make soak
    python3 tests/soak/soak.py --n 20 --seed 1 [--report docs/RELIABILITY.md]"""
import argparse
import collections
import datetime
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from faultproxy import REC_END, REC_PAGES, REC_SECTION, FaultProxy  # noqa: E402
from ferrylib import Vm, free_port, migrate, wait_listening          # noqa: E402
from netlib import NetNs, Pinger                                     # noqa: E402
from proxy import Proxy                                              # noqa: E402

MAC = "02:fe:00:00:00:02"
CMDLINE = "net=1 blktest=1 blk.loop=1 blk.mib=1 dirtier.mib=32 dirtier.rate=3000"
MODES = ["precopy", "postcopy", "hybrid"]
TRANSFER = [[], ["--connections", "0"], ["--compress", "lz4"], ["--delta"]]
FAULTS = ["kill-source", "kill-destination", "cut", "flip", "cancel"]
ENDED = ("completed", "failed", "cancelled", "aborted")
# What each fault may end in ("lost": the fault killed the VM's only copy).
ALLOWED = {
    ("none", "-"): {"moved"},
    ("kill-source", "rounds"): {"lost"},
    ("kill-source", "postcopy"): {"lost"},
    ("kill-destination", "rounds"): {"kept"},
    ("kill-destination", "postcopy"): {"lost"},
    ("cut", "rounds"): {"kept"},
    ("cut", "postcopy"): {"moved"},
    ("flip", "switchover"): {"kept"},
    ("flip", "postcopy"): {"moved"},
    ("cancel", "rounds"): {"kept", "moved"},   # moved: the switchover came first (409)
}


class Plan:
    """What migration i does: mode, options, and the fault with its phase."""

    def __init__(self, i, rng, rate):
        self.mode = MODES[i % 3]
        self.opts = ["--mode", self.mode, "--bandwidth", "64",
                     *TRANSFER[(i // 3) % len(TRANSFER)]]
        if self.mode == "hybrid":
            self.opts += ["--postcopy-after-rounds", "2"]
        self.fault = rng.choice(FAULTS) if rng.random() < rate else "none"
        pc = self.mode != "precopy"
        self.phase = {"none": "-", "cancel": "rounds",
                      "flip": "postcopy" if self.mode == "postcopy" else "switchover",
                      }.get(self.fault, "postcopy" if pc and rng.random() < 0.5 else "rounds")
        self.delay = rng.uniform(0, 0.3)


class Soak:
    def __init__(self, work):
        self.work, self.n = work, 0
        self.disk = os.path.join(work, "disk.img")
        with open(self.disk, "wb") as f:
            f.truncate(8 << 20)

    def vm(self, **kw):
        self.n += 1
        d = os.path.join(self.work, f"vm{self.n}")
        os.makedirs(d)
        return Vm(d, **kw)

    def boot(self):
        vm = self.vm(memory=256, cpus=2, cmdline=CMDLINE,
                     extra=["--net", f"tap=ftap0,mac={MAC}", "--disk", f"path={self.disk}"])
        vm.wait_for(r"^NET ready", timeout=30)
        vm.wait_for(r"^VERIFY ok", timeout=30)
        vm.wait_api()
        return vm

    def destination(self):
        port = free_port()
        dst = self.vm(incoming=f"tcp:127.0.0.1:{port}",
                      extra=["--net", "tap=ftap0", "--disk", f"path={self.disk}"])
        wait_listening(port)
        return dst, port


def state(vm):
    try:
        return vm.api("GET", "/v1/migration")[1].get("state")
    except (OSError, ValueError):
        return None


def wait_state(vm, states, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and vm.proc.poll() is None:
        st = state(vm)
        if st in states:
            return st
        time.sleep(0.02)
    return None


def strike(plan, src, dst, link):
    """Waits for the phase, then the fault; False if the migration was past it."""
    if plan.fault in ("none", "flip"):
        return True
    want = ("postcopy",) if plan.phase == "postcopy" else ("precopy",)
    if wait_state(src, want, 30) is None:
        return False
    time.sleep(plan.delay)
    if state(src) not in want:
        return False
    if plan.fault == "kill-source":
        src.proc.kill()
    elif plan.fault == "kill-destination":
        dst.proc.kill()
    elif plan.fault == "cut":
        link.cut()
    elif plan.fault == "cancel":
        src.api("PUT", "/v1/migration/cancel")
    return True


def give_up_postcopy(vm):
    """Post-copy whose other half was killed: the VM cannot be whole again."""
    if vm.proc.poll() is None:
        wait_state(vm, ("postcopy-paused", "postcopy"), 30)
        try:
            vm.api("PUT", "/v1/migration/abort")
        except OSError:
            pass                # it ended by itself meanwhile (the migration had finished)
        vm.wait_exit(30)


def settle(plan, src, dst):
    """Lets the migration end; returns (the VMM running the VM or None, outcome)."""
    if plan.fault == "kill-source":
        src.proc.wait()
        if plan.phase == "postcopy":
            give_up_postcopy(dst)
        dst.wait_exit(90)
    elif plan.fault == "kill-destination" and plan.phase == "postcopy":
        dst.proc.wait()
        give_up_postcopy(src)
    final = wait_state(src, ENDED, 180) if src.proc.poll() is None else None
    if final == "completed":
        src.wait_exit(30)
    elif final in ("failed", "cancelled"):
        dst.wait_exit(90)
    alive = [v for v in (src, dst) if v.proc.poll() is None]
    if len(alive) > 1:
        raise AssertionError(f"both VMMs still run (source state {final})")
    if not alive:
        return None, "lost"
    return alive[0], "moved" if alive[0] is dst else "kept"


def verified(vm):
    """The guest in vm: memory verifies, the disk loop goes on, pings answered."""
    mark = vm.mark()
    vm.wait_for(r"^VERIFY ok", timeout=30, start=mark)
    last = max((int(g) for g in re.findall(r"^BLKW (\d+) ok", vm.console.refresh(), re.M)),
               default=0)
    vm.wait_for(rf"^BLKW {last + 1} ok", timeout=30)
    if re.search(r"FAIL", vm.console.refresh()[mark:]):
        raise AssertionError("a FAIL line on the console")
    p = Pinger()
    try:
        if not p.ping(5, interval=0.01):
            raise AssertionError("no ping answered")
    finally:
        p.close()


def sockets(vm):
    """Socket descriptors the VMM holds."""
    n = 0
    for fd in os.listdir(f"/proc/{vm.proc.pid}/fd"):
        try:
            n += os.readlink(f"/proc/{vm.proc.pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def temp_files(work):
    """What the VMMs could leave behind: anything in the soak's directory but
    the disk and the VM directories, any file of a VM directory but its socket,
    console and log, and ferry files in /dev/shm (benchmarks' aside)."""
    left = set()
    for d in os.listdir(work):
        path = os.path.join(work, d)
        if d == "disk.img":
            continue
        if not d.startswith("vm") or not os.path.isdir(path):
            left.add(path)
            continue
        left |= {os.path.join(path, f) for f in os.listdir(path)
                 if f not in ("api.sock", "console.log", "ferry.stderr")}
    return left | {f"/dev/shm/{f}" for f in os.listdir("/dev/shm")
                   if "ferry" in f and "bench" not in f}


def strays(work, keep):
    """ferry processes of this soak other than the one running the VM."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace")
        except OSError:
            continue
        if work in argv and "ferry" in argv.split("\0")[0] and int(pid) not in keep:
            out.append(int(pid))
    return out


def migrate_once(soak, vm, plan):
    dst, port = soak.destination()
    link = None
    if plan.fault == "cut":
        link = Proxy(port)
    elif plan.fault == "flip":
        where = (REC_PAGES, 2, REC_END) if plan.phase == "postcopy" else (REC_SECTION, 1)
        link = FaultProxy(port, "flip", *where)
    try:
        rc, rep, err = migrate(vm, link.uri if link else f"tcp:127.0.0.1:{port}", *plan.opts,
                               wait=False)
        if rc != 0:
            raise AssertionError(f"migrate: {err}")
        if not strike(plan, vm, dst, link):
            plan.fault, plan.phase = "none", "-"      # it ended before the fault came
        survivor, outcome = settle(plan, vm, dst)
    finally:
        if link:
            link.close()
    if plan.fault == "flip" and not link.done.is_set():
        plan.fault, plan.phase = "none", "-"
    return plan, survivor, outcome


def check(plan, survivor, outcome, work, base):
    """base: (sockets of a freshly booted VMM, temp files before the soak)."""
    if outcome not in ALLOWED[(plan.fault, plan.phase)]:
        raise AssertionError(f"{outcome} after {plan.fault} in {plan.phase}")
    if survivor:
        verified(survivor)
    stray = strays(work, {survivor.proc.pid} if survivor else set())
    if stray:
        raise AssertionError(f"stray ferry processes {stray}")
    # after post-copy a destination keeps its listener and main channel (a
    # source that missed DONE reconnects): two more
    if survivor and sockets(survivor) > base[0] + 2:
        raise AssertionError(f"{sockets(survivor)} sockets open, a fresh VMM has {base[0]}")
    left = temp_files(work) - base[1]
    if left:
        raise AssertionError(f"files left behind: {sorted(left)[:5]}")


def keep_evidence(work, i, text):
    """A problem's whole message (with a silent guest's vCPU states) and its VM
    directories (consoles, VMM logs) go to build/soak-problems/N/."""
    dest = os.path.join(HERE, "..", "..", "build", "soak-problems", f"{i}")
    os.makedirs(dest, exist_ok=True)
    with open(os.path.join(dest, "problem.txt"), "w") as f:
        f.write(text)
    for d in os.listdir(work):
        if d.startswith("vm"):
            shutil.copytree(os.path.join(work, d), os.path.join(dest, d),
                            ignore=shutil.ignore_patterns("*.sock"), dirs_exist_ok=True)


def tidy(work, survivor):
    for d in os.listdir(work):
        path = os.path.join(work, d)
        if d.startswith("vm") and (not survivor or path != survivor.dir):
            shutil.rmtree(path, ignore_errors=True)


def soak_run(n, seed, fault_rate, progress=None):
    rng = random.Random(seed)
    work = tempfile.mkdtemp(prefix="ferry-soak-")
    soak = Soak(work)
    counts, problems = collections.Counter(), []
    ns = NetNs("ftap0")
    try:
        with ns.entered():
            vm = soak.boot()
            base = (sockets(vm), temp_files(work))
            for i in range(n):
                plan = Plan(i, rng, fault_rate)
                try:
                    plan, vm, outcome = migrate_once(soak, vm, plan)
                    check(plan, vm, outcome, work, base)
                except Exception as e:            # counted, reported, and the soak goes on
                    text = f"#{i} {plan.mode} {plan.fault}/{plan.phase}: {e}"
                    problems.append(text.splitlines()[0][:300])
                    outcome, vm = "PROBLEM", None
                    keep_evidence(work, i, text)
                counts[(plan.fault, plan.phase, outcome)] += 1
                print(f"#{i} {plan.mode} {plan.fault}/{plan.phase}: {outcome}", flush=True)
                if vm is None:
                    for pid in strays(work, set()):
                        os.kill(pid, 9)
                tidy(work, vm)
                vm = vm or soak.boot()
                if progress and (i + 1) % 50 == 0:
                    progress(i + 1, counts, problems)
            vm.close()
    finally:
        ns.close()
        shutil.rmtree(work, ignore_errors=True)
    return counts, problems


def report(path, n, seed, secs, counts, problems, of=None):
    rev = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    rows = sorted({k[:2] for k in counts})
    outs = ["moved", "kept", "lost", "PROBLEM"]
    lines = [f"| {f} | {p} | " + " | ".join(str(counts[(f, p, o)]) for o in outs) + " |"
             for f, p in rows]
    done = f"{n} of {of} (still running)" if of and of != n else f"{n}"
    text = f"""# Reliability: the soak

`make soak` (tests/soak/soak.py) on {datetime.date.today()}, tree {rev}: {done} ping-pong
migrations of a busy 2-vCPU test guest (dirtier 32 MiB at 3000 pages/s, a disk
loop, the network responder) on real KVM, seed {seed}, {secs / 60:.0f} min. Modes
cycle pre-copy, post-copy, hybrid; transfer options cycle default, `--connections
0`, `--compress lz4`, `--delta`; about one migration in five gets a fault at a
random moment of its phase.

Outcomes: **moved** (the VM runs on the destination), **kept** (it runs on the
source), **lost** (no copy runs: allowed only where the fault killed the VM's
only copy — the source before the switchover, either side in post-copy),
**PROBLEM** (anything else: both running, a lost VM where one should live, a
guest that does not verify memory and disk or answer pings, a stray process,
a VMM holding more sockets than a fresh one (+2: after post-copy a destination
keeps its listener and main channel for a source that missed DONE), a file
left beside the VMs' own or in /dev/shm).

| fault | phase | moved | kept | lost | PROBLEM |
|---|---|---|---|---|---|
""" + "\n".join(lines) + "\n"
    text += "\n" + ("No problems.\n" if not problems else
                    "Problems:\n\n" + "".join(f"- {p}\n" for p in problems))
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=int(os.environ.get("SOAK_N", "200")))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", "1")))
    ap.add_argument("--fault-rate", type=float, default=0.2)
    ap.add_argument("--report")
    a = ap.parse_args()
    t0 = time.monotonic()

    def progress(done, counts, problems):
        if a.report:
            report(a.report, done, a.seed, time.monotonic() - t0, counts, problems, of=a.n)

    counts, problems = soak_run(a.n, a.seed, a.fault_rate, progress)
    secs = time.monotonic() - t0
    if a.report:
        report(a.report, a.n, a.seed, secs, counts, problems)
    print(f"soak: {a.n} migrations, {sum(v for k, v in counts.items() if k[2] == 'PROBLEM')} "
          f"problems, {secs:.0f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
