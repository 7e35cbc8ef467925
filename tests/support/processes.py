"""Processes the tests and the benchmarks start: free loopback ports, a process started and waited for until it is
ready (under the suite's one start-up bound), its memory and CPU read from /proc, and a stop that always ends it,
with everything it printed kept in a file.

The benchmarks import this module too (bench/_repo.py puts the repository on their path), so that one harness
serves both; nothing here may import from bench/.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx2

from tests.support import STARTUP_TIMEOUT_S

STOP_TIMEOUT_S = 15.0
"""How long a stopped process may take to exit after SIGTERM before it is killed."""


USER_DIRS: Final = ("XDG_DATA_HOME", "XDG_STATE_HOME")
"""Where the ledger and the auth wing keep their databases by default (the platform's user data and state dirs)."""


@contextlib.contextmanager
def private_user_dirs() -> Iterator[dict[str, str]]:
    """USER_DIRS in a temporary directory while the block runs, set in this process's environment (so servers built
    in this process, and every process started with that environment, inherit them): a benchmark run never writes
    to the real user's data. Yields them, for an environment built from scratch."""
    saved = {name: os.environ.get(name) for name in USER_DIRS}
    with tempfile.TemporaryDirectory(prefix="dessert-user-dirs-") as tmp:
        dirs = {name: str(Path(tmp) / name.lower()) for name in USER_DIRS}
        os.environ.update(dirs)
        try:
            yield dirs
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class NotStarted(RuntimeError):
    """A process exited, or was not ready within the start-up bound; the message ends with what it printed."""


def free_ports(count: int) -> list[int]:
    """`count` different ports that were free on 127.0.0.1 a moment ago (all held at once, so never the same twice)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    (port,) = free_ports(1)
    return port


@dataclass
class Process:
    """A process `started` runs: its output (stdout and stderr together) goes to `log`."""

    popen: subprocess.Popen[bytes]
    log: Path
    port: int | None
    group: bool

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>, for a process given a port."""
        assert self.port is not None, "this process was started without a port"
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout_s: float) -> int:
        """The exit status, once the process has exited; `subprocess.TimeoutExpired` after `timeout_s`."""
        return self.popen.wait(timeout=timeout_s)

    def stop(self) -> int:
        """SIGTERM (to its whole group, when started as one); SIGKILL if it has not exited within STOP_TIMEOUT_S.
        Returns the exit status."""
        self._signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            return self.popen.wait()
        finally:
            if self.group:  # what it started in the background (a shell's servers) goes with it
                self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.group:
                os.killpg(self.popen.pid, sig)
            else:
                self.popen.send_signal(sig)


Ready = Callable[[Process], bool]
"""Whether a starting process is ready: asked every 50 ms until it is, the process exits, or the bound passes."""


def healthz(process: Process) -> bool:
    """Ready when GET /healthz answers 200."""
    try:
        return httpx2.get(f"{process.url}/healthz", timeout=1).status_code == 200
    except httpx2.TransportError:
        return False


def accepting(process: Process) -> bool:
    """Ready when its port accepts a connection (for servers with no health route)."""
    assert process.port is not None
    try:
        socket.create_connection(("127.0.0.1", process.port), timeout=1).close()
    except OSError:
        return False
    return True


def printed(pattern: str) -> Ready:
    """Ready when its output matches `pattern` (a regular expression)."""
    return lambda process: re.search(pattern, process.output()) is not None


def immediately(process: Process) -> bool:
    """Ready as soon as it is spawned: for a process that runs to its end (see `Process.wait`)."""
    return True


@contextlib.contextmanager
def started(
    argv: list[str],
    *,
    env: Mapping[str, str],
    ready: Ready,
    log: Path | None = None,
    port: int | None = None,
    group: bool = False,
    timeout_s: float = STARTUP_TIMEOUT_S,
    **popen: Any,
) -> Iterator[Process]:
    """Run `argv` (each "{port}" in it replaced by `port`) until the block ends, yielding it once `ready` says so.

    Its output (stderr, and stdout unless `stdout=` says otherwise) goes to `log` (a temporary file when none is
    given). `group`: the process leads a process group of its
    own, stopped as a whole (a shell and whatever it starts). More `subprocess.Popen` arguments (cwd, preexec_fn)
    pass through. Raises `NotStarted` with the output's end if it exits first or is not ready within `timeout_s`,
    whose default is the suite's one start-up bound.
    """
    assert timeout_s >= 60, "a start-up bound must hold on a busy 2-core machine"
    with contextlib.ExitStack() as stack:
        if log is None:
            log = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dessert-process-"))) / "output.log"
        argv = [arg.replace("{port}", str(port)) for arg in argv]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                env=dict(env),
                stdin=popen.pop("stdin", subprocess.DEVNULL),
                stdout=popen.pop("stdout", out),
                stderr=subprocess.STDOUT,
                start_new_session=group,
                **popen,
            )
        process = Process(proc, log, port, group)
        try:
            deadline = time.monotonic() + timeout_s
            while not ready(process):  # another process: nothing to await but its answer
                if proc.poll() is not None:
                    raise NotStarted(f"{argv[:3]} exited with {proc.returncode} before it was ready:\n{_tail(process)}")
                if time.monotonic() > deadline:
                    raise NotStarted(f"{argv[:3]} was not ready within {timeout_s:g} s:\n{_tail(process)}")
                time.sleep(0.05)
            yield process
        finally:
            process.stop()


def _tail(process: Process) -> str:
    return process.output()[-4000:]


def rss_mb(pid: int) -> float:
    """The process's resident memory now, in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU time the process has used so far (user + system): less swayed by the rest of a shared machine than
    the rate of work it reaches."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
