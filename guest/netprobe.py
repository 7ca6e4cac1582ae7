#!/usr/bin/env python3
"""Drives the test guest's network responder from the host side (run it inside the
network namespace that holds the tap: `ip netns exec NS guest/netprobe.py ...`).

    netprobe.py IP ping COUNT INTERVAL_S
    netprobe.py IP udp PORT PAYLOAD_BYTES SECONDS WINDOW

Prints one JSON object. ping: RTTs in microseconds of the replies (raw ICMP socket, so
root is needed; the payload must come back unchanged). udp: datagrams echoed per second
and payload MB/s, keeping WINDOW datagrams outstanding; every echo is checked against
what was sent.
"""
import json
import os
import select
import socket
import struct
import sys
import time


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def ping(ip, count, interval):
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xffff
    rtts, lost, bad = [], 0, 0
    for seq in range(count):
        payload = struct.pack("!d", time.time()) + bytes(range(48))
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        pkt = struct.pack("!BBHHH", 8, 0, csum(hdr + payload), ident, seq) + payload
        t0 = time.perf_counter()
        sock.sendto(pkt, (ip, 0))
        got = False
        while not got:
            left = 1.0 - (time.perf_counter() - t0)
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                break
            data, _ = sock.recvfrom(2048)
            icmp = data[(data[0] & 15) * 4:]
            typ, _, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
            if typ == 0 and rid == ident and rseq == seq:
                got = True
                rtts.append((time.perf_counter() - t0) * 1e6)
                bad += icmp[8:] != payload or csum(icmp) != 0
        lost += not got
        time.sleep(max(0.0, interval - (time.perf_counter() - t0)))
    return {"sent": count, "received": len(rtts), "lost": lost, "bad": bad,
            "rtt_us": [round(r, 1) for r in rtts]}


def udp(ip, port, size, secs, window):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.connect((ip, port))
    sock.setblocking(False)
    fill = bytes((i * 7) & 0xff for i in range(size))
    seq = sent = recv = bad = 0
    outstanding = 0
    t0 = time.perf_counter()
    last = t0
    while True:
        now = time.perf_counter()
        if now - t0 >= secs:
            break
        while outstanding < window:
            sock.send(struct.pack("!Q", seq) + fill[8:])
            seq += 1
            sent += 1
            outstanding += 1
        if not select.select([sock], [], [], 0.05)[0]:
            if time.perf_counter() - last > 0.2:
                outstanding = 0         # lost: refill the window
            continue
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            recv += 1
            outstanding = max(0, outstanding - 1)
            bad += len(data) != size or data[8:] != fill[8:]
            last = time.perf_counter()
    elapsed = time.perf_counter() - t0
    rate = recv
    late = time.perf_counter() + 0.3           # echoes still in flight are not lost
    while recv < sent and select.select([sock], [], [], max(0.0, late - time.perf_counter()))[0]:
        data = sock.recv(65536)
        recv += 1
        bad += len(data) != size or data[8:] != fill[8:]
    return {"size": size, "window": window, "secs": round(elapsed, 3), "sent": sent,
            "received": recv, "bad": bad, "pps": round(rate / elapsed),
            "MBps": round(rate * size / elapsed / 1e6, 2)}


def main():
    ip, mode = sys.argv[1], sys.argv[2]
    if mode == "ping":
        out = ping(ip, int(sys.argv[3]), float(sys.argv[4]))
    else:
        out = udp(ip, int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
