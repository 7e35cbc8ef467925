"""What `--auth` costs: calls/s over streamable HTTP with `--auth oauth` (10,000 linked accounts in the SQLite
database) and with `--auth dessert-key`, each side by side with the same set-up without auth, and the token check.

Run with `.venv/bin/python bench/auth.py`. Every server is `dessert-mcp --transport http` in its own process (one
worker); the Dessert API is a sandbox in another process that knows all 10,000 keys. Each set-up is measured side by
side with the no-auth server: one bench/load.py process (concurrency 16, every answer checked) loads the two in
alternating turns of 0.2 s over connections kept open to both, so whatever the rest of a shared machine does falls on
both sides alike (two separate runs of a few seconds each differ by tens of per cent here). A round does this for
every set-up, in reversed order every other round; each ratio is the median of the rounds' ratios. Each row also
shows the server's CPU time per call and its ratio to the baseline's. A control row puts a second no-auth server in
the other seat: its ratio shows how far the method itself spreads.

Two load shapes per mode: all 16 connections as one account, and 16 accounts at once. Each runs twice: on servers
without the answer cache (the default) and on servers with DESSERT_CACHE_TTL_S=2, against the no-auth server with the
same cache setting. One account makes the same Dessert traffic as the no-auth baseline, so its ratio is what auth
costs: it has the target. Sixteen accounts also pay for tenancy, which a server without auth does not have: each
account its own Dessert client, cache entries and requests (without the cache, one account's identical calls in
flight share one request; sixteen accounts' calls cannot): reported.

The token check is timed three ways: oauth from the database (what a token costs once per DESSERT_MCP_TOKEN_CACHE_S
per process), oauth from the token cache (every other request), and dessert-key; reported as p50 and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

import _repo  # noqa: F401  (the repository on the import path, for tests.support)
from tests.support.processes import accepting, cpu_seconds, free_port, printed, private_user_dirs, started

HERE = Path(__file__).parent
PY = sys.executable
ACCOUNTS = 10_000
CONCURRENCY = 16
TOOL = "dessert.get_balance"
TARGET_RATIO = 0.9
# The token check's cost is reported (p50, p99) beside the calls/s it leaves.
TOKEN_CHECKS = ("oauth, database", "oauth, cached", "dessert-key")
# The answer cache of the second set of servers: every account's answer reused for this long.
CACHE_TTL_S = 2


def bench_key(i: int) -> str:
    return f"dsk_bench_{i:05d}_{'0123456789abcdef' * 2}"


# -- the sandbox: dessert_mcp.sandbox.Sandbox answering every key in a file (its own process) ------------------


def serve_sandbox(keys_file: str) -> None:
    from dessert_mcp.sandbox import Request, Sandbox

    keys = set(Path(keys_file).read_text().split())

    class ManyKeys(Sandbox):
        async def handle(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
            if request.headers.get("authorization", "").removeprefix("Bearer ") in keys:
                request = replace(request, headers={**request.headers, "authorization": f"Bearer {self.key}"})
            return await super().handle(request, reader, writer)

    async def main() -> None:
        sandbox = ManyKeys()
        await sandbox.start()
        print(sandbox.url, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


@contextmanager
def sandbox_process(keys_file: Path) -> Iterator[str]:
    argv = [PY, __file__, "--serve-sandbox", str(keys_file)]
    with started(argv, env=os.environ, ready=printed(r"http://\S+\n")) as sandbox:
        yield sandbox.output().split()[0]


# -- the database: 10,000 linked accounts, each with a live grant and access token, made through the store --------


async def link_accounts(database_url: str, encryption_key: str, public_url: str) -> list[str]:
    """Returns every account's access token, in key order."""
    from dessert_mcp.auth import SCOPE, DessertOAuthProvider, OAuthConfig, Store
    from dessert_mcp.auth._crypto import key_hash, new_token
    from dessert_mcp.config import Secret

    config = OAuthConfig(public_url=public_url, encryption_key=Secret(encryption_key), database_url=database_url)
    provider = DessertOAuthProvider(config, Store(database_url))
    params = {
        "scopes": [SCOPE],
        "resource": config.resource,
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "redirect_uri": "http://127.0.0.1:9/callback",
        "redirect_uri_provided_explicitly": True,
    }
    tokens = []
    try:
        for i in range(ACCOUNTS):
            key = bench_key(i)
            code = await provider.link_and_issue_code(
                client_id="bench", key=Secret(key), params=params, key_hash_value=key_hash(key)
            )
            access = new_token("dmcp_at_")
            await provider.store.redeem_code(
                code, access=access, access_ttl_s=86400, refresh=new_token("dmcp_rt_"), refresh_ttl_s=86400
            )
            tokens.append(access)
    finally:
        await provider.aclose()
    return tokens


