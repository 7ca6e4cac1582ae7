"""Shared pieces of ferry's benchmarks: starting and always killing VMM processes,
watching the test guest's serial console, memory accounting, statistics, machine info
and result files. Standard library only (runs with Debian 12's /usr/bin/python3)."""
import atexit
import ctypes
import datetime
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
RESULTS = os.path.join(BENCH, "results")
FERRY = os.environ.get("FERRY", os.path.join(ROOT, "build", "ferry"))
GUEST = os.environ.get("GUEST", os.path.join(ROOT, "build", "guest", "testguest"))
QEMU = os.environ.get("QEMU", "qemu-system-x86_64")
QEMU_CPU = "host,arch-capabilities=off"     # see ../shared/PLATFORM.md

HB_RE = re.compile(r"HB (\d+) (\d+) (\d+)$")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Processes: every process a benchmark starts is registered here and killed (its whole
# process group: QEMU's "exec:" migration helpers included) on exit, exception or signal.
# ---------------------------------------------------------------------------------------
_procs = []


class Proc:
    """A child process in its own process group, with stdout+stderr going to a log file."""

    def __init__(self, cmd, logfile, thp_disable=False):
        """thp_disable: the process gets no transparent huge pages (prctl
        PR_SET_THP_DISABLE, set between fork and exec, so it costs no extra exec)."""
        self.cmd = cmd
        self.logfile = logfile
        self._log = open(logfile, "wb")
        self.t_start = time.monotonic()
        self.p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                  stderr=subprocess.STDOUT, start_new_session=True,
                                  preexec_fn=_no_thp if thp_disable else None)
        self.pid = self.p.pid
        _procs.append(self)

    def alive(self):
        return self.p.poll() is None

    def wait(self, timeout):
        """Waits up to `timeout` s for the process to exit; returns its status or None."""
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self, grace=3.0):
        """SIGTERM to the process group, SIGKILL after `grace` s; idempotent."""
        if self.p.poll() is None:
            self._signal(signal.SIGTERM)
            if self.wait(grace) is None:
                self._signal(signal.SIGKILL)
                self.p.wait()
        else:
            self._signal(signal.SIGKILL)        # stray helpers left in the group
        if not self._log.closed:
            self._log.close()
        if self in _procs:
            _procs.remove(self)
        return self.p.returncode

    def _signal(self, sig):
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def output(self):
        with open(self.logfile, "rb") as f:
            return f.read().decode(errors="replace")


_LIBC = ctypes.CDLL(None, use_errno=True)


def _no_thp():
    if _LIBC.prctl(41, 1, 0, 0, 0) != 0:          # PR_SET_THP_DISABLE
        os._exit(127)


def kill_all():
    for p in list(_procs):
        p.kill(grace=1.0)


def _on_signal(signum, frame):
    kill_all()
    raise KeyboardInterrupt(f"signal {signum}")


atexit.register(kill_all)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def run(cmd, timeout):
    """Runs a short command; returns (CompletedProcess, wall seconds)."""
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return r, time.monotonic() - t0


