#!/usr/bin/python3
"""Regenerates docs/BENCHMARKS.md from the newest result files in bench/results/.

    python3 bench/report.py [--bench FILE] [--boot FILE] [--snapshot FILE]
                            [--migration FILE] [--out PATH]

Results come from `make bench` (bench/bench_all.py: one `bench-<timestamp>.json` per run
holding the boot, snapshot and migration results) or from the scripts run on their own
(`<kind>-<timestamp>.json`). For each kind the newest is used: the part of the newest
complete suite file or the newest `<kind>-*.json`, whichever was made later (by the
date in its "machine" block); --bench FILE takes every part FILE has from FILE (also a
partial one), --boot/--snapshot/--migration name single files. The live-migration
section is, in this order of preference: rendered from the migration result (by
`bench/report_migration.py: render(result, path=..., suite=...) -> markdown` if that
module exists, else by the result's own "report_markdown" string, else generically from
its "summary"); otherwise kept as it is in the current BENCHMARKS.md between the
`<!-- BEGIN live-migration -->` and `<!-- END live-migration -->` markers; otherwise a
placeholder.
"""
import argparse
import glob
import importlib
import json
import os
import re
import statistics
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
RESULTS = os.path.join(BENCH, "results")
DOC = os.path.join(ROOT, "docs", "BENCHMARKS.md")
MIG_BEGIN = "<!-- BEGIN live-migration -->"
MIG_END = "<!-- END live-migration -->"

NAMES = {"ferry": "ferry", "qemu": "QEMU", "qemu-microvm": "QEMU microvm",
         "qemu-microvm-memfd": "QEMU microvm + memfd RAM", "qemu-4k": "QEMU, 4 KiB pages",
         "qemu-memfd": "QEMU + memfd RAM"}


def newest(kind):
    """The newest `<kind>-*.json` by the date it records (names need not sort)."""
    files = glob.glob(os.path.join(RESULTS, f"{kind}-*.json"))
    if not files:
        return None
    return max(files, key=lambda p: ((load(p).get("machine") or {}).get("date", ""), p))


_cache = {}


def load(path):
    if path not in _cache:
        with open(path) as f:
            _cache[path] = json.load(f)
    return _cache[path]


def newest_suite():
    """The newest `make bench` result that ran the whole default suite."""
    for path in sorted(glob.glob(os.path.join(RESULTS, "bench-*.json")), reverse=True):
        if not load(path).get("config", {}).get("partial"):
            return path
    return None


def part(path, kind):
    """The `kind` result inside suite file `path` (or None)."""
    return (load(path).get("results") or {}).get(kind) if path else None


def pick(kind, suite, forced_suite=False):
    """(path, result) of the result of `kind` to show, or (None, None)."""
    inner = part(suite, kind)
    if forced_suite and inner:
        return suite, inner
    alone = newest(kind)
    if inner and alone and kind == "migration" and not \
            set(inner.get("samples") or {}) <= set(load(alone).get("samples") or {}):
        alone = None            # a run of fewer scenarios does not replace a whole suite
    if inner and (not alone or inner["machine"].get("date", "") >=
                  load(alone)["machine"].get("date", "")):
        return suite, inner
    return (alone, load(alone)) if alone else (None, None)


def tidy(cmd):
    """Commands from results made with FERRY/GUEST elsewhere: show the usual paths."""
    return re.sub(r"\S*/build/guest/testguest", "build/guest/testguest",
                  re.sub(r"\S*/build/ferry(?=\s)", "build/ferry", cmd))


def rel(path):
    return os.path.relpath(path, ROOT)


# -- formatting ------------------------------------------------------------------------------
def num(v, unit):
    if v is None:
        return "–"
    if unit == "ms":
        return f"{v:.0f}" if v >= 100 else f"{v:.1f}"
    if unit == "s":
        return f"{v / 1e3:.2f}"
    if unit == "MiB_k":                 # kB in, MiB out
        return f"{v / 1024:.1f}"
    if unit == "MiB_b":                 # bytes in, MiB out
        return f"{v / 2**20:.1f}"
    if unit == "GiB/s":
        return f"{v:.2f}"
    if unit == "%":
        return f"{v:.1f}"
    if unit == "cpus":
        return f"{v:.2f}"
    return f"{v:g}"


def cell(sm, unit):
    """median (min–max) of a summary."""
    if not sm or sm.get("median") is None:
        return "–"
    med, lo, hi = (num(sm[k], unit) for k in ("median", "min", "max"))
    return med if sm["n"] == 1 or lo == hi else f"{med} ({lo}–{hi})"


def summary(values):
    values = sorted(values)
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {"n": len(values), "median": statistics.median(values), "min": values[0],
            "max": values[-1]}


