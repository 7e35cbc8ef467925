"""Environments for the tests' child processes that keep coverage.py measuring them."""

from __future__ import annotations

import os

from mcp.client.stdio import get_default_environment


def coverage_env() -> dict[str, str]:
    """coverage.py's COVERAGE_* variables: with them a Python child is measured ([tool.coverage.run] patch in
    pyproject.toml); without them (coverage off), nothing."""
    return {k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")}


def host_default_env() -> dict[str, str]:
    """The SDK's default environment for a stdio server (what hosts pass), measured."""
    return get_default_environment() | coverage_env()
