"""`dessert-mcp accounts list|revoke ID|new-key|rotate-key`: the operator's side of `--auth oauth`.

It reads the same DESSERT_MCP_* variables as the server. Linked Dessert keys are only ever shown masked; the one
secret it prints is a new DESSERT_MCP_ENCRYPTION_KEY, on stdout, when asked for one.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from dessert_mcp.auth.config import DEFAULT_TOKEN_CACHE_S
from dessert_mcp.cli.closing import run_and_close
from dessert_mcp.config import ConfigError
from dessert_mcp.http.options import require_remote_extra

if TYPE_CHECKING:
    from dessert_mcp.auth import Store

T = TypeVar("T")

HELP = """\
actions:
  list          linked accounts: id, masked key, fingerprint, when linked, live grants, state
  revoke ID     unlink an account: its tokens stop working on every replica within DESSERT_MCP_TOKEN_CACHE_S,
                and its usage history is deleted from the ledger
  new-key       print a fresh value for DESSERT_MCP_ENCRYPTION_KEY (32 random bytes, base64url)
  rotate-key    re-encrypt every linked key under DESSERT_MCP_ENCRYPTION_KEY; set the previous key as
                DESSERT_MCP_ENCRYPTION_KEY_OLD first (servers accept both meanwhile), then drop it

The database is DESSERT_MCP_DATABASE_URL (default: the SQLite file the server uses).
"""


def add_accounts_parser(sub: Any) -> None:
    accounts = sub.add_parser(
        "accounts",
        help="list, revoke or re-encrypt the accounts linked through --auth oauth",
        description="The accounts people linked through --auth oauth (keys are always masked).",
        epilog=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = accounts.add_subparsers(dest="action", required=True, metavar="{list,revoke,new-key,rotate-key}")
    actions.add_parser("list", help="list linked accounts")
    revoke = actions.add_parser("revoke", help="unlink an account and end its sessions")
    revoke.add_argument("account_id", metavar="ID", help="the account id `accounts list` shows")
    actions.add_parser("new-key", help="print a fresh DESSERT_MCP_ENCRYPTION_KEY")
    actions.add_parser("rotate-key", help="re-encrypt linked keys under DESSERT_MCP_ENCRYPTION_KEY")


def run_accounts(args: argparse.Namespace) -> int:
    """Run one action; returns the exit status. Messages for the operator go to stderr, results to stdout."""
    try:
        require_remote_extra("`dessert-mcp accounts`")
    except ConfigError as exc:
        sys.exit(f"dessert-mcp: error: {exc}")
    from dessert_mcp.auth import format_accounts, generate_encryption_key, list_accounts, revoke_account

    if args.action == "new-key":
        print(generate_encryption_key())
        print("Set it as DESSERT_MCP_ENCRYPTION_KEY on every replica; keep a copy with your backups.", file=sys.stderr)
        return 0
    if args.action == "list":
        print(format_accounts(_with_store(list_accounts)))
        return 0
    if args.action == "revoke":
        if not _with_store(lambda store: revoke_account(store, args.account_id)):
            print(f"No linked account {args.account_id!r} (or it was revoked already).", file=sys.stderr)
            return 1
        print(
            f"Revoked {args.account_id}: its tokens stop working on every replica within their "
            f"DESSERT_MCP_TOKEN_CACHE_S ({DEFAULT_TOKEN_CACHE_S:g} s by default)."
        )
        from dessert_mcp.cli.ledger import forget_linked_account

        print(f"Deleted its usage history from the ledger ({forget_linked_account(args.account_id)} row(s)).")
        return 0
    return _rotate()


def _rotate() -> int:
    from dessert_mcp.auth import rotate_encryption_key

    current = os.environ.get("DESSERT_MCP_ENCRYPTION_KEY", "").strip()
    old = os.environ.get("DESSERT_MCP_ENCRYPTION_KEY_OLD", "").strip()
    if not (current and old):
        sys.exit(
            "dessert-mcp: error: rotate-key needs the new key in DESSERT_MCP_ENCRYPTION_KEY and the previous one in "
            "DESSERT_MCP_ENCRYPTION_KEY_OLD."
        )
    count = _with_store(lambda store: rotate_encryption_key(store, current, old))
    print(f"Re-encrypted {count} linked key(s); every record now opens with DESSERT_MCP_ENCRYPTION_KEY alone.")
    return 0


def _with_store(action: Callable[[Store], Awaitable[T]]) -> T:
    from dessert_mcp.auth import EncryptionKeyError, StorageUnavailable, store_from_env

    return run_and_close(store_from_env(os.environ), action, (StorageUnavailable, EncryptionKeyError))