def wait_children_gone(pid, timeout):
    """Waits until process `pid` has no child processes (e.g. QEMU's `exec:` helper)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = ""
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    kids += f.read().strip()
        except (FileNotFoundError, ProcessLookupError):
            return True
        if not kids:
            return True
        time.sleep(0.002)
    return False


# ---------------------------------------------------------------------------------------
# The test guest's serial console (a file the VMM writes)
# ---------------------------------------------------------------------------------------
class Console:
    """Follows a console file; every complete line is kept with the host monotonic time
    at which it was first seen (polling every `interval` s, 2 ms by default)."""

    def __init__(self, path, interval=0.002):
        self.path = path
        self.interval = interval
        self.lines = []             # (host monotonic time, text)
        self._pos = 0
        self._part = b""

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
        except FileNotFoundError:
            return
        if not data:
            return
        now = time.monotonic()
        self._pos += len(data)
        data = self._part + data
        *done, self._part = data.split(b"\n")
        for raw in done:
            self.lines.append((now, raw.decode(errors="replace").rstrip("\r")))

    def wait_for(self, pattern, timeout, start=0, proc=None):
        """Waits for a line matching regex `pattern` (searched) at index >= start.
        Returns (index, host time, match). Raises TimeoutError, or RuntimeError if
        `proc` exits first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = start
        while True:
            self.poll()
            while i < len(self.lines):
                m = rx.search(self.lines[i][1])
                if m:
                    return i, self.lines[i][0], m
                i += 1
            if proc is not None and not proc.alive():
                self.poll()
                if not any(rx.search(t) for _, t in self.lines[start:]):
                    raise RuntimeError(f"{proc.cmd[0]} exited ({proc.p.returncode}) before "
                                       f"{pattern!r} on {self.path}:\n{proc.output()[-2000:]}")
                continue
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no {pattern!r} on {self.path} within {timeout} s; "
                                   f"last lines: {[t for _, t in self.lines[-5:]]}")
            time.sleep(self.interval)

    def follow(self, seconds):
        """Keeps polling for `seconds` (so that lines get accurate host times)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll()
            time.sleep(self.interval)

    def heartbeats(self, start=0):
        """[(index, host time, seq, guest_ns, pages_written)] from line `start` on."""
        out = []
        for i, (t, text) in enumerate(self.lines[start:], start):
            m = HB_RE.search(text)
            if m:
                out.append((i, t, int(m.group(1)), int(m.group(2)), int(m.group(3))))
        return out

    def grep(self, pattern, start=0):
        rx = re.compile(pattern)
        return [text for _, text in self.lines[start:] if rx.search(text)]

    def problems(self, start=0):
        """Lines that mean the guest found something wrong."""
        return self.grep(r"PANIC|ERROR|VERIFY FAIL|TIME BACKWARDS", start)


# ---------------------------------------------------------------------------------------
# Command lines for the two VMMs
# ---------------------------------------------------------------------------------------
def ferry_run_cmd(mem, cpus, cmdline, console, sock):
    return [FERRY, "run", "--kernel", GUEST, "--memory", str(mem), "--cpus", str(cpus),
            "--cmdline", cmdline, "--console", "file:" + console, "--api-socket", sock]


def ferry_restore_cmd(snapshot, console, sock):
    return [FERRY, "restore", "--snapshot", snapshot, "--console", "file:" + console,
            "--api-socket", sock]


def qemu_cmd(mem, cpus, cmdline, console, qmp_sock, variant="pc", incoming=None):
    """variant "pc": QEMU's default machine and devices, firmware SeaBIOS (the command
    the project compares against). "microvm": -M microvm -nodefaults (qboot firmware,
    no PCI, no default devices), the leanest configuration QEMU offers for this guest.
    "pc-memfd", "microvm-memfd": the same with guest RAM in a memfd, as ferry has it
    (shared memory: no transparent huge pages unless the host's shmem_enabled allows
    them), to tell the cost of that memory type from the rest of the VMM."""
    cmd = [QEMU]
    memfd = ["-object", f"memory-backend-memfd,id=ram,size={mem}M"]
    if variant == "microvm":
        cmd += ["-M", "microvm", "-nodefaults"]
    elif variant == "microvm-memfd":
        cmd += ["-M", "microvm,memory-backend=ram", "-nodefaults"] + memfd
    elif variant == "pc-memfd":
        cmd += ["-M", "pc,memory-backend=ram"] + memfd
    elif variant != "pc":
        raise ValueError(variant)
    cmd += ["-enable-kvm", "-cpu", QEMU_CPU, "-m", str(mem), "-smp", str(cpus),
            "-kernel", GUEST, "-append", cmdline, "-display", "none", "-no-reboot",
            "-serial", "file:" + console, "-monitor", "none",
            "-qmp", f"unix:{qmp_sock},server=on,wait=off"]
    if incoming:
        cmd += ["-incoming", incoming]
    return cmd


_pinned = {}        # private copy -> the path it was copied from


def pin_binaries(tmpdir):
    """Runs the benchmark on private copies of build/ferry and the test guest, so that a
    rebuild by someone else in the shared tree cannot swap them in the middle of a run."""
    global FERRY, GUEST
    for name in ("FERRY", "GUEST"):
        src = globals()[name]
        dst = os.path.join(tmpdir, "pinned-" + os.path.basename(src))
        shutil.copy2(src, dst)
        _pinned[dst] = src
        globals()[name] = dst


def show_cmd(cmd):
    """A command line for humans: shell-quoted, paths inside the repository relative,
    ferry and the test guest under their usual names (build/ferry, build/guest/testguest)
    even when the run used copies or a build elsewhere (see FERRY/GUEST)."""
    names = {FERRY: "build/ferry", GUEST: "build/guest/testguest"}
    return shlex.join(names.get(a, _pinned.get(a, a)).replace(ROOT + "/", "") for a in cmd)


def ferry_api(sock, method, path, timeout=10):
    """A minimal HTTP/1.1 request on ferry's API socket; returns (status, parsed body)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock)
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
                  "Connection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, (json.loads(body) if body.strip() else None)


