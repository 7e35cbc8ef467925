"""Environments for the tests' child processes that keep coverage.py measuring them."""

from __future__ import annotations

import os

from mcp.client.stdio import get_default_environment


def coverage_env() -> dict[str, str]:
    """coverage.py's COVERAGE_* variables: with them a Python child is measured ([tool.coverage.run] patch in
    pyproject.toml); without them (coverage off), nothing."""
    return {k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")}


def user_dirs_env() -> dict[str, str]:
    """The user data and state directories of this test session (temporary: tests/conftest.py sets them), so that a
    child server keeps its ledger and tokens there and not in the user's own."""
    return {k: v for k, v in os.environ.items() if k in ("XDG_DATA_HOME", "XDG_STATE_HOME")}


def host_default_env() -> dict[str, str]:
    """The SDK's default environment for a stdio server (what hosts pass: HOME, and no XDG_* directories), measured,
    with the session's temporary user directories."""
    return get_default_environment() | user_dirs_env() | coverage_env()
