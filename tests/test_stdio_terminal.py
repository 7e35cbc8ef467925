"""`dessert-mcp` started by hand in a terminal: a real pseudo-terminal (tmux), a hint on stderr, and Ctrl+C.

tmux gives the server a real tty on stdin, and `send-keys C-c` is the terminal's own SIGINT to the foreground
process group, as a person pressing Ctrl+C. (`make system-deps` installs tmux.)
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dessert_mcp.cli import _parser
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

    def exit_status(self) -> int | None:
        """The server's exit status, once it has exited (recorded by the pane's launcher: tmux 3.3 marks some panes
        dead without ever recording a status)."""
        path = self.socket.with_name(EXIT_STATUS)
        return int(path.read_text()) if path.exists() else None

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


# The pane's process: it leaves the terminal's SIGINT to the server (its child, in the same foreground process group,
# on the same tty), and writes the server's exit status to a file beside the tmux socket once the server exits.
LAUNCHER = """
import os, signal, subprocess, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
code = subprocess.call(sys.argv[2:], preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(code))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
"""
EXIT_STATUS = "exit-status"


def start(pane: Pane, env: dict[str, str], *args: str) -> None:
    """Start the private tmux server with `env` (its panes inherit it) and the command in pane `t`."""
    status = pane.socket.with_name(EXIT_STATUS)
    server = [sys.executable, "-m", "dessert_mcp", *args]
    command = "exec " + shlex.join([sys.executable, "-c", LAUNCHER, str(status), *server])
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
    terminal.wait_for("the exit", lambda: terminal.exit_status() is not None)
    assert terminal.exit_status() == 128 + signal.SIGINT
    shown = terminal.text()
    assert "Traceback" not in shown
    assert "KeyboardInterrupt" not in shown


def test_the_commands_the_hint_suggests_are_ones_the_cli_accepts() -> None:
    suggested = re.findall(r"`(dessert-mcp[^`]*)`", TTY_HINT)
    assert len(suggested) == 2
    for command in suggested:
        _parser()[0].parse_args(shlex.split(command)[1:])  # an unknown command or option exits with status 2


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
