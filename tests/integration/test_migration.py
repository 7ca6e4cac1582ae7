"""Live migration between two ferry processes on this host over loopback, on
real KVM, with the test guest proving that memory and time survive."""
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from ferrylib import (FERRY, SAN_ENV, assert_continues, assert_downtime_within,
                      assert_round_stalls, assert_throttle_accounted, free_port, hb_line,
                      migrate, run_cli, wait_listening)


def source(vm_factory, memory=1024, cpus=2, cmdline="dirtier.mib=64"):
    vm = vm_factory(memory=memory, cpus=cpus, cmdline=cmdline)
    vm.wait_for(r"^VERIFY ok", timeout=30)
    vm.wait_api()
    return vm


def destination(vm_factory, *extra):
    port = free_port()
    uri = f"tcp:127.0.0.1:{port}"
    vm = vm_factory(incoming=uri, extra=list(extra))
    wait_listening(port)
    return vm, uri


def last_seq(vm):
    return vm.heartbeats()[-1][0]


def assert_runs_on(src, dst, verifies=1):
    """The guest continues on dst where it stopped on src, memory verifies."""
    pos = 0
    for _ in range(verifies):
        pos = dst.wait_for(r"^VERIFY ok", timeout=15, start=pos).end()
    dst.wait_for(hb_line(), timeout=15)
    assert_continues(src.console.refresh(), dst.console.refresh())


def assert_still_running(vm):
    seq = last_seq(vm)
    vm.wait_for(hb_line(seq + 2), timeout=10)
    assert vm.api("GET", "/v1/vm")[1]["state"] == "running"


def test_idle_1g_2vcpu(vm_factory):
    src = source(vm_factory)
    dst, uri = destination(vm_factory)
    rc, rep, err = migrate(src, uri)
    assert rc == 0, err
    assert rep["state"] == "completed"
    assert src.wait_exit(20) == 0
    assert_runs_on(src, dst, verifies=2)
    assert rep["params"]["downtime_limit_ms"] == 300
    assert_downtime_within(rep)
    assert rep["rounds"] and rep["bytes"] > 64 << 20
    # Zero pages are never sent as data: an idle 1 GiB guest moves ~its 64 MiB.
    assert rep["bytes"] < 200 << 20
    status, d = dst.api("GET", "/v1/migration")
    assert d["role"] == "destination" and d["state"] == "running"
    dst.type("stat\r")
    assert dst.wait_for(r"^STAT cpus=(\d+)").group(1) == "2"


def test_dirtier_20000_converges_within_default_limit(vm_factory):
    src = source(vm_factory, cmdline="dirtier.mib=128 dirtier.rate=20000")
    dst, uri = destination(vm_factory)
    rc, rep, err = migrate(src, uri)
    assert rc == 0, err
    assert_downtime_within(rep)
    assert all(r["dirty_rate_pps"] > 5000 for r in rep["rounds"][:1]), rep["rounds"]
    assert src.wait_exit(20) == 0
    assert_runs_on(src, dst)


# A guest that dirties 4000 pages/s, paced by guest time (so any host that can
# write that fast under dirty tracking gives the same rate), over a link capped
# at 8 MiB/s (2048 pages/s): every round re-dirties the whole 4 MiB working set,
# so no round can shrink until auto-converge slows the vCPUs down.
CAPPED_DIRTIER = "dirtier.mib=4 dirtier.rate=4000"
CAP_MIBS = "8"


def test_auto_converge_throttles_until_it_fits(vm_factory):
    src = source(vm_factory, memory=512, cmdline=CAPPED_DIRTIER)
    dst, uri = destination(vm_factory)
    rc, rep, err = migrate(src, uri, "--auto-converge", "--bandwidth", CAP_MIBS,
                           "--max-time", "100")
    assert rc == 0, err
    rounds = rep["rounds"]
    assert_round_stalls(rounds)
    assert rep["throttle_max_pct"] >= 20, "auto-converge never throttled"
    # Throttling starts at 20 % and steps up 10 % a round that still stalls.
    pcts = [r["throttle_pct"] for r in rounds]
    assert pcts == sorted(pcts) and pcts[-1] == rep["throttle_max_pct"], pcts
    assert_throttle_accounted(rep, [0, 1])
    assert_downtime_within(rep)
    assert src.wait_exit(20) == 0
    assert_runs_on(src, dst)


