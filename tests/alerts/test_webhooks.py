"""Alert webhooks against a real receiver on 127.0.0.1 (allowed by name, as an operator would): what is sent and how
it is signed, retries after 500s and timeouts, the record of what finally failed, and exactly-once across two
replicas sharing one database (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa
from mcp import Client

from dessert_mcp.alerts import Alert
from dessert_mcp.alerts.database import ALERTS_SCHEMA, WEBHOOKS, DatabaseAlertStore
from dessert_mcp.alerts.webhooks import Deliverer, Schedule
from dessert_mcp.alerts.webhooks.outbox import ABANDONED, UNCONFIGURED_GRACE_S
from dessert_mcp.config import Secret, Settings
from dessert_mcp.observe.metrics import Metrics
from dessert_mcp.redact import redactor_for
from dessert_mcp.service import DessertService
from dessert_mcp.storage import Database
from dessert_mcp.tools import build_server
from tests.support.faults import ThreadedFaultySandbox
from tests.support.postgres import database_url, postgres
from tests.support.receiver import Received, Receiver, receiving
from tests.support.servers import sandbox_settings

__all__ = ["database_url", "postgres"]

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
# A path like Slack's, whose last part is the credential: it must never reach a log.
TOKEN_PATH = "/services/T000/B000/token-that-must-not-leak"
FAST = Schedule(attempts=5, first_wait_s=0.0, timeout_s=2.0)


def verify(received: Received, secret: str = SECRET, *, tolerance_s: float = 300) -> dict[str, object]:
    """What a receiver does, written from the Standard Webhooks text rather than with the server's code: the HMAC
    over id.timestamp.body, compared in constant time, and a timestamp close to now. Returns the body's JSON."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    message_id, timestamp = received.headers["webhook-id"], received.headers["webhook-timestamp"]
    signed = f"{message_id}.{timestamp}.".encode() + received.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [s.split(",", 1)[1] for s in received.headers["webhook-signature"].split() if s.startswith("v1,")]
    assert any(hmac.compare_digest(expected, s) for s in offered), "the signature does not verify"
    assert abs(time.time() - int(timestamp)) < tolerance_s, "a stale timestamp: a replay"
    assert received.headers["idempotency-key"] == message_id
    payload = json.loads(received.body)
    assert isinstance(payload, dict)
    return payload


def alert(n: int = 0, *, account: str = "acct_1") -> Alert:
    return Alert(f"alert{n:04d}", "balance_below", account, 80 + n, 100, datetime.now(UTC) - timedelta(minutes=1))


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[DatabaseAlertStore]:
    db = Database(url, schemas=[ALERTS_SCHEMA])
    try:
        yield DatabaseAlertStore(db)
    finally:
        await db.aclose()


