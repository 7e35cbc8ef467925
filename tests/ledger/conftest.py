"""The ledger's tests. `--hypothesis-profile=ledger` runs the merge's property tests far longer than the default."""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("ledger", max_examples=3000)
