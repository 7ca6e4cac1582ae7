"""Records real migrations' main channels as seeds for fuzz_dest: a 64 MiB test
guest is migrated through a proxy that keeps what the source sent on the first
connection. The stream header (read by the handshake, not by the fuzzed
receive loop) is dropped, and so are page records past SEED_PAGE_BYTES (records
are checked one by one, so the rest stays a valid stream).

    python3 tests/fuzz/record_migration.py [OUTDIR]   (real KVM; make asan guest)"""
import os
import socket
import struct
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from ferrylib import Vm, free_port, migrate, wait_listening  # noqa: E402

REC_HDR = 40
REC_PAGES, REC_XPAGES = 2, 5
SEED_PAGE_BYTES = 192 << 10
MODES = {"precopy": ["--connections", "0"],
         "postcopy": ["--connections", "0", "--mode", "postcopy"]}


class Recorder:
    """Forwards every connection; keeps the client's bytes of the first."""

    def __init__(self, target):
        self.target, self.first = target, bytearray()
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.n = 0
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            u = socket.create_connection(self.target)
            keep = self.first if self.n == 0 else None
            self.n += 1
            threading.Thread(target=self.pump, args=(c, u, keep), daemon=True).start()
            threading.Thread(target=self.pump, args=(u, c, None), daemon=True).start()

    @staticmethod
    def pump(a, b, keep):
        try:
            while data := a.recv(1 << 16):
                if keep is not None:
                    keep += data
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def trim(stream):
    """The records after the header, page records only up to SEED_PAGE_BYTES."""
    hsize = struct.unpack_from("<I", stream, 12)[0]
    out, off, pages = bytearray(), hsize, 0
    while off + REC_HDR <= len(stream):
        rtype = struct.unpack_from("<I", stream, off)[0]
        length = struct.unpack_from("<Q", stream, off + 24)[0]
        rec = stream[off:off + REC_HDR + length]
        off += REC_HDR + length
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
        rec = Recorder(("127.0.0.1", port))
        rc, rep, err = migrate(src, f"tcp:127.0.0.1:{rec.port}", *MODES[mode])
        if rc != 0:
            raise SystemExit(f"{mode}: migration failed: {err}")
        dst.wait_for(r"^VERIFY ok", timeout=30)
        return trim(bytes(rec.first))
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
