"""The pending sign-in /authorize hands to the sign-in page sealed, instead of storing it: only this server opens
it, unaltered and unexpired, it stays small enough for the link, and a finished sign-in's link is dead."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from dessert_mcp.auth import KeyBox, generate_encryption_key
from dessert_mcp.auth.limits import MAX_QUERY_BYTES
from dessert_mcp.auth.pending import MAX_SEALED_CHARS, PendingSignIn
from dessert_mcp.auth.redirects import MAX_FIELD_CHARS
from tests.support.api import CANARY_KEY
from tests.support.auth import Clock, oauth_flow_on, pkce
from tests.support.faults import ThreadedAccountsSandbox

PENDING = PendingSignIn(
    client_id="client-1",
    params={"state": "st4te", "redirect_uri": "http://127.0.0.1:9/cb", "code_challenge": "c" * 43},
    expires_at=1000.0,
)


def test_a_sealed_sign_in_opens_only_with_this_servers_key_unaltered_and_before_it_expires() -> None:
    box = KeyBox(generate_encryption_key())
    sealed = PENDING.seal(box)
    assert PendingSignIn.open(box, sealed, now=999.0) == PENDING
    assert "st4te" not in base64.urlsafe_b64decode(sealed).decode("latin-1")  # encrypted, not just signed
    assert PendingSignIn.open(box, sealed, now=1000.0) is None  # expired
    assert PendingSignIn.open(KeyBox(generate_encryption_key()), sealed, now=0) is None  # another server's
    raw = bytearray(base64.urlsafe_b64decode(sealed))
    raw[-1] ^= 1
    assert PendingSignIn.open(box, base64.urlsafe_b64encode(bytes(raw)).decode(), now=0) is None  # altered
    for junk in ("", "x", "%%%", "é" * 10, "A" * (MAX_SEALED_CHARS + 1)):
        assert PendingSignIn.open(box, junk, now=0) is None
    # A value the same box sealed for another purpose (a client secret, a key) is not a sign-in.
    assert PendingSignIn.open(box, box.seal('{"c":"x","p":{},"e":2000}', aad="client:x"), now=0) is None


def test_a_sealed_sign_in_stays_within_the_sign_in_links_query_cap() -> None:
    assert MAX_SEALED_CHARS + len("request=") < MAX_QUERY_BYTES


async def test_a_sign_in_with_every_field_at_its_cap_fits_its_link_and_completes(
    canary_api: ThreadedAccountsSandbox, tmp_path: Path, encryption_key: str
) -> None:
    redirect_uri = "http://127.0.0.1:9/" + "p" * (MAX_FIELD_CHARS - len("http://127.0.0.1:9/"))
    async with oauth_flow_on(canary_api.url, tmp_path / "a.db", encryption_key) as flow:
        client = await flow.register([redirect_uri])
        response = await flow.authorize(client, pkce()[1], redirect_uri=redirect_uri, state="s" * MAX_FIELD_CHARS)
        request_id, csrf = await flow.sign_in_page(response)
        assert len(request_id) <= MAX_SEALED_CHARS
        assert (await flow.submit_key(request_id, csrf, CANARY_KEY)).status_code == 200
        done = await flow.consent(request_id, csrf)
    assert done.status_code == 303
    query = parse_qs(urlsplit(done.headers["location"]).query)
    assert query["state"] == ["s" * MAX_FIELD_CHARS]
    assert query["code"]


async def test_a_sign_in_link_is_dead_once_expired_altered_or_used(
    canary_api: ThreadedAccountsSandbox, tmp_path: Path, encryption_key: str
) -> None:
    clock = Clock()
    async with oauth_flow_on(canary_api.url, tmp_path / "a.db", encryption_key, clock=clock) as flow:
        client = await flow.register()

        async def page(request_id: str) -> int:
            return int((await flow.http.get(flow.base + "/signin", params={"request": request_id})).status_code)

        used, used_csrf = await flow.sign_in_page(await flow.authorize(client, pkce()[1]))
        assert (await flow.submit_key(used, used_csrf, CANARY_KEY)).status_code == 200
        assert (await flow.consent(used, used_csrf, "deny")).status_code == 303
        assert await page(used) == 400
        assert (await flow.submit_key(used, used_csrf, CANARY_KEY)).status_code == 400
        assert (await flow.consent(used, used_csrf)).status_code == 400

        altered = used[:-6] + ("AAAA" if used[-6:-2] != "AAAA" else "BBBB") + used[-2:]
        assert await page(altered) == 400

        late, late_csrf = await flow.sign_in_page(await flow.authorize(client, pkce()[1]))
        clock.advance(16 * 60)  # past the 15-minute sign-in
        assert await page(late) == 400
        assert (await flow.submit_key(late, late_csrf, CANARY_KEY)).status_code == 400
