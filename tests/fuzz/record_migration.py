"""Records real migrations' main channels as seeds for fuzz_dest: a 64 MiB test
guest is migrated through a proxy (tests/integration/faultproxy.py, with no
fault) that keeps what the source sent on the first connection. The stream
header (read by the handshake, not by the fuzzed receive loop) is dropped, and
so are page records past SEED_PAGE_BYTES (records are checked one by one, so
the rest stays a valid stream).

    python3 tests/fuzz/record_migration.py [OUTDIR]   (real KVM; make asan guest)"""
import os
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from faultproxy import FaultProxy  # noqa: E402
from ferrylib import Vm, free_port, migrate, wait_listening  # noqa: E402

REC_HDR = 40
REC_PAGES, REC_XPAGES, REC_DISKS = 2, 5, 24
SEED_PAGE_BYTES = 192 << 10
MODES = {"precopy": ["--connections", "0"],
         "postcopy": ["--connections", "0", "--mode", "postcopy"]}


def trim(stream):
    """The records after the header and the disks, page records only up to
    SEED_PAGE_BYTES."""
    hsize = struct.unpack_from("<I", stream, 12)[0]
    out, off, pages = bytearray(), hsize, 0
    while off + REC_HDR <= len(stream):
        rtype = struct.unpack_from("<I", stream, off)[0]
        length = struct.unpack_from("<Q", stream, off + 24)[0]
        rec = stream[off:off + REC_HDR + length]
        off += REC_HDR + length
        if rtype == REC_DISKS:          # read by the handshake, not the receive loop
            continue
        if rtype in (REC_PAGES, REC_XPAGES):
            if pages + len(rec) > SEED_PAGE_BYTES:
                continue
            pages += len(rec)
        out += rec
    return bytes(out)


def record(mode, workdir):
    src = Vm(os.path.join(workdir, f"{mode}-src"), memory=64, cpus=2,
             cmdline="dirtier.mib=8 dirtier.rate=2000")
    port = free_port()
    dst = Vm(os.path.join(workdir, f"{mode}-dst"), incoming=f"tcp:127.0.0.1:{port}")
    try:
        src.wait_for(r"^VERIFY ok", timeout=30)
        src.wait_api()
        wait_listening(port)
        rec = FaultProxy(port, None)      # no fault: it only keeps the main channel
        rc, rep, err = migrate(src, rec.uri, *MODES[mode])
        if rc != 0:
            raise SystemExit(f"{mode}: migration failed: {err}")
        dst.wait_for(r"^VERIFY ok", timeout=30)
        rec.close()
        return trim(bytes(rec.recorded))
    finally:
        src.close()
        dst.close()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "seeds", "dest")
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for mode in MODES:
            os.makedirs(os.path.join(work, f"{mode}-src"))
            os.makedirs(os.path.join(work, f"{mode}-dst"))
            data = record(mode, work)
            with open(os.path.join(out, f"recorded-{mode}"), "wb") as f:
                f.write(data)
            print(f"{mode}: {len(data)} bytes")


if __name__ == "__main__":
    main()
