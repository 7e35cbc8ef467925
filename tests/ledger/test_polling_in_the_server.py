"""The poller as the server runs it: started by the lifespan with the ledger on, reading the accounts in use."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import pytest
from mcp import Client

from dessert_mcp.auth import generate_encryption_key
from dessert_mcp.auth.config import OAuthConfig
from dessert_mcp.auth.wiring import OAuthWiring
from dessert_mcp.config import Secret, Settings
from dessert_mcp.http import HTTPOptions
from dessert_mcp.http.app import build_app
from dessert_mcp.ledger import InMemoryLedger, MergeOutcome
from dessert_mcp.models import Transaction
from dessert_mcp.sandbox import SandboxAccount
from dessert_mcp.sandbox.activity import LiveAccount
from dessert_mcp.service import DessertService
from dessert_mcp.tools import build_server
from tests.auth.conftest import SECOND_KEY, second_account
from tests.support.api import CANARY_KEY
from tests.support.auth import call_tool, link_directly
from tests.support.faults import ThreadedAccountsSandbox, ThreadedFaultySandbox
from tests.support.servers import sandbox_settings, serve_app


class CountingLedger(InMemoryLedger):
    """An in-memory ledger that lets a test await its n-th usage answer."""

    def __init__(self) -> None:
        super().__init__()
        self.usage_answers = 0
        self.changed = anyio.Event()

    async def record_usage(
        self, account: str, transactions: Sequence[Transaction], observed_at: datetime
    ) -> MergeOutcome:
        outcome = await super().record_usage(account, transactions, observed_at)
        self.usage_answers += 1
        self.changed.set()
        self.changed = anyio.Event()
        return outcome

    async def until(self, answers: int) -> None:
        with anyio.fail_after(60):  # a bound that holds on a busy machine; the wait is on the event
            while self.usage_answers < answers:
                await self.changed.wait()


@pytest.mark.poller
async def test_the_server_polls_a_live_account_from_its_lifespan_and_the_ledger_keeps_every_row() -> None:
    # The real clock, short bounds: a live account doing 12 transactions a second is read every 0.5 s, so a stall of
    # up to 4 s on a busy machine still leaves the window overlapping.
    with ThreadedFaultySandbox(account=lambda: LiveAccount(rate=12.0, seed=5)) as sandbox:
        settings = sandbox_settings(sandbox, ledger_poll_min_s=0.5, ledger_poll_max_s=0.5)
        ledger = CountingLedger()
        service = DessertService(settings, ledger=ledger)
        async with Client(build_server(settings, service=service)):
            assert service.poller is not None
            await ledger.until(12)  # about 70 transactions after the first window read
            account = await service.poll_targets(ledger)
            (status,) = (await ledger.status()).accounts
        assert service.poller is None  # stopped with the lifespan
    assert len(account) == 1
    assert status.oldest_at is not None
    page = await ledger.history(status.account, since=status.oldest_at + timedelta(milliseconds=1), limit=1)
    assert page.history_complete
    assert page.seams == ()
    assert status.rows > 2 * 50


@pytest.mark.poller
@pytest.mark.parametrize("env", [{"DESSERT_LEDGER": "off"}, {"DESSERT_LEDGER_POLL": "off"}], ids=["ledger", "poll"])
async def test_no_poller_runs_when_the_ledger_or_the_polling_is_off(
    sandbox: ThreadedFaultySandbox, env: dict[str, str]
) -> None:
    settings = replace(Settings.from_env(env), base_url=sandbox.url).with_key(sandbox.key)
    service = DessertService(settings)
    async with Client(build_server(settings, service=service)) as client:
        assert service.poller is None
        await client.call_tool("dessert.get_balance", {})
    assert sandbox.stats()["requests"] == {"/v1/balance": 1}


async def test_a_tool_calls_usage_answer_schedules_the_pollers_next_read(sandbox: ThreadedFaultySandbox) -> None:
    settings = sandbox_settings(sandbox)
    service = DessertService(settings)
    async with Client(build_server(settings, service=service)) as client:
        poller = service.poller
        assert poller is not None  # started, though this test's poller reads nothing (tests/conftest.py)
        await client.call_tool("dessert.get_usage", {})
        (watch,) = poller.watches.values()
        # The sandbox's account is idle (its newest row is months old): the next read is max_s away.
        assert watch.interval == settings.ledger_poll_max_s
        assert watch.due > time.time() + settings.ledger_poll_max_s - 60


async def test_with_auth_only_accounts_used_recently_and_still_linked_are_polled() -> None:
    with ThreadedAccountsSandbox({CANARY_KEY: SandboxAccount(), SECOND_KEY: second_account()}) as sandbox:
        settings = replace(Settings.from_env({}, log_level="WARNING", tool_names="dotted"), base_url=sandbox.url)
        service = DessertService(settings, per_account=True)
        app = build_app(settings, HTTPOptions(auth="dessert-key"), service=service)
        ledger = InMemoryLedger()
        with serve_app(app) as url:
            assert await service.poll_targets(ledger) == []  # nobody has called yet
            assert not (await call_tool(url + "/mcp", CANARY_KEY)).is_error
            (target,) = await service.poll_targets(ledger)
            assert target.client.account == hashlib.sha256(CANARY_KEY.encode()).hexdigest()
            named = await target.account()
            assert named.startswith("acct:")
            assert CANARY_KEY not in named

            async def linked(subjects: Collection[str]) -> set[str] | None:
                return set()  # the token database says nobody is linked any more

            service.linked_subjects = linked
            assert await service.poll_targets(ledger) == []
            service.linked_subjects = None
            assert await service.poll_targets(ledger) == []  # and it stays forgotten
            assert not (await call_tool(url + "/mcp", SECOND_KEY)).is_error
            assert len(await service.poll_targets(ledger)) == 1
            service.settings = replace(service.settings, ledger_poll_recent_s=1e-9)  # nothing used that recently
            assert await service.poll_targets(ledger) == []


async def test_an_account_revoked_through_this_process_is_forgotten_by_the_poller_at_once(tmp_path: Path) -> None:
    config = OAuthConfig(
        public_url="http://127.0.0.1:1",
        encryption_key=Secret(generate_encryption_key()),
        database_url=f"sqlite:///{tmp_path / 'auth.db'}",
    )
    wiring = OAuthWiring(config)
    await wiring.store.migrate()
    try:
        stopped: list[str] = []
        wiring.on_account_revoked(stopped.append)
        await wiring.store.revoke_account("account-1")
        await wiring.store.revoke_grant("grant-1", "a grant alone names no account")
        assert stopped == ["acct:account-1"]
        assert await wiring.linked_subjects(["acct:account-1"]) == set()
    finally:
        await wiring.aclose()


async def test_the_poller_asks_the_token_database_about_the_accounts_it_polls_and_no_others(tmp_path: Path) -> None:
    config = OAuthConfig(
        public_url="http://127.0.0.1:1",
        encryption_key=Secret(generate_encryption_key()),
        database_url=f"sqlite:///{tmp_path / 'auth.db'}",
    )
    wiring = OAuthWiring(config)
    await wiring.store.migrate()
    try:
        subjects = []
        for key in (CANARY_KEY, SECOND_KEY):
            token = await wiring.provider.load_access_token(await link_directly(wiring.provider, key))
            assert token is not None
            assert token.subject is not None
            subjects.append(token.subject)
        kept, revoked = subjects
        assert await wiring.store.revoke_account(revoked.removeprefix("acct:"))

        async def every_account() -> object:
            raise AssertionError("the poller's round read every linked account")

        wiring.store.list_accounts = every_account  # type: ignore[method-assign]
        assert await wiring.linked_subjects([kept, revoked, "acct:never-linked"]) == {kept}
        assert await wiring.linked_subjects([revoked]) == set()
        assert await wiring.linked_subjects([]) == set()
    finally:
        await wiring.aclose()
