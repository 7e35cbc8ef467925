"""A small, strict async client for Dessert's balance and usage endpoints. No MCP in here."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from types import TracebackType
from typing import Final, Literal, Self, TypeVar

import anyio
import httpx2
from pydantic import BaseModel, ValidationError

from dessert_mcp import __version__
from dessert_mcp.config import Secret
from dessert_mcp.models import Balance, Usage
from dessert_mcp.redact import Redactor

ErrorCode = Literal[
    "auth_invalid",
    "forbidden",
    "not_found",
    "rate_limited",
    "upstream_unavailable",
    "timeout",
    "bad_upstream_response",
    "invalid_argument",
    "not_configured",
]

USER_AGENT: Final = f"dessert-mcp/{__version__} (+https://github.com/dessert-dev/dessert-mcp)"
MAX_BODY_BYTES: Final = 1024 * 1024
_DETAIL_MAX: Final = 200

# Control characters, zero-width and bidi controls: they can hide or reorder text shown to a model or a person.
_UNSAFE_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")

ModelT = TypeVar("ModelT", bound=BaseModel)


class DessertAPIError(Exception):
    """Any failure to get a usable answer from Dessert, with a sentence that says what to do."""

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode,
        status: int | None = None,
        retryable: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: ErrorCode = code
        self.status = status
        self.retryable = retryable
        self.retry_after_s = retry_after_s

    def redacted(self, redact: Callable[[str], str]) -> DessertAPIError:
        """The same error with `redact` applied to its message (upstream text may echo the key)."""
        return DessertAPIError(
            redact(self.message),
            code=self.code,
            status=self.status,
            retryable=self.retryable,
            retry_after_s=self.retry_after_s,
        )


def sanitize(text: str, limit: int = _DETAIL_MAX) -> str:
    """Upstream text made safe to echo: no control, zero-width or bidi characters, one line, capped."""
    cleaned = " ".join(_UNSAFE_CHARS.sub("", text).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


class DessertClient:
    """Dessert REST client; use as an async context manager so the connection pool is closed."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: Secret | None,
        timeout_s: float = 25.0,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._redact = Redactor(api_key.get() if api_key else None)
        self._timeout_s = timeout_s
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key.get()}"
        self._http = httpx2.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            # The deadline below bounds the whole call; these only stop one phase from eating all of it.
            timeout=httpx2.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            follow_redirects=False,  # the key must never travel to another origin
            transport=transport,
            trust_env=False,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get_balance(self) -> Balance:
        return await self._get("/v1/balance", Balance)

    async def get_usage(self) -> Usage:
        return await self._get("/v1/usage", Usage)

    async def _get(self, path: str, model: type[ModelT]) -> ModelT:
        try:
            return await self._get_unredacted(path, model)
        except DessertAPIError as exc:
            raise exc.redacted(self._redact) from None

    async def _get_unredacted(self, path: str, model: type[ModelT]) -> ModelT:
        if self._api_key is None:
            raise DessertAPIError(
                "DESSERT_API_KEY is not set. Add your Dessert API key to the server's environment and restart it.",
                code="not_configured",
            )
        try:
            with anyio.fail_after(self._timeout_s):
                status, headers, body = await self._fetch(path)
        except TimeoutError:
            raise DessertAPIError(
                f"Dessert did not answer GET {path} within {self._timeout_s:g} s. Try again in a minute.",
                code="timeout",
                retryable=True,
            ) from None
        if status >= 300:
            raise _status_error(path, status, headers, body, self.base_url)
        try:
            return model.model_validate_json(body)
        except ValidationError as exc:
            raise _shape_error(path, status, headers, exc) from None

    async def _fetch(self, path: str) -> tuple[int, httpx2.Headers, bytes]:
        try:
            async with self._http.stream("GET", path) as response:
                chunks: list[bytes] = []
                size = 0
                # aiter_bytes yields decoded bytes, so the cap also stops compressed bombs.
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise DessertAPIError(
                            f"Dessert's answer to GET {path} is larger than {MAX_BODY_BYTES // 1024} KiB; "
                            "refusing to read it. Check DESSERT_API_BASE_URL.",
                            code="bad_upstream_response",
                            status=response.status_code,
                        )
                    chunks.append(chunk)
                return response.status_code, response.headers, b"".join(chunks)
        except httpx2.TimeoutException:
            raise DessertAPIError(
                f"Dessert did not answer GET {path} in time. Try again in a minute.", code="timeout", retryable=True
            ) from None
        except httpx2.DecodingError:
            raise DessertAPIError(
                f"Dessert's answer to GET {path} could not be decoded. Try again; if it persists, contact Dessert.",
                code="bad_upstream_response",
            ) from None
        except (httpx2.TransportError, httpx2.StreamError) as exc:
            raise DessertAPIError(
                f"Could not reach Dessert at {self.base_url} ({type(exc).__name__}). "
                "Check the network connection and DESSERT_API_BASE_URL.",
                code="upstream_unavailable",
                retryable=True,
            ) from None


