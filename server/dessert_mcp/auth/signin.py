"""The sign-in page `/authorize` leads to: paste a Dessert key, see which account it is, consent, go back.

Two steps, each a POST with a CSRF token that must equal a SameSite=Strict cookie set with the page. The
pending sign-in comes sealed in the `request` parameter (auth/pending.py); the key is checked live
(GET /v1/balance), then kept encrypted in the sign-in's row (its first) until consent, and never written back
into a page. Every response forbids framing and caching.
"""

from __future__ import annotations

import hmac
import html
import logging
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.datastructures import MutableHeaders, QueryParams
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Message, Scope, Send

from dessert_mcp.auth._crypto import key_hash
from dessert_mcp.auth._crypto import token_hash as _hash
from dessert_mcp.auth._dessert import DessertAPIError, check_key
from dessert_mcp.auth.limits import Limit, refund, reserve, scope_bucket
from dessert_mcp.auth.pending import PendingSignIn
from dessert_mcp.auth.provider import SIGN_IN_PATH, DessertOAuthProvider
from dessert_mcp.auth.redirects import is_loopback_redirect, trusted_for_errors
from dessert_mcp.auth.store import SignInRow
from dessert_mcp.config import Secret, read_key

logger = logging.getLogger("dessert_mcp.auth")

CSRF_COOKIE: Final = "dmcp_csrf"
SECURITY_HEADERS: Final = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}

