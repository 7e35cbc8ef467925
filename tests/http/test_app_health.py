"""`/healthz` and `/readyz`."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx2
import pytest

from dessert_mcp.http.app import READY_TIMEOUT_S
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


def test_readyz_stops_waiting_on_a_hung_api_at_its_own_deadline_and_says_timeout(
    serve: Callable[..., str], sandbox: ThreadedFaultySandbox, caplog: pytest.LogCaptureFixture
) -> None:
    base = serve()
    sandbox.add_fault(hang=True, times=0)
    with caplog.at_level(logging.WARNING, logger="dessert_mcp"):
        # A bound far beyond the call's own 25 s deadline: the log tells which deadline answered.
        response = httpx2.get(base + "/readyz", timeout=120)
    assert response.status_code == 503
    assert response.json()["reason"] == "timeout"
    assert f"Not ready: no answer within {READY_TIMEOUT_S:g} s" in caplog.text
    assert httpx2.get(base + "/healthz").status_code == 200
