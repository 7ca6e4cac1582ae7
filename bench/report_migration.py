"""The live-migration section of docs/BENCHMARKS.md, from a bench_migration.py result.

bench/report.py calls render(result, path=..., suite=...) (result: the dict that
bench/bench_migration.py writes, on its own or inside a `make bench` suite file).
Everything here is computed from that result: the tables, and the notes, whose wording
follows the figures (which system is ahead, by how much) while the explanations are
fixed text that says why.
"""
import os
import statistics
import subprocess

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
PLOTS_REL = "../bench/plots"            # from docs/
SYSTEMS = ("ferry", "qemu")
NAMES = {"ferry": "ferry", "qemu": "QEMU"}

# (key, label, unit). Units: ms, MiB (bytes in), MiBk (KiB in), us, n, pct.
ROWS = (
    ("downtime_ms", "downtime, as reported (ms)", "ms"),
    ("gap_ms", "guest-visible gap (ms)", "ms"),
    ("gap_switchover_ms", "gap: longest silence at the switchover (ms)", "ms"),
    ("gap_before_switchover_ms", "gap: longest silence during the pre-copy rounds (ms)", "ms"),
    ("baseline_gap_ms", "gap before migrating, host noise (ms)", "ms"),
    ("total_ms", "total time, as reported (ms)", "ms"),
    ("wall_ms", "total time, host clock (ms)", "ms"),
    ("bytes", "bytes sent (MiB)", "MiB"),
    ("rounds", "rounds (ferry: pre-copy rounds; QEMU: dirty-bitmap syncs)", "n"),
    ("src_rss_peak_kib", "source peak RSS (MiB)", "MiBk"),
    ("dst_rss_peak_kib", "destination peak RSS (MiB)", "MiBk"),
    ("throttle_max_pct", "highest vCPU throttle (%)", "pct"),
    ("guest_dirty_pps", "guest's writes before migrating (pages/s, its own clock)", "n"),
    ("postcopy_ms", "post-copy phase (ms)", "ms"),
    ("remote_faults", "post-copy page requests", "n"),
    ("fault_p50_us", "fault latency p50 (µs)", "us"),
    ("fault_p99_us", "fault latency p99 (µs)", "us"),
    ("fault_max_us", "fault latency max (µs)", "us"),
    ("vcpu_blocked_ms", "fault wait, sum over faults (ms)", "ms"),
    ("qemu_vcpu_blocktime_sum_ms", "QEMU postcopy-vcpu-blocktime, sum (ms)", "ms"),
    ("host_busy_cpus_before", "host busy before the run (CPUs, others' load)", "cpus"),
)
OPTIONAL = {"throttle_max_pct", "guest_dirty_pps", "gap_switchover_ms",
            "gap_before_switchover_ms", "postcopy_ms", "remote_faults", "fault_p50_us",
            "fault_p99_us", "fault_max_us", "vcpu_blocked_ms", "qemu_vcpu_blocktime_sum_ms"}
NO_RATIO = {"host_busy_cpus_before", "guest_dirty_pps", "baseline_gap_ms",
            "qemu_vcpu_blocktime_sum_ms", "throttle_max_pct"}


# -- numbers --------------------------------------------------------------------------------
def fmt(v, unit):
    if v is None:
        return "–"
    if unit == "MiB":
        v = v / 2**20
    elif unit == "MiBk":
        v = v / 1024
    if unit in ("us", "n") and float(v).is_integer():
        return f"{v:.0f}"
    if unit == "cpus":
        return f"{v:.2f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


# What a migration achieved: only from runs that converged (a cancelled run's
# "gap" is the longest silence until the cancel, not a switchover's).
OUTCOME = {"downtime_ms", "gap_ms", "gap_switchover_ms", "total_ms", "wall_ms", "bytes",
           "rounds"}


def stats(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None
            and (key not in OUTCOME or r.get("converged"))]
    if not vals:
        return None
    return {"n": len(vals), "median": statistics.median(vals), "min": min(vals),
            "max": max(vals)}


def cell(st, unit):
    if not st:
        return "–"
    med, lo, hi = (fmt(st[k], unit) for k in ("median", "min", "max"))
    return med if st["n"] == 1 or lo == hi else f"{med} ({lo}–{hi})"


def ratio(a, b):
    if not a or not b or not b["median"] or a["median"] is None:
        return None
    return a["median"] / b["median"]


def rtxt(r):
    return "–" if r is None else f"{r:.2f}"


def med(res, name, system, key):
    st = stats(runs_of(res, name, system), key)
    return st["median"] if st else None


def runs_of(res, name, system):
    return ((res.get("samples") or {}).get(name) or {}).get(system) or []


def count(runs, key):
    return sum(bool(r.get(key)) for r in runs)


def times(a, b):
    """'2.3× less' style comparison of two medians (a = ferry, b = QEMU)."""
    if a is None or b is None or a <= 0 or b <= 0:
        return None
    return b / a if a < b else a / b


# -- tables -----------------------------------------------------------------------------------
def overview(res, names):
    head = ["scenario", "converged ferry / QEMU"]
    for label in ("downtime (ms)", "guest-visible gap (ms)", "total time (ms)", "MiB sent"):
        head += [f"{label} ferry", "QEMU", "ferry / QEMU"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in names:
        f, q = runs_of(res, n, "ferry"), runs_of(res, n, "qemu")
        row = [f"[{n}](#{anchor(n)})", f"{count(f, 'converged')}/{len(f)} / "
                                       f"{count(q, 'converged')}/{len(q)}"]
        for key, unit in (("downtime_ms", "ms"), ("gap_ms", "ms"), ("total_ms", "ms"),
                          ("bytes", "MiB")):
            a, b = stats(f, key), stats(q, key)
            row += [fmt(a and a["median"], unit), fmt(b and b["median"], unit),
                    rtxt(ratio(a, b))]
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out)


def anchor(name):
    return "scenario-" + name


