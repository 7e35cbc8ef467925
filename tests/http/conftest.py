"""Fixtures for the HTTP tests: the environment for `dessert-mcp` subprocesses, and settings wired to the sandbox."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dessert_mcp.config import Settings
from tests.support.faults import ThreadedFaultySandbox
from tests.support.servers import sandbox_env, sandbox_settings


@pytest.fixture
def server_env(sandbox: ThreadedFaultySandbox) -> Callable[..., dict[str, str]]:
    """`server_env(**extra)`: this environment, wired to the sandbox, without the caller's DESSERT_* variables."""
    return lambda **extra: sandbox_env(sandbox, **extra)


@pytest.fixture
def wired_settings(sandbox: ThreadedFaultySandbox) -> Settings:
    return sandbox_settings(sandbox)
