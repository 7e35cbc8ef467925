"""The dashboard in a host we did not write: the MCP Inspector's web UI, in headless Chromium, against dessert-mcp.

Each test loads the Inspector's deep link (connect, open the tool's app, call the tool), waits for the Inspector to
report the app ready and for the page to show both tools' data (the page fetches the other tool itself), then reads
the rendered app frame. Screenshots land in .artifacts/dashboard/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Frame, Page

from dessert_mcp.listing import tool_names_for
from tests.dashboard.conftest import INJECTION
from tests.support.faults import ThreadedFaultySandbox
from tests.support.inspector import Inspector, open_app, set_host_theme

NEWEST = "API ad generation (count=3, format=full)"
BALANCE, USAGE, _SPEND = tool_names_for("auto")  # what the default lists; the Inspector calls only listed names
MINUS = "\N{MINUS SIGN}"  # how the page writes negative credits


def text(frame: Frame, testid: str) -> str:
    return (frame.locator(f'[data-testid="{testid}"]').first.text_content() or "").strip()


def first_row(frame: Frame) -> str:
    return " ".join((frame.locator('[data-testid="tx-row"]').first.text_content() or "").split())


def luminance(rgb: str) -> float:
    r, g, b = (int(part) for part in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


@pytest.mark.parametrize("tool", [BALANCE, USAGE])
def test_either_tool_opens_the_dashboard_with_the_sandbox_numbers(
    page: Page, inspector: Inspector, sandbox_server: str, artifact: Path, tool: str
) -> None:
    frame = open_app(page, inspector, sandbox_server, tool)
    page.screenshot(path=artifact, full_page=True)

    assert text(frame, "balance-credits") == "205"
    assert "$20.50" in text(frame, "balance-usd")
    assert (text(frame, "static-ads"), text(frame, "full-ads")) == ("41", "13")
    assert text(frame, "auto-recharge") == "On"
    assert NEWEST in first_row(frame)
    assert f"{MINUS}45" in first_row(frame)
    assert frame.locator('[data-testid="tx-row"]').count() == 13
    # Charts are inline SVG images with a text equivalent.
    assert frame.locator('[data-testid="history"] svg[role="img"] title').first.text_content() == "Balance over time"
    assert "205 credits" in (frame.locator('[data-testid="history"] figcaption').text_content() or "")
    assert page.app_requests == []  # type: ignore[attr-defined]  # no network: everything is inline


def test_the_dashboard_follows_the_host_theme(
    page: Page, inspector: Inspector, sandbox_server: str, artifact: Path
) -> None:
    frame = open_app(page, inspector, sandbox_server, BALANCE)
    set_host_theme(page, frame, "light")
    light = frame.evaluate("getComputedStyle(document.body).backgroundColor")
    assert luminance(light) > 0.8

    set_host_theme(page, frame, "dark")
    page.screenshot(path=artifact, full_page=True)
    dark = frame.evaluate("getComputedStyle(document.body).backgroundColor")
    card_text = frame.evaluate("getComputedStyle(document.querySelector('.kpi-value')).color")
    assert luminance(dark) < 0.2
    assert luminance(card_text) > 0.6
    # The host's own palette is applied, not only the page's fallback.
    host_bg = frame.evaluate("document.documentElement.style.getPropertyValue('--color-background-primary')")
    assert host_bg.strip()

    set_host_theme(page, frame, "light")
    assert luminance(frame.evaluate("getComputedStyle(document.body).backgroundColor")) > 0.8


def test_an_injected_description_renders_as_inert_text(
    page: Page, inspector: Inspector, ledger_server: tuple[ThreadedFaultySandbox, str], artifact: Path
) -> None:
    sandbox, url = ledger_server
    sandbox.sandbox.account.ledger[-1]["description"] = INJECTION  # the newest transaction

    frame = open_app(page, inspector, url, USAGE)
    cell = frame.locator('[data-testid="tx-description"]').first
    cell.scroll_into_view_if_needed()
    page.screenshot(path=artifact, full_page=True)

    assert cell.text_content() == INJECTION
    assert cell.locator("*").count() == 0  # text only: no element was parsed out of it
    assert frame.locator("img").count() == 0
    assert frame.evaluate("document.scripts.length") == 1  # the page's own
    assert frame.evaluate("document.documentElement.dataset.pwned") is None
    assert page.evaluate("document.documentElement.dataset.pwned") is None


def test_refresh_calls_both_tools_again_from_the_keyboard(
    page: Page, inspector: Inspector, ledger_server: tuple[ThreadedFaultySandbox, str], artifact: Path
) -> None:
    sandbox, url = ledger_server
    frame = open_app(page, inspector, url, BALANCE)
    before = sandbox.stats()["requests"]
    assert before == {"/v1/balance": 1, "/v1/usage": 1}  # the host's call, and the page's own for the other tool

    ledger = sandbox.sandbox.account.ledger
    ledger.append(
        {
            "type": "Deduction",
            "credits_delta": -15,
            "balance_after": ledger[-1]["balance_after"] - 15,
            "usd_amount": None,
            "description": "API ad generation (count=1, format=full)",
            "at": "2026-05-20T09:00:00.000Z",
        }
    )
    frame.locator('[data-testid="refresh"]').focus()
    page.keyboard.press("Enter")
    frame.wait_for_selector('[data-testid="balance-credits"]:text-is("190")')
    frame.wait_for_selector('main[data-state="ready"]')
    page.screenshot(path=artifact, full_page=True)

    assert sandbox.stats()["requests"] == {"/v1/balance": 2, "/v1/usage": 2}
    assert (text(frame, "static-ads"), text(frame, "full-ads")) == ("38", "12")
    assert "count=1, format=full" in first_row(frame)
    assert frame.locator('[data-testid="tx-row"]').count() == 14


def test_the_transactions_filter_by_type_with_the_arrow_keys(
    page: Page, inspector: Inspector, sandbox_server: str
) -> None:
    frame = open_app(page, inspector, sandbox_server, USAGE)
    frame.locator('input[name="tx-filter"][value="all"]').focus()
    page.keyboard.press("ArrowRight")
    assert frame.locator('input[name="tx-filter"]:checked').get_attribute("value") == "Deduction"
    rows = frame.locator('[data-testid="tx-row"]')
    assert rows.count() == 9
    assert set(rows.evaluate_all("rows => rows.map(r => r.dataset.type)")) == {"Deduction"}

    page.keyboard.press("ArrowRight")  # Purchase
    assert rows.count() == 2
    assert set(rows.evaluate_all("rows => rows.map(r => r.dataset.type)")) == {"Purchase"}


def test_the_dashboard_reads_at_320_pixels_without_sideways_scrolling(
    page: Page, inspector: Inspector, sandbox_server: str, artifact: Path
) -> None:
    frame = open_app(page, inspector, sandbox_server, BALANCE)
    page.locator("iframe").first.evaluate("el => { el.style.minWidth = '0'; el.style.width = '320px'; }")
    # Awaited frame by frame in one evaluate: wait_for_function polls by evaluating a string, which the page's CSP
    # (no 'unsafe-eval') refuses whenever the first check comes before the resize.
    narrowed = """() => new Promise(done => {
        let frames = 0;
        const check = () => document.documentElement.clientWidth <= 320 ? done(true)
            : ++frames > 600 ? done(false) : requestAnimationFrame(check);
        check();
    })"""
    assert frame.evaluate(narrowed), "the app frame never narrowed to 320 px"
    frame.evaluate("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    page.locator("iframe").first.screenshot(path=artifact)

    assert frame.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    chart = frame.locator('[data-testid="history"] svg[role="img"]')
    assert int(chart.get_attribute("width") or 0) <= 320  # redrawn at the narrow width, text stays full size
    assert text(frame, "balance-credits") == "205"