def upstream_detail(headers: httpx2.Headers, body: bytes) -> str:
    """The API's own explanation from an error body, sanitized; empty when there is none."""
    text = body[:4096].decode("utf-8", errors="replace")
    if "json" in headers.get("content-type", ""):
        try:
            data: object = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            for key in ("message", "detail", "error", "error_description"):
                value = data.get(key)
                if isinstance(value, dict):
                    value = value.get("message")
                if isinstance(value, str) and value.strip():
                    return sanitize(value)
    return sanitize(text) if "html" not in headers.get("content-type", "") else ""


def _status_error(path: str, status: int, headers: httpx2.Headers, body: bytes, base_url: str) -> DessertAPIError:
    detail = upstream_detail(headers, body)
    said = f": {detail}" if detail else ""
    if 300 <= status < 400:
        return DessertAPIError(
            f"Dessert answered GET {path} with a redirect (HTTP {status}), which is not followed so the API key "
            f"stays on {base_url}. Check DESSERT_API_BASE_URL.",
            code="bad_upstream_response",
            status=status,
        )
    if status == 401:
        return DessertAPIError(
            f"Dessert rejected the API key (HTTP 401{said}). Check DESSERT_API_KEY.", code="auth_invalid", status=status
        )
    if status == 403:
        return DessertAPIError(
            f"Dessert refused access to {path} (HTTP 403{said}). Check that this API key's account may read "
            "balance and usage.",
            code="forbidden",
            status=status,
        )
    if status == 404:
        return DessertAPIError(
            f"Dessert has no {path} at {base_url} (HTTP 404{said}). Check DESSERT_API_BASE_URL.",
            code="not_found",
            status=status,
        )
    if status == 429:
        return DessertAPIError(
            f"Dessert is rate-limiting this API key (HTTP 429{said}). Wait a little and try again.",
            code="rate_limited",
            status=status,
            retryable=True,
        )
    if status >= 500 or status in (408, 409):
        return DessertAPIError(
            f"Dessert is unavailable right now (HTTP {status}{said}). Try again in a minute.",
            code="upstream_unavailable",
            status=status,
            retryable=True,
        )
    return DessertAPIError(
        f"Dessert answered GET {path} with HTTP {status}{said}, which this server does not expect. "
        "Check DESSERT_API_BASE_URL; if it persists, contact Dessert.",
        code="bad_upstream_response",
        status=status,
    )


def _shape_error(path: str, status: int, headers: httpx2.Headers, exc: ValidationError) -> DessertAPIError:
    errors = exc.errors(include_input=False, include_url=False)
    if errors and errors[0]["type"] == "json_invalid":
        kind = sanitize(headers.get("content-type", "") or "no content type", 60)
        what = f"something that is not JSON ({kind})"
    else:
        first = errors[0] if errors else None
        where = ".".join(str(p) for p in first["loc"]) if first else "?"
        reason = sanitize(first["msg"], 80) if first else ""
        what = f"JSON that does not match the documented shape ({sanitize(where, 60)}: {reason})"
    return DessertAPIError(
        f"Dessert answered GET {path} (HTTP {status}) with {what}. If it persists, contact Dessert.",
        code="bad_upstream_response",
        status=status,
    )
