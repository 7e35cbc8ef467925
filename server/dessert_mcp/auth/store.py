"""The auth wing's tables: clients, pending sign-ins, codes, token families, linked accounts, throttles.

Declared once below, with their migrations (dessert_mcp.storage.schema); the engine, transactions, migrations,
leases and the translation of database faults are the storage layer's (dessert_mcp.storage). Everything a second
replica needs lives in the database; the process keeps only the connection pool and, in the provider, a
seconds-long cache of verified access tokens (auth/tokencache.py) that revocations through this store evict.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from dessert_mcp.auth._crypto import token_hash
from dessert_mcp.storage import (
    Database,
    Migration,
    Schema,
    StorageUnavailable,
    describe_database_url,
    upsert,
    user_database_url,
)

__all__ = ["SCHEMA", "AccountRow", "CodeRow", "SignInRow", "StorageUnavailable", "Store", "TokenRow"]

Clock = Callable[[], float]


class RevocationListener(Protocol):
    def __call__(self, *, grant_id: str | None, account_id: str | None) -> None: ...


# Times are Unix seconds (DOUBLE PRECISION); ciphertexts are base64 text, so no BLOB/BYTEA split either.
_md = sa.MetaData()
_clients = sa.Table(
    "clients",
    _md,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("info_json", sa.Text, nullable=False),
    sa.Column("secret_sealed", sa.Text),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double),
)
_accounts = sa.Table(
    "accounts",
    _md,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("key_hash", sa.Text, nullable=False, unique=True),
    sa.Column("key_sealed", sa.Text, nullable=False),
    sa.Column("key_masked", sa.Text, nullable=False),
    sa.Column("key_fingerprint", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("linked_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double),
)
_sign_ins = sa.Table(
    "sign_ins",
    _md,
    sa.Column("id_hash", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("params_json", sa.Text, nullable=False),
    sa.Column("csrf_hash", sa.Text, nullable=False),
    sa.Column("key_sealed", sa.Text),
    sa.Column("account_json", sa.Text),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("used_at", sa.Double),
)
_grants = sa.Table(
    "grants",
    _md,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("account_id", sa.Text, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("scopes", sa.Text, nullable=False),
    sa.Column("resource", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double),
    sa.Column("revoked_reason", sa.Text),
    sa.Index("grants_account", "account_id"),
)
_codes = sa.Table(
    "authorization_codes",
    _md,
    sa.Column("code_hash", sa.Text, primary_key=True),
    sa.Column("grant_id", sa.Text, sa.ForeignKey("grants.id"), nullable=False),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("code_challenge", sa.Text, nullable=False),
    sa.Column("redirect_uri", sa.Text, nullable=False),
    sa.Column("redirect_uri_explicit", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("used_at", sa.Double),
)
_access = sa.Table(
    "access_tokens",
    _md,
    sa.Column("token_hash", sa.Text, primary_key=True),
    sa.Column("grant_id", sa.Text, sa.ForeignKey("grants.id"), nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Index("access_tokens_grant", "grant_id"),
)
_refresh = sa.Table(
    "refresh_tokens",
    _md,
    sa.Column("token_hash", sa.Text, primary_key=True),
    sa.Column("grant_id", sa.Text, sa.ForeignKey("grants.id"), nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("used_at", sa.Double),
    sa.Index("refresh_tokens_grant", "grant_id"),
)
_throttle = sa.Table(
    "throttle",
    _md,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("window_start", sa.Double, nullable=False),
    sa.Column("hits", sa.BigInteger, nullable=False),
)
SCHEMA: Final = Schema(
    "auth",
    _md,
    [
        Migration(
            1,
            create=(
                "clients",
                "accounts",
                "sign_ins",
                "grants",
                "authorization_codes",
                "access_tokens",
                "refresh_tokens",
                "throttle",
            ),
        ),
        Migration(2),  # created the leases table, which the storage layer owns now
    ],
    version_table="schema_version",  # the name it has had since the first release
)
SCHEMA_VERSION: Final = SCHEMA.version

# A registered client that no grant has used for this long is abandoned (a sign-in takes minutes; a refresh token
# lives 30 days by default), and goes at the next prune.
ABANDONED_CLIENT_S: Final = 30 * 24 * 3600
# Expired metadata-document clients stay this long (a sign-in in progress may still read one), then go.
_CIMD_GRACE_S: Final = 3600
# Account ids asked about in one query: well under every SQLite build's limit on bound parameters (999 before 3.32).
_IDS_PER_QUERY: Final = 500


def default_database_url() -> str:
    """A SQLite file in the user's state directory ($XDG_STATE_HOME/dessert-mcp/auth.db on Linux), where the token
    database has always been: moving it would sign everyone out."""
    return user_database_url("auth.db", kind="state")


def _live_token(table: sa.Table) -> sa.Select[Any]:
    """A token of `table` joined with its family (grant) and account, both not revoked; by `token_hash`."""
    return (
        sa.select(
            table,
            _grants.c.client_id,
            _grants.c.account_id,
            _grants.c.scopes,
            _grants.c.resource,
            _accounts.c.key_sealed,
        )
        .join(_grants, _grants.c.id == table.c.grant_id)
        .join(_accounts, _accounts.c.id == _grants.c.account_id)
        .where(
            table.c.token_hash == sa.bindparam("token_hash"),
            _grants.c.revoked_at.is_(None),
            _accounts.c.revoked_at.is_(None),
        )
    )


# Every MCP request's check (when not in the token cache): built once; SQLAlchemy reuses its compiled form.
_ACCESS_CHECK: Final = _live_token(_access).where(_access.c.expires_at > sa.bindparam("now"))
_REFRESH_CHECK: Final = _live_token(_refresh)


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: str
    key_sealed: str
    key_masked: str
    key_fingerprint: str
    created_at: float
    linked_at: float
    revoked_at: float | None
    active_grants: int = 0


@dataclass(frozen=True, slots=True)
class CodeRow:
    grant_id: str
    client_id: str
    account_id: str
    scopes: list[str]
    resource: str
    code_challenge: str
    redirect_uri: str
    redirect_uri_explicit: bool
    expires_at: float
    used: bool


@dataclass(frozen=True, slots=True)
class TokenRow:
    """An access or refresh token joined with its family (grant) and account."""

    grant_id: str
    client_id: str
    account_id: str
    scopes: list[str]
    resource: str
    expires_at: float
    key_sealed: str
    used: bool = False


@dataclass(frozen=True, slots=True)
class SignInRow:
    client_id: str
    params: dict[str, Any]
    csrf_hash: str
    key_sealed: str | None
    account: dict[str, Any] | None
    expires_at: float
    used: bool = False


def _family(row: Row[Any]) -> dict[str, Any]:
    """What a code and a token say about their family (grant): who, for what, until when, and whether spent."""
    return {
        "grant_id": row.grant_id,
        "client_id": row.client_id,
        "account_id": row.account_id,
        "scopes": row.scopes.split(),
        "resource": row.resource,
        "expires_at": row.expires_at,
        "used": getattr(row, "used_at", None) is not None,  # access tokens are not spent, only expire
    }


def _open_sign_in(sign_in_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(_sign_ins.c.id_hash == token_hash(sign_in_id), _sign_ins.c.used_at.is_(None))


def _revoke_grants(where: sa.ColumnElement[bool], now: float, reason: str) -> sa.Update:
    return _grants.update().where(where, _grants.c.revoked_at.is_(None)).values(revoked_at=now, revoked_reason=reason)


class Store:
    """All reads and writes of the auth wing. Every method is one short transaction."""

    def __init__(self, url: str | Database, *, clock: Clock = time.time) -> None:
        """On the database `url`, or on a `Database` opened with `SCHEMA` among others (one pool for every wing
        in a process; its clock is then the store's)."""
        if isinstance(url, Database):
            if SCHEMA not in url.schemas:
                raise ValueError("the database must be opened with the auth wing's schema (auth.store.SCHEMA)")
            self.db = url
        else:
            self.db = Database(
                url,
                schemas=[SCHEMA],
                label="token database",
                when_down="requests answer 503, /readyz is not ready",
                clock=clock,
            )
        self.url = self.db.url
        self.clock = self.db.clock
        self._tx = self.db.transaction
        self._revocation_listeners: list[RevocationListener] = []

    def __repr__(self) -> str:
        return f"Store({describe_database_url(self.url)!r})"

    @property
    def engine(self) -> AsyncEngine:
        return self.db.engine

    def on_revocation(self, listener: RevocationListener) -> None:
        """Call `listener(grant_id=..., account_id=...)` after every revocation made through this store (and if it
        fails: forgetting too much is harmless), so caches of this process forget the revoked tokens at once."""
        self._revocation_listeners.append(listener)

    def _revoked(self, *, grant_id: str | None = None, account_id: str | None = None) -> None:
        for listener in self._revocation_listeners:
            listener(grant_id=grant_id, account_id=account_id)

    async def aclose(self) -> None:
        await self.db.aclose()

    async def migrate(self) -> int:
        """Apply the missing migrations; returns the schema version. Safe to call from several replicas."""
        return (await self.db.migrate())[SCHEMA.name]

    async def ping(self) -> None:
        """See Database.ping: raises StorageUnavailable when the database does not answer or cannot be written."""
        await self.db.ping()

    async def take_lease(self, name: str, holder: str, *, ttl_s: float) -> bool:
        """See Database.take_lease."""
        return await self.db.take_lease(name, holder, ttl_s=ttl_s)

    # -- clients ------------------------------------------------------------------------------------------

    async def put_client(
        self,
        client_id: str,
        *,
        kind: str,
        info: dict[str, Any],
        secret_sealed: str | None,
        expires_at: float | None = None,
    ) -> None:
        now = self.clock()
        values = {
            "client_id": client_id,
            "kind": kind,
            "info_json": json.dumps(info),
            "secret_sealed": secret_sealed,
            "created_at": now,
            "expires_at": expires_at,
        }
        async with self._tx() as conn:
            # A metadata-document client is a cache entry, never a permanent row: expired ones go as new ones come.
            await conn.execute(
                _clients.delete().where(_clients.c.kind == "cimd", _clients.c.expires_at < now - _CIMD_GRACE_S)
            )
            await conn.execute(upsert(conn, _clients, values, key=["client_id"]))

    async def get_client(self, client_id: str) -> tuple[str, dict[str, Any], str | None, float | None] | None:
        """(kind, info, sealed secret, expires_at) or None."""
        async with self._tx(read_only=True) as conn:
            row = (
                await conn.execute(
                    sa.select(
                        _clients.c.kind, _clients.c.info_json, _clients.c.secret_sealed, _clients.c.expires_at
                    ).where(_clients.c.client_id == client_id)
                )
            ).first()
        if row is None:
            return None
        return row.kind, json.loads(row.info_json), row.secret_sealed, row.expires_at

    # -- sign-ins (between /authorize and the redirect back) ----------------------------------------------

    async def create_sign_in(
        self,
        sign_in_id: str,
        *,
        client_id: str,
        params: dict[str, Any],
        csrf: str,
        expires_at: float,
        key_sealed: str,
        account: dict[str, Any],
    ) -> bool:
        """Keep a sign-in whose key checked until consent (a key checked again replaces it); False if it was used.

        /authorize stores nothing (auth/pending.py): this row is the first a sign-in writes.
        """
        async with self._tx() as conn:
            # Opportunistic clean-up of abandoned sign-ins; the table stays small without a cron job.
            await conn.execute(_sign_ins.delete().where(_sign_ins.c.expires_at < self.clock() - 3600))
            values = {
                "id_hash": token_hash(sign_in_id),
                "client_id": client_id,
                "params_json": json.dumps(params),
                "csrf_hash": token_hash(csrf),
                "key_sealed": key_sealed,
                "account_json": json.dumps(account),
                "expires_at": expires_at,
            }
            statement = upsert(
                conn,
                _sign_ins,
                values,
                key=["id_hash"],
                update={"key_sealed": key_sealed, "account_json": values["account_json"]},
                where=_sign_ins.c.used_at.is_(None),
            )
            result = await conn.execute(statement.returning(_sign_ins.c.id_hash))
            return result.first() is not None

    async def get_sign_in(self, sign_in_id: str) -> SignInRow | None:
        """The sign-in if its key checked and it has not expired; `used` once consent was given or refused."""
        async with self._tx(read_only=True) as conn:
            row = (
                await conn.execute(
                    sa.select(_sign_ins).where(
                        _sign_ins.c.id_hash == token_hash(sign_in_id),
                        _sign_ins.c.expires_at > self.clock(),
                    )
                )
            ).first()
        if row is None:
            return None
        return SignInRow(
            client_id=row.client_id,
            params=json.loads(row.params_json),
            csrf_hash=row.csrf_hash,
            key_sealed=row.key_sealed,
            account=json.loads(row.account_json) if row.account_json else None,
            expires_at=row.expires_at,
            used=row.used_at is not None,
        )

    async def finish_sign_in(self, sign_in_id: str) -> bool:
        """Mark the sign-in used (and forget its key); False if it was already used: a double submit."""
        async with self._tx() as conn:
            result = await conn.execute(
                _sign_ins.update()
                .where(_open_sign_in(sign_in_id))
                .values(used_at=self.clock(), key_sealed=None, account_json=None)
            )
        return bool(result.rowcount == 1)

    # -- accounts, grants, codes --------------------------------------------------------------------------

    async def link_account_and_issue_code(
        self,
        *,
        account_id: str,
        key_hash_value: str,
        seal: Callable[[str], str],
        key_masked: str,
        key_fingerprint: str,
        grant_id: str,
        client_id: str,
        scopes: Sequence[str],
        resource: str,
        code: str,
        code_challenge: str,
        redirect_uri: str,
        redirect_uri_explicit: bool,
        code_ttl_s: float,
    ) -> str:
        """Create or refresh the account for this key, open a grant (token family) and its code.

        `seal(account_id)` encrypts the key bound to the account id. Returns the account id used: an account
        already linked with this key keeps its id.
        """
        now = self.clock()
        new = {
            "id": account_id,
            "key_hash": key_hash_value,
            "key_sealed": seal(account_id),
            "key_masked": key_masked,
            "key_fingerprint": key_fingerprint,
            "created_at": now,
            "linked_at": now,
        }
        async with self._tx() as conn:
            linked = await conn.execute(
                upsert(conn, _accounts, new, key=["key_hash"], update={"linked_at": now, "revoked_at": None}).returning(
                    _accounts.c.id
                )
            )
            account_id = linked.scalar_one()
            if account_id != new["id"]:  # relinked: seal the key again, bound to the id it keeps
                await conn.execute(
                    _accounts.update().where(_accounts.c.id == account_id).values(key_sealed=seal(account_id))
                )
            await conn.execute(
                _grants.insert().values(
                    id=grant_id,
                    account_id=account_id,
                    client_id=client_id,
                    scopes=" ".join(scopes),
                    resource=resource,
                    created_at=now,
                )
            )
            await conn.execute(
                _codes.insert().values(
                    code_hash=token_hash(code),
                    grant_id=grant_id,
                    client_id=client_id,
                    code_challenge=code_challenge,
                    redirect_uri=redirect_uri,
                    redirect_uri_explicit=int(redirect_uri_explicit),
                    expires_at=now + code_ttl_s,
                )
            )
        return str(account_id)

    async def get_code(self, code: str) -> CodeRow | None:
        async with self._tx(read_only=True) as conn:
            row = (
                await conn.execute(
                    sa.select(_codes, _grants.c.account_id, _grants.c.scopes, _grants.c.resource)
                    .join(_grants, _grants.c.id == _codes.c.grant_id)
                    .where(_codes.c.code_hash == token_hash(code))
                )
            ).first()
        if row is None:
            return None
        return CodeRow(
            **_family(row),
            code_challenge=row.code_challenge,
            redirect_uri=row.redirect_uri,
            redirect_uri_explicit=bool(row.redirect_uri_explicit),
        )

    async def redeem_code(
        self, code: str, *, access: str, access_ttl_s: float, refresh: str, refresh_ttl_s: float
    ) -> bool:
        """Spend the code once and issue the family's first tokens; False if it was already spent."""
        return await self._spend_and_issue(
            _codes, _codes.c.code_hash, code, access, access_ttl_s, refresh, refresh_ttl_s
        )

    async def rotate_refresh(
        self, refresh_old: str, *, access: str, access_ttl_s: float, refresh: str, refresh_ttl_s: float
    ) -> bool:
        """Spend a refresh token once and issue the next pair in its family; False if it was already spent."""
        return await self._spend_and_issue(
            _refresh, _refresh.c.token_hash, refresh_old, access, access_ttl_s, refresh, refresh_ttl_s
        )

    async def _spend_and_issue(
        self,
        table: sa.Table,
        hashed: sa.Column[Any],
        spent: str,
        access: str,
        access_ttl_s: float,
        refresh: str,
        refresh_ttl_s: float,
    ) -> bool:
        """Mark `spent` (a code or a refresh token) used, once, and issue its family's next token pair."""
        now = self.clock()
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    table.update()
                    .where(hashed == token_hash(spent), table.c.used_at.is_(None))
                    .values(used_at=now)
                    .returning(table.c.grant_id)
                )
            ).first()
            if row is None:
                return False
            for issued, token, ttl_s in ((_access, access, access_ttl_s), (_refresh, refresh, refresh_ttl_s)):
                await conn.execute(
                    issued.insert().values(token_hash=token_hash(token), grant_id=row.grant_id, expires_at=now + ttl_s)
                )
        return True

    async def get_access_token(self, token: str) -> TokenRow | None:
        """The live access token (not expired, family and account not revoked), or None. One query, no transaction."""
        async with self._tx(read_only=True) as conn:
            row = (await conn.execute(_ACCESS_CHECK, {"token_hash": token_hash(token), "now": self.clock()})).first()
        return None if row is None else TokenRow(**_family(row), key_sealed=row.key_sealed)

    async def get_refresh_token(self, token: str) -> TokenRow | None:
        """The refresh token if its family is live (expiry is checked by the caller); `used` marks a replay."""
        async with self._tx(read_only=True) as conn:
            row = (await conn.execute(_REFRESH_CHECK, {"token_hash": token_hash(token)})).first()
        return None if row is None else TokenRow(**_family(row), key_sealed=row.key_sealed)

    async def revoke_grant(self, grant_id: str, reason: str) -> None:
        try:
            async with self._tx() as conn:
                await conn.execute(_revoke_grants(_grants.c.id == grant_id, self.clock(), reason))
        finally:
            self._revoked(grant_id=grant_id)

    # -- operator commands --------------------------------------------------------------------------------

    async def list_accounts(self) -> list[AccountRow]:
        live = (
            sa.select(sa.func.count())
            .select_from(_grants)
            .where(_grants.c.account_id == _accounts.c.id, _grants.c.revoked_at.is_(None))
            .scalar_subquery()
        )
        async with self._tx(read_only=True) as conn:
            rows = (
                await conn.execute(sa.select(_accounts, live.label("active")).order_by(_accounts.c.created_at))
            ).all()
        return [
            AccountRow(
                id=r.id,
                key_sealed=r.key_sealed,
                key_masked=r.key_masked,
                key_fingerprint=r.key_fingerprint,
                created_at=r.created_at,
                linked_at=r.linked_at,
                revoked_at=r.revoked_at,
                active_grants=int(r.active),
            )
            for r in rows
        ]

    async def linked_accounts(self, account_ids: Collection[str]) -> set[str]:
        """Those of `account_ids` still linked: not revoked, with a grant not revoked (`list_accounts`'s active ones).
        Reads only these accounts' rows, however many are linked."""
        ids = list(dict.fromkeys(account_ids))
        linked: set[str] = set()
        async with self._tx(read_only=True) as conn:
            for start in range(0, len(ids), _IDS_PER_QUERY):
                chunk = ids[start : start + _IDS_PER_QUERY]
                live = sa.select(_grants.c.account_id).where(
                    _grants.c.account_id.in_(chunk), _grants.c.revoked_at.is_(None)
                )
                query = sa.select(_accounts.c.id).where(
                    _accounts.c.id.in_(chunk), _accounts.c.revoked_at.is_(None), _accounts.c.id.in_(live)
                )
                linked.update((await conn.execute(query)).scalars())
        return linked

    async def revoke_account(self, account_id: str) -> bool:
        """Unlink an account: every token of it stops working, in this process at once and in the others within
        their token cache's bound (`DESSERT_MCP_TOKEN_CACHE_S`). False if no such live account."""
        now = self.clock()
        try:
            async with self._tx() as conn:
                result = await conn.execute(
                    _accounts.update()
                    .where(_accounts.c.id == account_id, _accounts.c.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
                await conn.execute(
                    _revoke_grants(_grants.c.account_id == account_id, now, "account revoked by the operator")
                )
        finally:
            self._revoked(account_id=account_id)
        return bool(result.rowcount == 1)

    async def reseal_accounts(self, reseal: Callable[[str, str], str | None]) -> int:
        """Re-encrypt keys under the current encryption key; `reseal(account_id, sealed)` returns None to skip."""
        count = 0
        for account in await self.list_accounts():
            new = reseal(account.id, account.key_sealed)
            if new is None:
                continue
            async with self._tx() as conn:
                await conn.execute(_accounts.update().where(_accounts.c.id == account.id).values(key_sealed=new))
            count += 1
        return count

    async def prune(self, *, grace_s: float = 3600) -> int:
        """Delete rows past their expiry (plus `grace_s`); returns how many. Safe to run on any replica, any time.

        Used refresh tokens stay until they expire, so a replay is still recognised (and revokes its family). A grant
        goes once no token or code of it is left; a cached client document once it expires; a registered client once
        no grant uses it and it registered more than `ABANDONED_CLIENT_S` ago. Linked accounts stay (the operator's
        `accounts list`).
        """
        now = self.clock()
        cutoff = now - grace_s
        deleted = 0
        async with self._tx() as conn:
            for table in (_access, _refresh, _codes, _sign_ins):
                deleted += (await conn.execute(table.delete().where(table.c.expires_at < cutoff))).rowcount
            deleted += (await conn.execute(_throttle.delete().where(_throttle.c.window_start < cutoff))).rowcount
            used = [sa.exists().where(t.c.grant_id == _grants.c.id) for t in (_access, _refresh, _codes)]
            dead = _grants.delete().where(_grants.c.created_at < cutoff, *(sa.not_(u) for u in used))
            deleted += (await conn.execute(dead)).rowcount
            expired = _clients.c.expires_at.is_not(None) & (_clients.c.expires_at < cutoff)
            granted = sa.exists().where(_grants.c.client_id == _clients.c.client_id)
            abandoned = _clients.c.created_at < now - ABANDONED_CLIENT_S
            deleted += (await conn.execute(_clients.delete().where(expired | (abandoned & sa.not_(granted))))).rowcount
        return deleted

    # -- throttles ----------------------------------------------------------------------------------------

    async def throttle_hit(self, key: str, *, window_s: float) -> int:
        """Count one event for `key` in a fixed window; returns the count in the current window."""
        now = self.clock()
        stale = _throttle.c.window_start < now - window_s
        async with self._tx() as conn:
            result = await conn.execute(
                upsert(
                    conn,
                    _throttle,
                    {"key": key, "window_start": now, "hits": 1},
                    key=["key"],
                    update={
                        "hits": sa.case((stale, 1), else_=_throttle.c.hits + 1),
                        "window_start": sa.case((stale, now), else_=_throttle.c.window_start),
                    },
                ).returning(_throttle.c.hits)
            )
            return int(result.scalar_one())

    async def throttle_refund(self, key: str) -> None:
        """Take back one event counted by `throttle_hit` (the attempt it reserved turned out not to count)."""
        async with self._tx() as conn:
            await conn.execute(
                _throttle.update().where(_throttle.c.key == key, _throttle.c.hits > 0).values(hits=_throttle.c.hits - 1)
            )

    async def throttle_count(self, key: str, *, window_s: float) -> int:
        async with self._tx(read_only=True) as conn:
            row = (
                await conn.execute(
                    sa.select(_throttle.c.hits).where(
                        _throttle.c.key == key, _throttle.c.window_start >= self.clock() - window_s
                    )
                )
            ).first()
        return int(row.hits) if row is not None else 0