def ratio(a, b):
    if not a or not b or a.get("median") in (None, 0) or b.get("median") in (None, 0):
        return None
    return a["median"] / b["median"]


def rcell(r):
    return "–" if r is None else f"{r:.2f}"


def med(summary, system, metric):
    try:
        return summary[system][metric]["median"]
    except (KeyError, TypeError):
        return None


def table(summary, systems, rows, base="ferry"):
    """rows: (label, metric, unit). Columns: each system, then base/other ratios."""
    others = [s for s in systems if s != base]
    head = ["", NAMES.get(base, base)] + [NAMES.get(s, s) for s in others] + \
           [f"ferry / {NAMES.get(s, s)}" for s in others]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, metric, unit, *flags in rows:
        cells = [label, cell(summary[base].get(metric), unit)]
        cells += [cell(summary[s].get(metric), unit) for s in others]
        cells += ["" if "no_ratio" in flags else
                  rcell(ratio(summary[base].get(metric), summary[s].get(metric)))
                  for s in others]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


OUT_ARG = re.compile(r" --out \S+")


def machine_block(results):
    lines = []
    for kind, path, res in results:
        m = res["machine"]
        argv = res.get("config", {}).get("argv")
        if path and load(path).get("benchmark") == "suite":
            sc = load(path)["config"]
            argv = (f"{sc.get('argv', 'make bench')}"
                    + (" with " + " ".join(f"{k}={v}" for k, v in sc["env"].items())
                       if sc.get("env") else "")
                    + f"`, as `{argv}")
        dirty = m.get("ferry_uncommitted") or []
        lines.append(
            f"- **{kind}** (`{rel(path)}`, {m.get('date')}): ferry `{m.get('ferry_commit')}`"
            + (f" plus uncommitted changes in {', '.join(sorted({d.split()[-1] for d in dirty}))}"
               if dirty else "")
            + f", test guest sha256 `{m.get('testguest_sha256')}`; {m.get('qemu_version')}; "
            f"Linux {m.get('kernel')}, {m.get('cpu_model')}, {m.get('nproc')} CPUs, "
            f"{m.get('mem_total_gib')} GiB, KVM module {', '.join(m.get('kvm_module') or [])}; "
            f"load average at start {m.get('loadavg_at_start', ['?'])[0]}."
            + (f" Command: `{OUT_ARG.sub('', argv)}`." if argv else ""))
    return "\n".join(lines)


# -- boot ------------------------------------------------------------------------------------
BOOT_ROWS = [
    ("boot: process start → first `HB` (ms)", "boot_ms", "ms"),
    ("process start → first console line (ms)", "first_line_ms", "ms"),
    ("process start → `READY` (ms)", "ready_ms", "ms"),
    ("first console line → `READY` (ms; the guest writes its 64 MiB)", "fill_ms", "ms"),
    ("VmRSS, 3 s after first `HB` (MiB)", "VmRSS_kib", "MiB_k"),
    ("of which guest RAM resident (MiB)", "guest_ram_rss_kib", "MiB_k"),
    ("VMM overhead = VmRSS − guest RAM (MiB)", "vmm_overhead_kib", "MiB_k"),
    ("RssAnon (MiB)", "RssAnon_kib", "MiB_k"),
    ("RssShmem (MiB)", "RssShmem_kib", "MiB_k"),
    ("RssFile (MiB)", "RssFile_kib", "MiB_k"),
    ("idle CPU, whole VMM process (%)", "idle_cpu_pct", "%"),
    ("host busy before the sample (CPUs, others' load)", "host_busy_cpus_before", "cpus",
     "no_ratio"),
]


