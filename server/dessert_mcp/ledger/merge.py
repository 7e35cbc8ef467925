"""Placing one usage answer (a *window*) against stored history. Pure: no I/O, no clock.

Stored history is a set of *stretches*: runs of rows known to be continuous, each row at an integer position (one
apart within a stretch). `plan_merge` decides where a window goes and returns a `MergePlan` that a backend applies.

Why a shared row proves a placement, and when it does not. Transactions carry no id, so a window's rows and a
stretch's rows can only be matched by value. Rows are in time order (the API's documented order), so two identical
rows can only be separated by rows of the same timestamp. A window W matches a stretch S at a *base* when every row
they would share is equal. If exactly one base matches, the only other truth possible is that W and S do not overlap
at all, with the matched rows repeated by chance (identical rows around a run summing to zero). That needs one to
lie wholly before the other: X before Y needs X's newest row no later than Y's oldest, Y not to start the account's
history, and X's answer not to have been read after Y's oldest row (a window read at time T holds every transaction
from before T). If neither order is possible, the match is proven and W joins S. Otherwise the match is *ambiguous*:
W is kept apart and the rows it may share with S are flagged. No match and no possible order is a *conflict*.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from dessert_mcp.ledger.api import Placement, RowFlag
from dessert_mcp.models import USAGE_FEED_SIZE, Transaction

RowKey = tuple[str, int, int, float | None, str, str]

# Flags that say a row may not belong where it is: the range it lies in cannot be called complete.
DOUBT_FLAGS: Final[frozenset[RowFlag]] = frozenset({"ambiguous", "conflict"})


def row_key(tx: Transaction) -> RowKey:
    """A transaction's identity: the whole row."""
    return (tx.type, tx.credits_delta, tx.balance_after, tx.usd_amount, tx.description, tx.at)


def chains(older: Transaction, newer: Transaction) -> bool:
    """`newer` follows `older` directly as far as the balance can tell."""
    return older.balance_after + newer.credits_delta == newer.balance_after


@dataclass(frozen=True, slots=True)
class StoredRow:
    pos: int
    transaction: Transaction
    flags: frozenset[RowFlag] = frozenset()


@dataclass(frozen=True, slots=True)
class Stretch:
    """A stored stretch as the merge sees it.

    `rows` are its rows whose time lies within the window's time span, at consecutive positions, oldest first (empty
    for a stretch wholly outside it). `observed_through`: every transaction older than it is in this stretch or
    before it (the read time of the answer that ended at its newest row).
    """

    id: int
    first_pos: int
    last_pos: int
    first: Transaction
    last: Transaction
    reaches_start: bool = False
    observed_through: datetime | None = None
    rows: tuple[StoredRow, ...] = ()


@dataclass(frozen=True, slots=True)
class Join:
    """Fold stretch `stretch` into the target: its position p becomes p + shift. Its rows in `drop` (inclusive
    ranges of its own positions) are already in the target: drop them, adding their flags to the target's rows."""

    stretch: int
    shift: int
    drop: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class MergePlan:
    placement: Placement
    target: int | None  # the stretch the window joins; None: the window becomes a new stretch (`new_rows` as given)
    joins: tuple[Join, ...] = ()
    new_rows: tuple[StoredRow, ...] = ()  # in the target's positions, oldest first
    flag_updates: tuple[tuple[int, frozenset[RowFlag]], ...] = ()  # flags to add to rows the target already holds
    reaches_start: bool = False  # of the resulting stretch
    observed_through: datetime | None = None  # of the resulting stretch
    first_pos: int = 0  # the resulting stretch's positions
    last_pos: int = -1
    flagged: int = 0  # rows of the window stored or updated with a flag
    added: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "added", len(self.new_rows))


@dataclass(frozen=True, slots=True)
class _Side:
    """One side of a possible order, reduced to what the order argument needs."""

    first: Transaction
    last: Transaction
    reaches_start: bool
    observed_through: datetime | None


