"""Snapshot and restore on real KVM: the guest's memory, time, CPUs and
console survive; the stream is strict about what it accepts."""
import os
import struct
import time

import pytest

from ferrylib import Vm, assert_continues, hb_line, parse_stream, reseal, run_cli, sections


def take_snapshot(vm, path, *extra):
    r = run_cli("snapshot", "--api-socket", vm.sock, str(path), *extra, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    return r


def restore(vm_factory, snap, *extra):
    return vm_factory(kernel=None, extra=[], restore=(str(snap), list(extra)))


@pytest.fixture
def busy_vm(vm_factory):
    vm = vm_factory(cpus=2, memory=512, cmdline="dirtier.mib=64 dirtier.rate=-1")
    vm.wait_for(r"^VERIFY ok", timeout=20)
    vm.wait_api()
    return vm


def last_hb(vm):
    return vm.heartbeats()[-1]


def test_snapshot_restore_continues(busy_vm, vm_factory, tmp_path):
    snap = tmp_path / "vm.snap"
    take_snapshot(busy_vm, snap)
    assert busy_vm.api("GET", "/v1/vm")[1]["state"] == "paused"
    status, body = busy_vm.api("GET", "/v1/vm")
    assert body["snapshot"]["state"] == "done"
    assert body["snapshot"]["bytes_written"] == os.path.getsize(snap)
    busy_vm.close()

    new = restore(vm_factory, snap)
    new.wait_for(r"^VERIFY ok", timeout=10)
    new.wait_for(hb_line(), timeout=10)
    # Next heartbeat number, guest time never backwards (lines cut at the
    # pause are finished by the restored guest).
    assert_continues(busy_vm.console.refresh(), new.console.refresh())
    new.type("stat\r")
    st = new.wait_for(r"^STAT cpus=(\d+) mem=(\d+)")
    assert st.group(1) == "2" and st.group(2) == "512"
    hbs = new.heartbeats()
    assert all(b[1] > a[1] for a, b in zip(hbs, hbs[1:]))
    text = new.console.refresh()
    assert "VERIFY FAIL" not in text and "TIME BACKWARDS" not in text


def test_snapshot_with_resume_keeps_running(busy_vm, tmp_path):
    take_snapshot(busy_vm, tmp_path / "a.snap", "--resume")
    assert busy_vm.api("GET", "/v1/vm")[1]["state"] == "running"
    seq = last_hb(busy_vm)[0]
    busy_vm.wait_for(hb_line(seq + 2), timeout=5)
    assert not os.path.exists(str(tmp_path / "a.snap") + ".partial")


def test_sections_identical_after_restore(busy_vm, vm_factory, tmp_path):
    """snapshot -> restore (paused) -> snapshot: vCPU and device sections are
    byte-identical. Clock fields aside: the "clock" section (kvmclock, TSCs)
    and the PIT's count_load_time (a host timestamp) are excluded."""
    first, second = tmp_path / "1.snap", tmp_path / "2.snap"
    take_snapshot(busy_vm, first)
    busy_vm.close()
    new = restore(vm_factory, first, "--paused")
    new.wait_api()
    assert new.api("GET", "/v1/vm")[1]["state"] == "paused"
    take_snapshot(new, second)
    a, b = sections(first.read_bytes()), sections(second.read_bytes())
    assert a.keys() == b.keys()
    assert ("vcpu", 0) in a and ("vcpu", 1) in a and ("serial", 0) in a
    for key in a:
        if key[0] == "clock":
            continue
        if key[0] == "pit":
            # struct kvm_pit_state2: 3 channels of 24 bytes, count_load_time at +16.
            mask = lambda p: b"".join(p[i * 24:i * 24 + 16] for i in range(3)) + p[72:]
            assert mask(a[key]) == mask(b[key]), key
            continue
        assert a[key] == b[key], f"section {key} differs after restore"


def test_restore_busy_20_times(vm_factory, tmp_path):
    vm = vm_factory(cpus=2, memory=256, cmdline="dirtier.mib=32 dirtier.rate=-1 dirtier.cpus=2")
    vm.wait_for(r"^VERIFY ok", timeout=20)
    vm.wait_api()
    snap = tmp_path / "busy.snap"
    take_snapshot(vm, snap)
    before = vm.console.refresh()
    vm.close()
    for i in range(20):
        new = restore(vm_factory, snap)
        new.wait_for(r"^VERIFY ok", timeout=10)
        new.wait_for(hb_line(), timeout=10)
        assert_continues(before, new.console.refresh())
        new.close()


@pytest.fixture(scope="module")
def good_snapshot(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    vm = Vm(d, cmdline="dirtier.mib=16 dirtier.rate=100", memory=256)
    try:
        vm.wait_for(r"^VERIFY ok", timeout=20)
        vm.wait_api()
        take_snapshot(vm, d / "good.snap")
    finally:
        vm.close()
    return (d / "good.snap").read_bytes()


def expect_restore_error(vm_factory, tmp_path, data, fragment, *extra):
    bad = tmp_path / "bad.snap"
    bad.write_bytes(data)
    vm = restore(vm_factory, bad, *extra)
    rc = vm.wait_exit(30)
    err = vm.stderr_text()
    assert rc != 0, err
    assert fragment in err, err
    assert not os.path.exists(vm.console_path) or "HB" not in vm.console.refresh()


def test_restore_rejects_bad_magic(vm_factory, tmp_path, good_snapshot):
    expect_restore_error(vm_factory, tmp_path, b"NOTFERRY" + good_snapshot[8:], "bad magic")


def test_restore_rejects_other_version(vm_factory, tmp_path, good_snapshot):
    data = bytearray(good_snapshot)
    struct.pack_into("<I", data, 8, 99)
    expect_restore_error(vm_factory, tmp_path, bytes(data), "header")


def test_restore_rejects_truncated(vm_factory, tmp_path, good_snapshot):
    expect_restore_error(vm_factory, tmp_path, good_snapshot[:len(good_snapshot) // 2],
                         "truncated")
    expect_restore_error(vm_factory, tmp_path, good_snapshot[:50], "too short")


def test_restore_rejects_corruption(vm_factory, tmp_path, good_snapshot):
    _, recs = parse_stream(good_snapshot)
    for kind in ("pages", "vcpu", "serial"):
        rec = next(r for r in recs if r["name"] == kind)
        data = bytearray(good_snapshot)
        data[rec["payload"] + rec["length"] // 2] ^= 0x40
        expect_restore_error(vm_factory, tmp_path, bytes(data), "checksum mismatch")


def test_restore_rejects_unknown_section(vm_factory, tmp_path, good_snapshot):
    _, recs = parse_stream(good_snapshot)
    rec = next(r for r in recs if r["name"] == "rtc")
    data = bytearray(good_snapshot)
    struct.pack_into("<I", data, rec["offset"] + 4, 77)      # section id 77
    # Re-seal the record so only the unknown id is wrong.
    reseal(data, rec)
    expect_restore_error(vm_factory, tmp_path, bytes(data), "unknown mandatory section")


def test_restore_rejects_other_memory_size(vm_factory, tmp_path, good_snapshot):
    expect_restore_error(vm_factory, tmp_path, good_snapshot, "--memory asks for 512 MiB",
                         "--memory", "512")


def test_restore_missing_file(vm_factory, tmp_path):
    vm = restore(vm_factory, tmp_path / "nope.snap")
    assert vm.wait_exit(20) != 0
    assert "No such file" in vm.stderr_text()


def test_snapshot_api_errors(busy_vm, tmp_path):
    status, body = busy_vm.api("PUT", "/v1/vm/snapshot", {"path": "relative.snap"})
    assert status == 400 and "absolute" in body["error"]
    status, body = busy_vm.api("PUT", "/v1/vm/snapshot", {"nope": 1})
    assert status == 400
    status, body = busy_vm.api("PUT", "/v1/vm/snapshot",
                               {"path": "/nonexistent/dir/x.snap", "resume": True})
    assert status >= 400 and "No such file" in body["error"]
    assert busy_vm.api("GET", "/v1/vm")[1]["state"] == "running", "failed snapshot stopped the VM"


def test_guest_clock_stops_while_paused(vm_factory, tmp_path):
    """A paused guest's clock stops (as with QEMU's stop/cont): neither a long
    pause nor the time a snapshot takes shows up as elapsed guest time."""
    vm = vm_factory(cpus=2, memory=256, cmdline="dirtier.mib=32")
    vm.wait_for(r"^VERIFY ok", timeout=20)
    vm.wait_api()
    assert run_cli("pause", "--api-socket", vm.sock).returncode == 0
    t_pause = time.monotonic()
    before = vm.console.refresh()
    time.sleep(2.0)
    take_snapshot(vm, tmp_path / "p.snap")
    time.sleep(1.0)
    assert run_cli("resume", "--api-socket", vm.sock).returncode == 0
    paused_ms = (time.monotonic() - t_pause) * 1000
    vm.wait_for(hb_line(), timeout=5, start=len(before))
    hbs = vm.heartbeats()
    gaps = [(b[1] - a[1]) / 1e6 for a, b in zip(hbs, hbs[1:])]
    # Heartbeats come every 100 ms of guest time; a busy host can delay one
    # by a few hundred ms, but the pause (over 3 s) must not show at all.
    bound = min(1000, paused_ms / 2)
    assert max(gaps) < bound, f"guest time jumped across a {paused_ms:.0f} ms pause: {max(gaps):.0f} ms"
    vm.close()
    new = restore(vm_factory, tmp_path / "p.snap")
    new.wait_for(hb_line(), timeout=10)
    first = new.heartbeats()[0]
    last = [h for h in vm.heartbeats() if h[0] == first[0] - 1][0]
    assert (first[1] - last[1]) / 1e6 < bound, "the restored guest saw the pause as elapsed"