def boot_section(path, res):
    sm, cfg = res["summary"], res["config"]
    for s, xs in res["samples"].items():          # results written before fill_ms existed
        if "fill_ms" not in sm.get(s, {}):
            sm[s]["fill_ms"] = summary([x["ready_ms"] - x["first_line_ms"] for x in xs])
    systems = [s for s in cfg["systems"] if s in sm]
    out = [f"Guest: test guest, {cfg['memory_mib']} MiB, {cfg['cpus']} vCPU, "
           f"`{cfg['cmdline']}` (64 MiB written once at boot, then only read by the verifier). "
           f"{cfg['repeat']} runs per system, interleaved; median (min–max). "
           "Ratios are of medians; below 1 means ferry takes less time or memory.", "",
           table(sm, systems, BOOT_ROWS), ""]
    out += ["What is measured:", "",
            "- **Boot time**: host time from just before the VMM process is spawned until the "
            "guest's first `HB` line is in the console file (polled every 2 ms).",
            "- **Memory**: the VMM process's `VmRSS` from `/proc/PID/status`. Guest RAM is "
            "told apart through `/proc/PID/smaps`: the resident part of the guest-RAM mapping "
            "(ferry: its memfd `ferry-guest-ram`, counted in RssShmem; QEMU: the anonymous "
            "`pc.ram` block, in RssAnon). \"VMM overhead\" is everything else resident: heap, "
            "stacks, binary and libraries, device memory (QEMU's VGA RAM and ROMs). Comparing "
            "raw RssAnon between the two would be wrong: QEMU's anonymous memory includes the "
            "guest's RAM, ferry's does not.",
            "- **Idle CPU**: CPU time of the whole VMM process (vCPU threads included) over the "
            "3 s, as a percentage of one CPU.", ""]
    notes = boot_notes(sm, systems)
    if notes:
        out += ["Notes:", ""] + notes + [""]
    out += ["Commands (CONSOLE, sockets: temporary files):", "", "```sh"]
    for s in systems:
        out.append(f"# {NAMES.get(s, s)}")
        out.append(tidy(cfg["commands"][s]))
    out += ["```"]
    return "\n".join(out)


def boot_notes(sm, systems):
    n = []
    f_boot, q_boot = med(sm, "ferry", "boot_ms"), med(sm, "qemu", "boot_ms")
    m_boot = med(sm, "qemu-microvm", "boot_ms")
    if f_boot and q_boot:
        fl = med(sm, "qemu", "first_line_ms")
        n.append(f"- Against the reference QEMU command ferry boots {q_boot / f_boot:.0f}× faster, "
                 f"but that is mostly firmware: QEMU's guest prints its first line only after "
                 f"{num(fl, 'ms')} ms, nearly all of it SeaBIOS, which this PVM host runs "
                 "instruction by instruction (guest kernel mode is emulated here). On a VMX/SVM "
                 "server the firmware runs natively and the gap is far smaller, so do not quote "
                 "this ratio as ferry's boot advantage.")
    if f_boot and m_boot:
        word = "faster" if f_boot < m_boot else "slower"
        n.append(f"- The fair boot comparison is QEMU's `microvm` machine (qboot firmware, no "
                 f"default devices): there ferry is **{word}** ({num(f_boot, 'ms')} vs "
                 f"{num(m_boot, 'ms')} ms, ratio {f_boot / m_boot:.2f}).")
    f_fl, m_fl = med(sm, "ferry", "first_line_ms"), med(sm, "qemu-microvm", "first_line_ms")
    fill = {s: sm.get(s, {}).get("fill_ms") for s in systems}
    if f_fl and m_fl and fill.get("ferry") and fill.get("qemu-microvm"):
        s = (f"- ferry reaches the guest's first console line sooner (median {num(f_fl, 'ms')} "
             f"vs {num(m_fl, 'ms')} ms with microvm), but its guest then needs "
             f"{cell(fill['ferry'], 'ms')} ms to `READY`, against "
             f"{cell(fill['qemu-microvm'], 'ms')} ms under microvm. That phase is mostly the "
             "guest writing its 64 MiB for the first time, a fault per first touch of a page. "
             "ferry's guest RAM is a memfd, which this host backs with 4 KiB pages "
             "(`shmem_enabled` is `never`): 16384 faults, each expensive under PVM's shadow "
             "paging. QEMU's anonymous RAM gets 2 MiB transparent huge pages (32 faults); "
             "even so its time for this phase varies a lot from run to run here.")
        if fill.get("qemu-microvm-memfd"):
            s += (f" The control, microvm with a memfd memory backend, needs "
                  f"{cell(fill['qemu-microvm-memfd'], 'ms')} ms, as steadily as ferry: the "
                  "cost comes with the memory type, not with ferry's code. Guests that touch "
                  "much memory early boot slower on ferry than on QEMU on hosts like this "
                  "one; `MADV_HUGEPAGE` on the memfd would help only where `shmem_enabled` "
                  "is `advise` or `always`.")
        n.append(s)
    f_ov, q_ov = med(sm, "ferry", "vmm_overhead_kib"), med(sm, "qemu", "vmm_overhead_kib")
    m_ov = med(sm, "qemu-microvm", "vmm_overhead_kib")
    if f_ov and q_ov:
        s = (f"- Memory: ferry's own overhead is {num(f_ov, 'MiB_k')} MiB against "
             f"{num(q_ov, 'MiB_k')} MiB for QEMU")
        if m_ov:
            s += f" ({num(m_ov, 'MiB_k')} MiB as microvm)"
        f_file, q_file = med(sm, "ferry", "RssFile_kib"), med(sm, "qemu", "RssFile_kib")
        s += (f". QEMU maps far more code and libraries (RssFile {num(q_file, 'MiB_k')} vs "
              f"{num(f_file, 'MiB_k')} MiB) and keeps more anonymous memory of its own (heap, "
              "device models, ROMs, in the pc machine also VGA RAM). Guest RAM resident is "
              "about the same, since the guest touched the same 64 MiB; QEMU's is rounded up "
              "to 2 MiB huge pages and includes what its firmware touched.")
        n.append(s)
    return n


