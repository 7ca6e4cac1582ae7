"""Post-copy and hybrid migration on real KVM: write-heavy guests finish, a
broken connection is recovered without losing the VM, and an abort ends
both sides with a clear account."""
import socket
import struct
import time

import pytest
import xxhash

from faultproxy import FaultProxy
from ferrylib import (assert_continues, assert_recovered_on, free_port, migrate, run_cli,
                      wait_listening)
from proxy import Proxy


def source(vm_factory, memory=2048, cpus=2, cmdline="dirtier.mib=512 dirtier.rate=-1"):
    vm = vm_factory(memory=memory, cpus=cpus, cmdline=cmdline)
    vm.wait_for(r"^VERIFY ok", timeout=30)
    vm.wait_api()
    return vm


def destination(vm_factory):
    port = free_port()
    vm = vm_factory(incoming=f"tcp:127.0.0.1:{port}")
    wait_listening(port)
    return vm, port


def finished_on(src, dst, rep):
    assert rep["state"] == "completed", rep
    assert src.wait_exit(30) == 0
    dst.wait_for(r"^VERIFY ok", timeout=30, start=0)
    pos = dst.console.refresh().rfind("VERIFY ok")
    dst.wait_for(r"^VERIFY ok", timeout=30, start=pos + 1)   # a full pass after it all
    assert_continues(src.console.refresh(), dst.console.refresh())