def scenario_table(res, name):
    f, q = runs_of(res, name, "ferry"), runs_of(res, name, "qemu")
    out = ["| | ferry | QEMU | ferry / QEMU |", "|---|---|---|---|"]
    for key, label, unit in ROWS:
        a, b = stats(f, key), stats(q, key)
        if key in OPTIONAL and not (a or b):
            continue
        if key in ("throttle_max_pct", "guest_dirty_pps") and \
                not ((a and a["max"]) or (b and b["max"])):
            continue
        out.append(f"| {label} | {cell(a, unit)} | {cell(b, unit)} | "
                   f"{'' if key in NO_RATIO else rtxt(ratio(a, b))} |")
    out.append(f"| converged | {count(f, 'converged')}/{len(f)} | "
               f"{count(q, 'converged')}/{len(q)} | |")
    out.append(f"| destination `VERIFY ok` twice, no problem lines | "
               f"{count(f, 'verify_ok')}/{len(f)} | {count(q, 'verify_ok')}/{len(q)} | |")
    return "\n".join(out)


def representative(runs):
    ok = sorted((r for r in runs if r.get("converged") and r.get("timeline")),
                key=lambda r: r.get("total_ms") or 0)
    return ok[(len(ok) - 1) // 2] if ok else None


def timeline_table(res, name):
    out = []
    for s in SYSTEMS:
        run = representative(runs_of(res, name, s))
        if not run:
            continue
        cells = [f"{r['round']}: {fmt(r['t_end_ms'], 'ms')} ms, "
                 f"{(r['bytes'] or 0) / 2**20:.0f} MiB, {r.get('dirty_pages')} left"
                 for r in run["timeline"]]
        out.append(f"- {NAMES[s]} (run {run.get('repeat', 0) + 1}, total "
                   f"{fmt(run.get('total_ms'), 'ms')} ms, downtime "
                   f"{fmt(run.get('downtime_ms'), 'ms')} ms): " + "; ".join(cells))
    return "\n".join(out)


def measured_after(res, commit):
    """True if the ferry measured in `res` contains `commit` (git ancestry), False if it
    does not, None if that cannot be told (no git, unknown commit)."""
    mine = (res.get("machine") or {}).get("ferry_commit")
    if not mine:
        return None
    try:
        r = subprocess.run(["git", "merge-base", "--is-ancestor", commit, mine], cwd=ROOT,
                           capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {0: True, 1: False}.get(r.returncode)


# The post-copy fix (bounded page takes; stale copies dropped before the pause).
PC_FIX = "9e78c25"
# Round 1 clears the dirty log in 64 MiB pieces (no multi-ms MMU-lock stall).
CLEAR_FIX = "1b4d1f1"


# -- notes ------------------------------------------------------------------------------------
def scen_limit(res, name):
    return ((res.get("config") or {}).get("scenarios") or {}).get(name, {}).get("downtime_ms")


def listing(xs):
    return ", ".join(f"`{x}`" for x in xs) if xs else "none"


def ferry_late_rate(res, name):
    """Median over runs of the dirty rate (pages/s, from ferry's report) of ferry's last
    pre-copy round, when it had more than one (the first round's rate is capped by the
    working set: everything is dirty by its end)."""
    rates = [r["report"]["rounds"][-1].get("dirty_rate_pps") for r in runs_of(res, name, "ferry")
             if len((r.get("report") or {}).get("rounds") or []) > 1]
    rates = [x for x in rates if x is not None]
    return statistics.median(rates) if rates else None


def tls_note(res, names):
    """What mutual TLS costs each system (TLS / plain total time), and how the
    two compare with TLS on."""
    pairs = [(x, x[:-4]) for x in names if x.endswith("-tls") and x[:-4] in names]
    ok = [(t, p) for t, p in pairs if med(res, t, "ferry", "total_ms")
          and med(res, p, "ferry", "total_ms")]
    if not ok:
        return None

    def cost(s_, t, p):
        a, b = med(res, t, s_, "total_ms"), med(res, p, s_, "total_ms")
        return f"{a / b:.2f}" if a and b else "never converged"
    s = ("- **What mutual TLS costs** (TLS 1.3, AES-128-GCM on ferry, GnuTLS's default "
         "on QEMU; user-space encryption on both: this kernel has no kernel TLS). Total time "
         "with TLS over without, ferry / QEMU: "
         + "; ".join(f"`{p}` {cost('ferry', t, p)} / {cost('qemu', t, p)}"
                     for t, p in ok) + ".")
    vs = [(t, med(res, t, "ferry", k), med(res, t, "qemu", k), k)
          for t, _ in ok for k in ("total_ms", "gap_ms", "downtime_ms")]
    worse = [f"{t} {k[:-3]}" for t, a, b, k in vs if a is not None and b is not None and a >= b]
    s += (" With TLS on both, ferry is behind QEMU in " + listing(worse) + "." if worse else
          " With TLS on both, ferry is ahead of QEMU in total time, gap and reported "
          "downtime in every TLS scenario.")
    return s


def notes(res, names):
    n = []
    m = lambda name, s, k: med(res, name, s, k)         # noqa: E731
    have = lambda x, *ks: all(m(x, s, k) is not None for s in SYSTEMS for k in ks)  # noqa: E731
    precopy = [x for x in names if "postcopy" not in x]

    # 1. What the downtime figures mean.
    ahead = [x for x in names if have(x, "gap_ms") and m(x, "ferry", "gap_ms") < m(x, "qemu", "gap_ms")]
    behind = [x for x in names if have(x, "gap_ms") and x not in ahead]
    q_hidden = [x for x in precopy if have(x, "gap_ms", "downtime_ms")
                and m(x, "qemu", "gap_ms") > m(x, "qemu", "downtime_ms") + 5]
    n.append(
        "- **What \"downtime\" means differs.** ferry's figure runs from the source pausing "
        "to the destination resuming, on both hosts' real-time clocks. QEMU's `downtime` is "
        "taken on the source alone, from the stop to the end of its completion, in whole "
        "milliseconds; it leaves out the destination loading the device state and starting "
        "the vCPUs, and in post-copy it ends when the source has told the destination to "
        "run. QEMU's guest-visible gap exceeds its reported downtime by more than 5 ms in "
        + listing(q_hidden) + ". Compare the **guest-visible gap** (the same measure for "
        "both). By the gap, ferry is ahead in " + listing(ahead) + " and behind in "
        + listing(behind) + ".")

    # 2. Where the silence happens.
    light = [x for x in precopy if not x.startswith("dirty-max")]
    early = [x for x in light if m(x, "ferry", "gap_before_switchover_ms") is not None
             and m(x, "ferry", "gap_switchover_ms") is not None
             and m(x, "ferry", "gap_before_switchover_ms") >
             max(1.3 * m(x, "ferry", "gap_switchover_ms"), m(x, "ferry", "gap_switchover_ms") + 1)]
    if early:
        s = ("- **Where ferry's guest notices the migration.** In " + listing(early) + " "
             "ferry's longest silence is not at the switchover but during the pre-copy "
             "rounds (medians "
             + ", ".join(f"{fmt(m(x, 'ferry', 'gap_before_switchover_ms'), 'ms')} vs "
                         f"{fmt(m(x, 'ferry', 'gap_switchover_ms'), 'ms')} ms" for x in early)
             + " — the \"gap: longest silence\" rows), typically in round 1"
             + (": most likely when ferry turns dirty logging on and write-protects guest "
                "memory (its round 1 clears the whole dirty log, `KVM_CLEAR_DIRTY_LOG` over "
                "all RAM in one call, while the vCPUs run; 1b4d1f1 clears it in 64 MiB "
                "pieces instead)." if measured_after(res, CLEAR_FIX) is False else
                "; the ferry measured here already clears the dirty log in 64 MiB pieces "
                f"({CLEAR_FIX}), and what remains is a few milliseconds, close to the host "
                "noise (next note)."))
        if "idle-1g" in early and "idle-4g" in early and \
                m("idle-4g", "ferry", "gap_before_switchover_ms") > \
                1.3 * m("idle-1g", "ferry", "gap_before_switchover_ms"):
            s += (f" It grows with the guest's size: {fmt(m('idle-1g', 'ferry', 'gap_before_switchover_ms'), 'ms')}"
                  f" ms at 1 GiB, {fmt(m('idle-4g', 'ferry', 'gap_before_switchover_ms'), 'ms')}"
                  " ms at 4 GiB (median).")
        s += (" ferry's switchover itself is short; QEMU's longest silence is at its "
              "switchover.")
        n.append(s)

    # 3. Host noise, and the same guest on two VMMs.
    base_f = [x for x in precopy if have(x, "baseline_gap_ms")
              and m(x, "ferry", "baseline_gap_ms") > 2 * m(x, "qemu", "baseline_gap_ms")
              and m(x, "ferry", "baseline_gap_ms") >= 10]
    s = ("- **Host noise.** The \"gap before migrating\" row is the longest tick silence "
         "over the settle time, before anything migrates: on this 2-CPU host the guest's "
         "vCPUs, the VMM's threads and the tick reader share two cores.")
    if base_f:
        s += (" Under the full-speed dirtier (" + listing(base_f) + ") ferry's guest already "
              "shows silences of "
              + ", ".join(f"{fmt(m(x, 'ferry', 'baseline_gap_ms'), 'ms')}" for x in base_f)
              + " ms there against "
              + ", ".join(f"{fmt(m(x, 'qemu', 'baseline_gap_ms'), 'ms')}" for x in base_f)
              + " ms on QEMU: with both vCPUs busy, ferry's tick stalls for up to ~35 ms about "
              "once a second (seen without any migration too); the cause is not known yet. "
              "Gaps in those scenarios include that noise.")
    pp = [(x, m(x, "ferry", "guest_dirty_pps"), m(x, "qemu", "guest_dirty_pps"))
          for x in ("dirty-max", "dirty-20k")
          if x in names and have(x, "guest_dirty_pps")]
    for x, fp, qp in pp:
        if x == "dirty-max" and fp and qp:
            s += (f" The full-speed dirtier wrote {fp / 1e6:.1f} M pages/s under ferry and "
                  f"{qp / 1e6:.1f} M pages/s under QEMU before migrating (\"guest's writes\" "
                  "row, medians)" + (
                      ": about the same load for both." if abs(fp / qp - 1) < 0.15 else
                      f", so {'ferry' if fp > qp else 'QEMU'} had the harder job there."))
    n.append(s)

    # 4. Idle 1 vs 4 GiB.
    if "idle-4g" in names and "idle-1g" in names and have("idle-1g", "total_ms") \
            and have("idle-4g", "total_ms"):
        f1, f4 = m("idle-1g", "ferry", "total_ms"), m("idle-4g", "ferry", "total_ms")
        q1, q4 = m("idle-1g", "qemu", "total_ms"), m("idle-4g", "qemu", "total_ms")
        n.append(
            f"- **Idle guests, 1 vs 4 GiB.** ferry's total time grows from {fmt(f1, 'ms')} "
            f"to {fmt(f4, 'ms')} ms, QEMU's from {fmt(q1, 'ms')} to {fmt(q4, 'ms')} ms. "
            "ferry's first round visits only the allocated extents of its memfd (holes are "
            "zero on both sides and are skipped); QEMU walks every page of guest RAM to find "
            "the zero ones (sending a few bytes for each, hence its few more MiB).")

    # 5. 512 MiB at full speed.
    x = "dirty-max"
    if x in names and have(x, "bytes", "total_ms", "gap_ms"):
        fb, qb = m(x, "ferry", "bytes"), m(x, "qemu", "bytes")
        fr = ferry_late_rate(res, x)
        gp = m(x, "ferry", "guest_dirty_pps")
        conv = all(count(runs_of(res, x, s_), "converged") == len(runs_of(res, x, s_))
                   for s_ in SYSTEMS)
        s = (f"- **512 MiB rewritten as fast as the vCPUs can** (`{x}`): "
             + ("both converge under the 300 ms limit without help. " if conv else "")
             + f"ferry: {fmt(m(x, 'ferry', 'total_ms'), 'ms')} ms, {fmt(fb, 'MiB')} MiB, gap "
             f"{fmt(m(x, 'ferry', 'gap_ms'), 'ms')} ms; QEMU: {fmt(m(x, 'qemu', 'total_ms'), 'ms')}"
             f" ms, {fmt(qb, 'MiB')} MiB, gap {fmt(m(x, 'qemu', 'gap_ms'), 'ms')} ms.")
        if fr and gp:
            s += (f" It converges because dirty tracking slows the writer down: free-running "
                  f"the dirtier writes {gp / 1e6:.1f} M pages/s (its 512 MiB about "
                  f"{gp / 131072:.0f} times a second), but in ferry's later rounds it dirtied "
                  f"only about {fr / 1e3:.0f} k distinct pages/s, so the dirty set shrinks "
                  "from round to round (timeline below). Most likely every first write to a "
                  "page after its dirty bit was cleared traps to the host (write "
                  "protection, expensive under PVM's shadow paging).")
        if fb > 1.1 * qb:
            s += (f" ferry sends {fb / qb:.1f}× QEMU's bytes: its rounds re-send most of the "
                  "512 MiB two or three times (per-round figures below); QEMU syncs its "
                  "dirty bitmap only when what is left to send falls under what its "
                  "downtime limit allows, and got by with less here.")
        n.append(s)

    # 5b. Long pre-copy runs of ferry (a plateau of dirty pages above its limit).
    for x in [y for y in precopy if y.startswith("dirty-max")]:
        long = [r for r in runs_of(res, x, "ferry")
                if len((r.get("report") or {}).get("rounds") or []) >= 6 and r.get("converged")]
        if not long:
            continue
        r = max(long, key=lambda r: len(r["report"]["rounds"]))
        rep = r["report"]
        rounds = rep["rounds"]
        dt = rep.get("downtime") or {}
        stop_rate = (dt.get("final_pages") or 0) * 4096 / 2**20 / (dt["final_pages_ms"] / 1e3) \
            if dt.get("final_pages_ms") else None
        mid = rounds[len(rounds) // 2]
        s = (f"- **ferry's pre-copy can plateau** (`{x}`, run {r.get('repeat', 0) + 1}): "
             f"{len(rounds)} rounds and {fmt(r.get('total_ms'), 'ms')} ms (the other runs: "
             + ", ".join(f"{len((o.get('report') or {}).get('rounds') or [])} rounds, "
                         f"{fmt(o.get('total_ms'), 'ms')} ms"
                         for o in runs_of(res, x, "ferry") if o is not r)
             + f"). Round after round about {mid.get('dirty_pages', 0) / 1e3:.0f} k pages "
             f"stayed dirty and the policy expected a stop of ~{mid.get('expected_downtime_ms')} "
             f"ms, over the {scen_limit(res, x)} ms limit, until one round happened to end "
             "with fewer. Its bandwidth estimate comes from pre-copy rounds "
             f"({rep.get('bandwidth_mibs')} MiB/s, while the guest's vCPUs compete with the "
             "sender for the two cores)")
        bw = rep.get("bandwidth_mibs")
        if stop_rate and bw and stop_rate > 1.5 * bw:
            s += (f", but the stop itself then moved {dt.get('final_pages')} pages in "
                  f"{fmt(dt['final_pages_ms'], 'ms')} ms ({stop_rate:.0f} MiB/s) with the "
                  "vCPUs paused: the estimate is too pessimistic for the stop on a host "
                  "like this, and ferry keeps iterating when it could stop within the limit")
        elif stop_rate:
            s += (f"; the final stop moved {dt.get('final_pages')} pages in "
                  f"{fmt(dt['final_pages_ms'], 'ms')} ms ({stop_rate:.0f} MiB/s). ferry has "
                  "no way out of such a plateau short of `--auto-converge` or "
                  "`--max-time ... --on-timeout force`; with neither, a guest that keeps "
                  "its dirty set just above what fits the limit can keep it migrating for "
                  "as long as that lasts")
        n.append(s + ". QEMU, with the same limit, finished every run in "
                 + ", ".join(fmt(o.get("total_ms"), "ms") for o in runs_of(res, x, "qemu"))
                 + " ms.")

    # 6. Auto-converge.
    x = "dirty-max-ac"
    if x in names and have(x, "gap_ms"):
        ft, qt = m(x, "ferry", "throttle_max_pct"), m(x, "qemu", "throttle_max_pct")
        s = (f"- **Auto-converge** (`{x}`): gap {fmt(m(x, 'ferry', 'gap_ms'), 'ms')} ms "
             f"(ferry) vs {fmt(m(x, 'qemu', 'gap_ms'), 'ms')} ms (QEMU); highest throttle "
             f"(median) {fmt(ft, 'pct')}% vs {fmt(qt, 'pct')}%. ferry throttles from the "
             "first round that dirtied at least half of what it sent; QEMU only after two "
             "such bitmap syncs in a row.")
        if qt == 0:
            s += " QEMU finished before throttling at all: its run is plain pre-copy."
        if "dirty-max" in names and have("dirty-max", "gap_ms") and \
                m(x, "ferry", "gap_ms") < 0.8 * m("dirty-max", "ferry", "gap_ms"):
            s += (f" On ferry the throttle shortened the stop: gap "
                  f"{fmt(m(x, 'ferry', 'gap_ms'), 'ms')} ms against "
                  f"{fmt(m('dirty-max', 'ferry', 'gap_ms'), 'ms')} ms without it "
                  "(`dirty-max`).")
        elif "dirty-max" in names and have("dirty-max", "gap_ms") and \
                m(x, "ferry", "gap_ms") > 1.2 * m("dirty-max", "ferry", "gap_ms"):
            s += (f" On ferry, auto-converge did not help here: its gap is larger than "
                  f"without it ({fmt(m('dirty-max', 'ferry', 'gap_ms'), 'ms')} ms in "
                  "`dirty-max`); a 20 % throttle did not make the stop shorter on this "
                  "workload.")
        n.append(s)

    # 7. Post-copy.
    x = "dirty-max-postcopy"
    if x in names and have(x, "postcopy_ms", "downtime_ms", "gap_ms"):
        fpc, qpc = m(x, "ferry", "postcopy_ms"), m(x, "qemu", "postcopy_ms")
        s = (f"- **Post-copy** (`{x}`): the post-copy phase (the VM runs on the destination "
             f"with pages missing) lasts {fmt(fpc, 'ms')} ms on ferry and {fmt(qpc, 'ms')} ms "
             f"on QEMU; page requests {fmt(m(x, 'ferry', 'remote_faults'), 'n')} vs "
             f"{fmt(m(x, 'qemu', 'remote_faults'), 'n')}; fault latency p50 "
             f"{fmt(m(x, 'ferry', 'fault_p50_us'), 'us')} vs {fmt(m(x, 'qemu', 'fault_p50_us'), 'us')} µs, "
             f"p99 {fmt(m(x, 'ferry', 'fault_p99_us'), 'us')} vs {fmt(m(x, 'qemu', 'fault_p99_us'), 'us')} µs, "
             f"max {fmt(m(x, 'ferry', 'fault_max_us'), 'us')} vs {fmt(m(x, 'qemu', 'fault_max_us'), 'us')} µs.")
        fixed = measured_after(res, PC_FIX)
        if fpc > 1.5 * qpc and fixed is not False:
            s += (" **ferry is slower here.** The cause of an earlier, similar result was "
                  f"fixed in {PC_FIX} (the background push scanned its bitmap "
                  "quadratically); this run's ferry has that fix, so the remaining "
                  "difference is not explained yet." if fixed else
                  " **ferry is slower here.** Its cause is not established for this run.")
        elif fpc > 1.5 * qpc:
            s += (" **ferry is slower here, because of a bug** (found with `perf` at commit "
                  "e5d39d5): the source's background push (`pc_push_all` in "
                  "src/migration/source_postcopy.c) steps through the needed-page bitmap 64 "
                  "pages at a time, but `pc_take` keeps scanning bit by bit past those 64 "
                  "until it has found 64 needed pages or reached the end of the memory "
                  "region. Over the 1.5 GiB of the guest that needs nothing, every step scans "
                  "to the end of the region: quadratic, of the order of 10⁹ bit tests, each "
                  "call under the lock that the fault-serving thread takes too. Most of the "
                  "source migration thread's CPU time in the post-copy phase went there "
                  "(`pc_bitmap_test`/`pc_bitmap_test_clear`), and the phase ends only when "
                  "the scan has passed the last needed page. Without that, ferry's "
                  "post-copy phase would be bounded by its transfer rate (its pre-copy "
                  "rounds move ~1 GB/s). Its worst faults (max above) are most likely "
                  "the same problem seen from the guest.")
        n.append(s)
        fdt, qdt = m(x, "ferry", "downtime_ms"), m(x, "qemu", "downtime_ms")
        s = (f"- **Post-copy switchover**: ferry reports {fmt(fdt, 'ms')} ms of downtime, "
             f"QEMU {fmt(qdt, 'ms')} ms; the guest-visible gaps are "
             f"{fmt(m(x, 'ferry', 'gap_ms'), 'ms')} vs {fmt(m(x, 'qemu', 'gap_ms'), 'ms')} ms. "
             "QEMU's figure stops when its source has sent the device state and the `run` "
             "command.")
        parts = [sum(((r.get("report") or {}).get("downtime") or {}).get(k) or 0
                     for k in ("pause_ms", "state_ms", "dest_apply_ms"))
                 for r in runs_of(res, x, "ferry")]
        if fdt > 20 and parts and fdt > 5 * statistics.median(parts) and \
                measured_after(res, PC_FIX) is False:
            s += (f" ferry's report breaks only {fmt(statistics.median(parts), 'ms')} ms of "
                  "it down (pause, state, apply); under strace (commit e5d39d5) the rest was "
                  "the destination punching holes for the stale copies of the missing pages "
                  "before registering userfaultfd: one `fallocate(PUNCH_HOLE)` over ~512 MiB "
                  "of 4 KiB memfd pages, 61 ms of a 66 ms downtime, inside the downtime.")
        n.append(s)
        n.append(
            "- **QEMU's own post-copy statistics are unusable here.** With the "
            "`postcopy-blocktime` capability on, QEMU 7.2 reports `postcopy-blocktime` 0 and "
            "`postcopy-vcpu-blocktime` [0, 0] although its destination requested hundreds "
            "of pages. It counts a fault for a vCPU only if the faulting thread is that "
            "vCPU's; its trace shows the faults coming mostly from kernel worker threads "
            "(KVM fetches a missing guest page from its async page-fault workers), so "
            "nothing is attributed. 7.2's query-migrate has no latency figures "
            "(`postcopy-latency` came with QEMU 9.1), so QEMU's latencies here come from "
            "its destination's trace log (see \"How it is measured\").")

    # 7b. Hybrid.
    x = "dirty-max-hybrid"
    if x in names and have(x, "total_ms", "gap_ms"):
        ft, qt = m(x, "ferry", "total_ms"), m(x, "qemu", "total_ms")
        fg, qg = m(x, "ferry", "gap_ms"), m(x, "qemu", "gap_ms")
        s = (f"- **Hybrid** (`{x}`): total time {fmt(ft, 'ms')} ms on ferry vs "
             f"{fmt(qt, 'ms')} ms on QEMU, guest-visible gap {fmt(fg, 'ms')} vs "
             f"{fmt(qg, 'ms')} ms, downtime {fmt(m(x, 'ferry', 'downtime_ms'), 'ms')} vs "
             f"{fmt(m(x, 'qemu', 'downtime_ms'), 'ms')} ms; pre-copy rounds before the "
             f"switch {fmt(m(x, 'ferry', 'rounds'), 'n')} (ferry) vs bitmap syncs "
             f"{fmt(m(x, 'qemu', 'rounds'), 'n')} (QEMU); fault latency p99 "
             f"{fmt(m(x, 'ferry', 'fault_p99_us'), 'us')} vs "
             f"{fmt(m(x, 'qemu', 'fault_p99_us'), 'us')} µs.")
        fr = runs_of(res, x, "ferry")
        went = sum(bool((r.get("report") or {}).get("postcopy")) for r in fr)
        s += (f" ferry switched to post-copy in {went} of {len(fr)} runs; in "
              + ("the others" if went else "every run") + " its projected stop fitted the "
              "300 ms limit, and hybrid switches only when it does not, so "
              + ("those runs" if went else "they") + " ended with an ordinary pre-copy stop "
              "(a pause of some tens of ms moving the last dirty set, but no post-copy "
              "phase and no remote faults)." if went < len(fr) else
              f" ferry switched to post-copy in all {len(fr)} runs.")
        qr = runs_of(res, x, "qemu")
        s += (f" QEMU ran a post-copy phase in {count(qr, 'qemu_postcopy_active')} of "
              f"{len(qr)} runs (in the others it completed in pre-copy, its projected stop "
              "fitting the limit, before a round stalled).")
        worse = [w for w, a, b in (("total time", ft, qt), ("gap", fg, qg)) if a > b]
        s += (f" **ferry is worse on {' and '.join(worse)} here.**" if worse else
              " ferry is lower on both total time and gap.")
        n.append(s)

    # 7c. The transfer engine (parallel connections, compression, delta).
    x = "idle-4g-mfd"
    if x in names and have(x, "total_ms"):
        ft, qt = m(x, "ferry", "total_ms"), m(x, "qemu", "total_ms")
        n.append(f"- **Idle 4 GiB over 2 connections** (`{x}`, QEMU with multifd): total "
                 f"time {fmt(ft, 'ms')} ms vs {fmt(qt, 'ms')} ms ({ft / qt:.2f}×; the aim is "
                 f"at most 0.5×: {'met' if ft <= 0.5 * qt else '**not met**'}).")
    x = "dirty-20k-cap100"
    if x in names and have(x, "bytes", "total_ms"):
        fb, qb = m(x, "ferry", "bytes"), m(x, "qemu", "bytes")
        fr = runs_of(res, x, "ferry")
        tr = [(r.get("report") or {}).get("transfer") or {} for r in fr]
        raw = statistics.median([t.get("bytes_raw") or 0 for t in tr]) if tr else 0
        n.append(f"- **Capped at 100 MiB/s** (`{x}`): ferry `--compress auto "
                 f"--delta-cache 256` sends {fmt(fb, 'MiB')} MiB, QEMU multifd+zstd "
                 f"{fmt(qb, 'MiB')} MiB ({fb / qb:.2f}×; the aim is at most 0.7×: "
                 f"{'met' if fb <= 0.7 * qb else '**not met**'}); total time "
                 f"{fmt(m(x, 'ferry', 'total_ms'), 'ms')} vs {fmt(m(x, 'qemu', 'total_ms'), 'ms')} ms, "
                 f"downtime {fmt(m(x, 'ferry', 'downtime_ms'), 'ms')} vs "
                 f"{fmt(m(x, 'qemu', 'downtime_ms'), 'ms')} ms. The dirtier's pages do not "
                 "compress (zstd finds nothing in them, for QEMU as for ferry), but a "
                 "re-sent page differs from its last copy by one word XORed into every word: "
                 "ferry sends that XOR as a delta and compresses the batch "
                 + (f"(it moved {raw / 2**20:.0f} MiB of pages as {fmt(fb, 'MiB')} MiB). "
                    if raw else ". ")
                 + "QEMU's XBZRLE cannot be combined with multifd, and would not help here "
                 "anyway (its XOR is never sparse on these pages).")
    x = "dirty-20k-10ms-zstd"
    if x in names:
        conv = {s_: f"{count(runs_of(res, x, s_), 'converged')}/{len(runs_of(res, x, s_))}"
                for s_ in SYSTEMS}
        n.append(f"- **20000 pages/s at a 10 ms limit, 2 connections + zstd** (`{x}`): "
                 f"converged {conv['ferry']} (ferry) and {conv['qemu']} (QEMU); downtime "
                 f"{fmt(m(x, 'ferry', 'downtime_ms'), 'ms')} vs "
                 f"{fmt(m(x, 'qemu', 'downtime_ms'), 'ms')} ms.")

    # 8. vCPUs.
    if "dirty-20k-1cpu" in names and "dirty-20k" in names and have("dirty-20k", "gap_ms") \
            and have("dirty-20k-1cpu", "gap_ms"):
        n.append("- **1 vs 2 vCPUs** (`dirty-20k-1cpu` vs `dirty-20k`, the same 20000 "
                 f"pages/s in total): gap {fmt(m('dirty-20k-1cpu', 'ferry', 'gap_ms'), 'ms')} vs "
                 f"{fmt(m('dirty-20k', 'ferry', 'gap_ms'), 'ms')} ms on ferry, "
                 f"{fmt(m('dirty-20k-1cpu', 'qemu', 'gap_ms'), 'ms')} vs "
                 f"{fmt(m('dirty-20k', 'qemu', 'gap_ms'), 'ms')} ms on QEMU; total time "
                 f"{fmt(m('dirty-20k-1cpu', 'ferry', 'total_ms'), 'ms')} vs "
                 f"{fmt(m('dirty-20k', 'ferry', 'total_ms'), 'ms')} ms on ferry, "
                 f"{fmt(m('dirty-20k-1cpu', 'qemu', 'total_ms'), 'ms')} vs "
                 f"{fmt(m('dirty-20k', 'qemu', 'total_ms'), 'ms')} ms on QEMU. The vCPU count "
                 "matters little at this rate for either.")

    # 9. Ten ms limits.
    for x in ("idle-1g-10ms", "dirty-20k-10ms"):
        if x not in names:
            continue
        over = {s_: sum(1 for r in runs_of(res, x, s_)
                        if r.get("gap_ms") is not None and r["gap_ms"] > 10) for s_ in SYSTEMS}
        tot = {s_: len(runs_of(res, x, s_)) for s_ in SYSTEMS}
        n.append(f"- **10 ms limit** (`{x}`): reported downtime "
                 f"{fmt(m(x, 'ferry', 'downtime_ms'), 'ms')} (ferry) and "
                 f"{fmt(m(x, 'qemu', 'downtime_ms'), 'ms')} ms (QEMU), within the limit; "
                 f"the guest-visible gap was over 10 ms in {over['ferry']}/{tot['ferry']} "
                 f"ferry runs and {over['qemu']}/{tot['qemu']} QEMU runs.")

    # 10. Memory.
    fr, qr = m("idle-1g", "ferry", "src_rss_peak_kib"), m("idle-1g", "qemu", "src_rss_peak_kib")
    if fr and qr:
        n.append(f"- **Memory**: peak RSS of an idle 1 GiB source {fmt(fr, 'MiBk')} MiB "
                 f"(ferry) vs {fmt(qr, 'MiBk')} MiB (QEMU): the touched guest memory plus "
                 "the VMM; QEMU's is larger by its own overhead (see \"Boot time and idle "
                 "memory\"). Neither keeps a copy of guest memory for the migration.")

    # 11. Failures.
    def run_problem(r):
        """Why a run is listed: its error, or what the destination showed."""
        if r.get("error") or not r.get("converged"):
            return r.get("error") or r.get("state")
        lines = "; ".join(r.get("verify_lines") or []) or "none"
        return (f"migration {r.get('state')}, but the destination's VERIFY lines were "
                f"\"{lines}\" ({r.get('dst_heartbeats')} heartbeats on its console, "
                f"{(r.get('gap_detail') or {}).get('reads', '?')} tick reads after the "
                "switchover)" + (": every vCPU halted with interrupts enabled and one with "
                                 "a wake-up pending that KVM never delivered"
                                 if r.get("dst_missed_wakeup") else ""))
    tls = tls_note(res, names)
    if tls:
        n.append(tls)
    bad = [(x, s_, r.get("repeat"), run_problem(r))
           for x in names for s_ in SYSTEMS for r in runs_of(res, x, s_)
           if not (r.get("converged") and r.get("verify_ok"))]
    if bad:
        n.append("- **Runs that did not converge or verify**: " + "; ".join(
            f"{s_} `{x}` run {(rep or 0) + 1}: {str(why)[:200]}" for x, s_, rep, why in bad)
            + ". They count in the \"converged\" rows; figures they lack are left out of "
            "the medians.")
    else:
        total = sum(len(runs_of(res, x, s_)) for x in names for s_ in SYSTEMS)
        n.append(f"- All {total} runs converged within the 120 s limit, and on every "
                 "destination the guest's checker printed `VERIFY ok` twice with no problem "
                 "line.")
    return n


# -- the section --------------------------------------------------------------------------------
def render(res, path=None, suite=None):
    cfg = res.get("config", {})
    scen = cfg.get("scenarios", {})
    names = [n for n in scen if n in (res.get("samples") or {})]
    rep = cfg.get("repeat")
    out = []
    src = f"`{os.path.relpath(path, ROOT)}`" if path else "the newest result"
    out += [
        f"ferry and QEMU/KVM ({(res.get('machine') or {}).get('qemu_version', 'QEMU')}), each "
        "migrating between two of its own processes on this host over loopback TCP, with the "
        "same test guest, workload, vCPU count, memory size, downtime limit and bandwidth "
        "setting (no cap: ferry without `--bandwidth`, QEMU `max-bandwidth` 100 GiB/s since "
        f"its default is 128 MiB/s). {rep} runs per scenario and system, alternating which "
        f"goes first; a run not finished in {cfg.get('timeout_s', 120):g} s is cancelled and "
        f"counts as not converged. Figures from {src}; median (min–max); ratios are of "
        "medians, below 1 is better for ferry.", ""]
    out += ["### Overview (medians)", "", overview(res, names), ""]
    out += ["![downtime per scenario](" + PLOTS_REL + "/downtime.png)", "",
            "![guest-visible gap per scenario](" + PLOTS_REL + "/gap.png)", ""]
    out += ["### Notes", ""] + notes(res, names) + [""]
    out += ["### How it is measured", "",
            "- **Guest**: `build/guest/testguest` with `tick.us=1000` (one byte to port 0xe9 "
            "every 1 ms of guest time) and the scenario's dirtier (`dirtier.rate` in pages/s, "
            "-1 = as fast as the vCPUs can; the dirtier runs on every vCPU). The source boots, "
            "prints its first heartbeat and `VERIFY ok`, runs 2 s more, then migrates.",
            "- **Downtime**: as each system reports it (ferry `downtime.total_ms`, source "
            "pause to destination resume; QEMU `downtime` from query-migrate, on the source).",
            "- **Guest-visible gap**: both VMMs (source and destination) write the guest's "
            "debug console into one FIFO, read by one process (`bench/gap_reader.py`) that "
            "timestamps every read; the gap is the longest interval between arrivals from "
            "0.2 s before the migration to 1 s after it, minus the 1 ms period.",
            "- **Total time**: as reported (ferry `total_ms`, QEMU `total-time`); the host "
            "clock's view (`migrate` issued to end seen) is in the detailed tables.",
            "- **Bytes**: ferry `bytes` (everything on the wire); QEMU `ram.transferred` "
            "(pages and their headers; its device state, tens of KiB, is in no counter).",
            "- **Rounds**: ferry: its pre-copy rounds (the stop-and-copy not counted); QEMU: "
            "`dirty-sync-count`, bitmap syncs including the first pass and the final sync at "
            "the stop.",
            "- **Peak RSS**: `ru_maxrss` of each VMM process when it exits.",
            "- **Post-copy** (`dirty-max-postcopy`): ferry `--mode postcopy` (post-copy after "
            "the first full pass); QEMU `postcopy-ram` on both sides and "
            "`migrate-start-postcopy` once query-migrate shows `dirty-sync-count` ≥ 2 (the "
            "first pass is done; polled every 2 ms). Fault latency, ferry: its report "
            "(fault read from userfaultfd → page installed, per faulted page). QEMU: "
            "query-migrate offers none in 7.2, so its destination runs with two trace "
            "events, `postcopy_ram_fault_thread_request` (fault read) and "
            "`postcopy_page_req_del` (requested page placed), logged with microsecond "
            "stamps (`-msg timestamp=on -D FILE`); latency = placement − first fault, per "
            "page, the same span as ferry's. \"Fault wait, sum\" adds these latencies up "
            "(ferry's `vcpu_blocked_ms`). QEMU's `postcopy-vcpu-blocktime` is kept for "
            "reference.",
            "- **Hybrid** (`dirty-max-hybrid`): ferry `--mode hybrid` runs pre-copy and "
            "switches to post-copy by itself once a round after the first pass dirtied at "
            "least half of what it sent. QEMU has no automatic switch (libvirt's "
            "`--postcopy-after-precopy` switches after the first pass), so the script "
            "applies the same rule to QEMU's query-migrate counters and then calls "
            "`migrate-start-postcopy`.",
            "- **Per-round timeline**: ferry's report lists its rounds. For QEMU the script "
            f"samples query-migrate every {cfg.get('poll_ms', 20):g} ms during the migration "
            "and groups the samples by `dirty-sync-count`: bytes per round = growth of "
            "`ram.transferred` between the first samples after two syncs, dirty pages = "
            "`ram.remaining` just after the sync. Rounds shorter than the sampling interval "
            "merge into the next one (QEMU's last rounds and its stop often do). Each sample is "
            "a QMP command on QEMU's main loop, a small load that only QEMU carries (ferry's "
            "`migrate --wait` asks its API every 250 ms).",
            "- The destination's guest must print `VERIFY ok` twice (its checker re-reads "
            "every dirtier page) with no PANIC/ERROR/VERIFY FAIL/TIME BACKWARDS line.", ""]
    out += ["### Per-round timelines", "",
            "One migration of each system (the run with the median total time): bars are "
            "the MiB sent in each round, as wide as the round lasted; the line is the dirty "
            "pages left at each round's end (what the next round or the stop must send). "
            "ferry's last bar (\"stop\") is the stop-and-copy; QEMU's last sampled round "
            "includes its stop.", ""]
    for name in ("dirty-max", "dirty-20k-10ms"):
        if name in names:
            out += [f"![per-round timeline, {name}]({PLOTS_REL}/timeline-{name}.png)", "",
                    timeline_table(res, name), ""]
    out += ["### Per scenario", ""]
    for name in names:
        title = scen[name].get("title") or name
        out += [f"<a id=\"{anchor(name)}\"></a>", "", f"#### {title}", "",
                scenario_table(res, name), ""]
    cmds = cfg.get("commands") or {}
    if cmds:
        out += ["### Commands", "",
                "Placeholders: MEM, CPUS, MIB, RATE, LIMIT from the scenario; PORT a free "
                "port; files in a temporary directory.", "", "```sh"]
        for s in SYSTEMS:
            out.append(f"# {NAMES[s]}")
            for c in cmds.get(s, []):
                out.append(c if not c.startswith(("QMP", "on timeout")) else "#   " + c)
        out += ["# guest-visible gap", "#   " + cmds.get("gap_reader", ""), "```", ""]
    out += ["Reproduce just this part: `python3 bench/bench_migration.py [--repeat N] "
            "[--only a,b]`, or `BENCH_ONLY=a,b make bench` (see above)."]
    return "\n".join(out)


def headline_rows(res):
    """(label, ferry value, QEMU value, unit) for the summary table at the top."""
    rows = []
    for name, key, label, unit in (
            ("idle-1g", "gap_ms", "live migration, idle 1 GiB: guest-visible gap", "ms"),
            ("dirty-20k", "gap_ms", "live migration, 20000 pages/s: guest-visible gap", "ms"),
            ("dirty-20k", "total_ms", "live migration, 20000 pages/s: total time", "ms"),
            ("dirty-max", "gap_ms", "live migration, 512 MiB at full speed: gap", "ms"),
            ("dirty-max-postcopy", "postcopy_ms", "post-copy phase, 512 MiB at full speed",
             "ms"),
            ("dirty-max-postcopy", "fault_p99_us", "post-copy fault latency p99", "µs"),
            ("dirty-max-hybrid", "total_ms", "hybrid, 512 MiB at full speed: total time",
             "ms"),
            ("dirty-max-hybrid", "gap_ms", "hybrid, 512 MiB at full speed: gap", "ms"),
            ("dirty-max-hybrid", "fault_p99_us", "hybrid: fault latency p99", "µs"),
            ("idle-4g-mfd", "total_ms", "idle 4 GiB, 2 connections (QEMU multifd): total "
             "time", "ms"),
            ("dirty-20k-cap100", "bytes", "100 MiB/s cap, compression: bytes sent", "B"),
            ("idle-1g-tls", "total_ms", "mutual TLS, idle 1 GiB: total time", "ms"),
            ("dirty-20k-tls", "gap_ms", "mutual TLS, 20000 pages/s: gap", "ms"),
            ("dirty-max-tls", "total_ms", "mutual TLS, 512 MiB at full speed: total time",
             "ms"),
            ("dirty-max-tls", "gap_ms", "mutual TLS, 512 MiB at full speed: gap", "ms")):
        if runs_of(res, name, "ferry") and runs_of(res, name, "qemu"):
            a, b = med(res, name, "ferry", key), med(res, name, "qemu", key)
            stuck = [NAMES[s_] for s_ in SYSTEMS if not count(runs_of(res, name, s_), "converged")]
            if stuck:
                label += f" ({' and '.join(stuck)}: no run converged in 120 s)"
            if unit == "B":                 # bytes: shown in MiB
                a, b = [v / 2**20 if v is not None else None for v in (a, b)]
                unit = "MiB"
            rows.append((label, a, b, unit))
    return rows
