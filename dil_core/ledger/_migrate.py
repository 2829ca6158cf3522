"""Migrations of older ledgers to the current schema (:data:`dil_core.ledger._orm.SCHEMA_VERSION`).

Each step runs inside the transaction that opens the ledger, so a failed migration changes nothing.

1 -> 2: scans get ``learned_at``/``learned_tag`` (a scan finished under schema 1 was learned from when it
finished, by the checkpoint its last round names); rounds get ``claimed_by``/``claim_expires``; model
versions get ``checkpoint``; submissions
are unique per (round, content) instead of (scan, content). SQLite cannot drop a table constraint, so its
submissions table is rebuilt.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

__all__ = ["migrate"]


def _v1_to_v2(conn: Connection, schema: str | None) -> None:
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
    conn.execute(text("PRAGMA defer_foreign_keys = ON"))
    conn.execute(text(
        "CREATE TABLE submissions_v2 (id INTEGER NOT NULL PRIMARY KEY, round_id INTEGER NOT NULL "
        "REFERENCES rounds (id), scan_id INTEGER NOT NULL REFERENCES scans (id), sha256 VARCHAR(64) NOT NULL, "
        "stored_path TEXT NOT NULL, original_name TEXT NOT NULL, drawn_json JSON NOT NULL, n_drawn INTEGER NOT "
        "NULL, received_at DATETIME NOT NULL, CONSTRAINT uq_submissions_round_sha256 UNIQUE (round_id, sha256), "
        "CONSTRAINT ck_submissions_n_drawn CHECK (n_drawn >= 0))"
    ))
    conn.execute(text("INSERT INTO submissions_v2 SELECT id, round_id, scan_id, sha256, stored_path, original_name, "
                      "drawn_json, n_drawn, received_at FROM submissions"))
    conn.execute(text("DROP TABLE submissions"))
    conn.execute(text("ALTER TABLE submissions_v2 RENAME TO submissions"))


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
