"""Upstream economy: Dessert GETs per tool call for an agent polling get_balance in a loop, with and without the
short answer cache (DESSERT_CACHE_TTL_S).

Standalone: `.venv/bin/python bench/cache.py [--duration S] [--interval S] [--burst N]`. The server runs in this
process behind a real MCP client (in memory), against the tests' sandbox API on 127.0.0.1 over real HTTP, which
counts the requests that reach it. Two agents: one polling every `--interval` seconds for `--duration` seconds, one
calling back to back `--burst` times.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import _repo  # noqa: F401  (the repository on the import path, for tests.support)
import anyio
from mcp import Client
from tests.support.faults import ThreadedFaultySandbox
from tests.support.processes import private_user_dirs

from dessert_mcp.config import Settings
from dessert_mcp.tools import build_server

TTLS = (0.0, 1.0, 5.0, 30.0)


async def poll(
    sandbox: ThreadedFaultySandbox, settings: Settings, *, calls: int | None, interval_s: float, duration_s: float
) -> tuple[int, int]:
    """(tool calls made, upstream GETs) for one agent loop."""
    sandbox.reset()
    made = 0
    async with Client(build_server(settings)) as client:
        deadline = time.monotonic() + duration_s
        while (made < calls) if calls is not None else (time.monotonic() < deadline):
            result = await client.call_tool("dessert_get_balance", {})
            assert not result.is_error, result
            made += 1
            if interval_s:
                await anyio.sleep(interval_s)
    gets: int = sandbox.stats()["total"]
    return made, gets


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds the polling agent runs (default 6)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between its calls (default 0.1)")
    parser.add_argument("--burst", type=int, default=200, help="back-to-back calls of the other agent (default 200)")
    args = parser.parse_args()
    with ThreadedFaultySandbox() as sandbox:
        base = replace(Settings.from_env({}), base_url=sandbox.url, log_level="WARNING").with_key(sandbox.key)
        print(f"{'agent':<34} {'DESSERT_CACHE_TTL_S':>19} {'calls':>6} {'GETs':>5} {'GETs/call':>9}  oldest answer")
        for label, calls, interval, duration in (
            (f"polls every {args.interval:g} s for {args.duration:g} s", None, args.interval, args.duration),
            (f"{args.burst} calls back to back", args.burst, 0.0, 0.0),
        ):
            for ttl in TTLS:
                settings = replace(base, cache_ttl_s=ttl)
                made, gets = await poll(sandbox, settings, calls=calls, interval_s=interval, duration_s=duration)
                oldest = f"up to {ttl:g} s" if ttl else "live"
                print(f"{label:<34} {ttl:>19g} {made:>6} {gets:>5} {gets / made:>9.3f}  {oldest}")


if __name__ == "__main__":
    with private_user_dirs():  # the ledger (on by default) writes there
        anyio.run(main)
