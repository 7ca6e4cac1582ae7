"""virtio-blk on real KVM with the test guest's polled virtio-pci driver
(guest/README.md, blktest=1): reads with known checksums, writes checked in
the file by the host, read-only disks, I/O running through a live migration
and a snapshot/restore."""
import os
import re
import struct
import zlib

import pytest

from ferrylib import free_port, migrate, run_cli, start_destination

MIB = 1 << 20
SECTOR = 512


def make_disk(tmp_path, name, mib):
    path = tmp_path / name
    path.write_bytes(os.urandom(mib * MIB))
    return str(path)


def second_mib_pattern():
    """The guest's blktest pattern for bytes 1 MiB..2 MiB (contract)."""
    out = bytearray()
    for s in range(2048):
        out += struct.pack("<64Q", *[((s << 32) | w) ^ 0x5A5A5A5A5A5A5A5A for w in range(64)])
    return bytes(out)


def disk_arg(path, **kw):
    return "path=" + path + "".join(f",{k}={v}" for k, v in kw.items())


def assert_blk_line(vm, n, path, start=0):
    data = open(path, "rb").read(MIB)
    m = vm.wait_for(rf"^BLK {n} (\d+) ([0-9a-f]{{8}})\s*$", timeout=30, start=start)
    assert int(m.group(1)) == os.path.getsize(path) // SECTOR
    assert m.group(2) == f"{zlib.crc32(data):08x}", "guest read other bytes than the file has"
    return m


def test_blktest_two_disks_readonly(vm_factory, tmp_path):
    d0 = make_disk(tmp_path, "d0.img", 4)
    d1 = make_disk(tmp_path, "d1.img", 3)
    d1_before = open(d1, "rb").read()
    vm = vm_factory(cpus=2, cmdline="blktest=1",
                    extra=["--disk", disk_arg(d0, serial="disk0"),
                           "--disk", disk_arg(d1, readonly="on")])
    assert_blk_line(vm, 0, d0)
    assert_blk_line(vm, 1, d1)
    vm.wait_for(r"^BLK ok 0\s*$", timeout=30)
    vm.wait_for(r"^BLK ro 1\s*$", timeout=30)
    text = vm.console.refresh()
    assert "BLK FAIL" not in text
    assert re.search(r"^VIRTIO 00:01\.0 1042 msix=1", text, re.M)
    # MSI-X end to end: KVM GSI route + irqfd -> the guest's interrupt handler
    irqs = re.search(r"^VIRTIO irqs (\d+)", text, re.M)
    assert irqs and int(irqs.group(1)) >= 2, irqs
    # the host sees the guest's pattern in the second MiB; the read-only disk is untouched
    with open(d0, "rb") as f:
        f.seek(MIB)
        assert f.read(MIB) == second_mib_pattern()
    assert open(d1, "rb").read() == d1_before
    devs = vm.api("GET", "/v1/vm")[1]["devices"]
    assert [d["type"] for d in devs] == ["virtio-blk", "virtio-blk", "virtio-rng"]
    assert devs[0]["serial"] == "disk0" and devs[1]["readonly"] is True
    assert devs[0]["writes"] > 0 and devs[0]["errors"] == 0
    assert devs[1]["errors"] >= 1            # the refused write
    assert not any(d["broken"] for d in devs)


def blkw_passes(text):
    return [(int(g), rest.strip()) for g, rest in re.findall(r"^BLKW (\d+) (.*)$", text, re.M)]


def loop_words(g, s):
    return struct.pack("<64Q", *[(g << 48) | (s << 16) | w for w in range(64)])


