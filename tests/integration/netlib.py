"""Network test fixture: a network namespace of the test's own with a
multi-queue tap (host side 10.99.0.1/24), entered by the test process so that
ferry, its sockets and the probes (ICMP, UDP) all live in it. Always removed."""
import contextlib
import ctypes
import os
import secrets
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "guest"))
import netprobe                                     # noqa: E402

CLONE_NEWNET = 0x40000000
HOST_IP = "10.99.0.1"
GUEST_IP = "10.99.0.2"

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns: " + os.strerror(err))


def _ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


class NetNs:
    def __init__(self, tap="ftap0"):
        self.name = "ferrytest-" + secrets.token_hex(4)
        self.tap = tap
        self._home = None
        _ip("netns", "add", self.name)
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
            _ip("-n", self.name, "tuntap", "add", "dev", tap, "mode", "tap", "multi_queue")
            _ip("-n", self.name, "addr", "add", HOST_IP + "/24", "dev", tap)
            _ip("-n", self.name, "link", "set", tap, "up")
        except Exception:
            self.close()
            raise

    @contextlib.contextmanager
    def entered(self):
        """The calling (main) thread, and every process it starts, is in the
        namespace until the block ends."""
        self._home = os.open("/proc/self/ns/net", os.O_RDONLY)
        ns = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(ns)
            yield self
        finally:
            os.close(ns)
            _setns(self._home)
            os.close(self._home)

    def tap_stats(self):
        """(rx_packets, tx_packets, tx_dropped) of the tap, host view."""
        out = subprocess.run(["ip", "-n", self.name, "-s", "-j", "link", "show", self.tap],
                             capture_output=True, text=True, check=True).stdout
        import json
        s = json.loads(out)[0]["stats64"]
        return s["rx"]["packets"], s["tx"]["packets"], s["tx"]["dropped"]

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)


_csum = netprobe.csum       # the Internet checksum, shared with the host probe


class Pinger:
    """ICMP echo over a raw socket (no ping binary needed): id is ours, seq counts."""

    def __init__(self, dst=GUEST_IP):
        self.dst = dst
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.ident = os.getpid() & 0xffff
        self.seq = 0

    def send(self):
        self.seq = (self.seq + 1) & 0xffff
        payload = struct.pack("!d", time.monotonic()) + b"ferry-ping" * 4
        hdr = struct.pack("!BBHHH", 8, 0, 0, self.ident, self.seq)
        pkt = struct.pack("!BBHHH", 8, 0, _csum(hdr + payload), self.ident, self.seq) + payload
        self.sock.sendto(pkt, (self.dst, 0))
        return self.seq

    def recv(self, timeout):
        """Returns (seq, rtt seconds) of an echo reply from dst, or None."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                data, addr = self.sock.recvfrom(2048)
            except (socket.timeout, BlockingIOError):
                return None
            ihl = (data[0] & 0xf) * 4
            t, code, _, ident, seq = struct.unpack_from("!BBHHH", data, ihl)
            if addr[0] == self.dst and t == 0 and ident == self.ident:
                sent = struct.unpack_from("!d", data, ihl + 8)[0]
                return seq, time.monotonic() - sent
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)

    def ping(self, count, interval=0.01, timeout=1.0):
        """Sends count pings; returns the list of RTTs of those answered."""
        rtts = []
        for _ in range(count):
            seq = self.send()
            r = self.recv(timeout)
            while r and r[0] != seq:
                r = self.recv(timeout)
            if r:
                rtts.append(r[1])
            time.sleep(interval)
        return rtts

    def close(self):
        self.sock.close()


def udp_socket(port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST_IP, port))
    return s
