"""The poller as the server runs it: started by the lifespan with the ledger on, reading the accounts in use."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import pytest
from mcp import Client

from dessert_mcp.auth import generate_encryption_key
from dessert_mcp.auth.caller import CallerToken
from dessert_mcp.auth.config import OAuthConfig
from dessert_mcp.auth.wiring import OAuthWiring
from dessert_mcp.config import Secret, Settings
from dessert_mcp.http import HTTPOptions
from dessert_mcp.http.app import build_app
from dessert_mcp.ledger import InMemoryLedger, MergeOutcome
from dessert_mcp.ledger.database import DatabaseLedger
from dessert_mcp.ledger.poller import Poller
from dessert_mcp.ledger.tables import LEDGER_SCHEMA
from dessert_mcp.models import USAGE_PATH, Transaction
from dessert_mcp.sandbox import SandboxAccount
from dessert_mcp.sandbox.activity import LiveAccount
from dessert_mcp.service import DessertService
from dessert_mcp.storage import Database
from dessert_mcp.tools import build_server
from tests.auth.conftest import SECOND_KEY, second_account
from tests.ledger.conftest import postgres
from tests.support.api import CANARY_KEY
from tests.support.auth import Clock, call_tool, link_directly
from tests.support.faults import ThreadedAccountsSandbox, ThreadedFaultySandbox
from tests.support.servers import sandbox_settings, serve_app

__all__ = ["postgres"]


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


@pytest.fixture
async def wiring(tmp_path: Path) -> AsyncIterator[OAuthWiring]:
    """The oauth mode's wiring on a token database of its own."""
    config = OAuthConfig(
        public_url="http://127.0.0.1:1",
        encryption_key=Secret(generate_encryption_key()),
        database_url=f"sqlite:///{tmp_path / 'auth.db'}",
    )
    wiring = OAuthWiring(config)
    await wiring.store.migrate()
    try:
        yield wiring
    finally:
        await wiring.aclose()


async def test_an_account_revoked_through_this_process_is_forgotten_by_the_poller_at_once(wiring: OAuthWiring) -> None:
    stopped: list[str] = []
    wiring.on_account_revoked(stopped.append)
    await wiring.store.revoke_account("account-1")
    await wiring.store.revoke_grant("grant-1", "a grant alone names no account")
    assert stopped == ["acct:account-1"]
    assert await wiring.linked_subjects(["acct:account-1"]) == set()


async def test_the_poller_asks_the_token_database_about_the_accounts_it_polls_and_no_others(
    wiring: OAuthWiring,
) -> None:
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


def _shared_ledger(url: str, clock: Clock) -> DatabaseLedger:
    """A process's own connection to the shared ledger database, whose leases run out on the test's clock."""
    return DatabaseLedger(Database(url, schemas=[LEDGER_SCHEMA], label="ledger database", clock=clock))


def _on_clock(poller: Poller | None, clock: Clock) -> Poller:
    assert poller is not None
    poller.clock, poller.first_read_s = clock, 0
    return poller


async def _step_together(pollers: Sequence[Poller], sandbox: ThreadedFaultySandbox, clock: Clock, steps: int) -> int:
    """Step every poller `steps` times on `clock`; asserts no two read at once; returns the usage reads made."""
    reads = 0
    for _ in range(steps):
        before = int(sandbox.stats()["requests"].get(USAGE_PATH, 0))
        delay = min([await p.step() for p in pollers])
        made = int(sandbox.stats()["requests"].get(USAGE_PATH, 0)) - before
        assert made <= 1  # one replica at a time, and together no more often than one alone
        reads += made
        clock.advance(delay)
    return reads


async def _kept_whole(url: str, clock: Clock) -> None:
    """The shared ledger holds one stretch, nothing flagged, no row twice, complete from its first read on."""
    ledger = _shared_ledger(url, clock)
    try:
        (status,) = (await ledger.status()).accounts
        assert (status.stretches, status.flagged_rows) == (1, 0)
        assert status.oldest_at is not None
        page = await ledger.history(status.account, since=status.oldest_at + timedelta(milliseconds=1), limit=1)
        assert page.history_complete
        rows = [(r.row.transaction.at, r.row.transaction.balance_after) async for r in ledger.export()]
        assert len(rows) == len(set(rows)) == status.rows
    finally:
        await ledger.aclose()


