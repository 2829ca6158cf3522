"""Tests of the ledger's rounds and stop decisions (``_rounds.py``), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from dil_core.ledger import LaborRow, Ledger, LedgerStateError, RoundStatus, ScanState
from tests.dil_core.conftest import Backend, _camp_scan, _submit


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