# -- snapshot --------------------------------------------------------------------------------
SNAP_ROWS = [
    ("snapshot time (ms)", "snapshot_ms", "ms"),
    ("snapshot throughput (GiB of guest RAM / s)", "snapshot_gibps", "GiB/s"),
    ("snapshot file size (MiB)", "file_bytes", "MiB_b"),
    ("restore: process start → next `HB` (ms)", "restore_ms", "ms"),
    ("restore: process start → guest runs (ms)", "restore_run_ms", "ms"),
    ("restore throughput (GiB of guest RAM / s)", "restore_gibps", "GiB/s"),
    ("guest clock jump across snapshot+restore (ms)", "guest_time_gap_ms", "ms", "no_ratio"),
    ("host busy before the sample (CPUs, others' load)", "host_busy_cpus_before", "cpus",
     "no_ratio"),
]


def snapshot_section(path, res):
    cfg = res["config"]
    out = [f"Guest: test guest, {cfg['memory_mib']} MiB, {cfg['cpus']} vCPUs. "
           f"{cfg['repeat']} runs per system and workload; median (min–max). Snapshot files "
           f"in `{cfg['snapshot_dir']}` ({cfg.get('snapshot_dir_fs')}). Ratios are of "
           "medians: for times and sizes below 1 is better for ferry, for throughputs above "
           "1 is.", ""]
    for w, cmdline in cfg["workloads"].items():
        sm = res["summary"][w]
        systems = [s for s in cfg["systems"] if s in sm]
        out += [f"### {w}: `{cmdline}`", "", table(sm, systems, SNAP_ROWS), ""]
    out += ["What is measured:", "",
            "- **Snapshot**: ferry: wall time of `ferry snapshot` (pause, write, fsync, "
            "rename). QEMU: QMP `stop` + `migrate` to `exec:cat > FILE` with `max-bandwidth` "
            "unlimited (QEMU's default cap is 128 MiB/s), polled every 2 ms until `completed`, "
            "plus waiting for the `cat` helper to exit and an `fsync` of the file (ferry "
            "fsyncs; on tmpfs an fsync is free). Both write a consistent image of a paused VM. "
            "Throughput is 1 GiB of guest RAM divided by that time.",
            "- **Restore → next `HB`**: host time from spawning the new VMM (ferry `restore`; "
            "QEMU with `-incoming \"exec:cat FILE\"` and a QMP `cont` once loaded) until the "
            "guest prints a heartbeat with a higher number than its last one before the "
            "snapshot.",
            "- **Restore → guest runs**: the same minus the time the guest still waited for "
            "its next 100 ms heartbeat slot, computed from its own clock (next `HB`'s guest "
            "time minus the guest time at which it resumed; for ferry that is in the "
            "snapshot's clock section, for QEMU it is estimated from the last heartbeat and "
            "the host time of `stop`). Restore throughput uses this time.",
            "- **Guest clock jump**: guest time between the last heartbeat before the snapshot "
            "and the first after the restore (about 100 ms if the guest saw no gap).",
            "- After the restore the guest's next `VERIFY` line must be `ok` (its checker "
            "re-reads every dirtier page); " + verify_summary(res) + ".", ""]
    notes = snapshot_notes(res)
    if notes:
        out += ["Notes:", ""] + notes + [""]
    out += ["Commands (WORKLOAD: the guest command line above, quoted):", "", "```sh"]
    for s in cfg["systems"]:
        out.append(f"# {NAMES.get(s, s)}")
        out += ["#   " + c if c.startswith(("QMP:", "both ")) else tidy(c)
                for c in cfg["commands"][s]]
    out += ["```"]
    return "\n".join(out)


def verify_summary(res):
    bad = []
    total = 0
    for w, per in res["samples"].items():
        for s, xs in per.items():
            for x in xs:
                total += 1
                if x.get("verify_after_restore") != "ok" or x.get("source_problems") \
                        or x.get("restore_problems"):
                    bad.append(f"{s}/{w}: {x.get('verify_after_restore')} "
                               f"{x.get('source_problems', []) + x.get('restore_problems', [])}")
    if not bad:
        return f"it was in all {total} runs"
    return f"**it was not in {len(bad)} of {total} runs**: " + "; ".join(bad)


