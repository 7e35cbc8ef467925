"""The `dessert-mcp` command: serve (stdio by default), `sandbox`, `check` and `demo`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import NoReturn

import anyio

from dessert_mcp import __version__
from dessert_mcp.config import DEFAULT_BASE_URL, TOOL_NAME_STYLES, ConfigError, Settings
from dessert_mcp.redact import Redactor, configure_logging

logger = logging.getLogger("dessert_mcp")

ENVIRONMENT_HELP = f"""\
environment variables (the API key is read only from the environment, never from the command line):
  DESSERT_API_KEY         Dessert API key, sent as a Bearer token. Without it the server still starts and lists
                          its tools; every call then answers with an error naming this variable.
  DESSERT_API_BASE_URL    API origin (default {DEFAULT_BASE_URL}); plain http only for loopback hosts.
  DESSERT_MCP_TOOL_NAMES  auto (default), dotted or underscore; same as --tool-names.
  DESSERT_TIMEOUT_S       deadline in seconds for one tool call, all attempts included (default 25).
  DESSERT_MCP_LOG_LEVEL   DEBUG, INFO (default), WARNING, ERROR or CRITICAL; logs go to stderr.
A value left as a literal ${{user_config...}} placeholder counts as unset.

commands:
  dessert-mcp                 serve MCP over stdio (what hosts such as Claude Desktop launch)
  dessert-mcp --sandbox       the same, wired to an embedded sandbox API (no account needed)
  dessert-mcp sandbox         run the sandbox API on 127.0.0.1 and print its URL and key
  dessert-mcp check           verify the configuration and connectivity; print the live balance
  dessert-mcp demo            start the sandbox, launch the server over stdio, call both tools
"""

_KEY_FLAGS = ("--api-key", "--key", "--token", "--dessert-api-key")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse echoes offending arguments; a pasted key must not reach the terminal or a host's log.
        redact = Redactor(*(a for a in sys.argv[1:] if len(a) >= 16))
        self.exit(2, f"{self.prog}: error: {redact(message)}\nRun '{self.prog} --help' for usage.\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dessert-mcp",
        description="MCP server for a Dessert account's credit balance and usage.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dessert-mcp {__version__}")
    parser.add_argument(
        "--sandbox", action="store_true", help="use an embedded sandbox API on 127.0.0.1 instead of Dessert"
    )
    parser.add_argument(
        "--tool-names",
        choices=TOOL_NAME_STYLES,
        help="tool name spelling in tools/list: auto (underscore for hosts that reject dots), dotted or underscore",
    )
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), type=str.upper)
    sub = parser.add_subparsers(dest="command", metavar="{sandbox,check,demo}")
    sandbox = sub.add_parser("sandbox", help="run the sandbox API on 127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0 picks one)")
    check = sub.add_parser("check", help="verify configuration and connectivity, print the live balance")
    check.add_argument("--sandbox", action="store_true", dest="check_sandbox", help="check against the sandbox")
    sub.add_parser("demo", help="run both tools through a real stdio MCP client against the sandbox")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if any(a.split("=", 1)[0] in _KEY_FLAGS for a in args_list):
        sys.exit("dessert-mcp: error: the API key is read only from the DESSERT_API_KEY environment variable.")
    args = _parser().parse_args(args_list)
    try:
        settings = Settings.from_env(tool_names=args.tool_names, log_level=args.log_level)
    except ConfigError as exc:
        sys.exit(f"dessert-mcp: configuration error: {exc}")
    key = settings.api_key.get() if settings.api_key else None
    configure_logging(settings.log_level, Redactor(key))

    if args.command == "sandbox":
        from dessert_mcp.sandbox import SANDBOX_KEY, run_sandbox

        with contextlib.suppress(KeyboardInterrupt):
            anyio.run(lambda: run_sandbox(port=args.port, key=SANDBOX_KEY))
        return
    if args.command == "demo":
        from dessert_mcp.demo import run_demo

        sys.exit(anyio.run(run_demo))
    if args.command == "check":
        with _maybe_sandbox(settings, args.check_sandbox) as checked:
            sys.exit(anyio.run(_check, checked))
    with _maybe_sandbox(settings, args.sandbox) as served:
        _serve_stdio(served)


@contextlib.contextmanager
def _maybe_sandbox(settings: Settings, enabled: bool) -> Iterator[Settings]:
    if not enabled:
        yield settings
        return
    from dessert_mcp.sandbox import ThreadedSandbox

    with ThreadedSandbox() as sandbox:
        logger.info("Using the embedded sandbox API at %s", sandbox.url)
        yield replace(settings, base_url=sandbox.url).with_key(sandbox.key)


def _serve_stdio(settings: Settings) -> None:
    from dessert_mcp.app import build_server

    if settings.api_key is None:
        logger.warning(
            "DESSERT_API_KEY is not set: the tools are listed, but every call will fail until it is set. %s",
            settings.api_key_problem or "",
        )
    server = build_server(settings)
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(server.run_stdio_async)


async def _check(settings: Settings) -> int:
    from dessert_mcp.client import DessertAPIError, DessertClient

    out = sys.stdout
    out.write(f"base URL : {settings.base_url}\n")
    if settings.api_key is None:
        reason = settings.api_key_problem or "DESSERT_API_KEY is not set."
        out.write(f"API key  : missing\nFAILED: {reason}\n")
        return 1
    out.write(f"API key  : {settings.api_key.masked()}\n")
    async with DessertClient(settings.base_url, api_key=settings.api_key, timeout_s=settings.timeout_s) as client:
        try:
            balance = await client.get_balance()
        except DessertAPIError as exc:
            out.write(f"FAILED ({exc.code}): {exc.message}\n")
            return 1
    out.write(
        f"balance  : {balance.credits_balance} credits (${balance.credits_balance_usd_equivalent:.2f}); "
        f"auto-recharge {'on' if balance.auto_recharge_enabled else 'off'}\n"
        "OK: the key is accepted and the API answers.\n"
    )
    return 0
