"""Alerts and live updates, in one process: the latency from an upstream change to the listening client's
`resources/updated` (p50, p99), and `dessert.get_balance`'s cost with alerts on against off, side by side.

    .venv/bin/python bench/alerts.py [--events 300] [--calls 400] [--rounds 5]

The change is seen through a tool call (the poller is off, so its schedule does not dominate the figure): the
latency is the call, the ledger's write, the rules and the listen stream. "On" is the three level rules with
thresholds every balance crosses (each get_balance then carries an active alert); "off" is all three at 0. The two
run as two servers in this process, each with a database of its own, their calls interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import anyio
import httpx2
from mcp import Client

from dessert_mcp.alerts import USAGE_URI
from dessert_mcp.config import Settings
from dessert_mcp.service import DessertService
from dessert_mcp.tools import build_server

KEY = "dsk_bench_0123456789abcdef"
T0 = datetime(2026, 5, 1, tzinfo=UTC)


class Feed:
    """A Dessert account whose usage grows by one deduction whenever the benchmark says so."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []
        self.balance = 100_000
        for _ in range(50):
            self.add()

    def add(self) -> None:
        self.balance -= 5
        at = T0 + timedelta(seconds=len(self.rows))
        self.rows.append(
            {
                "type": "Deduction",
                "credits_delta": -5,
                "balance_after": self.balance,
                "usd_amount": None,
                "description": "API ad generation (count=1, format=static)",
                "at": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            }
        )

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/v1/usage":
            body: dict[str, object] = {"recent_transactions": list(reversed(self.rows[-50:]))}
        else:
            body = {
                "credits_balance": self.balance,
                "credits_balance_usd_equivalent": self.balance / 10,
                "credits_lifetime_purchased": 500,
                "auto_recharge_enabled": True,
                "auto_recharge_threshold": 20,
                "auto_recharge_amount_usd": 25.0,
                "pricing": {"credit_usd": 0.1, "static_ad_credits": 5, "full_ad_credits": 15},
            }
        data = json.dumps(body).encode()
        return httpx2.Response(200, headers={"content-type": "application/json"}, stream=httpx2.ByteStream(data))


def settings(**alerts: str) -> Settings:
    env = {
        "DESSERT_API_KEY": KEY,
        "DESSERT_API_BASE_URL": "https://api.dessert.test",
        "DESSERT_LEDGER_POLL": "off",
        "DESSERT_MCP_LOG_LEVEL": "WARNING",  # a log line per call would be most of what is measured
    }
    return Settings.from_env(env | alerts)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def event_latency(events: int) -> list[float]:
    feed = Feed()
    server = build_server(settings(), transport=httpx2.MockTransport(feed))
    async with Client(server) as client, client.listen(resource_subscriptions=[USAGE_URI]) as subscription:
        return await change_latencies(feed, client, aiter(subscription), events)


async def change_latencies(feed: Feed, caller: Client, stream: AsyncIterator[object], events: int) -> list[float]:
    """Seconds from each of `events` new rows of `feed`, read by a get_usage call of `caller`, to the next event on
    `stream` (whose client listens to dessert://usage)."""
    await caller.call_tool("dessert_get_usage", {})
    with anyio.fail_after(60):
        await anext(stream)  # the first read: the account's past
    latencies: list[float] = []
    for _ in range(events):
        feed.add()
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller.call_tool, "dessert_get_usage", {})
            with anyio.fail_after(60):
                await anext(stream)
            latencies.append(time.perf_counter() - started)
    return latencies


@asynccontextmanager
async def balance_client(on: bool, data: str) -> AsyncIterator[Client]:
    """A client of a server whose ledger (and alerts) live in `data`, warmed up: with alerts on, its balance
    carries an active alert."""
    alerts = {"DESSERT_ALERT_BALANCE_BELOW": str(10**9)} if on else {}
    if not on:
        alerts |= {"DESSERT_ALERT_RUNWAY_DAYS": "0", "DESSERT_ALERT_SPIKE_FACTOR": "0"}
    service = DessertService(settings(**alerts), transport=httpx2.MockTransport(Feed()))
    os.environ["XDG_DATA_HOME"] = data  # read when the ledger opens, on the first call below
    async with Client(build_server(service.settings, service=service)) as client:
        for _ in range(20):  # warm up; with alerts on, the first balance fires one once the ledger has it
            await client.call_tool("dessert_get_balance", {})
        assert service.recorder is not None
        await service.recorder.settled()
        result = await client.call_tool("dessert_get_balance", {})
        assert bool(result.structured_content and result.structured_content["alerts"]) == on
        yield client


async def balance_calls(calls: int) -> tuple[float, float]:
    """Median seconds per get_balance call with alerts on and off: two servers, each on a database of its own, their
    calls interleaved (which goes first alternates), so both meet the same machine at the same moments."""
    per_call: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as on_data, tempfile.TemporaryDirectory() as off_data:
        async with balance_client(True, on_data) as on, balance_client(False, off_data) as off:
            clients = {True: on, False: off}
            for i in range(calls):
                for alerts_on in (True, False) if i % 2 else (False, True):
                    started = time.perf_counter()
                    await clients[alerts_on].call_tool("dessert_get_balance", {})
                    per_call[alerts_on].append(time.perf_counter() - started)
    return statistics.median(per_call[True]), statistics.median(per_call[False])


async def main(events: int, calls: int, rounds: int) -> None:
    latencies = await event_latency(events)
    p50, p99 = pct(latencies, 0.5) * 1000, pct(latencies, 0.99) * 1000
    print(f"event latency, upstream change -> client notification ({events}): p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    on: list[float] = []
    off: list[float] = []
    await balance_calls(min(calls, 50))  # a round not counted: the first one in a process ran slower with alerts on
    for _ in range(rounds):
        on_median, off_median = await balance_calls(calls)
        on.append(on_median)
        off.append(off_median)
    ratio = statistics.median(on) / statistics.median(off)
    verdict = "PASS" if ratio <= 1.05 else "FAIL"
    print(
        f"get_balance per call, alerts on {statistics.median(on) * 1e3:.3f} ms vs off "
        f"{statistics.median(off) * 1e3:.3f} ms -> {ratio:.3f}x (target <= 1.05x) {verdict}"
    )
    rounds_ratio = [round(a / b, 3) for a, b in zip(on, off, strict=True)]
    print(f"per round, on/off: {rounds_ratio}")
    print(json.dumps({"event_p50_ms": p50, "event_p99_ms": p99, "alerts_on_off_ratio": ratio}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        os.environ["XDG_DATA_HOME"] = data  # the ledger's databases: fresh ones, gone afterwards
        anyio.run(main, args.events, args.calls, args.rounds)
