"""The `dessert-mcp` command: serve (stdio by default, or HTTP), `sandbox`, `check`, `demo` and `config`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NoReturn

import anyio

from dessert_mcp import __version__
from dessert_mcp.cli.accounts import add_accounts_parser
from dessert_mcp.cli.hosts import HOSTS, LAUNCHES
from dessert_mcp.cli.ledger import add_ledger_parser
from dessert_mcp.config import DEFAULT_BASE_URL, LOG_LEVELS, TOOL_NAME_STYLES, ConfigError, Settings
from dessert_mcp.redact import Redactor, configure_logging_for, install_excepthook

if TYPE_CHECKING:
    from dessert_mcp.http import HTTPOptions

logger = logging.getLogger("dessert_mcp")

ENVIRONMENT_HELP = f"""\
environment variables (the API key is read only from the environment, never from the command line):
  DESSERT_API_KEY         Dessert API key, sent as a Bearer token. Without it the server still starts and lists
                          its tools; every call then answers with an error naming this variable.
  DESSERT_API_BASE_URL    API origin (default {DEFAULT_BASE_URL}); plain http only for loopback hosts.
  DESSERT_MCP_TOOL_NAMES  auto (default: underscore names for every client), dotted or underscore; same as
                          --tool-names.
  DESSERT_TIMEOUT_S       deadline in seconds for one tool call, all attempts and waits included (default 25).
  DESSERT_MAX_ATTEMPTS    attempts per call on connection errors, 408, 409, 429 and 5xx (default 3; 1-10).
  DESSERT_BACKOFF_S       first retry wait in seconds, doubled per attempt, with jitter (default 0.5); a
                          Retry-After from the API is honoured instead when it fits in the deadline.
  DESSERT_MAX_BODY_BYTES  largest API answer read, after decompression (default 1048576).
  DESSERT_MCP_LOG_LEVEL   DEBUG, INFO (default), WARNING, ERROR or CRITICAL; logs go to stderr.
  DESSERT_MCP_LOG_FORMAT  text (default) or json: one JSON object per line on stderr, for log collectors.
  DESSERT_CACHE_TTL_S     seconds a successful answer is reused for the same key (default 0: off, every call
                          asks Dessert); a balance can then be up to that many seconds old (0-3600).
  DESSERT_MCP_AUTH_TOKEN  HTTP transports only: the server's own bearer token (16+ characters). When set, MCP
                          requests without "Authorization: Bearer <token>" get 401. Never the Dessert API key.
  DESSERT_MCP_TRUSTED_PROXIES  HTTP transports only: comma-separated addresses or networks of reverse proxies
                          whose X-Forwarded-For is believed (same as --trusted-proxy); default none.
  OTEL_*                  traces, with dessert-mcp[otel]: OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_TRACES_EXPORTER)
                          turns the export on; the other standard OTEL_* variables apply as usual.
  DESSERT_MCP_ACCOUNT_CONCURRENCY  HTTP transports only, with --auth: Dessert calls one account may have in
                          flight at once (default 4; 1-64); more wait their turn, so no caller spends the others' rate.
  DESSERT_MCP_PUBLIC_URL  HTTP transports only, --auth oauth: the https origin people add (same as --public-url).
  DESSERT_MCP_ENCRYPTION_KEY  HTTP transports only, --auth oauth: 32 random bytes, base64url, that encrypt the
                          linked Dessert keys at rest; make one with `dessert-mcp accounts new-key`.
  DESSERT_MCP_ENCRYPTION_KEY_OLD  HTTP transports only, --auth oauth: the previous key while rotating (see
                          `dessert-mcp accounts --help`).
  DESSERT_MCP_DATABASE_URL  HTTP transports only, --auth oauth: where tokens and linked accounts live; default a
                          SQLite file in $XDG_STATE_HOME/dessert-mcp/, postgresql://... for several replicas.
  DESSERT_LEDGER_RETENTION_DAYS  days of usage history the ledger keeps; older rows are deleted hourly by one
                          server (default 0: keep everything). See `dessert-mcp ledger --help`.
  DESSERT_MCP_ACCESS_TOKEN_TTL_S  HTTP transports only, --auth oauth: access token lifetime (default 900; 60-86400).
  DESSERT_MCP_TOKEN_CACHE_S  HTTP transports only, --auth oauth: seconds a process trusts a checked access token
                          (default 2; 0-30): a revocation through another replica is refused within this bound.
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
    "hosts:\n"
    + "".join(f"  {name:<15} {what}\n" for name, what in HOSTS.items())
    + "\nThe configuration goes to stdout (redirect it to a file if you like), where to put it to stderr. It\n"
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


