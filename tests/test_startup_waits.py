"""The suite's start-up waits: each waits for its event, under one bound that holds on a busy 2-core machine."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import ROOT, STARTUP_TIMEOUT_S

TESTS = ROOT / "tests"
# A start-up bound of its own: `STARTUP_TIMEOUT_S = 20.0`, `LAUNCH_TIMEOUT_S = 240`, `WAIT_S = 20.0`.
OWN_BOUND = re.compile(r"(?m)^(\w*(?:START|LAUNCH|WAIT)\w*_S)\s*=\s*([\d.]+)")


def test_the_shared_start_up_bound_holds_on_a_busy_two_core_machine() -> None:
    assert STARTUP_TIMEOUT_S >= 60


def test_no_test_sets_a_start_up_bound_below_the_shared_one() -> None:
    for path in sorted(TESTS.rglob("*.py")):
        for name, value in OWN_BOUND.findall(path.read_text()):
            assert float(value) >= STARTUP_TIMEOUT_S, f"{path.relative_to(ROOT)}: {name} = {value}"


def test_no_test_polls_a_server_thread_for_having_started() -> None:
    """A server on a thread listens before it starts (tests/support/servers.py's `ServedApp`): the first request
    waits in the backlog, which is the event; a loop over `server.started` is a sleep with a guessed bound."""
    for path in sorted(TESTS.rglob("*.py")):
        if path != Path(__file__):
            assert "while not server.started" not in path.read_text(), path.relative_to(ROOT)
