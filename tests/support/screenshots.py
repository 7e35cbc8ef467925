"""`make screenshots`: docs/dashboard.png (light) and docs/dashboard-dark.png, as the MCP Inspector renders the app.

dessert-mcp --sandbox over streamable HTTP, the Inspector's web UI in headless Chromium, the usage tool's app opened
by deep link and maximized; each PNG is the app's own document, at twice the CSS pixel density.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.support.inspector import ROOT, app_frame, chromium, dessert_mcp_http, inspector_web, open_app, set_host_theme

DOCS = ROOT / "docs"
SETTLE = "new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"


def main() -> int:
    DOCS.mkdir(exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="dessert-screenshots-") as tmp,
        inspector_web(Path(tmp)) as inspector,
        dessert_mcp_http(Path(tmp), "--sandbox") as server,
        chromium() as browser,
    ):
        context = browser.new_context(viewport={"width": 1180, "height": 2400}, device_scale_factor=2)
        page = context.new_page()
        frame = open_app(page, inspector, server, "dessert.get_usage")
        page.get_by_label("Maximize").click()
        frame = app_frame(page)
        frame.wait_for_function("document.documentElement.clientWidth > 600")
        for theme, name in (("light", "dashboard.png"), ("dark", "dashboard-dark.png")):
            set_host_theme(page, frame, theme)
            frame.evaluate(SETTLE)
            frame.locator("main").screenshot(path=DOCS / name, animations="disabled")
            print(f"wrote {DOCS / name}")
        context.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
