"""Events across replicas (DESSERT_MCP_REDIS_URL): each replica's events reach the listeners on every other, over
Redis (or Valkey) pub/sub. Imported only when the URL is set; needs the `redis` extra.

    fanout = RedisFanout(url, sink=service.remote_event)   # sink: another replica's event for one account
    service.events.relay = fanout                          # what this replica publishes goes out too
    async with fanout.running(): ...                       # for the life of the server

Each replica delivers its own events to its own listeners at once (events.AccountBus) and sends them on; what comes
back carrying its own origin is skipped, so nothing is heard twice. While Redis is down, the replica's own listeners
still hear its events, the log says so once, and it reconnects with backoff; what was published meanwhile is not
replayed (an event means "read this again", and the next change says it anew).
"""

from __future__ import annotations

from dessert_mcp.fanout.bus import CHANNEL, RedisFanout, Sink

__all__ = ["CHANNEL", "RedisFanout", "Sink"]
