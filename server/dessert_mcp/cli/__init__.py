"""The `dessert-mcp` command: serve (stdio by default, or HTTP), `sandbox`, `check`, `demo` and `config`."""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NoReturn

import anyio

from dessert_mcp import __version__
from dessert_mcp.config import HTTP_ONLY, ConfigError, Setting, Settings, declared, spelled
from dessert_mcp.redact import Redactor, configure_logging_for, install_excepthook

if TYPE_CHECKING:
    from dessert_mcp.http.options import HTTPOptions
    from dessert_mcp.sandbox.account import SandboxAccount

logger = logging.getLogger("dessert_mcp")


ENVIRONMENT_HELP = """\
environment variables (the API key is read only from the environment, never from the command line):
{variables}
  OTEL_*                  traces, with dessert-mcp[otel]: OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_TRACES_EXPORTER)
                          turns the export on; the other standard OTEL_* variables apply as usual.
A value left as a literal ${{user_config...}} placeholder counts as unset.

HTTP transports (--transport http: streamable HTTP at /mcp; --transport sse: SSE at /sse, messages at /messages/):
  GET /healthz answers while the process is up; GET /readyz calls Dessert and answers 200 only if the key works.
  GET /metrics: Prometheus metrics (with dessert-mcp[metrics]), behind DESSERT_MCP_AUTH_TOKEN when it is set;
  with --auth, behind DESSERT_MCP_METRICS_TOKEN (16+ characters), and off without it.
  The Host and Origin headers are always checked (loopback names are allowed); listening on anything other than
  loopback needs --allowed-host and --allowed-origin. Request bodies over 256 KiB get 413.
  example: dessert-mcp --transport http --workers 4 --host 0.0.0.0
           --allowed-host mcp.example.com --allowed-origin https://mcp.example.com
  --auth dessert-key: each request carries the caller's own Dessert key as its bearer token; nothing is stored.
  --auth oauth --public-url https://mcp.example.com: people add https://mcp.example.com/mcp to claude.ai or
  ChatGPT and sign in with their key on this server's page. With --auth, DESSERT_API_KEY must be unset.
  See docs/remote.md.

commands:
  dessert-mcp                 serve MCP over stdio (what hosts such as Claude Desktop launch)
  dessert-mcp --sandbox       the same, wired to an embedded sandbox API (no account needed)
  dessert-mcp --transport http  serve MCP over streamable HTTP on 127.0.0.1:8000 instead (see above)
  dessert-mcp sandbox         run the sandbox API on 127.0.0.1 and print its URL and key
  dessert-mcp check           verify the configuration and connectivity; print the live balance
  dessert-mcp demo            start the sandbox, launch the server over stdio, call both tools
  dessert-mcp config HOST     print a ready-to-paste configuration for an MCP host (see `config --help`)
  dessert-mcp accounts ...    list or revoke accounts linked through --auth oauth, manage its encryption key
  dessert-mcp ledger ...      the usage history kept per account: status, export (CSV, JSON Lines), forget
"""

CONFIG_HELP = (
    "hosts:\n{hosts}"
    "\nThe configuration goes to stdout (redirect it to a file if you like), where to put it to stderr. It\n"
    "asks for underscore tool names and never holds your key: it names the DESSERT_API_KEY variable, a secret\n"
    "prompt or a placeholder instead. --launch path runs this installation by its absolute path (this machine\n"
    "only; the default); --launch uvx runs `uvx dessert-mcp@<this version>`, the same everywhere (the default\n"
    "when this copy was itself started by uvx).\n"
)

_KEY_FLAGS = ("--api-key", "--key", "--token", "--dessert-api-key")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse echoes offending arguments; a pasted key must not reach the terminal or a host's log.
        redact = Redactor(*(a for a in sys.argv[1:] if len(a) >= 16))
        self.exit(2, f"{self.prog}: error: {redact(message)}\nRun '{self.prog} --help' for usage.\n")


