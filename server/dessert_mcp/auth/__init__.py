"""The remote connector's auth wing: `--auth dessert-key` and `--auth oauth` (an OAuth 2.1 server of our own).

Integration (the core's HTTP serving):

    from dessert_mcp.auth import OAuthConfig, OAuthWiring, dessert_key_server_kwargs, caller_key

    # --auth dessert-key
    mcp = MCPServer(..., **dessert_key_server_kwargs())
    # --auth oauth
    wiring = OAuthWiring(OAuthConfig.from_env(public_url=...))
    mcp = MCPServer(..., **wiring.server_kwargs())
    app = mcp.streamable_http_app(...); wiring.install(app)   # then serve; await wiring.aclose() at exit

    # in a tool, per request:
    key = caller_key()        # Secret | None: the caller's Dessert key (never the operator's)
"""

from dessert_mcp.auth._crypto import EncryptionKeyError, KeyBox, generate_encryption_key
from dessert_mcp.auth.accounts import (
    LinkedAccount,
    format_accounts,
    list_accounts,
    revoke_account,
    rotate_encryption_key,
    store_from_env,
)
from dessert_mcp.auth.caller import CallerToken, DessertKeyVerifier, caller_identity, caller_key
from dessert_mcp.auth.config import SCOPE, AuthMode, OAuthConfig, refuse_operator_key
from dessert_mcp.auth.provider import DessertOAuthProvider
from dessert_mcp.auth.store import StorageUnavailable, Store, default_database_url
from dessert_mcp.auth.wiring import OAuthWiring, dessert_key_server_kwargs

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
    "caller_identity",
    "caller_key",
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
