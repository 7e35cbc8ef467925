"""Throttles under abuse: counted before the work (so parallel requests cannot race past them), per IPv6 /64, never
reset by a forwarded header nobody was told to trust, and paired so that one shared address cannot lock everyone
out. The concurrent cases send real parallel requests to a real server with the sandbox as Dessert."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from starlette.types import ASGIApp, Message

from dessert_mcp.auth.limits import address_bucket
from dessert_mcp.config import Secret, Settings
from dessert_mcp.http import HTTPOptions
from dessert_mcp.http.app import build_app
from dessert_mcp.sandbox import SandboxAccount
from tests.support.api import CANARY_KEY
from tests.support.auth import FlowClient, Running, call_tool, pkce, serve_auth
from tests.support.faults import ThreadedAccountsSandbox


@pytest.fixture
def dessert() -> Iterator[ThreadedAccountsSandbox]:
    """A sandbox of this test's own, to count the calls that reach Dessert."""
    with ThreadedAccountsSandbox({CANARY_KEY: SandboxAccount()}) as sandbox:
        yield sandbox


def upstream_calls(sandbox: ThreadedAccountsSandbox) -> int:
    return int(sandbox.stats()["total"])


def wrong_key() -> str:
    return "dsk_live_WRONG_" + secrets.token_hex(12)


async def gather(count: int, request: object) -> list[int]:
    """`count` copies of `request()` at once; their status codes."""
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await request()).status_code)  # type: ignore[operator]

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one)
    return statuses


Serve = Callable[..., AbstractContextManager[Running]]


@pytest.fixture
def oauth(dessert: ThreadedAccountsSandbox, tmp_path: Path, encryption_key: str) -> Serve:
    """`oauth(**config)`: a server with `--auth oauth` on its own SQLite file, `config` setting OAuthConfig fields."""

    def serve(**config: Any) -> AbstractContextManager[Running]:
        database_url = f"sqlite:///{tmp_path / 'auth.db'}"
        return serve_auth(
            "oauth", dessert_url=dessert.url, database_url=database_url, encryption_key=encryption_key, **config
        )

    return serve


async def token_failures_from_five_addresses(s: Running, http: httpx2.AsyncClient) -> list[int]:
    """A failing /token request claiming (X-Forwarded-For) to come from each of five addresses; the statuses."""
    client = await FlowClient(http, s.url).register()
    statuses = []
    for i in range(5):
        response = await http.post(
            s.url + "/token",
            data={"client_id": client["client_id"], "client_secret": client["client_secret"], "code": "x"},
            headers={"X-Forwarded-For": f"198.51.100.{i}"},
        )
        statuses.append(response.status_code)
    return statuses


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    limits = httpx2.Limits(max_connections=200)
    async with httpx2.AsyncClient(timeout=120, limits=limits) as client:
        yield client


async def test_parallel_wrong_keys_on_one_sign_in_reach_dessert_no_more_often_than_the_limit(
    dessert: ThreadedAccountsSandbox, database_url: str, encryption_key: str, http: httpx2.AsyncClient
) -> None:
    with serve_auth("oauth", dessert_url=dessert.url, database_url=database_url, encryption_key=encryption_key) as s:
        flow = FlowClient(http, s.url)
        request_id, csrf = await flow.sign_in_page(await flow.authorize(await flow.register(), pkce()[1]))
        statuses = await gather(200, lambda: flow.submit_key(request_id, csrf, wrong_key()))
    assert upstream_calls(dessert) <= 10  # the default sign_in_attempts
    _refused_beyond_the_limit(statuses, limit=10)


async def test_parallel_bad_token_requests_are_processed_no_more_often_than_the_limit(
    dessert: ThreadedAccountsSandbox, database_url: str, encryption_key: str, http: httpx2.AsyncClient
) -> None:
    with serve_auth("oauth", dessert_url=dessert.url, database_url=database_url, encryption_key=encryption_key) as s:
        flow = FlowClient(http, s.url)
        client = await flow.register()
        statuses = await gather(
            300,
            lambda: flow.token(
                client, grant_type="authorization_code", code=secrets.token_hex(8), code_verifier="v" * 43
            ),
        )
    _refused_beyond_the_limit(statuses, limit=30)  # the default token_failures


