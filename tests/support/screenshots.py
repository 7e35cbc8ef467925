"""`make screenshots`: dashboard.png (light) and dashboard-dark.png, as the MCP Inspector renders the app, written to
the directory given (a git-ignored one: the docs/ copies change only when someone copies these over them).

dessert-mcp --sandbox over streamable HTTP, the Inspector's web UI in headless Chromium, the usage tool's app opened
by deep link and maximized; each PNG is the app's own document, at twice the CSS pixel density.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.support.inspector import ROOT, app_frame, chromium, dessert_mcp_http, inspector_web, open_app, set_host_theme

SETTLE = "new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"


def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="dessert-screenshots-") as tmp,
        inspector_web(Path(tmp)) as inspector,
        dessert_mcp_http(Path(tmp), "--sandbox") as server,
        chromium() as browser,
    ):
        context = browser.new_context(viewport={"width": 1180, "height": 2400}, device_scale_factor=2)
        page = context.new_page()
        frame = open_app(page, inspector, server, "dessert_get_usage")
        page.get_by_label("Maximize").click()
        frame = app_frame(page)
        frame.wait_for_function("document.documentElement.clientWidth > 600")
        for theme, name in (("light", "dashboard.png"), ("dark", "dashboard-dark.png")):
            set_host_theme(page, frame, theme)
            frame.evaluate(SETTLE)
            frame.locator("main").screenshot(path=out / name, animations="disabled")
            print(f"wrote {out / name}")
        context.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.support.screenshots OUT_DIR")
    sys.exit(main(ROOT / sys.argv[1]))
