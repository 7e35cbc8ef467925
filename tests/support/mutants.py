"""`make mutants`: mutation testing with mutmut, one group of modules at a time, each against its own fast tests.

mutmut wants the package at the top of the tree it mutates, so each group runs in its own copy under `.mutmut/`
(git-ignored): the package, the tests, pyproject.toml and a setup.cfg with the group's `[mutmut]` settings. Within
a group mutmut runs, for each mutant, only the tests that called the mutated function when it collected its stats.
Prints each group's score (killed / checked) and the surviving mutants; `mutmut show NAME` in `.mutmut/GROUP/`
shows one. Slow, so not part of `make test` or CI.

    python -m tests.support.mutants [GROUP ...] [--max-children N]
"""

from __future__ import annotations

import argparse
import fnmatch
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".mutmut"
MUTMUT = Path(sys.executable).with_name("mutmut")

# Every group's tests run on one process, without coverage. Left out: the PostgreSQL cases (they repeat the SQLite
# ones through a cluster that would start again for every mutant), the stdio cases (the server runs in a subprocess,
# which mutmut neither mutates nor gives a usable stdout) and Hypothesis's property tests (hundreds of examples,
# seconds per mutant), so a mutant only they would catch counts as surviving.
PYTEST_ARGS = ["-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:cov"]
PYTEST_ARGS += ["-k", "not postgresql and not stdio", "-m", "not soak and not hypothesis"]


@dataclass(frozen=True)
class Group:
    files: tuple[str, ...]  # under server/
    tests: tuple[str, ...]
    mutants: tuple[str, ...] = ("*",)  # which of the files' mutants count, by mutmut's names


# The auth wing's token logic: issuing (codes spent once, token pairs, rotation), verifying (the live-token checks,
# the provider's read and its cache) and revoking; the rest of the store (clients, sign-ins, throttles) is not it.
_TOKEN_MUTANTS = (
    "dessert_mcp.auth.tokencache.*",
    "dessert_mcp.auth._crypto.x_new_token__mutmut_*",
    "dessert_mcp.auth._crypto.x_token_hash__mutmut_*",
    "dessert_mcp.auth.store.x__live_token__mutmut_*",
    "dessert_mcp.auth.store.x__family__mutmut_*",
    *(
        f"dessert_mcp.auth.store.xǁStoreǁ{method}__mutmut_*"
        for method in (
            "on_revocation",
            "_revoked",
            "link_account_and_issue_code",
            "get_code",
            "redeem_code",
            "rotate_refresh",
            "_spend_and_issue",
            "get_access_token",
            "get_refresh_token",
            "revoke_grant",
        )
    ),
    *(
        f"dessert_mcp.auth.provider.xǁDessertOAuthProviderǁ{method}__mutmut_*"
        for method in (
            "load_authorization_code",
            "exchange_authorization_code",
            "load_refresh_token",
            "exchange_refresh_token",
            "_token_response",
            "load_access_token",
            "_access_token",
            "_read_access_token",
            "revoke_token",
        )
    ),
)

GROUPS = {
    "client": Group(("dessert_mcp/client.py",), ("tests/test_client.py", "tests/test_client_reliability.py")),
    "models": Group(("dessert_mcp/models.py",), ("tests/test_models.py", "tests/test_client.py")),
    "service": Group(
        ("dessert_mcp/service.py",),
        (
            "tests/test_service.py",
            "tests/test_history.py",
            "tests/ledger/test_polling_in_the_server.py",
            "tests/test_tools.py",
            "tests/test_cache.py",
            "tests/auth/test_tenancy.py",
            "tests/alerts/test_in_the_server.py",
        ),
    ),
    "cache": Group(
        ("dessert_mcp/singleflight.py", "dessert_mcp/cache.py"), ("tests/test_singleflight.py", "tests/test_cache.py")
    ),
    "tokens": Group(
        (
            "dessert_mcp/auth/store.py",
            "dessert_mcp/auth/tokencache.py",
            "dessert_mcp/auth/_crypto.py",
            "dessert_mcp/auth/provider.py",
        ),
        (
            "tests/auth/test_store.py",
            "tests/auth/test_tokencache.py",
            "tests/auth/test_provider.py",
            "tests/auth/test_oauth_security.py",
        ),
        _TOKEN_MUTANTS,
    ),
}

# mutmut's verdicts: caught by the tests (or by running out of time), let live, and never run.
KILLED = {"killed", "timeout"}
UNCHECKED = {"not checked", "skipped"}


def _setup_cfg(group: Group) -> str:
    def lines(values: tuple[str, ...] | list[str]) -> str:
        return "".join(f"\n    {v}" for v in values)

    return (
        "[mutmut]\n"
        "source_paths = dessert_mcp\n"
        f"only_mutate ={lines(group.files)}\n"
        f"pytest_add_cli_args ={lines(PYTEST_ARGS)}\n"
        f"pytest_add_cli_args_test_selection ={lines(group.tests)}\n"
    )


def prepare(name: str, group: Group) -> Path:
    """A fresh copy for the group: mutmut reads setup.cfg when pyproject.toml has no [tool.mutmut]."""
    where = WORK / name
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    caches = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "server" / "dessert_mcp", where / "dessert_mcp", ignore=caches)
    shutil.copytree(ROOT / "tests", where / "tests", ignore=caches)
    shutil.copy(ROOT / "pyproject.toml", where)
    (where / "setup.cfg").write_text(_setup_cfg(group))
    return where


def verdicts(where: Path, group: Group) -> dict[str, str]:
    """The group's mutants and what became of each (from `mutmut results --all true`)."""
    listed = subprocess.run(
        [MUTMUT, "results", "--all", "true"], cwd=where, capture_output=True, text=True, check=True
    ).stdout
    found = {}
    for line in listed.splitlines():
        mutant, sep, status = line.strip().rpartition(": ")
        if sep and any(fnmatch.fnmatchcase(mutant, pattern) for pattern in group.mutants):
            found[mutant] = status
    return found


def report(name: str, found: dict[str, str]) -> str:
    counts = Counter(found.values())
    checked = sum(n for status, n in counts.items() if status not in UNCHECKED)
    killed = sum(counts[status] for status in KILLED)
    score = f"{100 * killed / checked:.1f} %" if checked else "-"
    others = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()) if status not in KILLED)
    return f"{name:8} {score:>8}  {killed} of {checked} killed" + (f" ({others})" if others else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make mutants", description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="*", metavar="GROUP", help=f"one of {', '.join(GROUPS)} (default: all)")
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested at once (default: 1)")
    args = parser.parse_args(argv)
    if unknown := set(args.groups) - GROUPS.keys():
        parser.error(f"no such group: {', '.join(sorted(unknown))}")
    lines = []
    for name in args.groups or list(GROUPS):
        group = GROUPS[name]
        where = prepare(name, group)
        # Names only where the group takes part of its files: with names, mutmut also lists every verdict.
        names = [] if group.mutants == ("*",) else list(group.mutants)
        run = [MUTMUT, "run", "--max-children", str(args.max_children), *names]
        subprocess.run(run, cwd=where, check=True)
        found = verdicts(where, group)
        lines.append(report(name, found))
        survivors = sorted(m for m, status in found.items() if status not in KILLED | UNCHECKED)
        print(f"\n{name}: {len(survivors)} not killed (`mutmut show NAME` in {where.relative_to(ROOT)}/)")
        for mutant in survivors:
            print(f"    {mutant}: {found[mutant]}")
    print("\nMutation score (killed / checked):")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
