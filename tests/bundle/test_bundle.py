"""The Claude Desktop bundle: manifest.json validated and packed by the official MCPB CLI, then run as a host runs it.

The node tools come from `make foreign-tools` (part of `make test`) and uv from the dev extras; a missing one fails
these tests rather than skipping them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from tests.support.api import assert_no_secret
from tests.support.faults import ThreadedFaultySandbox

from dessert_mcp import __version__, config
from dessert_mcp.config import DEFAULT_BASE_URL, Settings
from dessert_mcp.tools import build_server

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools"
NODE = TOOLS / "node_modules" / ".bin" / "node"
MCPB = TOOLS / "node_modules" / ".bin" / "mcpb"
HOST_CONFIG = Path(__file__).with_name("host_config.mjs")
UV = Path(sys.executable).with_name("uv")
# Kept between runs (git-ignored with the other tools); a cold cache makes the launch test download from PyPI.
UV_CACHE = TOOLS / "uv-cache"
MANIFEST: dict[str, Any] = json.loads((ROOT / "manifest.json").read_text())
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETTINGS_READ = set(re.findall(r'"(DESSERT_[A-Z_]+)"', Path(config.__file__).read_text()))
# The dashboard page is ~68 KB of it compressed; the remote connector and observability code and the larger uv.lock
# (their extras are locked too, though the bundle installs none of them) ~15 KB more; uvloop's and httptools' wheels
# for every platform, and the mutation-testing tool's, add ~60 KB of lock entries; the ledger, the storage layer and
# the dashboard's history views ~25 KB more; the alerts, webhooks and Redis fan-out wings and redis-py's lock entries
# took it to 514 KiB.
MAX_BUNDLE_BYTES = 576 * 1024
LAUNCH_TIMEOUT_S = 240  # a cold uv cache downloads ~30 wheels first


def mcpb(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    for tool in (NODE, MCPB):
        if not tool.exists():
            pytest.fail(f"{tool.name} is not installed in {tool.parent}; run `make foreign-tools`.")
    return subprocess.run(
        [str(NODE), str(MCPB), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,  # mcpb asks questions when it lacks a manifest; never wait for an answer
        check=False,
    )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mcpb pack`, as `make bundle` runs it, into a temporary dist/."""
    out = tmp_path_factory.mktemp("dist") / "dessert-mcp.mcpb"
    result = mcpb("pack", str(ROOT), str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def unpacked(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle as the host unpacks it, in a folder of its own."""
    where = tmp_path_factory.mktemp("extension") / "dessert-mcp"
    result = mcpb("unpack", str(bundle), str(where))
    assert result.returncode == 0, result.stdout + result.stderr
    return where


def test_the_manifest_passes_mcpb_validate() -> None:
    result = mcpb("validate", "manifest.json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Manifest schema validation passes" in result.stdout


async def test_the_manifest_lists_exactly_the_tools_the_server_lists_under_its_settings() -> None:
    # The environment the bundle passes, with the user's values not filled in (the server treats them as unset).
    env = MANIFEST["server"]["mcp_config"]["env"]
    async with Client(build_server(Settings.from_env(env))) as client:
        tools = (await client.list_tools()).tools
    assert [{"name": t.name, "description": t.description} for t in tools] == MANIFEST["tools"]
    assert MANIFEST["tools_generated"] is False


def test_the_manifest_agrees_with_pyproject_and_the_settings() -> None:
    project = PYPROJECT["project"]
    assert MANIFEST["name"] == project["name"]
    assert MANIFEST["version"] == __version__
    assert MANIFEST["license"] == project["license"]
    assert MANIFEST["compatibility"]["runtimes"]["python"] == project["requires-python"]
    assert MANIFEST["repository"]["url"] == project["urls"]["Repository"]
    assert MANIFEST["author"]["name"] == project["authors"][0]["name"]
    assert (ROOT / MANIFEST["server"]["entry_point"]).is_file()

    launch = MANIFEST["server"]["mcp_config"]
    assert set(launch["env"]) <= SETTINGS_READ, "the bundle sets a variable the server does not read"
    assert launch["env"]["DESSERT_API_KEY"] == "${user_config.api_key}"
    assert launch["env"]["DESSERT_API_BASE_URL"] == "${user_config.base_url}"
    assert launch["env"]["DESSERT_MCP_TOOL_NAMES"] == "underscore"  # Claude Desktop rejects dotted names
    assert launch["args"][-1] in project["scripts"]

    key, base_url = MANIFEST["user_config"]["api_key"], MANIFEST["user_config"]["base_url"]
    assert key["sensitive"] is True
    assert key["required"] is True
    assert base_url["required"] is False
    assert base_url["default"] == DEFAULT_BASE_URL
    for name in ("alert_webhook_url", "alert_webhook_secret"):  # optional, and secrets (a webhook URL is one)
        assert launch["env"][f"DESSERT_{name.upper()}"] == f"${{user_config.{name}}}"
        assert MANIFEST["user_config"][name]["sensitive"] is True
        assert MANIFEST["user_config"][name]["required"] is False


def test_uv_lock_matches_pyproject() -> None:
    """The bundle installs exactly uv.lock (`uv run --frozen`); it must describe the current pyproject.toml."""
    result = subprocess.run(
        [str(UV), "lock", "--check"],
        cwd=ROOT,
        env=os.environ | {"UV_CACHE_DIR": str(UV_CACHE), "UV_PYTHON_DOWNLOADS": "never"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"uv.lock is stale; run `make lock`.\n{result.stderr}"


def test_the_bundle_is_small_and_holds_only_what_runs(bundle: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "server"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
    assert names == {"manifest.json", "pyproject.toml", "README.md", "LICENSE", "uv.lock", *tracked}
    assert not any(part in {"tests", "__pycache__", ".venv", ".tools"} for name in names for part in name.split("/"))
    assert bundle.stat().st_size < MAX_BUNDLE_BYTES, f"{bundle.stat().st_size} bytes"


def test_the_readme_states_the_bundles_size(bundle: Path) -> None:
    stated = re.search(r"dist/dessert-mcp\.mcpb \(about (\d+) KB\)", (ROOT / "README.md").read_text())
    assert stated is not None
    size_kb = bundle.stat().st_size / 1024
    assert abs(size_kb - int(stated[1])) <= 0.1 * size_kb, (
        f"the bundle is {size_kb:.0f} KB; the README says {stated[1]}"
    )


def host_launch(unpacked: Path, user_config: dict[str, str]) -> dict[str, Any] | None:
    """What the host would launch: the MCPB package's getMcpConfigForManifest on the unpacked bundle."""
    result = subprocess.run(
        [str(NODE), str(HOST_CONFIG), str(TOOLS), str(unpacked), json.dumps(user_config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    resolved: dict[str, Any] | None = json.loads(result.stdout)
    return resolved


def test_the_host_will_not_launch_the_bundle_without_a_key(unpacked: Path) -> None:
    assert host_launch(unpacked, {}) is None
    defaults = host_launch(unpacked, {"api_key": "dsk_test"})
    assert defaults is not None
    assert defaults["env"]["DESSERT_API_BASE_URL"] == DEFAULT_BASE_URL


async def test_the_bundles_own_launch_command_serves_both_tools(
    unpacked: Path, canary_sandbox: ThreadedFaultySandbox, tmp_path: Path
) -> None:
    """`uv run --directory <bundle> --frozen dessert-mcp`, from the unpacked bundle, with the key a user typed."""
    launch = host_launch(unpacked, {"api_key": canary_sandbox.key, "base_url": canary_sandbox.url})
    assert launch is not None
    assert launch["command"] == "uv"
    assert str(unpacked) in launch["args"]
    assert UV.exists(), f"uv is not installed next to {sys.executable}; run `make install`."
    # A host's environment (this machine's, so its proxy and CA settings reach uv), uv on its PATH, the bundle's
    # variables, and this machine's rule: PyPI only, so uv uses an installed Python instead of downloading one.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DESSERT_")}
    env = (
        inherited
        | launch["env"]
        | {
            "PATH": f"{UV.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "UV_CACHE_DIR": str(UV_CACHE),
            "UV_PYTHON_DOWNLOADS": "never",
        }
    )
    params = StdioServerParameters(command=launch["command"], args=launch["args"], env=env, cwd=tmp_path)
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w") as errlog, anyio.fail_after(LAUNCH_TIMEOUT_S):
        async with Client(stdio_client(params, errlog=errlog)) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            balance = await client.call_tool("dessert_get_balance", {})
            usage = await client.call_tool("dessert_get_usage", {"limit": 2})
    assert names == ["dessert_get_balance", "dessert_get_usage", "dessert_get_spend"]
    assert balance.structured_content is not None
    assert balance.structured_content["credits_balance"] == 205
    assert usage.structured_content is not None
    assert len(usage.structured_content["recent_transactions"]) == 2
    assert (unpacked / ".venv").is_dir(), "uv installs into the extension's own folder"
    assert_no_secret(stderr_path.read_text())
