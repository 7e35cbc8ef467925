"""`make dist`: the wheel and sdist hold what the server needs at run time, whatever its file type, and nothing else."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from dessert_mcp import __version__
from tests.packaging.conftest import ROOT, Dist, build

PACKAGE = "server/dessert_mcp"
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
DIST_INFO = f"dessert_mcp-{__version__}.dist-info"
# What the wheel carries besides the package: the metadata every wheel has, and the licence file.
WHEEL_METADATA = {f"{DIST_INFO}/{name}" for name in ("METADATA", "WHEEL", "RECORD", "entry_points.txt")} | {
    f"{DIST_INFO}/licenses/LICENSE"
}
# What builds the wheel from the sdist; hatchling keeps .gitignore so the wheel leaves out the same files.
SDIST_EXTRAS = {"pyproject.toml", "README.md", "LICENSE", ".gitignore", "PKG-INFO"}
NEVER = {"tests", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv", ".tools", "node_modules"}


def package_files(root: Path = ROOT) -> set[str]:
    """Every file under server/dessert_mcp/ that git does not ignore (tracked or new), relative to it."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", PACKAGE],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return {Path(name).relative_to(PACKAGE).as_posix() for name in listed if (root / name).is_file()}


def sdist_names(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as archive:
        return {m.name for m in archive.getmembers() if m.isfile()}


def test_the_wheel_holds_every_file_of_the_package_and_its_metadata_and_nothing_else(dist: Dist) -> None:
    files = package_files()
    assert any(not name.endswith(".py") for name in files), "py.typed, at least, is not Python"
    assert dist.wheel_names() == {f"dessert_mcp/{name}" for name in files} | WHEEL_METADATA


def test_the_sdist_holds_the_package_and_what_builds_it_and_nothing_else(dist: Dist) -> None:
    prefix = f"dessert_mcp-{__version__}"
    expected = {f"{prefix}/{PACKAGE}/{name}" for name in package_files()} | {f"{prefix}/{n}" for n in SDIST_EXTRAS}
    assert sdist_names(dist.sdist) == expected


def test_neither_archive_holds_tests_caches_or_compiled_files(dist: Dist) -> None:
    for name in dist.wheel_names() | sdist_names(dist.sdist):
        parts = Path(name).parts
        assert not NEVER.intersection(parts), name
        assert not name.endswith((".pyc", ".pyo")), name
        assert not Path(name).name.startswith(("test_", "conftest")), name


def test_a_data_file_added_to_the_package_is_shipped_and_a_cache_beside_it_is_not(tmp_path: Path) -> None:
    """What the dashboard page (and any other non-Python file) relies on, proven on a copy of the project."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", ".gitignore", "Makefile"):
        shutil.copy2(ROOT / name, copy / name)
    shutil.copytree(ROOT / PACKAGE, copy / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / PACKAGE / "probe").mkdir()
    (copy / PACKAGE / "probe" / "probe.html").write_text("<!doctype html><title>probe</title>\n")
    (copy / PACKAGE / "__pycache__").mkdir()
    (copy / PACKAGE / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    (copy / PACKAGE / "scratch.pyc").write_bytes(b"\0")

    names = build(tmp_path / "dist", cwd=copy).wheel_names()
    assert "dessert_mcp/probe/probe.html" in names
    assert "dessert_mcp/dashboard/dashboard.html" in names
    assert "dessert_mcp/py.typed" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_the_wheel_metadata_names_the_version_the_dependencies_and_the_command(dist: Dist) -> None:
    metadata = dist.metadata()
    project = PYPROJECT["project"]
    assert metadata["Name"] == project["name"]
    assert metadata["Version"] == __version__
    assert metadata["Requires-Python"] == project["requires-python"]
    runtime = [Requirement(r) for r in metadata.get_all("Requires-Dist", []) if "extra ==" not in r]
    assert sorted(map(str, runtime)) == sorted(str(Requirement(r)) for r in project["dependencies"])
    assert "[console_scripts]\ndessert-mcp = dessert_mcp.cli:main" in dist.read("entry_points.txt")