def snapshot_notes(res):
    n = []
    S = res["summary"]
    idle, busy = S.get("idle", {}), S.get("busy", {})

    def r(sm, metric, other="qemu"):
        a, b = med(sm, "ferry", metric), med(sm, other, metric)
        return a / b if a and b else None

    def better(x):
        return "faster" if x < 0.95 else "slower" if x > 1.05 else "about as fast"

    ri, rb = r(idle, "snapshot_ms"), r(busy, "snapshot_ms")
    if ri is not None:
        s = f"- **Idle guest snapshot**: ferry is {better(ri)} ({ri:.2f}× QEMU's time)"
        if ri < 0.95:
            s += (". ferry visits only the allocated extents of its memfd (`SEEK_DATA`/"
                  "`SEEK_HOLE`) where QEMU walks all 1 GiB of guest RAM looking for zero pages")
        s += (". The files hold the same data: both formats skip zero pages (QEMU's adds a "
              "few bytes per zero page, and device RAM such as VGA memory).")
        n.append(s)
    if rb is not None:
        n.append(f"- **Busy guest snapshot** (512 MiB of data): ferry is {better(rb)} "
                 f"({rb:.2f}× QEMU's time).")
    rri, rrb = r(idle, "restore_run_ms"), r(busy, "restore_run_ms")
    if rri is not None and rrb is not None:
        q = busy.get("qemu", {}).get("restore_run_ms") or {}
        s = (f"- **Restore**: ferry is {better(rri)} for the idle guest ({rri:.2f}×) and "
             f"{better(rrb)} for the busy one ({rrb:.2f}×).")
        spread = q.get("min") and q.get("max") and q["max"] > 2 * q["min"]
        if spread:
            s += (f" QEMU's busy restores spread widely ({num(q['min'], 'ms')}–"
                  f"{num(q['max'], 'ms')} ms): its restore is two processes (`cat` reading the "
                  "file into a pipe, QEMU loading from it) that need both of this machine's "
                  "cores, and other people's jobs took one of them during some samples.")
        if spread or rrb < 0.5:
            q4 = med(busy, "qemu-4k", "restore_run_ms")
            if not spread:
                s += (f" QEMU's busy restores took {num(q.get('min'), 'ms')}–"
                      f"{num(q.get('max'), 'ms')} ms in this run, on a quiet host"
                      + (f", longer even than its own 4 KiB-page control ({num(q4, 'ms')} ms)"
                         if q4 and q.get("median") and q4 < q["median"] else "")
                      + "; QEMU's busy restore varies a lot from one session to the next "
                      "here, for reasons not pinned down.")
            s += (" An earlier separate run of QEMU alone "
                  "(`bench/results/extra/snapshot-qemu-busy-only-20261123.json`, "
                  "`--systems qemu --workloads busy --repeat 4`) restored in 0.45–0.55 s, so "
                  "the busy-restore ratio in the table flatters ferry: read it as ferry "
                  "restoring the busy guest somewhat faster than QEMU, not several times.")
        n.append(s)
    b4, i4 = r(busy, "snapshot_ms", "qemu-4k"), r(idle, "snapshot_ms", "qemu-4k")
    if b4 and i4:
        n.append("- The control `QEMU, 4 KiB pages` (the same QEMU with transparent huge pages "
                 "disabled, so its guest RAM is in 4 KiB pages as ferry's memfd is on this "
                 "host) is markedly slower than QEMU with huge pages at everything here: "
                 "mapping, faulting and walking 4 KiB pages is expensive on this nested "
                 "host. ferry gets its figures with 4 KiB pages (the host's `shmem_enabled` "
                 "is `never`, so its memfd cannot have huge pages).")
    n.append("- A perf profile of ferry at commit 74dc305 (busy guest, one run): the snapshot "
             "spends about a third of its time in the kernel copying into the page cache, "
             "~8% copying pages into its batch buffer and ~9% in XXH3 checksums, all in one "
             "thread; the restore is mostly the kernel's copies (reading the file, `pwrite` "
             "into the memfd) plus ~7% XXH3. (An earlier ferry, f3ec6a8, `memcpy`d restored "
             "pages through the mapping and spent ~30% zeroing freshly faulted memfd pages; "
             "a36da01 switched to `pwrite`, and these figures are after that change.)")
    jump_f = med(busy, "ferry", "guest_time_gap_ms")
    jump_q = med(busy, "qemu", "guest_time_gap_ms")
    snap_f = med(busy, "ferry", "snapshot_ms")
    if jump_f and jump_q and jump_f > jump_q + 50:
        n.append(f"- **Guest clock (a ferry bug, it seems)**: the busy guest's clock jumps "
                 f"by {num(jump_f, 'ms')} ms across ferry's snapshot and restore (QEMU: "
                 f"{num(jump_q, 'ms')} ms, one heartbeat period, i.e. no jump). ferry takes "
                 "the kvmclock for the snapshot's clock section after writing guest memory, "
                 "and pausing does not stop the guest clock, so the restored guest finds that "
                 f"the whole pause and write ({num(snap_f, 'ms')} ms here; seconds with a "
                 "disk, and any time the VM sat paused before `ferry snapshot`) passed, "
                 "although its memory is from the moment of the pause. QEMU freezes the clock "
                 "at `stop`. docs/STREAM.md says the guest's clocks \"continue from where "
                 "they stopped\".")
        n.append("- Because of that jump, ferry's restored guest is already past its next "
                 "heartbeat slot and prints at once, while QEMU's waits up to 100 ms: compare "
                 "\"restore → guest runs\", not \"restore → next `HB`\".")
    n.append("- ferry's snapshot always pauses the guest for the whole write (`--resume` "
             "resumes it afterwards). QEMU can also write the file while the guest runs (a "
             "live migration to a file, pausing only for the last dirty pages, at the cost "
             "of a bigger file); that mode is not measured here, the table compares paused "
             "snapshots on both sides.")
    if res["config"].get("snapshot_dir_fs") == "tmpfs":
        n.append("- Files are written to tmpfs, so this compares the VMMs, not the disk. With "
                 "a disk (`--dir /var/tmp`) ferry's fsync is part of its time and the QEMU "
                 "figures get the explicit fsync the script adds.")
    return n


