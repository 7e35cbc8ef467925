"""docs/remote.md's "Try it locally" block, run as written: the sandbox, `--auth dessert-key` with one call by curl,
`--auth oauth` with a sign-in and one call by examples/oauth_sign_in.py."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, STARTUP_TIMEOUT_S
from tests.support.servers import free_port

REMOTE = ROOT / "docs" / "remote.md"
PORTS = ("8765", "8001", "8002")  # the recipe's ports, each swapped for a free one so parallel runs do not collide

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="the recipe calls curl")


def recipe() -> str:
    section = REMOTE.read_text().split("\n## Try it locally\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None, "docs/remote.md lost its Try it locally block"
    return block[1]


def test_the_try_it_locally_recipe_calls_a_tool_in_both_remote_modes(tmp_path: Path) -> None:
    script = recipe()
    for port in PORTS:
        assert f":{port}" in script, port
        script = script.replace(port, str(free_port()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESSERT_")}
    env |= {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # dessert-mcp and python
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "TMPDIR": str(tmp_path),
    }
    process = subprocess.Popen(
        ["bash", "-e", "-c", script],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # the servers it starts in the background are in its group, stopped with it
    )
    try:
        out, err = process.communicate(timeout=3 * STARTUP_TIMEOUT_S)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, out + err
    assert out.count('"credits_balance": 205') + out.count('"credits_balance":205') == 2, out
    assert "Traceback" not in err, err
