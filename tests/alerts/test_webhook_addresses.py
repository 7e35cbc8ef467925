"""Where alert webhooks may go: the URL rules at start-up, and the address rules at each attempt. No packet leaves the
machine: the resolver is faked and the network is a MockTransport, which records what would have been sent where."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from dessert_mcp.alerts import Alert
from dessert_mcp.alerts.database import ALERTS_SCHEMA, DatabaseAlertStore
from dessert_mcp.alerts.webhooks import Deliverer, Finished, Schedule
from dessert_mcp.config import ConfigError, Secret, Settings
from dessert_mcp.storage import Database

PUBLIC = "93.184.215.14"  # a global address; never connected to: the transport is fake
TOKEN = "token-that-must-not-leak-0123"


def resolving_to(*addresses: str) -> Callable[[str, int], Any]:
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[DatabaseAlertStore]:
    db = Database(f"sqlite:///{tmp_path / 'ledger.sqlite'}", schemas=[ALERTS_SCHEMA])
    try:
        yield DatabaseAlertStore(db)
    finally:
        await db.aclose()


async def deliver_once(
    store: DatabaseAlertStore,
    url: str,
    resolve: Callable[[str, int], Any],
    answer: Callable[[httpx2.Request], httpx2.Response] = lambda request: httpx2.Response(200),
    *,
    allowed_hosts: tuple[str, ...] = (),
) -> tuple[list[httpx2.Request], Finished]:
    """Queue one alert for `url` and make one attempt at it (a single attempt: failures are final); returns what
    reached the fake network and the row's record."""
    sent: list[httpx2.Request] = []

    def network(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return answer(request)

    sender = Deliverer(
        store.database,
        [Secret(url)],
        allowed_hosts=allowed_hosts,
        schedule=Schedule(attempts=1, timeout_s=5),
        transport=httpx2.MockTransport(network),
        resolve=resolve,
    )
    store.deliver_to(sender.outbox.queue, sender.wake)
    await store.fire(Alert("a1", "balance_below", "acct", 1, 2, datetime.now(UTC)))
    async with sender.running():
        with anyio.fail_after(60):
            while await sender.once() == 0 and not await sender.outbox.finished():
                pass  # the running task may have made the attempt first
    (done,) = await sender.outbox.finished()
    return sent, done


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:10.0.0.1",  # IPv4-mapped
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo
    ],
)
async def test_a_webhook_whose_host_resolves_to_a_private_address_is_never_sent_and_fails_with_the_reason(
    store: DatabaseAlertStore, address: str
) -> None:
    sent, done = await deliver_once(store, f"https://hooks.example/{TOKEN}", resolving_to(PUBLIC, address))
    assert sent == []
    assert (done.delivered, done.status) == (False, None)
    assert done.error == "the host points at a private, loopback or reserved address"


async def test_a_webhook_goes_to_the_address_checked_with_its_hosts_name_for_tls(store: DatabaseAlertStore) -> None:
    sent, done = await deliver_once(store, f"https://hooks.example/{TOKEN}", resolving_to(PUBLIC))
    (request,) = sent
    assert request.url.host == PUBLIC
    assert request.headers["host"] == "hooks.example"
    assert request.extensions["sni_hostname"] == "hooks.example"
    assert done.delivered


async def test_a_private_host_the_operator_names_is_allowed_and_only_that_one(store: DatabaseAlertStore) -> None:
    sent, done = await deliver_once(
        store, "http://hooks.internal:8080/in", resolving_to("10.1.2.3"), allowed_hosts=("hooks.internal",)
    )
    assert [r.url.host for r in sent] == ["10.1.2.3"]
    assert done.delivered


async def test_an_unresolvable_host_fails_without_a_request(store: DatabaseAlertStore) -> None:
    sent, done = await deliver_once(store, "https://nowhere.example/in", resolving_to())
    assert sent == []
    assert done.error == "the host does not resolve"


async def test_a_redirect_is_not_followed_it_fails_the_webhook(store: DatabaseAlertStore) -> None:
    def redirect(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(302, headers={"location": "http://169.254.169.254/latest/meta-data"})

    sent, done = await deliver_once(store, "https://hooks.example/in", resolving_to(PUBLIC), redirect)
    assert [r.url.host for r in sent] == [PUBLIC]
    assert (done.delivered, done.status) == (False, 302)


async def test_an_endless_answer_is_read_only_up_to_the_cap(store: DatabaseAlertStore) -> None:
    chunks = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal chunks
        while True:
            chunks += 1
            yield b"x" * 4096

    def flood(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(500, content=endless())

    _, done = await deliver_once(store, "https://hooks.example/in", resolving_to(PUBLIC), flood)
    assert (done.delivered, done.status) == (False, 500)
    assert chunks <= 64 * 1024 // 4096 + 2


@pytest.mark.parametrize(
    ("urls", "allowed"),
    [
        (f"http://hooks.example/{TOKEN}", ""),  # plain http, host not named
        (f"https://user:{TOKEN}@hooks.example/in", ""),  # credentials
        (f"https://hooks.example/in#{TOKEN}", ""),  # fragment
        (f"ftp://hooks.example/{TOKEN}", ""),
        (f"https://hooks.example:99999/{TOKEN}", ""),
        (f"https://ok.example/a https:///{TOKEN}", ""),  # the second has no host
        (f"http://127.0.0.1:9/{TOKEN}", "localhost"),  # named, but not this one
    ],
)
def test_an_unusable_webhook_url_stops_start_up_with_one_line_that_does_not_quote_it(urls: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"DESSERT_ALERT_WEBHOOK_URL": urls, "DESSERT_ALERT_WEBHOOK_ALLOW_HOSTS": allowed})
    message = str(refused.value)
    assert "DESSERT_ALERT_WEBHOOK_URL" in message
    assert TOKEN not in message
    assert "\n" not in message


def test_webhook_urls_and_the_secret_are_secrets_that_never_show() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    settings = Settings.from_env(
        {
            "DESSERT_ALERT_WEBHOOK_URL": f"https://hooks.example/{TOKEN},http://127.0.0.1:9/x",
            "DESSERT_ALERT_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
            "DESSERT_ALERT_WEBHOOK_SECRET": secret,
        }
    )
    assert [u.get() for u in settings.alert_webhook_urls] == [f"https://hooks.example/{TOKEN}", "http://127.0.0.1:9/x"]
    shown = repr(settings) + str(settings)
    assert TOKEN not in shown
    assert secret not in shown
    for bad in ("not-a-secret", "whsec_c2hvcnQ=", "whsec_!!!!"):
        with pytest.raises(ConfigError) as refused:
            Settings.from_env({"DESSERT_ALERT_WEBHOOK_SECRET": bad})
        assert bad not in str(refused.value)
        assert "DESSERT_ALERT_WEBHOOK_SECRET" in str(refused.value)
