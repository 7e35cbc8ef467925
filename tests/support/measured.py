"""Environments for the tests' child processes that keep coverage.py measuring them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mcp.client.stdio import get_default_environment

from tests.support.processes import USER_DIRS


def coverage_env() -> dict[str, str]:
    """coverage.py's COVERAGE_* variables: with them a Python child is measured ([tool.coverage.run] patch in
    pyproject.toml); without them (coverage off), nothing."""
    return {k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")}


def user_dirs_env() -> dict[str, str]:
    """The user data and state directories of this test session (temporary: tests/conftest.py sets them), so that a
    child server keeps its ledger and tokens there and not in the user's own."""
    return {k: v for k, v in os.environ.items() if k in USER_DIRS}


def host_default_env() -> dict[str, str]:
    """The SDK's default environment for a stdio server (what hosts pass: HOME, and no XDG_* directories), measured,
    with the session's temporary user directories."""
    return get_default_environment() | user_dirs_env() | coverage_env()


# Where dessert-mcp keeps its databases under HOME when no XDG_* directory is set (Linux).
HOME_USER_DIRS = (Path(".local", "share", "dessert-mcp"), Path(".local", "state", "dessert-mcp"))


def mirror_home(real: Path, mirror: Path) -> None:
    """Make `mirror` a HOME that shows everything in `real` (as symlinks: config, caches, tools) except dessert-mcp's
    own directories, so a server given only HOME keeps its databases in the mirror."""
    _mirror(real, mirror, HOME_USER_DIRS)


def _mirror(real: Path, mirror: Path, keep_out: Sequence[Path]) -> None:
    mirror.mkdir(exist_ok=True)
    for entry in real.iterdir():
        inside = [p.relative_to(entry.name) for p in keep_out if p.parts[0] == entry.name]
        if not inside:
            (mirror / entry.name).symlink_to(entry)
        elif entry.is_dir() and not entry.is_symlink() and all(p.parts for p in inside):
            _mirror(entry, mirror / entry.name, inside)
