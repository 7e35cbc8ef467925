"""`dessert-mcp accounts`: the operator lists, revokes and re-encrypts linked accounts; keys only ever masked."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from dessert_mcp.auth import DessertOAuthProvider, OAuthConfig, Store, generate_encryption_key
from dessert_mcp.config import Secret
from tests.support.api import CANARY_KEY, assert_no_secret
from tests.support.auth import link_directly

SECOND = "dsk_live_SECOND_a1b2c3d4e5f60718293a"


def accounts(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dessert_mcp", "accounts", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def linked(tmp_path: Path) -> tuple[dict[str, str], str]:
    """A SQLite database with two linked accounts; the environment pointing at it, and the key it is sealed with."""
    url = f"sqlite:///{tmp_path / 'auth.db'}"
    key = generate_encryption_key()

    async def link() -> None:
        config = OAuthConfig(public_url="https://mcp.example.com", encryption_key=Secret(key), database_url=url)
        provider = DessertOAuthProvider(config, Store(url))
        try:
            for dessert_key in (CANARY_KEY, SECOND):
                await link_directly(provider, dessert_key)
        finally:
            await provider.aclose()

    anyio.run(link)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESSERT_")}
    return env | {"DESSERT_MCP_DATABASE_URL": url, "DESSERT_MCP_ENCRYPTION_KEY": key}, key


def account_ids(listing: str) -> list[str]:
    return [line.split()[0] for line in listing.splitlines()[1:]]


def test_list_shows_each_linked_account_masked_and_revoke_ends_it(linked: tuple[dict[str, str], str]) -> None:
    env, _ = linked
    listed = accounts("list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "dsk_…1514" in listed.stdout
    assert "active" in listed.stdout
    ids = account_ids(listed.stdout)
    assert len(ids) == 2
    revoked = accounts("revoke", ids[0], env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert f"Revoked {ids[0]}" in revoked.stdout
    again = accounts("revoke", ids[0], env=env)
    assert again.returncode == 1
    assert "No linked account" in again.stderr
    after = accounts("list", env=env).stdout
    assert after.count("revoked") == 1
    everything = listed.stdout + listed.stderr + revoked.stdout + again.stderr + after
    assert_no_secret(everything)
    assert_no_secret(everything, SECOND)


def test_new_key_prints_32_random_bytes_each_time() -> None:
    first, second = (accounts("new-key", env=dict(os.environ)) for _ in range(2))
    for result in (first, second):
        assert result.returncode == 0
        assert len(base64.urlsafe_b64decode(result.stdout.strip())) == 32
        assert "DESSERT_MCP_ENCRYPTION_KEY" in result.stderr
    assert first.stdout != second.stdout


def test_rotate_key_reseals_every_account_under_the_new_key(linked: tuple[dict[str, str], str]) -> None:
    env, old = linked
    new = generate_encryption_key()
    missing = accounts("rotate-key", env=env | {"DESSERT_MCP_ENCRYPTION_KEY": new})
    assert missing.returncode != 0
    assert "DESSERT_MCP_ENCRYPTION_KEY_OLD" in missing.stderr
    rotated = accounts(
        "rotate-key", env=env | {"DESSERT_MCP_ENCRYPTION_KEY": new, "DESSERT_MCP_ENCRYPTION_KEY_OLD": old}
    )
    assert rotated.returncode == 0, rotated.stderr
    assert "Re-encrypted 2 linked key(s)" in rotated.stdout
    again = accounts("rotate-key", env=env | {"DESSERT_MCP_ENCRYPTION_KEY": new, "DESSERT_MCP_ENCRYPTION_KEY_OLD": old})
    assert "Re-encrypted 0 linked key(s)" in again.stdout


def test_without_the_remote_extra_accounts_names_the_install_command() -> None:
    code = "import sys; sys.modules['sqlalchemy'] = None; from dessert_mcp.cli import main; main(sys.argv[1:])"
    result = subprocess.run(
        [sys.executable, "-c", code, "accounts", "list"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "pip install 'dessert-mcp[remote]'" in result.stderr
