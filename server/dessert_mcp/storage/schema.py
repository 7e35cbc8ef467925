"""A wing's schema, declared once, and the migrations that bring any older database of it to that declaration.

Each wing declares its tables (full types, keys, indexes) in one `sa.MetaData` and lists its migrations as
versions of operations on those declared objects, never as hand-written DDL: "create these tables" creates them
as declared, "add these columns" adds the declared columns. Every operation skips what is already there, so a new
database (whose first migration creates the tables with every column declared today) and an old one (which gets
the added columns) both end at the declaration; tests/storage/test_migrations.py checks that on SQLite and
PostgreSQL. (Alembic would add an env.py and a second entry point for this; switch to it the day a change needs
data migrations or autogenerate.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.schema import CreateColumn


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: the declared tables it creates (with their indexes) and the declared columns it adds."""

    version: int
    create: tuple[str, ...] = ()
    add_columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


class Schema:
    """A wing's tables and their migrations; the versions applied are kept in the wing's own version table."""

    def __init__(
        self, name: str, metadata: sa.MetaData, migrations: Sequence[Migration], *, version_table: str = ""
    ) -> None:
        if [m.version for m in migrations] != list(range(1, len(migrations) + 1)):
            raise ValueError(f"{name}: migrations must be numbered 1, 2, 3, ...")
        self.name = name
        self.metadata = metadata
        self.migrations = tuple(migrations)
        self.version = len(migrations)
        self.versions = sa.Table(
            version_table or f"{name}_schema_version",
            metadata,
            sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("applied_at", sa.Double, nullable=False),
        )

    def __repr__(self) -> str:
        return f"Schema({self.name!r}, version={self.version})"

    def upgrade(self, conn: sa.Connection, now: float) -> int:
        """Apply the missing migrations in `conn`'s transaction; returns the version the database was at."""
        self.metadata.create_all(conn, tables=[self.versions], checkfirst=True)
        current = conn.execute(sa.select(sa.func.max(self.versions.c.version))).scalar() or 0
        if current > self.version:
            raise RuntimeError(
                f"the database's {self.name} schema is version {current}, newer than this dessert-mcp's "
                f"({self.version}); upgrade dessert-mcp"
            )
        for migration in self.migrations[current:]:
            tables = [self.metadata.tables[name] for name in migration.create]
            self.metadata.create_all(conn, tables=tables, checkfirst=True)
            for table_name, columns in migration.add_columns.items():
                present = {c["name"] for c in sa.inspect(conn).get_columns(table_name)}
                table = self.metadata.tables[table_name]
                for column in columns:
                    if column not in present:
                        spec = CreateColumn(table.c[column]).compile(dialect=conn.dialect)
                        quoted = conn.dialect.identifier_preparer.quote(table_name)
                        conn.execute(sa.text(f"ALTER TABLE {quoted} ADD COLUMN {spec}"))
            conn.execute(self.versions.insert().values(version=migration.version, applied_at=now))
        return int(current)
