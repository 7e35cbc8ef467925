"""A pending sign-in, carried from /authorize to the sign-in form as a sealed value instead of a database row.

/authorize answers anyone, so it stores nothing: what the sign-in needs later (the client, its return address,
the PKCE challenge, the scopes, `state`, the resource, the expiry) travels in the `request` parameter, sealed with
AES-GCM under the server's encryption key (`KeyBox`), so any replica can open it and nobody can forge, alter or
extend it. A row is written only once a key check succeeds (auth/signin.py), to hold the checked key until consent
and to make the sign-in single-use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from dessert_mcp.auth._crypto import KeyBox
from dessert_mcp.auth.limits import MAX_QUERY_BYTES

# Binds the ciphertext to this use: a sealed client secret or key does not open as a sign-in, nor the reverse.
_AAD: Final = "pending-sign-in"
# Every field inside is capped (`state` and the redirect URI at 2,048 characters, the challenge at 43), so a
# sealed value is a few KiB; it must fit the sign-in link's query string, which the auth wing caps.
MAX_SEALED_CHARS: Final = MAX_QUERY_BYTES - 1024


class TooLarge(ValueError):
    """The pending sign-in would not fit `MAX_SEALED_CHARS` (non-ASCII `state` or redirect URI near their caps)."""


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    client_id: str
    # state, scopes, code_challenge, redirect_uri, redirect_uri_provided_explicitly, resource
    params: dict[str, Any]
    expires_at: float

    def seal(self, box: KeyBox) -> str:
        plain = json.dumps(
            {"c": self.client_id, "p": self.params, "e": self.expires_at}, ensure_ascii=False, separators=(",", ":")
        )
        sealed = box.seal(plain, aad=_AAD)
        if len(sealed) > MAX_SEALED_CHARS:
            raise TooLarge(f"the sign-in request is over {MAX_SEALED_CHARS} characters sealed")
        return sealed

    @classmethod
    def open(cls, box: KeyBox, sealed: str, *, now: float) -> PendingSignIn | None:
        """The pending sign-in in `sealed`, or None if it is expired, altered, forged or sealed for something else."""
        if not sealed or len(sealed) > MAX_SEALED_CHARS:
            return None
        try:
            data = json.loads(box.open(sealed, aad=_AAD))
            pending = cls(client_id=str(data["c"]), params=dict(data["p"]), expires_at=float(data["e"]))
        except (ValueError, TypeError, KeyError):  # EncryptionKeyError and binascii.Error are ValueErrors
            return None
        return pending if pending.expires_at > now else None
