"""Soak: ≥10,000 tool calls to `dessert-mcp --transport http` (with its bearer token) at concurrency 16 against a
sandbox with ~40 % seeded faults.

Pass: no crash, every call answered with a valid result or a taxonomy error, no upstream connection left open once
the server stops. The figures are printed, the server's RSS among them (its ceiling is `make bench`'s to check).
"""

from __future__ import annotations

import os
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import get_args

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from dessert_mcp.client import ErrorCode
from dessert_mcp.config import Settings
from dessert_mcp.http.options import AUTH_TOKEN_ENV
from tests.support.faults import Fault, ThreadedFaultySandbox
from tests.support.processes import rss_mb
from tests.support.servers import cli_process

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


@pytest.mark.soak
async def test_soak_over_streamable_http(tmp_path: Path) -> None:
    key = canary_key()
    outcomes: Counter[str] = Counter()
    problems: list[str] = []
    rss: dict[str, float] = {}
    issued = 0
    with ThreadedFaultySandbox(key=key) as sandbox:
        sandbox.set_chaos(FAULTS, rate=FAULT_RATE, seed=SEED)
        settings = Settings(base_url=sandbox.url, timeout_s=1.0, backoff_s=0.01, log_level="WARNING").with_key(key)
        token = f"soak-token-{secrets.token_hex(16)}"
        env = settings_env(settings) | {AUTH_TOKEN_ENV: token}
        with cli_process(["--transport", "http"], env, tmp_path / "stderr.log") as (base, pid):
            started = time.monotonic()

            async def worker(n: int) -> None:
                nonlocal issued
                tools = ("dessert.get_balance", "dessert.get_usage")
                async with (
                    httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
                    Client(streamable_http_client(base + "/mcp", http_client=http)) as client,
                ):
                    while issued < CALLS:
                        issued += 1
                        if issued == 1000:
                            rss["at_1000"] = rss_mb(pid)
                        name = tools[issued % 2]
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

            async with anyio.create_task_group() as tg:
                for n in range(CONCURRENCY):
                    tg.start_soon(worker, n)
            duration = time.monotonic() - started
            rss["end"] = rss_mb(pid)
            async with httpx2.AsyncClient() as http:
                assert (await http.get(base + "/healthz")).status_code == 200, "the server stopped serving"
            stats = sandbox.stats()
            open_while_serving = stats["open_connections"]
        # The server (stopped by SIGTERM on leaving the block) closed its pool on the way out: the sandbox must see
        # every connection gone.
        with anyio.fail_after(60):
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
        f"(growth {growth:+.1f} MB)"
    )
    assert problems == []
    assert answered == CALLS
    assert key not in logged
