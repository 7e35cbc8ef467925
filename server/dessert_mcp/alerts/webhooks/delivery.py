"""Sending the outbox: one background task per service, the attempts, the waits between them, the record of the end.

An attempt is one POST with a time cap (`timeout_s`, the whole exchange) and a cap on the answer read; redirects are
not followed, and the connection goes only to an address the rules of `dessert_mcp.egress` allow. A 2xx answer
delivers the row. A connection failure, a timeout, 408, 425, 429 or a 5xx is tried again after a wait that doubles
from `first_wait_s` up to `max_wait_s` (jittered), or after the receiver's `Retry-After` when longer (capped alike);
after `attempts` tries the row fails for good. Any other answer (a 4xx, a redirect) fails it at once: sending the
same request again would get the same answer. A failure for good is recorded in the row (attempts, last status,
last error), counted (`Observer.webhook`), and logged once, naming the webhook by its number and host, never by its
URL (Slack's and Discord's carry their token). Rows queued for a URL since removed from the setting are abandoned
(`Outbox.abandon_unconfigured`), counted as `abandoned` and logged by their count (this process never had their
URL to name them by).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import anyio
import httpx2

from dessert_mcp.alerts.webhooks.message import headers, secret_key
from dessert_mcp.alerts.webhooks.outbox import Outbox, Pending
from dessert_mcp.client import retry_after
from dessert_mcp.config import Secret
from dessert_mcp.egress import AddressRefused, PinnedTransport, Resolver, system_resolver
from dessert_mcp.storage import Database, StorageUnavailable
from dessert_mcp.storage.chores import holder_name
from dessert_mcp.telemetry import NO_OBSERVER, Observer

logger = logging.getLogger("dessert_mcp.alerts")

DEFAULT_ATTEMPTS: Final = 10
DEFAULT_FIRST_WAIT_S: Final = 30.0
DEFAULT_MAX_WAIT_S: Final = 3600.0
DEFAULT_TIMEOUT_S: Final = 10.0
# An answer's body is read up to this much (receivers answer "ok"); the rest is not read.
MAX_ANSWER_BYTES: Final = 64 * 1024
# A claim outlasts an attempt's time cap by this much, so it never runs out while the attempt can still succeed.
CLAIM_MARGIN_S: Final = 30.0
# How often a replica looks for rows due (its own alerts wake it at once; this finds the others' retries).
POLL_S: Final = 15.0
# How long a stopping service waits for an attempt under way (then it is cancelled, and its row sent again later).
STOP_WAIT_S: Final = 5.0
# Rows sent at once, and rows read per pass.
CONCURRENCY: Final = 4
BATCH: Final = 32
# Delivered rows are kept this long (to see what went out), failures longer (to see what did not).
KEEP_DELIVERED_S: Final = 7 * 86400.0
KEEP_FAILED_S: Final = 90 * 86400.0
_RETRIED_STATUSES: Final = frozenset({408, 425, 429})
ERROR_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class Target:
    """One webhook URL: its number (1-based, in the setting's order), its host, and its id in the outbox."""

    number: int
    url: Secret
    id: str

    @property
    def name(self) -> str:
        """How logs and errors name it: never the URL, whose path may be the credential."""
        return f"webhook {self.number} ({urlsplit(self.url.get()).hostname})"


def targets(urls: Sequence[Secret]) -> tuple[Target, ...]:
    return tuple(
        Target(i, url, "sha256:" + hashlib.sha256(url.get().encode()).hexdigest()[:32])
        for i, url in enumerate(urls, start=1)
    )


@dataclass(frozen=True, slots=True)
class Schedule:
    """How many attempts a row gets and how long to wait between them."""

    attempts: int = DEFAULT_ATTEMPTS
    first_wait_s: float = DEFAULT_FIRST_WAIT_S
    max_wait_s: float = DEFAULT_MAX_WAIT_S
    timeout_s: float = DEFAULT_TIMEOUT_S

    def wait(self, attempts: int, asked: float | None) -> float:
        """The wait after the `attempts`-th failed attempt; `asked`: the receiver's Retry-After."""
        backoff = min(self.max_wait_s, self.first_wait_s * 2.0 ** (attempts - 1)) * random.uniform(0.5, 1.0)
        return max(backoff, min(asked, self.max_wait_s)) if asked is not None else backoff


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: int | None
    error: str | None  # None: delivered
    again: bool  # worth another attempt
    asked: float | None = None  # Retry-After


class Deliverer:
    """Sends `db`'s outbox rows for `targets` until stopped: `async with deliverer.running(): ...`."""

    def __init__(
        self,
        db: Database,
        urls: Sequence[Secret],
        *,
        secret: Secret | None = None,
        allowed_hosts: Sequence[str] = (),
        schedule: Schedule = Schedule(),
        observer: Observer = NO_OBSERVER,
        transport: httpx2.AsyncBaseTransport | None = None,
        resolve: Resolver = system_resolver,
        poll_s: float = POLL_S,
    ) -> None:
        """`allowed_hosts`: the hosts whose addresses may be private (DESSERT_ALERT_WEBHOOK_ALLOW_HOSTS); `transport`
        and `resolve` (tests) replace the network and the DNS under the address rules."""
        self.targets = {t.id: t for t in targets(urls)}
        self.outbox = Outbox(db, holder_name(), list(self.targets))
        self.schedule = schedule
        self._key = None if secret is None else secret_key(secret.get())
        self._observer = observer
        self._poll_s = poll_s
        self._http = httpx2.AsyncClient(
            transport=PinnedTransport(allowed_hosts=allowed_hosts, resolve=resolve, inner=transport),
            timeout=httpx2.Timeout(schedule.timeout_s),
            follow_redirects=False,
            trust_env=False,
        )
        self._wake = anyio.Event()
        self._stopping = False
        self._stopped = anyio.Event()
        self._limit = anyio.CapacityLimiter(CONCURRENCY)
        self._warned = False

    def wake(self) -> None:
        """Rows were queued: look for due rows now rather than at the next poll."""
        self._wake.set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Deliverer]:
        """Send while the block runs. At its end the task stops between two steps (a task cancelled inside a
        database call leaves its connection to be torn down behind it); one that takes longer is cancelled."""
        self._stopping = False
        self._stopped = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._forever, name="dessert-mcp alert webhooks")
                try:
                    yield self
                finally:
                    self._stopping = True
                    self._wake.set()
                    with anyio.move_on_after(STOP_WAIT_S, shield=True):
                        await self._stopped.wait()
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._http.aclose()

    async def _forever(self) -> None:
        pruned_at = -math.inf
        try:
            while not self._stopping:
                self._wake = anyio.Event()
                wait = self._poll_s
                try:
                    now = self.outbox.db.clock()
                    if now - pruned_at > 3600:
                        pruned_at = now
                        await self.outbox.prune(
                            delivered_before=now - KEEP_DELIVERED_S, failed_before=now - KEEP_FAILED_S
                        )
                        self._abandoned(await self.outbox.abandon_unconfigured(now=now))
                    await self.once()
                    due = await self.outbox.next_due()
                    if due is not None:
                        wait = min(wait, max(0.0, due - self.outbox.db.clock()))
                    self._warned = False
                except StorageUnavailable as exc:
                    self._warn(str(exc))
                except Exception as exc:  # a bug here must not end the deliveries, nor reach the server
                    self._warn(type(exc).__name__)
                    logger.debug("Alert webhooks failed", exc_info=True)
                if not self._stopping:
                    with anyio.move_on_after(wait):
                        await self._wake.wait()
        finally:
            self._stopped.set()

    def _abandoned(self, count: int) -> None:
        for _ in range(count):
            self._observer.webhook("abandoned")
        if count:
            logger.warning(
                "%d alert webhook%s queued for a URL no longer in DESSERT_ALERT_WEBHOOK_URL %s abandoned unsent",
                count,
                "" if count == 1 else "s",
                "was" if count == 1 else "were",
            )

    def _warn(self, reason: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("Alert webhooks cannot be sent for now (%s); tried again shortly", reason)

    async def once(self) -> int:
        """One pass: attempt every row due now that no other replica holds; how many were attempted."""
        rows = await self.outbox.due(self.outbox.db.clock(), BATCH)
        attempted = 0

        async def attempt(row: Pending) -> None:
            nonlocal attempted
            async with self._limit:
                attempted += await self._attempt(row)

        async with anyio.create_task_group() as tg:
            for row in rows:
                tg.start_soon(attempt, row)
        return attempted

    async def _attempt(self, row: Pending) -> bool:
        target = self.targets[row.target]
        now = self.outbox.db.clock()
        if not await self.outbox.claim(row, now=now, until=now + self.schedule.timeout_s + CLAIM_MARGIN_S):
            return False
        outcome = await self._send(target, row)
        now = self.outbox.db.clock()
        attempts = row.attempts + 1
        if outcome.error is None:
            await self.outbox.delivered(row, now=now, status=outcome.status or 0)
            self._observer.webhook("delivered")
        elif outcome.again and attempts < self.schedule.attempts:
            at = now + self.schedule.wait(attempts, outcome.asked)
            await self.outbox.retry(row, at=at, status=outcome.status, error=outcome.error)
            self._observer.webhook("retried")
        else:
            await self.outbox.failed(row, now=now, status=outcome.status, error=outcome.error)
            self._observer.webhook("failed")
            logger.warning(
                "Alert %s was not delivered to %s: %s after %d attempt%s",
                row.message_id,
                target.name,
                outcome.error,
                attempts,
                "" if attempts == 1 else "s",
            )
        return True

    async def _send(self, target: Target, row: Pending) -> _Outcome:
        body = row.body.encode()
        # Identity: the answer's first bytes go into the error record as sent, and little inflates past the cap.
        sent = headers(row.message_id, int(self.outbox.db.clock()), body, self._key) | {"accept-encoding": "identity"}
        try:
            with anyio.fail_after(self.schedule.timeout_s):
                async with self._http.stream("POST", target.url.get(), content=body, headers=sent) as response:
                    answer = bytearray()
                    async for chunk in response.aiter_bytes():
                        answer += chunk[: MAX_ANSWER_BYTES - len(answer)]
                        if len(answer) >= MAX_ANSWER_BYTES:
                            break
        except TimeoutError:
            return _Outcome(None, f"no answer within {self.schedule.timeout_s:g} s", again=True)
        except AddressRefused as exc:
            return _Outcome(None, str(exc), again=True)  # DNS can be wrong for a while
        except httpx2.HTTPError as exc:
            return _Outcome(None, f"{type(exc).__name__}", again=True)
        status = response.status_code
        if 200 <= status < 300:
            return _Outcome(status, None, again=False)
        detail = _printable(bytes(answer[:ERROR_CHARS]))
        error = f"HTTP {status}" + (f" ({detail})" if detail else "")
        again = status >= 500 or status in _RETRIED_STATUSES
        return _Outcome(status, error, again=again, asked=retry_after(response.headers) if again else None)


def _printable(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    return "".join(c if c.isprintable() else " " for c in text).strip()[:ERROR_CHARS]
