"""RedisFanout against a real Redis: another replica's events arrive with their account, a replica's own never come
back to it, what it sends while Redis is down is dropped rather than sent late, and a stray message is ignored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream
from mcp.server.subscriptions import ResourceUpdated
from redis.asyncio import Redis

from dessert_mcp.config import ConfigError, Secret
from dessert_mcp.events import ServerEvent, updated_uri
from dessert_mcp.fanout import CHANNEL, RedisFanout
from dessert_mcp.http import HTTPOptions
from tests.support import STARTUP_TIMEOUT_S
from tests.support.redis import RedisServer

WAIT_S = STARTUP_TIMEOUT_S


class Replica:
    def __init__(self, fanout: RedisFanout, heard: MemoryObjectReceiveStream[tuple[str, str | None]]) -> None:
        self.fanout = fanout
        self.heard = heard

    async def next(self) -> tuple[str, str | None]:
        with anyio.fail_after(WAIT_S):
            return await self.heard.receive()

    def send(self, account: str, uri: str) -> None:
        self.fanout.send(account, ResourceUpdated(uri=uri))


@asynccontextmanager
async def replica(url: str, **backoff: float) -> AsyncIterator[Replica]:
    send, receive = anyio.create_memory_object_stream[tuple[str, str | None]](100)

    async def sink(account: str, event: ServerEvent) -> None:
        await send.send((account, updated_uri(event)))

    fanout = RedisFanout(Secret(url), sink, **backoff)
    async with send, receive, fanout.running():
        with anyio.fail_after(WAIT_S):
            await fanout.connected()
        yield Replica(fanout, receive)


async def test_another_replicas_event_arrives_with_its_account_and_a_replicas_own_never_comes_back(
    redis_server: RedisServer,
) -> None:
    async with replica(redis_server.url) as one, replica(redis_server.url) as two:
        one.send("acct:a", "dessert://balance")
        assert await two.next() == ("acct:a", "dessert://balance")
        two.send("acct:b", "dessert://alerts")
        # Redis delivers in order: had `one` heard its own event, it would have come before this one.
        assert await one.next() == ("acct:b", "dessert://alerts")
        assert one.heard.statistics().current_buffer_used == 0


async def test_what_is_sent_while_redis_is_down_is_dropped_not_sent_when_it_is_back(redis_server: RedisServer) -> None:
    async with AsyncExitStack() as stack:
        # `late` comes back well after `quick` (its first wait is seconds), so `quick` would hear a replay.
        quick = await stack.enter_async_context(replica(redis_server.url, backoff_min_s=0.05, backoff_max_s=0.2))
        late = await stack.enter_async_context(replica(redis_server.url, backoff_min_s=5, backoff_max_s=5))
        await anyio.to_thread.run_sync(redis_server.stop)
        try:
            with anyio.fail_after(WAIT_S):
                await late.fanout.disconnected()
                await quick.fanout.disconnected()
            late.send("acct:a", "dessert://usage")  # while down: dropped
        finally:
            await anyio.to_thread.run_sync(redis_server.start)
        with anyio.fail_after(WAIT_S):
            await quick.fanout.connected()
            await late.fanout.connected()
        late.send("acct:a", "dessert://balance")
        assert await quick.next() == ("acct:a", "dessert://balance")


async def test_a_message_that_is_no_event_of_ours_is_ignored_and_the_subscription_goes_on(
    redis_server: RedisServer,
) -> None:
    async with replica(redis_server.url) as one, replica(redis_server.url) as two:
        async with Redis.from_url(redis_server.url) as stranger:
            for junk in ("not json", '{"origin": "x"}', '{"origin": "x", "account": "a", "what": 1}'):
                await stranger.publish(CHANNEL, junk)
        one.send("acct:a", "dessert://balance")
        assert await two.next() == ("acct:a", "dessert://balance")


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "redis://:hunter2-pass@", "127.0.0.1:6379"])
def test_a_redis_url_that_is_not_one_is_refused_in_one_line_that_does_not_quote_it(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        HTTPOptions.from_env({"DESSERT_MCP_REDIS_URL": url})
    assert "DESSERT_MCP_REDIS_URL" in str(refused.value)
    assert url not in str(refused.value)
    assert "\n" not in str(refused.value)


def test_the_redis_password_is_hidden_from_the_logs_and_from_the_fanouts_own_messages() -> None:
    options = HTTPOptions.from_env({"DESSERT_MCP_REDIS_URL": "redis://:s3cret-redis-pass@10.0.0.7:6380/2"})
    assert "s3cret" not in repr(options)
    assert [s.get() for s in options.secrets if s is not None] == ["s3cret-redis-pass"]
    fanout = RedisFanout(options.redis_url or Secret(""), sink=None)  # type: ignore[arg-type]
    assert fanout.where == "redis://10.0.0.7:6380"
    assert "s3cret" not in repr(fanout)