def _may_precede(x: _Side, y: _Side) -> bool:
    """Could every transaction of x come before every transaction of y?"""
    if y.reaches_start:
        return False
    y_first = y.first.timestamp
    if x.last.timestamp > y_first:
        return False
    return x.observed_through is None or x.observed_through <= y_first


def _own_flags(rows: Sequence[Transaction]) -> list[set[RowFlag]]:
    """Flags from within one answer (oldest first): chain and order breaks, on the newer row of the pair."""
    flags: list[set[RowFlag]] = [set() for _ in rows]
    for i in range(1, len(rows)):
        if not chains(rows[i - 1], rows[i]):
            flags[i].add("chain_break")
        if rows[i].timestamp < rows[i - 1].timestamp:
            flags[i].add("out_of_order")
    return flags


def _matching_bases(keys: Sequence[RowKey], window: Sequence[Transaction], me: _Side, stretch: Stretch) -> list[int]:
    """Every base b (window row i at position b + i) where the window and the stretch share at least one row, agree
    on every row they share, and break none of the facts either side knows (where history starts; that nothing
    older than a read time came after the answer read then)."""
    if not stretch.rows:
        return []
    n = len(keys)
    lo_slice = stretch.rows[0].pos
    stored = [row_key(r.transaction) for r in stretch.rows]
    hi_slice = lo_slice + len(stored) - 1
    bases = []
    for base in range(lo_slice - n + 1, hi_slice + 1):
        lo = max(base, stretch.first_pos)
        hi = min(base + n - 1, stretch.last_pos)
        # A shared position outside the rows given would pair a window row with a stored row of another time.
        if lo > hi or lo < lo_slice or hi > hi_slice:
            continue
        if (me.reaches_start and base > stretch.first_pos) or (stretch.reaches_start and base < stretch.first_pos):
            continue
        if not all(keys[p - base] == stored[p - lo_slice] for p in range(lo, hi + 1)):
            continue
        if _after_read(window, base, me, stretch, lo_slice):
            continue
        bases.append(base)
    return bases


def _after_read(window: Sequence[Transaction], base: int, me: _Side, stretch: Stretch, lo_slice: int) -> bool:
    """Whether placing the window at `base` puts a row older than one side's read time after that side's newest row."""
    n = len(window)
    seen = stretch.observed_through
    if seen is not None and base + n - 1 > stretch.last_pos and window[stretch.last_pos - base + 1].timestamp < seen:
        return True
    follower = base + n  # the stored row right after the window's newest, if any
    if me.observed_through is None or follower > stretch.last_pos:
        return False
    if lo_slice <= follower < lo_slice + len(stretch.rows):
        return stretch.rows[follower - lo_slice].transaction.timestamp < me.observed_through
    return follower == stretch.last_pos and stretch.last.timestamp < me.observed_through


def plan_merge(
    window: Sequence[Transaction],
    observed_at: datetime,
    stretches: Sequence[Stretch],
    *,
    feed_size: int = USAGE_FEED_SIZE,
) -> MergePlan:
    """Place `window` (the API's answer, newest first, read at `observed_at`) against `stretches`: every stored
    stretch whose time span meets the window's, and the nearest one on either side of it.

    `observed_at` must not be later than the moment the answer was made, on Dessert's clock.
    """
    rows = list(reversed(window))
    n = len(rows)
    if n == 0:
        return MergePlan(placement="empty", target=None)
    keys = [row_key(tx) for tx in rows]
    flags = _own_flags(rows)
    reaches_start = n < feed_size
    me = _Side(rows[0], rows[-1], reaches_start, observed_at)

    links: list[tuple[Stretch, int]] = []
    older: list[Stretch] = []
    newer: list[Stretch] = []
    ambiguous = conflict = False
    for stretch in stretches:
        other = _Side(stretch.first, stretch.last, stretch.reaches_start, stretch.observed_through)
        before, after = _may_precede(me, other), _may_precede(other, me)
        bases = _matching_bases(keys, rows, me, stretch)
        if len(bases) == 1 and not before and not after:
            links.append((stretch, bases[0]))
        elif bases:
            ambiguous = True
            for base in bases:
                for i in range(max(0, stretch.first_pos - base), min(n, stretch.last_pos - base + 1)):
                    flags[i].add("ambiguous")
        elif before and not after:
            newer.append(stretch)
        elif after and not before:
            older.append(stretch)
        elif not before and not after:
            conflict = True
            lo, hi = stretch.first.timestamp, stretch.last.timestamp
            for i, tx in enumerate(rows):
                if lo <= tx.timestamp <= hi:
                    flags[i].add("conflict")
        # else: both orders possible (everything at one instant, no row in common): neither neighbour is known.

    if not links:
        new_rows = tuple(StoredRow(i, tx, frozenset(f)) for i, (tx, f) in enumerate(zip(rows, flags, strict=True)))
        return MergePlan(
            placement=_apart(rows, older, newer, stretches, ambiguous=ambiguous, conflict=conflict),
            target=None,
            new_rows=new_rows,
            reaches_start=reaches_start,
            observed_through=observed_at,
            first_pos=0,
            last_pos=n - 1,
            flagged=sum(1 for f in flags if f),
        )
    return _join(rows, flags, links, observed_at, reaches_start)


