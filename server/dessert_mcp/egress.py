"""Requests to addresses that someone else names (a client's metadata document, an alert webhook): the address rules
they share, and the transport that connects only to an address it checked.

The rules: a host must resolve, and every address it resolves to must be public (global unicast). IPv6 addresses
that carry an IPv4 one (IPv4-mapped, NAT64, 6to4) are judged by the IPv4 address inside; Teredo, the NAT64
local-use prefix and IPv4-compatible addresses are refused outright. Loopback passes only in an explicit test mode
(`allow_loopback`), and a host the operator names (`allowed_hosts`) may resolve to anything but an unspecified or
multicast address.

`PinnedTransport` resolves the host itself for each request, checks every address, and connects to a checked one
(the TLS name stays the host's): what was checked is what is connected to, so a DNS answer that changes between the
check and the connection (DNS rebinding) cannot steer the request elsewhere.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Collection
from typing import Final, Literal

import anyio
import httpx2

Resolver = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# NAT64 (RFC 6052 well-known prefix) carries an IPv4 address in its last 32 bits; the local-use prefix (RFC 8215)
# and Teredo (RFC 4380) are refused outright, like anything else that tunnels to where we cannot see.
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_REFUSED_V6: Final = (
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("2001::/32"),  # Teredo
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated)
)


class AddressRefused(httpx2.TransportError):
    """The host does not resolve (`reason` "unresolved") or resolves to an address the rules refuse ("private")."""

    def __init__(self, reason: Literal["unresolved", "private"]) -> None:
        what = "does not resolve" if reason == "unresolved" else "points at a private, loopback or reserved address"
        super().__init__(f"the host {what}")
        self.reason = reason


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def unwrapped(ip: IPAddress) -> IPAddress | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, NAT64, 6to4), the address itself, or None to refuse."""
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.teredo is not None or any(ip in net for net in _REFUSED_V6):
        return None
    return ip


def address_ok(address: str, *, allow_loopback: bool = False, named: bool = False) -> bool:
    """Whether the rules let a request go to `address`; `named`: its host is one the operator allowed by name."""
    ip = _unwrapped_or_none(address)
    if ip is None:
        return False
    if named:
        return not (ip.is_unspecified or ip.is_multicast)
    if allow_loopback and ip.is_loopback:
        return True
    return ip.is_global and not ip.is_multicast


def _unwrapped_or_none(address: str) -> IPAddress | None:
    try:
        return unwrapped(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return None


def host_key(host: str) -> str:
    """How a host is compared with the names the operator allows: lower case, without IPv6 brackets or a final dot."""
    return host.strip("[]").rstrip(".").lower()


async def checked_addresses(
    host: str,
    port: int,
    *,
    allow_loopback: bool = False,
    allowed_hosts: Collection[str] = (),
    resolve: Resolver = system_resolver,
) -> list[str]:
    """The addresses `host` resolves to, in the resolver's order, once every one of them passed the rules; raises
    `AddressRefused` otherwise (one refused address among good ones is enough: a client picks any of them)."""
    name = host_key(host)
    try:
        addresses = list(dict.fromkeys(await resolve(name, port)))
    except OSError:
        raise AddressRefused("unresolved") from None
    if not addresses:
        raise AddressRefused("unresolved")
    named = name in allowed_hosts
    if not all(address_ok(a, allow_loopback=allow_loopback, named=named) for a in addresses):
        raise AddressRefused("private")
    return addresses


class PinnedTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport that connects each request only to an address of its host that passed the rules.

    The request goes to the checked address with the host's name kept in the `Host` header and in TLS (SNI and
    certificate checks, through httpx2's `sni_hostname` request extension). Addresses are tried in the resolver's
    order while the connection itself fails. No proxy is ever used. `inner` (tests) replaces the network transport.
    """

    def __init__(
        self,
        *,
        allow_loopback: bool = False,
        allowed_hosts: Collection[str] = (),
        resolve: Resolver = system_resolver,
        verify: ssl.SSLContext | bool = True,
        inner: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self._allow_loopback = allow_loopback
        self._allowed = frozenset(host_key(h) for h in allowed_hosts)
        self._resolve = resolve
        self._inner = inner or httpx2.AsyncHTTPTransport(verify=verify, trust_env=False)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await checked_addresses(
            url.host, port, allow_loopback=self._allow_loopback, allowed_hosts=self._allowed, resolve=self._resolve
        )
        failure: httpx2.ConnectError | None = None
        for address in addresses:
            pinned = httpx2.Request(
                request.method,
                url.copy_with(host=address.split("%", 1)[0]),
                headers=request.headers,  # Host: the name in the URL, set when the request was built
                stream=request.stream,
                extensions={**request.extensions, "sni_hostname": host_key(url.host)},
            )
            try:
                return await self._inner.handle_async_request(pinned)
            except httpx2.ConnectError as exc:  # nothing was sent: the next address may answer
                failure = exc
        assert failure is not None
        raise failure

    async def aclose(self) -> None:
        await self._inner.aclose()