# -- headline --------------------------------------------------------------------------------
def headline(boot, snap, mig=None):
    rows = []
    if boot:
        b = boot["summary"]
        rows.append(("boot to first heartbeat, vs QEMU pc (SeaBIOS emulated here)",
                     b, "ferry", "qemu", "boot_ms", "ms", "ms"))
        if "qemu-microvm" in b:
            rows.append(("boot to first heartbeat, vs QEMU microvm", b, "ferry",
                         "qemu-microvm", "boot_ms", "ms", "ms"))
        rows.append(("VMM memory overhead (RSS without guest RAM)", b, "ferry", "qemu",
                     "vmm_overhead_kib", "MiB_k", "MiB"))
    if snap:
        for w in ("idle", "busy"):
            sm = snap["summary"].get(w)
            if sm:
                rows.append((f"snapshot, {w} guest", sm, "ferry", "qemu", "snapshot_ms",
                             "ms", "ms"))
                rows.append((f"restore until the guest runs, {w} guest", sm, "ferry", "qemu",
                             "restore_run_ms", "ms", "ms"))
    extra = []
    if mig:
        try:
            sys.path.insert(0, BENCH)
            extra = importlib.import_module("report_migration").headline_rows(mig)
        except (ModuleNotFoundError, AttributeError):
            extra = []
    if not rows and not extra:
        return ""
    out = ["| median | ferry | QEMU | ferry / QEMU |", "|---|---|---|---|"]
    for label, sm, a, b, metric, unit, shown in rows:
        va, vb = med(sm, a, metric), med(sm, b, metric)
        out.append(f"| {label} | {num(va, unit)} {shown} | {num(vb, unit)} {shown} | "
                   f"{rcell(va / vb if va and vb else None)} |")
    for label, va, vb, unit in extra:
        shown = (f"{va:.0f}" if va is not None and va >= 100 else
                 f"{va:.1f}" if va is not None else "–"), \
                (f"{vb:.0f}" if vb is not None and vb >= 100 else
                 f"{vb:.1f}" if vb is not None else "–")
        out.append(f"| {label} | {shown[0]} {unit} | {shown[1]} {unit} | "
                   f"{rcell(va / vb if va and vb else None)} |")
    return "\n".join(out)


# -- live migration --------------------------------------------------------------------------
def migration_section(path, res, suite=None):
    try:
        sys.path.insert(0, BENCH)
        mod = importlib.import_module("report_migration")
    except ModuleNotFoundError:
        mod = None
    if mod is not None:
        try:
            return mod.render(res, path=path, suite=suite)
        except TypeError:                       # an older render(result)
            return mod.render(res)
    if res.get("report_markdown"):
        return res["report_markdown"]
    return generic_section(path, res)


def generic_section(path, res):
    """A result's "summary" as tables: {system: {metric: summary}} or {group: {system:
    {metric: summary}}}."""
    out = [f"From `{rel(path)}`.", ""]
    sm = res.get("summary", {})
    groups = [("", sm)] if "ferry" in sm else list(sm.items())
    for name, per in groups:
        if not isinstance(per, dict):
            continue
        systems = [s for s in per if isinstance(per[s], dict)]
        if "ferry" not in systems:
            continue
        metrics = [k for k, v in per["ferry"].items() if isinstance(v, dict) and "median" in v]
        if name:
            out += [f"### {name}", ""]
        out += [table(per, ["ferry"] + [s for s in systems if s != "ferry"],
                      [(k, k, "") for k in metrics]), ""]
    return "\n".join(out)


