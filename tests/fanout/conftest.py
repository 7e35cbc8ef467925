"""Fixtures for the fan-out across replicas: a real Redis (tests/support/redis.py) and a real PostgreSQL."""

from __future__ import annotations

from tests.support.postgres import postgres
from tests.support.redis import redis_server

__all__ = ["postgres", "redis_server"]
