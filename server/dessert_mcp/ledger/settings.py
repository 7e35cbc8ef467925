"""The ledger's settings, declared once (dessert_mcp.config): read by the server and listed by --help and the README.

A light module (no database libraries), so the command line can list them without loading the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from dessert_mcp.config import from_environ, number, setting

MAX_RETENTION_DAYS: Final = 36500


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    """How the ledger keeps history; build it with `LedgerSettings.from_env`."""

    retention_days: int = setting(
        "DESSERT_LEDGER_RETENTION_DAYS",
        number(0, MAX_RETENTION_DAYS, whole=True),
        "Days of usage history the ledger keeps (0: all of it). A running server deletes older rows and balance "
        "snapshots once an hour; replicas sharing a database take turns. `dessert-mcp ledger forget` deletes one "
        "account's history at once.",
        0,
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LedgerSettings:
        return cls(**from_environ(cls, environ, {}))
