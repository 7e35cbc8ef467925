"""A lean load generator for streamable HTTP: raw HTTP/1.1 keep-alive POSTs of one `tools/call`, so that the
client costs a few tens of microseconds per call and the server, not the load generator, sets the pace.

`python bench/load.py URL TOOL --concurrency 16 --seconds 5` prints one JSON line: calls, errors, seconds, rate.
Every answer is checked: HTTP 200 and a JSON-RPC result without isError (anything else counts as an error).
`--bearers FILE` sends `Authorization: Bearer <line n % lines>` on connection n (a file: tokens stay out of `ps`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
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


async def run(
    url: str, tool: str, concurrency: int, seconds: float, protocol: str, bearers: list[str] | None = None
) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    each: list[str | None] = [*bearers] if bearers else [None]
    requests = [_request(host, port, parts.path, tool, protocol, bearer) for bearer in each]
    calls = errors = 0
    warmup = min(1.0, seconds / 5)
    counted_from = time.perf_counter() + warmup
    stop = counted_from + seconds

    async def worker(n: int) -> None:
        nonlocal calls, errors
        # Connections open one by one over the first half of the warm-up, as a client pool grows under load.
        # Sixteen at once would all go to whichever worker process wins the accept race (with --workers N,
        # they share one listening socket and asyncio accepts every pending connection in one go).
        await asyncio.sleep(warmup / 2 * n / concurrency)
        reader, writer = await asyncio.open_connection(host, port)
        request = requests[n % len(requests)]
        try:
            while (now := time.perf_counter()) < stop:
                writer.write(request)
                status, body = await _read_response(reader)
                if now >= counted_from:
                    calls += 1
                    errors += not _ok(status, body)
        finally:
            writer.close()

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return {"calls": calls, "errors": errors, "seconds": seconds, "rate": calls / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("tool")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--protocol", default="2025-11-25")
    parser.add_argument("--bearers", help="a file with one bearer token per line, used round-robin per connection")
    args = parser.parse_args()
    bearers = None
    if args.bearers:
        with open(args.bearers) as lines:
            bearers = [line.strip() for line in lines if line.strip()]
    print(json.dumps(asyncio.run(run(args.url, args.tool, args.concurrency, args.seconds, args.protocol, bearers))))


if __name__ == "__main__":
    main()
