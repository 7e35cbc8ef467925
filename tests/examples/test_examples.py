"""The agent-framework examples, each run as its user runs it: in the framework's own virtual environment, launching
the project's dessert-mcp over stdio, with no model, no model key and no network beyond loopback."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from dessert_mcp.cli.hosts import server_command
from tests.support.api import CANARY_KEY, assert_no_secret
from tests.support.faults import ThreadedFaultySandbox
from tests.support.measured import mirror_home
from tests.support.venvs import EXAMPLES, ROOT, example_venv, requirements

README = ROOT / "README.md"
RUN_TIMEOUT_S = 120
# Settings a developer's shell may hold that would give an example an account or a model; none may reach it.
PRIVATE_PREFIXES = ("DESSERT_", "OPENAI_", "ANTHROPIC_", "LANGCHAIN_", "LANGSMITH_", "LOGFIRE_")
# Any HTTP the example process tried beyond loopback would go to this dead proxy and fail, not leave the machine.
PROXIES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
NO_NETWORK = {
    **dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"), "http://127.0.0.1:9"),
    "NO_PROXY": "127.0.0.1",
}
TOOL_LINE = re.compile(r"^  (\S+)\s+arguments: (.+)$", re.MULTILINE)
MODEL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # OpenAI's and Anthropic's rule for function names


@dataclass(frozen=True)
class Example:
    name: str  # examples/requirements-<name>.txt, and the README's .venv-<name>
    script: str
    error_form: str  # how the framework hands a failed call to the model, in the example's words
    sdk: str  # the MCP Python SDK generation its client runs on (dessert-mcp runs on 2)


FRAMEWORKS = (
    Example("openai-agents", "openai_agents.py", "tool output (a text item)", sdk="2"),
    Example("pydantic-ai", "pydantic_ai_agent.py", "tool return (outcome 'failed')", sdk="2"),
    Example("langgraph", "langgraph_agent.py", "ToolMessage (status 'error')", sdk="1"),
)


@pytest.fixture(scope="session", params=FRAMEWORKS, ids=[f.name for f in FRAMEWORKS])
def example(request: pytest.FixtureRequest) -> Example:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def venv(example: Example) -> Path:
    return example_venv(example.name)


def environ(**env: str) -> dict[str, str]:
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(PRIVATE_PREFIXES) and k.lower() not in PROXIES and k != "VIRTUAL_ENV"
    }
    return inherited | NO_NETWORK | env


def run_example(example: Example, venv: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The example in its framework's environment, launching this checkout's dessert-mcp."""
    command, args = server_command()  # this checkout's .venv/bin/dessert-mcp
    # The framework's MCP client hands the server only HOME and a few more, as a host does: a HOME of the run's own,
    # so the server's ledger goes there rather than into the user's data directory.
    with tempfile.TemporaryDirectory() as home:
        mirror_home(Path(os.environ["HOME"]), Path(home))
        return subprocess.run(
            [str(venv / "bin" / "python"), "-W", "error", str(EXAMPLES / example.script)],
            env=environ(**{"DESSERT_MCP_COMMAND": shlex.join([command, *args]), "HOME": home} | env),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )


def check_tools_and_results(example: Example, result: subprocess.CompletedProcess[str], where: str) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    header, client = result.stdout.splitlines()[:2]
    assert header == f"dessert-mcp over stdio ({where})"
    assert f", MCP Python SDK {example.sdk}." in client  # the client's generation; the server runs on 2
    offered = dict(TOOL_LINE.findall(result.stdout))
    assert offered == {
        "dessert_get_balance": "none",
        "dessert_get_usage": "limit, types, since, until, cursor",
        "dessert_get_spend": "since, until, period",
    }, result.stdout
    assert all(MODEL_NAME.match(name) for name in offered)
    assert "\nbalance: 205 credits ($20.50)\n" in result.stdout  # the sandbox's balance, through the framework
    usage = result.stdout.split("usage: the 3 most recent transactions\n", 1)[1].splitlines()
    assert [line.split()[1:3] for line in usage] == [["Deduction", "-45"], ["Purchase", "+250"], ["Deduction", "-40"]]