_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Connect your Dessert account</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222}}
h1{{font-size:1.4rem}} .box{{border:1px solid #ddd;border-radius:8px;padding:1rem;margin:1rem 0}}
.error{{color:#a40000}} .warning{{color:#7a4d00}}
input[type=password]{{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}}
button{{padding:.5rem 1rem;font-size:1rem;margin-right:.5rem}} small{{color:#666}}
</style></head><body>
<h1>Connect your Dessert account</h1>
{body}
</body></html>"""


def redirect_uri_with(redirect_uri: str, **params: str | None) -> str:
    """The client's registered redirect URI with `params` added to its own query (RFC 6749 §3.1.2)."""
    parts = urlsplit(redirect_uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(name, value) for name, value in params.items() if value is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def _cookie_name(sign_in: str) -> str:
    # One cookie per sign-in, so two sign-ins open in two tabs do not overwrite each other's token.
    return f"{CSRF_COOKIE}_{_hash(sign_in)[:16]}"


def _page(body: str, status: int = 200, *, csrf: tuple[str, str] | None = None, secure: bool = True) -> HTMLResponse:
    response = HTMLResponse(_PAGE.format(body=body), status_code=status, headers=SECURITY_HEADERS)
    if csrf is not None:
        sign_in, token = csrf
        response.set_cookie(
            _cookie_name(sign_in),
            token,
            path=SIGN_IN_PATH,
            httponly=True,
            samesite="strict",
            secure=secure,
            max_age=3600,
        )
    return response


def _client_line(pending: PendingSignIn, client_name: str | None) -> str:
    redirect_uri = str(pending.params["redirect_uri"])
    redirect_host = urlsplit(redirect_uri).netloc or redirect_uri
    name = html.escape(client_name or "An MCP client")
    line = (
        f"<p><strong>{name}</strong> wants to read your Dessert credit balance and usage "
        f"(scope <code>dessert:read</code>). You will be sent back to <code>{html.escape(redirect_host)}</code>.</p>"
    )
    if is_loopback_redirect(redirect_uri):
        # MCP authorization, security considerations: any program on the machine can receive a loopback redirect.
        line += (
            '<p class="warning" id="loopback-warning">This app receives the sign-in on your own computer '
            f"(<code>{html.escape(redirect_host)}</code>), so any program running there could pose as it. "
            "Continue only if you started this sign-in from an app on this computer.</p>"
        )
    return line


def error_page(error: str, description: str | None) -> HTMLResponse:
    """An /authorize error, shown here instead of being sent to a return address we cannot vouch for."""
    detail = f": {html.escape(description)}" if description else ""
    return _page(
        f'<p class="error" id="authorize-error">The app that sent you here made a request this server cannot accept '
        f"(<code>{html.escape(error)}</code>{detail}). Nothing was shared. Go back to the app and try again, or "
        "tell its makers.</p>",
        400,
    )


def _key_form(sign_in: str, csrf: str, error: str | None = None) -> str:
    err = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return f"""{err}
<form method="post" action="{SIGN_IN_PATH}" autocomplete="off">
<input type="hidden" name="request" value="{html.escape(sign_in)}">
<input type="hidden" name="csrf" value="{html.escape(csrf)}">
<label for="api_key">Your Dessert API key</label>
<input type="password" id="api_key" name="api_key" required autofocus spellcheck="false">
<p><small>It is checked with Dessert, then stored encrypted on this server. It is never shown again.</small></p>
<button type="submit" id="check">Continue</button>
</form>"""


def _consent_form(sign_in: str, csrf: str, account: dict[str, Any]) -> str:
    return f"""<div class="box" id="account">
<p>Account: key <code>{html.escape(str(account["masked"]))}</code>
(fingerprint <code>{html.escape(str(account["fingerprint"]))}</code>)</p>
<p>Balance: <strong id="balance">{int(account["credits_balance"])}</strong> credits
(about ${float(account["usd"]):.2f})</p></div>
<form method="post" action="{SIGN_IN_PATH}/consent">
<input type="hidden" name="request" value="{html.escape(sign_in)}">
<input type="hidden" name="csrf" value="{html.escape(csrf)}">
<button type="submit" name="decision" value="allow" id="allow">Allow</button>
<button type="submit" name="decision" value="deny" id="deny">Deny</button>
</form>"""


class SignInPages:
    """The sign-in routes; mount them with `routes`."""

    def __init__(self, provider: DessertOAuthProvider) -> None:
        self.provider = provider
        self.config = provider.config
        self.store = provider.store
        self._secure = self.config.public_url.startswith("https://")

    @property
    def routes(self) -> list[Route]:
        return [
            Route(SIGN_IN_PATH, self.show, methods=["GET"]),
            Route(SIGN_IN_PATH, self.check, methods=["POST"]),
            Route(SIGN_IN_PATH + "/consent", self.consent, methods=["POST"]),
        ]

    def _gone(self) -> HTMLResponse:
        return _page(
            '<p class="error">This sign-in link has expired or was already used. '
            "Go back to your app and connect again.</p>",
            400,
        )

    def errors_on_our_page(self, scope: Scope, send: Send) -> Send:
        """Wraps /authorize's `send`: an error redirect to a return address not trusted for errors (see
        `trusted_for_errors`) becomes our own error page; every other answer passes untouched."""
        client_id = QueryParams(scope.get("query_string", b"").decode("latin-1")).get("client_id", "")
        replaced = False

        async def guarded(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the redirect's own body
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                location = MutableHeaders(raw=list(message.get("headers", []))).get("location", "")
                query = dict(parse_qsl(urlsplit(location).query))
                if "error" in query and not trusted_for_errors(location, client_id):
                    replaced = True
                    logger.info("authorize error %s shown on our page, not sent to the client", query["error"])
                    await error_page(query["error"], query.get("error_description"))(scope, _no_body, send)
                    return
            await send(message)

        return guarded

    async def _client_name(self, client_id: str) -> str | None:
        client = await self.provider.get_client(client_id)
        return client.client_name if client is not None else None

    async def _pending(self, sign_in: str) -> tuple[PendingSignIn, SignInRow | None] | None:
        """The sign-in `sign_in` seals and its row once a key checked; None if it is expired, not ours, or already
        ended (consented or denied)."""
        pending = self.provider.open_sign_in(sign_in)
        if pending is None:
            return None
        row = await self.store.get_sign_in(sign_in)
        return None if row is not None and row.used else (pending, row)

    async def show(self, request: Request) -> Response:
        sign_in = request.query_params.get("request", "")
        found = await self._pending(sign_in)
        if found is None:
            return self._gone()
        pending, _row = found
        csrf = self.provider.csrf_for(sign_in)
        body = _client_line(pending, await self._client_name(pending.client_id)) + _key_form(sign_in, csrf)
        return _page(body, csrf=(sign_in, csrf), secure=self._secure)

    async def _form(self, request: Request) -> tuple[str, PendingSignIn, SignInRow | None, dict[str, str]] | Response:
        # The body is capped as it is read, by the auth wing's guard (limits.CappedBody); no file fields either.
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        sign_in = fields.get("request", "")
        found = await self._pending(sign_in)
        if found is None:
            return self._gone()
        expected = self.provider.csrf_for(sign_in)
        given, cookie = fields.get("csrf", ""), request.cookies.get(_cookie_name(sign_in), "")
        if not (
            hmac.compare_digest(given.encode(), expected.encode())
            and hmac.compare_digest(cookie.encode(), expected.encode())
        ):
            logger.warning("sign-in form refused: CSRF token missing or wrong")
            return _page('<p class="error">This form could not be verified. Reload the page and try again.</p>', 403)
        return sign_in, *found, fields

    async def check(self, request: Request) -> Response:
        parsed = await self._form(request)
        if isinstance(parsed, Response):
            return parsed
        sign_in, pending, _row, fields = parsed
        csrf = self.provider.csrf_for(sign_in)
        client_line = _client_line(pending, await self._client_name(pending.client_id))
        # Every key check is counted before Dessert is asked (per sign-in, by a digest of its sealed value, then per
        # client address, atomically in the database), so parallel attempts cannot all get through; a key Dessert
        # accepts gives its place back. Only this server mints sign-ins, so the narrow limit may go first.
        limits = [
            Limit(f"signin-req:{_hash(sign_in)}", self.config.sign_in_attempts),
            Limit(f"signin:{scope_bucket(request.scope)}", self.config.sign_in_attempts_per_address),
        ]
        window = self.config.sign_in_window_s
        if not await reserve(self.store, limits, window_s=window):
            response = _page('<p class="error">Too many attempts. Wait a few minutes and try again.</p>', 429)
            response.headers["Retry-After"] = str(window)
            return response

        def failed(message: str, status: int) -> Response:
            return _page(client_line + _key_form(sign_in, csrf, message), status)

        key, _problem = read_key(fields.get("api_key", "").strip())
        if key is None:
            return failed("That does not look like a Dessert API key.", 400)
        try:
            balance = await check_key(self.config.dessert_base_url, key)
        except DessertAPIError as exc:
            logger.info("sign-in key check failed: %s", exc.code)
            if exc.code in ("auth_invalid", "forbidden"):
                return failed("Dessert did not accept that key. Check it and paste it again.", 400)
            await refund(self.store, limits)  # not the person's fault
            return failed("Dessert could not be reached to check the key. Try again in a moment.", 502)
        await refund(self.store, limits)
        account = {
            "masked": key.masked(),
            "fingerprint": key.fingerprint(),
            "credits_balance": balance.credits_balance,
            "usd": balance.credits_balance_usd_equivalent,
        }
        sealed = self.provider.box.seal(key.get(), aad="sign-in:" + _hash(sign_in))
        kept = await self.store.create_sign_in(
            sign_in,
            client_id=pending.client_id,
            params=pending.params,
            csrf=csrf,
            expires_at=pending.expires_at,
            key_sealed=sealed,
            account=account,
        )
        if not kept:  # consent was given or refused meanwhile, in another tab
            return self._gone()
        return _page(client_line + _consent_form(sign_in, csrf, account))

    async def consent(self, request: Request) -> Response:
        parsed = await self._form(request)
        if isinstance(parsed, Response):
            return parsed
        sign_in, pending, row, fields = parsed
        if row is None or row.key_sealed is None:  # no key checked for this sign-in
            return self._gone()
        params = pending.params
        if not await self.store.finish_sign_in(sign_in):
            return self._gone()
        redirect_uri = str(params["redirect_uri"])
        if fields.get("decision") != "allow":
            target = redirect_uri_with(
                redirect_uri, error="access_denied", state=params.get("state"), iss=self.config.issuer
            )
            return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
        key = Secret(self.provider.box.open(row.key_sealed, aad="sign-in:" + _hash(sign_in)))
        code = await self.provider.link_and_issue_code(
            client_id=pending.client_id, key=key, params=params, key_hash_value=key_hash(key.get())
        )
        target = redirect_uri_with(redirect_uri, code=code, state=params.get("state"), iss=self.config.issuer)
        return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