async def test_two_servers_with_one_key_sharing_a_ledger_database_read_it_one_at_a_time(database_url: str) -> None:
    # Two stdio servers of one user (two hosts, one key), or two replicas without --auth: one account, one database.
    clock = Clock()
    with ThreadedFaultySandbox(account=lambda: LiveAccount(rate=0.5, seed=4, clock=clock)) as sandbox:
        settings = sandbox_settings(sandbox, max_attempts=1)
        first = DessertService(settings, ledger=_shared_ledger(database_url, clock))
        second = DessertService(settings, ledger=_shared_ledger(database_url, clock))
        async with first.running():
            async with second.running():
                pollers = [_on_clock(first.poller, clock), _on_clock(second.poller, clock)]
                reads = await _step_together(pollers, sandbox, clock, 40)
                assert sum(w.reads for p in pollers for w in p.watches.values()) == reads
                assert min(w.reads for p in pollers for w in p.watches.values()) == 0  # its holder kept the lease
            # The second stopped; if it was the one reading, the first takes over once its lease runs out.
            (watch,) = pollers[0].watches.values()
            before = watch.reads
            await _step_together(pollers[:1], sandbox, clock, 40)
            assert watch.reads > before
    await _kept_whole(database_url, clock)


async def test_a_server_stopped_and_another_started_at_once_on_its_ledger_database_polls_the_account_at_once(
    database_url: str,
) -> None:
    # A host restarting its server: the one that stopped cleanly gave up its poll lease, which would otherwise hold
    # the account for one more interval.
    clock = Clock()
    with ThreadedFaultySandbox(account=lambda: LiveAccount(rate=0.5, seed=4, clock=clock)) as sandbox:
        settings = sandbox_settings(sandbox, max_attempts=1)
        for server in range(2):
            service = DessertService(settings, ledger=_shared_ledger(database_url, clock))
            async with service.running():
                poller = _on_clock(service.poller, clock)
                before = int(sandbox.stats()["requests"].get(USAGE_PATH, 0))
                await poller.step()
                assert int(sandbox.stats()["requests"].get(USAGE_PATH, 0)) == before + 1, f"server {server + 1}"


async def test_a_server_whose_run_is_cancelled_still_gives_up_its_poll_lease(database_url: str) -> None:
    # A host that kills the server's task (not a clean stop): the lease goes all the same, so the next server reads
    # the account at once instead of one interval later.
    clock = Clock()
    with ThreadedFaultySandbox(account=lambda: LiveAccount(rate=0.5, seed=4, clock=clock)) as sandbox:
        settings = sandbox_settings(sandbox, max_attempts=1)
        first = DessertService(settings, ledger=_shared_ledger(database_url, clock))
        with anyio.CancelScope() as run:
            async with first.running():
                await _on_clock(first.poller, clock).step()  # holds the lease now
                run.cancel()
                await anyio.lowlevel.checkpoint()
        assert run.cancelled_caught
        second = DessertService(settings, ledger=_shared_ledger(database_url, clock))
        async with second.running():
            before = int(sandbox.stats()["requests"].get(USAGE_PATH, 0))
            await _on_clock(second.poller, clock).step()
            assert int(sandbox.stats()["requests"].get(USAGE_PATH, 0)) == before + 1


async def test_with_dessert_keys_replicas_sharing_a_ledger_database_take_turns_and_drop_a_rejected_key(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    caplog.set_level(logging.INFO, "dessert_mcp.ledger")
    accounts = {CANARY_KEY: LiveAccount(rate=0.5, seed=6, clock=clock)}
    with ThreadedAccountsSandbox(accounts) as sandbox:
        settings = replace(Settings.from_env({}, log_level="WARNING", max_attempts=1), base_url=sandbox.url)
        services = [
            DessertService(settings, per_account=True, ledger=_shared_ledger(database_url, clock)) for _ in range(2)
        ]
        async with services[0].running(), services[1].running():
            # The caller used both replicas (a call registers its key as --auth dessert-key's verifier hands it over).
            caller = CallerToken.carrying(
                Secret(CANARY_KEY), token="fp", client_id="dessert-key", scopes=[], subject="key:caller"
            )
            for service in services:
                service._account(caller)
            pollers = [_on_clock(s.poller, clock) for s in services]
            assert await _step_together(pollers, sandbox, clock, 40) > 2
            # Dessert now rejects the key (revoked on its side): neither replica reads the account again.
            sandbox.add_fault(path=USAGE_PATH, status=401, times=0)
            await _step_together(pollers, sandbox, clock, 40)
            sandbox.reset()
            assert await _step_together(pollers, sandbox, clock, 40) == 0
    assert "Stopped polling account acct:key:caller" in caplog.text
    assert CANARY_KEY not in caplog.text
    await _kept_whole(database_url, clock)
