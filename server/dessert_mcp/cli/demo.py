"""`dessert-mcp demo`: the sandbox, the server as a real stdio subprocess, and a real MCP client, end to end."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from mcp import Client, StdioServerParameters
from mcp.client.stdio import get_default_environment
from mcp.types import CallToolResult

from dessert_mcp.cli.hosts import server_command
from dessert_mcp.sandbox import ThreadedSandbox


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[["—" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class DemoFailed(Exception):
    """A tool call in the demo returned an error."""


def _structured(result: CallToolResult, name: str) -> dict[str, Any]:
    if result.is_error or result.structured_content is None:
        text = " ".join(getattr(block, "text", "") for block in result.content)
        raise DemoFailed(f"{name} failed: {text}")
    content: dict[str, Any] = result.structured_content
    return content


async def run_demo(out: TextIO = sys.stdout) -> int:
    failures: list[Exception] = []
    try:
        await _demo(out)
    except* DemoFailed as group:
        failures.extend(group.exceptions)
    for exc in failures:
        sys.stderr.write(f"demo: {exc}\n")
    if failures:
        return 1
    out.write("\nDemo finished: both tools answered over a real stdio MCP session.\n")
    return 0


async def _demo(out: TextIO) -> None:
    with ThreadedSandbox() as sandbox:
        command, args = server_command()
        env = get_default_environment() | {
            "DESSERT_API_KEY": sandbox.key,
            "DESSERT_API_BASE_URL": sandbox.url,
            "DESSERT_MCP_LOG_LEVEL": os.environ.get("DESSERT_MCP_LOG_LEVEL", "WARNING"),
        }
        out.write(f"Sandbox API on {sandbox.url}; launching `{' '.join([Path(command).name, *args])}` over stdio.\n\n")
        async with Client(StdioServerParameters(command=command, args=args, env=env)) as client:
            listed = await client.list_tools()
            out.write(
                "Tools\n"
                + table(
                    ["name", "title", "read-only", "idempotent"],
                    [
                        [
                            t.name,
                            t.title,
                            t.annotations and t.annotations.read_only_hint,
                            t.annotations and t.annotations.idempotent_hint,
                        ]
                        for t in listed.tools
                    ],
                )
                + "\n\n"
            )

            names = [t.name for t in listed.tools]
            balance_name = next(n for n in names if n.endswith("get_balance"))
            usage_name = next(n for n in names if n.endswith("get_usage"))
            balance = _structured(await client.call_tool(balance_name, {}), balance_name)
            pricing = balance["pricing"]
            out.write(
                f"Balance ({balance_name})\n"
                + table(
                    ["field", "value"],
                    [
                        ["credits_balance", balance["credits_balance"]],
                        ["credits_balance_usd_equivalent", f"${balance['credits_balance_usd_equivalent']:.2f}"],
                        ["credits_lifetime_purchased", balance["credits_lifetime_purchased"]],
                        [
                            "auto_recharge",
                            f"{'on' if balance['auto_recharge_enabled'] else 'off'} below "
                            f"{balance['auto_recharge_threshold']} credits, ${balance['auto_recharge_amount_usd']:.2f}",
                        ],
                        [
                            "pricing",
                            f"${pricing['credit_usd']:.2f}/credit; static ad {pricing['static_ad_credits']}, "
                            f"full ad {pricing['full_ad_credits']} credits",
                        ],
                        [
                            "affordable now",
                            f"{balance['static_ads_affordable']} static or {balance['full_ads_affordable']} full ads",
                        ],
                        ["below_auto_recharge_threshold", balance["below_auto_recharge_threshold"]],
                    ],
                )
                + "\n\n"
            )

            usage = _structured(await client.call_tool(usage_name, {"limit": 8}), usage_name)
            out.write(
                f"Usage ({usage_name}, limit=8)\n"
                + table(
                    ["at", "type", "credits", "balance after", "usd", "description"],
                    [
                        [
                            t["at"],
                            t["type"],
                            f"{t['credits_delta']:+d}",
                            t["balance_after"],
                            t["usd_amount"],
                            t["description"],
                        ]
                        for t in usage["recent_transactions"]
                    ],
                )
                + "\n"
            )
            summary = usage["summary"]
            out.write(
                f"summary: spent {summary['credits_spent']} credits, added {summary['credits_added']}, "
                f"purchased ${summary['usd_purchased']:.2f}; by type {json.dumps(summary['count_by_type'])}\n"
                f"note: {usage['note']}\n"
            )
