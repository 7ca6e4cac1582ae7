"""A TCP proxy that damages one migration stream on purpose: on the first
connection it carries (the main channel), at the start of a chosen record, it
flips a bit, truncates, rewrites the length field to 2^31 or stalls. Later
connections (urgent channel, recovery) pass untouched. With kind None it only
keeps a copy of what the source sent on the first (tests/fuzz's recorder).

When the destination goes, the proxy shuts the source's side down but keeps
it open, like a middlebox that forgets a flow: the source's writes then find
a peer that no longer reads, and it must notice by its own timeout (the
kernel can keep taking short writes meanwhile; see util/sockio.c)."""
import socket
import struct
import threading
import time

HEADER_SIZE_AT = 12          # struct stream_header.header_size
REC_HDR = 40                 # struct stream_record
REC_SECTION, REC_PAGES, REC_END = 1, 2, 3


class FaultProxy:
    def __init__(self, target_port, kind, rec_type=None, nth=1, after_type=None, stall_s=40):
        """kind: flip | truncate | length | stall, at the nth record of rec_type
        (counted after the first record of after_type, if given); None: record."""
        self.target = ("127.0.0.1", target_port)
        self.kind, self.rec_type, self.nth = kind, rec_type, nth
        self.after_type, self.stall_s = after_type, stall_s
        self.done = threading.Event()      # the fault happened
        self.at = None                     # stream offset of the damaged record
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.uri = f"tcp:127.0.0.1:{self.port}"
        self.first = True
        self.recorded = bytearray()
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.srv.close()
        for s in self.socks:
            _close(s)

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            u = socket.create_connection(self.target)
            self.socks += [c, u]
            damage, self.first = self.first, False
            fwd = self._damage if damage else _pump
            threading.Thread(target=fwd, args=(c, u), daemon=True).start()
            threading.Thread(target=_pump, args=(u, c), daemon=True).start()

    def _find(self, buf, base, nxt, seen):
        """Walks record headers in buf (stream bytes from offset base) from
        offset nxt. Returns (next unparsed record offset, damage offset or None)."""
        while nxt - base + REC_HDR <= len(buf):
            rtype, = struct.unpack_from("<I", buf, nxt - base)
            length, = struct.unpack_from("<Q", buf, nxt - base + 24)
            if self.after_type is not None and not seen["after"]:
                seen["after"] = rtype == self.after_type
            elif rtype == self.rec_type:
                seen["n"] += 1
                if seen["n"] == self.nth:
                    return nxt, nxt
            nxt += REC_HDR + length
        return nxt, None

    def _damage(self, c, u):
        buf, base, sent, nxt, at = bytearray(), 0, 0, None, None
        seen = {"after": False, "n": 0}
        try:
            while True:
                data = c.recv(1 << 16)
                if not data:
                    break
                if self.kind is None:
                    self.recorded += data
                buf += data
                if nxt is None and len(buf) >= 16:
                    nxt = struct.unpack_from("<I", buf, HEADER_SIZE_AT)[0]
                if nxt is not None and at is None:
                    nxt, at = self._find(buf, base, nxt, seen)
                if at is not None and self._apply(buf, base, at, sent, u, c):
                    return
                end = base + len(buf) if at is None or self.done.is_set() else at
                u.sendall(buf[sent - base:end - base])
                sent = end
                keep = base if nxt is None else min(sent, nxt) if at is None else sent
                del buf[:keep - base]
                base = keep
        except OSError:
            pass
        _close(c)
        _close(u)

    def _apply(self, buf, base, at, sent, u, c):
        """Damages the record at `at` once enough of it is in buf; True when
        this connection is finished."""
        if self.done.is_set() or base + len(buf) < at + REC_HDR + 1:
            return False
        length, = struct.unpack_from("<Q", buf, at - base + 24)
        self.at = at
        if self.kind == "flip":
            buf[at - base + REC_HDR] ^= 0x10          # the payload's first byte
        elif self.kind == "length":
            struct.pack_into("<Q", buf, at - base + 24, 1 << 31)
        elif self.kind in ("truncate", "stall"):
            cut = at + (REC_HDR + length // 2 if self.kind == "truncate" else 0)
            if base + len(buf) < cut:
                return False
            u.sendall(buf[sent - base:cut - base])
            self.done.set()
            if self.kind == "stall":
                time.sleep(self.stall_s)
            _close(c)
            _close(u)
            return True
        self.done.set()
        return False


def _pump(a, b):
    try:
        while data := a.recv(1 << 16):
            b.sendall(data)
    except OSError:
        pass
    _close(a)
    _close(b)


def _close(s):
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
