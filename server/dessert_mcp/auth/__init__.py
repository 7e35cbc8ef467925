"""The remote connector's auth wing: `--auth dessert-key` and `--auth oauth` (an OAuth 2.1 server of our own).

Integration (the core's HTTP serving):

    from dessert_mcp.auth import OAuthConfig, OAuthWiring, dessert_key_server_kwargs, caller_token

    # --auth dessert-key
    mcp = MCPServer(..., **dessert_key_server_kwargs())
    # --auth oauth
    wiring = OAuthWiring(OAuthConfig.from_env(public_url=...))
    mcp = MCPServer(..., **wiring.server_kwargs())
    app = mcp.streamable_http_app(...); wiring.install(app)   # then serve; await wiring.aclose() at exit

    # in a tool, per request:
    token = caller_token()    # CallerToken | None: .key is the caller's Dessert key (never the operator's)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names load with their module on first use: `--auth dessert-key` needs none of the `remote` extra's libraries.
if TYPE_CHECKING:
    from dessert_mcp.auth._crypto import EncryptionKeyError, KeyBox, generate_encryption_key
    from dessert_mcp.auth.accounts import (
        LinkedAccount,
        format_accounts,
        list_accounts,
        revoke_account,
        rotate_encryption_key,
        store_from_env,
    )
    from dessert_mcp.auth.caller import (
        CallerToken,
        DessertKeyVerifier,
        caller_token,
        dessert_key_server_kwargs,
    )
    from dessert_mcp.auth.config import SCOPE, AuthMode, OAuthConfig, refuse_operator_key
    from dessert_mcp.auth.provider import DessertOAuthProvider
    from dessert_mcp.auth.store import StorageUnavailable, Store, default_database_url
    from dessert_mcp.auth.wiring import OAuthWiring

_MODULES = {
    "AuthMode": "config",
    "CallerToken": "caller",
    "DessertKeyVerifier": "caller",
    "DessertOAuthProvider": "provider",
    "EncryptionKeyError": "_crypto",
    "KeyBox": "_crypto",
    "LinkedAccount": "accounts",
    "OAuthConfig": "config",
    "OAuthWiring": "wiring",
    "SCOPE": "config",
    "StorageUnavailable": "store",
    "Store": "store",
    "caller_token": "caller",
    "default_database_url": "store",
    "dessert_key_server_kwargs": "caller",
    "format_accounts": "accounts",
    "generate_encryption_key": "_crypto",
    "list_accounts": "accounts",
    "refuse_operator_key": "config",
    "revoke_account": "accounts",
    "rotate_encryption_key": "accounts",
    "store_from_env": "accounts",
}

__all__ = [
    "SCOPE",
    "AuthMode",
    "CallerToken",
    "DessertKeyVerifier",
    "DessertOAuthProvider",
    "EncryptionKeyError",
    "KeyBox",
    "LinkedAccount",
    "OAuthConfig",
    "OAuthWiring",
    "StorageUnavailable",
    "Store",
    "caller_token",
    "default_database_url",
    "dessert_key_server_kwargs",
    "format_accounts",
    "generate_encryption_key",
    "list_accounts",
    "refuse_operator_key",
    "revoke_account",
    "rotate_encryption_key",
    "store_from_env",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