def wait_state(vm, states, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = vm.api("GET", "/v1/migration")[1]
        if st["state"] in states:
            return st
        time.sleep(0.05)
    raise AssertionError(f"migration never reached {states}: {st}")


# Hybrid switches to post-copy once pre-copy stops converging. The test makes
# that happen whatever the host's speed: 256 MiB written flat out over a link
# capped at 128 MiB/s (32768 pages/s) re-dirties at least half of each round
# on any host whose guest writes over 16384 pages/s under dirty tracking
# (this one: over 100000), and a 20 ms limit keeps a 2 s stop from fitting.
WRITE_HEAVY = {
    "postcopy": ("dirtier.mib=512 dirtier.rate=-1", []),
    "hybrid": ("dirtier.mib=256 dirtier.rate=-1", ["--bandwidth", "128", "--downtime-ms", "20"]),
}


@pytest.mark.parametrize("mode", ["postcopy", "hybrid"])
def test_write_heavy_completes(vm_factory, mode):
    cmdline, opts = WRITE_HEAVY[mode]
    src = source(vm_factory, cmdline=cmdline)
    dst, port = destination(vm_factory)
    rc, rep, err = migrate(src, f"tcp:127.0.0.1:{port}", "--mode", mode, *opts)
    assert rc == 0, err
    assert "postcopy" in rep, f"{mode} never switched to post-copy: {rep['rounds']}"
    if mode == "hybrid":
        r = rep["rounds"][-1]
        assert len(rep["rounds"]) >= 2 and r["dirty_pages"] * 2 >= r["pages"] + r["zero_pages"], \
            rep["rounds"]
    pc = rep["postcopy"]
    assert pc["pages_total"] > 0 and pc["pages_remaining"] == 0
    assert pc["pages_pushed"] + pc["pages_demanded"] >= pc["pages_total"]
    assert rep["downtime"]["total_ms"] < 1000
    for key in ("remote_faults", "fault_latency_p50_us", "fault_latency_p99_us",
                "fault_latency_max_us", "vcpu_blocked_ms"):
        assert key in pc
    finished_on(src, dst, rep)
    d = dst.api("GET", "/v1/migration")[1]
    assert d["state"] == "running" and d["postcopy"]["pages_remaining"] == 0


def test_fault_storm(vm_factory):
    """Post-copy right after the first pass with the push capped low: the
    guest's verifier reads all of its memory at once and nearly every page
    arrives on demand."""
    src = source(vm_factory, memory=1024, cmdline="dirtier.mib=256 dirtier.rate=-1")
    dst, port = destination(vm_factory)
    rc, rep, err = migrate(src, f"tcp:127.0.0.1:{port}", "--mode", "postcopy",
                           "--bandwidth", "48")
    assert rc == 0, err
    assert rep["postcopy"]["remote_faults"] > 1000, rep["postcopy"]
    finished_on(src, dst, rep)


def wait_recoveries(vm, n, timeout=60):
    """Waits until vm's post-copy has recovered n times (or finished with
    fewer: then the assertion says so)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = vm.api("GET", "/v1/migration")[1]
        got = st.get("postcopy", {}).get("recoveries", 0)
        if got >= n:
            return st
        assert st["state"] in ("postcopy", "postcopy-paused"), \
            f"post-copy ended after {got} recoveries of {n}: {st}"
        time.sleep(0.05)
    raise AssertionError(f"post-copy never recovered {n} times: {st}")


@pytest.mark.parametrize("cuts", [1, 3])
def test_connection_cut_recovers(vm_factory, cuts):
    src = source(vm_factory, memory=1024, cmdline="dirtier.mib=256 dirtier.rate=-1")
    dst, port = destination(vm_factory)
    proxy = Proxy(port)
    try:
        rc, rep, err = migrate(src, proxy.uri, "--mode", "postcopy", "--bandwidth", "40",
                               wait=False)
        assert rc == 0, err
        for i in range(cuts):
            st = wait_state(src, ("postcopy",))
            time.sleep(0.3)
            # The cut must fall in post-copy with pages still to move, or
            # there is nothing to recover: the capped push leaves seconds.
            st = src.api("GET", "/v1/migration")[1]
            assert st["state"] == "postcopy" and st["postcopy"]["pages_remaining"] > 0, st
            proxy.cut()
            # Each cut is seen and recovered before the next one.
            wait_recoveries(src, i + 1)
            # The VM survives on the destination while the link is down.
            assert dst.proc.poll() is None and src.proc.poll() is None
        rc = src.wait_exit(120)
        assert rc == 0, src.stderr_text()
        d = dst.api("GET", "/v1/migration")[1]
        assert d["state"] == "running", d
        assert d["postcopy"]["recoveries"] == cuts, d["postcopy"]
        assert d["postcopy"]["pages_remaining"] == 0
        dst.wait_for(r"^VERIFY ok", timeout=30)
        assert_continues(src.console.refresh(), dst.console.refresh())
    finally:
        proxy.close()


def break_postcopy(src, proxy, bandwidth):
    """Starts a post-copy migration through `proxy`, waits for post-copy, then
    cuts the link for good and waits until the source has noticed."""
    rc, rep, err = migrate(src, proxy.uri, "--mode", "postcopy", "--bandwidth",
                           str(bandwidth), wait=False)
    assert rc == 0, err
    wait_state(src, ("postcopy",))
    proxy.refuse = True
    proxy.cut()
    wait_state(src, ("postcopy-paused",))


def knock_while_paused(port, n=10):
    """Strangers knock on the waiting destination one after another, each with
    a garbage header: each is refused, and the next is taken only after a pause
    (100 ms), so a failing accept or a knocking peer cannot spin it. A lower
    bound on time: a slow host only makes it longer."""
    t0 = time.monotonic()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"\xa5" * 112)
            while s.recv(4096):
                pass
    took = time.monotonic() - t0
    assert took >= 0.09 * (n - 1), f"{n} refused knocks took only {took:.3f} s"


def test_manual_recover_elsewhere(vm_factory):
    """The link breaks and stays broken: the operator points the source at a
    new path to the destination with migrate-recover."""
    src = source(vm_factory, memory=1024, cmdline="dirtier.mib=256 dirtier.rate=-1")
    dst, port = destination(vm_factory)
    first, second = Proxy(port), Proxy(port)
    try:
        break_postcopy(src, first, 40)
        # Memory is incomplete on the destination: no snapshot, no migration out.
        status, body = dst.api("PUT", "/v1/vm/snapshot", {"path": "/tmp/never.snap"})
        assert status == 409, body
        status, body = dst.api("PUT", "/v1/migration", {"uri": "tcp:127.0.0.1:9"})
        assert status == 409 and "post-copy" in body["error"], body
        knock_while_paused(port)
        r = run_cli("migrate-recover", "--api-socket", src.sock, second.uri)
        assert r.returncode == 0, r.stderr
        assert src.wait_exit(120) == 0, src.stderr_text()
        dst.wait_for(r"^VERIFY ok", timeout=30)
        assert_continues(src.console.refresh(), dst.console.refresh())
    finally:
        first.close()
        second.close()


def forged_recover(port, hello, token):
    """A RECOVER on the waiting destination built from the source's own HELLO
    (right memory size, vCPUs and CPU fingerprint, as anyone on the path of a
    plain-text migration saw them) with the given token. Returns its answer."""
    h = bytearray(hello[:112])
    struct.pack_into("<I", h, 68, 2)                   # proto_flags: MIG_FLAG_RECOVER
    h[72:104] = token                                  # reserved: the session token
    struct.pack_into("<Q", h, 104, xxhash.xxh3_64(bytes(h[:104])).intdigest())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(bytes(h))
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    return answer


def test_forged_recovery_refused(vm_factory):
    """Knowing the VM's sizes is not enough to take a broken post-copy over:
    a RECOVER without the session's token is refused, and the real source's
    recovery still works afterwards."""
    src = source(vm_factory, memory=1024, cmdline="dirtier.mib=256 dirtier.rate=-1")
    dst, port = destination(vm_factory)
    rec = FaultProxy(port, None)          # what a stranger on the path sees
    first, second = Proxy(rec.port), Proxy(port)
    try:
        break_postcopy(src, first, 40)
        hello = bytes(rec.recorded[:112])
        assert hello[:8] == b"FERRY\0VM"
        for token in (bytes(32), bytes(range(32))):
            answer = forged_recover(port, hello, token)
            assert b"not a channel of this migration" in answer, answer[:200]
        assert dst.api("GET", "/v1/migration")[1]["state"] == "postcopy-paused"
        r = run_cli("migrate-recover", "--api-socket", src.sock, second.uri)
        assert r.returncode == 0, r.stderr
        assert_recovered_on(src, dst)
    finally:
        first.close()
        second.close()
        rec.close()


def test_manual_switch_to_postcopy(vm_factory):
    src = source(vm_factory, memory=1024, cmdline="dirtier.mib=256 dirtier.rate=-1")
    dst, port = destination(vm_factory)
    rc, rep, err = migrate(src, f"tcp:127.0.0.1:{port}", "--bandwidth", "200", wait=False)
    assert rc == 0, err
    wait_state(src, ("precopy",))
    time.sleep(1.0)
    r = run_cli("migrate-postcopy", "--api-socket", src.sock)
    assert r.returncode == 0, r.stderr
    assert src.wait_exit(120) == 0, src.stderr_text()
    d = dst.api("GET", "/v1/migration")[1]
    assert d["state"] == "running" and d["postcopy"]["pages_total"] > 0


def test_abort_in_postcopy(vm_factory):
    """The link breaks and stays broken. The operator gives the VM up: on the
    source (which cannot reach the destination any more) and then on the
    destination. Both say plainly what was lost and exit; nothing hangs."""
    src = source(vm_factory, memory=1024, cmdline="dirtier.mib=256 dirtier.rate=-1")
    dst, port = destination(vm_factory)
    proxy = Proxy(port)
    try:
        break_postcopy(src, proxy, 20)
        # Cancel is refused once post-copy runs: it would lose the VM.
        r = run_cli("migrate-cancel", "--api-socket", src.sock)
        assert r.returncode == 1 and "migrate-abort" in r.stderr
        r = run_cli("migrate-abort", "--api-socket", src.sock)
        assert r.returncode == 0, r.stderr
        assert src.wait_exit(30) == 1
        assert "post-copy aborted" in src.stderr_text()
        assert dst.proc.poll() is None, "the destination must wait for recovery or an abort"
        assert dst.api("GET", "/v1/migration")[1]["state"] == "postcopy-paused"
        r = run_cli("migrate-abort", "--api-socket", dst.sock)
        assert r.returncode == 0, r.stderr
        assert dst.wait_exit(30) == 1
        err = dst.stderr_text()
        assert "post-copy aborted" in err and "pages never arrived" in err
    finally:
        proxy.close()


def test_abort_refused_before_postcopy(vm_factory):
    src = source(vm_factory, memory=512, cmdline="dirtier.mib=64")
    r = run_cli("migrate-abort", "--api-socket", src.sock)
    assert r.returncode == 1
    r = run_cli("migrate-recover", "--api-socket", src.sock)
    assert r.returncode == 1
    r = run_cli("migrate", "--api-socket", src.sock, "tcp:127.0.0.1:1", "--mode", "sideways")
    assert r.returncode != 0


def test_hybrid_after_n_rounds(vm_factory):
    src = source(vm_factory, memory=1024, cmdline="dirtier.mib=256 dirtier.rate=-1")
    dst, port = destination(vm_factory)
    rc, rep, err = migrate(src, f"tcp:127.0.0.1:{port}", "--mode", "hybrid",
                           "--postcopy-after-rounds", "3", "--downtime-ms", "1")
    assert rc == 0, err
    assert len(rep["rounds"]) == 3, [r["round"] for r in rep["rounds"]]
    assert rep["postcopy"]["pages_total"] > 0
    finished_on(src, dst, rep)
