"""Damaged migration streams on real KVM: a proxy between source and
destination flips a bit, truncates, rewrites a length to 2^31 or stalls at a
chosen record in each phase (rounds, switchover, post-copy). Before post-copy
the destination exits naming the record and the source keeps the VM; in
post-copy the damaged connection is dropped and recovered."""
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


@pytest.mark.parametrize("phase", list(PHASES))
def test_stalled_stream_fails_and_keeps_the_vm(vm_factory, phase):
    # The link stalls for 40 s (mid-round, or with the source's VM paused for
    # the switchover): the source gives up after its 30 s socket timeout and
    # the VM runs on there; the destination ends when the link does.
    src, dst, port = vm_pair(vm_factory, 256, "dirtier.mib=32 dirtier.rate=2000")
    rec_type, nth = PHASES[phase]
    proxy = FaultProxy(port, "stall", rec_type, nth, stall_s=40)
    try:
        t0 = time.monotonic()
        rc, rep, err = migrate(src, proxy.uri, "--connections", "0", "--bandwidth", "64",
                               timeout=120)
        assert proxy.done.is_set(), "the stall never happened"
        assert rc != 0 and time.monotonic() - t0 >= 25, (rc, err)
        assert_source_keeps_vm(src, rep)
        assert dst.wait_exit(60) != 0
    finally:
        proxy.close()


@pytest.mark.parametrize("kind", ["flip", "length", "truncate", "stall"])
def test_damaged_stream_in_postcopy_is_recovered(vm_factory, kind):
    # After the destination runs, the source cannot take the VM back: the
    # destination drops the damaged connection and the source reconnects. A
    # stalled link: the source times out (30 s) and connects again, and the
    # destination takes the new connection over the silent one.
    src, dst, port = vm_pair(vm_factory, 512, "dirtier.mib=256 dirtier.rate=-1")
    proxy = FaultProxy(port, kind, REC_PAGES, 2, after_type=REC_END)
    try:
        rc, rep, err = migrate(src, proxy.uri, "--connections", "0", "--mode", "postcopy",
                               "--bandwidth", "64", timeout=240)
        assert proxy.done.is_set(), "the fault never happened"
        assert rc == 0, err
        assert rep["state"] == "completed", rep
        assert src.wait_exit(30) == 0
        dst.wait_for(r"^VERIFY ok", timeout=30)
        assert_continues(src.console.refresh(), dst.console.refresh())
        err = dst.stderr_text()
        if kind != "stall":
            assert rep["postcopy"]["recoveries"] >= 1, rep["postcopy"]
            assert "post-copy: " in err and "in the PAGES record" in err, err[-2000:]
        elif rep["postcopy"]["recoveries"]:
            # Only one direction stalls: DONE may still reach the source. When
            # it did not, the source reconnected, and the destination took the
            # new connection over the silent one, or answered it after the end.
            assert "connected again" in err or "reconnected after the end" in err, err[-2000:]
    finally:
        proxy.close()
