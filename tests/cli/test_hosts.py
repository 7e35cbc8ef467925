"""`dessert-mcp config <host>`: each printed snippet parses, launches a real executable and serves underscore names."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from dessert_mcp import __version__, config
from dessert_mcp.cli.hosts import HOSTS, KEY_PLACEHOLDER, host_config, in_uv_cache, uvx_command
from tests.support import ROOT
from tests.support.api import CANARY_KEY, assert_no_secret
from tests.support.faults import ThreadedFaultySandbox
from tests.support.hosts import parse, print_config, resolve_as_the_host_would
from tests.support.measured import host_default_env

UNDERSCORE_NAMES = ["dessert_get_balance", "dessert_get_usage", "dessert_get_spend"]
SETTINGS_READ = set(re.findall(r'"(DESSERT_[A-Z_]+)"', Path(config.__file__).read_text()))


@pytest.mark.parametrize("host", list(HOSTS))
def test_each_snippet_parses_and_names_an_executable_that_exists(host: str) -> None:
    result = print_config(host)
    assert result.returncode == 0, result.stderr
    entry = parse(host, result.stdout)
    command = Path(entry["command"])
    assert command.is_absolute(), command
    assert command.is_file(), command
    assert os.access(command, os.X_OK), command
    assert entry["env"]["DESSERT_MCP_TOOL_NAMES"] == "underscore"
    assert set(entry["env"]) | set(entry.get("env_vars", [])) <= SETTINGS_READ
    assert result.stderr.strip(), "where to put the snippet goes to stderr"


@pytest.mark.parametrize("host", list(HOSTS))
def test_no_snippet_holds_the_key_even_when_it_is_set(host: str) -> None:
    result = print_config(host, DESSERT_API_KEY=CANARY_KEY)
    assert result.returncode == 0, result.stderr
    assert_no_secret(result.stdout + result.stderr)
    entry = parse(host, result.stdout)
    key = entry["env"].get("DESSERT_API_KEY")
    expected = {
        "claude-desktop": KEY_PLACEHOLDER,  # no variables in that file: the user types the key in
        "claude-code": "$DESSERT_API_KEY",  # still unexpanded: shlex does not run the shell
        "cursor": "${env:DESSERT_API_KEY}",
        "vscode": "${input:dessert-api-key}",
        "codex": None,  # forwarded by name through env_vars
    }[host]
    assert key == expected
    if host == "codex":
        assert entry["env_vars"] == ["DESSERT_API_KEY"]
    if host == "vscode":
        (prompt,) = json.loads(result.stdout)["inputs"]
        assert prompt == {
            "type": "promptString",
            "id": "dessert-api-key",
            "description": "Dessert API key",
            "password": True,
        }


@pytest.mark.parametrize("host", list(HOSTS))
async def test_each_snippet_as_its_host_resolves_it_serves_both_tools_with_underscore_names(
    host: str, canary_sandbox: ThreadedFaultySandbox
) -> None:
    result = print_config(host)
    command, args, env = resolve_as_the_host_would(host, result.stdout, canary_sandbox.key)
    assert env["DESSERT_API_KEY"] == canary_sandbox.key
    # The snippets leave the base URL at its default; the test points it at the sandbox.
    env = host_default_env() | env | {"DESSERT_API_BASE_URL": canary_sandbox.url}
    async with Client(StdioServerParameters(command=command, args=args, env=env)) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        balance = await client.call_tool("dessert_get_balance", {})
    assert names == UNDERSCORE_NAMES
    assert balance.structured_content is not None
    assert balance.structured_content["credits_balance"] == 205


def test_an_unknown_host_is_refused_with_the_valid_ones() -> None:
    result = print_config("emacs")
    assert result.returncode == 2
    assert result.stdout == ""
    for host in HOSTS:
        assert host in result.stderr


def test_config_help_lists_every_host() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dessert_mcp", "config", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    for host in HOSTS:
        assert host in result.stdout


def test_windows_paths_survive_json_and_toml_quoting() -> None:
    command = r"C:\Users\Ada Lovelace\AppData\Local\dessert\Scripts\dessert-mcp.exe"
    for host in HOSTS:
        snippet = host_config(host, command, platform="win32")
        assert parse(host, snippet.text)["command"] == command


def test_claude_code_on_windows_reads_the_key_from_a_powershell_variable() -> None:
    snippet = host_config("claude-code", "dessert-mcp", platform="win32")
    assert '"DESSERT_API_KEY=$env:DESSERT_API_KEY"' in snippet.text


def test_an_unknown_host_is_a_value_error_in_code() -> None:
    with pytest.raises(ValueError, match="claude-desktop, claude-code, cursor, vscode, codex"):
        host_config("emacs", "dessert-mcp")


def test_the_readme_shows_what_config_prints() -> None:
    readme = (ROOT / "README.md").read_text()
    example = "/home/you/dessert-mcp/.venv/bin/dessert-mcp"
    for host in ("claude-code", "cursor"):
        assert host_config(host, example, platform="linux").text.strip() in readme, f"README's {host} example drifted"
    command, args = uvx_command()
    uvx_line = host_config("claude-code", command, args, platform="linux", launch="uvx").text.strip()
    assert uvx_line in readme, "README's uvx line for Claude Code drifted (the version is in it)"


def test_the_readme_says_only_the_uvx_form_of_a_project_file_can_be_committed() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    vscode = readme.split("### VS Code ", 1)[1].split("### ", 1)[0]
    assert "With `--launch uvx` it holds no machine's path either and can be committed" in vscode
    assert "the `--launch path` form names this machine's installation, so it is machine-specific" in vscode
    assert "so a project's `.vscode/mcp.json` or `.cursor/mcp.json` can be committed" in readme
    assert readme.count("can be committed") == 2


@pytest.mark.parametrize("host", list(HOSTS))
def test_each_uvx_snippet_runs_the_pinned_package_from_pypi_and_names_no_path(host: str) -> None:
    result = print_config(host, "--launch", "uvx", DESSERT_API_KEY=CANARY_KEY)
    assert result.returncode == 0, result.stderr
    assert_no_secret(result.stdout + result.stderr)
    entry = parse(host, result.stdout)
    assert entry["command"] == "uvx"
    assert entry["args"] == [f"dessert-mcp@{__version__}"]
    assert entry["env"]["DESSERT_MCP_TOOL_NAMES"] == "underscore"
    assert sys.prefix not in result.stdout, "the portable form must not mention this machine's installation"
    assert "--launch path" in result.stderr, "the notes offer the other form"


@pytest.mark.parametrize("host", list(HOSTS))
def test_the_path_form_is_the_default_here_and_offers_the_uvx_form(host: str) -> None:
    assert print_config(host).stdout == print_config(host, "--launch", "path").stdout
    assert f"--launch uvx` prints the portable form (`uvx dessert-mcp@{__version__}`)" in print_config(host).stderr


def test_only_the_uvx_vscode_file_is_said_to_be_committable_and_the_path_one_is_called_machine_specific() -> None:
    uvx = print_config("vscode", "--launch", "uvx").stderr
    path = print_config("vscode", "--launch", "path").stderr
    assert "so it can be committed" in uvx
    assert "so it can be committed" not in path
    assert "machine-specific" in path


def test_an_unknown_launch_is_refused_with_the_valid_ones() -> None:
    result = print_config("cursor", "--launch", "docker")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "'uvx'" in result.stderr
    assert "'path'" in result.stderr


@pytest.mark.parametrize(
    ("prefix", "ephemeral"),
    [
        ("/home/you/.cache/uv/archive-v0/hCmZIctsVPqODWno", True),
        ("/home/you/.local/share/uv/tools/dessert-mcp", False),
        ("/home/you/.local/pipx/venvs/dessert-mcp", False),
        ("/home/you/dessert-mcp/.venv", False),
    ],
)
def test_only_an_environment_in_uvs_cache_counts_as_ephemeral(prefix: str, ephemeral: bool) -> None:
    assert in_uv_cache(prefix) is ephemeral
