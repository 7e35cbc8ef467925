"""Which redirect URIs a client may register. Matching at /authorize is exact (the SDK compares the URL)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

# Schemes that run code or read local data in a browser: never a redirect target.
_FORBIDDEN_SCHEMES: Final = frozenset(
    {"javascript", "data", "file", "vbscript", "blob", "about", "filesystem", "ws", "wss"}
)
_PRIVATE_SCHEME: Final = re.compile(r"^[a-z][a-z0-9+.-]{1,63}$")
_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})


def check_redirect_uris(uris: Iterable[str]) -> None:
    """Raise ValueError unless every URI is https, http on loopback (RFC 8252 §7.3) or a private-use scheme."""
    for uri in uris:
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        if not scheme or scheme in _FORBIDDEN_SCHEMES:
            raise ValueError("redirect_uris: this scheme is not allowed")
        if parts.fragment or "#" in uri:
            raise ValueError("redirect_uris must not contain a fragment")
        if parts.username or parts.password:
            raise ValueError("redirect_uris must not contain credentials")
        if scheme == "https":
            if not parts.hostname:
                raise ValueError("redirect_uris: an https URI needs a host")
        elif scheme == "http":
            if parts.hostname not in _LOOPBACK:
                raise ValueError("redirect_uris: plain http is only allowed for loopback (127.0.0.1, localhost, [::1])")
        elif not _PRIVATE_SCHEME.match(scheme):
            # RFC 8252 §7.1 private-use schemes (cursor://, com.example.app:/cb) for native apps.
            raise ValueError("redirect_uris: this scheme is not allowed")
