"""A Debian Linux kernel on ferry. On this PVM host kernel mode is emulated
and a Linux kernel stops early (see ../shared/PLATFORM.md), so these tests
check the kernel's own early log: our e820 map, our command line, our ACPI
tables and the CPUs of our MADT. Slow: tens of seconds each."""
import os
import re

import pytest

from ferrylib import LINUX_DIR

VMLINUX = os.path.join(LINUX_DIR, "vmlinux")
VMLINUZ = os.path.join(LINUX_DIR, "vmlinuz")
INITRD = os.path.join(LINUX_DIR, "initrd.img")


@pytest.fixture(autouse=True)
def linux_images():
    for path in (VMLINUX, VMLINUZ, INITRD):
        assert os.path.exists(path), f"{path} missing: run `make linux-guest`"


def test_linux_pvh_early_boot(vm_factory):
    cmdline = "console=ttyS0 earlyprintk=serial,ttyS0,115200 ferry.marker=42"
    vm = vm_factory(kernel=VMLINUX, memory=512, cpus=2, api_socket=False,
                    extra=["--initrd", INITRD, "--cmdline", cmdline])
    vm.wait_for(r"Linux version 6\.", timeout=240)
    vm.wait_for(r"smpboot: Allowing 2 CPUs", timeout=240)
    log = vm.console.refresh()
    e820 = re.findall(r"BIOS-e820: \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] (\w+)", log)
    assert ("0x0000000000000000", "0x000000000009fbff", "usable") in e820
    assert ("0x0000000000100000", "0x000000001fffffff", "usable") in e820
    assert f"Command line: {cmdline}" in log
    assert re.search(r"ACPI: RSDP 0x00000000000E0000 .*FERRY", log)
    assert re.search(r"ACPI: APIC .*FERRYVM", log)
    assert "Hypervisor detected: KVM" in log
    assert re.search(r"IOAPIC\[0\]: apic_id 0, .*address 0xfec00000, GSI 0-23", log)
    assert "INT_SRC_OVR (bus 0 bus_irq 0 global_irq 2" in log


def test_linux_bzimage_boot_protocol(vm_factory):
    # The bzImage's decompressor parses our boot_params command line at once;
    # decompression itself is emulated here and far too slow to wait for.
    vm = vm_factory(kernel=VMLINUZ, memory=512, cpus=1, api_socket=False,
                    extra=["--initrd", INITRD,
                           "--cmdline", "console=ttyS0 earlyprintk=serial,ttyS0,115200 nokaslr"])
    vm.wait_for(r"KASLR disabled: 'nokaslr' on cmdline", timeout=240)
    assert vm.proc.poll() is None


def test_linux_snapshot_restore_continues(vm_factory, tmp_path):
    """A Linux kernel snapshotted early in its boot goes on booting in a new
    process: it prints the lines that come later (CPUs from our MADT)."""
    from ferrylib import run_cli
    cmdline = "console=ttyS0 earlyprintk=serial,ttyS0,115200"
    vm = vm_factory(kernel=VMLINUX, memory=512, cpus=2,
                    extra=["--initrd", INITRD, "--cmdline", cmdline])
    vm.wait_for(r"Hypervisor detected: KVM", timeout=240)
    vm.wait_api()
    snap = tmp_path / "linux.snap"
    r = run_cli("snapshot", "--api-socket", vm.sock, str(snap), timeout=240)
    assert r.returncode == 0, r.stderr
    before = vm.console.refresh()
    assert "smpboot: Allowing 2 CPUs" not in before, "snapshot came too late to prove anything"
    vm.close()
    new = vm_factory(restore=(str(snap), []))
    new.wait_for(r"smpboot: Allowing 2 CPUs", timeout=240)
    after = new.console.refresh()
    assert "Linux version" not in after, "the restored kernel started over"