def _common(*, top: bool) -> _Parser:
    """Options accepted before or after the command; the subcommand's copy only overrides when given."""
    common = _Parser(add_help=False)
    default = None if top else argparse.SUPPRESS
    common.add_argument(
        "--sandbox",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="use an embedded sandbox API on 127.0.0.1 instead of Dessert (no account needed)",
    )
    common.add_argument(
        "--tool-names",
        choices=TOOL_NAME_STYLES,
        default=default,
        help="tool name spelling in tools/list: auto (underscore, for every client), dotted or underscore",
    )
    common.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        type=str.upper,
        default=default,
        help="stderr log level (default INFO, or DESSERT_MCP_LOG_LEVEL)",
    )
    return common


def _parser() -> tuple[argparse.ArgumentParser, list[argparse.Action]]:
    """The parser, and the options that apply to the HTTP transports only."""
    parser = _Parser(
        prog="dessert-mcp",
        description="MCP server for a Dessert account's credit balance and usage.",
        epilog=ENVIRONMENT_HELP,
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
    sandbox.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0 picks one)")
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
        epilog=CONFIG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[refuses_sandbox],
    )
    config.add_argument("host", choices=list(HOSTS), metavar="HOST", help=f"one of: {', '.join(HOSTS)}")
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

        print_host_config(args.host, args.launch)
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
    try:
        settings = Settings.from_env(tool_names=args.tool_names, log_level=log_level)
    except ConfigError as exc:
        sys.exit(f"dessert-mcp: configuration error: {exc}")
    install_excepthook(configure_logging_for(settings))

    if args.command == "sandbox":
        from dessert_mcp.sandbox import run_sandbox

        with _one_line_errors():
            anyio.run(run_sandbox, args.port)
        return
    if args.command == "demo":
        from dessert_mcp.cli.demo import run_demo

        sys.exit(anyio.run(run_demo))
    if args.command == "check":
        from dessert_mcp.cli.check import check

        with _maybe_sandbox(settings, args.sandbox) as checked:
            sys.exit(anyio.run(check, checked))
    if args.transport == "stdio":
        from dessert_mcp.stdio import exit_on_ctrl_c, serve_stdio

        exit_on_ctrl_c()  # before the sandbox's thread starts, so no thread but one takes the signal
        with _maybe_sandbox(settings, args.sandbox) as served:
            serve_stdio(served)
        return
    from dessert_mcp.http.serve import serve_http

    options = _http_options(args, settings)
    with _one_line_errors(), _maybe_sandbox(settings, args.sandbox) as served:
        serve_http(served, options)


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
    http_only: list[argparse.Action] = []

    def add(*flags: str, **kwargs: Any) -> None:
        http_only.append(http.add_argument(*flags, **kwargs))

    add("--host", dest="http_host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", dest="http_port", type=int, default=8000, help="port to listen on (default 8000)")
    add(
        "--stateful",
        action="store_true",
        help="http only: sessions (Mcp-Session-Id) for handshake-era clients; off by default, so any worker or "
        "replica serves any request and abandoned sessions cost nothing",
    )
    add("--stateless", action="store_true", help=argparse.SUPPRESS)  # the default; kept for old scripts
    add("--workers", type=int, default=1, help="worker processes (default 1; not with --stateful)")
    add(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="a Host header to accept besides loopback names (repeatable; required off loopback)",
    )
    add(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser Origin to accept besides loopback ones, e.g. https://app.example.com (repeatable)",
    )
    add(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="ADDRESS[/BITS]",
        help="a reverse proxy whose X-Forwarded-For names the client (repeatable; or DESSERT_MCP_TRUSTED_PROXIES); "
        "default none: the address the connection comes from is the client, for every per-address limit",
    )
    add(
        "--auth",
        choices=("dessert-key", "oauth"),
        help="http only: each caller uses their own Dessert account, sent as a bearer key (dessert-key) or linked "
        "by signing in through OAuth (oauth, for claude.ai and ChatGPT connectors); see docs/remote.md",
    )
    add(
        "--public-url",
        metavar="URL",
        help="--auth oauth: the https origin people add as a connector (or DESSERT_MCP_PUBLIC_URL)",
    )
    return http_only


def _http_options(args: argparse.Namespace, settings: Settings) -> HTTPOptions:
    from dessert_mcp.http.options import (
        METRICS_TOKEN_ENV,
        HTTPOptions,
        oauth_config,
        read_auth_token,
        read_trusted_proxies,
    )

    try:
        if args.stateful and args.stateless:
            raise ConfigError("--stateful and --stateless contradict each other; pass one.")
        if args.public_url and args.auth != "oauth":
            raise ConfigError("--public-url applies to --auth oauth only.")
        options = HTTPOptions(
            transport=args.transport,
            host=args.http_host,
            port=args.http_port,
            stateful=args.stateful,
            workers=args.workers,
            allowed_hosts=tuple(args.allowed_host),
            allowed_origins=tuple(args.allowed_origin),
            auth_token=read_auth_token(os.environ),
            auth=args.auth,
            trusted_proxies=read_trusted_proxies(os.environ, tuple(args.trusted_proxy)),
            metrics_token=read_auth_token(os.environ, METRICS_TOKEN_ENV),
        )
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
