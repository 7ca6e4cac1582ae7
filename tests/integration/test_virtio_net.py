"""virtio-net on a tap, in a network namespace of the test's own: the host
pings the test guest and streams UDP through its echo responder, across a
live migration (source and destination share the tap) and a snapshot/restore."""
import threading
import time

import pytest

from ferrylib import migrate, run_cli, start_destination
from netlib import GUEST_IP, NetNs, Pinger, udp_socket

MAC = "02:fe:00:00:00:01"
GUEST_CMDLINE = "net=1"


@pytest.fixture
def netns():
    ns = NetNs("ftap0")
    try:
        with ns.entered():
            yield ns
    finally:
        ns.close()


def net_vm(vm_factory, *extra, mac=MAC):
    opt = "tap=ftap0" + (f",mac={mac}" if mac else "")
    vm = vm_factory(memory=256, cpus=2, cmdline=GUEST_CMDLINE, extra=["--net", opt, *extra])
    m = vm.wait_for(r"^NET ready ([0-9a-f:]{17})", timeout=20)
    vm.wait_api()
    return vm, m.group(1)


def udp_echo(sock, n, timeout=1.0):
    """Sends n numbered datagrams one at a time; returns how many came back intact."""
    sock.settimeout(timeout)
    ok = 0
    for i in range(n):
        payload = b"ferry-udp %06d " % i + bytes(range(64))
        sock.sendto(payload, (GUEST_IP, 7))
        try:
            data, addr = sock.recvfrom(2048)
        except OSError:
            continue
        ok += data == payload and addr == (GUEST_IP, 7)
    return ok


def net_devices(vm):
    status, body = vm.api("GET", "/v1/vm")
    assert status == 200
    return [d for d in body.get("devices", []) if "mac" in d]


def assert_answers(vm_ok_msg, pings=20, datagrams=100):
    p = Pinger()
    try:
        rtts = p.ping(pings, interval=0.005)
    finally:
        p.close()
    s = udp_socket()
    try:
        echoed = udp_echo(s, datagrams)
    finally:
        s.close()
    print(f"{vm_ok_msg}: {len(rtts)}/{pings} pings answered"
          f" (median rtt {sorted(rtts)[len(rtts) // 2] * 1e3 if rtts else 0:.3f} ms),"
          f" {echoed}/{datagrams} datagrams echoed")
    assert len(rtts) == pings and echoed == datagrams
    return rtts


def test_ping_and_udp_echo(netns, vm_factory):
    vm, mac = net_vm(vm_factory)
    assert mac == MAC
    assert_answers("ferry")
    # Rate: a burst of datagrams, echoes counted as they come back.
    s = udp_socket()
    s.settimeout(1.0)
    n, got, t0 = 2000, 0, time.monotonic()
    for i in range(n):
        s.sendto(b"r%05d" % i, (GUEST_IP, 7))
        if i % 16 == 15:
            while got < i - 32:
                try:
                    s.recvfrom(2048)
                    got += 1
                except OSError:
                    break
    try:
        while got < n:
            s.recvfrom(2048)
            got += 1
    except OSError:
        pass
    dt = time.monotonic() - t0
    s.close()
    print(f"UDP echo burst: {got}/{n} in {dt:.3f} s = {got / dt:.0f} datagrams/s")
    assert got >= n * 0.95
    devs = net_devices(vm)
    assert devs and devs[0]["mac"] == MAC and devs[0]["rx_packets"] >= 2000
    # Paused, the VM leaves the tap (the host drops and counts); resumed, it answers.
    assert vm.api("PUT", "/v1/vm/pause")[0] in (200, 204)
    p = Pinger()
    try:
        assert p.ping(3, timeout=0.2) == []
    finally:
        p.close()
    assert vm.api("PUT", "/v1/vm/resume")[0] in (200, 204)
    assert_answers("after pause/resume", pings=5, datagrams=20)
    assert net_devices(vm)[0]["switchover_dropped"] >= 3


class Stream:
    """A UDP datagram every 2 ms and a ping every 20 ms, with the replies
    recorded by sequence number and time."""

    def __init__(self):
        self.udp = udp_socket()
        self.udp.settimeout(0.2)
        self.pinger = Pinger()
        self.sent, self.echoed, self.corrupt = {}, {}, 0
        self.pings_sent, self.pings_back = {}, {}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self._send, self._recv_udp, self._ping, self._recv_ping)]

    def start(self):
        for t in self.threads:
            t.start()

    def _send(self):
        i = 0
        while not self.stop.is_set():
            self.sent[i] = time.monotonic()
            self.udp.sendto(b"stream %08d" % i, (GUEST_IP, 7))
            i += 1
            time.sleep(0.002)

    def _recv_udp(self):
        while not self.stop.is_set() or len(self.echoed) < len(self.sent):
            try:
                data, _ = self.udp.recvfrom(2048)
            except OSError:
                if self.stop.is_set():
                    return
                continue
            # A payload that comes back changed (a received page the migration
            # missed, say) is corrupt, not merely late.
            parts = data.split()
            if len(parts) == 2 and parts[0] == b"stream" and data == b"stream %08d" % int(parts[1]):
                self.echoed[int(parts[1])] = time.monotonic()
            else:
                self.corrupt += 1

    def _ping(self):
        while not self.stop.is_set():
            seq = self.pinger.send()
            self.pings_sent[seq] = time.monotonic()
            time.sleep(0.02)

    def _recv_ping(self):
        while not self.stop.is_set():
            r = self.pinger.recv(0.2)
            if r:
                self.pings_back[r[0]] = time.monotonic()

    def finish(self):
        time.sleep(0.3)          # last replies
        self.stop.set()
        for t in self.threads:
            t.join(5)
        self.udp.close()
        self.pinger.close()


