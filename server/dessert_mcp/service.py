"""The tools' shared state: the Dessert client (one pool for every account), shared answers, per-account limits."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypeVar

import anyio
import httpx2
from pydantic import BaseModel

from dessert_mcp.auth.caller import CallerToken, caller_token
from dessert_mcp.cache import BuiltFrom
from dessert_mcp.client import DessertAPIError, DessertClient
from dessert_mcp.config import Settings
from dessert_mcp.history import SpendArguments, SpendResult, UsageHistory
from dessert_mcp.ledger import Ledger, remote_account
from dessert_mcp.ledger.poller import Lease, Poller, PollTarget
from dessert_mcp.models import BALANCE_PATH, USAGE_PATH, Balance, BalanceReport, Usage, UsageArguments, UsageReport
from dessert_mcp.recorder import Recorder, open_ledger
from dessert_mcp.singleflight import SingleFlight
from dessert_mcp.telemetry import NO_OBSERVER, Observer, mark_current_span

logger = logging.getLogger("dessert_mcp")

# With --auth: the accounts whose state (key and concurrency limiter) is kept: those of the most recent callers.
MAX_ACCOUNTS: Final = 1024

AnswerT = TypeVar("AnswerT", bound=BaseModel)
AccountOf = Callable[[Ledger], Awaitable[str]]


@dataclass(eq=False)
class _Account:
    """One caller's key (as the one client calling with it, its headers made once) and share of upstream concurrency."""

    client: DessertClient
    limiter: anyio.CapacityLimiter
    users: int = 0  # calls in flight: an account with any keeps its limiter
    last_used: float = 0.0  # time.monotonic() of its caller's last call: the ledger's poller reads recent ones


