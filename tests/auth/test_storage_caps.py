"""What an anonymous caller can make the auth wing store or read: bounded bodies, bounded fields, and metadata-document
clients that expire instead of staying forever."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from starlette.types import Message, Receive, Scope, Send

from dessert_mcp.auth import Store
from dessert_mcp.auth.limits import MAX_BODY_BYTES
from dessert_mcp.auth.wiring import AUTH_ROUTES, AuthGuard
from tests.support.api import CANARY_KEY
from tests.support.auth import Clock, FlowClient, oauth_flow_on, pkce
from tests.support.faults import ThreadedAccountsSandbox


def rows(db_path: Path, table: str) -> int:
    with sqlite3.connect(db_path) as db:
        count: int = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        return count


def every_row(db_path: Path) -> dict[str, int]:
    """The row count of every table in the SQLite file."""
    with sqlite3.connect(db_path) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in tables}


async def test_four_hundred_authorize_requests_and_their_sign_in_pages_write_no_row(
    canary_api: ThreadedAccountsSandbox, tmp_path: Path, encryption_key: str
) -> None:
    database = tmp_path / "auth.db"
    async with oauth_flow_on(canary_api.url, database, encryption_key, authorizations=1000) as flow:
        client = await flow.register()
        await flow.sign_in_page(await flow.authorize(client, pkce()[1]))  # the address's throttle row
        before = every_row(database)
        for i in range(400):
            response = await flow.authorize(client, pkce()[1], state="s" * 2000)
            assert response.status_code == 302
            if i % 10 == 0:
                await flow.sign_in_page(response)
        assert every_row(database) == before
        # A sign-in still works, and its first row is written when the key checks.
        request_id, csrf = await flow.sign_in_page(await flow.authorize(client, pkce()[1]))
        assert (await flow.submit_key(request_id, csrf, CANARY_KEY)).status_code == 200
        assert rows(database, "sign_ins") == before["sign_ins"] + 1


async def test_a_chunked_upload_without_content_length_to_the_sign_in_form_is_cut_off_at_the_cap(
    oauth_flow: FlowClient,
) -> None:
    # A raw socket: chunked, so no Content-Length for a header check to see, and a body that never ends (no closing
    # zero-size chunk). The answer can only come from the server counting what it read. One write, a little past the
    # cap, so the server has read everything sent when it closes and the client reads the answer, not a reset.
    address = urlsplit(oauth_flow.base)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    part = b'--x\r\nContent-Disposition: form-data; name="f"; filename="f"\r\n\r\n' + b"A" * (MAX_BODY_BYTES + 1024)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            b"POST /signin HTTP/1.1\r\nHost: %s:%d\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n\r\n%x\r\n%s\r\n"
            % (host.encode(), port, len(part), part)
        )
        await writer.drain()
        async with asyncio.timeout(60):
            answer = await reader.read()  # to EOF: the server closes, the body unfinished
    finally:
        writer.close()
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 413 "), answer[:200]
    assert b"connection: close" in head


async def test_a_declared_oversize_body_is_refused_before_it_is_read(oauth_flow: FlowClient) -> None:
    response = await oauth_flow.http.post(
        oauth_flow.base + "/register", content=b"{" + b" " * (MAX_BODY_BYTES + 1) + b"}"
    )
    assert response.status_code == 413


class LargeBody:
    """A client sending 64 times the cap in 4 KiB chunks: counts what the app pulled from `receive`."""

    size = 64 * MAX_BODY_BYTES

    def __init__(self) -> None:
        self.received = 0

    async def receive(self) -> Message:
        if self.received >= self.size:
            return {"type": "http.disconnect"}
        self.received += 4096
        return {"type": "http.request", "body": b"a" * 4096, "more_body": self.received < self.size}


@pytest.mark.parametrize("path", sorted(AUTH_ROUTES))
async def test_every_auth_route_reads_no_more_than_the_cap_whatever_the_framing(
    path: str, tmp_path: Path, encryption_key: str
) -> None:
    from dessert_mcp.auth import OAuthConfig, OAuthWiring
    from dessert_mcp.config import Secret

    config = OAuthConfig(
        public_url="http://127.0.0.1:1",
        encryption_key=Secret(encryption_key),
        database_url=f"sqlite:///{tmp_path / 'auth.db'}",
    )
    wiring = OAuthWiring(config)

    async def reads_everything(scope: Scope, receive: Receive, send: Send) -> None:
        while (message := await receive())["type"] == "http.request" and message["more_body"]:
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read it all"})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    client = LargeBody()
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"",
        "headers": [(b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 5000),
    }
    try:
        await AuthGuard(reads_everything, wiring)(scope, client.receive, send)
    finally:
        await wiring.aclose()
    assert sent[0]["status"] == 413
    assert client.received <= MAX_BODY_BYTES + 4096
    assert b"read it all" not in b"".join(m.get("body", b"") for m in sent)


async def test_a_huge_state_on_authorize_is_refused_and_stores_nothing(oauth_flow: FlowClient, oauth_db: Path) -> None:
    client = await oauth_flow.register()
    before = rows(oauth_db, "sign_ins")
    huge = await oauth_flow.authorize(client, pkce()[1], state="s" * 60_000)
    assert huge.status_code in (400, 414)  # the HTTP parser may refuse so long a request line before we see it
    large = await oauth_flow.authorize(client, pkce()[1], state="s" * 3000)
    assert large.status_code in (302, 400)
    assert "/signin" not in large.headers.get("location", "")
    assert rows(oauth_db, "sign_ins") == before


async def test_registration_fields_are_bounded(oauth_flow: FlowClient) -> None:
    for metadata in (
        {"client_name": "n" * 5000, "redirect_uris": ["http://127.0.0.1:9/cb"]},
        {"redirect_uris": [f"http://127.0.0.1:9/cb{i}" for i in range(50)]},
        {"redirect_uris": ["https://app.example/" + "p" * 5000]},
        {"redirect_uris": ["http://127.0.0.1:9/cb"], "client_uri": "https://app.example/" + "u" * 5000},
    ):
        response = await oauth_flow.http.post(oauth_flow.base + "/register", json=metadata)
        assert response.status_code == 400, metadata
        assert response.json()["error"] in ("invalid_client_metadata", "invalid_redirect_uri")


async def test_metadata_document_clients_expire_and_are_deleted_not_kept_forever(tmp_path: Path) -> None:
    clock = Clock()
    store = Store(f"sqlite:///{tmp_path / 'auth.db'}", clock=clock)
    try:
        info = {"client_id": "https://a.example/c.json", "redirect_uris": ["http://127.0.0.1:9/cb"]}
        await store.put_client(
            "https://a.example/c.json", kind="cimd", info=info, secret_sealed=None, expires_at=clock() + 60
        )
        await store.put_client("dcr-1", kind="dcr", info={"client_id": "dcr-1"}, secret_sealed=None)
        clock.advance(2 * 3600)
        # Another document's client arriving takes the expired ones away; a registered client stays.
        await store.put_client(
            "https://b.example/c.json", kind="cimd", info=info, secret_sealed=None, expires_at=clock() + 60
        )
        assert await store.get_client("https://a.example/c.json") is None
        assert await store.get_client("dcr-1") is not None
        clock.advance(2 * 3600)
        assert await store.prune() >= 1
        assert await store.get_client("https://b.example/c.json") is None
    finally:
        await store.aclose()