def _apart(
    rows: Sequence[Transaction],
    older: Sequence[Stretch],
    newer: Sequence[Stretch],
    stretches: Sequence[Stretch],
    *,
    ambiguous: bool,
    conflict: bool,
) -> Placement:
    """How a window kept apart relates to the history before it (or, when it is the oldest, after it)."""
    if conflict:
        return "conflict"
    if ambiguous:
        return "ambiguous"
    if older:
        before = max(older, key=lambda s: (s.last.timestamp, s.last_pos))
        return "unverified" if chains(before.last, rows[0]) else "gap"
    if newer:
        after = min(newer, key=lambda s: (s.first.timestamp, s.first_pos))
        return "unverified" if chains(rows[-1], after.first) else "gap"
    return "ambiguous" if stretches else "first"


def _join(
    rows: Sequence[Transaction],
    flags: Sequence[set[RowFlag]],
    links: Sequence[tuple[Stretch, int]],
    observed_at: datetime,
    reaches_start: bool,
) -> MergePlan:
    """The window joins every stretch it is proven to share rows with; the largest keeps its positions."""
    n = len(rows)
    target, base = max(links, key=lambda link: (link[0].last_pos - link[0].first_pos, -link[0].id))
    occupied: list[tuple[int, int]] = [(target.first_pos, target.last_pos)]
    # The resulting stretch's newest position, and the read times that vouch for it.
    ends: list[tuple[int, datetime | None]] = [(target.last_pos, target.observed_through), (base + n - 1, observed_at)]
    joins = []
    for stretch, other_base in links:
        if stretch is target:
            continue
        shift = base - other_base
        lo, hi = stretch.first_pos + shift, stretch.last_pos + shift
        drop = tuple((max(lo, a) - shift, min(hi, b) - shift) for a, b in occupied if max(lo, a) <= min(hi, b))
        joins.append(Join(stretch.id, shift, drop))
        occupied.append((lo, hi))
        ends.append((hi, stretch.observed_through))
        reaches_start = reaches_start or stretch.reaches_start
    new_rows, updates = [], []
    for i, tx in enumerate(rows):
        pos = base + i
        if any(a <= pos <= b for a, b in occupied):
            if flags[i]:
                updates.append((pos, frozenset(flags[i])))
        else:
            new_rows.append(StoredRow(pos, tx, frozenset(flags[i])))
    last = max(pos for pos, _ in ends)
    vouched = [t for pos, t in ends if pos == last and t is not None]
    return MergePlan(
        placement="joined",
        target=target.id,
        joins=tuple(joins),
        new_rows=tuple(new_rows),
        flag_updates=tuple(updates),
        reaches_start=reaches_start or target.reaches_start,
        observed_through=max(vouched) if vouched else None,
        first_pos=min(base, *(a for a, _ in occupied)),
        last_pos=last,
        flagged=sum(1 for f in flags if f),
    )
