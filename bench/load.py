"""A lean load generator for streamable HTTP: raw HTTP/1.1 keep-alive POSTs of one `tools/call`, so that the
client costs a few tens of microseconds per call and the server, not the load generator, sets the pace.

`python bench/load.py URL TOOL --versus URL2 [--versus-tool T] [--versus-bearers FILE] --concurrency 16 --seconds 5`
loads the two servers side by side, in turns of `--slice` seconds (0.2 by default), `--seconds` each in all, over
connections kept open to both, and prints one JSON line, `{"a": {...}, "b": {...}}`: each side's calls, errors,
seconds and rate over its own turns only. Every answer is checked: HTTP 200 and a JSON-RPC result without isError
(anything else counts as an error). `--versus-bearers FILE` sends `Authorization: Bearer <line n % lines>` on the
second server's connection n (a file: tokens stay out of `ps`). Whatever the rest of a shared machine does for
more than a few turns then falls on both sides alike, so their ratio holds where two separate runs of a few seconds
each differ by tens of per cent. `--versus` and `--versus-tool` may be repeated: a third server is "c", and
so on, each `--versus-tool` going with the `--versus` in the same place.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

HANDSHAKE_ERA = ("2025-11-25", "2025-06-18", "2025-03-26")


def _request(host: str, port: int, path: str, tool: str, protocol: str, bearer: str | None = None) -> bytes:
    params: dict[str, object] = {"name": tool, "arguments": {}}
    if protocol not in HANDSHAKE_ERA:  # a self-contained request carries its envelope in _meta
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": protocol,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "dessert-mcp-bench", "version": "1"},
        }
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: {protocol}\r\n"
        + ("" if protocol in HANDSHAKE_ERA else f"Mcp-Method: tools/call\r\nMcp-Name: {tool}\r\n")
        + ("" if bearer is None else f"Authorization: Bearer {bearer}\r\n")
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                return status, b"".join(p[:-2] for p in parts)
    raise RuntimeError(f"response without a length: {headers}")


def _ok(status: int, body: bytes) -> bool:
    if status != 200:
        return False
    text = body.decode()
    if text.lstrip().startswith("{"):
        payload = text
    else:  # one SSE event carrying the JSON-RPC response
        payload = "".join(line[5:].strip() for line in text.splitlines() if line.startswith("data:") and len(line) > 6)
    message = json.loads(payload)
    return "result" in message and not message["result"].get("isError")


@dataclass
class Side:
    """One server of a side-by-side run: its connections, and the calls it answered in its own turns."""

    url: str
    tool: str
    bearers: list[str] | None
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]] = field(default_factory=list)
    address: tuple[str, int] = ("127.0.0.1", 80)
    calls: int = 0
    errors: int = 0
    busy_s: float = 0.0

    async def open(self, concurrency: int, protocol: str) -> None:
        parts = urlsplit(self.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        each: list[str | None] = [*self.bearers] if self.bearers else [None]
        requests = [_request(host, port, parts.path, self.tool, protocol, bearer) for bearer in each]
        self.address = (host, port)
        for n in range(concurrency):
            reader, writer = await asyncio.open_connection(host, port)
            self.connections.append((reader, writer, requests[n % len(requests)]))

    async def turn(self, seconds: float, *, counted: bool = True) -> None:
        """Every connection calls until `seconds` have passed; the calls in flight then finish (and count)."""
        started = time.perf_counter()
        until = started + seconds

        async def caller(n: int) -> None:
            while time.perf_counter() < until:
                reader, writer, request = self.connections[n]
                try:
                    writer.write(request)
                    status, body = await _read_response(reader)
                except (asyncio.IncompleteReadError, ConnectionError) as exc:
                    # The server closed the connection: an error, named once on stderr; the caller goes on anew.
                    if not self.errors:
                        print(f"{self.url}: {exc!r}", file=sys.stderr)
                    self.calls += counted
                    self.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(*self.address)
                    self.connections[n] = (reader, writer, request)
                    continue
                if counted:
                    self.calls += 1
                    self.errors += not _ok(status, body)

        await asyncio.gather(*(caller(n) for n in range(len(self.connections))))
        if counted:
            self.busy_s += time.perf_counter() - started

    def close(self) -> None:
        for _, writer, _ in self.connections:
            writer.close()

    def result(self) -> dict[str, float]:
        return {"calls": self.calls, "errors": self.errors, "seconds": self.busy_s, "rate": self.calls / self.busy_s}


async def versus(
    sides: list[Side], *, concurrency: int, seconds: float, slice_s: float, protocol: str
) -> dict[str, dict[str, float]]:
    """Load the sides in turns, each round starting one side later (for two: b first every other round); each
    side's rate over its own turns, keyed "a", "b", ..."""
    for side in sides:
        await side.open(concurrency, protocol)
        await side.turn(min(1.0, seconds / 5), counted=False)  # warm-up: first calls, caches, per-account state
    try:
        for n in range(max(1, round(seconds / slice_s))):
            shift = n % len(sides)
            for side in sides[shift:] + sides[:shift]:
                await side.turn(slice_s)
    finally:
        for side in sides:
            side.close()
    return {chr(ord("a") + i): side.result() for i, side in enumerate(sides)}


def _bearers(path: str | None) -> list[str] | None:
    if not path:
        return None
    with open(path) as lines:
        return [line.strip() for line in lines if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("tool")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--protocol", default="2025-11-25")
    parser.add_argument(
        "--versus", action="append", required=True, help="another server's URL, loaded in turns (repeatable)"
    )
    parser.add_argument(
        "--versus-tool", action="append", default=[], help="the tool to call on that server (default: TOOL)"
    )
    parser.add_argument("--versus-bearers", help="a file with one bearer token per line, for the second server")
    parser.add_argument("--slice", type=float, default=0.2, help="seconds of one turn")
    args = parser.parse_args()
    tools = args.versus_tool + [args.tool] * (len(args.versus) - len(args.versus_tool))
    sides = [Side(args.url, args.tool, None)]
    sides += [Side(url, tool, None) for url, tool in zip(args.versus, tools, strict=False)]
    sides[1].bearers = _bearers(args.versus_bearers)
    turns = versus(
        sides, concurrency=args.concurrency, seconds=args.seconds, slice_s=args.slice, protocol=args.protocol
    )
    print(json.dumps(asyncio.run(turns)))


if __name__ == "__main__":
    main()
