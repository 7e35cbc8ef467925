"""The `dessert-mcp` command, run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx2
import pytest

from dessert_mcp.sandbox import SANDBOX_KEY
from tests.support.api import CANARY_KEY, assert_no_secret
from tests.support.faults import ThreadedFaultySandbox


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DESSERT_")}
    return subprocess.run(
        [sys.executable, "-m", "dessert_mcp", *args],
        env=base | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_help_explains_every_option_and_variable() -> None:
    result = run("--help")
    assert result.returncode == 0
    for word in (
        "--sandbox",
        "--tool-names",
        "--log-level",
        "DESSERT_API_KEY",
        "DESSERT_API_BASE_URL",
        "DESSERT_MCP_TOOL_NAMES",
        "DESSERT_TIMEOUT_S",
        "DESSERT_MCP_LOG_LEVEL",
        "sandbox",
        "check",
        "demo",
        "config",
    ):
        assert word in result.stdout, word


def test_check_prints_the_masked_key_the_base_url_and_the_live_balance(canary_sandbox: ThreadedFaultySandbox) -> None:
    result = run("check", env={"DESSERT_API_KEY": CANARY_KEY, "DESSERT_API_BASE_URL": canary_sandbox.url})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{CANARY_KEY[:4]}…{CANARY_KEY[-4:]}" in result.stdout
    assert canary_sandbox.url in result.stdout
    assert "205 credits ($20.50)" in result.stdout
    assert_no_secret(result.stdout + result.stderr)


def test_check_fails_with_the_reason_when_the_key_is_rejected(canary_sandbox: ThreadedFaultySandbox) -> None:
    wrong = "dsk_live_WRONG_0000000000000000000000"
    result = run("check", env={"DESSERT_API_KEY": wrong, "DESSERT_API_BASE_URL": canary_sandbox.url})
    assert result.returncode == 1
    assert "FAILED (auth_invalid): Dessert rejected the API key (HTTP 401" in result.stdout
    assert_no_secret(result.stdout + result.stderr, wrong)


def test_check_fails_when_the_key_is_missing() -> None:
    result = run("check")
    assert result.returncode == 1
    assert "DESSERT_API_KEY is not set" in result.stdout


def test_check_fails_when_the_api_cannot_be_reached() -> None:
    result = run(
        "check",
        env={
            "DESSERT_API_KEY": CANARY_KEY,
            "DESSERT_API_BASE_URL": "http://127.0.0.1:9",
            "DESSERT_TIMEOUT_S": "5",
            "DESSERT_BACKOFF_S": "0.01",  # the retries' waits are not what this checks
        },
    )
    assert result.returncode == 1
    assert "FAILED (upstream_unavailable): Could not reach Dessert at http://127.0.0.1:9" in result.stdout


def test_check_against_the_embedded_sandbox_passes() -> None:
    result = run("check", "--sandbox")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: the key is accepted" in result.stdout


@pytest.mark.parametrize("flag", ["--api-key", "--api-key=sk_live_pasted_secret_123456", "--token"])
def test_the_key_is_never_accepted_on_the_command_line(flag: str) -> None:
    result = run(flag, "sk_live_pasted_secret_123456")
    assert result.returncode != 0
    assert "read only from the DESSERT_API_KEY environment variable" in result.stderr
    assert "sk_live_pasted_secret_123456" not in result.stdout + result.stderr


def test_an_unknown_argument_is_not_echoed_when_it_looks_like_a_key() -> None:
    result = run("sk_live_pasted_secret_123456")
    assert result.returncode == 2
    assert "sk_live_pasted_secret_123456" not in result.stderr


def test_an_invalid_setting_stops_start_up_with_a_clear_message() -> None:
    result = run(env={"DESSERT_MCP_TOOL_NAMES": "dots"})
    assert result.returncode != 0
    assert "configuration error: DESSERT_MCP_TOOL_NAMES must be one of auto, dotted, underscore" in result.stderr


def test_the_sandbox_command_serves_the_api_and_prints_its_key() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DESSERT_")}
    with subprocess.Popen(
        [sys.executable, "-m", "dessert_mcp", "sandbox", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=base,
    ) as process:
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            url = first.rsplit(" ", 1)[-1].strip()
            assert url.startswith("http://127.0.0.1:")
            rest = process.stdout.readline() + process.stdout.readline()
            assert SANDBOX_KEY in rest
            ok = httpx2.get(f"{url}/v1/balance", headers={"Authorization": f"Bearer {SANDBOX_KEY}"})
            denied = httpx2.get(f"{url}/v1/balance")
            assert ok.json()["credits_balance"] == 205
            assert denied.status_code == 401
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_the_demo_runs_both_tools_and_prints_readable_tables() -> None:
    result = run("demo", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "credits_balance                 205" in result.stdout
    assert "affordable now                  41 static or 13 full ads" in result.stdout
    assert "Deduction  -45" in result.stdout
    assert "Demo finished" in result.stdout


@pytest.mark.parametrize("args", [["config", "vscode"], ["demo"]])
def test_output_piped_into_a_reader_that_stops_early_ends_quietly(args: list[str]) -> None:
    # `dessert-mcp demo | head -1`: the reader is gone before the command writes.
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "dessert_mcp", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "BrokenPipeError" not in result.stderr
