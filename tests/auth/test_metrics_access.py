"""/metrics with `--auth`: there is no server token (each caller brings their own credential), so the figures
are served only to a scraper holding DESSERT_MCP_METRICS_TOKEN, and not at all without one."""

from __future__ import annotations

import httpx2
import pytest

from dessert_mcp.config import ConfigError, Secret, Settings
from dessert_mcp.http import HTTPOptions
from tests.support.api import CANARY_KEY
from tests.support.auth import serve_auth
from tests.support.faults import ThreadedFaultySandbox

SCRAPER_TOKEN = "scraper-token-0123456789abcdef"


@pytest.mark.parametrize("mode", ["dessert-key", "oauth"])
def test_with_auth_metrics_are_refused_to_anyone_without_a_metrics_token_set(
    mode: str, canary_api: ThreadedFaultySandbox, encryption_key: str, tmp_path: pytest.TempPathFactory
) -> None:
    database = f"sqlite:///{tmp_path}/auth.db"
    with serve_auth(mode, dessert_url=canary_api.url, encryption_key=encryption_key, database_url=database) as srv:
        anonymous = httpx2.get(srv.url + "/metrics", timeout=10)
        caller = httpx2.get(srv.url + "/metrics", headers={"Authorization": f"Bearer {CANARY_KEY}"}, timeout=10)
    assert anonymous.status_code == 403
    assert "DESSERT_MCP_METRICS_TOKEN" in anonymous.text
    assert caller.status_code == 403  # a caller's own credential is not a scraper's


def test_with_auth_and_a_metrics_token_only_its_bearer_reads_the_metrics(canary_api: ThreadedFaultySandbox) -> None:
    with serve_auth("dessert-key", dessert_url=canary_api.url, metrics_token=SCRAPER_TOKEN) as srv:
        anonymous = httpx2.get(srv.url + "/metrics", timeout=10)
        wrong = httpx2.get(srv.url + "/metrics", headers={"Authorization": f"Bearer {CANARY_KEY}"}, timeout=10)
        scraper = httpx2.get(srv.url + "/metrics", headers={"Authorization": f"Bearer {SCRAPER_TOKEN}"}, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer ")
    assert wrong.status_code == 401
    assert scraper.status_code == 200
    assert "dessert_mcp_tool_calls" in scraper.text


def test_a_metrics_token_without_auth_is_refused_as_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="DESSERT_MCP_METRICS_TOKEN applies to --auth only"):
        HTTPOptions(metrics_token=Secret(SCRAPER_TOKEN)).check(Settings())
