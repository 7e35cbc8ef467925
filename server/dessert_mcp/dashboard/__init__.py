"""The dashboard: an MCP App page (one self-contained HTML file) that shows the balance and usage tools' results.

`dashboard.html` is built from `ui/` (`make dashboard`) and committed, so the package ships it and serving it needs
no Node. Hosts that render MCP Apps show it for both tools; everything else ignores it.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Final

__all__ = ["DASHBOARD_URI", "dashboard_html"]

DASHBOARD_URI: Final = "ui://dessert/dashboard.html"


@cache
def dashboard_html() -> str:
    """The page, read once from the installed package."""
    return files(__name__).joinpath("dashboard.html").read_text(encoding="utf-8")
