"""examples/openai_agents.py, run as a user runs it: the OpenAI Agents SDK's MCP client over stdio, no model, no key."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.api import assert_no_secret
from tests.support.faults import ThreadedFaultySandbox

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "openai_agents.py"
OPENAI_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TOOL_LINE = re.compile(r"^  (\S+)\s+OpenAI-valid name: (\w+)", re.MULTILINE)


def run_example(**env: str) -> subprocess.CompletedProcess[str]:
    # No OpenAI key and no Dessert settings from the caller: the example must not need a model or an account.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DESSERT_", "OPENAI_"))}
    return subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLE)],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def check_output(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    listed = dict(TOOL_LINE.findall(result.stdout))
    assert list(listed) == ["dessert_get_balance", "dessert_get_usage"], result.stdout
    assert all(OPENAI_FUNCTION_NAME.match(name) for name in listed)
    assert set(listed.values()) == {"yes"}
    assert "arguments: limit, types, since" in result.stdout
    assert "\nbalance: 205 credits\n" in result.stdout


def test_the_example_lists_and_calls_the_tools_through_the_agents_sdk_against_the_embedded_sandbox() -> None:
    result = run_example()
    check_output(result)
    assert "(the embedded sandbox)" in result.stdout


def test_the_example_uses_the_account_when_a_key_is_set_and_never_shows_it(
    canary_sandbox: ThreadedFaultySandbox,
) -> None:
    result = run_example(DESSERT_API_KEY=canary_sandbox.key, DESSERT_API_BASE_URL=canary_sandbox.url)
    check_output(result)
    assert "(your Dessert account)" in result.stdout
    assert (
        canary_sandbox.stats()["requests"].get("/v1/balance", 0) >= 1
    )  # the call went to this API, not the sandbox inside
    assert_no_secret(result.stdout + result.stderr)
