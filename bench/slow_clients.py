"""Slow clients against three ASGI servers: `/healthz` while 1,100 connections that never finish a request are held
open, and get_balance throughput, for dessert-mcp's own serving (uvicorn), uvicorn as it served before (asyncio +
h11, the open-files limit as inherited), Granian and Hypercorn, each serving the same app (bench/asgi_app.py).
Throughput is measured side by side with dessert-mcp's serving (one bench/load.py --versus process loads both in
alternating turns), so the column is a ratio.

`python bench/slow_clients.py [--quick] [--only NAME]` prints one table. Every server starts with the usual soft
limit of 1024 open files (what a shell or a plain systemd unit gives), the condition the attack exploited; a
server may raise it to its hard limit itself, as dessert-mcp now does. Loopback only; every connection is closed
before the script ends. Figures are measurements on a shared machine, not targets: read them as ratios.

Granian and Hypercorn are not dependencies: `pip install granian hypercorn` into the venv first.

Attacks:
- idle: connect and send nothing (the connection never starts a request);
- partial: send the start of a request's headers and then nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from run import PY, pct, sandbox_process, server_env
from tests.support.processes import Process, free_port, healthz, private_user_dirs, started

HERE = Path(__file__).parent
SOFT_OPEN_FILES = 1024
HELD = 1100
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Candidate:
    name: str
    argv: tuple[str, ...]  # the port goes at "{port}"
    # The open-files limits the server starts with: "soft" lowers the soft one to 1024 (the usual default), "hard"
    # both (a host that allows no more), "none" leaves this machine's.
    limit: str = "soft"


_OURS = (PY, "-m", "dessert_mcp", "--transport", "http", "--port", "{port}")
_UVICORN = (PY, "-m", "uvicorn", "--factory", "asgi_app:create_app", "--port", "{port}", "--log-level", "warning")
_GRANIAN = (PY, "-m", "granian", "--interface", "asgi", "--factory", "--port", "{port}", "--log-level", "warning")
_HYPERCORN = (PY, "-m", "hypercorn", "--bind", "127.0.0.1:{port}", "--log-level", "warning")
CANDIDATES = (
    Candidate("dessert-mcp: uvicorn (+ uvloop, httptools), soft limit raised", _OURS),
    Candidate("dessert-mcp, hard limit 1024 as well", _OURS, limit="hard"),
    Candidate(
        "uvicorn as before (asyncio + h11)", (*_UVICORN, "--loop", "asyncio", "--http", "h11", "--no-access-log")
    ),
    Candidate("granian", (*_GRANIAN, "asgi_app:create_app")),
    Candidate("granian, limit not lowered", (*_GRANIAN, "asgi_app:create_app"), limit="none"),
    Candidate(
        "granian, tuned: 5 s header timeout, backpressure 8192, limit not lowered",
        (*_GRANIAN, "--http1-header-read-timeout", "5000", "--backpressure", "8192", "asgi_app:create_app"),
        limit="none",
    ),
    Candidate("hypercorn", (*_HYPERCORN, "asgi_app:create_app()")),
)


def _limits(kind: str) -> Callable[[], None] | None:
    if kind == "none":
        return None
    hard = SOFT_OPEN_FILES if kind == "hard" else resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT_OPEN_FILES, hard))


@contextlib.contextmanager
def start(candidate: Candidate, env: dict[str, str]) -> Iterator[Process]:
    with started(
        list(candidate.argv),
        env=env,
        ready=healthz,
        port=free_port(),
        cwd=HERE,
        preexec_fn=_limits(candidate.limit),
        stdout=subprocess.DEVNULL,  # the log growth counted is what the server writes to stderr
    ) as running:
        yield running


def _healthz(port: int) -> float | None:
    """Seconds for one GET /healthz on a new connection, or None if it got no 200 within PROBE_TIMEOUT_S."""
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT_S) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = sock.recv(64)
    except OSError:
        return None
    return time.perf_counter() - started if head.startswith(b"HTTP/1.1 200") else None


@contextlib.contextmanager
def held_connections(port: int, count: int, attack: str) -> Iterator[list[socket.socket]]:
    """`count` connections to the server that never finish a request; all closed on exit."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            socks.append(sock)
        if attack == "partial":
            time.sleep(0.5)  # the handshakes complete in the kernel's backlog whether or not the server accepts
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        yield socks
    finally:
        for sock in socks:
            sock.close()


