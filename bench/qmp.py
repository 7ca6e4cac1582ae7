"""A small QMP (QEMU Machine Protocol) client over a unix socket. Standard library only.

    from qmp import Qmp
    with Qmp("/tmp/vm.qmp", timeout=10) as q:      # connects, negotiates capabilities
        q.cmd("stop")
        q.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
        q.cmd("migrate", uri="exec:cat > /tmp/vm.mig")
        info = q.wait_migration(timeout=120)        # polls query-migrate until it ends
        q.cmd("quit")

QEMU starts serving QMP only once its socket exists; `Qmp.connect_retry()` waits for it.
Asynchronous events that arrive while a command is running are queued and can be read
with `events()` / `wait_event()`. Errors from QEMU raise `QmpError` (with the error class
and description); a closed connection raises `ConnectionError`; a timeout `TimeoutError`.
Hyphenated argument names (`max-bandwidth`) are passed as `**{"max-bandwidth": ...}`.
"""
import json
import socket
import time


class QmpError(Exception):
    """QEMU answered a command with {"error": {"class": ..., "desc": ...}}."""

    def __init__(self, command, error):
        self.command = command
        self.error_class = error.get("class", "")
        self.desc = error.get("desc", "")
        super().__init__(f"{command}: {self.error_class}: {self.desc}")


class Qmp:
    def __init__(self, path, timeout=10.0, negotiate=True):
        """Connects to the QMP socket at `path` and (by default) leaves capabilities
        negotiation mode with `qmp_capabilities`. `timeout` is per read/command."""
        self.path = path
        self.timeout = timeout
        self.greeting = None
        self._events = []
        self._buf = b""
        self._id = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
            self.greeting = self._read_message(time.monotonic() + timeout)
            if "QMP" not in self.greeting:
                raise ConnectionError(f"not a QMP greeting: {self.greeting!r}")
            if negotiate:
                self.cmd("qmp_capabilities")
        except BaseException:
            self.sock.close()
            raise

    @classmethod
    def connect_retry(cls, path, timeout=10.0, interval=0.005, **kw):
        """Connects as soon as QEMU listens on `path` (retrying every `interval` s)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return cls(path, **kw)
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no QMP server on {path} after {timeout} s")
                time.sleep(interval)

    # -- context manager ------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- wire -----------------------------------------------------------------------------
    def _read_message(self, deadline):
        """One JSON message (QMP sends one per line, terminated by CRLF)."""
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"QMP {self.path}: no reply in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError(f"QMP {self.path}: no reply in time") from None
            if not chunk:
                raise ConnectionError(f"QMP {self.path}: connection closed")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _send(self, obj):
        self.sock.sendall(json.dumps(obj).encode() + b"\r\n")

    # -- commands -------------------------------------------------------------------------
    def cmd(self, name, timeout=None, **args):
        """Executes command `name` with keyword `args`; returns its "return" value.
        Events received meanwhile are queued for events()/wait_event().
        (For a command that takes an argument called "timeout", use execute().)"""
        return self.execute(name, args, timeout)

    def execute(self, name, args=None, timeout=None):
        """Executes command `name` with the argument dict `args`; returns "return"."""
        self._id += 1
        msg = {"execute": name, "id": self._id}
        if args:
            msg["arguments"] = args
        self._send(msg)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            reply = self._read_message(deadline)
            if "event" in reply:
                self._events.append(reply)
                continue
            if reply.get("id") != self._id:
                continue                    # a stale reply to an earlier, timed-out command
            if "error" in reply:
                raise QmpError(name, reply["error"])
            return reply.get("return")

    def hmp(self, command_line):
        """Runs a human monitor command (e.g. "info status"); returns its text output."""
        return self.cmd("human-monitor-command", **{"command-line": command_line})

    # -- events ---------------------------------------------------------------------------
    def events(self, clear=True):
        """Events received so far (and, without blocking, any already on the socket)."""
        self._poll_nonblocking()
        out = list(self._events)
        if clear:
            self._events.clear()
        return out

    def _poll_nonblocking(self):
        self.sock.setblocking(False)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self._buf += chunk
        except (BlockingIOError, InterruptedError):
            pass
        finally:
            self.sock.settimeout(self.timeout)
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            msg = json.loads(line)
            if "event" in msg:
                self._events.append(msg)

    def wait_event(self, name, timeout=None, match=None):
        """Returns the first event called `name` (optionally with `match(event)` true),
        consuming it and any events before it that were queued."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            while self._events:
                ev = self._events.pop(0)
                if ev["event"] == name and (match is None or match(ev)):
                    return ev
            msg = self._read_message(deadline)
            if "event" in msg:
                self._events.append(msg)

    # -- helpers --------------------------------------------------------------------------
    def status(self):
        """The run state: "running", "paused", "inmigrate", "postmigrate", ..."""
        return self.cmd("query-status")["status"]

    def wait_status(self, wanted, timeout=None, interval=0.005):
        """Polls query-status until the run state is in `wanted` (a str or a set)."""
        wanted = {wanted} if isinstance(wanted, str) else set(wanted)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            st = self.status()
            if st in wanted:
                return st
            if time.monotonic() >= deadline:
                raise TimeoutError(f"run state still {st!r}, wanted {sorted(wanted)}")
            time.sleep(interval)

    def wait_migration(self, timeout=None, interval=0.01, on_poll=None):
        """Polls query-migrate until the status is "completed" (returns its reply) or
        "failed"/"cancelled" (raises QmpError). `on_poll(info)` is called on every poll,
        e.g. to record progress for a live-migration benchmark."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            info = self.cmd("query-migrate")
            if on_poll:
                on_poll(info)
            st = info.get("status")
            if st == "completed":
                return info
            if st in ("failed", "cancelled"):
                raise QmpError("migrate", {"class": st,
                                           "desc": info.get("error-desc", "migration " + st)})
            if time.monotonic() >= deadline:
                raise TimeoutError(f"migration still {st!r} after timeout")
            time.sleep(interval)


if __name__ == "__main__":
    # Tiny manual tool: python3 bench/qmp.py SOCKET COMMAND [JSON-ARGS]
    import sys

    if len(sys.argv) < 3:
        print("usage: qmp.py SOCKET COMMAND [JSON-ARGUMENTS]", file=sys.stderr)
        sys.exit(2)
    with Qmp(sys.argv[1]) as q:
        args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
        print(json.dumps(q.cmd(sys.argv[2], **args), indent=2))
        for ev in q.events():
            print(json.dumps(ev), file=sys.stderr)
    sys.exit(0)
