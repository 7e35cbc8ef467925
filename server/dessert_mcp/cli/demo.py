"""`dessert-mcp demo`: the sandbox, the server as a real stdio subprocess, and a real MCP client, end to end.

The server is launched as hosts launch it (underscore tool names), and the output reads as the product would to a
person: aligned columns within a terminal's 80 characters, yes/no, dollars with cents, UTC times, sentences for
the summary and the forecast, one error case, and the JSON an agent receives for one call. Usage is asked for as
the dashboard asks (no arguments), so the two show one forecast over one window: the transactions returned.

Then the ledger at work, in a few lines: a second sandbox serves a live account whose clock the demo moves on
between reads (no sleeping), so the API's 50-row window moves and the server keeps what scrolls out; a range
`get_usage` pages through more than 50 kept rows, and one `get_spend` answer totals them. Every server the demo
launches keeps its ledger in a temporary directory, deleted at the end: never the user's own.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import textwrap
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import get_default_environment
from mcp.types import CallToolResult

from dessert_mcp.cli.hosts import server_command
from dessert_mcp.sandbox import ThreadedSandbox
from dessert_mcp.sandbox.activity import LiveAccount

WIDTH: Final = 80
WRONG_KEY: Final = "dsk_sandbox_not_the_right_key_000000"  # what the sandbox rejects (it is no secret)
# The live account: a fixed seed and pace, so every run keeps the same rows. Each step brings about 30 rows, fewer
# than the API's window of 50, so consecutive reads share rows and the ledger proves nothing between them is missing.
LIVE_SEED: Final = 7
LIVE_RATE: Final = 60.0  # transactions a second, on the account's own clock
LIVE_STEP_S: Final = 0.5
LIVE_READS: Final = 4
# The account's clock starts this far ahead of the server's and steps on without waiting: a read vouches for every
# row older than the moment it was sent, so no row may be dated before a read that did not see it.
LIVE_LEAD_S: Final = 3.0


def table(headers: Sequence[str] | None, rows: Sequence[Sequence[object]], *, right: Collection[int] = ()) -> str:
    """Aligned columns (`right`: indexes of right-aligned ones); the last column is cut to keep within `WIDTH`."""
    cells = [[str(h) for h in headers or rows[0]], *[["—" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    room = WIDTH - sum(widths[:-1]) - 2 * (len(widths) - 1)
    if widths[-1] > room:
        widths[-1] = room
        cells = [[*row[:-1], row[-1] if len(row[-1]) <= room else row[-1][: room - 1] + "…"] for row in cells]

    def line(row: Sequence[str]) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(padded).rstrip()

    head = [line(cells[0]), "  ".join("-" * w for w in widths)] if headers is not None else []
    return "\n".join([*head, *(line(row) for row in cells[1:])])


def yes_no(value: object) -> str:
    return "yes" if value else "no"


def usd(value: float | None) -> str | None:
    return None if value is None else f"${value:,.2f}"


def when(timestamp: str | None) -> str | None:
    """`2026-05-19T18:24:01.000Z` as `2026-05-19 18:24` (UTC); anything unreadable as it came."""
    if timestamp is None:
        return None
    try:
        return datetime.fromisoformat(timestamp).astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return timestamp


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def paragraph(label: str, text: str) -> list[str]:
    """`label` and `text` wrapped within `WIDTH`, continuation lines indented under the text."""
    return textwrap.wrap(text, WIDTH, initial_indent=f"{label + ':':<10}", subsequent_indent=" " * 10)


def summary_lines(summary: Mapping[str, Any], returned: int) -> list[str]:
    counts = ", ".join(plural(n, kind.lower()) for kind, n in summary["count_by_type"].items() if n)
    text = (
        f"{counts or 'no transactions'}; {summary['credits_spent']} credits spent, "
        f"{summary['credits_added']} added, {usd(summary['usd_purchased'])} purchased"
    )
    if summary["oldest_at"]:
        text += f"; from {when(summary['oldest_at'])} to {when(summary['newest_at'])} UTC"
    lines = paragraph("summary", text)
    forecast = summary["forecast"]
    if forecast["days_until_empty"] is None:
        lines += paragraph("forecast", f"no estimate ({forecast['unavailable_reason']})")
    else:
        # The window is named, as the dashboard names it: the same tool call gives both the same number.
        days = forecast.get("history_days")
        basis = (
            f"over {plural(days, 'whole day')} of kept history"
            if days
            else (f"over the {plural(returned, 'transaction')} returned")
        )
        low, high = forecast.get("days_until_empty_low"), forecast.get("days_until_empty_high")
        spread = ""
        if low is not None:
            spread = f" ({low:.1f} to {high:.1f} days" if high is not None else f" (at least {low:.1f} days"
            spread += " at the busier and quieter days' pace)"
        lines += paragraph(
            "forecast",
            f"{basis}, {forecast['burn_rate_credits_per_day']:.1f} credits a day (net); the balance of "
            f"{forecast['latest_balance']} lasts about {forecast['days_until_empty']:.1f} days{spread}, before "
            "auto-recharge",
        )
    return lines


class DemoFailed(Exception):
    """A tool call in the demo did not answer as expected."""


def _text(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def _structured(result: CallToolResult, name: str) -> dict[str, Any]:
    if result.is_error or result.structured_content is None:
        raise DemoFailed(f"{name} failed: {_text(result)}")
    content: dict[str, Any] = result.structured_content
    return content


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside `exc`, however deeply nested task groups wrapped them."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


async def run_demo(out: TextIO = sys.stdout) -> int:
    status = 0
    try:
        await _demo(out)
    except* DemoFailed as group:  # one raised inside `async with Client(...)` arrives in an exception group
        sys.stderr.writelines(f"demo: {exc}\n" for exc in _leaves(group))
        status = 1
    else:
        out.write("\nDemo finished: every tool answered over a real stdio MCP session.\n")
    return status


def _server(sandbox: ThreadedSandbox, key: str, *, ledger: Path, poll: bool = True) -> StdioServerParameters:
    command, args = server_command()
    env = get_default_environment() | {
        "DESSERT_API_KEY": key,
        "DESSERT_API_BASE_URL": sandbox.url,
        "DESSERT_MCP_DATABASE_URL": f"sqlite:///{ledger}",  # the demo's own, not the user's ledger
        "DESSERT_LEDGER_POLL": "on" if poll else "off",
        "DESSERT_MCP_TOOL_NAMES": "underscore",  # what every host entry asks for
        # The wrong-key call is logged as a WARNING on the server's stderr, which is this terminal: keep the
        # server to errors unless asked, so no log line lands inside the demo's output.
        "DESSERT_MCP_LOG_LEVEL": os.environ.get("DESSERT_MCP_LOG_LEVEL", "ERROR"),
    }
    return StdioServerParameters(command=command, args=args, env=env)


async def _demo(out: TextIO) -> None:
    with tempfile.TemporaryDirectory(prefix="dessert-mcp-demo-") as scratch:
        ledger = Path(scratch) / "ledger.db"
        await _tools(out, ledger)
        await _history(out, Path(scratch) / "live.db")


async def _tools(out: TextIO, ledger: Path) -> None:
    with ThreadedSandbox() as sandbox:
        server = _server(sandbox, sandbox.key, ledger=ledger)
        launched = " ".join([Path(server.command).name, *server.args])
        out.write(f"Sandbox API on {sandbox.url} (no account needed).\n")
        out.write(f"Launching `{launched}` over stdio, as an MCP host does.\n\n")
        async with Client(server) as client:
            listed = await client.list_tools()
            rows = []
            for tool in listed.tools:
                hints = tool.annotations
                arguments = ", ".join(tool.input_schema.get("properties", {})) or "none"
                read_only = yes_no(hints and hints.read_only_hint)
                rows.append([tool.name, tool.title, read_only, arguments])
            out.write("Tools, as hosts show them\n")
            out.write(table(["name", "title", "read-only", "arguments"], rows) + "\n\n")

            names = [t.name for t in listed.tools]
            balance_name = next(n for n in names if n.endswith("get_balance"))
            usage_name = next(n for n in names if n.endswith("get_usage"))
            balance = _structured(await client.call_tool(balance_name, {}), balance_name)
            pricing = balance["pricing"]
            out.write(f"Balance ({balance_name})\n")
            balance_rows = [
                ["balance", f"{balance['credits_balance']} credits ({usd(balance['credits_balance_usd_equivalent'])})"],
                ["bought in all", f"{balance['credits_lifetime_purchased']} credits"],
                [
                    "auto-recharge",
                    f"{yes_no(balance['auto_recharge_enabled'])}: {usd(balance['auto_recharge_amount_usd'])} when "
                    f"the balance drops below {balance['auto_recharge_threshold']} credits",
                ],
                ["below threshold", yes_no(balance["below_auto_recharge_threshold"])],
                [
                    "pricing",
                    f"{usd(pricing['credit_usd'])} a credit; a static ad costs {pricing['static_ad_credits']} credits, "
                    f"a full ad {pricing['full_ad_credits']}",
                ],
                [
                    "affordable now",
                    f"{balance['static_ads_affordable']} static or {balance['full_ads_affordable']} full ads",
                ],
            ]
            out.write(table(None, balance_rows) + "\n\n")

            usage = _structured(await client.call_tool(usage_name, {}), usage_name)
            returned = usage["recent_transactions"]
            out.write(f"Usage ({usage_name}), newest first\n")
            transactions = [
                [
                    when(t["at"]),
                    f"{t['credits_delta']:+d}",
                    t["balance_after"],
                    t["description"] + (f" ({usd(t['usd_amount'])})" if t["usd_amount"] is not None else ""),
                ]
                for t in returned
            ]
            out.write(table(["at (UTC)", "credits", "balance", "description"], transactions, right={1, 2}) + "\n")
            lines = [*summary_lines(usage["summary"], len(returned)), *paragraph("note", usage["note"])]
            out.write("\n".join(lines) + "\n\n")

            out.write(
                "\n".join(
                    textwrap.wrap(
                        f"What an agent receives from {balance_name}: this JSON as structuredContent, and compact "
                        "in a text block for clients that read only text",
                        WIDTH,
                    )
                )
                + "\n"
            )
            out.write(json.dumps(balance, indent=2) + "\n\n")

        async with Client(_server(sandbox, WRONG_KEY, ledger=ledger)) as client:
            wrong = await client.call_tool(balance_name, {})
        if not wrong.is_error:
            raise DemoFailed(f"{balance_name} with a wrong key did not fail")
        said = (
            f"With a wrong key, {balance_name} answers a tool error (isError: true): one sentence to act on, "
            "then a code to match on"
        )
        out.write("\n".join(textwrap.wrap(said, WIDTH)) + "\n")
        for line in _text(wrong).splitlines():
            out.write("\n".join(textwrap.wrap(line, WIDTH, initial_indent="  ", subsequent_indent="  ")) + "\n")


class _Clock:
    """The live account's clock, which the demo moves on instead of waiting."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _wrapped(text: str) -> str:
    return "\n".join(textwrap.wrap(text, WIDTH, subsequent_indent="  ")) + "\n"


