"""Context for hosts that attach it: the balance and usage as read-only resources (and, with kept history, spend per
day over the last days), and two prompts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Final, Protocol

from mcp import MCPError
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.types import INVALID_PARAMS
from pydantic import BaseModel, Field

from dessert_mcp.client import DessertAPIError
from dessert_mcp.events import ALERTS_URI, BALANCE_URI, USAGE_URI
from dessert_mcp.history import SpendArguments, SpendResult
from dessert_mcp.models import BalanceReport, UsageArguments, UsageReport

if TYPE_CHECKING:  # the alerts wing loads with the first alerts read
    from dessert_mcp.alerts import Alert

# The spend resource's ranges: the dashboard's, and no longer than get_spend lists days for (100 periods).
SPEND_DAYS: Final = (7, 30, 90)


class Reads(Protocol):
    """What the resources read through: the tools' service (service.DessertService)."""

    async def balance(self) -> BalanceReport: ...

    async def usage(self, arguments: UsageArguments) -> UsageReport: ...

    async def spend(self, arguments: SpendArguments) -> SpendResult: ...

    async def alerts(self) -> list[Alert]: ...

    def now(self) -> datetime: ...


def add_resources(server: MCPServer[Any], service: Reads, names: Mapping[str, str], *, history: bool = False) -> None:
    """`dessert://balance` and `dessert://usage`: the tools' results (without arguments) as JSON; with kept
    `history`, `dessert://spend/{days}` too: get_spend per day over the last 7, 30 or 90 days.

    `names` maps each documented tool name to the one clients are listed (listing.shown_names).
    """

    @server.resource(
        BALANCE_URI,
        name="balance",
        title="Dessert credit balance",
        description=f"The same JSON as {names['dessert.get_balance']}: balance, auto-recharge, pricing, ads "
        "affordable.",
        mime_type="application/json",
    )
    async def balance() -> str:
        try:
            return (await service.balance()).model_dump_json()
        except DessertAPIError as exc:
            raise ResourceError(f"{exc.message} ({exc.code})") from None

    @server.resource(
        USAGE_URI,
        name="usage",
        title="Dessert credit usage",
        description=f"The same JSON as {names['dessert.get_usage']} without filters: the last 50 transactions, "
        "totals, forecast.",
        mime_type="application/json",
    )
    async def usage() -> str:
        try:
            return (await service.usage(UsageArguments())).model_dump_json()
        except DessertAPIError as exc:
            raise ResourceError(f"{exc.message} ({exc.code})") from None

    if not history:
        return

    @server.resource(
        "dessert://spend/{days}",
        name="spend",
        title="Dessert credit spend per day",
        description=f"The same JSON as {names['dessert.get_spend']} per day over the last {{days}} days "
        f"({', '.join(map(str, SPEND_DAYS))}), from the history this server keeps: totals by type and ad format, "
        "and where the history has gaps.",
        mime_type="application/json",
    )
    async def spend(days: str) -> str:
        if not days.isdigit() or int(days) not in SPEND_DAYS:
            # The caller's mistake: a protocol error the host shows, with the reason (the SDK hides others).
            choices = ", ".join(map(str, SPEND_DAYS))
            raise MCPError(code=INVALID_PARAMS, message=f"days must be one of {choices}; got {days!r}.")
        until = service.now()
        arguments = SpendArguments(since=until - timedelta(days=int(days)), until=until, period="day")
        try:
            return (await service.spend(arguments)).model_dump_json()
        except DessertAPIError as exc:
            raise ResourceError(f"{exc.message} ({exc.code})") from None


class AlertItem(BaseModel):
    """One alert, as `dessert://alerts` lists it."""

    id: str
    rule: str
    account: str
    value: float
    threshold: float
    fired_at: datetime
    cleared_at: datetime | None
    active: bool


class AlertList(BaseModel):
    alerts: list[AlertItem]


def add_alerts_resource(server: MCPServer[Any], service: Reads) -> None:
    """`dessert://alerts`: the caller's active and recent alerts, newest first (with the ledger on)."""

    @server.resource(
        ALERTS_URI,
        name="alerts",
        title="Dessert alerts",
        description="Active and recent alerts on the account (low balance, short runway, spend spike, auto-recharge, "
        "ledger gap), newest first; subscribe for changes.",
        mime_type="application/json",
    )
    async def alerts() -> str:
        now = service.now()  # as get_balance judges which are active
        items = [AlertItem(**asdict(a), active=a.active(now)) for a in await service.alerts()]
        return AlertList(alerts=items).model_dump_json()


def add_prompts(server: MCPServer[Any], names: Mapping[str, str]) -> None:
    """Two prompts that name the tools as clients are listed them (`names`, as for add_resources)."""
    usage, balance = names["dessert.get_usage"], names["dessert.get_balance"]

    @server.prompt(
        name="spend_report",
        title="Dessert spend report",
        description="A short report on recent Dessert credit spend, from the usage feed.",
    )
    def spend_report() -> str:
        return (
            f"Call {usage} (no arguments) and write a short report on my Dessert credit spend: credits spent "
            "and added, USD purchased, spend per day and per transaction type, the largest deductions, refunds, and "
            "the forecast (burn rate and days until the balance runs out, or why there is no estimate). Say which "
            "period the transactions cover and that the API returns only the last 50."
        )

    @server.prompt(
        name="can_i_afford",
        title="Can I afford these ads?",
        description="Whether the current Dessert balance pays for a number of static and full ads.",
    )
    def can_i_afford(
        static_ads: Annotated[str, Field(description="How many static ads (a whole number, 0 or more).")] = "0",
        full_ads: Annotated[str, Field(description="How many full ads (a whole number, 0 or more).")] = "0",
    ) -> str:
        for name, value in (("static_ads", static_ads), ("full_ads", full_ads)):
            if not value.strip().isdigit():
                # The caller's mistake: a protocol error the host shows, with the reason (the SDK hides others).
                raise MCPError(code=INVALID_PARAMS, message=f"{name} must be a whole number, 0 or more; got {value!r}.")
        static, full = int(static_ads), int(full_ads)
        return (
            f"Call {balance} and tell me whether my Dessert balance pays for {static} static and {full} full "
            "ads: use pricing.static_ad_credits and pricing.full_ad_credits for the cost, compare it with "
            "credits_balance, and say how many credits would be left (or missing), and whether auto-recharge would "
            "fire on the way (auto_recharge_enabled, auto_recharge_threshold)."
        )
