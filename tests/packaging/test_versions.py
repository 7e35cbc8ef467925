"""One version, in `dessert_mcp.__version__`: the command reports it, and everything that repeats it agrees."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib

from dessert_mcp import __version__
from tests.packaging.conftest import ROOT

CHANGELOG = (ROOT / "CHANGELOG.md").read_text()


def test_dessert_mcp_version_prints_the_package_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dessert_mcp", "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"dessert-mcp {__version__}\n"


def test_the_build_reads_the_version_from_the_package_and_nothing_else_sets_it() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["dynamic"] == ["version"]
    assert "version" not in pyproject["project"]
    assert pyproject["tool"]["hatch"]["version"]["path"] == "server/dessert_mcp/__init__.py"


def test_the_manifest_and_the_registry_entry_repeat_the_same_version() -> None:
    manifest = json.loads((ROOT / "manifest.json").read_text())
    server = json.loads((ROOT / "server.json").read_text())
    versions = {manifest["version"], server["version"], *(p.get("version") for p in server["packages"])}
    assert versions == {__version__}, "bump manifest.json and server.json with __version__"


def test_the_changelog_keeps_an_unreleased_section_and_one_for_this_version() -> None:
    headings = re.findall(r"(?m)^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", CHANGELOG)
    assert headings[0] == ("Unreleased", "")
    released = dict(headings[1:])
    assert __version__ in released, f"CHANGELOG.md has no section for {__version__}"
    assert all(released.values()), "every released section has a date"
    for name, _ in headings:
        assert re.search(rf"(?m)^\[{re.escape(name)}\]: https://", CHANGELOG), f"no link for [{name}]"
