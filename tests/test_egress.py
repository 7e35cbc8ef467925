"""The address rules shared by every request to an address someone else names, and the transport that connects only
to an address it checked. No packet leaves the machine: the resolver is faked and the network is a MockTransport."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from dessert_mcp.egress import AddressRefused, PinnedTransport, address_ok, checked_addresses

PUBLIC = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


def resolving(*answers: list[str]) -> tuple[Callable[[str, int], Any], list[str]]:
    """A resolver giving each answer in turn (the last one again after), and the names it was asked."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return list(answers[min(len(asked), len(answers)) - 1])

    return resolve, asked


def network(seen: list[httpx2.Request], fail: frozenset[str] = frozenset()) -> httpx2.MockTransport:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.host in fail:
            raise httpx2.ConnectError("refused", request=request)
        seen.append(request)
        return httpx2.Response(200, text="ok")

    return httpx2.MockTransport(handler)


async def test_a_request_connects_to_the_address_checked_with_the_hosts_name_kept_for_http_and_tls() -> None:
    resolve, _ = resolving([PUBLIC])
    seen: list[httpx2.Request] = []
    transport = PinnedTransport(resolve=resolve, inner=network(seen))
    async with httpx2.AsyncClient(transport=transport) as http:
        response = await http.get("https://hooks.example/in?x=1")
    assert response.status_code == 200
    assert str(response.request.url) == "https://hooks.example/in?x=1"  # the caller sees its own URL
    (sent,) = seen
    assert sent.url.host == PUBLIC
    assert sent.url.raw_path == b"/in?x=1"
    assert sent.headers["host"] == "hooks.example"
    assert sent.extensions["sni_hostname"] == "hooks.example"


async def test_an_answer_that_changes_after_the_check_cannot_steer_the_connection_to_loopback() -> None:
    # DNS rebinding: a public answer for the check, loopback for whoever resolves next. The transport resolves once
    # per request and connects to what it checked; the next request is checked again and refused.
    resolve, asked = resolving([PUBLIC], ["127.0.0.1"])
    seen: list[httpx2.Request] = []
    async with httpx2.AsyncClient(transport=PinnedTransport(resolve=resolve, inner=network(seen))) as http:
        await http.get("https://rebind.example/a")
        with pytest.raises(AddressRefused, match="private"):
            await http.get("https://rebind.example/a")
    assert [r.url.host for r in seen] == [PUBLIC]
    assert asked == ["rebind.example", "rebind.example"]


async def test_the_next_checked_address_is_tried_when_one_does_not_connect() -> None:
    resolve, _ = resolving([PUBLIC_V6, PUBLIC])
    seen: list[httpx2.Request] = []
    transport = PinnedTransport(resolve=resolve, inner=network(seen, fail=frozenset({PUBLIC_V6})))
    async with httpx2.AsyncClient(transport=transport) as http:
        assert (await http.get("https://dual.example/")).status_code == 200
    assert [r.url.host for r in seen] == [PUBLIC]


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.0.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "::1", "fe80::1", "fd00::1", "0.0.0.0"],
)
async def test_private_loopback_link_local_and_reserved_addresses_are_refused_before_any_connection(
    address: str,
) -> None:
    resolve, _ = resolving([address])
    seen: list[httpx2.Request] = []
    async with httpx2.AsyncClient(transport=PinnedTransport(resolve=resolve, inner=network(seen))) as http:
        with pytest.raises(AddressRefused, match="private"):
            await http.get("https://inside.example/")
    assert seen == []


async def test_a_host_the_operator_names_may_be_private_but_never_unspecified_or_multicast() -> None:
    for address in ("127.0.0.1", "10.1.2.3", "fd00::5", "169.254.1.1"):
        resolve, _ = resolving([address])
        assert await checked_addresses("Hooks.Internal.", 443, allowed_hosts={"hooks.internal"}, resolve=resolve)
        with pytest.raises(AddressRefused):  # another name resolving there is still refused
            await checked_addresses("other.internal", 443, allowed_hosts={"hooks.internal"}, resolve=resolve)
    for address in ("0.0.0.0", "224.0.0.1", "ff02::1"):
        assert not address_ok(address, named=True)


async def test_a_host_that_does_not_resolve_is_refused_as_such() -> None:
    async def nothing(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    with pytest.raises(AddressRefused, match="does not resolve") as refused:
        await checked_addresses("nowhere.example", 443, resolve=nothing)
    assert refused.value.reason == "unresolved"
    resolve, _ = resolving([])
    with pytest.raises(AddressRefused, match="does not resolve"):
        await checked_addresses("empty.example", 443, resolve=resolve)
