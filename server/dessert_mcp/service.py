"""The tools' shared state: the Dessert clients (one, or one per account with --auth), single-flight and the cache."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final, TypeVar

import anyio
import httpx2
from pydantic import BaseModel

from dessert_mcp.auth.caller import CallerToken, caller_token
from dessert_mcp.cache import BuiltFrom, TTLCache
from dessert_mcp.client import KEY_HINT, DessertAPIError, DessertClient
from dessert_mcp.config import Settings
from dessert_mcp.history import SpendArguments, SpendResult, UsageHistory
from dessert_mcp.ledger import Ledger, remote_account
from dessert_mcp.models import BALANCE_PATH, USAGE_PATH, Balance, BalanceReport, Usage, UsageArguments, UsageReport
from dessert_mcp.recorder import Recorder, open_ledger
from dessert_mcp.singleflight import SingleFlight
from dessert_mcp.telemetry import NO_OBSERVER, Observer, mark_current_span

logger = logging.getLogger("dessert_mcp")

# With --auth: Dessert clients (each a connection pool) kept for the most recent callers.
MAX_ACCOUNT_CLIENTS: Final = 1024

AnswerT = TypeVar("AnswerT", bound=BaseModel)
AccountOf = Callable[[Ledger], Awaitable[str]]


class _Shared(httpx2.AsyncBaseTransport):
    """A test's transport lent to every account's client: closing one client must not close it for the others."""

    def __init__(self, transport: httpx2.AsyncBaseTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        pass


@dataclass(eq=False)
class _Account:
    """One caller's Dessert client (its own connection pool) and its share of upstream concurrency."""

    client: DessertClient
    limiter: anyio.CapacityLimiter
    users: int = 0


