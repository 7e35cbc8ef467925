"""The built wheel, installed as users will install it: into a fresh virtual environment, and run by `uvx`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from dessert_mcp import __version__
from tests.packaging.conftest import UV, UVX, Dist, host_env
from tests.support.api import assert_no_secret
from tests.support.faults import ThreadedFaultySandbox
from tests.support.hosts import parse, print_config, resolve_as_the_host_would

LAUNCH_TIMEOUT_S = 240  # a cold uv cache downloads ~30 wheels first
UNDERSCORE_NAMES = ["dessert_get_balance", "dessert_get_usage", "dessert_get_spend"]


def run(*argv: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=host_env(**env),
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture(scope="module")
def venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding only the wheel and its dependencies (what `pipx install` makes)."""
    where = tmp_path_factory.mktemp("venv") / "env"
    for argv in (
        [UV, "venv", "--quiet", "--python", sys.executable, where],
        [UV, "pip", "install", "--quiet", "--python", where / "bin" / "python", dist.wheel],
    ):
        result = run(*argv, cwd=where.parent)
        assert result.returncode == 0, result.stderr
    return where


def test_the_installed_command_reports_the_version_it_was_built_from(venv: Path, tmp_path: Path) -> None:
    result = run(venv / "bin" / "dessert-mcp", "--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"dessert-mcp {__version__}\n"
    code = "import importlib.metadata as m; print(m.version('dessert-mcp'))"
    assert run(venv / "bin" / "python", "-c", code, cwd=tmp_path).stdout == f"{__version__}\n"


def test_the_installed_package_is_the_wheels_copy_not_this_checkout(venv: Path, tmp_path: Path) -> None:
    code = "import json, dessert_mcp, importlib.metadata as m; print(json.dumps([dessert_mcp.__file__, "
    code += "[str(f) for f in m.files('dessert-mcp')]]))"
    result = run(venv / "bin" / "python", "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    module, files = json.loads(result.stdout)
    assert Path(module).is_relative_to(venv), module
    assert not [f for f in files if f.startswith("tests/") or "/tests/" in f]


def launch(how: str, venv: Path, dist: Dist) -> tuple[Path, list[str]]:
    if how == "venv":
        return venv / "bin" / "dessert-mcp", ["--sandbox"]
    return UVX, ["--from", str(dist.wheel), "dessert-mcp", "--sandbox"]


@pytest.mark.parametrize("how", ["venv", "uvx"])
async def test_served_over_stdio_as_a_host_launches_it_both_tools_answer_from_the_sandbox(
    how: str, venv: Path, dist: Dist, tmp_path: Path
) -> None:
    """`<venv>/bin/dessert-mcp --sandbox`, then `uvx --from <the wheel> dessert-mcp --sandbox`, from another folder."""
    command, args = launch(how, venv, dist)
    params = StdioServerParameters(command=str(command), args=args, env=host_env(), cwd=tmp_path)
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w") as errlog, anyio.fail_after(LAUNCH_TIMEOUT_S):
        async with Client(stdio_client(params, errlog=errlog)) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            balance = await client.call_tool("dessert.get_balance", {})
            usage = await client.call_tool("dessert.get_usage", {"limit": 2})
    assert names == UNDERSCORE_NAMES  # `auto`: the same to every client
    assert balance.structured_content is not None, balance
    assert balance.structured_content["credits_balance"] == 205
    assert usage.structured_content is not None, usage
    assert len(usage.structured_content["recent_transactions"]) == 2
    assert usage.structured_content["recent_transactions"][0]["balance_after"] == 205
    assert "sandbox" in stderr_path.read_text()


def test_config_run_by_uvx_prints_the_uvx_form_since_its_own_path_is_in_uvs_cache(dist: Dist, tmp_path: Path) -> None:
    """This pins hosts.in_uv_cache's reading of uv's cache layout against the real uvx."""
    result = run(UVX, "--from", dist.wheel, "dessert-mcp", "config", "cursor", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    entry = parse("cursor", result.stdout)
    assert (entry["command"], entry["args"]) == ("uvx", [f"dessert-mcp@{__version__}"])

    result = run(UVX, "--from", dist.wheel, "dessert-mcp", "config", "cursor", "--launch", "path", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert Path(parse("cursor", result.stdout)["command"]).is_absolute()
    assert "inside uv's cache" in result.stderr


async def test_the_one_uvx_line_for_claude_code_serves_both_tools_with_underscore_names(
    package_index: str, canary_sandbox: ThreadedFaultySandbox, tmp_path: Path
) -> None:
    """From nothing to both tools: the `claude mcp add ... -- uvx dessert-mcp@<version>` line, run as printed.

    uv resolves `dessert-mcp@<version>` from a package index on 127.0.0.1 that holds the built wheel (standing in for
    the PyPI upload: uv takes a package from the first index that has it) and its dependencies from PyPI. Every
    host's uvx entry has the same command (tests/cli/test_hosts.py), and each host's way of passing the key is run
    there.
    """
    snippet = print_config("claude-code", "--launch", "uvx")
    command, args, env = resolve_as_the_host_would("claude-code", snippet.stdout, canary_sandbox.key)
    assert (command, args) == ("uvx", [f"dessert-mcp@{__version__}"])
    env = host_env() | env | {"DESSERT_API_BASE_URL": canary_sandbox.url, "UV_INDEX": f"local={package_index}"}
    params = StdioServerParameters(command=command, args=args, env=env, cwd=tmp_path)
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w") as errlog, anyio.fail_after(LAUNCH_TIMEOUT_S):
        async with Client(stdio_client(params, errlog=errlog)) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            balance = await client.call_tool("dessert_get_balance", {})
            usage = await client.call_tool("dessert_get_usage", {"limit": 2})
    assert names == UNDERSCORE_NAMES
    assert balance.structured_content is not None, balance
    assert balance.structured_content["credits_balance"] == 205
    assert usage.structured_content is not None, usage
    assert [t["balance_after"] for t in usage.structured_content["recent_transactions"]] == [205, 250]
    assert_no_secret(stderr_path.read_text())
