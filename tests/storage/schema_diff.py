"""What a database holds compared with a declared schema: tables, columns (type, nullability), keys, indexes."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


def _affinity(type_: Any) -> str:
    # Generic kind, not the spelling: SQLite keeps `DOUBLE PRECISION` as written, PostgreSQL answers DOUBLE_PRECISION.
    generic = type_._type_affinity
    return "float" if issubclass(generic, sa.Float) else generic.__name__.lower()


def differences(conn: sa.Connection, metadata: sa.MetaData) -> list[str]:
    """Everything in which the database behind `conn` differs from `metadata`'s tables (an empty list: none)."""
    inspector = sa.inspect(conn)
    found: list[str] = []
    for table in metadata.sorted_tables:
        name = table.name
        if not inspector.has_table(name):
            found.append(f"{name}: missing")
            continue
        columns = {c["name"]: c for c in inspector.get_columns(name)}
        for extra in sorted(columns.keys() - set(table.c.keys())):
            found.append(f"{name}.{extra}: not declared")
        pk = {c.name for c in table.primary_key}
        for column in table.c:
            have = columns.get(column.name)
            if have is None:
                found.append(f"{name}.{column.name}: missing")
                continue
            if _affinity(have["type"]) != _affinity(column.type):
                found.append(f"{name}.{column.name}: type {have['type']} instead of {column.type}")
            # SQLite lets a TEXT primary key hold NULL unless it says NOT NULL; a key is never NULL in use.
            if column.name not in pk and bool(have["nullable"]) != bool(column.nullable):
                found.append(f"{name}.{column.name}: nullable={have['nullable']} instead of {column.nullable}")
        if set(inspector.get_pk_constraint(name)["constrained_columns"]) != pk:
            found.append(f"{name}: primary key differs")
        have_fks = {
            (tuple(fk["constrained_columns"]), fk["referred_table"], tuple(fk["referred_columns"]))
            for fk in inspector.get_foreign_keys(name)
        }
        declared_fks = {((fk.parent.name,), fk.column.table.name, (fk.column.name,)) for fk in table.foreign_keys}
        if have_fks != declared_fks:
            found.append(f"{name}: foreign keys {sorted(have_fks)} instead of {sorted(declared_fks)}")
        have_unique = {tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)}
        declared_unique = {(c.name,) for c in table.c if c.unique} | {
            tuple(c.name for c in u.columns) for u in table.constraints if isinstance(u, sa.UniqueConstraint)
        }
        if have_unique != declared_unique:
            found.append(f"{name}: unique constraints {sorted(have_unique)} instead of {sorted(declared_unique)}")
        have_indexes = {
            (i["name"], tuple(i["column_names"]), bool(i["unique"]))
            for i in inspector.get_indexes(name)
            if not i.get("duplicates_constraint")
        }
        declared_indexes = {(i.name, tuple(c.name for c in i.columns), bool(i.unique)) for i in table.indexes}
        if have_indexes != declared_indexes:
            found.append(f"{name}: indexes {sorted(have_indexes)} instead of {sorted(declared_indexes)}")
    return found