KEEP_RE = re.compile(r"<!-- BEGIN keep:([\w-]+) -->\n.*?<!-- END keep:\1 -->", re.S)


def kept_blocks():
    """Hand-written sections (between `<!-- BEGIN keep:NAME -->` and `<!-- END
    keep:NAME -->`) of the current page: carried over as they are, in their order."""
    try:
        with open(DOC) as f:
            return [m.group(0) for m in KEEP_RE.finditer(f.read())]
    except FileNotFoundError:
        return []


def virtio_section(path, res):
    """The virtio device benchmark (bench/bench_virtio.py): its own markdown if it
    rendered one, else the tables of its summary."""
    try:
        sys.path.insert(0, BENCH)
        return f"From `{rel(path)}`. " + importlib.import_module("bench_virtio").render(res)
    except (ModuleNotFoundError, AttributeError, KeyError):
        return generic_section(path, res)


def existing_migration_text():
    try:
        with open(DOC) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    if MIG_BEGIN in text and MIG_END in text:
        return text.split(MIG_BEGIN, 1)[1].split(MIG_END, 1)[0].strip("\n")
    return None


MIG_PLACEHOLDER = """*Not measured yet.* This section is reserved for the live-migration benchmarks
(ferry vs QEMU pre-copy/post-copy: total time, downtime, data sent, guest-visible pause,
for the same idle and busy guests). `bench/report.py` fills it in from the newest
`bench/results/migration-*.json` (via `bench/report_migration.py: render(result)` if
present); until then it keeps whatever is written between the markers."""


