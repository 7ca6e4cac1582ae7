"""The sandbox on real KVM: a running VM and a migrating pair run under the
seccomp filter with capabilities dropped (read from /proc/PID/status), what
the filter forbids is refused, `--sandbox off` turns it off, and ferry runs
and migrates as an unprivileged user given /dev/kvm. Every other test runs
with the sandbox on: a system call missing from the allow-list fails the
test that made it (ferrylib checks each VMM's stderr)."""
import os
import pathlib
import shutil
import stat
import subprocess
import tempfile
import time

from ferrylib import FERRY, GUEST, SAN_ENV, assert_continues, free_port, migrate, wait_listening

CAP_SYS_PTRACE = 1 << 19


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def test_running_vm_is_sandboxed(vm_factory):
    vm = vm_factory(memory=64)
    vm.wait_for(r"^HB ", timeout=20)
    st = status(vm.proc.pid)
    assert st["Seccomp"] == "2" and st["NoNewPrivs"] == "1", st
    assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0, st
    assert int(st["CapBnd"], 16) == 0, st
    assert "seccomp filter on; capabilities all dropped" in vm.stderr_text()
    # vCPU threads (guest exits) and device workers (virtqueues) add a
    # stricter filter of their own
    filters = {}
    for tid in os.listdir(f"/proc/{vm.proc.pid}/task"):
        t = status(f"{vm.proc.pid}/task/{tid}")
        filters.setdefault(t["Name"], set()).add(t["Seccomp_filters"])
    assert filters["vcpu0"] == {"2"} and filters["virtio"] == {"2"}, filters
    assert filters["ferry"] == {"1"}, filters


def test_sandbox_off(vm_factory):
    vm = vm_factory(memory=64, extra=["--sandbox", "off"])
    vm.wait_for(r"^HB ", timeout=20)
    st = status(vm.proc.pid)
    assert st["Seccomp"] == "0" and int(st["CapEff"], 16) != 0, st
    assert "sandbox off" in vm.stderr_text()


def test_forbidden_calls_are_refused(vm_factory, monkeypatch):
    monkeypatch.setitem(SAN_ENV, "FERRY_TEST_SANDBOX_PROBE", "1")
    vm = vm_factory(memory=64)
    vm.expect_sandbox_blocks = True
    vm.wait_for(r"^HB ", timeout=20)
    err = vm.stderr_text()
    assert "sandbox probe: execve -> Operation not permitted" in err, err[-2000:]
    assert "sandbox probe: raw packet socket -> Operation not permitted" in err, err[-2000:]
    assert err.count("ferry sandbox: blocked system call") == 2, err[-2000:]
    vm.wait_for(r"^HB ", timeout=20, start=vm.mark())          # and the VM runs on


def test_migrating_pair_is_sandboxed(vm_factory):
    src = vm_factory(memory=256, cpus=2, cmdline="dirtier.mib=64 dirtier.rate=2000")
    src.wait_for(r"^VERIFY ok", timeout=30)
    src.wait_api()
    port = free_port()
    dst = vm_factory(incoming=f"tcp:127.0.0.1:{port}")
    wait_listening(port)
    rc, rep, err = migrate(src, f"tcp:127.0.0.1:{port}", "--bandwidth", "40", wait=False)
    assert rc == 0, err
    deadline = time.monotonic() + 30
    while src.api("GET", "/v1/migration")[1]["state"] != "precopy":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    s, d = status(src.proc.pid), status(dst.proc.pid)
    assert s["Seccomp"] == "2" and int(s["CapEff"], 16) == 0, s
    # the destination keeps only what a post-copy userfaultfd needs
    assert d["Seccomp"] == "2" and int(d["CapEff"], 16) == CAP_SYS_PTRACE, d
    assert src.wait_exit(120) == 0, src.stderr_text()[-2000:]
    dst.wait_for(r"^VERIFY ok", timeout=30)
    assert_continues(src.console.refresh(), dst.console.refresh())


def test_unprivileged_user():
    """uid/gid 65534 with /dev/kvm opened to it for the test: a VM boots and
    migrates (pre-copy) to another unprivileged ferry."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="ferry-unpriv-"))
    os.chmod(work, 0o777)
    # copies the unprivileged user can reach whatever the checkout's permissions
    ferry, guest = str(work / "ferry"), str(work / "testguest")
    shutil.copy(FERRY, ferry)
    shutil.copy(GUEST, guest)
    mode = os.stat("/dev/kvm").st_mode
    os.chmod("/dev/kvm", stat.S_IMODE(mode) | 0o006)
    procs = []
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
    env = {**os.environ, **SAN_ENV}
    try:
        port = free_port()
        dst = subprocess.Popen(drop + [ferry, "run", "--incoming", f"tcp:127.0.0.1:{port}",
                                       "--api-socket", str(work / "dst.sock"),
                                       "--console", f"file:{work / 'dst.log'}"],
                               stderr=open(work / "dst.err", "wb"), env=env)
        procs.append(dst)
        src = subprocess.Popen(drop + [ferry, "run", "--kernel", guest, "--memory", "128",
                                       "--cmdline", "dirtier.mib=16 dirtier.rate=1000",
                                       "--api-socket", str(work / "src.sock"),
                                       "--console", f"file:{work / 'src.log'}"],
                               stderr=open(work / "src.err", "wb"), env=env)
        procs.append(src)
        wait_listening(port)
        deadline = time.monotonic() + 30
        while "VERIFY ok" not in _read(work / "src.log"):
            assert src.poll() is None and time.monotonic() < deadline, _read(work / "src.err")
            time.sleep(0.1)
        st = status(src.pid)
        assert st["Uid"].split()[0] == "65534" and int(st["CapEff"], 16) == 0, st
        assert st["Seccomp"] == "2"
        r = subprocess.run(drop + [ferry, "migrate", "--api-socket", str(work / "src.sock"),
                                   f"tcp:127.0.0.1:{port}", "--wait", "--json"],
                           capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr + _read(work / "src.err") + _read(work / "dst.err")
        assert src.wait(30) == 0
        start = len(_read(work / "dst.log"))
        while "VERIFY ok" not in _read(work / "dst.log")[start:]:
            assert dst.poll() is None and time.monotonic() < deadline + 60, _read(work / "dst.err")
            time.sleep(0.1)
        for f in ("src.err", "dst.err"):
            assert "ferry sandbox: blocked" not in _read(work / f), _read(work / f)
    finally:
        os.chmod("/dev/kvm", stat.S_IMODE(mode))
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def test_api_socket_group_and_caller_log(vm_factory):
    vm = vm_factory(memory=64, extra=["--api-group", "65534"])
    vm.wait_api()
    st = os.stat(vm.sock)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == 65534, oct(st.st_mode)
    assert vm.api("PUT", "/v1/vm/pause")[0] == 204
    assert vm.api("GET", "/v1/vm")[1]["state"] == "paused"
    err = vm.stderr_text()
    assert f"api: PUT /v1/vm/pause from pid {os.getpid()} uid 0 gid 0 -> 204" in err, err[-2000:]
    assert "GET /v1/vm from" not in err           # reads are not logged
    r = subprocess.run([FERRY, "run", "--kernel", GUEST, "--api-socket",
                        os.path.join(vm.dir, "other.sock"), "--api-group", "no-such-group"],
                       capture_output=True, text=True, timeout=30, env={**os.environ, **SAN_ENV})
    assert r.returncode == 2 and "no group named 'no-such-group'" in r.stderr, r.stderr
