"""The database: migrations, sealed keys, single-use codes and refresh tokens, throttles; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from dessert_mcp.auth import KeyBox, Store, generate_encryption_key, list_accounts, revoke_account
from dessert_mcp.auth._crypto import EncryptionKeyError, key_hash
from dessert_mcp.auth.accounts import format_accounts, rotate_encryption_key
from dessert_mcp.auth.store import SCHEMA_VERSION
from dessert_mcp.config import Secret
from dessert_mcp.storage import describe_database_url, normalize_database_url
from tests.support.api import CANARY_KEY, assert_no_secret

NASTY = "'); DROP TABLE accounts; -- \" \\ % _ \x00"


class Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def _link(store: Store, box: KeyBox, *, key: str = CANARY_KEY, client_id: str = "client-1") -> tuple[str, str]:
    grant_id, code = str(uuid.uuid4()), "code-" + uuid.uuid4().hex
    secret = Secret(key)
    account_id = await store.link_account_and_issue_code(
        account_id=str(uuid.uuid4()),
        key_hash_value=key_hash(key),
        seal=lambda account: box.seal(key, aad="account:" + account),
        key_masked=secret.masked(),
        key_fingerprint=secret.fingerprint(),
        grant_id=grant_id,
        client_id=client_id,
        scopes=["dessert:read"],
        resource="http://127.0.0.1:1/mcp",
        code=code,
        code_challenge="challenge",
        redirect_uri="http://127.0.0.1:2/callback",
        redirect_uri_explicit=True,
        code_ttl_s=300,
    )
    return account_id, code


async def test_migrations_bring_a_new_database_to_the_current_schema_once(database_url: str) -> None:
    first, second = Store(database_url), Store(database_url)
    try:
        assert await first.migrate() == SCHEMA_VERSION
        assert await second.migrate() == SCHEMA_VERSION
        async with first.engine.connect() as conn:
            versions = (await conn.execute(sa.text("SELECT version FROM schema_version"))).scalars().all()
        assert sorted(versions) == list(range(1, SCHEMA_VERSION + 1))  # each migration applied once
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_linked_key_is_stored_sealed_and_opens_only_with_its_account_id(database_url: str) -> None:
    store, box = Store(database_url), KeyBox(generate_encryption_key())
    try:
        account_id, _code = await _link(store, box)
        [account] = await store.list_accounts()
        assert account.id == account_id
        assert_no_secret(account.key_sealed + account.key_masked + account.key_fingerprint)
        assert box.open(account.key_sealed, aad="account:" + account_id) == CANARY_KEY
        with pytest.raises(EncryptionKeyError):
            box.open(account.key_sealed, aad="account:someone-else")
        with pytest.raises(EncryptionKeyError):
            KeyBox(generate_encryption_key()).open(account.key_sealed, aad="account:" + account_id)
        # Every text column of every table, as the database returns it: no key, no fragment of it.
        async with store.engine.connect() as conn:
            for table in ("accounts", "grants", "authorization_codes", "clients", "sign_ins"):
                rows = (await conn.execute(sa.text(f"SELECT * FROM {table}"))).all()
                assert_no_secret(repr(rows))
    finally:
        await store.aclose()


async def test_the_sqlite_file_never_contains_the_key(tmp_path: Path) -> None:
    path = tmp_path / "auth.db"
    store, box = Store(f"sqlite:///{path}"), KeyBox(generate_encryption_key())
    try:
        await _link(store, box)
    finally:
        await store.aclose()
    raw = _database_bytes(tmp_path)
    assert CANARY_KEY.encode() not in raw
    assert_no_secret(raw.decode("latin-1"))
    assert path.stat().st_mode & 0o077 == 0, "the database file must be private to its owner"


def _database_bytes(folder: Path) -> bytes:
    """The SQLite file and its journal/WAL companions, as the disk holds them."""
    return b"".join(p.read_bytes() for p in folder.iterdir() if p.name.startswith("auth.db"))


async def test_a_code_and_a_refresh_token_can_each_be_spent_only_once(database_url: str) -> None:
    store, box = Store(database_url), KeyBox(generate_encryption_key())
    try:
        _, code = await _link(store, box)
        assert await store.redeem_code(code, access="a1", access_ttl_s=60, refresh="r1", refresh_ttl_s=600)
        assert not await store.redeem_code(code, access="a2", access_ttl_s=60, refresh="r2", refresh_ttl_s=600)
        assert await store.rotate_refresh("r1", access="a3", access_ttl_s=60, refresh="r3", refresh_ttl_s=600)
        assert not await store.rotate_refresh("r1", access="a4", access_ttl_s=60, refresh="r4", refresh_ttl_s=600)
        assert await store.get_access_token("a2") is None
        live = await store.get_access_token("a3")
        assert live is not None
        old = await store.get_refresh_token("r1")
        assert old is not None
        assert old.used
        await store.revoke_grant(live.grant_id, "test")
        assert await store.get_access_token("a1") is None
        assert await store.get_access_token("a3") is None
        assert await store.get_refresh_token("r3") is None
    finally:
        await store.aclose()


async def test_an_access_token_stops_working_when_it_expires(database_url: str) -> None:
    clock = Clock()
    store, box = Store(database_url, clock=clock), KeyBox(generate_encryption_key())
    try:
        _, code = await _link(store, box)
        await store.redeem_code(code, access="a1", access_ttl_s=60, refresh="r1", refresh_ttl_s=600)
        assert await store.get_access_token("a1") is not None
        clock.now += 61
        assert await store.get_access_token("a1") is None
    finally:
        await store.aclose()


async def test_pruning_removes_only_rows_past_their_expiry(database_url: str) -> None:
    clock = Clock()
    store, box = Store(database_url, clock=clock), KeyBox(generate_encryption_key())
    try:
        _, code = await _link(store, box)
        await store.redeem_code(code, access="a1", access_ttl_s=60, refresh="r1", refresh_ttl_s=6000)
        await store.throttle_hit("k", window_s=60)
        assert await store.prune(grace_s=0) == 0
        clock.now += 400
        assert await store.prune(grace_s=0) == 3  # the access token, the code and the throttle window
        assert await store.get_refresh_token("r1") is not None
        assert len(await store.list_accounts()) == 1
    finally:
        await store.aclose()


async def test_sql_metacharacters_are_data_in_every_field(database_url: str) -> None:
    store, box = Store(database_url), KeyBox(generate_encryption_key())
    nasty = NASTY.replace("\x00", "")  # PostgreSQL text cannot hold NUL; the HTTP layer never passes one through
    try:
        await store.put_client(nasty, kind="dcr", info={"client_id": nasty, "client_name": nasty}, secret_sealed=None)
        found = await store.get_client(nasty)
        assert found is not None
        assert found[1]["client_name"] == nasty
        assert await store.get_client(nasty + "x") is None
        await _link(store, box, key="dsk_" + nasty.replace(" ", ""), client_id=nasty)
        assert await store.get_access_token(nasty) is None
        assert await store.get_code(nasty) is None
        assert await store.get_sign_in(nasty) is None
        assert await store.throttle_hit(nasty, window_s=60) == 1
        assert len(await store.list_accounts()) == 1
    finally:
        await store.aclose()


async def test_throttle_counts_within_a_window_and_starts_over_after_it(database_url: str) -> None:
    clock = Clock()
    store = Store(database_url, clock=clock)
    try:
        assert [await store.throttle_hit("k", window_s=60) for _ in range(3)] == [1, 2, 3]
        assert await store.throttle_count("k", window_s=60) == 3
        clock.now += 61
        assert await store.throttle_count("k", window_s=60) == 0
        assert await store.throttle_hit("k", window_s=60) == 1
    finally:
        await store.aclose()


async def test_operator_can_list_masked_accounts_and_revoke_one(database_url: str) -> None:
    store, box = Store(database_url), KeyBox(generate_encryption_key())
    try:
        account_id, code = await _link(store, box)
        await store.redeem_code(code, access="a1", access_ttl_s=60, refresh="r1", refresh_ttl_s=600)
        [account] = await list_accounts(store)
        assert account.active_grants == 1
        assert not account.revoked
        table = format_accounts([account])
        assert account_id in table
        assert Secret(CANARY_KEY).masked() in table
        assert_no_secret(table)
        assert await revoke_account(store, account_id)
        assert not await revoke_account(store, account_id)
        assert await store.get_access_token("a1") is None
        [account] = await list_accounts(store)
        assert account.revoked
        assert account.active_grants == 0
    finally:
        await store.aclose()


async def test_rotation_reseals_every_key_under_the_new_encryption_key(database_url: str) -> None:
    old, new = generate_encryption_key(), generate_encryption_key()
    store = Store(database_url)
    try:
        account_id, _ = await _link(store, KeyBox(old))
        assert await rotate_encryption_key(store, new, old) == 1
        assert await rotate_encryption_key(store, new, old) == 0
        [account] = await store.list_accounts()
        assert KeyBox(new).open(account.key_sealed, aad="account:" + account_id) == CANARY_KEY
    finally:
        await store.aclose()


def test_database_urls_pick_the_async_driver_and_hide_the_password() -> None:
    assert normalize_database_url("postgres://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    assert normalize_database_url("sqlite:////tmp/x.db") == "sqlite+aiosqlite:////tmp/x.db"
    with pytest.raises(ValueError, match="unsupported"):
        normalize_database_url("mysql://h/db")
    assert "hunter2" not in describe_database_url("postgresql+asyncpg://u:hunter2@h:5432/db")
    assert "hunter2" not in repr(Store("postgresql://u:hunter2@h/db"))


def test_a_malformed_encryption_key_is_refused_with_a_fix() -> None:
    with pytest.raises(EncryptionKeyError, match="DESSERT_MCP_ENCRYPTION_KEY must be 32 random bytes"):
        KeyBox("too-short")


async def test_signing_in_again_keeps_the_account_seals_its_key_anew_and_leaves_other_accounts_keys_alone(
    database_url: str,
) -> None:
    store, box, new_box = Store(database_url), KeyBox(generate_encryption_key()), KeyBox(generate_encryption_key())
    other_key = "dsk_live_OTHER_00112233445566778899aa"
    try:
        await store.migrate()
        mine, _ = await _link(store, box)
        other, _ = await _link(store, box, key=other_key)
        # Sealed under the encryption key of the sign-in, bound to the id the account keeps.
        assert (await _link(store, new_box, client_id="client-2"))[0] == mine
        sealed = {account.id: account.key_sealed for account in await store.list_accounts()}
        assert new_box.open(sealed[mine], aad="account:" + mine) == CANARY_KEY
        assert box.open(sealed[other], aad="account:" + other) == other_key
    finally:
        await store.aclose()


async def test_two_sign_ins_with_one_key_at_once_link_one_account(database_url: str) -> None:
    store, box = Store(database_url), KeyBox(generate_encryption_key())
    try:
        await store.migrate()
        first, second = await asyncio.gather(_link(store, box, client_id="c1"), _link(store, box, client_id="c2"))
        assert first[0] == second[0]
        [account] = await store.list_accounts()
        assert account.active_grants == 2
        assert box.open(account.key_sealed, aad="account:" + account.id) == CANARY_KEY
    finally:
        await store.aclose()