def test_slow_stop_is_undone_and_retried(vm_factory, monkeypatch):
    # The first pause takes 120 ms (as on a host whose CPUs are all busy):
    # with a 100 ms limit the rest cannot fit, so the source resumes the VM,
    # copies on and stops again later, within the limit.
    monkeypatch.setenv("FERRY_TEST_SLOW_STOP_MS", "120")
    src = source(vm_factory, cmdline="dirtier.mib=64 dirtier.rate=5000")
    dst, uri = destination(vm_factory)
    rc, rep, err = migrate(src, uri, "--downtime-ms", "100")
    assert rc == 0, err
    assert rep["stop_retries"] == 1, rep
    assert rep["stop_retry_ms"] >= 120
    assert_downtime_within(rep, 100)
    assert src.wait_exit(20) == 0
    assert_runs_on(src, dst)


def test_setup_failure_ends_the_migration(vm_factory, monkeypatch):
    # The source cannot allocate the migration's state (a test knob): the
    # migration must end as failed (it used to stay in setup, and `--wait`
    # hung), and the VM keeps running.
    monkeypatch.setenv("FERRY_TEST_FAIL_ALLOC", "1")
    src = source(vm_factory, memory=256, cmdline="dirtier.mib=16")
    monkeypatch.delenv("FERRY_TEST_FAIL_ALLOC")
    dst, uri = destination(vm_factory)
    rc, rep, err = migrate(src, uri, timeout=20)
    assert rc != 0
    assert rep["state"] == "failed" and "out of memory" in rep["error"], rep
    assert_still_running(src)
    src.wait_for(r"^VERIFY ok", timeout=10, start=src.mark())


def test_max_time_fail_keeps_source_running(vm_factory):
    src = source(vm_factory, cmdline="dirtier.mib=256 dirtier.rate=-1")
    dst, uri = destination(vm_factory)
    rc, rep, err = migrate(src, uri, "--max-time", "3", "--downtime-ms", "1")
    assert rc != 0
    assert rep["state"] == "failed" and "max-time" in rep["error"]
    assert dst.wait_exit(20) != 0
    assert "source ended the migration" in dst.stderr_text()
    assert_still_running(src)
    assert "VERIFY FAIL" not in src.console.refresh()


def test_max_time_force_switches_over(vm_factory):
    src = source(vm_factory, cmdline="dirtier.mib=128 dirtier.rate=-1")
    dst, uri = destination(vm_factory)
    rc, rep, err = migrate(src, uri, "--max-time", "2", "--on-timeout", "force",
                           "--downtime-ms", "1")
    assert rc == 0, err
    assert src.wait_exit(20) == 0
    assert_runs_on(src, dst)


def test_ten_back_and_forth(vm_factory):
    vm = source(vm_factory, memory=256, cmdline="dirtier.mib=32 dirtier.rate=5000")
    for i in range(10):
        dst, uri = destination(vm_factory)
        rc, rep, err = migrate(vm, uri)
        assert rc == 0, f"migration {i}: {err}"
        assert vm.wait_exit(20) == 0
        assert_runs_on(vm, dst)
        dst.wait_api()
        vm.close()
        vm = dst


def slow_migration(vm_factory):
    """A migration capped at 16 MiB/s of a 128 MiB working set: several seconds."""
    src = source(vm_factory, memory=512, cmdline="dirtier.mib=128 dirtier.rate=1000")
    dst, uri = destination(vm_factory)
    rc, rep, err = migrate(src, uri, "--bandwidth", "16", wait=False)
    assert rc == 0, err
    deadline = time.monotonic() + 10
    while src.api("GET", "/v1/migration")[1]["bytes"] < 4 << 20:
        assert time.monotonic() < deadline, "migration made no progress"
        time.sleep(0.1)
    return src, dst


