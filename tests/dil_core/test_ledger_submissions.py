"""Tests of the ledger's submissions (``_submissions.py``), on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import threading
from typing import Any

import numpy as np
import pytest

from dil_core.ledger import LaborRow, Ledger, LedgerStateError, RoundStatus, ScanState
from dil_core.ledger import _submissions as ledger_submissions
from tests.dil_core.conftest import Backend, _camp_scan, _submit


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
    assert ledger.cumulative_labor("hippo") == pytest.approx(0.375)
    # identity is (scan, round, content): the same bytes answering the next round (an all-empty file, say)
    # are that round's answer, not a duplicate
    ledger.mark_round_processed(r1)
    r2 = ledger.open_round(scan, {0: [3]})
    third, created = _submit(ledger, scan, r2, "file", [LaborRow(0, "sagittal", 1, 0.125)], drawn={0: [3]})
    assert created and third.round_id == r2.id != first.round_id
    assert ledger.current_round(scan).status is RoundStatus.SUBMITTED
    assert ledger.cumulative_labor("hippo") == pytest.approx(0.5)
    assert len(ledger.list_submissions(scan)) == 2


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
    """A writer that missed a concurrent duplicate hits UNIQUE(round_id, sha256) and returns the first record."""
    from dil_core.ledger._orm import SubmissionRow

    scan = _camp_scan(ledger)
    r1 = ledger.open_round(scan, {0: [1]})
    sha = hashlib.sha256(b"dup").hexdigest()
    with ledger._write() as session:  # a concurrent writer's row, committed while the round still looks open
        session.add(SubmissionRow(round_id=r1.id, scan_id=scan.id, sha256=sha, stored_path="/x", original_name="dup",
                                  drawn_json={"0": [1]}, n_drawn=1, received_at=ledger._now()))
    real = Ledger._find_submission
    calls = {"n": 0}

    def miss_first(self: Ledger, session: Any, round_id: int, sha: str) -> Any:
        calls["n"] += 1
        return None if calls["n"] == 1 else real(self, session, round_id, sha)

    monkeypatch.setattr(Ledger, "_find_submission", miss_first)
    again, created = _submit(ledger, scan, r1, "dup", [LaborRow(0, "sagittal", 1, 0.1)])
    assert calls["n"] == 2 and not created and again.stored_path == "/x"
    monkeypatch.undo()
    assert ledger.current_round(scan).status is RoundStatus.REQUESTED
    assert ledger.cumulative_labor("hippo") == pytest.approx(0.0)


def test_crash_inside_submission_leaves_nothing(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    scan = _camp_scan(ledger)
    rnd = ledger.open_round(scan, {0: [1]})

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("power cut")

    monkeypatch.setattr(ledger_submissions.cv, "submission_record", crash)
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
