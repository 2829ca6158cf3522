"""Tests of the campaign ledger, on SQLite and (where a server answers) on the local PostgreSQL."""

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

import numpy as np
import pytest
from sqlalchemy import create_engine, make_url, text

from dil_core.geometry import Geometry
from dil_core.ledger import (
    LEDGER_FILENAME,
    SCHEMA_VERSION,
    LaborRow,
    Ledger,
    LedgerError,
    LedgerNotFoundError,
    LedgerSchemaError,
    LedgerStateError,
    RecordNotFoundError,
    RoundStatus,
    ScanState,
    file_suffix,
    sha256_file,
    store_submission_file,
)
from dil_core.ledger import core as ledger_core

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


# ------------------------------------------------------------------------------------------------ opening
def test_open_creates_tables_and_reopens(backend: Backend) -> None:
    first = backend.open()
    first.create_campaign("hippo")
    again = backend.open(create=False)
    assert [c.name for c in again.list_campaigns()] == ["hippo"]
    if backend.name == "sqlite":
        assert (Path(backend.target) / LEDGER_FILENAME).is_file()
        with first.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_open_missing_without_create(backend: Backend) -> None:
    with pytest.raises(LedgerNotFoundError, match="create=False"):
        backend.open(create=False)
    if backend.name == "sqlite":
        assert not (Path(backend.target) / LEDGER_FILENAME).exists()


@pytest.mark.parametrize(
    ("sql", "match"),
    [
        ("UPDATE schema_version SET version = {newer}", "newer than this version of DIL"),
        ("UPDATE schema_version SET version = 0", "older than"),
        ("DELETE FROM schema_version", "empty schema_version"),
        ("DROP TABLE schema_version", "no schema_version"),
    ],
)
def test_schema_version_refusal(backend: Backend, sql: str, match: str) -> None:
    backend.open().create_campaign("hippo")
    backend.execute(sql.format(newer=SCHEMA_VERSION + 1))
    with pytest.raises(LedgerSchemaError, match=match):
        backend.open()


def test_open_paths_and_urls(tmp_path: Path) -> None:
    file_ledger = Ledger.open(tmp_path / "custom.sqlite")
    assert file_ledger.url.endswith("custom.sqlite")
    file_ledger.close()
    (tmp_path / "ws").mkdir()
    with Ledger.open(tmp_path / "ws") as folder_ledger:
        assert folder_ledger.url == f"sqlite:///{tmp_path / 'ws' / LEDGER_FILENAME}"
    with Ledger.open(f"sqlite:///{tmp_path / 'ws' / LEDGER_FILENAME}", create=False) as by_url:
        assert by_url.list_campaigns() == []
    with Ledger.open("sqlite://") as memory:
        memory.create_campaign("m")
        assert memory.get_campaign("m").name == "m"


@pytest.mark.parametrize(
    ("target", "kwargs", "error", "match"),
    [
        ("mysql://u@h/db", {}, ValueError, "not supported"),
        ("", {}, ValueError, "url_or_path"),
        (42, {}, TypeError, "url_or_path"),
        ("sqlite:///{tmp}/x.db", {"schema": "s"}, ValueError, "only PostgreSQL"),
        ("postgresql+psycopg://u@127.0.0.1:1/db", {"schema": "bad name"}, ValueError, "identifier"),
        ("sqlite:///{tmp}/missing/x.db", {}, LedgerNotFoundError, "folder"),
    ],
)
def test_open_bad_inputs(tmp_path: Path, target: Any, kwargs: dict[str, Any], error: type, match: str) -> None:
    if isinstance(target, str):
        target = target.format(tmp=tmp_path)
    with pytest.raises(error, match=match):
        Ledger.open(target, **kwargs)


def test_clock_must_be_aware(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="clock"):
        Ledger.open(tmp_path, clock=42)  # type: ignore[arg-type]
    naive = Ledger.open(tmp_path, clock=lambda: datetime(2025, 1, 1))
    with pytest.raises(LedgerError, match="timezone-aware"):
        naive.create_campaign("x")
    assert naive.list_campaigns() == []
    naive.close()


# ---------------------------------------------------------------------------------------------- campaigns
def test_campaigns(ledger: Ledger) -> None:
    made = ledger.create_campaign("hippo", {"rho": 0.85, "planes": ["sagittal"]})
    assert made.created_at == T0
    assert ledger.get_campaign("hippo") == made == ledger.get_campaign(made.id)
    assert ledger.create_campaign("hippo", {"rho": 0.85, "planes": ["sagittal"]}, exist_ok=True) == made
    with pytest.raises(LedgerStateError, match="exists already"):
        ledger.create_campaign("hippo", {"rho": 0.85})
    with pytest.raises(LedgerStateError, match="different config"):
        ledger.create_campaign("hippo", {"rho": 0.9}, exist_ok=True)
    with pytest.raises(RecordNotFoundError, match="nope"):
        ledger.get_campaign("nope")


