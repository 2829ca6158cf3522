"""Shared fixtures of the campaign-ledger tests (``test_ledger*.py``): SQLite and the local PostgreSQL.

The ``backend`` fixture gives each test a SQLite workspace and (where a server answers) a fresh PostgreSQL
schema; ``ledger`` opens a ledger on it with a :class:`StepClock`. The helpers (``GEOMETRY``, ``T0``,
``_camp_scan``, ``_submit``, ``_postgres_url``, ...) are imported from here by the test modules.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text

from dil_core.geometry import Geometry
from dil_core.ledger import LaborRow, Ledger

# DIL_TEST_POSTGRES_URL names another server; by default the local one, as user postgres or root.
PG_URLS = (
    (os.environ["DIL_TEST_POSTGRES_URL"],)
    if os.environ.get("DIL_TEST_POSTGRES_URL")
    else ("postgresql+psycopg://postgres@127.0.0.1:5432/test", "postgresql+psycopg://root@127.0.0.1:5432/test")
)
GEOMETRY = Geometry(size=(10, 12, 8), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


class StepClock:
    """A clock that returns T0, T0 + 1 s, T0 + 2 s, ... (thread-safe)."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            now = T0 + timedelta(seconds=self.calls)
            self.calls += 1
            return now


_PG_PROBE: dict[str, str | None] = {}


def _server_answers(url: str) -> bool:
    parsed = make_url(url)
    try:
        socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 5432), timeout=2).close()
    except OSError:
        return False
    return True


def _postgres_url() -> str | None:
    """The first PostgreSQL URL that connects; None only where no server answers (probed once per session).

    A server that answers but refuses every candidate URL is an error, not a skip.
    """
    if "url" not in _PG_PROBE:
        import psycopg

        answering = [url for url in PG_URLS if _server_answers(url)]
        _PG_PROBE["url"] = None
        errors = []
        for url in answering:
            try:
                with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=2):
                    _PG_PROBE["url"] = url
                    break
            except psycopg.OperationalError as err:
                errors.append(f"{url}: {err}")
        if answering and _PG_PROBE["url"] is None:
            _PG_PROBE["refused"] = "PostgreSQL answers but refuses the test URLs: " + "; ".join(errors)
    if _PG_PROBE.get("refused"):
        raise RuntimeError(_PG_PROBE["refused"])
    return _PG_PROBE["url"]


@dataclass
class Backend:
    """One test database: a SQLite workspace folder or a fresh PostgreSQL schema."""

    name: str
    target: str | Path
    schema: str | None
    opened: list[Ledger] = field(default_factory=list)

    def open(self, *, create: bool = True, clock: Callable[[], datetime] | None = None) -> Ledger:
        ledger = Ledger.open(self.target, create=create, schema=self.schema, clock=clock)
        self.opened.append(ledger)
        return ledger

    def execute(self, sql: str) -> None:
        """Run raw SQL on the ledger's tables (to tamper with them)."""
        ledger = self.opened[0]
        with ledger.engine.begin() as conn:
            if self.schema is not None:
                conn.exec_driver_sql(f'SET LOCAL search_path TO "{self.schema}"')
            conn.execute(text(sql))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        be = Backend("sqlite", tmp_path / "workspace", None)
    else:
        url = _postgres_url()
        if url is None:
            pytest.skip(f"no PostgreSQL server answers at {PG_URLS}")
        be = Backend("postgresql", url, f"dil_test_{uuid.uuid4().hex[:16]}")
    yield be
    for ledger in be.opened:
        ledger.close()
    if be.schema is not None:
        cleanup = create_engine(str(be.target))
        with cleanup.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{be.schema}" CASCADE')
        cleanup.dispose()


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
def ledger(backend: Backend, clock: StepClock) -> Ledger:
    return backend.open(clock=clock)


def _camp_scan(ledger: Ledger, case: str = "case_a", campaign: str = "hippo") -> Any:
    ledger.create_campaign(campaign, {"rho": 0.85}, exist_ok=True)
    return ledger.add_scan(campaign, case, f"/data/{case}.nii.gz", GEOMETRY)


def _sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def _submit(ledger: Ledger, scan: Any, rnd: Any, tag: str, rows: list[LaborRow], drawn: Any = None) -> Any:
    drawn = drawn if drawn is not None else {r.axis: range(r.slices) for r in rows}
    return ledger.record_submission(scan, rnd, _sha(tag), f"/ws/submissions/{tag}.nii.gz", f"{tag}.nii.gz", drawn, rows)