@dataclass
class Attack:
    answered: int
    probes: int
    latencies: list[float]
    log_bytes: int
    log_lines: int


def attack(running: Process, kind: str, seconds: float) -> Attack:
    """Hold HELD connections for `seconds` and probe /healthz once a second meanwhile."""
    port = running.port
    assert port is not None
    before = running.log.read_bytes()
    latencies: list[float] = []
    probes = 0
    with held_connections(port, HELD, kind):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            probes += 1
            started = time.monotonic()
            latency = _healthz(port)
            if latency is not None:
                latencies.append(latency)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    time.sleep(1)  # what the closing connections make the server log
    grown = running.log.read_bytes()[len(before) :]
    return Attack(len(latencies), probes, latencies, len(grown), grown.count(b"\n"))


def _versus_ours(candidate: Candidate, env: dict[str, str], seconds: float, rounds: int) -> list[float]:
    """get_balance calls/s of `candidate` over dessert-mcp's own serving, side by side: one bench/load.py process
    loads both in alternating turns of 0.2 s (concurrency 16 each), `rounds` times; each round's ratio."""
    ratios = []
    with start(CANDIDATES[0], env) as ours, start(candidate, env) as theirs:
        for _ in range(rounds):
            argv = [PY, str(HERE / "load.py"), f"http://127.0.0.1:{ours.port}/mcp", "dessert_get_balance"]
            argv += ["--concurrency", "16", "--seconds", str(seconds), "--protocol", "2026-07-28"]
            argv += ["--versus", f"http://127.0.0.1:{theirs.port}/mcp"]
            result = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
            if result["a"]["errors"] or result["b"]["errors"]:
                raise RuntimeError(f"calls failed: {result}")
            ratios.append(result["b"]["rate"] / result["a"]["rate"])
    print(f"  {candidate.name}: calls/s over dessert-mcp's, per round: {', '.join(f'{r:.2f}' for r in ratios)}")
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter attacks and loads")
    parser.add_argument("--only", action="append", help="candidates whose name starts with this (repeatable)")
    args = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process holds the HELD connections
    seconds, load_s, rounds = (12.0, 2.0, 1) if args.quick else (40.0, 3.0, 5)
    chosen = [c for c in CANDIDATES if not args.only or any(c.name.startswith(o) for o in args.only)]
    rows: list[tuple[str, ...]] = []
    with sandbox_process() as url:
        env = server_env(url) | {"PYTHONPATH": str(HERE.parent / "server")}
        print(
            f"sandbox API at {url}; {os.cpu_count()} cores; servers start with a soft limit of {SOFT_OPEN_FILES} "
            f"open files (hard {hard}); {HELD} connections held for {seconds:.0f} s, /healthz probed once a second"
        )
        ratios = {c.name: _versus_ours(c, env, load_s, rounds) for c in chosen if c is not CANDIDATES[0]}
        for candidate in chosen:
            for kind in ("idle", "partial"):
                with start(candidate, env) as running:
                    result = attack(running, kind, seconds)
                lat = result.latencies
                p50 = f"{1000 * statistics.median(lat):.1f}" if lat else "-"
                p99 = f"{1000 * pct(lat, 0.99):.1f}" if lat else "-"
                ratio = ratios.get(candidate.name)
                rows.append(
                    (
                        candidate.name,
                        kind,
                        f"{result.answered}/{result.probes}",
                        p50,
                        p99,
                        f"{result.log_lines} lines / {result.log_bytes} B",
                        "1 (reference)" if ratio is None else f"{statistics.median(ratio):.2f}x",
                    )
                )
                print("  " + " | ".join(rows[-1]), flush=True)
    header = ("server", "attack", "/healthz answered", "p50 ms", "p99 ms", "log growth", "calls/s vs dessert-mcp")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print()
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return 0


if __name__ == "__main__":
    with private_user_dirs():  # the ledger (on by default) and the auth wing write there
        status = main()
    sys.exit(status)
