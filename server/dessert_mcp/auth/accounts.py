"""`dessert-mcp accounts list|revoke|rotate-key`: the operator's view of linked accounts, always masked.

Plain async functions; the CLI wires them (`anyio.run(list_accounts, store)`), tests call them directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from dessert_mcp.auth._crypto import EncryptionKeyError, KeyBox
from dessert_mcp.auth.config import OAuthConfig
from dessert_mcp.auth.store import Store, default_database_url
from dessert_mcp.config import declared


@dataclass(frozen=True, slots=True)
class LinkedAccount:
    id: str
    key_masked: str
    key_fingerprint: str
    linked_at: datetime
    revoked: bool
    active_grants: int


def store_from_env(environ: Mapping[str, str] | None = None) -> Store:
    database_url = declared(OAuthConfig)["database_url"].value(os.environ if environ is None else environ)
    return Store(database_url or default_database_url())


async def list_accounts(store: Store) -> list[LinkedAccount]:
    return [
        LinkedAccount(
            id=row.id,
            key_masked=row.key_masked,
            key_fingerprint=row.key_fingerprint,
            linked_at=datetime.fromtimestamp(row.linked_at, UTC),
            revoked=row.revoked_at is not None,
            active_grants=row.active_grants,
        )
        for row in await store.list_accounts()
    ]


def format_accounts(accounts: list[LinkedAccount]) -> str:
    """A plain table for the terminal: id, masked key, fingerprint, when linked, live grants, state."""
    if not accounts:
        return "No linked accounts."
    lines = [f"{'ACCOUNT':36}  {'KEY':12}  {'FINGERPRINT':13}  {'LINKED (UTC)':16}  GRANTS  STATE"]
    for a in accounts:
        lines.append(
            f"{a.id:36}  {a.key_masked:12}  {a.key_fingerprint:13}  {a.linked_at:%Y-%m-%d %H:%M}  "
            f"{a.active_grants:6}  {'revoked' if a.revoked else 'active'}"
        )
    return "\n".join(lines)


async def revoke_account(store: Store, account_id: str) -> bool:
    """Unlink the account: its tokens stop working on every replica within their DESSERT_MCP_TOKEN_CACHE_S.

    False if unknown.
    """
    return await store.revoke_account(account_id)


async def rotate_encryption_key(store: Store, current: str, old: str) -> int:
    """Re-encrypt every linked key under `current` (run with both keys set, then drop the old one).

    Returns how many records were rewritten.
    """
    box = KeyBox(current, old)

    def reseal(account_id: str, sealed: str) -> str | None:
        if box.is_current(sealed):
            return None
        try:
            plain = box.open(sealed, aad="account:" + account_id)
        except EncryptionKeyError:
            return None
        return box.seal(plain, aad="account:" + account_id)

    return await store.reseal_accounts(reseal)