class DessertService:
    """The tools' behaviour and their Dessert client, shared for the life of the process.

    With one key (stdio, HTTP without --auth) the client is made from the settings. With `per_account` (--auth)
    each request's caller brings their own key (`caller_token()`), used through the same client and connection pool,
    and at most `settings.account_concurrency` upstream calls per account at a time. Identical calls in flight
    together share one upstream request, and cached answers are reused, only within one account.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        observer: Observer = NO_OBSERVER,
        per_account: bool = False,
        max_accounts: int = MAX_ACCOUNTS,
        ledger: Ledger | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.observer = observer
        self.per_account = per_account
        self._transport = transport
        self._max_accounts = max_accounts
        self._client: DessertClient | None = None
        self._accounts: OrderedDict[str, _Account] = OrderedDict()
        self._users = 0
        # The ledger's poller while the service runs; the lease replicas sharing a database take before reading an
        # account (the HTTP app sets it with --auth oauth), and the accounts revoked in this process, not read again.
        self.poller: Poller | None = None
        self.poll_lease: Lease | None = None
        self._revoked: set[str] = set()
        # With --auth oauth: the subjects whose accounts are still linked, as the token database says (another
        # process may have revoked one); None when it cannot say.
        self.linked_subjects: Callable[[], Awaitable[set[str] | None]] | None = None
        # Identical GETs of one account share one upstream request while it is in flight, and its answer for
        # DESSERT_CACHE_TTL_S seconds after.
        ttl = settings.cache_ttl_s
        self._balances: SingleFlight[Balance] = SingleFlight((DessertAPIError,), ttl_s=ttl)
        self._usages: SingleFlight[Usage] = SingleFlight((DessertAPIError,), ttl_s=ttl)
        # Calls that shared one balance answer share its report too.
        self._balance_report: BuiltFrom[Balance, BalanceReport] = BuiltFrom(BalanceReport.from_balance)
        # Every answer from Dessert kept in the ledger (unless DESSERT_LEDGER=off); `ledger` replaces the default.
        if settings.ledger:
            self.recorder: Recorder | None = Recorder(ledger or open_ledger(), observer)
        else:
            self.recorder = None
        # When an answer was read: what the ledger places it by (tests replay an account's past with their own).
        self._clock = clock
        self._history = UsageHistory(self.recorder, clock)
        self._key_account: str | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[DessertService]:
        """Open the client for the first user (the process, a session, a request) and close it after the last."""
        owner = self._users == 0
        if owner:
            self._client = DessertClient.from_settings(self.settings, transport=self._transport, observer=self.observer)
        self._users += 1
        try:
            if owner and self.recorder is not None:
                # The first user (the process's lifespan, in practice) drains the ledger's writes while it runs,
                # and polls the accounts so that the ledger misses nothing between calls.
                async with self.recorder.running(), self._polling(self.recorder.ledger):
                    yield self
            else:
                yield self
        finally:
            self._users -= 1
            if self._users == 0 and self._client is not None:
                client, self._client = self._client, None
                self._accounts.clear()
                with anyio.CancelScope(shield=True):
                    await client.aclose()

    @property
    def client(self) -> DessertClient:
        """The client (of single-key mode; with --auth, each call's is `for_key` of it)."""
        if self._client is None:
            raise RuntimeError("the Dessert client is used outside the server's lifespan")
        return self._client

    async def balance(self) -> BalanceReport:
        return self._balance_report(await self._read(BALANCE_PATH, self._balances, DessertClient.get_balance))

    async def usage(self, arguments: UsageArguments) -> UsageReport:
        account = self._ledger_account()
        usage = await self._read(USAGE_PATH, self._usages, DessertClient.get_usage)
        return await self._history.usage(usage, arguments, account)

    async def spend(self, arguments: SpendArguments) -> SpendResult:
        account = self._ledger_account()
        usage = await self._read(USAGE_PATH, self._usages, DessertClient.get_usage)
        return await self._history.spend(usage, arguments, account)

    def _ledger_account(self) -> AccountOf:
        """Whose history this call reads and writes, resolved inside the ledger (never a key): in single-key mode a
        keyed hash of the key (the ledger keeps its secret), in the remote modes the auth wing's account id."""
        if self.per_account:
            token = caller_token()
            account = remote_account(token.subject) if token is not None and token.subject is not None else ""

            async def remote(_ledger: Ledger) -> str:
                return account

            return remote

        async def by_key(ledger: Ledger) -> str:
            if self._key_account is None:
                key = self.settings.api_key
                if key is None:
                    raise RuntimeError("no Dessert key to file history under")
                self._key_account = await ledger.account_for_key(key.get())
            return self._key_account

        return by_key

    def _record(self, answer: BaseModel) -> None:
        """Hand a fresh answer from Dessert to the ledger, without waiting for it."""
        if self.recorder is None:
            return
        account, observed_at = self._ledger_account(), self._clock()
        if isinstance(answer, Usage):

            async def usage(ledger: Ledger) -> None:
                await ledger.record_usage(await account(ledger), answer.recent_transactions, observed_at)

            self.recorder.write("record_usage", usage)
        elif isinstance(answer, Balance):

            async def balance(ledger: Ledger) -> None:
                await ledger.record_balance(await account(ledger), answer, observed_at)

            self.recorder.write("record_balance", balance)

    async def _read(
        self, route: str, answers: SingleFlight[AnswerT], get: Callable[[DessertClient], Awaitable[AnswerT]]
    ) -> AnswerT:
        """The caller's answer: kept, from an identical request in flight, or from Dessert."""
        if not self.per_account:
            return await self._answer(route, self.client, answers, get, None)
        # Who is calling comes from the bearer token the SDK accepted for this request; never the operator's key.
        token = caller_token()
        if token is None or token.subject is None:
            raise DessertAPIError(
                "This request carries no caller credential; send Authorization: Bearer <token>.", code="not_configured"
            )
        account = self._account(token)
        account.users += 1
        try:
            answer = await self._answer(route, account.client, answers, get, account.limiter)
        except DessertAPIError as exc:
            if exc.code == "auth_invalid":
                token.dessert_said(accepted=False)
            raise
        finally:
            account.users -= 1
        token.dessert_said(accepted=True)
        return answer

    async def _answer(
        self,
        route: str,
        client: DessertClient,
        answers: SingleFlight[AnswerT],
        get: Callable[[DessertClient], Awaitable[AnswerT]],
        limiter: anyio.CapacityLimiter | None,
    ) -> AnswerT:
        async def ask() -> AnswerT:
            if limiter is None:
                answer = await get(client)
            else:
                if limiter.available_tokens == 0:
                    logger.debug(
                        "An account is at its limit of %d Dessert calls at once; this one waits", limiter.total_tokens
                    )
                async with limiter:
                    answer = await get(client)
            self._record(answer)
            if self.poller is not None and isinstance(answer, Usage):
                self.poller.answered(client.account, answer)  # a read: the poller's next one can wait
            return answer

        def shared() -> None:
            self.observer.shared(route)
            mark_current_span("dessert.upstream.shared")

        def kept() -> None:
            self.observer.cache_hit(route)
            mark_current_span("dessert.cache.hit")

        return await answers.run(client.account, ask, on_shared=shared, on_kept=kept)

    def _account(self, token: CallerToken) -> _Account:
        """The caller's state, made on first use and moved to the recent end of the LRU (a subject names one key).
        Beyond `max_accounts` the least recently used idle ones go (an account with a call in flight stays)."""
        subject = str(token.subject)
        account = self._accounts.get(subject)
        if account is None:
            limiter = anyio.CapacityLimiter(self.settings.account_concurrency)
            account = self._accounts[subject] = _Account(self.client.for_key(token.key, token.key_hint), limiter)
            excess = len(self._accounts) - self._max_accounts
            for idle in [s for s, a in self._accounts.items() if a.users == 0 and s != subject][: max(excess, 0)]:
                del self._accounts[idle]
        self._accounts.move_to_end(subject)
        account.last_used = time.monotonic()
        return account

    @asynccontextmanager
    async def _polling(self, ledger: Ledger) -> AsyncIterator[None]:
        """The ledger's poller, for as long as the block runs (none with DESSERT_LEDGER_POLL=off)."""
        if not self.settings.ledger_poll:
            yield
            return
        settings = self.settings
        self.poller = Poller(
            ledger,
            lambda: self.poll_targets(ledger),
            min_s=settings.ledger_poll_min_s,
            max_s=settings.ledger_poll_max_s,
            lease=self.poll_lease,
        )
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.poller.run, name="dessert-mcp ledger poller")
                yield
                tg.cancel_scope.cancel()
        finally:
            self.poller = None

    async def poll_targets(self, ledger: Ledger) -> list[PollTarget]:
        """What the ledger's poller reads: the one key's account; with --auth, the accounts whose callers used this
        server within DESSERT_LEDGER_POLL_RECENT_S and that were not revoked here, each with its caller's client."""
        if not self.per_account:
            if self._client is None or self.settings.api_key is None:
                return []
            by_key = self._ledger_account()
            return [PollTarget(self._client, lambda: by_key(ledger))]
        recent = time.monotonic() - self.settings.ledger_poll_recent_s
        used = {s: a for s, a in self._accounts.items() if a.last_used >= recent and s not in self._revoked}
        if used and self.linked_subjects is not None and (linked := await self.linked_subjects()) is not None:
            self._revoked.update(used.keys() - linked)
            used = {s: a for s, a in used.items() if s in linked}
        return [PollTarget(account.client, _named(remote_account(subject))) for subject, account in used.items()]

    def stop_polling(self, subject: str) -> None:
        """The caller `subject`'s account was revoked through this process: the poller does not read it again."""
        self._revoked.add(subject)


def _named(account: str) -> Callable[[], Awaitable[str]]:
    async def named() -> str:
        return account

    return named
