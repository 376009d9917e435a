"""Database-side guards that migrations install: the ledger is append-only.

Even a bug, or a person with SQL access through the app's role, cannot edit or
delete a ledger row; corrections are new, compensating entries.
"""

from __future__ import annotations

from app.models.ledger import APPEND_ONLY_TABLES


def append_only_sql(dialect: str) -> list[str]:
    if dialect == "postgresql":
        statements = [
            """CREATE OR REPLACE FUNCTION evc_append_only() RETURNS trigger AS $$
            BEGIN
              RAISE EXCEPTION 'ledger rows are append-only (% on %)', TG_OP, TG_TABLE_NAME;
            END; $$ LANGUAGE plpgsql"""
        ]
        statements += [
            f"CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} "
            f"FOR EACH ROW EXECUTE FUNCTION evc_append_only()"
            for t in APPEND_ONLY_TABLES
        ]
        return statements
    return [
        f"CREATE TRIGGER {t}_no_{op.lower()} BEFORE {op} ON {t} "
        f"BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only'); END"
        for t in APPEND_ONLY_TABLES
        for op in ("UPDATE", "DELETE")
    ]


def drop_append_only_sql(dialect: str) -> list[str]:
    if dialect == "postgresql":
        return [f"DROP TRIGGER IF EXISTS {t}_append_only ON {t}" for t in APPEND_ONLY_TABLES] + [
            "DROP FUNCTION IF EXISTS evc_append_only()"
        ]
    return [
        f"DROP TRIGGER IF EXISTS {t}_no_{op.lower()}"
        for t in APPEND_ONLY_TABLES
        for op in ("UPDATE", "DELETE")
    ]
