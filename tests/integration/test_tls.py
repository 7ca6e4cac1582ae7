"""Mutual TLS on every migration connection, on real KVM: pre-copy with data
connections, post-copy through cuts and recoveries, and the peers refused (a
certificate of another CA, a name not authorised, a wrong host name, a
plain-text peer either way), each leaving the source running and a
destination that still waits."""
import os
import socket
import subprocess
import time

import pytest

from faultproxy import FaultProxy
from ferrylib import (FERRY, assert_continues, assert_recovered_on, free_port, migrate,
                      wait_listening)
from proxy import Proxy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """Two hosts of one CA, and a host of another CA."""
    base = tmp_path_factory.mktemp("certs")
    for ca, hosts in (("good", ["hosta", "hostb"]), ("rogue", ["hostx"])):
        subprocess.run([os.path.join(ROOT, "scripts", "certs.sh"), str(base / ca), *hosts],
                       check=True, capture_output=True)
    return {h: str(base / ca / h) for ca, hs in (("good", ["hosta", "hostb"]),
                                                 ("rogue", ["hostx"])) for h in hs}


def tls_destination(vm_factory, certs, host="hostb", *extra):
    port = free_port()
    dst = vm_factory(incoming=f"tcp:127.0.0.1:{port}",
                     extra=["--tls-dir", certs[host], *extra])
    wait_listening(port)
    return dst, port


def busy_source(vm_factory, memory=256, cmdline="dirtier.mib=32 dirtier.rate=2000"):
    src = vm_factory(memory=memory, cpus=2, cmdline=cmdline)
    src.wait_for(r"^VERIFY ok", timeout=30)
    src.wait_api()
    return src


def assert_moved(src, dst, rep):
    assert rep["state"] == "completed", rep
    assert rep["params"]["tls"] is True, rep["params"]
    assert src.wait_exit(30) == 0
    dst.wait_for(r"^VERIFY ok", timeout=30)
    assert_continues(src.console.refresh(), dst.console.refresh())


def assert_refused_and_still_waiting(src, dst, rep, err_text):
    assert rep["state"] == "failed", rep
    assert src.api("GET", "/v1/vm")[1]["state"] == "running"
    src.wait_for(r"^VERIFY ok", timeout=20, start=src.mark())
    assert dst.proc.poll() is None, dst.stderr_text()[-2000:]
    assert dst.api("GET", "/v1/migration")[1]["state"] == "waiting"
    deadline = time.monotonic() + 10
    while err_text not in dst.stderr_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert err_text in dst.stderr_text(), dst.stderr_text()[-2000:]


def test_precopy_with_data_connections_is_encrypted(vm_factory, certs):
    src = busy_source(vm_factory)
    dst, port = tls_destination(vm_factory, certs)
    assert "mutual TLS" in dst.stderr_text()
    rec = FaultProxy(port, None)       # keeps a copy of the main channel
    try:
        rc, rep, err = migrate(src, rec.uri, "--tls-dir", certs["hosta"], "--connections", "4",
                               "--tls-hostname", "hostb")
        assert rc == 0, err
        assert_moved(src, dst, rep)
        assert rep["params"]["connections"] == 4, rep["params"]
        data = bytes(rec.recorded)
        assert len(data) > 4096 and data[0] == 0x16, data[:16]   # a TLS handshake record
        assert b"FERRY\0VM" not in data and b"VERIFY" not in data
    finally:
        rec.close()


def test_postcopy_cut_and_recovered_over_tls(vm_factory, certs):
    src = busy_source(vm_factory, memory=1024, cmdline="dirtier.mib=256 dirtier.rate=-1")
    dst, port = tls_destination(vm_factory, certs)
    proxy = Proxy(port)
    try:
        rc, rep, err = migrate(src, proxy.uri, "--tls-dir", certs["hosta"], "--mode",
                               "postcopy", "--bandwidth", "40", wait=False)
        assert rc == 0, err
        wait_state(src, "postcopy")
        time.sleep(0.3)
        st = src.api("GET", "/v1/migration")[1]
        assert st["state"] == "postcopy" and st["postcopy"]["pages_remaining"] > 0, st
        proxy.cut()
        assert_recovered_on(src, dst)
    finally:
        proxy.close()


