"""`/healthz` and `/readyz`."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx2
import pytest

from tests.support.faults import ThreadedFaultySandbox

WRONG_KEY = "dsk_live_0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("transport", ["http", "sse"])
def test_healthz_answers_without_calling_the_api(
    serve: Callable[..., str], sandbox: ThreadedFaultySandbox, transport: str
) -> None:
    response = httpx2.get(serve(transport=transport) + "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert sandbox.stats()["total"] == 0


@pytest.mark.parametrize("transport", ["http", "sse"])
def test_readyz_is_ready_when_the_api_accepts_the_key(
    serve: Callable[..., str], sandbox: ThreadedFaultySandbox, transport: str
) -> None:
    response = httpx2.get(serve(transport=transport) + "/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ready"})
    assert sandbox.stats()["requests"] == {"/v1/balance": 1}


def test_readyz_is_not_ready_with_a_rejected_key_and_never_shows_it(serve: Callable[..., str]) -> None:
    response = httpx2.get(serve(key=WRONG_KEY) + "/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["reason"] == "auth_invalid"
    assert WRONG_KEY not in response.text
    assert WRONG_KEY[4:16] not in response.text


def test_readyz_answers_within_5_s_when_the_api_hangs(
    serve: Callable[..., str], sandbox: ThreadedFaultySandbox
) -> None:
    base = serve()
    sandbox.add_fault(hang=True, times=0)
    started = time.monotonic()
    response = httpx2.get(base + "/readyz", timeout=10)
    elapsed = time.monotonic() - started
    assert elapsed < 5
    assert response.status_code == 503
    assert response.json()["reason"] == "timeout"
    assert httpx2.get(base + "/healthz").status_code == 200
