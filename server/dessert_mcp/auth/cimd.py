"""Client ID Metadata Documents: a client_id that is an https URL names a JSON document about the client.

The server fetches it (https only; never a private, loopback or link-local address outside the explicit
test mode, by the address rules of `dessert_mcp.egress`, and connected to the very address checked; a size and a
time cap; no redirects; no proxies from the environment) and caches the result in the database, so every replica
sees the same client.
"""

from __future__ import annotations

import json
import re
import ssl
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
import httpx2
from mcp.shared.auth import OAuthClientInformationFull
from pydantic import ValidationError

from dessert_mcp.auth.config import SCOPE, OAuthConfig
from dessert_mcp.auth.redirects import MAX_FIELD_CHARS, check_client_size, check_redirect_uris
from dessert_mcp.egress import AddressRefused, PinnedTransport, Resolver, checked_addresses, system_resolver
from dessert_mcp.singleflight import SingleFlight

_MAX_AGE: Final = re.compile(r"max-age=(\d+)")
_JSON_TYPE: Final = re.compile(r"\s*application/([a-z0-9.+-]+\+)?json\s*(;|$)", re.IGNORECASE)
# A URL whose document could not be used is not fetched again for this long (per process).
FAILURE_CACHE_S: Final = 60.0
FAILURES_KEPT: Final = 4096


class ClientMetadataError(ValueError):
    """The client_id URL or the document behind it is not acceptable; the message says why (no secrets in it)."""


def is_metadata_url(client_id: str) -> bool:
    return client_id.startswith("https://")


async def check_url(url: str, *, allow_loopback: bool, resolve: Resolver = system_resolver) -> None:
    """Raise `ClientMetadataError` unless `url` is an https URL with a path whose host resolves to public addresses."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ClientMetadataError("a client_id URL must be https")
    if parts.username or parts.password or parts.fragment:
        raise ClientMetadataError("a client_id URL must not carry credentials or a fragment")
    if parts.path in ("", "/"):
        raise ClientMetadataError("a client_id URL must have a path")
    if len(url) > MAX_FIELD_CHARS:
        raise ClientMetadataError(f"a client_id URL is limited to {MAX_FIELD_CHARS} characters")
    try:
        await checked_addresses(parts.hostname, parts.port or 443, allow_loopback=allow_loopback, resolve=resolve)
    except AddressRefused as exc:
        if exc.reason == "unresolved":
            raise ClientMetadataError("the client_id URL's host does not resolve") from None
        raise ClientMetadataError("the client_id URL points at a private, loopback or reserved address") from None


class MetadataFetcher:
    """Fetches and validates client metadata documents; one pooled httpx2 client for all fetches."""

    def __init__(
        self,
        config: OAuthConfig,
        *,
        resolve: Resolver = system_resolver,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = config
        self._resolve = resolve
        # URLs whose fetch failed lately, and why: asked again within FAILURE_CACHE_S, they fail without a fetch.
        self._failed: SingleFlight[str] = SingleFlight(ttl_s=FAILURE_CACHE_S, max_entries=FAILURES_KEPT)
        verify: ssl.SSLContext | bool = True
        if config.cimd_ca_file:
            verify = ssl.create_default_context(cafile=config.cimd_ca_file)
        # A given transport (tests) stands in for the network; otherwise each fetch connects to an address checked
        # for it (check_url's answer comes first, with its clearer message).
        if transport is None:
            transport = PinnedTransport(allow_loopback=config.cimd_allow_loopback, resolve=resolve, verify=verify)
        self._http = httpx2.AsyncClient(
            timeout=httpx2.Timeout(config.cimd_timeout_s),
            follow_redirects=False,
            trust_env=False,
            headers={"Accept": "application/json"},
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def fetch(self, url: str) -> tuple[OAuthClientInformationFull, int]:
        """The client the document describes and how long to cache it (seconds)."""
        failed = self._failed.get(url)
        if failed is not None:
            raise ClientMetadataError(failed)
        try:
            return await self._fetch(url)
        except ClientMetadataError as exc:
            self._failed.put(url, str(exc))
            raise

    async def _fetch(self, url: str) -> tuple[OAuthClientInformationFull, int]:
        await check_url(url, allow_loopback=self._config.cimd_allow_loopback, resolve=self._resolve)
        body = bytearray()
        try:
            with anyio.fail_after(self._config.cimd_timeout_s):
                async with self._http.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise ClientMetadataError(f"the client metadata document answered HTTP {response.status_code}")
                    if not _JSON_TYPE.match(response.headers.get("content-type", "")):
                        raise ClientMetadataError("the client metadata document is not served as application/json")
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > self._config.cimd_max_bytes:
                            raise ClientMetadataError("the client metadata document is too large")
                    cache_control = response.headers.get("cache-control", "")
        except TimeoutError:
            raise ClientMetadataError("the client metadata document took too long to fetch") from None
        except httpx2.HTTPError as exc:
            raise ClientMetadataError(
                f"the client metadata document could not be fetched ({type(exc).__name__})"
            ) from None
        match = _MAX_AGE.search(cache_control)
        ttl = int(match.group(1)) if match else self._config.cimd_cache_s
        ttl = max(60, min(ttl, 24 * 3600))
        return parse_document(url, bytes(body)), ttl


def parse_document(url: str, body: bytes) -> OAuthClientInformationFull:
    """Validate a document: it must name itself, be a public client (no secret), and list exact redirect URIs."""
    try:
        data: Any = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise ClientMetadataError("the client metadata document is not JSON") from None
    if not isinstance(data, dict):
        raise ClientMetadataError("the client metadata document is not a JSON object")
    if data.get("client_id") != url:
        raise ClientMetadataError("the client metadata document's client_id is not its own URL")
    if "client_secret" in data or "client_secret_expires_at" in data:
        raise ClientMetadataError("a client metadata document must not contain a client secret")
    method = data.get("token_endpoint_auth_method") or "none"
    if method != "none":
        raise ClientMetadataError("a client metadata document client authenticates with 'none' (it has no secret)")
    if not isinstance(data.get("client_name"), str) or not data["client_name"].strip():
        raise ClientMetadataError("the client metadata document needs a client_name (the consent page shows it)")
    uris = data.get("redirect_uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
        raise ClientMetadataError("the client metadata document needs redirect_uris")
    fields = {
        k: data[k] for k in ("client_name", "client_uri", "logo_uri", "grant_types", "response_types") if k in data
    }
    try:
        check_redirect_uris(uris)
        check_client_size({**fields, "redirect_uris": uris})
    except ValueError as exc:
        raise ClientMetadataError(str(exc)) from None
    try:
        return OAuthClientInformationFull.model_validate(
            {
                **fields,
                "client_id": url,
                "redirect_uris": uris,
                "token_endpoint_auth_method": "none",
                "scope": SCOPE,
            }
        )
    except ValidationError:
        raise ClientMetadataError("the client metadata document has invalid fields") from None
