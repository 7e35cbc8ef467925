"""The official MCP conformance suite's server scenarios against dessert-mcp's streamable HTTP endpoint.

Scenarios that cannot apply to a two-tool, read-only server are listed, with reasons, in the expected-failures
files beside this one; the suite fails on any other failure and on an expected failure that starts passing.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

HERE = Path(__file__).parent

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.mark.parametrize(
    ("stateless", "selection", "baseline"),
    [
        pytest.param(False, ["--spec-version", "2025-11-25"], "2025-11-25", id="handshake-era-2025-11-25"),
        pytest.param(True, ["--requirements", "2026-07-28"], "2026-07-28", id="stateless-era-2026-07-28"),
    ],
)
def test_the_conformance_suite_passes_every_scenario_that_applies(
    run_node: Run, serve: Callable[..., str], tmp_path: Path, stateless: bool, selection: list[str], baseline: str
) -> None:
    url = serve(stateful=not stateless) + "/mcp"
    expected = HERE / f"conformance-expected-failures-{baseline}.yaml"
    result = run_node(
        "conformance", "server", "--url", url, *selection, "--expected-failures", str(expected), "-o", str(tmp_path)
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Baseline check passed" in result.stdout
