"""Helpers the tests share: the canary key and fake API, the faulty sandbox, servers on loopback."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository's top folder."""

STARTUP_TIMEOUT_S = 120.0
"""The bound on every start-up wait (a server, a subprocess, a first answer): generous, since a start-up that takes
6 s alone takes several times that on a busy 2-core machine, and a wait for the event costs nothing when it is quick.
"""