# ------------------------------------------------------------------------------------------------- scans
def test_add_scan_idempotent_and_queue_order(ledger: Ledger) -> None:
    ledger.create_campaign("hippo")
    a = ledger.add_scan("hippo", "a", "/a.nii.gz", GEOMETRY, target_slices={0: 5, 2: 4})
    b = ledger.add_scan("hippo", "b", Path("/b.nii.gz"), GEOMETRY, ground_truth_path="/b_gt.nii.gz")
    again = ledger.add_scan("hippo", "a", "/a.nii.gz", GEOMETRY)
    assert again == a
    assert (a.position, b.position) == (0, 1)
    assert a.target_slices == {0: 5, 2: 4}
    assert a.geometry["size"] == [10, 12, 8]
    assert [s.case_id for s in ledger.list_scans("hippo")] == ["a", "b"]
    assert ledger.find_scan("hippo", "b") == b
    assert ledger.find_scan("hippo", "zzz") is None
    with pytest.raises(LedgerStateError, match="already in campaign"):
        ledger.add_scan("hippo", "a", "/other.nii.gz", GEOMETRY)
    # the same case id in another campaign is another scan
    ledger.create_campaign("other")
    c = ledger.add_scan("other", "a", "/c.nii.gz", GEOMETRY)
    assert c.id not in (a.id, b.id) and c.position == 0
    assert ledger.next_queued_scan("hippo") == a


def test_next_queued_scan_claim(ledger: Ledger) -> None:
    ledger.create_campaign("hippo")
    scans = [ledger.add_scan("hippo", f"s{i}", f"/s{i}.nii", GEOMETRY) for i in range(3)]
    first = ledger.next_queued_scan("hippo", claim=True)
    second = ledger.next_queued_scan("hippo", claim=True)
    assert (first.id, first.state) == (scans[0].id, ScanState.RUNNING)
    assert second.id == scans[1].id
    assert ledger.next_queued_scan("hippo") == scans[2]
    ledger.next_queued_scan("hippo", claim=True)
    assert ledger.next_queued_scan("hippo", claim=True) is None
    assert [s.case_id for s in ledger.list_scans("hippo", state="running")] == ["s0", "s1", "s2"]


def test_concurrent_claims_take_different_scans(backend: Backend) -> None:
    ledgers = [backend.open(), backend.open()]
    ledgers[0].create_campaign("hippo")
    for i in range(6):
        ledgers[0].add_scan("hippo", f"s{i}", f"/s{i}.nii", GEOMETRY)
    claimed: list[list[int]] = [[], []]
    barrier = threading.Barrier(2)

    def worker(k: int) -> None:
        barrier.wait()
        while (scan := ledgers[k].next_queued_scan("hippo", claim=True)) is not None:
            claimed[k].append(scan.id)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed[0] + claimed[1]) == sorted(s.id for s in ledgers[0].list_scans("hippo"))


# Each case: states to walk through from "queued", then the target, and whether that last step is allowed.
TRANSITIONS = [
    ([], "running", True),
    ([], "waiting_for_labels", True),
    ([], "failed", True),
    ([], "queued", True),  # same state: a no-op
    ([], "passed", False),
    ([], "at_quota", False),
    (["running"], "passed", True),
    (["running"], "at_quota", True),
    (["running"], "queued", True),
    (["running"], "waiting_for_labels", True),
    (["waiting_for_labels"], "running", True),
    (["waiting_for_labels"], "passed", True),
    (["waiting_for_labels"], "queued", False),
    (["running", "passed"], "queued", False),
    (["running", "passed"], "running", False),
    (["running", "at_quota"], "queued", True),
    (["failed"], "queued", True),
    (["failed"], "running", False),
]


@pytest.mark.parametrize(("path", "target", "allowed"), TRANSITIONS)
def test_state_transitions(ledger: Ledger, path: list[str], target: str, allowed: bool) -> None:
    scan = _camp_scan(ledger)
    for state in path:
        scan = ledger.set_scan_state(scan, state)
    if allowed:
        after = ledger.set_scan_state(scan, target)
        assert after.state == ScanState(target)
        assert (after.finished_at is not None) == (target in ("passed", "at_quota", "failed"))
    else:
        with pytest.raises(LedgerStateError, match=f"cannot go from {scan.state.value} to {target}"):
            ledger.set_scan_state(scan, target)
        assert ledger.get_scan(scan).state == scan.state


