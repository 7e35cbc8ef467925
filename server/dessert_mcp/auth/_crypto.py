"""Opaque tokens (stored as hashes) and the AES-GCM box the linked Dessert keys are kept in."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dessert_mcp.auth.config import encryption_key_bytes
from dessert_mcp.config import ConfigError

# 256 bits of randomness per token; far past the 128 bits RFC 6749 §10.10 asks of a code.
_TOKEN_BYTES: Final = 32
_VERSION: Final = b"\x01"
_KID_LEN: Final = 8
_NONCE_LEN: Final = 12


class EncryptionKeyError(ValueError):
    """DESSERT_MCP_ENCRYPTION_KEY (or its old twin) is missing or malformed, or no key fits a stored record."""


def new_token(prefix: str) -> str:
    """An opaque random token; the prefix only tells a person what kind of token they are looking at."""
    return prefix + secrets.token_urlsafe(_TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What the database keeps instead of a token. The tokens are random, so a plain SHA-256 is enough."""
    return hashlib.sha256(token.encode()).hexdigest()


def key_hash(value: str) -> str:
    """Identifies a Dessert key (one account row per key) without storing it."""
    return "sha256:" + hashlib.sha256(b"dessert-key\x00" + value.encode()).hexdigest()


def generate_encryption_key() -> str:
    """A fresh value for DESSERT_MCP_ENCRYPTION_KEY (32 random bytes, base64url)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _parse_key(value: str, name: str) -> bytes:
    try:
        return encryption_key_bytes(value, name)
    except ConfigError as exc:
        raise EncryptionKeyError(str(exc)) from None


class KeyBox:
    """AES-256-GCM with a current key and, during a rotation, an old one that still decrypts.

    A sealed value is `v1 | key id | nonce | ciphertext+tag`, base64url; the record's id is the
    associated data, so a ciphertext moved to another row does not decrypt.
    """

    def __init__(self, current: str, old: str | None = None) -> None:
        keys = [_parse_key(current, "DESSERT_MCP_ENCRYPTION_KEY")]
        if old:
            keys.append(_parse_key(old, "DESSERT_MCP_ENCRYPTION_KEY_OLD"))
        self._keys = {hashlib.sha256(k).digest()[:_KID_LEN]: AESGCM(k) for k in keys}
        self._current_kid = hashlib.sha256(keys[0]).digest()[:_KID_LEN]

    def __repr__(self) -> str:
        return f"KeyBox(keys={len(self._keys)})"

    def seal(self, plaintext: str, *, aad: str) -> str:
        nonce = secrets.token_bytes(_NONCE_LEN)
        sealed = self._keys[self._current_kid].encrypt(nonce, plaintext.encode(), aad.encode())
        return base64.urlsafe_b64encode(_VERSION + self._current_kid + nonce + sealed).decode()

    def open(self, sealed: str, *, aad: str) -> str:
        raw = base64.urlsafe_b64decode(sealed)
        if raw[:1] != _VERSION:
            raise EncryptionKeyError("a stored secret has an unknown format version")
        kid, nonce, body = (
            raw[1 : 1 + _KID_LEN],
            raw[1 + _KID_LEN : 1 + _KID_LEN + _NONCE_LEN],
            raw[1 + _KID_LEN + _NONCE_LEN :],
        )
        box = self._keys.get(kid)
        if box is None:
            raise EncryptionKeyError(
                "a stored secret was sealed with a key that is neither DESSERT_MCP_ENCRYPTION_KEY nor "
                "DESSERT_MCP_ENCRYPTION_KEY_OLD"
            )
        try:
            return box.decrypt(nonce, body, aad.encode()).decode()
        except InvalidTag:
            raise EncryptionKeyError("a stored secret failed its integrity check") from None

    def is_current(self, sealed: str) -> bool:
        return base64.urlsafe_b64decode(sealed)[1 : 1 + _KID_LEN] == self._current_kid
