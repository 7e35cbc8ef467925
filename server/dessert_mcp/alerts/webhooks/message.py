"""What a webhook carries: one alert event as JSON, and its signature after the Standard Webhooks convention.

Headers (https://www.standardwebhooks.com): `webhook-id` (the alert's id and the event: the same at every attempt,
the receiver's idempotency key; also sent as `Idempotency-Key`), `webhook-timestamp` (Unix seconds of this attempt)
and, with a secret, `webhook-signature: v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, where the key
is the base64 after `whsec_` in the secret. A receiver recomputes it over the raw body, compares in constant time,
and refuses timestamps more than a few minutes from its clock (so a recorded request cannot be replayed later).

The body carries `text` (what a Slack incoming webhook shows) and `content` (what a Discord one shows), so a Slack
or Discord URL works as it is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from datetime import datetime
from typing import Final

from dessert_mcp import __version__
from dessert_mcp.alerts.rules import Alert, Event

SECRET_PREFIX: Final = "whsec_"
# The Standard Webhooks bounds on a secret's key.
SECRET_MIN_BYTES: Final = 24
SECRET_MAX_BYTES: Final = 64
# Discord refuses a message whose content is longer.
DISCORD_CONTENT_MAX: Final = 2000
USER_AGENT: Final = f"dessert-mcp/{__version__} (alert webhooks)"


def secret_key(secret: str) -> bytes:
    """The HMAC key in a `whsec_<base64>` secret; ValueError (without the secret) when it is not one."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not secret.startswith(SECRET_PREFIX) or not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise ValueError(
            f"must be {SECRET_PREFIX} followed by {SECRET_MIN_BYTES}-{SECRET_MAX_BYTES} random bytes in base64 "
            f"(make one with: echo {SECRET_PREFIX}$(openssl rand -base64 32))"
        )
    return key


def message_id(alert: Alert, event: Event) -> str:
    return f"{alert.id}-{event}"


def signature(key: bytes, message: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, f"{message}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(message: str, timestamp: int, body: bytes, key: bytes | None) -> dict[str, str]:
    sent = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message,
        "webhook-timestamp": str(timestamp),
        "idempotency-key": message,
    }
    if key is not None:
        sent["webhook-signature"] = signature(key, message, timestamp, body)
    return sent


def body(alert: Alert, event: Event) -> str:
    """The JSON of one alert event (the same bytes at every attempt)."""
    when = alert.fired_at if event == "fired" or alert.cleared_at is None else alert.cleared_at
    line = text(alert, event)
    payload = {
        "type": f"alert.{event}",
        "timestamp": _iso(when),
        "data": {
            "id": alert.id,
            "rule": alert.rule,
            "account": alert.account,
            "value": alert.value,
            "threshold": alert.threshold,
            "fired_at": _iso(alert.fired_at),
            # An event alert (auto_recharge, ledger_gap) is fired with the end of its day as active.
            "cleared_at": None if alert.cleared_at is None else _iso(alert.cleared_at),
        },
        "text": line,
        "content": line[:DISCORD_CONTENT_MAX],
        "allowed_mentions": {"parse": []},  # Discord: the text never pings anyone
    }
    return json.dumps(payload, separators=(",", ":"))


def text(alert: Alert, event: Event) -> str:
    """One line for people. Words rather than `<` and `>`, which Slack would want escaped and Discord would not."""
    what = _describe(alert)
    if event == "fired":
        return f"Dessert alert on account {alert.account}: {what}."
    cleared = _iso(alert.cleared_at) if alert.cleared_at is not None else "now"
    since = _iso(alert.fired_at)
    return f"Dessert alert cleared on account {alert.account}: {what} (fired {since}, cleared {cleared})."


def _describe(alert: Alert) -> str:
    value, threshold = f"{alert.value:g}", f"{alert.threshold:g}"
    if alert.rule == "balance_below":
        return f"the balance, {value} credits, is below {threshold}"
    if alert.rule == "runway_below":
        return f"the balance runs out in {value} days at the current rate, within {threshold}"
    if alert.rule == "spend_spike":
        return f"today's net spend, {value} credits, is above {threshold}"
    if alert.rule == "auto_recharge":
        return f"an auto-recharge added {alert.value:+g} credits"
    return "the ledger has a gap: transactions were missed while the poller fell behind"


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