def test_status_while_running(vm_factory):
    src, dst = slow_migration(vm_factory)
    r = run_cli("migrate-status", "--api-socket", src.sock)
    assert r.returncode == 0
    import json
    st = json.loads(r.stdout)
    assert st["state"] == "precopy" and st["role"] == "source" and st["bytes"] > 0
    for key in ("round", "pages_remaining", "dirty_rate_pps", "bandwidth_mibs",
                "expected_downtime_ms"):
        assert key in st
    d = dst.api("GET", "/v1/migration")[1]
    assert d["role"] == "destination" and d["state"] == "receiving" and d["bytes"] > 0
    assert dst.api("GET", "/v1/vm")[1]["state"] == "incoming"
    assert run_cli("migrate-cancel", "--api-socket", src.sock).returncode == 0


def test_cancel_keeps_source_running(vm_factory):
    src, dst = slow_migration(vm_factory)
    r = run_cli("migrate-cancel", "--api-socket", src.sock)
    assert r.returncode == 0, r.stderr
    st = src.api("GET", "/v1/migration")[1]
    assert st["state"] == "cancelled"
    assert dst.wait_exit(20) != 0
    assert "cancel" in dst.stderr_text()
    assert_still_running(src)
    # Nothing to cancel any more: a clear 409, not a crash.
    assert src.api("PUT", "/v1/migration/cancel")[0] == 409


def watch(src, uri, *opts):
    """`ferry migrate --wait` as a user runs it, stdout and stderr kept."""
    return subprocess.Popen([FERRY, "migrate", "--api-socket", src.sock, uri, "--wait", *opts],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **SAN_ENV})


def test_ctrl_c_on_wait_cancels(vm_factory):
    # Ctrl-C on `migrate --wait` cancels (as `virsh migrate` does), says so,
    # and returns once the VM runs on the source again.
    src = source(vm_factory, memory=512, cmdline="dirtier.mib=128 dirtier.rate=1000")
    dst, uri = destination(vm_factory)
    p = watch(src, uri, "--bandwidth", "16")
    deadline = time.monotonic() + 20
    while src.api("GET", "/v1/migration")[1].get("bytes", 0) < 4 << 20:
        assert time.monotonic() < deadline and p.poll() is None, "migration made no progress"
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "cancelling the migration" in err and "the VM runs on the source" in err, err
    assert out.startswith("cancelled in "), out
    assert src.api("GET", "/v1/migration")[1]["state"] == "cancelled"
    assert dst.wait_exit(20) != 0
    assert_still_running(src)
    src.wait_for(r"^VERIFY ok", timeout=15, start=src.mark())


def test_wait_progress_and_summary_without_a_terminal(vm_factory):
    # Not a terminal: a progress line a second on stderr; on stdout one
    # human line, not the JSON (that is --json).
    src = source(vm_factory, memory=512, cmdline="dirtier.mib=128 dirtier.rate=1000")
    dst, uri = destination(vm_factory)
    p = watch(src, uri, "--bandwidth", "32")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    lines = [l for l in err.splitlines() if " round " in l and "MiB sent" in l]
    assert lines and all("\r" not in l for l in lines), err
    assert re.match(r"completed in \d+ ms \(precopy\): downtime [\d.]+ ms \(limit 300 ms\), "
                    r"[\d.]+ MiB, \d+ rounds\n$", out), out
    assert src.wait_exit(20) == 0
    assert_runs_on(src, dst)


def test_second_migration_is_refused(vm_factory):
    src, dst = slow_migration(vm_factory)
    status, body = src.api("PUT", "/v1/migration", {"uri": "tcp:127.0.0.1:9"})
    assert status == 409 and "already running" in body["error"], body
    assert src.api("GET", "/v1/migration")[1]["state"] == "precopy"
    assert run_cli("migrate-cancel", "--api-socket", src.sock).returncode == 0
    assert_still_running(src)


def test_cancel_in_setup(vm_factory):
    # A "destination" that accepts and never answers holds the source in setup.
    src = source(vm_factory, memory=256, cmdline="dirtier.mib=16")
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(1)
        rc, rep, err = migrate(src, f"tcp:127.0.0.1:{mute.getsockname()[1]}", wait=False)
        assert rc == 0, err
        assert src.api("GET", "/v1/migration")[1]["state"] == "setup"
        assert run_cli("migrate-cancel", "--api-socket", src.sock).returncode == 0
        assert src.api("GET", "/v1/migration")[1]["state"] == "cancelled"
    assert_still_running(src)


