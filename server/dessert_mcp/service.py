"""The tools' shared state: the Dessert client (one pool for every account), shared answers, per-account limits."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, TypeVar

import anyio
import httpx2
from pydantic import BaseModel

from dessert_mcp.auth.caller import CallerToken, caller_token
from dessert_mcp.cache import BuiltFrom
from dessert_mcp.client import DessertAPIError, DessertClient
from dessert_mcp.config import Settings
from dessert_mcp.models import BALANCE_PATH, USAGE_PATH, Balance, BalanceReport, Usage, UsageArguments, UsageReport
from dessert_mcp.singleflight import SingleFlight
from dessert_mcp.telemetry import NO_OBSERVER, Observer, mark_current_span

logger = logging.getLogger("dessert_mcp")

# With --auth: the accounts whose state (key and concurrency limiter) is kept: those of the most recent callers.
MAX_ACCOUNTS: Final = 1024

AnswerT = TypeVar("AnswerT", bound=BaseModel)


@dataclass(eq=False)
class _Account:
    """One caller's key (as the one client calling with it, its headers made once) and share of upstream concurrency."""

    client: DessertClient
    limiter: anyio.CapacityLimiter
    users: int = 0  # calls in flight: an account with any keeps its limiter


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
    ) -> None:
        self.settings = settings
        self.observer = observer
        self.per_account = per_account
        self._transport = transport
        self._max_accounts = max_accounts
        self._client: DessertClient | None = None
        self._accounts: OrderedDict[str, _Account] = OrderedDict()
        self._users = 0
        # Identical GETs of one account share one upstream request while it is in flight, and its answer for
        # DESSERT_CACHE_TTL_S seconds after.
        ttl = settings.cache_ttl_s
        self._balances: SingleFlight[Balance] = SingleFlight((DessertAPIError,), ttl_s=ttl)
        self._usages: SingleFlight[Usage] = SingleFlight((DessertAPIError,), ttl_s=ttl)
        # Calls that shared one balance answer share its report too.
        self._balance_report: BuiltFrom[Balance, BalanceReport] = BuiltFrom(BalanceReport.from_balance)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[DessertService]:
        """Open the client for the first user (the process, a session, a request) and close it after the last."""
        if self._users == 0:
            self._client = DessertClient.from_settings(self.settings, transport=self._transport, observer=self.observer)
        self._users += 1
        try:
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
        usage = await self._read(USAGE_PATH, self._usages, DessertClient.get_usage)
        return UsageReport.build(usage, limit=arguments.limit, types=arguments.types, since=arguments.since)

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
                return await get(client)
            if limiter.available_tokens == 0:
                logger.debug(
                    "An account is at its limit of %d Dessert calls at once; this one waits", limiter.total_tokens
                )
            async with limiter:
                return await get(client)

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
        return account
