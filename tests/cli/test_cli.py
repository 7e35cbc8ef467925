"""The `dessert-mcp` command, run as a real subprocess."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from mcp import Client

from dessert_mcp.sandbox import SANDBOX_KEY
from dessert_mcp.tools import build_server
from tests.support import ROOT, STARTUP_TIMEOUT_S
from tests.support.api import CANARY_KEY, assert_no_secret
from tests.support.faults import ThreadedFaultySandbox
from tests.support.processes import printed, started
from tests.support.servers import cli_server, sandbox_settings
from tests.support.settings import options_the_cli_reads, settings_the_code_reads


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
    listings: dict[tuple[str, ...], str] = {}  # each command's --help after its usage lines
    for path, option, explained in options_the_cli_reads():
        if path not in listings:
            result = run(*path, "--help")
            assert result.returncode == 0, result.stderr
            listings[path] = result.stdout.split("\n\n", 1)[1]
        assert option in listings[path], f"`dessert-mcp {' '.join(path)} --help` does not list {option}"
        assert explained, f"{option} of `dessert-mcp {' '.join(path)}` has no help text"
    assert len(listings) > 5, sorted(listings)
    top = listings[()]
    for setting in sorted(settings_the_code_reads()):
        assert setting in top, f"`dessert-mcp --help` does not name {setting}"
    for command in ("sandbox", "check", "demo", "config", "accounts", "ledger"):
        assert command in top, command


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


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ", re.MULTILINE)


def test_check_without_a_key_says_where_a_key_comes_from_and_offers_the_sandbox() -> None:
    result = run("check")
    assert result.returncode == 1
    assert "DESSERT_API_KEY is not set" in result.stdout
    assert "export DESSERT_API_KEY=" in result.stdout
    assert "dessert-mcp check --sandbox" in result.stdout


def test_check_with_a_key_that_is_set_but_unusable_says_so_rather_than_missing() -> None:
    result = run("check", env={"DESSERT_API_KEY": "paste your key here"})
    assert result.returncode == 1
    assert "API key  : set, but unusable\n" in result.stdout
    assert "missing" not in result.stdout
    assert "DESSERT_API_KEY contains spaces or non-printable characters" in result.stdout


@pytest.mark.parametrize("args", [["check", "--sandbox"], ["--sandbox", "check"]], ids=["after", "before"])
def test_sandbox_before_or_after_check_checks_the_embedded_sandbox(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "base URL : http://127.0.0.1:" in result.stdout
    assert "OK: the key is accepted" in result.stdout


@pytest.mark.parametrize("env", [{}, {"DESSERT_MCP_LOG_LEVEL": "DEBUG"}], ids=["default", "debug"])
def test_the_check_report_holds_no_log_lines(env: dict[str, str]) -> None:
    result = run("check", "--sandbox", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not LOG_LINE.search(result.stdout), result.stdout
    if not env:
        assert not LOG_LINE.search(result.stderr), result.stderr  # a terminal shows the report alone


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sandbox", "sandbox"], "--sandbox does not apply to `sandbox`"),
        (["sandbox", "--sandbox"], "--sandbox does not apply to `sandbox`"),
        (["--sandbox", "demo"], "--sandbox does not apply to `demo`"),
        (["demo", "--sandbox"], "--sandbox does not apply to `demo`"),
        (["--sandbox", "config", "vscode"], "--sandbox does not apply to `config`"),
        (["config", "vscode", "--sandbox"], "--sandbox does not apply to `config`"),
        (["--transport", "http", "check"], "--transport applies to serving, not to `check`"),
        (["--transport", "sse", "demo"], "--transport applies to serving, not to `demo`"),
        (["--transport", "http", "sandbox"], "--transport applies to serving, not to `sandbox`"),
        (["--transport", "http", "config", "cursor"], "--transport applies to serving, not to `config`"),
        (["--stateful"], "--stateful applies to the HTTP transports only"),
        (["--port", "9000"], "--port applies to the HTTP transports only"),
        (["--workers", "2", "--host", "0.0.0.0"], "--host, --workers apply to the HTTP transports only"),
        (["--auth", "dessert-key"], "--auth applies to the HTTP transports only"),
        (["--port", "9000", "check"], "--port applies to serving over HTTP, not to `check`"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_options_that_do_not_apply_to_a_command_are_refused_with_a_sentence(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 1
    assert message in result.stderr
    assert result.stdout == ""


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


def test_the_sandbox_command_serves_the_api_and_prints_its_key(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DESSERT_")}
    argv = [sys.executable, "-m", "dessert_mcp", "sandbox", "--port", "0"]
    with started(argv, env=base, ready=printed(r"Press Ctrl\+C to stop\."), log=tmp_path / "sandbox.log") as sandbox:
        first, rest = sandbox.output().split("\n", 1)
        url = first.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:")
        assert SANDBOX_KEY in rest
        ok = httpx2.get(f"{url}/v1/balance", headers={"Authorization": f"Bearer {SANDBOX_KEY}"})
        denied = httpx2.get(f"{url}/v1/balance")
        assert ok.json()["credits_balance"] == 205
        assert denied.status_code == 401


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--activity", "fast"], "--activity takes a rate above 0 and at most 100 transactions per second"),
        (["--activity", "0"], "--activity takes a rate above 0"),
        (["--seed", "3"], "--seed applies to a live sandbox only; add --activity RATE."),
    ],
    ids=["not a rate", "zero", "seed alone"],
)
def test_a_sandbox_activity_that_cannot_be_served_is_refused_in_one_line(args: list[str], message: str) -> None:
    result = run("sandbox", "--port", "0", *args)
    assert result.returncode == 1
    assert result.stderr.startswith("dessert-mcp: error: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_the_sandbox_command_with_an_activity_serves_a_live_account_on_the_real_clock() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DESSERT_")}
    command = [sys.executable, "-m", "dessert_mcp", "sandbox", "--port", "0", "--activity", "30/min", "--seed", "4"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=base) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().rsplit(" ", 1)[-1].strip()
            assert "a live account: about 0.5 transactions a second (seed 4)" in process.stdout.readline()
            headers = {"Authorization": f"Bearer {SANDBOX_KEY}"}
            rows = httpx2.get(f"{url}/v1/usage", headers=headers).json()["recent_transactions"]
            assert len(rows) == 50
            assert all(
                newer["balance_after"] - newer["credits_delta"] == older["balance_after"]
                for newer, older in itertools.pairwise(rows)
            )
            assert rows[-1]["at"] > "2026-05-20"  # not the static history: made now, going back from the clock
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_the_demo_reads_like_the_product(tmp_path: Path) -> None:
    # HOME too: the servers the demo launches inherit only the SDK's few default variables, HOME among them.
    user_dirs = {"HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "data")}
    result = run("demo", env=user_dirs | {"XDG_STATE_HOME": str(tmp_path / "state")}, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # The demo's servers keep their ledgers in a temporary directory of the demo's own, never the user's.
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]
    out = result.stdout
    assert max(len(line) for line in out.splitlines()) <= 80  # a terminal's width
    assert result.stderr == ""  # no server log line lands inside the demo
    # The names hosts show, yes/no, dollars with cents, minutes in UTC, sentences rather than dicts.
    assert "dessert_get_balance  Dessert credit balance  yes        none" in out
    assert "dessert.get_" not in out
    assert not re.search(r"\b(True|False|None)\b", out)
    assert re.findall(r"\$[\d,]+(?:\.\d+)?", out) == re.findall(r"\$[\d,]+\.\d\d\b", out)
    assert ".000Z" not in out
    assert "balance          205 credits ($20.50)" in out
    assert "affordable now   41 static or 13 full ads" in out
    assert "2026-05-19 18:23     +250      250  Auto-recharge ($25.00)" in out
    flat = " ".join(out.split())
    assert (
        "summary: 9 deductions, 2 purchases, 1 bonus, 1 refund; 360 credits spent, 565 added, $50.00 purchased" in flat
    )
    assert "count_by_type" not in out
    # The JSON an agent receives for one call, as the structured content.
    start = out.index("\n{\n") + 1
    received = json.loads(out[start : out.index("\n}\n", start) + 2])
    assert received["credits_balance"] == 205
    assert received["below_auto_recharge_threshold"] is False
    # One error case, as the agent gets it: the sentence to act on, then the code.
    assert "Dessert rejected the API key (HTTP 401: Invalid API key.). Check DESSERT_API_KEY." in flat
    assert '  {"code": "auth_invalid", "retryable": false, "status": 401}\n' in out
    # The ledger at work: a live account whose window moved past 50 rows, kept whole, and one spend answer.
    assert "each answer holds only the API's last 50 transactions, and the server keeps every row it saw." in flat
    assert re.search(
        r"dessert_get_usage since [\d-]+ [\d:]+: 141 transactions kept, on 3 pages of at most 50; "
        r"history complete: yes\.",
        flat,
    ), flat
    assert re.search(
        r"dessert_get_spend since [\d-]+ [\d:]+: 141 transactions; [\d,]+ credits spent on full ads "
        r"and [\d,]+ on static \(net of refunds\), [\d,]+ added by \d+ purchases; history complete: "
        r"yes\.",
        flat,
    ), flat
    assert out.endswith("Demo finished: every tool answered over a real stdio MCP session.\n")
    assert not LOG_LINE.search(out)


async def test_the_demo_and_the_dashboard_give_one_forecast_over_one_named_window(
    canary_sandbox: ThreadedFaultySandbox,
) -> None:
    """The dashboard calls get_usage with no arguments (ui/src/main.ts) and shows the forecast it returns; the demo
    must print the same numbers and name the same window."""
    assert "arguments: {}" in (ROOT / "ui" / "src" / "main.ts").read_text()
    canary_sandbox.reset()
    async with Client(build_server(sandbox_settings(canary_sandbox))) as client:
        usage = (await client.call_tool("dessert.get_usage", {})).structured_content
    assert usage is not None
    forecast = usage["summary"]["forecast"]
    returned = len(usage["recent_transactions"])
    flat = " ".join(run("demo", timeout=120).stdout.split())
    assert (
        f"forecast: over the {returned} transactions returned, {forecast['burn_rate_credits_per_day']:.1f} credits a "
        f"day (net); the balance of {forecast['latest_balance']} lasts about {forecast['days_until_empty']:.1f} days"
    ) in flat


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


def _one_line(stderr: str) -> str:
    """The stderr of a run that must end with one line: that line (a traceback or a second line fails)."""
    lines = [line for line in stderr.splitlines() if "Using the embedded sandbox API" not in line]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [["--transport", "http"], ["--transport", "sse"], ["--transport", "http", "--workers", "2"], ["sandbox"]],
    ids=["http", "sse", "two workers", "sandbox"],
)
def test_a_port_already_in_use_is_one_line_and_nothing_claims_to_be_serving(args: list[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = run(*args, "--port", port, env={"DESSERT_MCP_LOG_LEVEL": "INFO"})
    assert result.returncode == 1
    assert _one_line(result.stderr) == (
        f"dessert-mcp: error: cannot listen on 127.0.0.1:{port}: it is already in use; pick another with --port."
    )
    assert result.stdout == ""


def test_a_malformed_encryption_key_is_one_line_naming_the_command_that_makes_one() -> None:
    env = {"DESSERT_MCP_ENCRYPTION_KEY": "not-32-bytes", "DESSERT_MCP_PUBLIC_URL": "http://127.0.0.1:1"}
    result = run("--transport", "http", "--auth", "oauth", "--port", "0", env=env)
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert line.startswith("dessert-mcp: configuration error: DESSERT_MCP_ENCRYPTION_KEY must be 32 random bytes")
    assert line.endswith("make one with `dessert-mcp accounts new-key`.")


@pytest.mark.parametrize(
    ("args", "ready"),
    [
        (["--transport", "http", "--sandbox"], "Application startup complete."),
        (["--transport", "sse", "--sandbox"], "Application startup complete."),
        (["--transport", "http", "--workers", "2", "--sandbox"], "Application startup complete."),
        (["sandbox"], "Press Ctrl+C to stop."),
    ],
    ids=["http", "sse", "two workers", "sandbox"],
)
def test_ctrl_c_stops_a_server_quietly(args: list[str], ready: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESSERT_")} | {"DESSERT_MCP_LOG_LEVEL": "INFO"}
    argv = [sys.executable, "-m", "dessert_mcp", *args, "--port", "0"]
    # The event: the server says it is up. Started as from a terminal, with SIGINT's default action: a suite run as a
    # background job (`.ci/run &` from a script) hands its children SIGINT ignored, which Python then keeps ignoring.
    with started(
        argv, env=env, ready=printed(re.escape(ready)), log=tmp_path / "server.log", preexec_fn=_sigint_as_in_a_terminal
    ) as server:
        server.popen.send_signal(signal.SIGINT)  # what Ctrl+C sends
        returncode = server.wait(STARTUP_TIMEOUT_S)
        rest = server.output()
    assert "Traceback" not in rest
    assert "KeyboardInterrupt" not in rest
    assert returncode in (0, 130), rest


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_streamable_http_the_specs_own_name_is_a_transport_alias(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESSERT_")} | {"DESSERT_MCP_LOG_LEVEL": "INFO"}
    with cli_server(["--transport", "streamable-http", "--sandbox"], env, tmp_path / "server.log") as url:
        listed = httpx2.post(
            url + "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
            headers={"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"},
        )
    assert listed.status_code == 200, listed.text
    assert "dessert" in listed.text
    assert "Serving MCP over streamable HTTP" in (tmp_path / "server.log").read_text()
