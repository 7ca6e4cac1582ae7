"""Damaged migration streams on real KVM: a proxy between source and
destination flips a bit, truncates, rewrites a length to 2^31 or stalls at a
chosen record in each phase (rounds, switchover, post-copy). Before post-copy
the destination exits naming the record and the source keeps the VM; in
post-copy the damaged connection is dropped and recovered."""
import threading
import time

import pytest

from faultproxy import REC_END, REC_PAGES, REC_SECTION, FaultProxy
from ferrylib import assert_continues, free_port, migrate, wait_listening

READ_ERRORS = {
    "flip": "record checksum mismatch",
    "length": "record longer than its type allows",
    "truncate": "",          # EOF mid-record: worded by how the socket ended
}


def vm_pair(vm_factory, memory, cmdline):
    src = vm_factory(memory=memory, cpus=2, cmdline=cmdline)
    src.wait_for(r"^VERIFY ok", timeout=30)
    src.wait_api()
    port = free_port()
    dst = vm_factory(incoming=f"tcp:127.0.0.1:{port}")
    wait_listening(port)
    return src, dst, port


def assert_source_keeps_vm(src, rep):
    assert rep["state"] == "failed", rep
    assert src.api("GET", "/v1/vm")[1]["state"] == "running"
    src.wait_for(r"^VERIFY ok", timeout=20, start=src.mark())


def assert_dst_named(dst, kind, record):
    assert dst.wait_exit(60) != 0
    err = dst.stderr_text()
    assert f"in the {record} record" in err and READ_ERRORS[kind] in err, err[-2000:]


# Rounds: the third PAGES record on the main channel. Switchover: the first
# state section, sent while the source's VM is paused.
PHASES = {
    "rounds": (REC_PAGES, 3),
    "switchover": (REC_SECTION, 1),
}


@pytest.mark.parametrize("kind", ["flip", "length", "truncate"])
@pytest.mark.parametrize("phase", list(PHASES))
def test_damaged_stream_before_postcopy(vm_factory, phase, kind):
    src, dst, port = vm_pair(vm_factory, 256, "dirtier.mib=32 dirtier.rate=2000")
    rec_type, nth = PHASES[phase]
    proxy = FaultProxy(port, kind, rec_type, nth)
    try:
        rc, rep, err = migrate(src, proxy.uri, "--connections", "0", "--bandwidth", "64",
                               timeout=90)
        assert proxy.done.is_set(), "the fault never happened"
        assert rc != 0, err
        assert_source_keeps_vm(src, rep)
        assert_dst_named(dst, kind, "PAGES" if rec_type == REC_PAGES else "SECTION")
    finally:
        proxy.close()


@pytest.mark.parametrize("kind", ["flip", "length", "truncate"])
def test_damaged_stream_in_postcopy_is_recovered(vm_factory, kind):
    # After the destination runs, the source cannot take the VM back: the
    # destination drops the damaged connection and the source reconnects.
    src, dst, port = vm_pair(vm_factory, 512, "dirtier.mib=256 dirtier.rate=-1")
    proxy = FaultProxy(port, kind, REC_PAGES, 2, after_type=REC_END)
    try:
        rep = postcopy_through(src, dst, proxy)
        assert rep["postcopy"]["recoveries"] >= 1, rep["postcopy"]
        err = dst.stderr_text()
        assert "post-copy: " in err and "in the PAGES record" in err, err[-2000:]
    finally:
        proxy.close()


def postcopy_through(src, dst, proxy):
    rc, rep, err = migrate(src, proxy.uri, "--connections", "0", "--mode", "postcopy",
                           "--bandwidth", "64", timeout=240)
    assert proxy.done.is_set(), "the fault never happened"
    assert rc == 0, err
    assert rep["state"] == "completed", rep
    assert src.wait_exit(30) == 0
    dst.wait_for(r"^VERIFY ok", timeout=30)
    assert_continues(src.console.refresh(), dst.console.refresh())
    return rep


def stalled_before_postcopy(vm_factory, phase):
    """Mid-round, or with the source's VM paused for the switchover: the
    source gives up after its 30 s socket timeout and the VM runs on there;
    the destination ends when the link does."""
    src, dst, port = vm_pair(vm_factory, 256, "dirtier.mib=32 dirtier.rate=2000")
    rec_type, nth = PHASES[phase]
    proxy = FaultProxy(port, "stall", rec_type, nth, stall_s=40)
    try:
        t0 = time.monotonic()
        rc, rep, err = migrate(src, proxy.uri, "--connections", "0", "--bandwidth", "64",
                               timeout=120)
        assert proxy.done.is_set(), "the stall never happened"
        assert rc != 0 and time.monotonic() - t0 >= 25, (rc, err)
        assert any(w in rep["error"] for w in ("timed out", "did not answer in time")), rep["error"]
        assert_source_keeps_vm(src, rep)
        assert dst.wait_exit(60) != 0
    finally:
        proxy.close()


def stalled_in_postcopy(vm_factory):
    """Only the source's direction stalls, so DONE may still come back; if
    not, the source reconnects after its timeout and the destination takes
    the new connection over the silent one, or answers it after the end."""
    src, dst, port = vm_pair(vm_factory, 512, "dirtier.mib=256 dirtier.rate=-1")
    proxy = FaultProxy(port, "stall", REC_PAGES, 2, after_type=REC_END, stall_s=40)
    try:
        rep = postcopy_through(src, dst, proxy)
        if rep["postcopy"]["recoveries"]:
            err = dst.stderr_text()
            assert "connected again" in err or "reconnected after the end" in err, err[-2000:]
    finally:
        proxy.close()


def test_stalled_links_in_every_phase(vm_factory):
    # A link that stalls 40 s in the rounds, in the switchover and in
    # post-copy; the three run side by side, so the suite waits 40 s once.
    lock = threading.Lock()

    def factory(**kw):                      # one VM at a time into vm_factory's list
        with lock:
            return vm_factory(**kw)

    cases = {"rounds": lambda: stalled_before_postcopy(factory, "rounds"),
             "switchover": lambda: stalled_before_postcopy(factory, "switchover"),
             "postcopy": lambda: stalled_in_postcopy(factory)}
    errors = {}

    def run(name, fn):
        try:
            fn()
        except BaseException as e:          # reported below, per phase
            errors[name] = f"{type(e).__name__}: {e}"[:3000]

    threads = [threading.Thread(target=run, args=kv) for kv in cases.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, "\n\n".join(f"[{k}] {v}" for k, v in errors.items())