def test_cancel_in_switchover_is_refused(vm_factory, monkeypatch):
    # The stop is made to last 3 s (a test knob): a cancel then is refused,
    # since the destination may already hold the state, and the migration
    # completes.
    monkeypatch.setenv("FERRY_TEST_SLOW_STOP_MS", "3000")
    src = source(vm_factory, memory=256, cmdline="dirtier.mib=16 dirtier.rate=1000")
    monkeypatch.delenv("FERRY_TEST_SLOW_STOP_MS")
    dst, uri = destination(vm_factory)
    rc, rep, err = migrate(src, uri, "--downtime-ms", "5000", wait=False)
    assert rc == 0, err
    deadline = time.monotonic() + 30
    while src.api("GET", "/v1/migration")[1]["state"] != "switchover":
        assert time.monotonic() < deadline, "never reached the switchover"
        time.sleep(0.05)
    status, body = src.api("PUT", "/v1/migration/cancel")
    assert status == 409 and "can no longer be cancelled" in body["error"], body
    assert src.wait_exit(30) == 0
    assert_runs_on(src, dst)


def test_cancel_hybrid_before_the_switch(vm_factory):
    src = source(vm_factory, memory=512, cmdline="dirtier.mib=128 dirtier.rate=1000")
    dst, uri = destination(vm_factory)
    rc, rep, err = migrate(src, uri, "--mode", "hybrid", "--bandwidth", "16", wait=False)
    assert rc == 0, err
    deadline = time.monotonic() + 20
    while src.api("GET", "/v1/migration")[1]["bytes"] < 4 << 20:
        assert time.monotonic() < deadline, "migration made no progress"
        time.sleep(0.1)
    assert src.api("GET", "/v1/migration")[1]["state"] == "precopy"
    assert run_cli("migrate-cancel", "--api-socket", src.sock).returncode == 0
    assert src.api("GET", "/v1/migration")[1]["state"] == "cancelled"
    assert dst.wait_exit(20) != 0
    assert_still_running(src)
    src.wait_for(r"^VERIFY ok", timeout=15, start=src.mark())


def test_cancel_on_the_destination(vm_factory):
    # The destination's operator gives the incoming migration up: it exits
    # saying so, and the source keeps the VM.
    src, dst = slow_migration(vm_factory)
    assert run_cli("migrate-cancel", "--api-socket", dst.sock).returncode == 0
    assert dst.wait_exit(20) != 0
    assert "cancelled on the destination" in dst.stderr_text()
    deadline = time.monotonic() + 40
    while src.api("GET", "/v1/migration")[1]["state"] != "failed":
        assert time.monotonic() < deadline, "the source did not notice"
        time.sleep(0.2)
    assert_still_running(src)
    src.wait_for(r"^VERIFY ok", timeout=15, start=src.mark())


def test_cancel_on_a_waiting_destination(vm_factory):
    dst, uri = destination(vm_factory)
    assert dst.api("GET", "/v1/migration")[1]["state"] == "waiting"
    assert dst.api("PUT", "/v1/migration/cancel")[0] == 204
    assert dst.wait_exit(20) != 0
    assert "cancelled on the destination" in dst.stderr_text()


def test_destination_killed(vm_factory):
    src, dst = slow_migration(vm_factory)
    dst.proc.kill()
    dst.wait_exit(10)
    deadline = time.monotonic() + 40
    while src.api("GET", "/v1/migration")[1]["state"] not in ("failed",):
        assert time.monotonic() < deadline, "source did not notice the dead destination"
        time.sleep(0.2)
    assert_still_running(src)
    # The source's memory is intact: a whole verifier pass after the failure.
    src.wait_for(r"^VERIFY ok", timeout=15, start=src.mark())
    assert "VERIFY FAIL" not in src.console.refresh()