def test_finished_at_from_clock_and_final_mask(ledger: Ledger, clock: StepClock) -> None:
    scan = _camp_scan(ledger)  # clock calls 0 (campaign) and 1 (scan)
    ledger.set_scan_state(scan, "running")  # call 2
    done = ledger.set_scan_state(scan, ScanState.PASSED, final_mask_path="/ws/final/a.nii.gz")  # call 3
    assert done.finished_at == T0 + timedelta(seconds=3)
    assert done.final_mask_path == "/ws/final/a.nii.gz"
    assert done.added_at == T0 + timedelta(seconds=1)


# ------------------------------------------------------------------------------------------------ rounds
def test_exactly_one_open_round(ledger: Ledger) -> None:
    scan = _camp_scan(ledger)
    assert ledger.current_round(scan) is None
    r1 = ledger.open_round(scan, {0: [2, 7], 2: {3}}, {0: [0.5] * 10}, planes={0: "sagittal", 2: "axial"})
    assert (r1.number, r1.status, r1.requested, r1.planes) == (
        1, RoundStatus.REQUESTED, {0: (2, 7), 2: (3,)}, {0: "sagittal", 2: "axial"})
    assert r1.proposal_scores == {0: (0.5,) * 10}
    assert ledger.get_scan(scan).state is ScanState.WAITING_FOR_LABELS
    with pytest.raises(LedgerStateError, match="open round"):
        ledger.open_round(scan, {1: [4]})
    _submit(ledger, scan, r1, "r1", [LaborRow(0, "sagittal", 2, 0.2)])
    assert ledger.current_round(scan).status is RoundStatus.SUBMITTED
    with pytest.raises(LedgerStateError, match="open round"):
        ledger.open_round(scan, {1: [4]})
    processed = ledger.mark_round_processed(r1, {"dice_estimate": 0.7, "seconds": {"train": 1.5}}, 3)
    assert (processed.status, processed.metrics["dice_estimate"], processed.model_version) == (
        RoundStatus.PROCESSED, 0.7, "3")
    assert ledger.current_round(scan) is None
    r2 = ledger.open_round(scan, {1: [4]})
    assert r2.number == 2 and ledger.current_round(scan) == r2
    assert [r.number for r in ledger.list_rounds(scan)] == [1, 2]


def test_open_round_index_guards_concurrent_opens(backend: Backend) -> None:
    ledgers = [backend.open(), backend.open()]
    scan = _camp_scan(ledgers[0])
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def worker(k: int) -> None:
        barrier.wait()
        try:
            ledgers[k].open_round(scan, {0: [k]})
            outcomes.append("opened")
        except LedgerStateError:
            outcomes.append("refused")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["opened", "refused"]
    assert len(ledgers[0].list_rounds(scan)) == 1


def test_round_processing_states(ledger: Ledger) -> None:
    scan = _camp_scan(ledger)
    r1 = ledger.open_round(scan, {0: [1]})
    with pytest.raises(LedgerStateError, match="requested, not submitted"):
        ledger.mark_round_processed(r1)
    _submit(ledger, scan, r1, "x", [LaborRow(0, "sagittal", 1, 0.1)])
    ledger.mark_round_processed(r1)
    with pytest.raises(LedgerStateError, match="processed, not submitted"):
        ledger.mark_round_processed(r1)
    ledger.set_scan_state(scan, "passed")
    with pytest.raises(LedgerStateError, match="no new rounds"):
        ledger.open_round(scan, {0: [2]})


def test_round_closed_without_submission_adds_no_labor(ledger: Ledger) -> None:
    scan = _camp_scan(ledger)
    r1 = ledger.open_round(scan, {1: [7]})
    closed = ledger.close_round_without_submission(r1, {"accepted": True}, "s1-r1")
    assert closed.status is RoundStatus.PROCESSED and closed.model_version == "s1-r1"
    assert closed.metrics == {"accepted": True}
    assert ledger.current_round(scan) is None and ledger.list_submissions(scan) == []
    assert ledger.cumulative_labor("hippo") == 0.0
    with pytest.raises(LedgerStateError, match="processed, not requested"):
        ledger.close_round_without_submission(r1)
    r2 = ledger.open_round(scan, {1: [8]})  # the scan may go on
    _submit(ledger, scan, r2, "y", [LaborRow(1, "coronal", 1, 0.05)])
    with pytest.raises(LedgerStateError, match="submitted, not requested"):
        ledger.close_round_without_submission(r2)


