"""`dessert-mcp check`: the configuration and a live balance, for a person at a terminal."""

from __future__ import annotations

import sys

from dessert_mcp.client import DessertAPIError, DessertClient
from dessert_mcp.config import Settings


async def check(settings: Settings) -> int:
    """Print the base URL, the masked key and the live balance; 0 when the key works, else 1 with the reason."""
    out = sys.stdout
    out.write(f"base URL : {settings.base_url}\n")
    if settings.api_key is None:
        # A key that is set but unusable (a pasted placeholder, a stray space) is not "missing": say which it is.
        state = "set, but unusable" if settings.api_key_problem else "missing"
        reason = settings.api_key_problem or "DESSERT_API_KEY is not set."
        out.write(
            f"API key  : {state}\nFAILED: {reason}\n"
            "The key comes from the environment: `export DESSERT_API_KEY=...` (from your Dessert dashboard), then run\n"
            "`dessert-mcp check` again; `dessert-mcp check --sandbox` tries everything against the built-in sandbox.\n"
        )
        return 1
    out.write(f"API key  : {settings.api_key.masked()}\n")
    async with DessertClient.from_settings(settings) as client:
        try:
            balance = await client.get_balance()
        except DessertAPIError as exc:
            out.write(f"FAILED ({exc.code}): {exc.message}\n")
            return 1
    out.write(
        f"balance  : {balance.credits_balance} credits (${balance.credits_balance_usd_equivalent:.2f}); "
        f"auto-recharge {'on' if balance.auto_recharge_enabled else 'off'}\n"
        "OK: the key is accepted and the API answers.\n"
    )
    return 0
