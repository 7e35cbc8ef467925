"""Fixtures for the auth wing: a real PostgreSQL and a SQLite file (tests/support/postgres.py), the sandbox that
knows the canary key, and dessert-mcp with auth served by a real uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx2
import pytest

from dessert_mcp.auth._crypto import generate_encryption_key
from dessert_mcp.config import Settings
from dessert_mcp.http import HTTPOptions
from dessert_mcp.http.app import build_app
from dessert_mcp.sandbox import SandboxAccount
from dessert_mcp.service import DessertService
from tests.support.api import CANARY_KEY
from tests.support.auth import FlowClient, Running, serve_auth
from tests.support.faults import ThreadedAccountsSandbox
from tests.support.postgres import database_url, postgres
from tests.support.servers import serve_app

__all__ = ["database_url", "postgres"]  # fixtures the auth tests share

# A key the sandbox refuses: "someone else's" key, or a typo.
OTHER_KEY = "dsk_live_OTHER_00112233445566778899aa"
# A second account the sandbox knows, with its own balance and history (the canary's balance is 205).
SECOND_KEY = "dsk_live_SECOND_a1b2c3d4e5f60718293a"
SECOND_BALANCE = 1205


def second_account() -> SandboxAccount:
    account = SandboxAccount()
    last = account.ledger[-1]
    account.ledger.append(
        {
            "type": "Purchase",
            "credits_delta": 1000,
            "balance_after": last["balance_after"] + 1000,
            "usd_amount": 100.0,
            "description": "Credit purchase (second account)",
            "at": "2026-05-20T08:00:00.000Z",
        }
    )
    assert account.balance()["credits_balance"] == SECOND_BALANCE
    return account


@contextmanager
def two_accounts_served() -> Iterator[tuple[DessertService, str]]:
    """dessert-mcp with --auth dessert-key, over the sandbox's canary account and SECOND_KEY's: its service and its
    MCP endpoint URL."""
    with ThreadedAccountsSandbox({CANARY_KEY: SandboxAccount(), SECOND_KEY: second_account()}) as sandbox:
        settings = replace(Settings.from_env({}, log_level="WARNING", tool_names="dotted"), base_url=sandbox.url)
        service = DessertService(settings, per_account=True)
        with serve_app(build_app(settings, HTTPOptions(auth="dessert-key"), service=service)) as url:
            yield service, url + "/mcp"


@pytest.fixture(scope="session")
def encryption_key() -> str:
    return generate_encryption_key()


@pytest.fixture(scope="module")
def canary_api() -> Iterator[ThreadedAccountsSandbox]:
    """The Dessert sandbox with two accounts: the canary key's (the default, balance 205) and SECOND_KEY's."""
    with ThreadedAccountsSandbox({CANARY_KEY: SandboxAccount(), SECOND_KEY: second_account()}) as sb:
        yield sb


@pytest.fixture(scope="module")
def oauth_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SQLite file behind `oauth_server`."""
    return tmp_path_factory.mktemp("oauth") / "auth.db"


@pytest.fixture(scope="module")
def oauth_server(canary_api: ThreadedAccountsSandbox, oauth_db: Path, encryption_key: str) -> Iterator[Running]:
    """One `--auth oauth` server for a test module, on `oauth_db`, with `canary_api` as Dessert."""
    with serve_auth(
        "oauth", dessert_url=canary_api.url, database_url=f"sqlite:///{oauth_db}", encryption_key=encryption_key
    ) as running:
        yield running


@pytest.fixture
async def oauth_flow(oauth_server: Running) -> AsyncIterator[FlowClient]:
    async with httpx2.AsyncClient(timeout=60) as http:
        yield FlowClient(http, oauth_server.url)