@pytest.mark.parametrize("mode", ["precopy", "postcopy"])
def test_migration_keeps_network(netns, vm_factory, mode):
    src, mac = net_vm(vm_factory)
    # No MAC on the destination's command line: it must take the source's.
    dst, uri = start_destination(vm_factory, extra=["--net", "tap=ftap0"])
    assert_answers("before migration", pings=5, datagrams=20)

    st = Stream()
    st.start()
    time.sleep(0.5)
    rc, rep, err = migrate(src, uri, "--mode", mode)
    assert rc == 0, err
    assert src.wait_exit(20) == 0
    gone = time.monotonic()           # from here only the destination can answer
    time.sleep(1.0)
    st.finish()

    lost = [i for i in st.sent if i not in st.echoed]
    lost_pings = [s for s in st.pings_sent if s not in st.pings_back]
    after = [i for i, t in st.sent.items() if t > gone]
    answered_after = [i for i in after if i in st.echoed]
    sw = [d["switchover_dropped"] for d in net_devices(dst)]
    status, drep = dst.api("GET", "/v1/migration")
    assert drep["net_switchover_dropped"] == sum(sw)
    print(f"{mode} migration: downtime {rep['downtime']['total_ms']} ms;"
          f" UDP {len(st.sent)} sent, {len(lost)} lost"
          f" ({100.0 * len(lost) / len(st.sent):.2f} %);"
          f" pings {len(st.pings_sent)} sent, {len(lost_pings)} lost;"
          f" host drops at switchover {sw}")
    assert st.corrupt == 0
    assert after and len(answered_after) >= 0.95 * len(after), "destination does not answer"
    # Losses stay within the switchover: under 5 %, or what the downtime explains
    # (a datagram every 2 ms, a ping every 20 ms) when a loaded host stretches it.
    downtime = rep["downtime"]["total_ms"]
    assert len(lost) <= max(0.05 * len(st.sent), downtime / 2 + 10)
    assert len(lost_pings) <= max(2, 0.05 * len(st.pings_sent), downtime / 20 + 2)
    # Every loss is a packet the host or the source dropped at the switchover, and counted.
    assert len(lost) + len(lost_pings) <= sum(sw)
    devs = net_devices(dst)
    assert devs and devs[0]["mac"] == mac == MAC
    assert_answers("after migration", pings=5, datagrams=20)


def test_failed_migration_keeps_network_on_source(netns, vm_factory):
    """The destination has no net device: it refuses the state after the
    source paused (and left the tap); the source resumes, joins the tap again
    and answers."""
    src, mac = net_vm(vm_factory)
    dst, uri = start_destination(vm_factory)
    rc, rep, err = migrate(src, uri)
    assert rc != 0
    dst.wait_exit(10)
    assert "section pci/1" in dst.stderr_text()
    assert rep["downtime"]["pause_ms"] > 0      # the source did stop and leave the tap
    assert src.api("GET", "/v1/vm")[1]["state"] == "running"
    assert_answers("source after a failed migration", pings=5, datagrams=20)


def test_snapshot_restore_keeps_network_and_disk(netns, vm_factory, tmp_path):
    """Both devices: the net responder answers and the disk loop goes on."""
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(8 << 20)
    vm = vm_factory(memory=256, cpus=2, cmdline="net=1 blktest=1 blk.loop=1 blk.mib=1",
                    extra=["--net", f"tap=ftap0,mac={MAC}", "--disk", f"path={disk}"])
    vm.wait_for(r"^NET ready", timeout=20)
    vm.wait_for(r"^BLK ok 0", timeout=20)
    vm.wait_api()
    assert_answers("before snapshot", pings=5, datagrams=20)
    snap = tmp_path / "net.snap"
    r = run_cli("snapshot", "--api-socket", vm.sock, str(snap), timeout=60)
    assert r.returncode == 0, r.stderr
    passes = [int(g) for g in vm.console.lines(r"^BLKW (\d+) ok")]
    vm.close()
    new = vm_factory(kernel=None, restore=(str(snap), ["--net", "tap=ftap0",
                                                       "--disk", f"path={disk}"]))
    new.wait_api()
    assert_answers("after restore", pings=5, datagrams=20)
    assert net_devices(new)[0]["mac"] == MAC
    last = max(passes, default=0)
    new.wait_for(rf"^BLKW {last + 2} ok", timeout=20)
    assert "FAIL" not in new.console.refresh()
