"""Dashboard page bench: its size (budget 300 KB) and its first render time in headless Chromium (median of runs).

Run with `.venv/bin/python bench/page.py [--runs N]`. The host is a minimal one written here (it answers the
page's `ui/initialize`, sends a real get_balance result and answers the page's get_usage call with a real one,
both from dessert-mcp against the sandbox, in memory), so the time is the page's own: from the iframe being
created to the balance and the transactions table being in its DOM and painted. Needs Debian's chromium
(`make browser`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
from typing import Any

import _repo  # noqa: F401  (the repository on the import path, for tests.support)
import anyio
from mcp import Client
from playwright.sync_api import sync_playwright
from tests.support.inspector import CHROMIUM, CHROMIUM_ARGS
from tests.support.processes import private_user_dirs

from dessert_mcp.config import Settings
from dessert_mcp.dashboard import dashboard_html
from dessert_mcp.listing import TOOL_NAMES
from dessert_mcp.sandbox import ThreadedSandbox
from dessert_mcp.tools import build_server

BUDGET_BYTES = 300 * 1024

# The host side of the MCP Apps handshake, as raw JSON-RPC over postMessage; resolves window.rendered with the
# milliseconds from creating the iframe to the dashboard showing both results (then one frame, for the paint).
HOST = """<!doctype html><meta charset="utf-8"><body style="margin:0"><script>
const RESULTS = %(results)s;
const frame = document.createElement("iframe");
frame.style.cssText = "border:0;width:760px;height:2000px";
window.rendered = new Promise((done) => {
  const start = performance.now();
  const send = (message) => frame.contentWindow.postMessage({ jsonrpc: "2.0", ...message }, "*");
  window.addEventListener("message", (event) => {
    if (event.source !== frame.contentWindow) return;
    const m = event.data;
    if (m.method === "ui/initialize") {
      const hostContext = { theme: "light", locale: "en-US", timeZone: "UTC" };
      send({ id: m.id, result: { protocolVersion: m.params.protocolVersion, hostCapabilities: { serverTools: {} },
        hostInfo: { name: "bench-host", version: "1" }, hostContext } });
    } else if (m.method === "ui/notifications/initialized") {
      send({ method: "ui/notifications/tool-input", params: { arguments: {} } });
      send({ method: "ui/notifications/tool-result", params: RESULTS.dessert_get_balance });
    } else if (m.method === "tools/call") {
      send({ id: m.id, result: RESULTS[m.params.name] });
    } else if (m.id !== undefined && m.method) {
      send({ id: m.id, result: {} });
    }
  });
  frame.addEventListener("load", () => {
    const doc = frame.contentDocument;
    const check = () => {
      if (doc.querySelector('[data-testid="balance-credits"]') && doc.querySelector('[data-testid="tx-row"]')) {
        observer.disconnect();
        requestAnimationFrame(() => done(performance.now() - start));
      }
    };
    const observer = new MutationObserver(check);
    observer.observe(doc, { childList: true, subtree: true });
    check();
  });
  frame.srcdoc = %(page)s;
  document.body.append(frame);
});
</script>"""


async def tool_results() -> dict[str, Any]:
    """What dessert-mcp returns for both tools against the sandbox, as the host would pass them on."""
    with ThreadedSandbox() as sandbox:
        settings = Settings.from_env({}, base_url=sandbox.url).with_key(sandbox.key)
        async with Client(build_server(settings)) as client:
            results = {}
            for name, portable in TOOL_NAMES.items():
                result = await client.call_tool(name, {})
                results[portable] = result.model_dump(mode="json", by_alias=True, exclude_none=True)
            return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    page_html = dashboard_html()
    size = len(page_html.encode())
    zipped = len(gzip.compress(page_html.encode()))
    print(f"page size: {size / 1024:.1f} KB ({size} bytes; gzip {zipped / 1024:.1f} KB)")
    print(f"  budget {BUDGET_BYTES / 1024:.0f} KB: {'ok' if size <= BUDGET_BYTES else 'OVER'}", flush=True)

    def script_json(value: object) -> str:  # JSON that cannot end the host's <script> early
        return json.dumps(value).replace("</", "<\\/")

    host = HOST % {"results": script_json(anyio.run(tool_results)), "page": script_json(page_html)}
    times: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for _ in range(args.runs + 1):  # the first warms the browser up and is not counted
                context = browser.new_context(viewport={"width": 800, "height": 1000})
                page = context.new_page()
                page.set_content(host)
                times.append(float(page.evaluate("() => window.rendered")))
                context.close()
        finally:
            browser.close()
    counted = times[1:]
    print(
        f"first render (iframe created -> balance and table painted), {len(counted)} runs: "
        f"median {statistics.median(counted):.0f} ms, min {min(counted):.0f} ms, max {max(counted):.0f} ms"
    )
    return 0 if size <= BUDGET_BYTES else 1


if __name__ == "__main__":
    with private_user_dirs():  # the ledger (on by default) and the auth wing write there
        status = main()
    sys.exit(status)
