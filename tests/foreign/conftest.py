"""Foreign MCP clients from the npm registry, installed into .tools/ by `make foreign-tools` (part of `make test`).

Missing tools fail these tests instead of skipping them: a CI run without them would prove nothing.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".tools" / "node_modules" / ".bin"
RUN_TIMEOUT_S = 120


@pytest.fixture(scope="session")
def node() -> Path:
    node = BIN / "node"
    if not node.exists():
        pytest.fail(f"Node 22 is not installed in {BIN}; run `make foreign-tools` (needs npm and the npm registry).")
    version = subprocess.run([str(node), "--version"], capture_output=True, text=True, check=True).stdout
    assert int(version.lstrip("v").split(".")[0]) >= 22, f"Node {version} is too old; run `make foreign-tools`"
    return node


@pytest.fixture
def run_node(node: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run_node("inspector", "--cli", ...)`: one of the installed CLIs, with its state kept under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESSERT_", "MCP_"))}
    env |= {
        "PATH": f"{node.parent}{os.pathsep}{env.get('PATH', '')}",
        "HOME": str(tmp_path),
        "MCP_CATALOG_PATH": str(tmp_path / "catalog.json"),
        "MCP_CLIENT_CONFIG_PATH": str(tmp_path / "client.json"),
        "NO_COLOR": "1",
    }

    def run(cli: str, *args: str) -> subprocess.CompletedProcess[str]:
        script = BIN / cli
        if not script.exists():
            pytest.fail(f"{cli} is not installed in {BIN}; run `make foreign-tools`.")
        return subprocess.run(
            [str(node), str(script), *args], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
        )

    return run