def ferry_snapshot_clock_ns(path):
    """The guest kvmclock (ns) stored in a ferry snapshot: the guest's time when it runs
    again after a restore. Walks the record headers (docs/STREAM.md) to the "clock"
    section (id 8), whose payload starts with the u64 kvmclock."""
    with open(path, "rb") as f:
        hdr = f.read(112)
        if hdr[:8] != b"FERRY\0VM":
            raise ValueError(f"{path}: not a ferry stream")
        while True:
            rec = f.read(40)
            if len(rec) < 40:
                return None
            rtype, section = struct.unpack_from("<II", rec, 0)
            (length,) = struct.unpack_from("<Q", rec, 24)
            if rtype == 1 and section == 8:
                return struct.unpack("<Q", f.read(8))[0]
            if rtype == 3:
                return None
            f.seek(length, os.SEEK_CUR)


# ---------------------------------------------------------------------------------------
# Memory of a process
# ---------------------------------------------------------------------------------------
def proc_status(pid):
    """The kB fields of /proc/PID/status we use (VmRSS, RssAnon, RssFile, RssShmem...)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmSize"):
                out[k + "_kib"] = int(v.split()[0])
            elif k == "Threads":
                out["threads"] = int(v)
    return out


def smaps(pid):
    """[(start, size_bytes, name, {field: kB})] from /proc/PID/smaps."""
    maps = []
    head = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$")
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = head.match(line)
            if m:
                lo, hi = int(m.group(1), 16), int(m.group(2), 16)
                maps.append((lo, hi - lo, m.group(3), {}))
            elif maps and line.split(":")[0] in ("Rss", "Anonymous", "Shared_Clean",
                                                   "Shared_Dirty", "Private_Clean",
                                                   "Private_Dirty", "AnonHugePages"):
                k, v = line.split(":")
                maps[-1][3][k] = int(v.split()[0])
    return maps


def memory_breakdown(pid, guest_bytes):
    """VmRSS split into guest RAM and the VMM's own memory.

    Guest RAM is the mapping(s) of at least `guest_bytes` (ferry: its memfd, shared;
    QEMU: the anonymous "pc.ram" block, which QEMU may round up for alignment). What
    is resident there is guest memory that the guest (or firmware/loader) touched;
    everything else resident (heap, stacks, binary and libraries, device memory such
    as QEMU's VGA RAM and ROMs) is the VMM's overhead."""
    st = proc_status(pid)
    maps = smaps(pid)
    guest = [m for m in maps if m[1] >= guest_bytes]
    guest_rss = sum(m[3].get("Rss", 0) for m in guest)
    total = sum(m[3].get("Rss", 0) for m in maps)
    return dict(st,
                smaps_rss_kib=total,
                guest_ram_rss_kib=guest_rss,
                guest_ram_mappings=[{"size_mib": m[1] >> 20, "name": m[2] or "[anon]",
                                     "rss_kib": m[3].get("Rss", 0),
                                     "anon_huge_kib": m[3].get("AnonHugePages", 0)}
                                    for m in guest],
                vmm_overhead_kib=total - guest_rss)


def cpu_seconds(pid):
    """utime+stime of a process (all its threads, vCPUs included), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------
# Statistics and results
# ---------------------------------------------------------------------------------------
def summary(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return {"n": 0, "median": None, "min": None, "max": None, "values": []}
    return {"n": len(vals), "median": statistics.median(vals), "min": min(vals),
            "max": max(vals), "values": vals}


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def _sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10,
                              cwd=ROOT).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()[:16]


def machine_info():
    cpu = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    qemu = _sh([QEMU, "--version"])
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    kvm = [m for m in ("kvm_pvm", "kvm_intel", "kvm_amd") if os.path.isdir(f"/sys/module/{m}")]
    dirty = _sh(["git", "status", "--porcelain", "--", "src", "guest", "meson.build"])
    commit = _sh(["git", "rev-parse", "--short", "HEAD"])
    if os.environ.get("FERRY_COMMIT"):
        # FERRY/GUEST built elsewhere from a clean commit (e.g. `git archive HEAD`)
        commit, dirty = os.environ["FERRY_COMMIT"], ""
    return {
        "kernel": platform.release(),
        "cpu_model": cpu,
        "nproc": os.cpu_count(),
        "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kvm_module": kvm,
        "qemu_version": qemu.splitlines()[0] if qemu else None,
        "ferry_commit": commit,
        "ferry_uncommitted": dirty.splitlines() if dirty else [],
        "ferry_version": _sh([FERRY, "version"]),
        "ferry_sha256": _sha256(FERRY),
        "testguest_sha256": _sha256(GUEST),
        "python": platform.python_version(),
        "loadavg_at_start": [float(x) for x in load],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def default_out(kind):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(RESULTS, f"{kind}-{stamp}.json")


def read_text(path):
    """A small file's stripped text (sysfs settings), or None."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def main_guard(main):
    """Runs a benchmark's main(); Ctrl-C kills the VMMs it started and exits 130."""
    try:
        main()
    except KeyboardInterrupt:
        kill_all()
        sys.exit(130)


def write_result(path, data):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    log(f"wrote {path}")


def check_tools(need_qemu=True):
    missing = [p for p in (FERRY, GUEST) if not os.path.exists(p)]
    if missing:
        sys.exit(f"missing {missing}: run `make ferry guest` first")
    if need_qemu and not shutil.which(QEMU):
        sys.exit(f"{QEMU} not found: run `scripts/deps.sh bench` (installs qemu-system-x86)")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        sys.exit("/dev/kvm is not usable")


def host_busy_cpus(interval=0.5):
    """How many CPUs' worth of time the whole host was busy over `interval` s."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v[:8]), v[3] + v[4]          # total (without guest fields), idle+iowait
    t0, i0 = snap()
    time.sleep(interval)
    t1, i1 = snap()
    return (os.cpu_count() or 1) * (1 - (i1 - i0) / max(1, t1 - t0))


def wait_quiet(max_busy_cpus, timeout):
    """Waits until the host is less busy than `max_busy_cpus` (measured over 0.5 s) or
    `timeout` s have passed; returns (busy CPUs seen last, seconds waited). Other
    people's work on a shared machine otherwise lands in the samples."""
    t0 = time.monotonic()
    while True:
        busy = host_busy_cpus()
        if busy < max_busy_cpus or time.monotonic() - t0 >= timeout:
            return busy, time.monotonic() - t0
        time.sleep(1)


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])
