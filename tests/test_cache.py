"""The short answer cache (DESSERT_CACHE_TTL_S): fewer upstream requests, per account, successes only."""

from __future__ import annotations

import re

import httpx2
import pytest
from mcp import Client

from dessert_mcp.cache import BuiltFrom
from dessert_mcp.client import DessertClient
from dessert_mcp.config import Secret, Settings
from dessert_mcp.singleflight import SingleFlight
from dessert_mcp.tools import RESOURCE_TTL_MS, build_server
from tests.support.api import CANARY_KEY, DOCS_BALANCE, DOCS_USAGE, FAKE_BASE_URL, FakeDessertAPI


def _settings(**env: str) -> Settings:
    return Settings.from_env({"DESSERT_API_KEY": CANARY_KEY, "DESSERT_API_BASE_URL": FAKE_BASE_URL, **env})


def _paths(api: FakeDessertAPI) -> list[str]:
    return [r.url.path for r in api.requests]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_with_the_cache_off_every_call_asks_dessert(fake_api: FakeDessertAPI) -> None:
    async with Client(build_server(_settings(), transport=fake_api.transport())) as client:
        for _ in range(3):
            assert not (await client.call_tool("dessert.get_balance", {})).is_error
    assert _paths(fake_api) == ["/v1/balance"] * 3


async def test_within_the_ttl_repeated_calls_ask_dessert_once_per_route(fake_api: FakeDessertAPI) -> None:
    async with Client(build_server(_settings(DESSERT_CACHE_TTL_S="60"), transport=fake_api.transport())) as client:
        balances = [await client.call_tool("dessert.get_balance", {}) for _ in range(3)]
        everything = await client.call_tool("dessert.get_usage", {})
        deductions = await client.call_tool("dessert.get_usage", {"types": ["Deduction"]})
    assert _paths(fake_api) == ["/v1/balance", "/v1/usage"]
    assert len({b.structured_content["credits_balance"] for b in balances if b.structured_content}) == 1
    # The raw answer is cached, not a result: each call still filters it its own way.
    assert everything.structured_content is not None
    assert deductions.structured_content is not None
    assert len(everything.structured_content["recent_transactions"]) == len(DOCS_USAGE["recent_transactions"])
    assert [tx["type"] for tx in deductions.structured_content["recent_transactions"]] == ["Deduction"]


async def test_failures_are_never_cached() -> None:
    answers = [httpx2.Response(503, json={"message": "busy"}), httpx2.Response(200, json=DOCS_BALANCE)]
    api = FakeDessertAPI({"/v1/balance": lambda request: answers.pop(0)})
    settings = _settings(DESSERT_CACHE_TTL_S="60", DESSERT_MAX_ATTEMPTS="1")
    async with Client(build_server(settings, transport=api.transport())) as client:
        assert (await client.call_tool("dessert.get_balance", {})).is_error
        assert not (await client.call_tool("dessert.get_balance", {})).is_error
        assert not (await client.call_tool("dessert.get_balance", {})).is_error
    assert _paths(api) == ["/v1/balance"] * 2


def test_an_answer_is_served_until_its_ttl_has_passed_and_not_after() -> None:
    clock = Clock()
    cache: SingleFlight[str] = SingleFlight(ttl_s=5.0, clock=clock)
    cache.put("account", "205 credits")
    clock.now += 4.999
    assert cache.get("account") == "205 credits"
    clock.now += 0.001
    assert cache.get("account") is None
    assert len(cache) == 0


def test_one_accounts_answer_is_never_anothers() -> None:
    cache: SingleFlight[str] = SingleFlight(ttl_s=60.0, clock=Clock())
    first, second = (DessertClient(FAKE_BASE_URL, api_key=Secret(k)) for k in (CANARY_KEY, CANARY_KEY + "2"))
    cache.put(first.account, "first's balance")
    assert cache.get(second.account) is None
    assert first.for_key(Secret(CANARY_KEY + "2")).account == second.account  # a view for another key is its account
    # The full digest: unlike a log fingerprint, two keys cannot share it; and it says nothing of the key.
    assert re.fullmatch(r"[0-9a-f]{64}", first.account)
    assert first.account != second.account
    assert CANARY_KEY[:8] not in first.account


def test_a_full_cache_drops_expired_entries_first_then_the_oldest() -> None:
    clock = Clock()
    cache: SingleFlight[int] = SingleFlight(ttl_s=10.0, max_entries=3, clock=clock)
    cache.put("a", 1)
    clock.now += 20  # a has expired
    cache.put("b", 2)
    cache.put("c", 3)
    cache.put("d", 4)  # full: a goes, having expired
    assert len(cache) == 3
    cache.put("e", 5)  # full, nothing expired: the oldest, b, goes
    assert [cache.get(k) for k in "abcde"] == [None, None, 3, 4, 5]


@pytest.mark.parametrize(("env", "ttl_ms"), [({}, RESOURCE_TTL_MS), ({"DESSERT_CACHE_TTL_S": "30"}, 30_000)])
async def test_the_resources_cache_hint_says_the_servers_own_freshness(
    fake_api: FakeDessertAPI, env: dict[str, str], ttl_ms: int
) -> None:
    async with Client(build_server(_settings(**env), transport=fake_api.transport())) as client:
        result = await client.read_resource("dessert://balance")
    assert result.ttl_ms == ttl_ms
    assert result.cache_scope == "private"


def test_what_is_built_from_an_answer_is_reused_for_that_very_answer_and_never_for_an_equal_other() -> None:
    built: list[list[int]] = []

    def build(answer: list[int]) -> list[int]:
        built.append(answer)
        return [*answer]

    last = BuiltFrom(build)
    answer = [205]
    assert last(answer) is last(answer)  # the same object back: built once
    other = [205]  # equal, but another call's (or another account's) answer
    assert last(other) == [205]
    assert len(built) == 2
    assert built[1] is other


def test_accounts_calling_in_turn_each_reuse_what_was_built_from_their_own_answer() -> None:
    built: list[list[int]] = []

    def build(answer: list[int]) -> list[int]:
        built.append(answer)
        return [*answer]

    memo = BuiltFrom(build, max_entries=3)
    answers = [[205], [205], [40]]  # three accounts' current answers, two of them equal
    firsts = [memo(a) for a in answers]
    for _ in range(5):  # interleaved calls, as 3 accounts polling at once make them
        assert [memo(a) for a in answers] == firsts
        assert all(memo(a) is first for a, first in zip(answers, firsts, strict=True))
    assert len(built) == 3
    fourth = [7]
    memo(fourth)  # beyond the bound the oldest entry makes room
    assert len(memo) == 3
    memo(answers[0])
    assert len(built) == 5
    assert built[-1] is answers[0]
