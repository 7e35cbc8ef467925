"""Access tokens this process verified a moment ago, so that a burst of MCP requests costs one database read.

Every MCP request carries an access token. Without this cache each one is a database round trip and an
AES-GCM open of the linked key, about as much as the rest of the call. With it, a token is read from the
database at most once per `ttl_s` per process (`DESSERT_MCP_TOKEN_CACHE_S`, default 2 s; each entry a random
three quarters to all of it, so that tokens first seen together are not all read again together), and never past
its own expiry.

The bound it costs: a revocation made through *another* process (a second replica, `dessert-mcp accounts
revoke`) is honoured here within `ttl_s` seconds. A revocation through this process (its /revoke, a replayed
refresh token or code) evicts at once. Entries are keyed by the token's SHA-256 (never the token itself) and
hold only what the check needs: the grant, the account, the client, the scopes, the resource, the token's
expiry, and the linked Dessert key, which this process already holds in that account's Dessert client.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from dessert_mcp.config import Secret

# Tokens in use at once on one process; beyond it the least recently used make room.
DEFAULT_MAX_TOKENS: Final = 10_000
# The share of `ttl_s` by which an entry's life is shortened at random (never lengthened: ttl_s stays the bound).
EXPIRY_SPREAD: Final = 0.25


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What one database check established about an access token (not the token)."""

    grant_id: str
    account_id: str
    # Tells tokens apart in what the SDK keeps per request (AccessToken.token) without being the token.
    fingerprint: str
    client_id: str
    scopes: tuple[str, ...]
    resource: str
    expires_at: float
    key: Secret


class TokenCache:
    """Verified tokens by the SHA-256 of the token, for `ttl_s` on the store's clock and never past their expiry.

    Reads that raced a revocation are not stored: `put` takes the `generation()` seen before the database read
    and refuses the entry if anything was evicted since.
    """

    def __init__(self, ttl_s: float, *, clock: Callable[[], float], max_entries: int = DEFAULT_MAX_TOKENS) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, VerifiedToken]] = OrderedDict()
        self._generation = 0

    def __repr__(self) -> str:
        return f"TokenCache(ttl_s={self.ttl_s}, entries={len(self._entries)})"

    def __len__(self) -> int:
        return len(self._entries)

    def generation(self) -> int:
        return self._generation

    def get(self, digest: str) -> VerifiedToken | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        until, token = entry
        if self._clock() >= until:
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return token

    def put(self, digest: str, token: VerifiedToken, *, generation: int) -> None:
        if self.ttl_s <= 0 or generation != self._generation:
            return
        # Each entry lives between (1 - EXPIRY_SPREAD) * ttl_s and ttl_s: tokens first seen together (agents
        # starting at once, a process starting under load) would otherwise all be read again in the same instant.
        lifetime = self.ttl_s * (1 - EXPIRY_SPREAD * random.random())  # a spread, not a secret
        until = min(self._clock() + lifetime, token.expires_at)
        self._entries[digest] = (until, token)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def evict(self, *, grant_id: str | None = None, account_id: str | None = None) -> None:
        """Forget every token of the grant (a token family) or of the account; both None forgets everything."""
        self._generation += 1
        if grant_id is None and account_id is None:
            self._entries.clear()
            return
        gone = [
            digest
            for digest, (_, token) in self._entries.items()
            if token.grant_id == grant_id or token.account_id == account_id
        ]
        for digest in gone:
            del self._entries[digest]
