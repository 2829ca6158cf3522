"""Migrations of older ledgers to the current schema (:data:`dil_core.ledger._orm.SCHEMA_VERSION`).

Each step runs inside the transaction that opens the ledger, so a failed migration changes nothing.

1 -> 2: scans get ``learned_at``/``learned_tag`` (a scan finished under schema 1 was learned from when it
finished, by the checkpoint its last round names); rounds get ``claimed_by``/``claim_expires``; model
versions get ``checkpoint``; a ``leases`` table; submissions
are unique per (round, content) instead of (scan, content). SQLite cannot drop a table constraint, so its
submissions table (and the labor table that refers to it) is rebuilt with the rows as they were.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

__all__ = ["migrate"]


def _v1_to_v2(conn: Connection, schema: str | None) -> None:
    from dil_core.ledger._orm import LeaseRow

    LeaseRow.__table__.create(conn)  # type: ignore[attr-defined]
    q = f'"{schema}".' if schema else ""
    for table, column, kind in (
        ("scans", "learned_at", "TIMESTAMP"),
        ("scans", "learned_tag", "VARCHAR(200)"),
        ("rounds", "claimed_by", "VARCHAR(200)"),
        ("rounds", "claim_expires", "TIMESTAMP"),
        ("model_versions", "checkpoint", "VARCHAR(200)"),
    ):
        if conn.dialect.name == "postgresql" and kind == "TIMESTAMP":
            kind = "TIMESTAMP WITH TIME ZONE"
        conn.execute(text(f"ALTER TABLE {q}{table} ADD COLUMN {column} {kind}"))
    conn.execute(text(
        f"UPDATE {q}scans SET learned_at = finished_at, learned_tag = (SELECT r.model_version FROM {q}rounds r "
        f"WHERE r.scan_id = {q}scans.id AND r.model_version IS NOT NULL ORDER BY r.number DESC LIMIT 1) "
        "WHERE state IN ('passed', 'at_quota')"
    ))
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"ALTER TABLE {q}submissions DROP CONSTRAINT uq_submissions_scan_sha256"))
        conn.execute(text(
            f"ALTER TABLE {q}submissions ADD CONSTRAINT uq_submissions_round_sha256 UNIQUE (round_id, sha256)"
        ))
        return
    # SQLite: rebuild submissions (and labor, which refers to it) with the new constraint, rows kept as they are
    from dil_core.ledger._orm import LaborRowORM, SubmissionRow

    sub_cols = ", ".join(c.name for c in SubmissionRow.__table__.columns)  # type: ignore[attr-defined]
    labor_cols = ", ".join(c.name for c in LaborRowORM.__table__.columns)  # type: ignore[attr-defined]
    conn.execute(text(f"CREATE TEMP TABLE _submissions_v1 AS SELECT {sub_cols} FROM submissions"))
    conn.execute(text(f"CREATE TEMP TABLE _labor_v1 AS SELECT {labor_cols} FROM labor"))
    conn.execute(text("DROP TABLE labor"))
    conn.execute(text("DROP TABLE submissions"))
    SubmissionRow.__table__.create(conn)  # type: ignore[attr-defined]
    LaborRowORM.__table__.create(conn)  # type: ignore[attr-defined]
    conn.execute(text(f"INSERT INTO submissions ({sub_cols}) SELECT {sub_cols} FROM _submissions_v1"))
    conn.execute(text(f"INSERT INTO labor ({labor_cols}) SELECT {labor_cols} FROM _labor_v1"))
    conn.execute(text("DROP TABLE _submissions_v1"))
    conn.execute(text("DROP TABLE _labor_v1"))


_STEPS = {1: _v1_to_v2}


def migrate(conn: Connection, found: int, target: int, schema: str | None) -> None:
    """Run the steps from schema ``found`` to ``target``.

    Raises
    ------
    KeyError
        No step from some version on the way (the caller reports it).
    """
    for version in range(found, target):
        _STEPS[version](conn, schema)