async def token_check_ms(
    database_url: str, encryption_key: str, public_url: str, tokens: list[str]
) -> dict[str, float]:
    """p50/p99 of one token check, in this process, as the SDK's middleware calls it: oauth from the database (a
    token this process has not checked in the last DESSERT_MCP_TOKEN_CACHE_S: one indexed query and an AES-GCM
    open), oauth from the token cache (the same token again), and dessert-key (a syntax check and a hash)."""
    from dessert_mcp.auth import DessertKeyVerifier, DessertOAuthProvider, OAuthConfig, Store
    from dessert_mcp.config import Secret

    config = OAuthConfig(public_url=public_url, encryption_key=Secret(encryption_key), database_url=database_url)
    uncached = DessertOAuthProvider(replace(config, token_cache_s=0), Store(database_url))
    provider = DessertOAuthProvider(config, Store(database_url))
    verifier = DessertKeyVerifier()
    sample = random.Random(7).choices(range(ACCOUNTS), k=3000)
    timings: dict[str, list[float]] = {mode: [] for mode in TOKEN_CHECKS}
    try:
        for i in sample:
            started = time.perf_counter()
            assert await uncached.load_access_token(tokens[i]) is not None
            timings["oauth, database"].append(time.perf_counter() - started)
            assert await provider.load_access_token(tokens[i]) is not None
            started = time.perf_counter()
            assert await provider.load_access_token(tokens[i]) is not None
            timings["oauth, cached"].append(time.perf_counter() - started)
            started = time.perf_counter()
            assert await verifier.verify_token(bench_key(i)) is not None
            timings["dessert-key"].append(time.perf_counter() - started)
    finally:
        await uncached.aclose()
        await provider.aclose()
    result = {}
    for mode, values in timings.items():
        values = sorted(values[200:])  # after warm-up
        result[f"{mode} p50"] = 1000 * values[len(values) // 2]
        result[f"{mode} p99"] = 1000 * values[int(len(values) * 0.99)]
    return result


# -- servers and load --------------------------------------------------------------------------------------------


@contextmanager
def server(args: list[str], env: dict[str, str], port: int) -> Iterator[tuple[str, int]]:
    """A dessert-mcp HTTP server on `port`; yields its MCP URL and its pid once it accepts connections."""
    argv = [PY, "-m", "dessert_mcp", "--transport", "http", *args, "--port", "{port}"]
    with started(argv, env=env, ready=accepting, port=port) as running:
        yield f"{running.url}/mcp", running.pid


def side_by_side(
    baseline: tuple[str, int], other: tuple[str, int], seconds: float, bearers: Path | None
) -> tuple[dict[str, float], dict[str, float]]:
    """The no-auth baseline and another server loaded in alternating turns by one bench/load.py process (one account:
    `bearers` for the other side); for each side its calls/s over its own turns and its CPU seconds per call."""
    argv = [PY, str(HERE / "load.py"), baseline[0], TOOL, "--concurrency", str(CONCURRENCY), "--seconds", str(seconds)]
    argv += ["--versus", other[0]] + (["--versus-bearers", str(bearers)] if bearers is not None else [])
    before = {pid: cpu_seconds(pid) for _, pid in (baseline, other)}
    result = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    sides = []
    for name, (url, pid) in zip("ab", (baseline, other), strict=True):
        side = result[name]
        if side["errors"]:
            raise RuntimeError(f"{side['errors']} of {side['calls']} calls at {url} failed")
        # The warm-up turn's calls are not counted; its CPU is, on both sides alike.
        sides.append({"rate": side["rate"], "cpu": (cpu_seconds(pid) - before[pid]) / max(side["calls"], 1)})
    return sides[0], sides[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds of load on each side of a comparison")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve-sandbox", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sandbox:
        serve_sandbox(args.serve_sandbox)
        return 0

    work = Path(tempfile.mkdtemp(prefix="dessert-auth-bench-"))
    try:
        return run(work, args.seconds, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, seconds: float, rounds: int) -> int:
    from dessert_mcp.auth import generate_encryption_key

    os.chmod(work, 0o700)
    keys_file = work / "keys"
    keys_file.write_text("\n".join(bench_key(i) for i in range(ACCOUNTS)))
    database_url = f"sqlite:///{work / 'auth.db'}"
    encryption_key = generate_encryption_key()
    # Both oauth servers (without and with the answer cache) are replicas behind one public URL: the first's.
    oauth_port = free_port()
    public_url = f"http://127.0.0.1:{oauth_port}"

    print(f"Linking {ACCOUNTS} accounts through the store ...", flush=True)
    started = time.perf_counter()
    tokens = asyncio.run(link_accounts(database_url, encryption_key, public_url))
    print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)

    active = random.Random(1).sample(range(ACCOUNTS), CONCURRENCY)  # the accounts calling, out of 10,000
    bearers = {
        ("dessert-key", 1): [bench_key(active[0])],
        ("dessert-key", CONCURRENCY): [bench_key(i) for i in active],
        ("oauth", 1): [tokens[active[0]]],
        ("oauth", CONCURRENCY): [tokens[i] for i in active],
    }
    bearer_files: dict[tuple[str, int], Path] = {}
    for shape, lines in bearers.items():
        path = work / f"bearers-{len(bearer_files)}"
        path.write_text("\n".join(lines))
        bearer_files[shape] = path

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("DESSERT_")}
    base_env["DESSERT_MCP_LOG_LEVEL"] = "WARNING"
    # Set-ups: (mode, accounts calling, answer cache on), each run side by side with "no auth" under the same cache
    # setting; "no auth (control)" is a second no-auth server, which shows how far the method itself spreads.
    setups = [
        (mode, accounts, cached)
        for cached in (False, True)
        for mode in ("no auth (control)", "dessert-key", "oauth")
        for accounts in ((1,) if mode == "no auth (control)" else (1, CONCURRENCY))
    ]
    ratios: dict[tuple[str, int, bool], list[float]] = {setup: [] for setup in setups}
    cpu_ratios: dict[tuple[str, int, bool], list[float]] = {setup: [] for setup in setups}
    rates: dict[tuple[str, int, bool], list[float]] = {setup: [] for setup in setups}
    cpu: dict[tuple[str, int, bool], list[float]] = {setup: [] for setup in setups}
    baseline_rates: dict[bool, list[float]] = {False: [], True: []}
    baseline_cpu: dict[bool, list[float]] = {False: [], True: []}
    with sandbox_process(keys_file) as sandbox_url, ExitStack() as stack:
        env = base_env | {"DESSERT_API_BASE_URL": sandbox_url}
        urls: dict[tuple[str, bool], tuple[str, int]] = {}
        for cached in (False, True):
            cache_env = env | {"DESSERT_CACHE_TTL_S": str(CACHE_TTL_S if cached else 0)}
            oauth_env = cache_env | {
                "DESSERT_MCP_ENCRYPTION_KEY": encryption_key,
                "DESSERT_MCP_DATABASE_URL": database_url,
            }
            for mode in ("no auth", "no auth (control)"):
                urls[mode, cached] = stack.enter_context(
                    server([], cache_env | {"DESSERT_API_KEY": bench_key(active[0])}, free_port())
                )
            urls["dessert-key", cached] = stack.enter_context(server(["--auth", "dessert-key"], cache_env, free_port()))
            urls["oauth", cached] = stack.enter_context(
                server(
                    ["--auth", "oauth", "--public-url", public_url], oauth_env, free_port() if cached else oauth_port
                )
            )
        for n in range(rounds):
            print(f"Round {n + 1} of {rounds}", flush=True)
            # Reversed every other round, so that drift on the shared machine does not always favour one set-up.
            for mode, accounts, cached in setups if n % 2 == 0 else setups[::-1]:
                base, other = side_by_side(
                    urls["no auth", cached], urls[mode, cached], seconds, bearer_files.get((mode, accounts))
                )
                setup = (mode, accounts, cached)
                ratios[setup].append(other["rate"] / base["rate"])
                cpu_ratios[setup].append(base["cpu"] / other["cpu"])
                rates[setup].append(other["rate"])
                cpu[setup].append(other["cpu"])
                baseline_rates[cached].append(base["rate"])
                baseline_cpu[cached].append(base["cpu"])
                print(
                    f"  {describe(mode, accounts, cached)}: {other['rate']:.0f} calls/s beside no auth's "
                    f"{base['rate']:.0f} = {ratios[setup][-1]:.2f}x",
                    flush=True,
                )

    checks = asyncio.run(token_check_ms(database_url, encryption_key, public_url, tokens))
    table: list[tuple[str, str, str, bool | None]] = []
    for cached in (False, True):
        rate, per_call = statistics.median(baseline_rates[cached]), 1000 * statistics.median(baseline_cpu[cached])
        what = f"{describe('no auth', 1, cached)} (baseline)"
        table.append((what, f"{rate:.0f} calls/s, {per_call:.2f} ms CPU", "", None))
        for mode, accounts, in_cache in setups:
            if in_cache != cached:
                continue
            setup = (mode, accounts, cached)
            ratio, cpu_ratio = statistics.median(ratios[setup]), statistics.median(cpu_ratios[setup])
            rate, per_call = statistics.median(rates[setup]), 1000 * statistics.median(cpu[setup])
            # One account makes the same Dessert traffic as the no-auth baseline: its ratio is what auth costs.
            # Sixteen accounts also pay for tenancy (each account's own client, cache entries and Dessert requests,
            # where one account's identical calls share them), which no server without auth has: reported.
            target = accounts == 1 and mode != "no auth (control)"
            table.append(
                (
                    f"{'' if mode.startswith('no auth') else '--auth '}{describe(mode, accounts, cached)}",
                    f"{rate:.0f} calls/s = {ratio:.2f}x, {per_call:.2f} ms CPU = {cpu_ratio:.2f}x",
                    f">= {TARGET_RATIO}x" if target else "report",
                    ratio >= TARGET_RATIO if target else None,
                )
            )
    for mode in TOKEN_CHECKS:
        p50, p99 = checks[f"{mode} p50"], checks[f"{mode} p99"]
        table.append((f"token check, {mode} (p50 {p50:.3f} ms)", f"p99 {p99:.3f} ms", "report", None))
    print(
        f"\ndessert-mcp --auth bench: streamable HTTP, 1 worker per server, concurrency {CONCURRENCY}, {TOOL}, "
        f"{ACCOUNTS} linked accounts (SQLite), each set-up side by side with no auth in turns of 0.2 s, "
        f"{seconds:g} s a side, median of {rounds} rounds"
    )
    width = max(len(r[0]) for r in table)
    for what, measured, target_text, ok in table:
        flag = "" if ok is None else ("PASS" if ok else "FAIL")
        print(f"  {what:<{width}}  {measured:<44}  {target_text:<10}  {flag}")
    return 0 if all(ok is not False for *_, ok in table) else 1


def describe(mode: str, accounts: int, cached: bool) -> str:
    who = f"{accounts} account{'s' if accounts > 1 else ''}"
    return f"{mode}, {who}, " + (f"DESSERT_CACHE_TTL_S={CACHE_TTL_S}" if cached else "no cache")


if __name__ == "__main__":
    with private_user_dirs():  # the ledger (on by default) and the auth wing write there
        status = main()
    sys.exit(status)