class Outcomes(Metrics):
    """The metrics, and an event per outcome count reached (the tests await it instead of sleeping)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[str] = Counter()
        self._changed = anyio.Event()

    def webhook(self, outcome: str) -> None:
        super().webhook(outcome)
        self.seen[outcome] += 1
        self._changed.set()
        self._changed = anyio.Event()

    async def reach(self, outcome: str, count: int) -> None:
        with anyio.fail_after(60):
            while self.seen[outcome] < count:
                await self._changed.wait()

    def counted(self, outcome: str) -> float | None:
        return self.registry.get_sample_value("dessert_mcp_alert_webhooks_total", {"outcome": outcome})


def deliverer(store: DatabaseAlertStore, urls: list[str], observer: Outcomes, schedule: Schedule = FAST) -> Deliverer:
    sender = Deliverer(
        store.database,
        [Secret(u) for u in urls],
        secret=Secret(SECRET),
        allowed_hosts=["127.0.0.1"],
        schedule=schedule,
        observer=observer,
    )
    store.deliver_to(sender.outbox.queue, sender.wake)
    return sender


async def received(receiver: Receiver, count: int) -> list[Received]:
    return await anyio.to_thread.run_sync(receiver.wait_for, count)


async def test_each_alert_fired_and_cleared_is_posted_signed_to_every_url_with_text_for_slack_and_discord(
    tmp_path: Path,
) -> None:
    observer = Outcomes()
    with receiving(Receiver([])) as receiver:
        async with opened(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as store:
            urls = [receiver.url + "/slack", receiver.url + TOKEN_PATH]
            async with deliverer(store, urls, observer).running():
                fired = alert()
                await store.fire(fired)
                await observer.reach("delivered", 2)
                await store.clear(replace(fired, cleared_at=datetime.now(UTC)))
                await observer.reach("delivered", 4)
    requests = receiver.received
    assert sorted(r.path for r in requests) == sorted(["/slack", TOKEN_PATH] * 2)
    payloads = [verify(r) for r in requests]
    assert [p["type"] for p in payloads] == ["alert.fired"] * 2 + ["alert.cleared"] * 2
    assert [r.headers["webhook-id"] for r in requests] == ["alert0000-fired"] * 2 + ["alert0000-cleared"] * 2
    first = payloads[0]
    data = first["data"]
    assert isinstance(data, dict)
    assert data["id"] == "alert0000"
    assert (data["rule"], data["account"], data["value"], data["threshold"]) == ("balance_below", "acct_1", 80, 100)
    assert data["cleared_at"] is None
    assert first["text"] == first["content"]  # Slack shows `text`, Discord `content`
    assert first["text"] == "Dessert alert on account acct_1: the balance, 80 credits, is below 100."
    assert str(payloads[2]["text"]).startswith("Dessert alert cleared on account acct_1: ")
    assert requests[0].headers["content-type"] == "application/json"
    assert observer.counted("delivered") == 4


async def test_a_receiver_that_answers_500_then_times_out_gets_the_same_message_again_until_it_takes_it(
    tmp_path: Path,
) -> None:
    observer = Outcomes()
    with receiving(Receiver([500, "hang", 200])) as receiver:
        async with opened(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as store:
            sender = deliverer(store, [receiver.url + "/hook"], observer, replace(FAST, timeout_s=1.0))
            async with sender.running():
                await store.fire(alert())
                await observer.reach("delivered", 1)
            assert await sender.once() == 0  # delivered: nothing is sent again
            (done,) = await sender.outbox.finished()
    attempts = receiver.received
    assert len(attempts) == 3
    assert len({a.body for a in attempts}) == 1  # the same bytes each time, under one id
    assert {a.headers["webhook-id"] for a in attempts} == {"alert0000-fired"}
    for attempt in attempts:
        verify(attempt)  # each attempt signed with its own timestamp
    assert (done.delivered, done.attempts, done.status) == (True, 3, 200)
    assert observer.seen == {"retried": 2, "delivered": 1}


async def test_after_the_last_attempt_the_failure_is_recorded_counted_and_logged_once_without_the_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    observer = Outcomes()
    caplog.set_level(logging.DEBUG)
    with receiving(Receiver([], then=503)) as receiver:
        async with opened(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as store:
            sender = deliverer(store, [receiver.url + TOKEN_PATH], observer, replace(FAST, attempts=3))
            async with sender.running():
                await store.fire(alert())
                await observer.reach("failed", 1)
            assert await sender.once() == 0  # failed for good: not tried again
            (done,) = await sender.outbox.finished()
    assert len(receiver.received) == 3
    assert (done.delivered, done.attempts, done.status) == (False, 3, 503)
    assert done.error == "HTTP 503 (answer 503)"
    assert (observer.counted("retried"), observer.counted("failed")) == (2, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        "Alert alert0000-fired was not delivered to webhook 1 (127.0.0.1): HTTP 503 (answer 503) after 3 attempts"
    ]
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("dessert_mcp"))
    assert "token-that-must-not-leak" not in ours
    # The HTTP client's own request lines (DEBUG) quote the URL: the log's redactor hides its credential.
    settings = Settings.from_env(
        {"DESSERT_ALERT_WEBHOOK_URL": receiver.url + TOKEN_PATH, "DESSERT_ALERT_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"}
    )
    shown = redactor_for(settings)(caplog.text)
    assert "token-that-must-not-leak" not in shown
    assert "HTTP Request: POST http://127.0.0.1:" in shown  # the rest of the line is still there
    assert SECRET not in caplog.text


async def test_an_answer_no_retry_can_change_fails_at_once_and_retry_after_sets_the_next_attempt(
    tmp_path: Path,
) -> None:
    observer = Outcomes()
    with receiving(Receiver([404])) as gone, receiving(Receiver([429], retry_after="120")) as busy:
        async with opened(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as store:
            sender = deliverer(store, [gone.url + "/a", busy.url + "/b"], observer)
            before = time.time()
            async with sender.running():
                await store.fire(alert())
                await observer.reach("failed", 1)
                await observer.reach("retried", 1)
            (done,) = await sender.outbox.finished()
            due = await sender.outbox.next_due()
    assert (done.delivered, done.attempts, done.status) == (False, 1, 404)
    assert len(gone.received) == 1
    assert due is not None
    assert due >= before + 120


async def test_a_message_queued_for_a_url_removed_from_the_setting_is_abandoned_unsent_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    observer = Outcomes()
    caplog.set_level(logging.WARNING)
    now = [time.time()]
    db = Database(f"sqlite:///{tmp_path / 'ledger.sqlite'}", schemas=[ALERTS_SCHEMA], clock=lambda: now[0])
    store = DatabaseAlertStore(db)
    try:
        with receiving(Receiver([])) as removed, receiving(Receiver([])) as kept:
            deliverer(store, [removed.url + TOKEN_PATH], observer)  # the setting then: the alert is queued for it
            await store.fire(alert())
            sender = deliverer(store, [kept.url + "/kept"], observer)  # the setting after a restart
            assert await sender.once() == 0  # never sent to a URL no longer configured
            now[0] += UNCONFIGURED_GRACE_S - 1
            assert await sender.outbox.abandon_unconfigured(now=now[0]) == 0  # a replica that has it may still send it
            now[0] += 2
            async with sender.running():
                await observer.reach("abandoned", 1)
            (done,) = await sender.outbox.finished()
            assert await sender.outbox.next_due() is None
        assert removed.received == kept.received == []
    finally:
        await db.aclose()
    assert (done.delivered, done.attempts, done.status, done.error) == (False, 0, None, ABANDONED)
    assert observer.counted("abandoned") == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["1 alert webhook queued for a URL no longer in DESSERT_ALERT_WEBHOOK_URL was abandoned unsent"]
    assert "token-that-must-not-leak" not in caplog.text


async def test_two_replicas_on_one_database_deliver_each_alert_exactly_once(database_url: str) -> None:
    observer = Outcomes()
    with receiving(Receiver([])) as receiver:
        async with opened(database_url) as one, opened(database_url) as two:
            urls = [receiver.url + "/hook"]
            senders = [deliverer(one, urls, observer), deliverer(two, urls, observer)]
            for n in range(12):  # queued through either replica before either sends
                await (one, two)[n % 2].fire(alert(n, account=f"acct_{n}"))
            async with AsyncExitStack() as both:
                for sender in senders:
                    await both.enter_async_context(sender.running())
                await observer.reach("delivered", 12)
            assert [await s.once() for s in senders] == [0, 0]
    ids = Counter(r.headers["webhook-id"] for r in receiver.received)
    assert ids == {f"alert{n:04d}-fired": 1 for n in range(12)}


async def test_two_services_on_one_database_send_one_webhook_for_the_alert_both_see(
    sandbox: ThreadedFaultySandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESSERT_MCP_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    with receiving(Receiver([])) as receiver:
        environ = {
            "DESSERT_ALERT_WEBHOOK_URL": receiver.url + TOKEN_PATH,
            "DESSERT_ALERT_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
            "DESSERT_ALERT_WEBHOOK_SECRET": SECRET,
        }
        webhooks = Settings.from_env(environ)
        settings = sandbox_settings(
            sandbox,
            alert_balance_below=10**9,
            ledger_poll=False,
            alert_webhook_urls=webhooks.alert_webhook_urls,
            alert_webhook_allow_hosts=webhooks.alert_webhook_allow_hosts,
            alert_webhook_secret=webhooks.alert_webhook_secret,
        )
        replicas = [DessertService(settings), DessertService(settings)]
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(Client(build_server(settings, service=s))) for s in replicas]
            for client in clients:  # the second replica reads the alert the first one fired, and fires none
                assert (await client.call_tool("dessert.get_balance", {})).is_error is False
                for service in replicas:
                    assert service.recorder is not None
                    await service.recorder.settled()
            (request,) = await received(receiver, 1)
            assert verify(request)["type"] == "alert.fired"
            async with (
                opened(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as store,
                store.database.transaction(read_only=True) as conn,
            ):
                queued = (await conn.execute(sa.select(sa.func.count()).select_from(WEBHOOKS))).scalar()
            assert queued == 1  # both replicas' writes are done: the second fired nothing, queued nothing
    assert len(receiver.received) == 1