def test_source_killed(vm_factory):
    src, dst = slow_migration(vm_factory)
    src.proc.kill()
    src.wait_exit(10)
    assert dst.wait_exit(40) not in (0, None)
    assert "source closed the connection" in dst.stderr_text()
    assert not os.path.exists(dst.sock), "destination left its API socket behind"


def test_mismatched_memory_size(vm_factory):
    src = source(vm_factory, memory=512)
    dst, uri = destination(vm_factory, "--memory", "256")
    rc, rep, err = migrate(src, uri)
    assert rc != 0
    assert "memory size mismatch" in rep["error"]
    assert dst.wait_exit(20) != 0
    assert "memory size mismatch" in dst.stderr_text()
    assert_still_running(src)


def test_garbage_on_the_port(vm_factory):
    dst, uri = destination(vm_factory)
    port = int(uri.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(os.urandom(4096))
        time.sleep(0.5)
    assert dst.wait_exit(20) not in (0, None)
    assert "bad magic" in dst.stderr_text()


def hello(proto_version):
    import xxhash
    fields = [b"FERRY\0VM", 1, 112, b"0.1.0".ljust(16, b"\0"), 256 << 20, 1, 0, 0, 0,
              proto_version, 0, bytes(32)]
    body = struct.pack("<8sII16sQIIQQII32s", *fields)
    return body + struct.pack("<Q", xxhash.xxh3_64(body).intdigest())


def test_destination_refuses_other_protocol_version(vm_factory):
    dst, uri = destination(vm_factory)
    port = int(uri.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(hello(99))
        answer = s.recv(4096)
    assert len(answer) >= 40 and struct.unpack_from("<I", answer)[0] == 16
    assert b"protocol version 99 is not supported" in answer
    assert dst.wait_exit(20) != 0
    assert "protocol version 99 is not supported" in dst.stderr_text()


def test_source_sees_peer_refusal(vm_factory):
    """A destination speaking another protocol version answers the handshake
    with an error: the source reports it and keeps running."""
    import xxhash
    src = source(vm_factory, memory=256)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def fake_destination():
        conn, _ = srv.accept()
        conn.recv(112)
        text = b"migration protocol version 1 is not supported (this ferry speaks version 9)\0"
        payload = struct.pack("<i", -71) + text
        head = struct.pack("<IIIIIIQ", 16, 0, 0, 9, 0, 0, len(payload))
        conn.sendall(head + struct.pack("<Q", xxhash.xxh3_64(head + payload).intdigest()) + payload)
        time.sleep(0.5)
        conn.close()

    t = threading.Thread(target=fake_destination)
    t.start()
    rc, rep, err = migrate(src, f"tcp:127.0.0.1:{port}")
    t.join()
    srv.close()
    assert rc != 0
    assert "speaks version 9" in rep["error"]
    assert_still_running(src)


def test_bad_migrate_requests(vm_factory):
    src = source(vm_factory, memory=256)
    assert migrate(src, "udp:1.2.3.4:5")[0] != 0
    r = run_cli("migrate", "--api-socket", src.sock, "tcp:127.0.0.1:1", "--downtime-ms", "x")
    assert r.returncode == 2
    status, body = src.api("PUT", "/v1/migration", {"uri": "tcp:127.0.0.1:1", "bogus": 1})
    assert status == 400
    rc, rep, err = migrate(src, f"tcp:127.0.0.1:{free_port()}")   # nobody listens
    assert rc != 0 and "connecting" in rep["error"]
    assert_still_running(src)


def test_paused_vm_stays_paused(vm_factory):
    src = source(vm_factory, memory=256, cmdline="dirtier.mib=32 dirtier.rate=2000")
    assert run_cli("pause", "--api-socket", src.sock).returncode == 0
    dst, uri = destination(vm_factory)
    rc, rep, err = migrate(src, uri)
    assert rc == 0, err
    assert src.wait_exit(20) == 0
    dst.wait_api()
    assert dst.api("GET", "/v1/vm")[1]["state"] == "paused"
    time.sleep(0.5)
    assert "HB" not in dst.console.refresh(), "a paused VM ran on the destination"
    assert run_cli("resume", "--api-socket", dst.sock).returncode == 0
    assert_runs_on(src, dst)