def _refused_beyond_the_limit(statuses: list[int], *, limit: int) -> None:
    """At most `limit` requests processed (400), the rest refused: by the limit (429) or, on a loaded machine where
    the database pool runs dry, by 503 with Retry-After; refusing is what matters, and most must be the limit's."""
    assert set(statuses) <= {400, 429, 503}, sorted(set(statuses))
    assert statuses.count(400) <= limit
    assert statuses.count(429) >= (len(statuses) - limit) // 2, statuses


async def test_a_client_failing_at_token_is_held_by_its_own_limit_not_its_address_or_account(
    oauth: Serve, http: httpx2.AsyncClient
) -> None:
    with oauth(token_failures=20, token_failures_per_client=5, token_failures_per_account=10) as s:
        flow = FlowClient(http, s.url)
        failing, other = await flow.register(), await flow.register()
        code = await flow.code_for(failing, CANARY_KEY, pkce()[1])
        # A real code of the account, with the wrong verifier: a failure the account's limit counts as well.
        statuses = await gather(60, lambda: flow.exchange(failing, code, pkce()[0]))
        assert statuses.count(400) <= 5
        assert statuses.count(429) >= 55
        # Another client behind the same address, signed in to the same account, is served as usual.
        tokens = await flow.tokens_for(other, CANARY_KEY)
        assert (await flow.refresh(other, tokens["refresh_token"])).status_code == 200


async def test_failures_against_one_account_from_many_clients_are_held_by_the_accounts_limit(
    oauth: Serve, http: httpx2.AsyncClient
) -> None:
    with oauth(token_failures=100, token_failures_per_account=5, registrations=100) as s:
        flow = FlowClient(http, s.url)
        refresh_token = (await flow.tokens_for(await flow.register(), CANARY_KEY))["refresh_token"]
        others = iter([await flow.register() for _ in range(30)])
        # Each presents the account's refresh token as its own: refused, and counted against that account.
        statuses = await gather(30, lambda: flow.refresh(next(others), refresh_token))
    assert statuses.count(400) <= 5
    assert statuses.count(429) >= 25


async def test_a_client_named_only_in_http_basic_is_held_by_its_own_limit(
    oauth: Serve, http: httpx2.AsyncClient
) -> None:
    with oauth(token_failures=100, token_failures_per_client=5) as s:
        client = await FlowClient(http, s.url).register(token_endpoint_auth_method="client_secret_basic")
        basic = httpx2.BasicAuth(client["client_id"], client["client_secret"])

        async def without_client_id_in_the_form() -> httpx2.Response:
            form = {"grant_type": "authorization_code", "code": secrets.token_hex(8), "code_verifier": "v" * 43}
            return await http.post(s.url + "/token", data=form, auth=basic)

        statuses = await gather(30, without_client_id_in_the_form)
    assert statuses.count(401) <= 5
    assert statuses.count(429) >= 25


async def test_a_good_exchange_does_not_use_up_the_token_endpoints_failure_budget(
    oauth: Serve, http: httpx2.AsyncClient
) -> None:
    with oauth(token_failures=2) as s:
        flow = FlowClient(http, s.url)
        client = await flow.register()
        tokens = await flow.tokens_for(client, CANARY_KEY)
        for _ in range(3):
            refreshed = await flow.refresh(client, tokens["refresh_token"])
            assert refreshed.status_code == 200
            tokens = refreshed.json()


async def test_authorize_is_throttled_per_address(oauth: Serve, http: httpx2.AsyncClient) -> None:
    with oauth(authorizations=5) as s:
        flow = FlowClient(http, s.url)
        client = await flow.register()
        statuses = [(await flow.authorize(client, pkce()[1])).status_code for _ in range(7)]
    assert statuses == [302] * 5 + [429, 429]


async def test_one_sign_in_used_up_does_not_lock_out_another_person_at_the_same_address(
    oauth: Serve, http: httpx2.AsyncClient
) -> None:
    with oauth() as s:
        flow = FlowClient(http, s.url)
        client = await flow.register()
        mistyped, csrf = await flow.sign_in_page(await flow.authorize(client, pkce()[1]))
        statuses = [(await flow.submit_key(mistyped, csrf, wrong_key())).status_code for _ in range(11)]
        assert statuses == [400] * 10 + [429]
        # Someone else behind the same address (an office, a NAT) signs in as usual.
        other, other_csrf = await flow.sign_in_page(await flow.authorize(client, pkce()[1]))
        assert (await flow.submit_key(other, other_csrf, CANARY_KEY)).status_code == 200


