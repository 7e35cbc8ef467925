"""What `make` writes lands in git-ignored places: a build, the bundle or the screenshots leave `git status` clean."""

from __future__ import annotations

import subprocess

import pytest

from tests.packaging.conftest import ROOT


def make_variable(name: str) -> str:
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "--eval", "print-%: ; @echo $($*)", f"print-{name}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("variable", "written"),
    [
        ("BUNDLE", ""),  # make bundle: the bundle
        ("SERVER_JSON_OUT", ""),  # make bundle: server.json with the bundle's sha256
        ("SCREENSHOTS", "/dashboard.png"),  # make screenshots
        ("DIST", "/dessert_mcp-0.1.0.tar.gz"),  # make dist
    ],
)
def test_what_a_build_writes_is_git_ignored_so_git_status_stays_clean(variable: str, written: str) -> None:
    path = make_variable(variable)
    assert path, f"the Makefile no longer sets {variable}"
    ignored = subprocess.run(["git", "check-ignore", "-q", path + written], cwd=ROOT, check=False)
    assert ignored.returncode == 0, f"`make` writes {path + written}, which git tracks or would show as new"
