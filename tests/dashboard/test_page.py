"""The shipped page: rebuilt from ui/ it is byte for byte what the package ships, self-contained, within budget."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from dessert_mcp.dashboard import DASHBOARD_URI, dashboard_html
from tests.support.inspector import ROOT, TOOLS_BIN

UI = ROOT / "ui"
SHIPPED = ROOT / "server" / "dessert_mcp" / "dashboard" / "dashboard.html"
BUDGET_BYTES = 300 * 1024
UI_STAMP = UI / "node_modules" / ".installed"  # the same stamp `make dashboard` keeps


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        list(args), cwd=UI, env=env, capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL
    )


@pytest.fixture(scope="session")
def ui_installed(node22: Path) -> Path:
    """ui/node_modules from ui/package-lock.json (`npm ci`), unless already installed from this lockfile."""
    lock = UI / "package-lock.json"
    if not UI_STAMP.exists() or UI_STAMP.stat().st_mtime < lock.stat().st_mtime:
        installed = run("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
        assert installed.returncode == 0, installed.stdout + installed.stderr
        UI_STAMP.touch()
    return node22


def test_the_shipped_page_is_what_the_sources_build(ui_installed: Path, tmp_path: Path) -> None:
    built = run(str(ui_installed), "build.mjs", str(tmp_path / "dashboard.html"))
    assert built.returncode == 0, built.stdout + built.stderr
    fresh = (tmp_path / "dashboard.html").read_bytes()
    assert fresh == SHIPPED.read_bytes(), "the shipped dashboard is stale: run `make dashboard` and commit it"


def test_the_page_sources_typecheck(ui_installed: Path) -> None:
    checked = run(str(ui_installed), "node_modules/typescript/bin/tsc", "--noEmit", "-p", ".")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_page_logic_unit_tests_pass(ui_installed: Path) -> None:
    tested = run(str(ui_installed), "--test", "test/model.test.ts", "test/history.test.ts")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_page_fits_its_budget_and_loads_nothing() -> None:
    html = SHIPPED.read_text(encoding="utf-8")
    assert len(html.encode()) <= BUDGET_BYTES
    markup, script = html.split("<script>", 1)
    style = markup.split("<style>", 1)[1].split("</style>", 1)[0]
    assert "<script" not in script.split("</script>", 1)[1]  # one inline script, no src=
    assert "<link" not in markup
    assert not re.search(r"@import|url\(", style)  # no stylesheet, font or image fetched
    assert not re.search(r"(?:src|href)\s*=", markup)


def test_the_package_ships_the_page_under_its_ui_uri() -> None:
    assert DASHBOARD_URI == "ui://dessert/dashboard.html"
    assert dashboard_html() == SHIPPED.read_text(encoding="utf-8")
    assert dashboard_html().startswith("<!doctype html>")
