"""What the `dessert-mcp` code reads from its users: DESSERT_* variables and command-line options."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import dessert_mcp
from dessert_mcp.cli import _parser

PACKAGE = Path(dessert_mcp.__file__).parent
# A whole string literal naming a variable: every read goes through one (env_value, os.environ, a constant).
SETTING = re.compile(r"""["'](DESSERT_[A-Z0-9_]+)["']""")


def settings_the_code_reads() -> set[str]:
    """Every DESSERT_* name written as a string literal anywhere in the package."""
    names = {name for path in PACKAGE.rglob("*.py") for name in SETTING.findall(path.read_text())}
    assert len(names) > 10, f"the scan found only {sorted(names)}"
    return names


Option = tuple[tuple[str, ...], str, str | None]


def options_the_cli_reads() -> Iterator[Option]:
    """(subcommand path, option, its help) for every option `dessert-mcp` and its subcommands accept; options whose
    help is suppressed on purpose (aliases, refusals) are left out."""

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> Iterator[Option]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, (*path, name))
            elif action.help != argparse.SUPPRESS:
                for option in action.option_strings:
                    yield path, option, action.help

    yield from walk(_parser()[0], ())
