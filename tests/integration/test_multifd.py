"""The parallel transfer engine on real KVM: data connections, compression,
delta encoding, their combination, and the capability handshake. Every
migration must verify the guest's memory on the destination and keep its
heartbeat going; the report's counters must tell what each technique did."""
import pytest

from ferrylib import (assert_continues, assert_round_stalls, assert_throttle_accounted, free_port,
                      hb_line, migrate, wait_listening)

DIRTIER = "dirtier.mib=64 dirtier.rate=20000"
# Delta and round counts need a second round whatever the host's speed: at
# 100 MiB/s the first round of 64 MiB lasts over half a second, in which the
# guest's 20000 pages/s (78 MiB/s, paced) dirty more than the stop can carry.
CAP = ["--bandwidth", "100"]


def source(vm_factory, cmdline=DIRTIER, memory=256, cpus=2):
    vm = vm_factory(memory=memory, cpus=cpus, cmdline=cmdline)
    vm.wait_for(r"^VERIFY ok", timeout=30)
    vm.wait_api()
    return vm


def destination(vm_factory, monkeypatch=None, disable=None):
    port = free_port()
    uri = f"tcp:127.0.0.1:{port}"
    if disable:
        monkeypatch.setenv("FERRY_TEST_INCOMING_DISABLE", disable)
    vm = vm_factory(incoming=uri)
    if disable:
        monkeypatch.delenv("FERRY_TEST_INCOMING_DISABLE")
    wait_listening(port)
    return vm, uri


def migrate_ok(vm_factory, *opts, cmdline=DIRTIER):
    src = source(vm_factory, cmdline=cmdline)
    dst, uri = destination(vm_factory)
    rc, rep, err = migrate(src, uri, *opts)
    assert rc == 0, err
    assert rep["state"] == "completed"
    assert src.wait_exit(20) == 0
    dst.wait_for(r"^VERIFY ok", timeout=15)
    dst.wait_for(hb_line(), timeout=15)
    assert_continues(src.console.refresh(), dst.console.refresh())
    status, drep = dst.api("GET", "/v1/migration")
    assert status == 200 and drep["state"] == "running"
    return rep, drep


def check_counts(rep, drep, conns):
    t, dt = rep["transfer"], drep["transfer"]
    assert t["connections"] == conns == dt["connections"]
    assert len(t["sender_cpu_ms"]) == conns and len(dt["applier_cpu_ms"]) == conns
    assert all(ms > 0 for ms in t["sender_cpu_ms"] + dt["applier_cpu_ms"]), (t, dt)
    # what left is what arrived
    assert t["bytes_wire"] == dt["bytes_wire"] > 0
    assert t["delta_pages"] == dt["delta_pages"]
    assert t["pages_data"] == dt["pages_data"]
    # a mostly idle 256 MiB guest: most touched pages are zero, never sent as data
    assert t["zero_pages"] > 0 and t["zero_bytes_saved"] == t["zero_pages"] * 4096
    assert t["bytes_raw"] >= (t["pages_data"] + t["delta_pages"]) * 4096
    assert rep["bytes"] >= t["bytes_wire"]


def test_four_connections(vm_factory):
    rep, drep = migrate_ok(vm_factory, "--connections", "4", *CAP)
    check_counts(rep, drep, 4)
    assert rep["params"]["connections"] == 4 and rep["params"]["compress"] == "none"
    assert rep["transfer"]["compress_bytes_in"] == 0
    assert len(rep["rounds"]) >= 2


@pytest.mark.parametrize("algo", ["lz4", "zstd"])
def test_compression(vm_factory, algo):
    rep, drep = migrate_ok(vm_factory, "--connections", "2", "--compress", algo)
    check_counts(rep, drep, 2)
    t = rep["transfer"]
    assert t["compress_bytes_in"] > 0 and t["compress_bytes_out"] < t["compress_bytes_in"]
    assert t["bytes_wire"] < t["bytes_raw"] - t["zero_bytes_saved"]


def test_auto_compression_probes_and_declines(vm_factory):
    """auto at a slow link: it measures (compresses a probe batch now and
    then) and finds the test guest's pages hardly compress (ratio > 0.9, the
    dirtier writes hash-like words), so it sends most batches raw. The
    decision for compressible data is unit-tested (test_xfer.c)."""
    rep, drep = migrate_ok(vm_factory, "--compress", "auto", "--bandwidth", "50",
                           cmdline="dirtier.mib=64 dirtier.rate=5000")
    t = rep["transfer"]
    assert rep["params"]["compress"] == "auto"
    assert t["compress_bytes_in"] > 0
    assert t["compress_bytes_out"] > 0.85 * t["compress_bytes_in"], t
    assert t["compress_bytes_in"] < 0.5 * (t["bytes_raw"] - t["zero_bytes_saved"]), t


def test_delta(vm_factory):
    rep, drep = migrate_ok(vm_factory, "--connections", "2", "--delta", *CAP)
    check_counts(rep, drep, 2)
    t = rep["transfer"]
    assert rep["params"]["delta_cache_mib"] == 64
    assert t["delta_pages"] > 0 and t["delta_bytes_saved"] > 0
    assert t["delta_cache_hits"] > 0 and t["delta_cache_misses"] > 0


