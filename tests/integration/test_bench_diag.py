"""The benchmark's diagnosis of a destination that never shows the guest
(bench/vcpu_diag.py): it must read a real ferry snapshot's vCPUs right, and call a
"missed wake-up" (every vCPU halted with interrupts on, one with a wake-up due) only
when that is what the state shows. The QEMU case uses the dumps QEMU printed on the
one such run caught here (tests/integration/data/qemu-missed-wakeup.json)."""
import copy
import json
import os
import sys

from ferrylib import ROOT, run_cli

sys.path.insert(0, os.path.join(ROOT, "bench"))
import vcpu_diag  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def idle_snapshot(vm_factory, tmp_path):
    # A 1 ms tick, as the benchmark's stall scenarios run: every tick is a
    # port exit and a timer interrupt handled in (emulated) guest kernel mode,
    # so a busy host slows the boot's first verifier pass down a lot.
    vm = vm_factory(cpus=2, memory=256, cmdline="tick.us=1000")
    vm.wait_for(r"^VERIFY ok", timeout=90)
    vm.wait_api()
    path = tmp_path / "idle.snap"
    r = run_cli("snapshot", "--api-socket", vm.sock, str(path), "--resume", timeout=60)
    assert r.returncode == 0, r.stderr + r.stdout
    return vcpu_diag.diagnose(str(path))


def test_ferry_snapshot_diagnosis(vm_factory, tmp_path):
    d = idle_snapshot(vm_factory, tmp_path)
    assert sorted(k for k in d if k.startswith("vcpu")) == ["vcpu0", "vcpu1"]
    assert d["clock"]["tsc_khz"] > 0 and len(d["clock"]["tsc"]) == 2
    for i in range(2):
        c = d[f"vcpu{i}"]
        assert 0x100000 <= int(c["rip"], 16) < 0x40000000, c     # in the guest image
        assert int(c["rflags"], 16) & 0x2, c                      # the always-one bit
        assert c["lvt_timer"] == hex(0x40020), c                  # TSC-deadline, vector 32
        assert c["mp_state"] in ("halted", "runnable"), c
        # A running guest's deadline is ahead, just passed, or 0 (fired): never overdue.
        assert not vcpu_diag.deadline_overdue(d, i), d
    tsc0, khz = int(d["clock"]["tsc"][0], 16), d["clock"]["tsc_khz"]
    stuck = copy.deepcopy(d)
    for i in range(2):
        stuck[f"vcpu{i}"].update(mp_state="halted", rflags="0x246", irr=[],
                                 tsc_deadline=hex(int(d["clock"]["tsc"][i], 16) + 10**6))
    assert not vcpu_diag.ferry_missed_wakeup(stuck)       # asleep until a future deadline
    stuck["vcpu1"]["irr"] = [32]
    assert vcpu_diag.ferry_missed_wakeup(stuck)           # a timer interrupt left pending
    stuck["vcpu1"]["irr"] = []
    stuck["vcpu0"]["tsc_deadline"] = hex(tsc0 - khz * 100)
    assert not vcpu_diag.ferry_missed_wakeup(stuck)       # 0.1 s late: may be on its way
    stuck["vcpu0"]["tsc_deadline"] = hex(tsc0 - khz * 5000)
    assert vcpu_diag.ferry_missed_wakeup(stuck)           # 5 s late, no interrupt
    stuck["vcpu1"]["rflags"] = "0x46"
    assert not vcpu_diag.ferry_missed_wakeup(stuck)       # cli; hlt is meant to stay halted


def test_qemu_dump_diagnosis():
    with open(os.path.join(DATA, "qemu-missed-wakeup.json")) as f:
        d = json.load(f)
    assert vcpu_diag.qemu_missed_wakeup(d)
    awake = dict(d, **{"info registers -a": d["info registers -a"].replace("HLT=1", "HLT=0", 1)})
    assert not vcpu_diag.qemu_missed_wakeup(awake)
    no_irr = dict(d, **{"info lapic 1": d["info lapic 1"].replace("IRR\t 32", "IRR\t (none)")})
    assert not vcpu_diag.qemu_missed_wakeup(no_irr)
    assert not vcpu_diag.qemu_missed_wakeup({})
