"""`dessert-mcp` started by hand in a terminal: a real pseudo-terminal (tmux), a hint on stderr, and Ctrl+C.

tmux gives the server a real tty on stdin, and `send-keys C-c` is the terminal's own SIGINT to the foreground
process group, as a person pressing Ctrl+C. (`make system-deps` installs tmux.)
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dessert_mcp.stdio import TTY_HINT
from tests.support import STARTUP_TIMEOUT_S

TMUX = shutil.which("tmux")
WAIT_S = STARTUP_TIMEOUT_S  # start-up in a loaded machine; Ctrl+C must end it well within this
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is missing; run `make system-deps`")


class Pane:
    """One tmux pane running a command on a private tmux server."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        assert TMUX is not None
        done = subprocess.run([TMUX, "-S", str(self.socket), *args], capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def text(self) -> str:
        # -J joins wrapped lines, so a long line reads as one.
        return self.tmux("capture-pane", "-p", "-J", "-t", "t")

    def dead(self) -> bool:
        return self.tmux("display-message", "-p", "-t", "t", "#{pane_dead}").strip() == "1"

    def dead_status(self) -> int | None:
        """The exit status, once tmux has it: tmux 3.3 marks some panes dead without ever recording one."""
        shown = self.tmux("display-message", "-p", "-t", "t", "#{pane_dead} #{pane_dead_status}")
        dead, _, status = shown.strip().partition(" ")
        return int(status) if dead == "1" and status else None

    def wait_for(self, condition: str, check: Callable[[], bool]) -> None:
        """Poll the pane until `check()` is true: a terminal has no event to await."""
        deadline = time.monotonic() + WAIT_S
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {condition}; the pane shows:\n{self.text()}"
            time.sleep(0.05)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Pane]:
    """`dessert-mcp` in a 200-column tmux pane that stays on screen after it exits, so its status can be read."""
    pane = Pane(tmp_path / "tmux.sock")
    yield pane
    subprocess.run([TMUX or "tmux", "-S", str(tmp_path / "tmux.sock"), "kill-server"], capture_output=True, check=False)


def start(pane: Pane, env: dict[str, str], *args: str) -> None:
    """Start the private tmux server with `env` (its panes inherit it) and the command in pane `t`."""
    # `exec`: the pane's process is the server itself, not a shell waiting on it (which SIGINT would kill first).
    command = "exec " + shlex.join([sys.executable, "-m", "dessert_mcp", *args])
    size = ["-x", "200", "-y", "50"]
    assert TMUX is not None
    keep = [";", "set-option", "-t", "t", "remain-on-exit", "on"]
    subprocess.run(
        [TMUX, "-S", str(pane.socket), "-f", "/dev/null", "new-session", "-d", "-s", "t", *size, command, *keep],
        env=env,
        check=True,
        timeout=10,
    )


def test_started_in_a_terminal_it_says_what_it_waits_for_and_ctrl_c_ends_it(terminal: Pane, tmp_path: Path) -> None:
    env = sandbox_env_base() | {"HOME": str(tmp_path), "TERM": "xterm"}
    start(terminal, env, "--sandbox")
    terminal.wait_for("the hint", lambda: "Ctrl+C quits." in terminal.text())
    assert TTY_HINT in terminal.text().replace("\n", "")
    terminal.tmux("send-keys", "-t", "t", "C-c")
    terminal.wait_for("the exit", terminal.dead)
    # The exact status is pinned by the piped-process test below; here tmux reports it only some of the time.
    assert terminal.dead_status() in (None, 128 + signal.SIGINT)
    shown = terminal.text()
    assert "Traceback" not in shown
    assert "KeyboardInterrupt" not in shown


def test_the_hint_names_the_two_ways_to_try_it() -> None:
    assert "waiting for an MCP client on stdin" in TTY_HINT
    assert "`dessert-mcp demo`" in TTY_HINT
    assert "`dessert-mcp --sandbox`" in TTY_HINT
    assert "MCP Inspector" in TTY_HINT
    assert "Ctrl+C quits." in TTY_HINT


def test_a_host_never_sees_the_hint_and_sigint_ends_the_server_quietly(tmp_path: Path) -> None:
    env = sandbox_env_base() | {"HOME": str(tmp_path)}
    with subprocess.Popen(
        [sys.executable, "-m", "dessert_mcp", "--sandbox"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write('{"jsonrpc": "2.0", "id": 1, "method": "ping"}\n')
        proc.stdin.flush()
        assert '"id":1' in proc.stdout.readline().replace(" ", "")  # serving: the SIGINT handler is in place
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 128 + signal.SIGINT
    assert "waiting for an MCP client" not in stderr
    assert "Traceback" not in stderr


def sandbox_env_base() -> dict[str, str]:
    """This environment without DESSERT_* variables (the tests pass --sandbox), at the default log level."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DESSERT_")}
