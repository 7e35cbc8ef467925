"""What a client may register: which redirect URIs (matching at /authorize is exact: the SDK compares the URL), how
much metadata, and where errors may be sent before the person has consented."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

# Schemes that run code or read local data in a browser: never a redirect target.
_FORBIDDEN_SCHEMES: Final = frozenset(
    {"javascript", "data", "file", "vbscript", "blob", "about", "filesystem", "ws", "wss"}
)
# Network schemes a browser or the OS would hand to some other program: never an app's way back either.
_NETWORK_SCHEMES: Final = frozenset(
    {
        "ftp", "ftps", "sftp", "gopher", "ssh", "telnet", "mailto", "news", "nntp", "irc", "ircs", "ldap", "ldaps",
        "smb", "nfs", "tel", "sms", "sip", "sips", "git", "svn", "rtsp", "dict", "tftp", "jar", "view-source",
    }
)  # fmt: skip
# What a stored client row may hold: a name, a few URLs, a few return addresses.
MAX_FIELD_CHARS: Final = 2048
MAX_REDIRECT_URIS: Final = 10
MAX_CLIENT_JSON: Final = 8 * 1024
_PRIVATE_SCHEME: Final = re.compile(r"^[a-z][a-z0-9+.-]{1,63}$")
_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})


def check_redirect_uris(uris: Iterable[str]) -> None:
    """Raise ValueError unless every URI is https, http on loopback (RFC 8252 §7.3) or a private-use scheme."""
    for uri in uris:
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        if not scheme or scheme in _FORBIDDEN_SCHEMES or scheme in _NETWORK_SCHEMES:
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


def check_client_size(info: Mapping[str, Any]) -> None:
    """Raise ValueError unless the client's metadata is small enough to keep: every text field, each redirect URI
    and the whole document bounded, so no registration (or metadata document) stores more than a few KiB."""
    uris = info.get("redirect_uris") or []
    if len(uris) > MAX_REDIRECT_URIS:
        raise ValueError(f"redirect_uris: at most {MAX_REDIRECT_URIS}")
    for value in [*info.values(), *uris]:
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            raise ValueError(f"client metadata fields are limited to {MAX_FIELD_CHARS} characters")
    if len(json.dumps(info)) > MAX_CLIENT_JSON:
        raise ValueError(f"client metadata is limited to {MAX_CLIENT_JSON} bytes")


def is_loopback_redirect(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme.lower() in ("http", "https") and parts.hostname in _LOOPBACK


def trusted_for_errors(redirect_uri: str, client_id: str) -> bool:
    """Whether an error found before the person consented may be sent to `redirect_uri` without their say.

    Anyone may register a client (open registration), so a registered return address proves nothing: sending
    errors there automatically would make this server an open redirector (RFC 9700 §4.11.2). Trusted are only a
    loopback address (it reaches the person's own machine) and, for a metadata-document client, its own origin.
    """
    if is_loopback_redirect(redirect_uri):
        return True
    target, client = urlsplit(redirect_uri), urlsplit(client_id)
    return client.scheme == "https" and target.scheme == "https" and target.netloc.lower() == client.netloc.lower()