def test_everything_combined(vm_factory):
    rep, drep = migrate_ok(vm_factory, "--connections", "3", "--compress", "zstd",
                           "--delta-cache", "96", *CAP, "--auto-converge")
    check_counts(rep, drep, 3)
    t = rep["transfer"]
    assert t["delta_pages"] > 0 and t["compress_bytes_out"] < t["compress_bytes_in"]


def test_main_channel_only_still_works(vm_factory):
    rep, drep = migrate_ok(vm_factory, "--connections", "0")
    assert rep["transfer"]["connections"] == 0 and rep["transfer"]["bytes_wire"] == 0


@pytest.mark.parametrize("disable,opts,message", [
    ("zstd", ["--compress", "zstd"], "destination does not support zstd compression"),
    ("delta", ["--delta"], "destination does not support delta encoding"),
    ("connections", ["--connections", "2"],
     "destination does not support parallel connections (asked for 2)"),
])
def test_destination_refuses_unsupported(vm_factory, monkeypatch, disable, opts, message):
    src = source(vm_factory, cmdline="")
    dst, uri = destination(vm_factory, monkeypatch, disable)
    rc, rep, err = migrate(src, uri, *opts)
    assert rc != 0
    assert message in rep["error"], rep
    assert rep["state"] == "failed"
    assert dst.wait_exit(10) != 0
    assert message in dst.stderr_text()
    seq = src.heartbeats()[-1][0]
    src.wait_for(hb_line(seq + 2), timeout=10)
    assert src.api("GET", "/v1/vm")[1]["state"] == "running"


def test_bad_transfer_options(vm_factory):
    src = source(vm_factory, cmdline="")
    for body, text in [({"connections": 17}, "connections must be"),
                       ({"compress": "gzip"}, "compress must be"),
                       ({"connections": 0, "compress": "lz4"}, "need connections"),
                       ({"dirty_track": "rings"}, "dirty_track must be")]:
        status, r = src.api("PUT", "/v1/migration", {"uri": "tcp:127.0.0.1:1", **body})
        assert status == 400 and text in r["error"], (body, r)


def ring_source(vm_factory, extra=("--dirty-ring",)):
    # 4000 pages/s on vCPU 1 alone, paced: over an 8 MiB/s (2048 pages/s)
    # link every round re-dirties the whole 4 MiB, whatever the host's speed.
    src = vm_factory(memory=512, cpus=2, extra=list(extra),
                     cmdline="dirtier.mib=4 dirtier.rate=4000 dirtier.cpus=1")
    src.wait_for(r"^VERIFY ok", timeout=30)
    src.wait_api()
    return src


def test_dirty_ring_throttles_only_the_dirtying_vcpu(vm_factory):
    """The dirtier runs on vCPU 1 only, faster than the capped link can carry:
    the migration cannot converge without auto-converge. The dirty ring tells
    which vCPU dirties: only vCPU 1 is slowed down (the VMM accounts each
    vCPU's throttle sleep), and vCPU 0 prints its heartbeat all along."""
    src = ring_source(vm_factory)
    dst, uri = destination(vm_factory)
    t0 = src.heartbeats()[-1][1]
    rc, rep, err = migrate(src, uri, "--auto-converge", "--downtime-ms", "10",
                           "--bandwidth", "8", "--max-time", "60")
    assert rc == 0, err
    assert src.wait_exit(20) == 0
    dst.wait_for(r"^VERIFY ok", timeout=15)
    dst.wait_for(hb_line(), timeout=15)
    assert_continues(src.console.refresh(), dst.console.refresh())
    assert rep["params"]["dirty_track"] == "ring" and rep["transfer"]["dirty_track"] == "ring"
    rounds = rep["rounds"]
    assert_round_stalls(rounds)
    assert rep["throttle_max_pct"] >= 20, rounds
    assert rep["throttled_vcpus"] == [1]
    assert all(len(r["vcpu_dirty_pps"]) == 2 for r in rounds)
    assert rounds[0]["vcpu_dirty_pps"][1] > 5 * max(1, rounds[0]["vcpu_dirty_pps"][0])
    # vCPU 0 never slept; vCPU 1 slept each round's throttle share of it.
    assert rep["vcpu_throttled_ms"][0] == 0, rep["vcpu_throttled_ms"]
    assert_throttle_accounted(rep, [1])
    # vCPU 0 kept its heartbeat (every 100 ms of guest time) through the
    # migration; a loaded host delays some, so half of them is the bound.
    hbs = [h for h in src.heartbeats() if h[1] > t0]
    assert len(hbs) >= 0.5 * rep["total_ms"] / 100 - 1, (len(hbs), rep["total_ms"])


def test_dirty_track_needs_the_ring(vm_factory):
    src = source(vm_factory, cmdline="")
    status, r = src.api("PUT", "/v1/migration", {"uri": "tcp:127.0.0.1:1",
                                                 "dirty_track": "ring"})
    assert status == 400 and "--dirty-ring" in r["error"]
