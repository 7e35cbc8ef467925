"""How client metadata documents are fetched and read, under abuse. No test here sends a packet off the machine: the
address filter is tried against a faked resolver, and documents come from a fake transport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from dessert_mcp.auth import OAuthConfig, Store
from dessert_mcp.auth.cimd import ClientMetadataError, MetadataFetcher, check_url, parse_document
from dessert_mcp.auth.provider import DessertOAuthProvider
from dessert_mcp.config import Secret

URL = "https://client.example/oauth/client.json"
PUBLIC = "93.184.215.14"  # documentation aside, a global address; never connected to: the transport is fake
GOOD: dict[str, Any] = {"client_id": URL, "client_name": "Client", "redirect_uris": ["http://127.0.0.1:9/cb"]}


def resolving_to(*addresses: str) -> Callable[[str, int], Any]:
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b:1::a00:1",  # NAT64 local-use prefix
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo (its client is 10.0.0.1)
        "::a00:1",  # IPv4-compatible 10.0.0.1
        "::ffff:a9fe:a9fe",  # IPv4-mapped 169.254.169.254
    ],
)
async def test_addresses_that_wrap_private_ipv4_ones_are_refused(address: str) -> None:
    with pytest.raises(ClientMetadataError, match="private"):
        await check_url(URL, allow_loopback=False, resolve=resolving_to(address))
    with pytest.raises(ClientMetadataError, match="private"):  # one bad answer among good ones is enough
        await check_url(URL, allow_loopback=False, resolve=resolving_to(PUBLIC, address))


async def test_public_addresses_pass_the_filter_wrapped_or_not() -> None:
    for address in (PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "64:ff9b::5db8:d70e", "2002:5db8:d70e::1"):
        await check_url(URL, allow_loopback=False, resolve=resolving_to(address))


def fetcher(documents: Callable[[httpx2.Request], httpx2.Response], seen: list[str]) -> MetadataFetcher:
    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(str(request.url))
        return documents(request)

    config = OAuthConfig(public_url="http://127.0.0.1:1", encryption_key=Secret("x" * 43))
    return MetadataFetcher(config, resolve=resolving_to(PUBLIC), transport=httpx2.MockTransport(handler))


def served(body: bytes, content_type: str = "application/json") -> Callable[[httpx2.Request], httpx2.Response]:
    return lambda request: httpx2.Response(200, content=body, headers={"content-type": content_type})


async def test_a_deeply_nested_document_is_a_metadata_error_not_a_crash() -> None:
    with pytest.raises(ClientMetadataError, match="not JSON"):
        parse_document(URL, b"[" * 8000)
    with pytest.raises(ClientMetadataError, match="not JSON"):
        parse_document(URL, b'{"a":' * 8000)


@pytest.fixture
async def provider(tmp_path: Path, encryption_key: str) -> AsyncIterator[DessertOAuthProvider]:
    config = OAuthConfig(
        public_url="http://127.0.0.1:1",
        encryption_key=Secret(encryption_key),
        database_url=f"sqlite:///{tmp_path / 'auth.db'}",
    )
    provider = DessertOAuthProvider(config, Store(config.database_url or ""))
    try:
        yield provider
    finally:
        await provider.aclose()


async def test_authorize_and_token_with_a_deeply_nested_document_find_no_client(
    provider: DessertOAuthProvider,
) -> None:
    # /authorize and /token look the client up through get_client: no client means a 400, never a 500.
    seen: list[str] = []
    await provider.metadata.aclose()
    provider.metadata = fetcher(served(b"[" * 8000), seen)
    assert await provider.get_client(URL) is None
    assert seen == [URL]


async def test_a_failing_client_id_is_not_fetched_again_on_every_request(provider: DessertOAuthProvider) -> None:
    seen: list[str] = []
    await provider.metadata.aclose()
    provider.metadata = fetcher(lambda request: httpx2.Response(404), seen)
    for _ in range(5):
        assert await provider.get_client(URL) is None
    assert seen == [URL]


async def test_a_document_served_as_html_or_without_a_client_name_is_refused() -> None:
    seen: list[str] = []
    with pytest.raises(ClientMetadataError, match="application/json"):
        await fetcher(served(json.dumps(GOOD).encode(), "text/html"), seen).fetch(URL)
    nameless = {k: v for k, v in GOOD.items() if k != "client_name"}
    with pytest.raises(ClientMetadataError, match="client_name"):
        await fetcher(served(json.dumps(nameless).encode()), seen).fetch(URL)
    client, _ttl = await fetcher(served(json.dumps(GOOD).encode(), "application/json; charset=utf-8"), seen).fetch(URL)
    assert client.client_name == "Client"


async def test_a_document_too_large_to_store_is_refused() -> None:
    seen: list[str] = []
    bloated = {**GOOD, "redirect_uris": [f"http://127.0.0.1:9/cb{i}" for i in range(200)]}
    with pytest.raises(ClientMetadataError, match="redirect_uris"):
        await fetcher(served(json.dumps(bloated).encode()), seen).fetch(URL)