def settings_classes() -> tuple[type, ...]:
    """Every class whose fields are settings (see dessert_mcp.config), in the order --help lists them. The HTTP and
    auth wings' load here, when a parser or the settings' list is wanted: serving stdio with no argument needs
    neither."""
    from dessert_mcp.auth.config import OAuthConfig
    from dessert_mcp.http.options import HTTPOptions

    return (Settings, HTTPOptions, OAuthConfig)


def settings() -> list[Setting]:
    """Every setting of the server and its wings, in the order --help and the README list them."""
    return [s for cls in settings_classes() for s in declared(cls).values()]


def _environment_help() -> str:
    variables = (
        textwrap.fill(
            f"{s.env:<22}  {s.describe()}" + (f" Same as {s.option}." if s.option else _default(s, " Default: {}.")),
            width=114,
            initial_indent="  ",
            subsequent_indent=" " * 26,
            break_on_hyphens=False,
            break_long_words=False,
        )
        for s in settings()
        if s.env
    )
    return ENVIRONMENT_HELP.format(variables="\n".join(variables))


def _default(s: Setting, form: str) -> str:
    return "" if (shown := s.default_text()) is None else form.format(shown)


def _add_option(parser: argparse._ActionsContainer, s: Setting, **kwargs: Any) -> argparse.Action:
    """`s`'s command-line option; not given, it is None (or `kwargs["default"]`), so the variable or default holds."""
    assert s.option is not None
    where = s.applies.removeprefix(HTTP_ONLY).removeprefix(", ")
    also = "; ".join(part for part in (_default(s, "default {}"), f"or {s.env}" if s.env else "") if part)
    kwargs = {"dest": s.name, "default": None, "metavar": s.metavar} | kwargs
    kwargs["help"] = (f"{where}: " if where else "") + s.describe().removeprefix(f"{s.applies}: ")
    kwargs["help"] += f" ({also})" if also else ""
    if isinstance(s.read, tuple):
        kwargs |= {"choices": s.read, "type": functools.partial(spelled, s.read)}
    elif isinstance(s.default, bool):
        kwargs |= {"action": "store_true"}
    elif isinstance(s.default, tuple):
        kwargs |= {"action": "append"}
    elif isinstance(s.default, int):
        kwargs |= {"type": int}
    return parser.add_argument(s.option, **{k: v for k, v in kwargs.items() if v is not None or k == "default"})


