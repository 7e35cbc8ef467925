"""What the ledger can vouch for: the seams in an account's history and whether a range is complete. Pure."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from dessert_mcp.ledger.api import SEAM_KINDS, AccountStatus, RowFlag, Seam, SeamKind
from dessert_mcp.ledger.merge import DOUBT_FLAGS, chains
from dessert_mcp.models import Transaction

_DOUBT_ORDER: Final[tuple[SeamKind, ...]] = ("conflict", "ambiguous")


@dataclass(frozen=True, slots=True)
class StretchSummary:
    """A stretch's ends and facts (see `merge.Stretch`)."""

    id: int
    first: Transaction
    last: Transaction
    reaches_start: bool
    observed_through: datetime | None

    @property
    def covered_until(self) -> datetime:
        """Every transaction before this time is in this stretch or before it."""
        last = self.last.timestamp
        return max(last, self.observed_through) if self.observed_through is not None else last


@dataclass(frozen=True, slots=True)
class MarkedRow:
    """A flagged row: where it is, the time of the row before it in its stretch, and its flags."""

    stretch: int
    at: datetime
    prev_at: datetime | None
    flags: frozenset[RowFlag]


@dataclass(frozen=True, slots=True)
class Coverage:
    """Everything the completeness answers need about one account (small: stretches and flagged rows only)."""

    stretches: Sequence[StretchSummary]
    marked: Sequence[MarkedRow]
    as_of: datetime | None  # the account's last observation
    empty_before: datetime | None = None  # an empty answer read then: no transaction is older

    def end(self, until: datetime | None) -> datetime | None:
        return until if until is not None else self.as_of

    def vouched_end(self, until: datetime | None) -> datetime | None:
        """Where a range's completeness is judged to: `until`, but no later than the last observation. Nothing after
        it had happened when it was read (a tool call reads the API before it reads the ledger), so a range that runs
        on into the future is as complete as its part up to now, as one API answer covering it says."""
        end = self.end(until)
        return self.as_of if end is not None and self.as_of is not None and end > self.as_of else end

    def complete(self, since: datetime | None, until: datetime | None) -> bool:
        """Whether the ledger holds every transaction in [since, until) that had happened by the last observation."""
        end = self.vouched_end(until)
        if end is None:
            return False
        if since is not None and since >= end:
            return True
        if self.empty_before is not None and end <= self.empty_before:
            return True
        for row in self.marked:
            lo = row.prev_at if "chain_break" in row.flags and row.prev_at is not None else row.at
            if (row.flags & DOUBT_FLAGS or "chain_break" in row.flags) and _meets(lo, row.at, since, end):
                return False
        return any(
            (s.reaches_start or (since is not None and since > s.first.timestamp)) and end <= s.covered_until
            for s in self.stretches
        )

    def seams(self) -> list[Seam]:
        """Every seam of the account, oldest first."""
        found: list[Seam] = []
        ordered = sorted(self.stretches, key=lambda s: (s.first.timestamp, s.last.timestamp, s.id))
        if ordered and not ordered[0].reaches_start:
            found.append(Seam("gap", None, ordered[0].first.timestamp))
        current: StretchSummary | None = None
        for stretch in ordered:
            if current is not None and stretch.first.timestamp >= current.last.timestamp:
                kind: SeamKind = "unverified" if chains(current.last, stretch.first) else "gap"
                found.append(Seam(kind, current.last.timestamp, stretch.first.timestamp))
            if current is None or stretch.last.timestamp >= current.last.timestamp:
                current = stretch
        for row in self.marked:
            if "chain_break" in row.flags:
                found.append(Seam("gap", row.prev_at, row.at))
        by_stretch: dict[tuple[int, SeamKind], list[datetime]] = {}
        for row in self.marked:
            for kind in _DOUBT_ORDER:
                if kind in row.flags:
                    by_stretch.setdefault((row.stretch, kind), []).append(row.at)
        found.extend(Seam(kind, min(times), max(times)) for (_, kind), times in by_stretch.items())
        if current is not None and self.as_of is not None and current.covered_until < self.as_of:
            found.append(Seam("gap", current.last.timestamp, None))
        return sorted(found, key=lambda s: (s.after or datetime.min.replace(tzinfo=UTC), s.kind))

    def status(
        self, account: str, *, rows: int, oldest_at: datetime | None, newest_at: datetime | None, balance_snapshots: int
    ) -> AccountStatus:
        seams = self.seams()
        return AccountStatus(
            account=account,
            rows=rows,
            oldest_at=oldest_at,
            newest_at=newest_at,
            stretches=len(self.stretches),
            seams={kind: sum(1 for s in seams if s.kind == kind) for kind in SEAM_KINDS},
            flagged_rows=len(self.marked),
            balance_snapshots=balance_snapshots,
            last_observed_at=self.as_of,
        )

    def seams_over(self, since: datetime | None, until: datetime | None) -> tuple[Seam, ...]:
        """The seams that keep [since, until) from being complete (none when it is)."""
        if self.complete(since, until):
            return ()
        return tuple(s for s in self.seams() if _meets(s.after, s.before, since, until))


def _meets(lo: datetime | None, hi: datetime | None, since: datetime | None, until: datetime | None) -> bool:
    """Whether the closed interval [lo, hi] (None: unbounded) meets [since, until)."""
    return (hi is None or since is None or hi >= since) and (lo is None or until is None or lo < until)


def oldest(stretches: Iterable[StretchSummary]) -> datetime | None:
    return min((s.first.timestamp for s in stretches), default=None)


# -- page cursors ------------------------------------------------------------------------------------------------


def encode_cursor(at: datetime, skip: int, since: datetime | None, until: datetime | None) -> str:
    """Where the next page starts: `skip` rows of time `at` were already returned (rows are newest first)."""
    payload = {"a": at.isoformat(), "n": skip, "r": _range_tag(since, until)}
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, since: datetime | None, until: datetime | None) -> tuple[datetime, int]:
    """(time, rows of that time to skip); ValueError for a cursor not made for this range."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        at, skip, tag = datetime.fromisoformat(payload["a"]), int(payload["n"]), payload["r"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ValueError("this cursor was not made by this ledger") from None
    if tag != _range_tag(since, until) or skip < 0 or at.tzinfo is None:
        raise ValueError("this cursor belongs to another range")
    return at, skip


def _range_tag(since: datetime | None, until: datetime | None) -> str:
    return f"{since.isoformat() if since else ''}/{until.isoformat() if until else ''}"
