"""The opaque account ids the ledger files history under.

The ledger never holds a key. In single-key mode (stdio, HTTP without --auth) an account is named by a keyed hash of
its Dessert key: HMAC-SHA256 under a random 256-bit secret that the ledger keeps in its own database, created on first
use. The same key gives the same id across restarts and across processes sharing the database; the key cannot be
recovered from it (a one-way function of a value with over 100 bits of randomness); and without that database's
secret, nobody can tell which key an id belongs to, nor link ids across installations.

In the remote modes the auth wing already names accounts: the ledger files them under that id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Final

# Bytes of the secret the key ids are keyed with.
SECRET_BYTES: Final = 32
_KEY_PREFIX: Final = "key:"
_REMOTE_PREFIX: Final = "acct:"
_DOMAIN: Final = b"dessert-mcp ledger account\x00"


def new_account_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def key_account(key: str, secret: bytes) -> str:
    """The account id of a Dessert key in single-key mode: `key:` and 32 base32 characters (160 bits)."""
    if len(secret) < SECRET_BYTES:
        raise ValueError("the ledger's account secret is too short")
    digest = hmac.new(secret, _DOMAIN + key.encode(), hashlib.sha256).digest()
    return _KEY_PREFIX + base64.b32encode(digest[:20]).decode().lower()


def remote_account(account_id: str) -> str:
    """The account id of an account the auth wing linked (the remote modes)."""
    return _REMOTE_PREFIX + account_id