def _common(*, top: bool) -> _Parser:
    """Options accepted before or after the command; the subcommand's copy only overrides when given."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--sandbox",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="use an embedded sandbox API on 127.0.0.1 instead of Dessert (no account needed)",
    )
    for s in declared(Settings).values():
        if s.option:
            _add_option(common, s, default=None if top else argparse.SUPPRESS)
    return common


def _parser() -> tuple[argparse.ArgumentParser, list[argparse.Action]]:
    """The parser, and the options that apply to the HTTP transports only."""
    from dessert_mcp.cli.accounts import add_accounts_parser
    from dessert_mcp.cli.hosts import HOSTS, LAUNCHES
    from dessert_mcp.cli.ledger import add_ledger_parser

    parser = _Parser(
        prog="dessert-mcp",
        description="MCP server for a Dessert account's credit balance and usage.",
        epilog=_environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(top=True)],
    )
    parser.add_argument("--version", action="version", version=f"dessert-mcp {__version__}")
    http_only = _add_http_arguments(parser)
    sub = parser.add_subparsers(
        dest="command", metavar="{sandbox,check,demo,config,accounts,ledger}", parser_class=_Parser
    )
    # `sandbox`, `demo` and `config` refuse --sandbox with a sentence wherever it is written, not "unrecognized".
    refuses_sandbox = _Parser(add_help=False)
    refuses_sandbox.add_argument("--sandbox", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sandbox = sub.add_parser("sandbox", help="run the sandbox API on 127.0.0.1", parents=[refuses_sandbox])
    sandbox.add_argument(
        "--port", dest="sandbox_port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0 picks one)"
    )
    sandbox.add_argument(
        "--activity",
        metavar="RATE",
        help="a live account: this many transactions a second (or 30/min, 100/h), a history of hundreds of rows",
    )
    sandbox.add_argument("--seed", type=int, help="the live account's random seed (default 0)")
    sub.add_parser(
        "check", help="verify configuration and connectivity, print the live balance", parents=[_common(top=False)]
    )
    sub.add_parser(
        "demo", help="run both tools through a real stdio MCP client against the sandbox", parents=[refuses_sandbox]
    )
    config = sub.add_parser(
        "config",
        help="print a ready-to-paste configuration for an MCP host",
        description="Print a ready-to-paste dessert-mcp configuration for an MCP host.",
        epilog=CONFIG_HELP.format(hosts="".join(f"  {name:<15} {what}\n" for name, what in HOSTS.items())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[refuses_sandbox],
    )
    config.add_argument("mcp_host", choices=list(HOSTS), metavar="HOST", help=f"one of: {', '.join(HOSTS)}")
    config.add_argument("--launch", choices=LAUNCHES, help="how the entry starts the server: path or uvx (see below)")
    add_accounts_parser(sub)
    add_ledger_parser(sub)
    return parser, http_only


def main(argv: Sequence[str] | None = None) -> None:
    try:
        _main(argv)
    except* BrokenPipeError:
        # Whoever read stdout went away (`dessert-mcp demo | head`, a host that quit): stop quietly, and keep
        # the interpreter's final flush from reporting the same broken pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def _main(argv: Sequence[str] | None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list:  # what hosts launch: nothing to parse, so no parser (nor the wings' settings) to build for it
        _serve_stdio(_settings(argparse.Namespace(), None), sandbox=False)
        return
    if any(a.split("=", 1)[0] in _KEY_FLAGS for a in args_list):
        sys.exit("dessert-mcp: error: the API key is read only from the DESSERT_API_KEY environment variable.")
    parser, http_only = _parser()
    args = parser.parse_args(args_list)
    if args.command is not None and args.transport != "stdio":
        sys.exit(f"dessert-mcp: error: --transport applies to serving, not to `{args.command}`.")
    # Given but not applicable is refused, never ignored: one sentence naming what was given.
    given = [action.option_strings[0] for action in http_only if getattr(args, action.dest) != action.default]
    verb = "applies" if len(given) == 1 else "apply"
    if given and args.command is not None:
        sys.exit(f"dessert-mcp: error: {', '.join(given)} {verb} to serving over HTTP, not to `{args.command}`.")
    if given and args.transport == "stdio":
        sys.exit(
            f"dessert-mcp: error: {', '.join(given)} {verb} to the HTTP transports only: over stdio the server "
            "serves the one account in DESSERT_API_KEY to the host that launched it."
        )
    if args.command == "config":
        if args.sandbox:
            sys.exit("dessert-mcp: error: --sandbox does not apply to `config`; host entries use your own key.")
        from dessert_mcp.cli.hosts import print_host_config

        print_host_config(args.mcp_host, args.launch)
        return
    if args.command == "accounts":
        from dessert_mcp.cli.accounts import run_accounts

        sys.exit(run_accounts(args))
    if args.command == "ledger":
        from dessert_mcp.cli.ledger import run_ledger

        sys.exit(run_ledger(args))
    if args.command in ("sandbox", "demo") and args.sandbox:
        sys.exit(f"dessert-mcp: error: --sandbox does not apply to `{args.command}`, which always uses the sandbox.")
    log_level = args.log_level
    if args.command == "check" and log_level is None and not os.environ.get("DESSERT_MCP_LOG_LEVEL"):
        log_level = "WARNING"  # the report says what the INFO lines would; keep the terminal to the report
    settings = _settings(args, log_level)

    if args.command == "sandbox":
        from dessert_mcp.sandbox import run_sandbox

        with _one_line_errors():
            anyio.run(run_sandbox, args.sandbox_port, _sandbox_account(args.activity, args.seed))
        return
    if args.command == "demo":
        from dessert_mcp.cli.demo import run_demo

        sys.exit(anyio.run(run_demo))
    if args.command == "check":
        from dessert_mcp.cli.check import check

        with _maybe_sandbox(settings, args.sandbox) as checked:
            sys.exit(anyio.run(check, checked))
    if args.transport == "stdio":
        _serve_stdio(settings, sandbox=args.sandbox)
        return
    from dessert_mcp.http.serve import serve_http

    options = _http_options(args, settings)
    with _one_line_errors(), _maybe_sandbox(settings, args.sandbox) as served:
        serve_http(served, options)


def _settings(args: argparse.Namespace, log_level: str | None) -> Settings:
    """The server's settings from the environment and the options given; the logging they ask for, set up."""
    try:
        settings = Settings.from_env(**_given(args, Settings) | {"log_level": log_level})
    except ConfigError as exc:
        sys.exit(f"dessert-mcp: configuration error: {exc}")
    install_excepthook(configure_logging_for(settings))
    return settings


