"""The dashboard over kept history: a live sandbox account read four times by dessert-mcp (two of them across a
stretch no read saw), then the 7-day range in the Inspector's web UI: every kept row, the gap left open, the CSV.

The server runs in this process, so that it and the account share one clock the test moves on: the ledger dates each
answer by the server's clock, and rows must never appear in a stretch an earlier answer already vouched for."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Frame, Page

from dessert_mcp.http import HTTPOptions
from dessert_mcp.http.app import build_app
from dessert_mcp.ledger import InMemoryLedger
from dessert_mcp.listing import tool_names_for
from dessert_mcp.sandbox.activity import LiveAccount
from dessert_mcp.service import DessertService
from tests.support.faults import ThreadedFaultySandbox
from tests.support.inspector import UI_TIMEOUT_MS, Inspector, open_app
from tests.support.servers import sandbox_settings, serve_app

_, USAGE, _ = tool_names_for("auto")
WINDOW = 50  # rows the sandbox's usage feed serves


class Clock:
    """The account's and the server's clock, a day behind the real one, moved on by the test: the page asks for
    ranges ending at the browser's real now, so every row the account makes must lie before it."""

    def __init__(self) -> None:
        self.now = time.time() - 86_400

    def __call__(self) -> float:
        return self.now

    def utc(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


@pytest.fixture
def live() -> Iterator[tuple[ThreadedFaultySandbox, Clock, str]]:
    clock = Clock()
    # One transaction a minute: the 300 rows of history span about five hours, all within the last 7 days.
    account = LiveAccount(rate=1 / 60, seed=7, clock=clock)
    with ThreadedFaultySandbox(account=lambda: account) as sandbox:
        # No poller: the test decides which windows the ledger sees.
        settings = replace(sandbox_settings(sandbox, ledger_poll=False), tool_names="auto")
        service = DessertService(settings, ledger=InMemoryLedger(), clock=clock.utc)
        with serve_app(build_app(settings, HTTPOptions(), service=service)) as url:
            yield sandbox, clock, f"{url}/mcp"


def newest_at(sandbox: ThreadedFaultySandbox) -> str:
    return str(sandbox.account.ledger[-1]["at"])


def refresh_and_wait(frame: Frame, sandbox: ThreadedFaultySandbox) -> None:
    """Refresh, then wait for the table to show the account's newest row (the read the server just made)."""
    frame.locator('[data-testid="refresh"]').click()
    frame.wait_for_selector(f'[data-testid="tx-row"] time[datetime="{newest_at(sandbox)}"]', timeout=UI_TIMEOUT_MS)
    frame.wait_for_selector('main[data-state="ready"]', timeout=UI_TIMEOUT_MS)


def test_the_7_day_range_shows_every_kept_row_leaves_the_gap_open_and_downloads_as_csv(
    page: Page, inspector: Inspector, live: tuple[ThreadedFaultySandbox, Clock, str], artifact: Path
) -> None:
    sandbox, clock, url = live
    frame = open_app(page, inspector, url, USAGE)
    ledger = sandbox.account.ledger
    seen = set(range(len(ledger) - WINDOW, len(ledger)))  # positions of the rows each read served
    for minutes in (30, 200, 30):  # 30 rows on: windows overlap; 200 on: nothing shared, a gap; then overlap again
        clock.now += minutes * 60
        sandbox.account.catch_up()
        refresh_and_wait(frame, sandbox)
        seen |= set(range(len(ledger) - WINDOW, len(ledger)))
    kept = sorted(seen)
    assert len(kept) > 2 * WINDOW

    frame.locator('[data-testid="range-7"]').click()
    rows = frame.locator('[data-testid="tx-row"]')
    frame.wait_for_selector(f'[data-testid="tx-row"] time[datetime="{ledger[kept[0]]["at"]}"]', timeout=UI_TIMEOUT_MS)
    frame.wait_for_selector('main[data-state="ready"]', timeout=UI_TIMEOUT_MS)
    page.screenshot(path=artifact, full_page=True)

    # History beyond the API's window: every row the ledger kept, read page by page.
    assert rows.count() == len(kept)
    # The stretch no read saw is a gap: shaded, the line not drawn across it, and said in words.
    chart = frame.locator('[data-testid="history"] svg[role="img"]')
    gaps = chart.locator('rect.gap[data-kind="gap"]')
    assert gaps.count() >= 1
    assert chart.locator("path.line").count() == 2  # one run of known balances on either side of the gap
    caption = frame.locator('[data-testid="history-caption"]').text_content() or ""
    assert "not drawn where the ledger does not know the balance" in caption
    assert "a gap" in caption
    assert frame.locator('[data-testid="spend"] svg rect.gap').count() >= 1  # the gap's days: totals a lower bound
    assert "The ledger has gaps on" in (frame.locator('[data-testid="spend-caption"]').text_content() or "")
    assert "Older transactions" not in (frame.locator('[data-testid="transactions"]').text_content() or "")

    # The CSV of the range: the rows shown, oldest first, through the host's download (which asks first).
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    with page.expect_download(timeout=UI_TIMEOUT_MS) as download:
        frame.locator('[data-testid="download-csv"]').click()
    assert "dessert-usage-" in asked[0]
    saved = Path(download.value.path())
    assert download.value.suggested_filename.startswith("dessert-usage-")
    assert download.value.suggested_filename.endswith(".csv")
    table = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert [row["at"] for row in table] == [ledger[i]["at"] for i in kept]
    assert [int(row["balance_after"]) for row in table] == [ledger[i]["balance_after"] for i in kept]

    # Declined (or a host without downloads): the same CSV, shown to copy.
    page.once("dialog", lambda dialog: dialog.dismiss())
    frame.locator('[data-testid="download-csv"]').click()
    shown = frame.locator('[data-testid="csv-text"]')
    shown.wait_for(timeout=UI_TIMEOUT_MS)
    assert shown.input_value() == saved.read_text(encoding="utf-8")