def test_stop_that_closes_the_requested_round_in_one_transaction(ledger: Ledger) -> None:
    scan = _camp_scan(ledger)
    r1 = ledger.open_round(scan, {1: [7]})
    ledger.record_stop(scan, r1, "accept", None, True, finish="passed", final_mask_path="/ws/masks/a.nii.gz",
                       close_round=True, metrics={"accepted": True}, model_version="s1-a1")
    closed = ledger.list_rounds(scan)[0]
    assert closed.status is RoundStatus.PROCESSED and closed.model_version == "s1-a1"
    assert ledger.get_scan(scan).state is ScanState.PASSED and ledger.cumulative_labor("hippo") == 0.0
    other = _camp_scan(ledger, "case_b")
    r2 = ledger.open_round(other, {1: [3]})
    _submit(ledger, other, r2, "z", [LaborRow(1, "coronal", 1, 0.05)])
    with pytest.raises(LedgerStateError, match="not requested"):
        ledger.record_stop(other, r2, "accept", None, True, finish="passed", close_round=True)
    assert ledger.get_scan(other).state is not ScanState.PASSED  # nothing of the refused call was written
    assert ledger.list_stops(other) == []
    with pytest.raises(ValueError, match="close_round"):
        ledger.record_stop(other, None, "accept", None, True, close_round=True)


# ------------------------------------------------------------------------------------------- submissions
def test_duplicate_submission_counted_once(ledger: Ledger) -> None:
    scan = _camp_scan(ledger)
    r1 = ledger.open_round(scan, {0: [1, 5]})
    rows = [LaborRow(0, "sagittal", 2, 0.25), LaborRow(2, "axial", 1, 0.125)]
    first, created = _submit(ledger, scan, r1, "file", rows, drawn={0: [1, 5], 2: [4]})
    assert created and first.n_drawn == 3 and first.labor == tuple(rows)
    assert first.drawn == {0: frozenset({1, 5}), 2: frozenset({4})}
    assert ledger.get_scan(scan).state is ScanState.RUNNING
    second, created = _submit(ledger, scan, r1, "file", rows)
    assert not created and second == first
    # the same file again during the next round still counts once, and leaves that round open
    ledger.mark_round_processed(r1)
    r2 = ledger.open_round(scan, {0: [3]})
    third, created = _submit(ledger, scan, r2, "file", rows)
    assert not created and third == first
    assert ledger.current_round(scan).status is RoundStatus.REQUESTED
    assert ledger.cumulative_labor("hippo") == pytest.approx(0.375)
    assert len(ledger.list_submissions(scan)) == 1


def test_second_distinct_file_for_a_submitted_round_is_refused(ledger: Ledger) -> None:
    scan = _camp_scan(ledger)
    r1 = ledger.open_round(scan, {0: [1]})
    _submit(ledger, scan, r1, "one", [LaborRow(0, "sagittal", 1, 0.1)])
    with pytest.raises(LedgerStateError, match="not open for submissions"):
        _submit(ledger, scan, r1, "two", [LaborRow(0, "sagittal", 1, 0.1)])
    assert ledger.cumulative_labor("hippo") == pytest.approx(0.1)


@pytest.mark.parametrize("n_threads", [2, 4])
def test_concurrent_duplicate_submission_counts_once(backend: Backend, n_threads: int) -> None:
    ledgers = [backend.open() for _ in range(n_threads)]
    scan = _camp_scan(ledgers[0])
    rnd = ledgers[0].open_round(scan, {0: [1, 2]})
    rows = [LaborRow(0, "sagittal", 2, 0.2)]
    barrier = threading.Barrier(n_threads)
    results: list[tuple[int, bool]] = []
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        barrier.wait()
        try:
            sub, created = _submit(ledgers[k], scan, rnd, "same-file", rows)
            results.append((sub.id, created))
        except BaseException as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(c for _, c in results) == [False] * (n_threads - 1) + [True]
    assert len({i for i, _ in results}) == 1
    assert ledgers[0].cumulative_labor("hippo") == pytest.approx(0.2)
    assert ledgers[0].status_summary("hippo").n_submissions == 1