def _serve_stdio(settings: Settings, *, sandbox: bool) -> None:
    from dessert_mcp.stdio import exit_on_ctrl_c, serve_stdio

    exit_on_ctrl_c()  # before the sandbox's thread starts, so no thread but one takes the signal
    with _maybe_sandbox(settings, sandbox) as served:
        serve_stdio(served)


def _sandbox_account(activity: str | None, seed: int | None) -> Callable[[], SandboxAccount]:
    """The account `dessert-mcp sandbox` serves: today's static one, or a live one on the real clock."""
    from dessert_mcp.sandbox.account import SandboxAccount
    from dessert_mcp.sandbox.activity import LiveAccount, parse_rate

    if activity is None:
        if seed is not None:
            sys.exit("dessert-mcp: error: --seed applies to a live sandbox only; add --activity RATE.")
        return SandboxAccount
    try:
        rate = parse_rate(activity)
    except ValueError as exc:
        sys.exit(f"dessert-mcp: error: {exc}")
    return functools.partial(LiveAccount, rate=rate, seed=seed or 0)


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """A server's own ending: Ctrl+C stops it quietly, and a port it cannot have is one line, not a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        sys.exit(130)  # 128 + SIGINT, as a shell reports a command it interrupted
    except ConfigError as exc:
        sys.exit(f"dessert-mcp: error: {exc}")


def _transport(value: str) -> str:
    return "http" if value == "streamable-http" else value  # the spec's own name for it


def _add_http_arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    http = parser.add_argument_group("HTTP transports")
    http.add_argument(
        "--transport",
        choices=("stdio", "sse", "http"),
        type=_transport,
        default="stdio",
        help="stdio (default), sse (SSE at /sse) or http (streamable HTTP at /mcp; also spelled streamable-http)",
    )
    http_only = [_add_option(http, s) for cls in settings_classes()[1:] for s in declared(cls).values() if s.option]
    # The default; kept for old scripts.
    http_only.append(http.add_argument("--stateless", action="store_true", default=None, help=argparse.SUPPRESS))
    return http_only


def _given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options of `cls`'s settings given on the command line (repeated ones as tuples)."""
    values = {name: getattr(args, name, None) for name, s in declared(cls).items() if s.option}
    return {name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}


def _http_options(args: argparse.Namespace, settings: Settings) -> HTTPOptions:
    from dessert_mcp.http.options import HTTPOptions, oauth_config

    try:
        if args.stateful and args.stateless:
            raise ConfigError("--stateful and --stateless contradict each other; pass one.")
        if args.public_url and args.auth != "oauth":
            raise ConfigError("--public-url applies to --auth oauth only.")
        options = HTTPOptions.from_env(os.environ, transport=args.transport, **_given(args, HTTPOptions))
        if options.auth == "oauth":
            # What the command line gets wrong is said first, before the auth settings are read and checked.
            options.check_auth(settings)
            options = replace(options, oauth=oauth_config(os.environ, public_url=args.public_url))
        return options.check(settings)
    except ConfigError as exc:
        sys.exit(f"dessert-mcp: configuration error: {exc}")


@contextlib.contextmanager
def _maybe_sandbox(settings: Settings, enabled: bool) -> Iterator[Settings]:
    if not enabled:
        yield settings
        return
    from dessert_mcp.sandbox import ThreadedSandbox

    with ThreadedSandbox() as sandbox:
        logger.info("Using the embedded sandbox API at %s", sandbox.url)
        yield replace(settings, base_url=sandbox.url).with_key(sandbox.key)
