#!/usr/bin/python3
"""Guest-visible gap of a live migration, measured from the guest's debug-console ticks.

The test guest started with `tick.us=1000` writes one byte to I/O port 0xe9 every 1 ms of
its own time. Both VMMs (the migration source and the destination) send those bytes to
the same FIFO; one reader timestamps every read() with time.monotonic_ns() (the host's
CLOCK_MONOTONIC, the same clock as time.monotonic() in the benchmark). The largest
interval between consecutive arrivals in a window around the migration, minus the 1 ms
tick period, is how long the guest was visibly stopped (or could not get its ticks out).

The reader runs as a separate process (no GIL between it and the benchmark's own work):

    python3 bench/gap_reader.py FIFO OUT        # usually started by GapReader below

It opens FIFO for reading (and once for writing itself, so that the FIFO never reports
end-of-file while no VMM has it open, e.g. between the source's exit and nothing), writes
`# ready` to OUT, then one line `<t_ns> <nbytes>` per read(); SIGTERM flushes and ends it.

From a benchmark:

    g = GapReader(tmpdir)            # creates tmpdir/debugcon.fifo and starts the reader
    ... VMMs with --debugcon g.fifo / -chardev file,path=g.fifo ...
    arrivals = g.stop()              # [(t_ns, nbytes)]
    gap = analyse(arrivals, t_from_ns, t_to_ns)
"""
import os
import signal
import sys
import time

PERIOD_NS = 1_000_000           # tick.us=1000


class GapReader:
    """Starts the reader process (via benchlib.Proc, so it is killed with everything else
    the benchmark started) on a new FIFO in `tmpdir`."""

    def __init__(self, tmpdir, name="debugcon", timeout=5.0):
        import benchlib as B       # only needed by the benchmark side
        self.fifo = os.path.join(tmpdir, name + ".fifo")
        self.out = os.path.join(tmpdir, name + ".times")
        for p in (self.fifo, self.out):
            if os.path.exists(p):
                os.unlink(p)
        os.mkfifo(self.fifo, 0o600)
        self.proc = B.Proc([sys.executable, os.path.abspath(__file__), self.fifo, self.out],
                           os.path.join(tmpdir, name + ".reader.log"))
        deadline = time.monotonic() + timeout
        while not (os.path.exists(self.out) and os.path.getsize(self.out) > 0):
            if not self.proc.alive():
                raise RuntimeError(f"gap reader exited: {self.proc.output()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise TimeoutError("gap reader did not start")
            time.sleep(0.005)
        self.arrivals = None

    def stop(self):
        """Ends the reader; returns [(t_ns, nbytes)] in arrival order."""
        if self.arrivals is None:
            self.proc.kill(grace=5.0)
            self.arrivals = load(self.out)
            for p in (self.fifo,):
                if os.path.exists(p):
                    os.unlink(p)
        return self.arrivals


def load(path):
    out = []
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) == 2:
                out.append((int(parts[0]), int(parts[1])))
    return out


def analyse(arrivals, t_from_ns, t_to_ns, period_ns=PERIOD_NS, ref_ns=None, top=3):
    """Largest interval between consecutive arrivals inside [t_from_ns, t_to_ns].

    Returns a dict: max_interval_ms, gap_ms (= max interval minus the tick period, the
    time the guest was visibly stopped), gap_start_ms (where it began, relative to
    `ref_ns`, default t_from_ns), bytes and reads in the window, the `top` largest
    intervals, and `open_ms`: the time from the last arrival to t_to_ns. If ticks stopped
    for good (the guest never ran on the destination) open_ms is large and gap_ms is at
    least that; `open` is then True."""
    ref = t_from_ns if ref_ns is None else ref_ns
    win = [(t, n) for t, n in arrivals if t_from_ns <= t <= t_to_ns]
    res = {"bytes": sum(n for _, n in win), "reads": len(win),
           "window_ms": (t_to_ns - t_from_ns) / 1e6}
    if len(win) < 2:
        res.update(max_interval_ms=None, gap_ms=None, gap_start_ms=None, top_ms=[],
                   open_ms=None, open=True)
        return res
    ivals = sorted(((win[i + 1][0] - win[i][0], win[i][0]) for i in range(len(win) - 1)),
                   reverse=True)
    best, at = ivals[0]
    open_ns = t_to_ns - win[-1][0]
    is_open = open_ns > max(best, 50 * period_ns)
    if is_open:
        best, at = open_ns, win[-1][0]
    res.update(max_interval_ms=best / 1e6, gap_ms=max(0.0, (best - period_ns) / 1e6),
               gap_start_ms=(at - ref) / 1e6,
               top_ms=[[d / 1e6, (t - ref) / 1e6] for d, t in ivals[:top]],
               open_ms=open_ns / 1e6, open=is_open)
    return res


# ---- the reader process ----------------------------------------------------------------
def _reader(fifo, out):
    rd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    keep = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)    # never EOF while we run
    os.set_blocking(rd, True)
    f = open(out, "w", buffering=1 << 20)
    f.write("# ready\n")
    f.flush()

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    mono = time.monotonic_ns
    try:
        while True:
            data = os.read(rd, 65536)
            t = mono()
            f.write(f"{t} {len(data)}\n")
    finally:
        f.flush()
        f.close()
        os.close(keep)
        os.close(rd)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: gap_reader.py FIFO OUT", file=sys.stderr)
        sys.exit(2)
    _reader(sys.argv[1], sys.argv[2])
