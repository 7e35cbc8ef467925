"""The service straight through its interface: the caller's alert thresholds, and the accounts the ledger's poller
reads (the same paths through a real MCP client and server are in tests/alerts and tests/ledger)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx2
import pytest
from mcp.server.subscriptions import ResourceUpdated

from dessert_mcp.alerts import Alert, InMemoryAlertStore, Thresholds
from dessert_mcp.auth.caller import DESSERT_KEY_CLIENT, CallerToken
from dessert_mcp.client import DessertAPIError
from dessert_mcp.config import Secret, Settings
from dessert_mcp.events import ALERTS_URI, BALANCE_URI, ServerEvent
from dessert_mcp.history import SpendArguments
from dessert_mcp.ledger import InMemoryLedger, Ledger
from dessert_mcp.ledger.accounts import remote_account
from dessert_mcp.models import AlertSettings, AlertThresholds, UsageArguments
from dessert_mcp.service import DessertService
from dessert_mcp.telemetry import Observer
from tests.support.alerts import CountingStore
from tests.support.api import CANARY_KEY, DOCS_BALANCE, FAKE_BASE_URL, FakeDessertAPI

_ENV = {"DESSERT_API_BASE_URL": FAKE_BASE_URL, "DESSERT_LEDGER_POLL": "off"}


class Caller:
    """Whose request it is: the token the SDK's bearer middleware accepted (None: no credential)."""

    def __init__(self) -> None:
        self.token: CallerToken | None = None

    def is_(self, subject: str | None) -> None:
        self.token = CallerToken.carrying(
            Secret(CANARY_KEY), token="fingerprint", client_id="test", scopes=[], subject=subject
        )


@pytest.fixture
def caller(monkeypatch: pytest.MonkeyPatch) -> Caller:
    caller = Caller()
    monkeypatch.setattr("dessert_mcp.auth.caller.get_access_token", lambda: caller.token)
    return caller


def _remote(alerts: InMemoryAlertStore | None = None) -> DessertService:
    """A service of the remote modes (each caller brings their key), over the fake API and in-memory stores."""
    settings = Settings.from_env(_ENV)
    return DessertService(
        settings,
        transport=FakeDessertAPI().transport(),
        per_account=True,
        ledger=InMemoryLedger(),
        alerts=alerts or InMemoryAlertStore(),
    )


@pytest.mark.parametrize("with_token", [False, True])
async def test_set_alerts_without_a_callers_account_is_refused(caller: Caller, with_token: bool) -> None:
    service = _remote()
    if with_token:
        caller.is_(None)  # a token that names no account
    with pytest.raises(DessertAPIError) as refused:
        await service.set_alerts(AlertSettings(balance_below=5))
    assert refused.value.code == "not_configured"
    assert "Authorization: Bearer" in refused.value.message


async def test_set_alerts_changes_only_the_thresholds_given_and_only_the_callers(caller: Caller) -> None:
    service = _remote()
    settings = service.settings
    defaults = AlertThresholds(
        balance_below=settings.alert_balance_below,
        runway_days=settings.alert_runway_days,
        spike_factor=settings.alert_spike_factor,
    )
    caller.is_("acct:one")
    assert await service.set_alerts(AlertSettings(balance_below=10)) == defaults.model_copy(
        update={"balance_below": 10}
    )
    assert await service.set_alerts(AlertSettings(runway_days=7)) == defaults.model_copy(
        update={"balance_below": 10, "runway_days": 7.0}
    )
    caller.is_("acct:two")
    assert await service.set_alerts(AlertSettings()) == defaults


class DatabaseDown(Exception):
    pass


class UnsavingStore(InMemoryAlertStore):
    async def set_thresholds(self, account: str, thresholds: Thresholds) -> None:
        raise DatabaseDown("could not connect to dsk_live_in_a_message")


