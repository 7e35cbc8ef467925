"""Garbage collection for a long-running server: what lives as long as the process is kept out of collections.

A serving process (stdio or HTTP) builds most of the objects it will ever hold at start-up (the SDK, the tools, their
schemas), and the ledger's database libraries load on its first use. Cyclic collection only ever finds garbage among
the objects a call makes; walking the long-lived heap on every full collection, and collecting the young generation
every 700 allocations (CPython's default), is most of what collection costs a server answering hundreds of calls a
second. Both are Python's documented `gc` API: `gc.freeze` moves the heap made so far out of every generation (it is
never collected again: only what is alive for good belongs there), and `gc.set_threshold` sets how many allocations a
young collection waits for. Measured in bench/ (section 3): about a tenth of the HTTP server's CPU per call.
"""

from __future__ import annotations

import gc
import threading
from typing import Final

# Allocations (less deallocations) of container objects between two young collections: a call makes a few thousand,
# so the young generation is collected about once per call or two instead of several times per call (bench/).
YOUNG_OBJECTS: Final = 10_000

_settled: Final = threading.Event()


def keep_start_up_heap() -> None:
    """At the end of start-up: freeze what was made so far, and collect the young generation less often."""
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS, *gc.get_threshold()[1:])


def keep_first_use_heap() -> None:
    """Once the ledger has worked (its libraries loaded, its engine built, its schema checked): in a process that
    froze its start-up heap, freeze what that first use added too. Once per process; a process that never froze its
    heap (a test run, a library user) is left as it is."""
    if _settled.is_set():
        return
    _settled.set()
    if gc.get_freeze_count() > 0:
        gc.freeze()
