"""`dessert-mcp ledger status|export|forget`: what the ledger keeps, a copy of it, and deleting an account's part.

Results go to stdout (the export is the data itself, for a file or a pipe); messages to stderr. No key is ever
printed: accounts are the ledger's opaque ids.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from dessert_mcp.cli.closing import run_and_close

if TYPE_CHECKING:
    from dessert_mcp.ledger import Ledger, LedgerStatus

T = TypeVar("T")

HELP = """\
actions:
  status          where the ledger is, and per account: rows, the time they span, gaps and unverified seams
                  (where transactions may be missing), flagged rows and the last time usage was read
  export          every row (of one --account, or all) as CSV or JSON Lines on stdout, oldest first
  forget ACCOUNT  delete everything kept about one account (the id `status` shows)

The ledger's database is DESSERT_MCP_DATABASE_URL when set (one database with --auth oauth), else ledger.db in the
user data directory (~/.local/share/dessert-mcp/ on Linux). DESSERT_LEDGER_RETENTION_DAYS makes a running server
delete rows older than that many days.
"""
FORMATS = ("csv", "jsonl")


def _time(value: str) -> datetime:
    """An ISO 8601 date or date-time; without a UTC offset it is UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {value!r} (e.g. 2026-05-01)") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def add_ledger_parser(sub: Any) -> None:
    ledger = sub.add_parser(
        "ledger",
        help="show, export or forget the usage history the server keeps",
        description="The usage history dessert-mcp keeps per account, beyond the API's last 50 transactions.",
        epilog=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = ledger.add_subparsers(dest="action", required=True, metavar="{status,export,forget}")
    actions.add_parser("status", help="accounts, rows, span, gaps, last poll, and where the database is")
    export = actions.add_parser("export", help="write the rows to stdout as CSV or JSON Lines")
    export.add_argument("--format", choices=FORMATS, default="csv", help="csv (default, with a header) or jsonl")
    export.add_argument("--since", type=_time, help="first instant to include (ISO 8601; UTC unless an offset)")
    export.add_argument("--until", type=_time, help="first instant to leave out (ISO 8601; UTC unless an offset)")
    export.add_argument("--account", help="one account's rows only (the id `status` shows)")
    forget = actions.add_parser("forget", help="delete everything kept about one account")
    forget.add_argument("account", metavar="ACCOUNT", help="the account id `status` shows")


def _when(at: datetime | None) -> str:
    return "-" if at is None else f"{at.astimezone(UTC):%Y-%m-%d %H:%M}"


def format_status(status: LedgerStatus) -> str:
    """A plain table for the terminal, after the line saying where the ledger is."""
    lines = [f"Ledger: {status.location}"]
    if not status.accounts:
        return "\n".join([*lines, "No accounts recorded yet."])
    lines.append(
        f"{'ACCOUNT':40}  {'ROWS':>7}  {'OLDEST (UTC)':16}  {'NEWEST (UTC)':16}  {'GAPS':>4}  {'UNVERIFIED':>10}  "
        f"{'FLAGGED':>7}  LAST POLL (UTC)"
    )
    for a in status.accounts:
        lines.append(
            f"{a.account:40}  {a.rows:7}  {_when(a.oldest_at):16}  {_when(a.newest_at):16}  "
            f"{a.seams.get('gap', 0):4}  {a.seams.get('unverified', 0):10}  {a.flagged_rows:7}  "
            f"{_when(a.last_observed_at)}"
        )
    return "\n".join(lines)


async def write_export(
    ledger: Ledger,
    out: TextIO,
    *,
    format: str,
    account: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Write the rows to `out` as they are read (never all in memory); returns how many."""
    from dessert_mcp.ledger import EXPORT_FIELDS

    count = 0
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, lineterminator="\n") if format == "csv" else None
    if writer is not None:
        writer.writeheader()
    async for row in ledger.export(account, since, until):
        fields = row.as_dict()
        if writer is not None:
            writer.writerow(fields)
        else:
            out.write(json.dumps(fields, ensure_ascii=False) + "\n")
        count += 1
    return count


def run_ledger(args: argparse.Namespace) -> int:
    """Run one action; returns the exit status."""
    from dessert_mcp.config import ConfigError
    from dessert_mcp.http.options import require_remote_extra

    try:
        require_remote_extra("`dessert-mcp ledger`")
    except ConfigError as exc:
        sys.exit(f"dessert-mcp: error: {exc}")
    if args.action == "status":
        status = _with_ledger(lambda ledger: ledger.status())
        print(format_status(status))
        return 0
    if args.action == "export":
        if args.since is not None and args.until is not None and args.since >= args.until:
            sys.exit("dessert-mcp: error: --since must be before --until.")
        count = _with_ledger(
            lambda ledger: write_export(
                ledger, sys.stdout, format=args.format, account=args.account, since=args.since, until=args.until
            )
        )
        print(f"Exported {count} row(s).", file=sys.stderr)
        return 0
    deleted = _with_ledger(lambda ledger: ledger.forget(args.account))
    print(f"Deleted {deleted} row(s) of {args.account} and its balance snapshots.")
    return 0


def forget_linked_account(account_id: str) -> int:
    """Delete the ledger's rows of an account the auth wing linked (when `accounts revoke` unlinks it)."""
    from dessert_mcp.ledger import remote_account

    return _with_ledger(lambda ledger: ledger.forget(remote_account(account_id)))


def _with_ledger(action: Callable[[Ledger], Awaitable[T]]) -> T:
    """Run `action` on the ledger DESSERT_MCP_DATABASE_URL (or the default file) holds. Where that file does not
    exist yet, nothing was ever recorded: `action` runs on an empty ledger rather than create the file."""
    from dessert_mcp.auth.config import OAuthConfig
    from dessert_mcp.config import declared
    from dessert_mcp.ledger import InMemoryLedger
    from dessert_mcp.ledger.database import DatabaseLedger
    from dessert_mcp.ledger.tables import LEDGER_SCHEMA, default_ledger_url
    from dessert_mcp.storage import Database, StorageUnavailable

    url = declared(OAuthConfig)["database_url"].value(os.environ) or default_ledger_url()
    try:
        db = Database(url, schemas=[LEDGER_SCHEMA], label="ledger database")
    except ValueError as exc:
        sys.exit(f"dessert-mcp: error: {exc}")

    ledger: Ledger = DatabaseLedger(db)
    if db.path and not os.path.exists(db.path):
        print(f"No ledger at {db.path} yet: nothing has been recorded there.", file=sys.stderr)
        empty = InMemoryLedger()
        empty.location = db.path
        ledger = empty

    return run_and_close(ledger, action, (StorageUnavailable,))