async def test_thresholds_the_database_cannot_save_are_a_retryable_error_and_a_warning_naming_only_the_failure(
    caller: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    service = _remote(UnsavingStore())
    caller.is_("acct:one")
    with caplog.at_level(logging.WARNING, logger="dessert_mcp"), pytest.raises(DessertAPIError) as refused:
        await service.set_alerts(AlertSettings(balance_below=10))
    assert (refused.value.code, refused.value.retryable) == ("upstream_unavailable", True)
    assert "Try again later" in refused.value.message
    assert "dsk_live" not in refused.value.message
    assert [r.getMessage() for r in caplog.records] == ["Saving alert thresholds failed (DatabaseDown)"]


async def test_with_one_key_the_poller_reads_the_keys_account_while_the_service_runs() -> None:
    settings = Settings.from_env({"DESSERT_API_KEY": CANARY_KEY, **_ENV})
    ledger = InMemoryLedger()
    service = DessertService(settings, transport=FakeDessertAPI().transport(), ledger=ledger)

    async def opened() -> Ledger:
        return ledger

    assert await service.poll_targets(ledger) == []  # not running: no client to read with
    async with service.running():
        for given in (opened, ledger):  # the ledger, or how to open it
            (target,) = await service.poll_targets(given)
            assert target.client is service.client
            assert await target.account() == await ledger.account_for_key(CANARY_KEY)
    assert await service.poll_targets(ledger) == []


async def test_with_auth_the_poller_reads_the_recent_callers_accounts_still_linked_and_not_revoked_here(
    caller: Caller,
) -> None:
    service = _remote()
    ledger = InMemoryLedger()
    async with service.running():
        assert await service.poll_targets(ledger) == []  # nobody has called yet
        for subject in ("acct:one", "acct:two", "acct:three"):
            caller.is_(subject)
            await service.balance()
        caller.token = None
        asked: list[set[str]] = []

        async def linked(subjects: Collection[str]) -> set[str] | None:
            asked.append(set(subjects))
            return set(subjects) - {"acct:two"}  # another process revoked it

        service.linked_subjects = linked
        service.stop_polling("acct:three")  # revoked through this process
        (target,) = await service.poll_targets(ledger)
        assert asked == [{"acct:one", "acct:two"}]
        assert target.client is not service.client
        assert target.client.account == hashlib.sha256(CANARY_KEY.encode()).hexdigest()
        assert await target.account() == remote_account("acct:one")

        service.linked_subjects = None  # the token database cannot say: the revoked ones stay forgotten
        assert [await t.account() for t in await service.poll_targets(ledger)] == [remote_account("acct:one")]
        service.settings = replace(service.settings, ledger_poll_recent_s=1e-9)  # nobody called that recently
        service.linked_subjects = linked
        assert await service.poll_targets(ledger) == []
        assert len(asked) == 1  # nothing to ask about


def _one_key(**env: str) -> Settings:
    return Settings.from_env({"DESSERT_API_KEY": CANARY_KEY, **_ENV, **env})


async def test_with_one_key_another_replicas_event_reaches_the_streams_only_for_the_keys_account() -> None:
    ledger, store = InMemoryLedger(), CountingStore()
    service = DessertService(_one_key(), transport=FakeDessertAPI().transport(), ledger=ledger, alerts=store)
    heard: list[ServerEvent] = []
    service.events.subscribe(heard.append)
    alerts, balance = ResourceUpdated(uri=ALERTS_URI), ResourceUpdated(uri=BALANCE_URI)
    await service.remote_event("someone else", alerts)
    assert heard == []
    mine = await ledger.account_for_key(CANARY_KEY)
    await service.remote_event(mine, balance)
    assert heard == [balance]

    assert service.watcher is not None
    await service.watcher.recent(mine)
    await service.watcher.recent(mine)
    assert store.reads == 1
    await service.remote_event(mine, balance)  # not the alerts: the ones read stay
    await service.watcher.recent(mine)
    assert store.reads == 1
    await service.remote_event(mine, alerts)  # they changed on another replica: read again
    await service.watcher.recent(mine)
    assert store.reads == 2
    assert heard == [balance, balance, alerts]


async def test_with_auth_another_replicas_event_reaches_that_accounts_streams_only(caller: Caller) -> None:
    service = _remote()
    heard: list[ServerEvent] = []
    caller.is_("acct:one")
    service.events.subscribe(heard.append)  # a listen stream of acct:one's caller
    event = ResourceUpdated(uri=BALANCE_URI)
    await service.remote_event(remote_account("acct:two"), event)
    assert heard == []
    await service.remote_event(remote_account("acct:one"), event)
    assert heard == [event]


class StallingLedger(InMemoryLedger):
    """A ledger whose next balance write hangs until released (a write stuck in the database)."""

    def __init__(self) -> None:
        super().__init__()
        self.stall = False
        self.release = anyio.Event()

    async def record_balance(self, *args: Any, **kwargs: Any) -> Any:
        if self.stall:
            self.stall = False
            await self.release.wait()
        return await super().record_balance(*args, **kwargs)


async def test_a_fresh_service_reads_the_alerts_kept_for_its_key_without_waiting_for_a_stuck_ledger_write() -> None:
    settings = _one_key(DESSERT_ALERT_BALANCE_BELOW=str(10**9))  # every balance is below it
    ledger, store = StallingLedger(), InMemoryAlertStore()
    first = DessertService(settings, transport=FakeDessertAPI().transport(), ledger=ledger, alerts=store)
    async with first.running():
        await first.balance()
        assert first.recorder is not None
        await first.recorder.settled()
    assert [a.rule for a in await store.recent(await ledger.account_for_key(CANARY_KEY))] == ["balance_below"]

    again = DessertService(settings, transport=FakeDessertAPI().transport(), ledger=ledger, alerts=store)
    ledger.stall = True  # the new answer's write hangs
    async with again.running():
        report = await again.balance()
        assert [line.split(":")[0] for line in report.alerts] == ["balance_below"]
        ledger.release.set()


async def test_a_key_dessert_rejects_from_a_caller_is_blamed_on_the_callers_bearer_token(caller: Caller) -> None:
    settings = Settings.from_env(_ENV)
    api = FakeDessertAPI(key="dsk_live_someone_else_0123456789abcdef")
    service = DessertService(settings, transport=api.transport(), per_account=True, ledger=InMemoryLedger())
    caller.token = CallerToken.carrying(
        Secret(CANARY_KEY), token="fingerprint", client_id=DESSERT_KEY_CLIENT, scopes=[], subject="key:one"
    )
    async with service.running():
        with pytest.raises(DessertAPIError) as rejected:
            await service.balance()
    assert rejected.value.code == "auth_invalid"
    assert "this request sends as its bearer token" in rejected.value.message
    assert "DESSERT_API_KEY" not in rejected.value.message


async def test_beyond_max_accounts_an_account_with_a_call_in_flight_is_kept(caller: Caller) -> None:
    answered = anyio.Event()
    asked = anyio.Event()

    async def slow_balance(request: httpx2.Request) -> httpx2.Response:
        asked.set()
        await answered.wait()
        return httpx2.Response(200, json=DOCS_BALANCE)

    settings = Settings.from_env(_ENV)
    api = FakeDessertAPI({"/v1/balance": DOCS_BALANCE})
    transport = httpx2.MockTransport(lambda request: slow_balance(request) if not answered.is_set() else api(request))
    service = DessertService(settings, transport=transport, per_account=True, max_accounts=1, ledger=InMemoryLedger())
    ledger = InMemoryLedger()
    async with service.running(), anyio.create_task_group() as tg:
        caller.is_("acct:busy")
        tg.start_soon(service.balance)
        with anyio.fail_after(60):
            await asked.wait()
        caller.is_("acct:idle")
        answered.set()
        await service.balance()  # over the limit of one: only idle accounts may go, and the busy one is not idle
        named = {await t.account() for t in await service.poll_targets(ledger)}
        assert named == {remote_account("acct:busy"), remote_account("acct:idle")}


async def test_get_balance_carries_the_callers_active_alerts_and_not_the_cleared_ones(caller: Caller) -> None:
    now = datetime(2026, 5, 20, 12, tzinfo=UTC)
    account = remote_account("acct:one")
    store = InMemoryAlertStore()
    fired = now - timedelta(hours=2)
    for alert in (
        Alert("a1", "balance_below", account, 5, 10, fired),
        Alert("a2", "runway_below", account, 1, 3, fired, cleared_at=now - timedelta(hours=1)),
    ):
        await store.fire(alert)
    service = DessertService(
        Settings.from_env(_ENV),
        transport=FakeDessertAPI().transport(),
        per_account=True,
        ledger=InMemoryLedger(),
        alerts=store,
        clock=lambda: now,
    )
    caller.is_("acct:one")
    assert {a.id for a in await service.alerts()} == {"a1", "a2"}  # dessert://alerts lists the recent ones too
    async with service.running():
        report = await service.balance()
    assert [line.split(":")[0] for line in report.alerts] == ["balance_below"]


class CacheHits(Observer):
    def __init__(self) -> None:
        self.routes: list[str] = []

    def cache_hit(self, route: str) -> None:
        self.routes.append(route)


async def test_usage_and_spend_answered_from_the_short_cache_are_counted_under_the_usage_route() -> None:
    hits = CacheHits()
    settings = _one_key(DESSERT_CACHE_TTL_S="60", DESSERT_LEDGER="off")
    service = DessertService(settings, transport=FakeDessertAPI().transport(), observer=hits)
    async with service.running():
        await service.balance()
        await service.balance()
        for _ in range(2):
            await service.usage(UsageArguments())
            await service.spend(SpendArguments())
    assert hits.routes == ["/v1/balance", "/v1/usage", "/v1/usage", "/v1/usage"]


def test_two_usage_answers_count_as_the_same_for_the_ledger_exactly_when_their_models_are_equal() -> None:
    from dessert_mcp.models import Transaction, Usage
    from dessert_mcp.service import _rows
    from tests.support.ledger import window
    from tests.test_history import ROWS

    answer = Usage(recent_transactions=window(ROWS, 60))
    again = Usage.model_validate_json(answer.model_dump_json())  # a fresh answer, parsed as the client parses one
    assert again.recent_transactions[0].timestamp  # one side's rows with their timestamp worked out (and cached)
    assert again == answer
    assert _rows(again) == _rows(answer)
    changes: dict[str, Any] = {
        "type": "Refund",
        "credits_delta": 7,
        "balance_after": 1,
        "usd_amount": 9.5,
        "description": "something else",
        "at": "2026-01-01T00:00:00Z",
    }
    assert set(changes) == set(Transaction.model_fields)  # every field, so a new one needs a case here
    for field, value in changes.items():
        rows = list(answer.recent_transactions)
        rows[7] = rows[7].model_copy(update={field: value})
        changed = Usage(recent_transactions=rows)
        assert changed != answer
        assert _rows(changed) != _rows(answer), field
    shorter = Usage(recent_transactions=answer.recent_transactions[:-1])
    assert _rows(shorter) != _rows(answer)
