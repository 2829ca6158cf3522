"""Tests of the ledger's campaigns, scans and scan states (``_campaigns.py``), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from dil_core.ledger import Ledger, LedgerStateError, RecordNotFoundError, ScanState
from tests.dil_core.conftest import GEOMETRY, T0, Backend, StepClock, _camp_scan


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
