"""Helpers the tests share: the canary key and fake API, the faulty sandbox, servers on loopback."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository's top folder."""
