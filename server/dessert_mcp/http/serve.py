"""Running the HTTP app with uvicorn: in this process, or as worker processes that each own a listening socket.

Sockets are made here rather than by uvicorn, for two reasons. Declared as TCP (`IPPROTO_TCP`), asyncio turns
Nagle's algorithm off on every accepted connection; uvicorn's own multi-worker socket leaves it on, so each
keep-alive response waited for a delayed ACK (uvicorn #3149). And with one `SO_REUSEPORT` socket per worker the
kernel spreads new connections over the workers, where a shared socket lets whichever wakes first take them all.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import socket
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from dessert_mcp.auth.config import MCP_PATH
from dessert_mcp.config import Settings, cannot_listen
from dessert_mcp.heap import keep_start_up_heap
from dessert_mcp.http.options import HTTPOptions
from dessert_mcp.observe import metrics_installed, spans_heard
from dessert_mcp.redact import configure_logging_for

if TYPE_CHECKING:
    from starlette.types import ASGIApp

logger = logging.getLogger("dessert_mcp")

# Open SSE streams would otherwise hold shutdown forever.
GRACEFUL_SHUTDOWN_S = 5
# Connections the kernel holds for a worker that has not accepted them yet (start-up included).
BACKLOG = 2048
# Where the open-files limit goes when the hard limit is unlimited (the kernel refuses "unlimited" as a soft limit).
_OPEN_FILES_CEILING = 1 << 20


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to (host, port), not yet listening; a port that cannot be had is a `ConfigError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise cannot_listen(host, port, exc) from None
    return sock


def forwarded_headers(trusted_proxies: tuple[str, ...]) -> dict[str, Any]:
    """uvicorn's proxy settings: X-Forwarded-For is believed from the named proxies only, and from nobody by
    default (uvicorn's own default believes 127.0.0.1, so any co-located process could pose as any client)."""
    return {"proxy_headers": bool(trusted_proxies), "forwarded_allow_ips": list(trusted_proxies) or ""}


def raise_open_files_limit() -> int:
    """Lift this process's soft limit on open files to its hard limit; returns the limit now in force.

    Every connection holds a file descriptor, idle ones included (uvicorn has no timeout for a connection that
    never sends a request), and the usual soft default of 1024 let a thousand idle connections lock every other
    client out: accept() failed with EMFILE, /healthz included, and each failure was logged. The hard limit
    (typically 524288 under systemd, 1048576 in containers) is what the operator allows; it is ours to use.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _OPEN_FILES_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # a ceiling above the kernel's nr_open: keep what we have
            return soft
        return target
    return soft


def serve_app(app: ASGIApp, sock: socket.socket, *, log_level: str, trusted_proxies: tuple[str, ...] = ()) -> None:
    """Serve an ASGI app on `sock` with uvicorn until told to stop, its start-up heap frozen first."""
    import uvicorn

    raise_open_files_limit()
    keep_start_up_heap()
    config = uvicorn.Config(
        app,
        log_config=None,  # keep our stderr logging, with the key and token redacted
        log_level=log_level.lower(),
        server_header=False,
        # The access log's arguments are worked out for every response, shown or not: only when its level shows it.
        access_log=logging.getLevelNamesMapping().get(log_level.upper(), logging.INFO) <= logging.INFO,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        **forwarded_headers(trusted_proxies),
    )
    sock.listen(BACKLOG)
    uvicorn.Server(config).run(sockets=[sock])


def _serve(settings: Settings, options: HTTPOptions, sock: socket.socket) -> None:
    """Build the app in this process and serve it on `sock` until told to stop."""
    # Importing the SDK and building the app makes most of the objects this process will hold, for its whole life:
    # collecting while they are made only costs start-up time. Collection resumes once they are frozen.
    gc.disable()
    try:
        from dessert_mcp.http.app import build_app
        from dessert_mcp.observe.tracing import configure_tracing

        app = build_app(settings, options, sdk_spans=spans_heard(os.environ))
        # After build_app: building the server sets up the SDK's own logging.
        configure_logging_for(settings, *options.secrets)
        configure_tracing()  # in each worker: a tracer provider's export thread does not cross processes
        keep_start_up_heap()
    finally:
        gc.enable()
    serve_app(app, sock, log_level=settings.log_level, trusted_proxies=options.trusted_proxies)


def serve_http(settings: Settings, options: HTTPOptions) -> None:
    """Serve until interrupted: in this process, or as `options.workers` worker processes."""
    configure_logging_for(settings, *options.secrets)
    # Bound before "Serving" is said: a port already taken is one line, and the line names the port in use.
    sock = listening_socket(options.host, options.port, reuse_port=options.workers > 1)
    if options.workers == 1:
        sock.listen(BACKLOG)  # from "Serving" on, a connection waits in the backlog for start-up, never refused
    where = f"http://{options.host}:{sock.getsockname()[1]}{MCP_PATH if options.transport == 'http' else '/sse'}"
    kind = "streamable HTTP" if options.transport == "http" else "SSE"
    plural = "" if options.workers == 1 else "s"
    token = "; bearer token required" if options.auth_token else ""
    if options.auth is not None:
        token = f"; --auth {options.auth}: each caller uses their own Dessert account"
    logger.info("Serving MCP over %s at %s (%d worker%s)%s", kind, where, options.workers, plural, token)
    if options.oauth is not None:
        logger.info("Connector URL for claude.ai and ChatGPT: %s", options.oauth.resource)
    if options.auth is None and (warning := settings.missing_key_warning()) is not None:
        logger.warning(warning)
    serve_workers(_serve, (settings, options), sock, workers=options.workers)


def serve_workers(target: Callable[..., None], args: tuple[Any, ...], sock: socket.socket, *, workers: int) -> None:
    """Run `target(*args, sock)` on `sock` (from `listening_socket`, with `reuse_port` when `workers` > 1): in
    this process for one worker, or in `workers` spawned processes, each with its own `SO_REUSEPORT` socket on
    that port. `target` and `args` must pickle (a module-level function)."""
    if workers == 1:
        target(*args, sock)
        return
    # `sock` holds the port (picked already, for port 0) without listening, so it takes no connections.
    with sock:
        host, port = sock.getsockname()[:2]
        _supervise(target, args, host, port, workers)


def _worker(target: Callable[..., None], args: tuple[Any, ...], host: str, port: int) -> None:
    target(*args, listening_socket(host, port, reuse_port=True))


def _supervise(target: Callable[..., None], args: tuple[Any, ...], host: str, port: int, count: int) -> None:
    """Start the workers, restart any that dies, and stop them all on SIGINT or SIGTERM."""
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> BaseProcess:
        process = context.Process(target=_worker, args=(target, args, host, port), name="dessert-mcp-worker")
        process.start()
        return process

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    # One metrics directory for all the workers, so that any worker's /metrics answers for every one.
    shared: contextlib.AbstractContextManager[Callable[[int], None] | None] = contextlib.nullcontext()
    if metrics_installed():
        from dessert_mcp.observe.metrics import shared_by_workers

        shared = shared_by_workers()
    with shared as worker_died:
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        workers = [start() for _ in range(count)]
        try:
            while not stopping:
                multiprocessing.connection.wait([w.sentinel for w in workers], timeout=0.5)
                for i, worker in enumerate(workers):
                    if not worker.is_alive() and not stopping:
                        logger.error("Worker pid %s exited with %s; starting another", worker.pid, worker.exitcode)
                        if worker_died is not None and worker.pid is not None:
                            worker_died(worker.pid)
                        workers[i] = start()
        finally:
            for worker in workers:
                worker.terminate()  # SIGTERM: uvicorn finishes what is in flight, within GRACEFUL_SHUTDOWN_S
            for worker in workers:
                worker.join(GRACEFUL_SHUTDOWN_S + 5)
                if worker.is_alive():
                    worker.kill()
            for sig, handler in previous.items():
                with contextlib.suppress(ValueError, TypeError):
                    signal.signal(sig, handler)
