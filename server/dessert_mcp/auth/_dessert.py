"""The one place the auth wing calls Dessert: checking a pasted key on the sign-in page."""

from __future__ import annotations

from dessert_mcp.client import DessertAPIError, DessertClient
from dessert_mcp.config import Secret
from dessert_mcp.models import Balance

__all__ = ["DessertAPIError", "check_key"]


async def check_key(base_url: str, key: Secret, *, timeout_s: float = 10.0) -> Balance:
    """GET /v1/balance with `key`: proves the key works and shows the person which account it is.

    Raises `DessertAPIError` (code `auth_invalid` for a key Dessert refused); its message is redacted.
    """
    async with DessertClient(base_url, api_key=key, timeout_s=timeout_s, max_attempts=2) as client:
        return await client.get_balance()