# -- document ----------------------------------------------------------------------------------
def suite_timing(suite_path):
    """A sentence on how long the `make bench` run behind the figures took."""
    if not suite_path:
        return ""
    cfg = load(suite_path)["config"]
    parts = cfg.get("part_seconds") or {}
    total = cfg.get("make_elapsed_s") or cfg.get("elapsed_s")
    if not total:
        return ""
    m = load(suite_path)["machine"]
    s = (f"The run behind these figures (`{rel(suite_path)}`) took **{total / 60:.1f} min** "
         f"{'from `make bench` to its result file' if cfg.get('make_elapsed_s') else 'for the measurements'}"
         f" on {m.get('nproc')} CPUs (budget: {cfg.get('budget_s', 1800) // 60} min): "
         + ", ".join(f"{k} {v / 60:.1f} min" for k, v in parts.items())
         + "; plots and this page take a few seconds more.")
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", help="a bench-*.json suite file (make bench)")
    ap.add_argument("--boot")
    ap.add_argument("--snapshot")
    ap.add_argument("--migration")
    ap.add_argument("--virtio")
    ap.add_argument("--out", default=DOC)
    args = ap.parse_args()
    suite = args.bench or newest_suite()
    chosen = {}
    for kind in ("boot", "snapshot", "migration", "virtio"):
        forced = getattr(args, kind)
        chosen[kind] = (forced, load(forced)) if forced else pick(kind, suite, bool(args.bench))
    boot, boot_res = chosen["boot"]
    snap, snap_res = chosen["snapshot"]
    mig, mig_res = chosen["migration"]
    virtio, virtio_res = chosen["virtio"]
    used = [(k, p, r) for k, (p, r) in chosen.items() if p]
    from_suite = next((p for _, p, _ in used if load(p).get("benchmark") == "suite"), None)
    reps = {"boot_repeat": 5, "snapshot_repeat": 3, "repeat": 3}
    if from_suite:
        reps.update({k: load(from_suite)["config"][k] for k in reps
                     if k in load(from_suite)["config"]})

    doc = ["# ferry benchmarks", "",
           "<!-- Generated by bench/report.py from bench/results/*.json; edit the script, "
           "not this file (except between the live-migration markers and inside "
           "`keep:` blocks, which are carried over as written). -->", "",
           "ferry against QEMU on the same `/dev/kvm`, the same test guest "
           "(`build/guest/testguest`) and the same workloads. Read the notes under each "
           "table: they say where ferry is worse and why, and where a ratio flatters it.",
           "",
           "## Caveats", "",
           "- `/dev/kvm` here is **PVM** (no VMX/SVM; see `../shared/PLATFORM.md`): guest "
           "user mode runs natively, guest kernel mode and firmware are emulated, VM exits "
           "are expensive. Anything that runs guest kernel code or firmware is far slower "
           "than on a real server, for both VMMs alike.",
           "- The machine has 2 CPUs and is shared with other people's builds and tests. "
           "The scripts run one VM at a time, wait (briefly) for a quiet host before each "
           "sample and record how busy it was; the min–max ranges show the noise that is "
           "left. Few runs per point: treat differences under ~20% as noise.",
           "- QEMU is Debian's 7.2 with its defaults except where stated; its reference "
           "command line is the one the project uses (`-cpu host,arch-capabilities=off`, "
           "pc machine).",
           "", "## Summary", "",
           headline(boot_res, snap_res, mig_res), "",
           "Below 1 is better for ferry. Details, ranges and the reasons are in the "
           "sections below. The biggest caveat: the QEMU pc boot time is almost all "
           "firmware, emulated on this host; microvm is the fair boot comparison.", "",
           "Runs used:", "", machine_block(used), "",
           "## Reproduce", "",
           "```sh",
           "make bench     # everything below, then the plots and this page",
           "BENCH_REPEAT=1 make bench               # one run per scenario and system",
           "BENCH_ONLY=dirty-20k,idle-1g make bench  # some migration scenarios (or boot, "
           "snapshot, migration)",
           "```", "",
           "`make bench` installs what it needs (`scripts/deps.sh bench`: qemu-system-x86, "
           "gnuplot-nox), builds `build/ferry` and the test guest, and runs "
           f"`bench/bench_all.py`: the boot part ({reps['boot_repeat']} runs per system, "
           f"`BENCH_BOOT_REPEAT`), the snapshot part ({reps['snapshot_repeat']}, "
           f"`BENCH_SNAPSHOT_REPEAT`) and every live-migration scenario "
           f"({reps['repeat']}, `BENCH_REPEAT`), one VM pair at a time. It writes "
           "one result file, `bench/results/bench-<timestamp>.json` (machine, kernel, QEMU "
           "and ferry versions, settings, every sample, the exact commands), draws "
           "`bench/plots/*.png` (`bench/plot.py`, gnuplot) and regenerates this page "
           "(`bench/report.py`). A run with `BENCH_ONLY` leaves the plots and this page "
           "alone (`python3 bench/report.py --bench FILE` renders it on request). "
           + suite_timing(from_suite), "",
           "The parts also run on their own:", "",
           "```sh",
           "make ferry guest                      # build/ferry, build/guest/testguest",
           "scripts/deps.sh bench                 # qemu-system-x86, gnuplot-nox (as root, if missing)",
           "python3 bench/bench_boot.py           # --repeat N (default 5)",
           "python3 bench/bench_snapshot.py       # --repeat N (default 3), --dir DIR",
           "python3 bench/bench_migration.py      # --repeat N (default 3), --only a,b",
           "python3 bench/plot.py                 # bench/plots/*.png from the newest suite file",
           "python3 bench/report.py               # rewrites docs/BENCHMARKS.md",
           "```", "",
           "The scripts copy `build/ferry` and the test guest to a private directory when "
           "they start, so a rebuild in the shared tree cannot swap them mid-run; \"Runs "
           "used\" lists uncommitted changes in the tree that was measured. To measure a "
           "clean commit rather than the working tree, build it apart and point the scripts "
           "(and `make bench`) at it:", "",
           "```sh",
           "C=$(git rev-parse --short HEAD); D=/tmp/ferry-$C; mkdir -p $D",
           "git archive HEAD | tar -x -C $D && (cd $D && meson setup build && ninja -C build ferry "
           "&& make -C guest BUILD=$D/build/guest)",
           "export FERRY=$D/build/ferry GUEST=$D/build/guest/testguest FERRY_COMMIT=$C",
           "```", "",
           "Each script on its own writes `bench/results/<kind>-<timestamp>.json` and prints "
           "one line per sample on stderr. `bench/qmp.py` is the QMP client they use.", ""]
    if boot:
        doc += ["## Boot time and idle memory", "", boot_section(boot, boot_res), ""]
    if snap:
        doc += ["## Snapshot and restore", "", snapshot_section(snap, snap_res), ""]
    mig_text = migration_section(mig, mig_res, suite=from_suite) if mig else \
        existing_migration_text()
    doc += ["## Live migration", "", MIG_BEGIN, mig_text or MIG_PLACEHOLDER, MIG_END, ""]
    if virtio:
        doc += ["## virtio devices", "", virtio_section(virtio, virtio_res), ""]
    for block in kept_blocks():
        doc += [block, ""]
    text = "\n".join(doc)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {rel(args.out)} from "
          f"{', '.join(sorted({rel(p) for _, p, _ in used})) or 'nothing'}", file=sys.stderr)


if __name__ == "__main__":
    main()
