"""Soak: ≥10,000 tool calls over streamable HTTP at concurrency 16 against a sandbox with ~40 % seeded faults.

Pass: no crash, every call answered with a valid result or a taxonomy error, server RSS growth ≤ 30 MB from
call 1,000 to the end, no upstream connection left open once the server stops. The figures are printed.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import get_args

import anyio
import pytest
from anyio.abc import Process
from mcp import Client

from dessert_mcp.client import ErrorCode
from tests.support import STARTUP_TIMEOUT_S
from tests.support.faults import Fault, ThreadedFaultySandbox

from .conftest import canary_key, error_info, result_text, settings_env

CALLS = int(os.environ.get("DESSERT_SOAK_CALLS", "10000"))
CONCURRENCY = 16
FAULT_RATE = 0.4
SEED = 20261125
TAXONOMY = set(get_args(ErrorCode))  # pinned to the documented codes in tests/test_client_reliability.py
# Scaled-down versions of the matrix's faults, so each costs milliseconds (a hang costs the 1 s deadline).
FAULTS = [
    Fault(status=500),
    Fault(status=503, headers={"retry-after-ms": "20"}),
    Fault(status=429, headers={"Retry-After": "0"}),
    Fault(status=429, headers={"Retry-After": "3600"}),
    Fault(status=408),
    Fault(status=401),
    Fault(status=403),
    Fault(status=404),
    Fault(status=400),
    Fault(body="<html>down for maintenance</html>"),
    Fault(body='{"credits_balance": "lots"}'),
    Fault(reset_after_bytes=10),
    Fault(close=True),
    Fault(delay_s=0.05),
    Fault(body_size=3 * 1024 * 1024),
    Fault(gzip_bomb=4 * 1024 * 1024),
    Fault(redirect_to="http://127.0.0.2:9/v1/balance"),
    Fault(hang=True),
]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _start_server(sandbox: ThreadedFaultySandbox, key: str, stderr: Path) -> tuple[Process, str]:
    from dessert_mcp.config import Settings

    settings = Settings(base_url=sandbox.url, timeout_s=1.0, backoff_s=0.01, log_level="WARNING").with_key(key)
    launcher = Path(__file__).with_name("serve_http.py")
    with stderr.open("wb") as log:
        process = await anyio.open_process([sys.executable, str(launcher)], env=settings_env(settings), stderr=log)
    assert process.stdout is not None
    line = b""
    with anyio.fail_after(STARTUP_TIMEOUT_S):
        while b"\n" not in line:
            line += await process.stdout.receive()
    port = int(line.split()[1])
    return process, f"http://127.0.0.1:{port}/mcp"


@pytest.mark.soak
async def test_soak_over_streamable_http(tmp_path: Path) -> None:
    key = canary_key()
    outcomes: Counter[str] = Counter()
    problems: list[str] = []
    rss: dict[str, float] = {}
    issued = 0
    with ThreadedFaultySandbox(key=key) as sandbox:
        sandbox.set_chaos(FAULTS, rate=FAULT_RATE, seed=SEED)
        process, url = await _start_server(sandbox, key, tmp_path / "stderr.log")
        started = time.monotonic()

        async def worker(n: int) -> None:
            nonlocal issued
            tools = ("dessert.get_balance", "dessert.get_usage")
            async with Client(url) as client:
                while issued < CALLS:
                    issued += 1
                    if issued == 1000:
                        rss["at_1000"] = rss_mb(process.pid)
                    name = tools[issued % 2]
                    with anyio.fail_after(10):
                        result = await client.call_tool(name, {"limit": 5} if name.endswith("usage") else {})
                    shown = result.model_dump_json()
                    if key in shown:
                        problems.append(f"key leaked in {name}")
                    if result.is_error:
                        code = error_info(result)["code"]
                        outcomes[code] += 1
                        if code not in TAXONOMY:
                            problems.append(f"unknown code {code}: {result_text(result)[:200]}")
                    elif result.structured_content is None:
                        problems.append(f"result without structured content: {shown[:200]}")
                    else:
                        outcomes["ok"] += 1

        try:
            async with anyio.create_task_group() as tg:
                for n in range(CONCURRENCY):
                    tg.start_soon(worker, n)
            duration = time.monotonic() - started
            rss["end"] = rss_mb(process.pid)
            assert process.returncode is None, "the server crashed"
            stats = sandbox.stats()
            open_while_serving = stats["open_connections"]
        finally:
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):
                await process.wait()
        # The server closed its pool on the way out; the sandbox must see every connection gone.
        with anyio.fail_after(5):
            while True:
                if sandbox.stats()["open_connections"] == 0:
                    break
                await anyio.sleep(0.02)
    answered = sum(outcomes.values())
    growth = rss["end"] - rss["at_1000"]
    logged = (tmp_path / "stderr.log").read_text(errors="replace")
    print(
        f"\nsoak: {answered} calls in {duration:.1f} s ({answered / duration:.0f}/s) at concurrency {CONCURRENCY}; "
        f"upstream requests {stats['total']}, chaos faults {stats['chaos_faults']} "
        f"({100 * stats['chaos_faults'] / max(stats['total'], 1):.0f} %), connections accepted "
        f"{stats['accepted_connections']}, open while serving {open_while_serving}, open after stop 0\n"
        f"soak: outcomes {dict(sorted(outcomes.items()))}\n"
        f"soak: server RSS {rss['at_1000']:.1f} MB at call 1,000 -> {rss['end']:.1f} MB at the end "
        f"(growth {growth:+.1f} MB); exit code {process.returncode}"
    )
    assert problems == []
    assert answered == CALLS
    assert growth <= 30
    assert key not in logged
