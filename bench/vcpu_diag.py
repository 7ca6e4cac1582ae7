"""What each vCPU of a ferry snapshot was doing: enough to tell a guest that is stuck
in hlt with an interrupt pending from one whose timer was lost (bench diagnostics).

    python3 bench/vcpu_diag.py SNAPSHOT"""
import json
import os
import re
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
from ferrylib import sections  # noqa: E402

REGS, SREGS, XCRS, LAPIC, EVENTS = 144, 312, 392, 1024, 64
MP_STATES = {0: "runnable", 1: "uninitialized", 2: "init_received", 3: "halted",
             4: "sipi_received"}


def lapic_bits(lapic, base):
    """Vectors set in the 256-bit register at `base` (IRR 0x200, ISR 0x100)."""
    out = []
    for i in range(8):
        word = struct.unpack_from("<I", lapic, base + 16 * i)[0]
        out += [32 * i + b for b in range(32) if word >> b & 1]
    return out


def vcpu(payload):
    regs = struct.unpack_from("<18Q", payload, 0)
    off = REGS + SREGS
    xsave = struct.unpack_from("<I", payload, off)[0]
    off += 4 + xsave + XCRS
    n = struct.unpack_from("<I", payload, off)[0]
    off += 4
    msrs = dict(struct.unpack_from("<IQ", payload, off + 12 * i) for i in range(n))
    off += 12 * n
    lapic = payload[off:off + LAPIC]
    off += LAPIC
    ev = payload[off:off + EVENTS]
    mp = struct.unpack_from("<I", payload, off + EVENTS)[0]
    return {"rip": hex(regs[16]), "rflags": hex(regs[17]), "rdi": hex(regs[5]),
            "rax": hex(regs[0]), "mp_state": MP_STATES.get(mp, mp),
            "tsc_deadline": hex(msrs.get(0x6e0, 0)),
            "irr": lapic_bits(lapic, 0x200), "isr": lapic_bits(lapic, 0x100),
            "lvt_timer": hex(struct.unpack_from("<I", lapic, 0x320)[0]),
            "irq_injected": ev[8], "irq_nr": ev[9], "shadow": ev[11],
            "nmi_pending": ev[13], "events_flags": hex(struct.unpack_from("<I", ev, 20)[0])}


def clock(payload):
    kvmclock, flags, realtime, khz, n = struct.unpack_from("<QIQII", payload, 0)
    tscs = struct.unpack_from(f"<{n}Q", payload, 28)
    return {"kvmclock_ns": kvmclock, "tsc_khz": khz, "tsc": [hex(t) for t in tscs]}


def diagnose(path):
    with open(path, "rb") as f:
        data = f.read()
    secs = sections(data)
    out = {f"vcpu{i}": vcpu(p) for (name, i), p in sorted(secs.items()) if name == "vcpu"}
    for (name, _), p in secs.items():
        if name == "clock":
            out["clock"] = clock(p)
    return out


IF = 0x200


def deadline_overdue(diag, i, seconds=1.0):
    """vCPU i's TSC deadline lies more than `seconds` before its TSC at the snapshot.
    (Just passed is normal: the snapshot's pause can come between the deadline and
    KVM noticing it; KVM clears the deadline once the timer has fired.)"""
    c, clk = diag[f"vcpu{i}"], diag.get("clock", {})
    tscs, khz = clk.get("tsc", []), clk.get("tsc_khz", 0)
    deadline = int(c["tsc_deadline"], 16)
    return bool(deadline and i < len(tscs) and khz and
                deadline + int(seconds * khz * 1000) < int(tscs[i], 16))


def ferry_missed_wakeup(diag):
    """Every vCPU halted with interrupts enabled, and one of them has an interrupt KVM
    should have woken it for: a vector in its IRR, or a TSC deadline long passed.
    No VMM state makes KVM keep such a vCPU asleep, so this is the hypervisor's fault.
    Meant for a guest already silent for seconds: in a running one an IRR vector can
    be caught on its way in."""
    n = len([k for k in diag if k.startswith("vcpu")])
    cpus = [diag[f"vcpu{i}"] for i in range(n)]
    if not cpus or not all(c["mp_state"] == "halted" and int(c["rflags"], 16) & IF
                           for c in cpus):
        return False
    return any(c["irr"] or deadline_overdue(diag, i) for i, c in enumerate(cpus))


def qemu_missed_wakeup(diag):
    """The same from QEMU's `info registers -a` and `info lapic N` dumps (QEMU does not
    show the TSC deadline, so only a pending IRR vector counts)."""
    regs = diag.get("info registers -a", "")
    cpus = regs.split("CPU#")[1:]
    if not cpus:
        return False
    for c in cpus:
        m_hlt = re.search(r"HLT=(\d)", c)
        m_fl = re.search(r"RFL=([0-9a-f]+)", c)
        if not (m_hlt and m_fl and m_hlt.group(1) == "1" and int(m_fl.group(1), 16) & IF):
            return False
    for k, text in diag.items():
        m = re.search(r"^IRR\s+(.*)$", text, re.M) if k.startswith("info lapic") else None
        if m and re.search(r"\d", m.group(1)):
            return True
    return False


if __name__ == "__main__":
    print(json.dumps(diagnose(sys.argv[1]), indent=1))