async def _history(out: TextIO, ledger: Path) -> None:
    """A live account read as its window moves, then a range and a spend answer from what the server kept."""
    with ThreadedSandbox() as sandbox:
        # The poller stays off, so the server reads only when the demo asks, and no read sees the account swapped.
        async with Client(_server(sandbox, sandbox.key, ledger=ledger, poll=False)) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            usage_name = next(n for n in names if n.endswith("get_usage"))
            spend_name = next((n for n in names if n.endswith("get_spend")), None)
            if spend_name is None:
                raise DemoFailed("the server lists no get_spend tool: is DESSERT_LEDGER off?")
            # Made once the server is up, so its clock's lead is not spent waiting for the server to start.
            clock = _Clock(time.time() + LIVE_LEAD_S)
            with sandbox.sandbox.lock:
                sandbox.sandbox.account = LiveAccount(rate=LIVE_RATE, seed=LIVE_SEED, clock=clock)
            since = None
            for read in range(LIVE_READS):
                if read:
                    clock.now += LIVE_STEP_S
                window = _structured(await client.call_tool(usage_name, {}), usage_name)["recent_transactions"]
                # From the first read's second-oldest row: the ledger cannot vouch for rows as old as its oldest.
                since = since or window[-2]["at"]
            assert since is not None  # LIVE_READS > 0 and the live account has history
            # One more read once the server's clock has passed the newest row, so it vouches for all of them.
            await anyio.sleep(max(0.0, clock.now - time.time()) + 0.01)
            _structured(await client.call_tool(usage_name, {}), usage_name)
            out.write("\n")
            out.write(
                _wrapped(
                    f"The ledger at work: a live sandbox account, read {LIVE_READS} times with {usage_name} as its "
                    f"clock moves on {LIVE_STEP_S:g} seconds a time; each answer holds only the API's last "
                    f"{len(window)} transactions, and the server keeps every row it saw."
                )
            )
            rows, pages, complete, cursor = 0, 0, True, None
            for _ in range(MAX_PAGES):
                arguments = {"since": since} | ({"cursor": cursor} if cursor else {})
                page = _structured(await client.call_tool(usage_name, arguments), usage_name)
                rows, pages = rows + len(page["recent_transactions"]), pages + 1
                complete = complete and page["history_complete"]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            out.write(
                _wrapped(
                    f"{usage_name} since {when(since)}: {plural(rows, 'transaction')} kept, on "
                    f"{plural(pages, 'page')} of at most 50; history complete: {yes_no(complete)}."
                )
            )
            spend = _structured(await client.call_tool(spend_name, {"since": since}), spend_name)
            out.write(_wrapped(f"{spend_name} since {when(since)}: {spend_text(spend)}."))


MAX_PAGES: Final = 10  # the demo's history fits in a few pages; a bound, so a paging bug cannot loop forever


def spend_text(spend: Mapping[str, Any]) -> str:
    """A `get_spend` answer's total as a sentence: transactions, spend by ad format, recharges, completeness."""
    total = spend["total"]
    by_type, by_format = total["by_type"], total["by_format"]
    count = sum(t["transactions"] for t in by_type.values())
    recharges = by_type["Purchase"]
    unparsed = f", {-by_format['unparsed']['credits']:,} on others" if by_format["unparsed"]["transactions"] else ""
    return (
        f"{plural(count, 'transaction')}; {-by_format['full']['credits']:,} credits spent on full ads and "
        f"{-by_format['static']['credits']:,} on static (net of refunds){unparsed}, {recharges['credits']:,} added by "
        f"{plural(recharges['transactions'], 'purchase')}; history complete: {yes_no(spend['history_complete'])}"
    )