def test_integrity_error_on_duplicate_is_handled(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that missed a concurrent duplicate hits UNIQUE(scan_id, sha256) and returns the first record."""
    scan = _camp_scan(ledger)
    r1 = ledger.open_round(scan, {0: [1]})
    first, _ = _submit(ledger, scan, r1, "dup", [LaborRow(0, "sagittal", 1, 0.1)])
    ledger.mark_round_processed(r1)
    r2 = ledger.open_round(scan, {0: [2]})
    real = Ledger._find_submission
    calls = {"n": 0}

    def miss_first(self: Ledger, session: Any, scan_id: int, sha: str) -> Any:
        calls["n"] += 1
        return None if calls["n"] == 1 else real(self, session, scan_id, sha)

    monkeypatch.setattr(Ledger, "_find_submission", miss_first)
    again, created = _submit(ledger, scan, r2, "dup", [LaborRow(0, "sagittal", 1, 0.1)])
    assert calls["n"] == 2 and not created and again == first
    monkeypatch.undo()
    assert ledger.current_round(scan).status is RoundStatus.REQUESTED
    assert ledger.cumulative_labor("hippo") == pytest.approx(0.1)


def test_crash_inside_submission_leaves_nothing(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    scan = _camp_scan(ledger)
    rnd = ledger.open_round(scan, {0: [1]})

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("power cut")

    monkeypatch.setattr(ledger_core.cv, "submission_record", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        _submit(ledger, scan, rnd, "f", [LaborRow(0, "sagittal", 1, 0.1)])
    monkeypatch.undo()
    assert ledger.list_submissions(scan) == []
    assert ledger.cumulative_labor("hippo") == 0.0
    assert ledger.current_round(scan).status is RoundStatus.REQUESTED
    assert ledger.get_scan(scan).state is ScanState.WAITING_FOR_LABELS
    _, created = _submit(ledger, scan, rnd, "f", [LaborRow(0, "sagittal", 1, 0.1)])
    assert created


def test_numpy_inputs(ledger: Ledger) -> None:
    scan = _camp_scan(ledger)
    scores = np.linspace(0.0, 0.9, 10, dtype=np.float32)
    rnd = ledger.open_round(scan, {np.int64(0): np.array([7, 2])}, {0: scores})
    assert rnd.requested == {0: (2, 7)}
    assert rnd.proposal_scores[0] == pytest.approx(tuple(float(x) for x in scores))
    row = LaborRow(np.int64(0), "sagittal", np.int64(2), np.float64(0.2))
    assert (type(row.axis), type(row.slices), type(row.fraction)) == (int, int, float)
    sub, _ = _submit(ledger, scan, rnd, "np", [row], drawn={0: np.array([2, 7])})
    ledger.mark_round_processed(rnd, {"dice": np.float64(0.5), "per_slice": np.array([0.1, 0.2])})
    assert sub.drawn == {0: frozenset({2, 7})}
    assert ledger.list_rounds(scan)[0].metrics == {"dice": 0.5, "per_slice": [0.1, 0.2]}


# ---------------------------------------------------------------------------------------------- labor
def test_labor_sums_hand_computed(ledger: Ledger) -> None:
    ledger.create_campaign("hippo")
    a = ledger.add_scan("hippo", "a", "/a.nii", GEOMETRY)
    b = ledger.add_scan("hippo", "b", "/b.nii", GEOMETRY)
    ledger.add_scan("hippo", "c", "/c.nii", GEOMETRY)
    # scan a: round 1 = 2 of 10 sagittal (0.2) + 1 of 8 axial (0.125); round 2 = 1 of 10 sagittal (0.1)
    ra1 = ledger.open_round(a, {0: [1, 2], 2: [3]})
    _submit(ledger, a, ra1, "a1", [LaborRow(0, "sagittal", 2, 0.2), LaborRow(2, "axial", 1, 0.125)])
    ledger.mark_round_processed(ra1)
    ra2 = ledger.open_round(a, {0: [5]})
    _submit(ledger, a, ra2, "a2", [LaborRow(0, "sagittal", 1, 0.1)])
    # scan b: 3 of 12 coronal (0.25)
    rb1 = ledger.open_round(b, {1: [1, 4, 9]})
    _submit(ledger, b, rb1, "b1", [{"axis": 1, "plane": "coronal", "slices": 3, "fraction": 0.25}], {1: [1, 4, 9]})
    ledger.set_scan_state(b, "passed")
    labor = {s.case_id: s for s in ledger.labor_by_scan("hippo")}
    expected = {  # case: (fraction, slices, by plane)
        "a": (0.425, 4, {"sagittal": 0.3, "axial": 0.125}),
        "b": (0.25, 3, {"coronal": 0.25}),
        "c": (0.0, 0, {}),
    }
    assert list(labor) == ["a", "b", "c"]
    for case, (fraction, slices, by_plane) in expected.items():
        assert labor[case].fraction == pytest.approx(fraction)
        assert labor[case].slices == slices
        assert labor[case].by_plane == pytest.approx(by_plane)
    assert ledger.cumulative_labor("hippo") == pytest.approx(0.675)
    summary = ledger.status_summary("hippo")
    assert summary.counts == {
        "queued": 1, "waiting_for_labels": 0, "running": 1, "passed": 1, "at_quota": 0, "failed": 0}
    assert (summary.n_scans, summary.cumulative_slices, summary.n_rounds, summary.n_submissions) == (3, 7, 3, 3)
    assert summary.cumulative_labor == pytest.approx(0.675)
    assert summary.latest_model_version is None
    # another campaign's labor does not leak in
    ledger.create_campaign("other")
    o = ledger.add_scan("other", "a", "/o.nii", GEOMETRY)
    _submit(ledger, o, ledger.open_round(o, {0: [1]}), "o1", [LaborRow(0, "sagittal", 1, 0.5)])
    assert ledger.cumulative_labor("hippo") == pytest.approx(0.675)
    assert ledger.cumulative_labor("other") == pytest.approx(0.5)


# ------------------------------------------------------------------------------------- stops and models
def test_record_stop_and_finish(ledger: Ledger) -> None:
    scan = _camp_scan(ledger)
    rnd = ledger.open_round(scan, {0: [1]})
    _submit(ledger, scan, rnd, "s", [LaborRow(0, "sagittal", 1, 0.1)])
    not_yet = ledger.record_stop(scan, rnd, "dice_estimate", 0.7, False)
    assert (not_yet.passed, not_yet.value, ledger.get_scan(scan).state) == (False, 0.7, ScanState.RUNNING)
    stop = ledger.record_stop(scan, rnd, "dice_gt", 0.9, True, finish="passed", final_mask_path="/f.nii.gz")
    done = ledger.get_scan(scan)
    assert (done.state, done.final_mask_path, done.finished_at) == (ScanState.PASSED, "/f.nii.gz", stop.decided_at)
    assert [s.rule for s in ledger.list_stops(scan)] == ["dice_estimate", "dice_gt"]
    with pytest.raises(LedgerStateError, match="cannot go from passed"):
        ledger.record_stop(scan, None, "quota", None, True, finish="at_quota")
    assert len(ledger.list_stops(scan)) == 2


def test_model_versions(ledger: Ledger) -> None:
    ledger.create_campaign("hippo")
    assert ledger.get_model_version("hippo") is None
    v1 = ledger.register_model_version("hippo", "/m/1.pt", scans_seen=1, rounds_seen=3, alias="in_use")
    v2 = ledger.register_model_version("hippo", "models:/hippo/2", scans_seen=2, rounds_seen=5, alias="in_use")
    assert (v1.version, v2.version) == (1, 2)
    assert [m.alias for m in ledger.list_model_versions("hippo")] == [None, "in_use"]
    v7 = ledger.register_model_version("hippo", "/m/7.pt", scans_seen=3, rounds_seen=6, version=7)
    assert v7.version == 7 and ledger.get_model_version("hippo") == v7
    with pytest.raises(LedgerStateError, match="latest is 7"):
        ledger.register_model_version("hippo", "/m/5.pt", scans_seen=3, rounds_seen=6, version=5)
    moved = ledger.set_model_alias("hippo", 1, "in_use")
    assert moved.alias == "in_use" and ledger.get_model_version("hippo", alias="in_use").version == 1
    assert ledger.get_model_version("hippo", version=2).alias is None
    assert ledger.register_model_version("hippo", "/m/8.pt", scans_seen=4, rounds_seen=7).version == 8
    assert ledger.status_summary("hippo").latest_model_version == 8
    with pytest.raises(RecordNotFoundError, match="no model version 3"):
        ledger.set_model_alias("hippo", 3, "in_use")


# ----------------------------------------------------------------------------------- several instances
def test_two_instances_see_each_others_writes(backend: Backend) -> None:
    one, two = backend.open(), backend.open()
    scan = _camp_scan(one)
    assert two.get_scan(scan.id) == scan
    rnd = two.open_round(scan.id, {0: [1]})
    assert one.current_round(scan) == rnd
    _submit(one, scan, rnd, "x", [LaborRow(0, "sagittal", 1, 0.3)])
    assert two.cumulative_labor("hippo") == pytest.approx(0.3)
    assert two.get_scan(scan).state is ScanState.RUNNING


# -------------------------------------------------------------------------------------------- bad inputs
BAD_INPUTS: list[tuple[str, Callable[[Ledger, Any, Any], Any], type[BaseException], str]] = [
    ("empty campaign name", lambda L, s, r: L.create_campaign(" "), ValueError, "name"),
    ("config not JSON", lambda L, s, r: L.create_campaign("x", {"a": object()}), ValueError, "config"),
    ("config NaN", lambda L, s, r: L.create_campaign("x", {"a": float("nan")}), ValueError, "config"),
    ("unknown campaign", lambda L, s, r: L.add_scan("nope", "c", "/i", GEOMETRY), RecordNotFoundError, "nope"),
    ("campaign bool", lambda L, s, r: L.list_scans(True), ValueError, "campaign"),
    ("empty case id", lambda L, s, r: L.add_scan("hippo", "", "/i", GEOMETRY), ValueError, "case_id"),
    ("empty image path", lambda L, s, r: L.add_scan("hippo", "c", "", GEOMETRY), ValueError, "image_path"),
    ("geometry 2D", lambda L, s, r: L.add_scan("hippo", "c", "/i", {"size": [3, 4]}), ValueError, "geometry"),
    ("geometry zero", lambda L, s, r: L.add_scan("hippo", "c", "/i", {"size": [3, 0, 4]}), ValueError, "geometry"),
    ("geometry type", lambda L, s, r: L.add_scan("hippo", "c", "/i", [1, 2, 3]), ValueError, "geometry"),
    ("target > size", lambda L, s, r: L.set_target_slices(s, {2: 9}), ValueError, "target_slices"),
    ("target axis", lambda L, s, r: L.set_target_slices(s, {3: 1}), ValueError, "axis"),
    ("unknown state", lambda L, s, r: L.set_scan_state(s, "done"), ValueError, "unknown scan state"),
    ("list state", lambda L, s, r: L.list_scans("hippo", "done"), ValueError, "unknown scan state"),
    ("mask w/o end", lambda L, s, r: L.set_scan_state(s, "running", final_mask_path="/m"), ValueError, "terminal"),
    ("unknown scan", lambda L, s, r: L.get_scan(9999), RecordNotFoundError, "9999"),
    ("scan as str", lambda L, s, r: L.get_scan("a"), ValueError, "scan"),
    ("no slices", lambda L, s, r: L.open_round(s, {0: []}), ValueError, "at least one"),
    ("index high", lambda L, s, r: L.open_round(s, {0: [10]}), ValueError, r"\[0, 10\)"),
    ("index neg", lambda L, s, r: L.open_round(s, {2: [-1]}), ValueError, r"\[0, 8\)"),
    ("axis 3", lambda L, s, r: L.open_round(s, {3: [1]}), ValueError, "axis"),
    ("float index", lambda L, s, r: L.open_round(s, {0: [1.5]}), ValueError, "integer"),
    ("plane name", lambda L, s, r: L.open_round(s, {0: [1]}, planes={0: "frontal"}), ValueError, "planes"),
    ("plane axis", lambda L, s, r: L.open_round(s, {0: [1]}, planes={1: "axial"}), ValueError, "no requested"),
    ("scores len", lambda L, s, r: L.open_round(s, {0: [1]}, {0: [1.0] * 3}), ValueError, "one score per slice"),
    ("scores nan", lambda L, s, r: L.open_round(s, {0: [1]}, {0: [float("nan")] * 10}), ValueError, "finite"),
    ("bad sha", lambda L, s, r: L.record_submission(s, r, "xyz", "/p", "n", {0: [1]}, []), ValueError, "sha256"),
    ("drawn out", lambda L, s, r: L.record_submission(s, r, "a" * 64, "/p", "n", {1: [12]}, []), ValueError, "drawn"),
    ("drawn str", lambda L, s, r: L.record_submission(s, r, "a" * 64, "/p", "n", {1: "12"}, []), ValueError, "drawn"),
    ("no path", lambda L, s, r: L.record_submission(s, r, "a" * 64, "", "n", {0: [1]}, []), ValueError, "stored_path"),
    ("labor axis twice", lambda L, s, r: L.record_submission(
        s, r, "a" * 64, "/p", "n", {0: [1]}, [LaborRow(0, "sagittal", 1, 0.1)] * 2), ValueError, "one row per axis"),
    ("labor key", lambda L, s, r: L.record_submission(
        s, r, "a" * 64, "/p", "n", {0: [1]}, [{"axis": 0}]), ValueError, "labor_rows"),
    ("labor type", lambda L, s, r: L.record_submission(s, r, "a" * 64, "/p", "n", {0: [1]}, "x"), ValueError, "labor"),
    ("round of other scan", lambda L, s, r: L.record_submission(
        L.find_scan("hippo", "other"), r, "a" * 64, "/p", "n", {0: [1]}, []), ValueError, "belongs"),
    ("unknown round", lambda L, s, r: L.mark_round_processed(9999), RecordNotFoundError, "9999"),
    ("metrics inf", lambda L, s, r: L.mark_round_processed(r, {"d": float("inf")}), ValueError, "metrics"),
    ("stop value", lambda L, s, r: L.record_stop(s, r, "dice", float("nan"), True), ValueError, "value"),
    ("stop passed", lambda L, s, r: L.record_stop(s, r, "dice", 0.5, 1), ValueError, "passed"),
    ("stop rule", lambda L, s, r: L.record_stop(s, r, "", 0.5, True), ValueError, "rule"),
    ("stop finish", lambda L, s, r: L.record_stop(s, r, "d", 0.5, True, finish="running"), ValueError, "terminal"),
    ("stop mask", lambda L, s, r: L.record_stop(s, r, "d", 0.5, True, final_mask_path="/m"), ValueError, "finish"),
    ("model uri", lambda L, s, r: L.register_model_version("hippo", "", scans_seen=0, rounds_seen=0), ValueError, "uri"),
    ("model count", lambda L, s, r: L.register_model_version(
        "hippo", "/m", scans_seen=-1, rounds_seen=0), ValueError, "scans_seen"),
    ("model version 0", lambda L, s, r: L.register_model_version(
        "hippo", "/m", scans_seen=0, rounds_seen=0, version=0), ValueError, "version"),
    ("model both", lambda L, s, r: L.get_model_version("hippo", version=1, alias="a"), ValueError, "at most one"),
]


@pytest.mark.parametrize(("case", "call", "error", "match"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs(
    ledger: Ledger, case: str, call: Callable[[Ledger, Any, Any], Any], error: type[BaseException], match: str
) -> None:
    scan = _camp_scan(ledger)
    _camp_scan(ledger, "other")
    rnd = ledger.open_round(scan, {0: [1]})
    before = ledger.status_summary("hippo")
    with pytest.raises(error, match=match):
        call(ledger, scan, rnd)
    assert ledger.status_summary("hippo") == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"axis": 3, "plane": "axial", "slices": 1, "fraction": 0.1}, "axis"),
        ({"axis": True, "plane": "axial", "slices": 1, "fraction": 0.1}, "axis"),
        ({"axis": 0, "plane": "oblique", "slices": 1, "fraction": 0.1}, "plane"),
        ({"axis": 0, "plane": "axial", "slices": -1, "fraction": 0.1}, "slices"),
        ({"axis": 0, "plane": "axial", "slices": 1, "fraction": -0.1}, "fraction"),
        ({"axis": 0, "plane": "axial", "slices": 1, "fraction": float("nan")}, "fraction"),
        ({"axis": 0, "plane": "axial", "slices": 1, "fraction": "a"}, "fraction"),
        ({"axis": 0, "plane": "axial", "slices": 1.0, "fraction": 0.1}, "slices"),
        ({"axis": 0, "plane": "axial", "slices": 1, "fraction": True}, "fraction"),
    ],
)
def test_labor_row_bad_inputs(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LaborRow(**kwargs)


# ---------------------------------------------------------------------------------------- stored files
@pytest.mark.parametrize(
    ("name", "suffix"),
    [("a.nii.gz", ".nii.gz"), ("A.NII.GZ", ".NII.GZ"), ("seg.nrrd", ".nrrd"), ("x.seg.nrrd", ".nrrd"),
     ("m.mha", ".mha"), ("noext", ""), ("we ird.n$i", "")],
)
def test_file_suffix(name: str, suffix: str) -> None:
    assert file_suffix(name) == suffix


def test_store_submission_file(tmp_path: Path) -> None:
    src = tmp_path / "drawn by me.nii.gz"
    payload = b"\x1f\x8b fake label volume" * 1000
    src.write_bytes(payload)
    sha, stored = store_submission_file(src, tmp_path / "ws" / "submissions")
    assert sha == hashlib.sha256(payload).hexdigest() == sha256_file(src)
    assert stored == tmp_path / "ws" / "submissions" / f"{sha}.nii.gz"
    assert stored.read_bytes() == payload
    again = store_submission_file(src, tmp_path / "ws" / "submissions")
    assert again == (sha, stored)
    assert sorted(p.name for p in stored.parent.iterdir()) == [stored.name]


def test_store_submission_file_crash_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "label.nrrd"
    src.write_bytes(b"data")

    def crash(*args: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        store_submission_file(src, tmp_path / "subs")
    assert list((tmp_path / "subs").iterdir()) == []


@pytest.mark.parametrize("bad", ["missing.nii", "."])
def test_store_submission_file_bad_inputs(tmp_path: Path, bad: str) -> None:
    with pytest.raises(FileNotFoundError, match="src"):
        store_submission_file(tmp_path / bad, tmp_path / "subs")
    with pytest.raises(FileNotFoundError, match="path"):
        sha256_file(tmp_path / bad)