def readme_commands(example: Example) -> tuple[str, str]:
    """The README's install line and run line for `example`, from its Agent frameworks section."""
    section = README.read_text().split("\n## Agent frameworks\n", 1)[1].split("\n## ", 1)[0]
    lines = [line.strip() for line in section.splitlines()]
    (install,) = [line for line in lines if f"-r examples/requirements-{example.name}.txt" in line]
    (run,) = [line for line in lines if line.endswith(f"examples/{example.script}")]
    return install, run


def test_the_readme_installs_each_framework_into_the_environment_its_example_runs_in(example: Example) -> None:
    install, run = readme_commands(example)
    # What the test set-up does with uv, as a user without it types it: a venv, then exactly the requirements file.
    match = re.fullmatch(
        rf"python3 -m venv (\S+) && \1/bin/pip install -r examples/requirements-{example.name}\.txt", install
    )
    assert match, install
    assert re.fullmatch(
        rf"DESSERT_MCP_COMMAND=\.venv/bin/dessert-mcp {match[1]}/bin/python examples/{example.script}", run
    )
    assert requirements(example.name).is_file()
    docstring = ast.get_docstring(ast.parse((EXAMPLES / example.script).read_text())) or ""
    assert install in docstring
    assert run in docstring
    assert "pip install dessert-mcp" not in docstring  # not published yet


def test_the_readme_line_lists_and_calls_both_tools_through_the_framework_against_the_embedded_sandbox(
    example: Example, venv: Path, tmp_path: Path
) -> None:
    """The README's run line as written, from a checkout whose .venv-<name> is the environment the set-up built."""
    _, run = readme_commands(example)
    framework_venv = re.search(r"(\S+)/bin/python", run)
    assert framework_venv
    (tmp_path / "examples").symlink_to(EXAMPLES)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))  # the Quick start's environment, holding dessert-mcp
    (tmp_path / framework_venv[1]).symlink_to(venv)
    home = tmp_path / "home"  # the server gets only HOME and a few more: its ledger goes here (see run_example)
    mirror_home(Path(os.environ["HOME"]), home)
    result = subprocess.run(
        ["bash", "-c", run],
        cwd=tmp_path,
        env=environ(HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    check_tools_and_results(example, result, "the embedded sandbox")


def test_the_example_uses_the_account_when_a_key_is_set_and_never_shows_it(
    example: Example, venv: Path, canary_sandbox: ThreadedFaultySandbox
) -> None:
    before = canary_sandbox.stats()["requests"].get("/v1/balance", 0)
    result = run_example(example, venv, DESSERT_API_KEY=canary_sandbox.key, DESSERT_API_BASE_URL=canary_sandbox.url)
    check_tools_and_results(example, result, "your Dessert account")
    assert canary_sandbox.stats()["requests"].get("/v1/balance", 0) > before  # this API, not the embedded sandbox
    assert_no_secret(result.stdout + result.stderr)


def test_a_wrong_key_reaches_the_model_as_the_frameworks_tool_error_with_our_sentence_and_code(
    example: Example, venv: Path, sandbox: ThreadedFaultySandbox
) -> None:
    assert sandbox.key != CANARY_KEY
    result = run_example(example, venv, DESSERT_API_KEY=CANARY_KEY, DESSERT_API_BASE_URL=sandbox.url)
    assert result.returncode == 1, result.stdout + result.stderr
    said, sentence, details = result.stderr.splitlines()
    assert said == f"dessert_get_balance failed; the model is given this {example.error_form}:"
    assert sentence == "  Dessert rejected the API key (HTTP 401: Invalid API key.). Check DESSERT_API_KEY."
    assert json.loads(details) == {"code": "auth_invalid", "retryable": False, "status": 401}
    assert "balance:" not in result.stdout
    assert "{'" not in result.stdout + result.stderr  # never a Python dict repr
    assert_no_secret(result.stdout + result.stderr)


def test_the_example_says_how_to_start_dessert_mcp_when_it_cannot_find_it(example: Example, venv: Path) -> None:
    result = run_example(example, venv, DESSERT_MCP_COMMAND="no-such-dessert-mcp --sandbox")
    assert result.returncode == 1
    assert result.stderr == "no-such-dessert-mcp: not found. Install dessert-mcp, or point DESSERT_MCP_COMMAND at it.\n"