class DessertService:
    """The tools' behaviour and their Dessert clients, shared for the life of the process.

    With one key (stdio, HTTP without --auth) there is one client, made from the settings. With `per_account`
    (--auth) each request's caller brings their own key (`caller_token()`); each account gets its own client, kept
    in a bounded LRU and closed when evicted, and at most `settings.account_concurrency` upstream calls at a
    time. Identical calls in flight together share one upstream request, and cached answers are reused, only
    within one account.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        observer: Observer = NO_OBSERVER,
        per_account: bool = False,
        max_accounts: int = MAX_ACCOUNT_CLIENTS,
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
        # Identical GETs in flight at the same time share one upstream request (same key, same answer).
        self._balance_flights: SingleFlight[Balance] = SingleFlight((DessertAPIError,))
        self._usage_flights: SingleFlight[Usage] = SingleFlight((DessertAPIError,))
        # Successful answers reused for a few seconds, per account, when DESSERT_CACHE_TTL_S asks for it.
        ttl = settings.cache_ttl_s
        self._balance_cache: TTLCache[Balance] | None = TTLCache(ttl) if ttl > 0 else None
        self._usage_cache: TTLCache[Usage] | None = TTLCache(ttl) if ttl > 0 else None
        # Calls that shared one balance answer share its report too.
        self._balance_report: BuiltFrom[Balance, BalanceReport] = BuiltFrom(BalanceReport.from_balance)
        # Every answer from Dessert kept in the ledger (unless DESSERT_LEDGER=off); `ledger` replaces the default.
        if settings.ledger:
            given = ledger
            self.recorder: Recorder | None = Recorder(open_ledger if given is None else lambda: given, observer)
        else:
            self.recorder = None
        # When an answer was read: what the ledger places it by (tests replay an account's past with their own).
        self._clock = clock
        self._history = UsageHistory(self.recorder, clock)
        self._key_account: str | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[DessertService]:
        """Open the HTTP client for the first user (the process, a session, a request) and close it after the last."""
        owner = self._users == 0
        if owner and not self.per_account:
            self._client = self._new_client(self.settings)
        self._users += 1
        try:
            if owner and self.recorder is not None:
                # The first user (the process's lifespan, in practice) drains the ledger's writes while it runs.
                async with self.recorder.running():
                    yield self
            else:
                yield self
        finally:
            self._users -= 1
            if self._users == 0:
                clients = [a.client for a in self._accounts.values()]
                if self._client is not None:
                    clients.append(self._client)
                self._client = None
                self._accounts.clear()
                with anyio.CancelScope(shield=True):
                    for client in clients:
                        await client.aclose()

    def _new_client(self, settings: Settings, key_hint: str = KEY_HINT) -> DessertClient:
        transport = _Shared(self._transport) if self.per_account and self._transport is not None else self._transport
        return DessertClient.from_settings(settings, transport=transport, observer=self.observer, key_hint=key_hint)

    @property
    def client(self) -> DessertClient:
        """The one client of single-key mode."""
        if self._client is None:
            raise RuntimeError("the Dessert client is used outside the server's lifespan")
        return self._client

    async def balance(self) -> BalanceReport:
        balance = await self._read(BALANCE_PATH, self._balance_flights, self._balance_cache, DessertClient.get_balance)
        return self._balance_report(balance)

    async def usage(self, arguments: UsageArguments) -> UsageReport:
        account = self._ledger_account()
        usage = await self._read(USAGE_PATH, self._usage_flights, self._usage_cache, DessertClient.get_usage)
        return await self._history.usage(usage, arguments, account)

    async def spend(self, arguments: SpendArguments) -> SpendResult:
        account = self._ledger_account()
        usage = await self._read(USAGE_PATH, self._usage_flights, self._usage_cache, DessertClient.get_usage)
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
        self,
        route: str,
        flights: SingleFlight[AnswerT],
        cache: TTLCache[AnswerT] | None,
        get: Callable[[DessertClient], Awaitable[AnswerT]],
    ) -> AnswerT:
        """The caller's answer: from the cache, from an identical request in flight, or from Dessert (then cached)."""
        if not self.per_account:
            client = self.client
            return await self._answer(route, client, flights, cache, lambda: get(client))
        account, token = self._account()
        account.users += 1
        try:
            if len(self._accounts) > self._max_accounts:
                await self._evict()

            async def limited() -> AnswerT:
                if account.limiter.available_tokens == 0:
                    logger.debug(
                        "An account is at its limit of %d Dessert calls at once; this one waits",
                        self.settings.account_concurrency,
                    )
                async with account.limiter:
                    return await get(account.client)

            try:
                answer = await self._answer(route, account.client, flights, cache, limited)
            except DessertAPIError as exc:
                if exc.code == "auth_invalid":
                    token.dessert_said(accepted=False)
                raise
            token.dessert_said(accepted=True)
            return answer
        finally:
            account.users -= 1

    async def _answer(
        self,
        route: str,
        client: DessertClient,
        flights: SingleFlight[AnswerT],
        cache: TTLCache[AnswerT] | None,
        call: Callable[[], Awaitable[AnswerT]],
    ) -> AnswerT:
        key = (client.account, route)
        if cache is not None and (cached := cache.get(key)) is not None:
            self.observer.cache_hit(route)
            mark_current_span("dessert.cache.hit")
            return cached

        async def ask() -> AnswerT:
            answer = await call()
            if cache is not None:
                cache.put(key, answer)
            self._record(answer)
            return answer

        def shared() -> None:
            self.observer.shared(route)
            mark_current_span("dessert.upstream.shared")

        return await flights.run(f"{client.account} {route}", ask, on_shared=shared)

    def _account(self) -> tuple[_Account, CallerToken]:
        """The caller's client, made on first use and moved to the recent end of the LRU (see `_evict`).

        Who is calling comes from the bearer token the SDK accepted for this request; never the operator's key.
        """
        token = caller_token()
        if token is None or token.subject is None:
            raise DessertAPIError(
                "This request carries no caller credential; send Authorization: Bearer <token>.", code="not_configured"
            )
        if self._users == 0:
            raise RuntimeError("the Dessert clients are used outside the server's lifespan")
        account = self._accounts.get(token.subject)
        if account is None:
            client = self._new_client(replace(self.settings, api_key=token.key, api_key_problem=None), token.key_hint)
            account = self._accounts[token.subject] = _Account(
                client, anyio.CapacityLimiter(self.settings.account_concurrency)
            )
        self._accounts.move_to_end(token.subject)
        return account, token

    async def _evict(self) -> None:
        """Close the least recently used idle clients beyond the bound. An account with a call in flight keeps its
        client (and its limiter); the bound holds again once it is idle."""
        excess = len(self._accounts) - self._max_accounts
        if excess <= 0:  # also what keeps idle[:excess] below from taking all but the last few
            return
        idle = [identity for identity, a in self._accounts.items() if a.users == 0]
        for identity in idle[:excess]:
            with anyio.CancelScope(shield=True):
                await self._accounts.pop(identity).client.aclose()
