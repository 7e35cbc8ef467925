"""docs/remote.md's "Try it locally" block, run as written: the sandbox, `--auth dessert-key` with one call by curl,
`--auth oauth` with a sign-in and one call by examples/oauth_sign_in.py."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, STARTUP_TIMEOUT_S
from tests.support.processes import free_port, immediately, started

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
    # The servers it starts in the background are in its process group, stopped with it.
    with started(
        ["bash", "-e", "-c", script], env=env, ready=immediately, log=tmp_path / "recipe.log", group=True, cwd=ROOT
    ) as run:
        returncode = run.wait(3 * STARTUP_TIMEOUT_S)
        out = run.output()
    assert returncode == 0, out
    assert out.count('"credits_balance": 205') + out.count('"credits_balance":205') == 2, out
    assert "Traceback" not in out, out
