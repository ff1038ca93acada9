"""Process plumbing shared by every scenario: start, stop, read a child's first line, RSS.

Every child starts in its own session, so a Ctrl-C in the terminal reaches only the
harness, which then stops the children itself, in order, from its `finally`.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

STOP_GRACE_S = 20
_spawned: list[subprocess.Popen] = []


def make_tmpdir(under: Path = Path("/tmp")) -> Path:
    # Short on purpose: unix sockets live below it and sun_path holds only 108 bytes.
    return Path(tempfile.mkdtemp(prefix="mwb-", dir=under))


def spawn(argv: list[str], log_path: Path, **kwargs) -> subprocess.Popen:
    """Start argv in its own session with stderr (and stdout unless given) appended to log_path."""
    with open(log_path, "ab") as log:
        kwargs.setdefault("stdout", log)
        proc = subprocess.Popen(argv, stderr=log, start_new_session=True, **kwargs)
    _spawned.append(proc)
    return proc


def terminate_all() -> None:
    """SIGTERM every child still running, by pid, without waiting: the stops that follow then
    wait for children that are already winding down together, not one after another."""
    for proc in _spawned:
        if proc.poll() is None:
            proc.terminate()


def stop(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, wait, then SIGKILL the whole process group if it outstays its grace."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            proc.wait(5)
    else:
        kill_group(proc.pid)  # its own children may have outlived it
    if proc.stdout:
        proc.stdout.close()


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def free_tcp_ports(count: int) -> list[int]:
    """Ports nothing listens on now, all held open until all are chosen so they differ. Another
    process could take one before its user binds it; on a bench machine that does not happen."""
    held = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("0.0.0.0", 0))
            held.append(sock)
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def read_first_line(proc: subprocess.Popen, deadline_s: float) -> str:
    """The child's stdout line 1 (how a child says which port it bound), within deadline_s."""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(deadline_s):
            raise TimeoutError(f"{proc.args} printed nothing within {deadline_s} s")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{proc.args} exited with {proc.wait()} before printing its port")
    return line.strip()


def wait_until(check, deadline_s: float, what: str, interval_s: float = 0.02):
    """Poll check() until it returns something truthy; raise TimeoutError after deadline_s."""
    end = time.monotonic() + deadline_s
    last_error: Exception | None = None
    while time.monotonic() < end:
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError, KeyError) as err:
            last_error = err
        time.sleep(interval_s)
    raise TimeoutError(f"{what} not ready within {deadline_s} s (last error: {last_error})")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def busy_cpu_s() -> float:
    """CPU seconds every process on this machine has used since boot (all of /proc/stat's
    cpu line but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / CLOCK_TICKS


def tree_cpu_s(root_pid: int) -> float:
    """CPU seconds used by root_pid and its descendants, those they have reaped included
    (a helper run per request, like tesseract, counts in its parent once it has exited)."""
    total = 0
    for process in process_tree(root_pid):
        try:
            with open(f"/proc/{process.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return total / CLOCK_TICKS


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident set size (or VmHWM, its peak) from /proc/<pid>/status; 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def pss_kib(pid: int) -> int:
    """Proportional set size (shared pages split among their sharers, proc(5) smaps_rollup):
    a sum of PSS counts a library the Python programs share once, a sum of RSS once each."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss(pid: int) -> bool:
    """Make VmHWM start again from the current RSS (proc(5): "5" to clear_refs, Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRss:
    """The peak RSS of named processes over a `with` block: what a memory limit would see.

    VmRSS is sampled on a thread; a burst shorter than the sampling interval could slip
    between samples, so where the kernel lets us reset VmHWM (its own high-water mark) we
    take that too, and report whichever is higher.
    """

    def __init__(self, pids: dict[str, int], every_s: float):
        self.pids, self.every_s = pids, every_s
        self.hwm_reset = {name: reset_peak_rss(pid) for name, pid in pids.items()}
        self.peak_kib = {name: rss_kib(pid) for name, pid in pids.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            self.peak_kib[name] = max(self.peak_kib[name], rss_kib(pid))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        for name, pid in self.pids.items():
            if self.hwm_reset[name]:
                self.peak_kib[name] = max(self.peak_kib[name], rss_kib(pid, "VmHWM"))


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    name: str


def process_tree(root_pid: int) -> list[ProcessInfo]:
    """root_pid and all its descendants, named by what they run (`meshworker run X` -> X)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (ppid := _parent_pid(int(entry))) is not None:
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop(0)
        found.append(ProcessInfo(pid, _process_name(pid)))
        todo.extend(sorted(children.get(pid, [])))
    return found


def _parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name in parentheses may itself hold spaces: split after the last ')'.
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    if "run" in argv[:-1] and any(a.endswith("meshworker") for a in argv):
        return argv[argv.index("run") + 1]
    if not argv:
        return "?"
    # A Python console script shows as `python3 <script> ...`: the script is the name.
    is_python = Path(argv[0]).name.startswith("python") and len(argv) > 1
    return Path(argv[1] if is_python else argv[0]).name