def wait_state(vm, state, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = vm.api("GET", "/v1/migration")[1]
        if st["state"] == state:
            return st
        time.sleep(0.02)
    raise AssertionError(f"never {state}: {st}")


@pytest.mark.parametrize("case", ["other-ca", "not-authorised", "wrong-hostname", "plain-source"])
def test_untrusted_peer_refused_then_trusted_one_moves(vm_factory, certs, case):
    src = busy_source(vm_factory)
    extra = ["--tls-authz", "hosta"] if case == "not-authorised" else []
    dst, port = tls_destination(vm_factory, certs, "hostb", *extra)
    uri = f"tcp:127.0.0.1:{port}"
    opts = {"other-ca": ["--tls-dir", certs["hostx"]],
            "not-authorised": ["--tls-dir", certs["hostb"]],
            "wrong-hostname": ["--tls-dir", certs["hosta"], "--tls-hostname", "hostz"],
            "plain-source": []}[case]
    rc, rep, err = migrate(src, uri, *opts, timeout=60)
    assert rc != 0, err
    if case == "wrong-hostname":
        assert "tls handshake" in rep["error"] and "name in the certificate" in rep["error"], \
            rep["error"]
    else:
        assert_refused_and_still_waiting(src, dst, rep, "refused a migration connection")
    rc, rep, err = migrate(src, uri, "--tls-dir", certs["hosta"])
    assert rc == 0, err
    assert_moved(src, dst, rep)


def test_plain_destination_refuses_tls_source(vm_factory, certs):
    src = busy_source(vm_factory)
    port = free_port()
    dst = vm_factory(incoming=f"tcp:127.0.0.1:{port}")
    wait_listening(port)
    assert "unauthenticated" in dst.stderr_text()
    rc, rep, err = migrate(src, f"tcp:127.0.0.1:{port}", "--tls-dir", certs["hosta"],
                           timeout=60)
    assert rc != 0 and rep["state"] == "failed", (err, rep)
    assert "tls handshake" in rep["error"], rep["error"]
    src.wait_for(r"^VERIFY ok", timeout=20, start=src.mark())


def test_bad_tls_input_changes_nothing(vm_factory, certs, tmp_path):
    src = busy_source(vm_factory)
    port = free_port()
    uri = f"tcp:127.0.0.1:{port}"
    rc, rep, err = migrate(src, uri, "--tls-dir", str(tmp_path), timeout=30)
    assert rc != 0 and "ca-cert.pem" in (err + str(rep)), (err, rep)
    st, body = src.api("PUT", "/v1/migration", {"uri": uri, "tls_hostname": "x"})
    assert st == 400 and "tls dir" in body["error"], body
    assert src.api("GET", "/v1/vm")[1]["state"] == "running"
    # a destination with a TLS dir that has no server certificate exits 2
    r = subprocess.run([FERRY,
                        "run", "--incoming", uri, "--tls-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "ca-cert.pem" in r.stderr, r.stderr


def test_unix_socket_with_tls(vm_factory, certs, tmp_path):
    """unix: carries every connection too (TLS over it checks the certificate
    chain, and the name given with --tls-hostname); the socket file goes when
    the destination is done."""
    src = busy_source(vm_factory)
    path = str(tmp_path / "mig.sock")
    dst = vm_factory(incoming=f"unix:{path}", extra=["--tls-dir", certs["hostb"]])
    deadline = time.monotonic() + 10
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    rc, rep, err = migrate(src, f"unix:{path}", "--tls-dir", certs["hosta"],
                           "--tls-hostname", "hostb", "--connections", "2")
    assert rc == 0, err
    assert_moved(src, dst, rep)
    assert rep["params"]["uri"] == f"unix:{path}"
    deadline = time.monotonic() + 10
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(path)


def test_inherited_listening_socket(vm_factory):
    """fd:N: the destination takes a socket its parent opened and listens on
    (how an agent hands a port over); a connected socket is refused."""
    src = busy_source(vm_factory)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    port = lsock.getsockname()[1]
    try:
        dst = vm_factory(incoming=f"fd:{lsock.fileno()}", pass_fds=(lsock.fileno(),))
        rc, rep, err = migrate(src, f"tcp:127.0.0.1:{port}", "--connections", "2")
        assert rc == 0, err
        assert rep["state"] == "completed", rep
        assert src.wait_exit(30) == 0
        dst.wait_for(r"^VERIFY ok", timeout=30)
    finally:
        lsock.close()
    r = subprocess.run([FERRY, "run", "--incoming", "fd:0"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "not a listening socket" in r.stderr, r.stderr