async def test_a_forwarded_for_header_from_an_untrusted_peer_does_not_reset_the_throttle(
    oauth: Serve, http: httpx2.AsyncClient
) -> None:
    with oauth(token_failures=3) as s:
        statuses = await token_failures_from_five_addresses(s, http)
    assert statuses == [400] * 3 + [429, 429]


async def test_a_named_trusted_proxy_has_its_forwarded_for_believed(oauth: Serve, http: httpx2.AsyncClient) -> None:
    with oauth(token_failures=3, trusted_proxies=("127.0.0.1",)) as s:
        statuses = await token_failures_from_five_addresses(s, http)
    assert statuses == [400] * 5  # five different clients behind the proxy, one failure each


def test_an_ipv6_client_is_counted_by_its_64_so_rotating_addresses_does_not_help() -> None:
    assert address_bucket("2001:db8:1:2::1") == address_bucket("2001:db8:1:2:ffff:ffff:ffff:fffe")
    assert address_bucket("2001:db8:1:2::1") != address_bucket("2001:db8:1:3::1")
    assert address_bucket("::ffff:198.51.100.7") == address_bucket("198.51.100.7") == "198.51.100.7"


async def test_token_failures_from_one_ipv6_64_share_one_budget(tmp_path: Path, encryption_key: str) -> None:
    from dessert_mcp.auth import OAuthConfig

    oauth = OAuthConfig(
        public_url="http://127.0.0.1:1",
        encryption_key=Secret(encryption_key),
        database_url=f"sqlite:///{tmp_path / 'auth.db'}",
        token_failures=3,
    )
    settings = Settings.from_env({}, log_level="WARNING", tool_names="dotted")
    app = build_app(settings, HTTPOptions(auth="oauth", oauth=oauth).check(settings))
    statuses = []
    async with running(app):
        for i in range(5):
            transport = httpx2.ASGITransport(app=app, client=(f"2001:db8:1:2::{i + 1:x}", 40000))
            async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:1") as client:
                response = await client.post("/token", data={"client_id": "nobody", "code": "x"})
                statuses.append(response.status_code)
    assert statuses == [401] * 3 + [429, 429]


@asynccontextmanager
async def running(app: ASGIApp) -> AsyncIterator[None]:
    """The app's lifespan, run as a server runs it (so the token database is opened and closed)."""
    to_app, app_reads = anyio.create_memory_object_stream[Message](2)
    app_writes, from_app = anyio.create_memory_object_stream[Message](2)
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    async with to_app, app_reads, app_writes, from_app, anyio.create_task_group() as tg:
        tg.start_soon(app, scope, app_reads.receive, app_writes.send)
        await to_app.send({"type": "lifespan.startup"})
        assert (await from_app.receive())["type"] == "lifespan.startup.complete"
        try:
            yield
        finally:
            await to_app.send({"type": "lifespan.shutdown"})
            assert (await from_app.receive())["type"] == "lifespan.shutdown.complete"


async def test_dessert_key_mode_sends_only_so_many_new_keys_to_dessert_and_known_keys_keep_working(
    dessert: ThreadedAccountsSandbox, http: httpx2.AsyncClient
) -> None:
    with serve_auth("dessert-key", dessert_url=dessert.url) as s:
        assert not (await call_tool(s.mcp_url, CANARY_KEY)).is_error  # a key that works, before the flood
        before = upstream_calls(dessert)
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "dessert.get_balance"}}
        headers = {"Accept": "application/json, text/event-stream"}

        async def fresh_key() -> httpx2.Response:
            return await http.post(s.mcp_url, json=body, headers={**headers, "Authorization": f"Bearer {wrong_key()}"})

        statuses = await gather(100, fresh_key)
        assert upstream_calls(dessert) - before <= 20  # NEW_KEYS_PER_ADDRESS
        assert statuses.count(429) >= 80
        assert not (await call_tool(s.mcp_url, CANARY_KEY)).is_error


async def test_dessert_key_mode_asks_dessert_about_a_refused_key_once(
    dessert: ThreadedAccountsSandbox, http: httpx2.AsyncClient
) -> None:
    with serve_auth("dessert-key", dessert_url=dessert.url) as s:
        refused = wrong_key()
        first = await call_tool(s.mcp_url, refused)
        assert first.is_error
        assert "auth_invalid" in first.content[0].text
        calls = upstream_calls(dessert)
        for _ in range(5):
            again = await http.post(s.mcp_url, json={}, headers={"Authorization": f"Bearer {refused}"})
            assert again.status_code == 401
        assert upstream_calls(dessert) == calls
