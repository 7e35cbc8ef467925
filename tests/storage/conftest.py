"""Fixtures for the storage layer: a real PostgreSQL and a SQLite file (tests/support/postgres.py)."""

from __future__ import annotations

from tests.support.postgres import database_url, postgres

__all__ = ["database_url", "postgres"]
