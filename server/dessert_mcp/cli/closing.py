"""The operator commands' one way to use a database: run an action on it, close it, say a failure in one line."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import anyio

T = TypeVar("T")
R = TypeVar("R", bound="Closable")


class Closable(Protocol):
    async def aclose(self) -> None: ...


def run_and_close(resource: R, action: Callable[[R], Awaitable[T]], errors: tuple[type[Exception], ...]) -> T:
    """`await action(resource)`, then close `resource`; one of `errors` ends the command with its message."""

    async def run() -> T:
        try:
            return await action(resource)
        finally:
            await resource.aclose()

    try:
        return anyio.run(run)
    except errors as exc:
        sys.exit(f"dessert-mcp: error: {exc}")