def assert_loop_pattern(path, last_g, mib=4):
    """Every sector of MiB 2..2+mib holds the last completed pass's pattern
    or, for sectors the next pass already rewrote, that pass's."""
    with open(path, "rb") as f:
        f.seek(2 * MIB)
        data = f.read(mib * MIB)
    bad = []
    for i in range(mib * MIB // SECTOR):
        got = data[i * SECTOR:(i + 1) * SECTOR]
        ok = False
        for s in (i, 2 * MIB // SECTOR + i):   # sector numbering: relative or absolute
            if got in (loop_words(last_g, s), loop_words(last_g + 1, s)):
                ok = True
        if not ok:
            bad.append(i)
    assert not bad, f"{len(bad)} sectors hold neither pass {last_g} nor {last_g + 1}: {bad[:8]}"


def loop_vm(vm_factory, disk, cpus=2):
    vm = vm_factory(cpus=cpus, memory=512, cmdline="blktest=1 blk.loop=1 blk.mib=4",
                    extra=["--disk", disk_arg(disk)])
    vm.wait_for(r"^BLK ok 0", timeout=30)
    vm.wait_for(r"^BLKW 2 ok", timeout=30)
    vm.wait_api()
    return vm


def finish_and_check(vm, disk, start, before=""):
    """After the switch: the passes go on where they stopped (the pass in
    flight at the switch completes there), none fails; then the file."""
    first = vm.wait_for(r"^BLKW (\d+) ok", timeout=30, start=start)
    g0 = int(first.group(1))
    if before:
        # A line cut at the pause ("BLK" before, "W 3 ok" after) is finished
        # on the other side: the two texts are joined before parsing.
        gs = [g for g, _ in blkw_passes(before + vm.console.refresh()[start:first.end()])]
        assert gs == list(range(gs[0], gs[0] + len(gs))), f"passes did not continue: {gs[-6:]}"
    dev = vm.api("GET", "/v1/vm")[1]["devices"][0]
    assert dev["status"] == 15 and not dev["broken"] and dev["writes"] > 0, dev
    vm.wait_for(rf"^BLKW {g0 + 2} ok", timeout=30, start=start)
    vm.wait_for(r"^VERIFY ok", timeout=30, start=start)
    vm.api("PUT", "/v1/vm/pause")
    passes = blkw_passes(vm.console.refresh())
    assert all(r == "ok" for _, r in passes), [p for p in passes if p[1] != "ok"][:3]
    vm.close()
    assert_loop_pattern(disk, passes[-1][0])


def test_blk_io_through_live_migration(vm_factory, tmp_path):
    disk = make_disk(tmp_path, "shared.img", 8)
    src = loop_vm(vm_factory, disk)
    dst, uri = start_destination(vm_factory, extra=["--disk", disk_arg(disk)])
    rc, rep, err = migrate(src, uri)
    assert rc == 0, err
    assert rep["state"] == "completed"
    assert src.wait_exit(20) == 0
    before = src.console.refresh()
    assert "FAIL" not in before
    finish_and_check(dst, disk, 0, before)


def test_blk_io_through_postcopy(vm_factory, tmp_path):
    disk = make_disk(tmp_path, "shared.img", 8)
    src = loop_vm(vm_factory, disk)
    dst, uri = start_destination(vm_factory, extra=["--disk", disk_arg(disk)])
    rc, rep, err = migrate(src, uri, "--mode", "postcopy")
    assert rc == 0, err
    assert rep["state"] == "completed"
    assert src.wait_exit(30) == 0
    finish_and_check(dst, disk, 0, src.console.refresh())


def test_blk_snapshot_restore(vm_factory, tmp_path):
    disk = make_disk(tmp_path, "d.img", 8)
    vm = loop_vm(vm_factory, disk)
    snap = str(tmp_path / "vm.snap")
    r = run_cli("snapshot", "--api-socket", vm.sock, snap, timeout=60)
    assert r.returncode == 0, r.stderr
    before = vm.console.refresh()
    vm.close()
    new = vm_factory(restore=(snap, ["--disk", disk_arg(disk)]))
    finish_and_check(new, disk, 0, before)
    assert "Linux" not in new.console.refresh()


def test_migration_to_other_devices_fails_cleanly(vm_factory, tmp_path):
    """A destination without the disk refuses in the handshake (and, were the
    disks not compared there, the PCI slot's device would differ); the VM
    keeps running its I/O on the source."""
    disk = make_disk(tmp_path, "d.img", 8)
    src = loop_vm(vm_factory, disk)
    dst, uri = start_destination(vm_factory)
    rc, rep, err = migrate(src, uri)
    assert rc != 0
    dst.wait_exit(10)
    assert "the source VM has 1 disk(s), this destination 0" in dst.stderr_text()
    g = blkw_passes(src.console.refresh())[-1][0]
    src.wait_for(rf"^BLKW {g + 2} ok", timeout=30)
    assert "FAIL" not in src.console.refresh()


@pytest.mark.parametrize("mismatch", ["size", "readonly"])
def test_migration_to_a_different_disk_is_refused(vm_factory, tmp_path, mismatch):
    """The destination's disk is of another size, or read-only where the
    source's is writable: the guest must not see its disk change, so the
    destination refuses the state and the VM goes on on the source."""
    disk = make_disk(tmp_path, "d.img", 8)
    src = loop_vm(vm_factory, disk)
    if mismatch == "size":
        arg, said = disk_arg(make_disk(tmp_path, "big.img", 16)), \
            "disk 0: 16384 sectors on the source, 32768 here"
    else:
        arg, said = disk_arg(disk, readonly="on"), "disk 0: writable on the source, read-only here"
    dst, uri = start_destination(vm_factory, extra=["--disk", arg])
    rc, rep, err = migrate(src, uri)
    assert rc != 0 and rep["state"] == "failed", rep
    # Refused in the handshake's answer, before any page moved; both sides say why.
    assert said in rep["error"] and not rep["rounds"], rep
    assert dst.wait_exit(20) != 0
    assert said in dst.stderr_text(), dst.stderr_text()
    g = blkw_passes(src.console.refresh())[-1][0]
    src.wait_for(rf"^BLKW {g + 2} ok", timeout=30)
    assert "FAIL" not in src.console.refresh()


def test_destination_with_a_missing_disk_does_not_start(vm_factory, tmp_path):
    missing = str(tmp_path / "nowhere.img")
    dst = vm_factory(incoming=f"tcp:127.0.0.1:{free_port()}",
                     extra=["--disk", disk_arg(missing)])
    assert dst.wait_exit(20) == 2
    assert "nowhere.img" in dst.stderr_text(), dst.stderr_text()
