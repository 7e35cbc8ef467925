"""Events across replicas: the latency from an upstream change seen by replica A to the notification of a client
listening on replica B through Redis (p50, p99), next to the same change heard by a client of A itself (the
one-replica figure of bench/alerts.py), measured side by side in one run.

    .venv/bin/python bench/fanout.py [--events 300] [--rounds 3]

Two services in one process, each with its own MCP server and in-memory client, share one ledger file and one
Redis (Debian's redis-server, started here on a free loopback port); the change is seen through a tool call on A
(pollers off), as in bench/alerts.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import _repo  # noqa: F401  # the repository on the import path: the tests' Redis harness
import anyio
import httpx2
from mcp import Client
from tests.support.processes import free_port
from tests.support.redis import RedisServer

from alerts import Feed, change_latencies, pct, settings
from dessert_mcp.alerts import USAGE_URI
from dessert_mcp.config import Secret
from dessert_mcp.fanout import RedisFanout
from dessert_mcp.service import DessertService
from dessert_mcp.tools import build_server


async def latencies(redis_url: str, data: str, events: int, *, across: bool) -> list[float]:
    """Seconds from each change A sees to the listener's notification (on B when `across`, else on A)."""
    os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(dir=data)  # a fresh ledger, which both replicas share
    feed = Feed()
    replicas = [DessertService(settings(), transport=httpx2.MockTransport(feed)) for _ in range(2)]
    fanouts = []
    for service in replicas:
        fanouts.append(RedisFanout(Secret(redis_url), service.remote_event))
        service.events.relay = fanouts[-1]
    a, b = replicas
    async with (
        fanouts[0].running(),
        fanouts[1].running(),
        Client(build_server(a.settings, service=a)) as on_a,
        Client(build_server(b.settings, service=b)) as on_b,
    ):
        with anyio.fail_after(60):
            for fanout in fanouts:
                await fanout.connected()
        async with (on_b if across else on_a).listen(resource_subscriptions=[USAGE_URI]) as subscription:
            return await change_latencies(feed, on_a, aiter(subscription), events)


async def main(redis_url: str, data: str, events: int, rounds: int) -> None:
    local: list[float] = []
    across: list[float] = []
    for _ in range(rounds):  # alternated, so both see the same machine
        local += await latencies(redis_url, data, events, across=False)
        across += await latencies(redis_url, data, events, across=True)
    figures = {}
    for name, values in (("one_replica", local), ("across_redis", across)):
        p50, p99 = pct(values, 0.5) * 1000, pct(values, 0.99) * 1000
        figures |= {f"{name}_p50_ms": p50, f"{name}_p99_ms": p99}
        print(f"{name:>12}: upstream change -> client notification ({len(values)}): p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    ratio = statistics.median(across) / statistics.median(local)
    print(f"across Redis / one replica, p50: {ratio:.2f}x")
    print(json.dumps(figures | {"p50_ratio": ratio}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:  # the ledgers' files and Redis's, gone afterwards
        redis = RedisServer(free_port(), Path(data))
        redis.start()
        try:
            anyio.run(main, redis.url, data, args.events, args.rounds)
        finally:
            redis.stop()
