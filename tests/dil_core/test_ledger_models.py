"""Tests of the ledger's labor sums, status summary and model versions (``_models.py``), SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from dil_core.ledger import LaborRow, Ledger, LedgerStateError, RecordNotFoundError
from tests.dil_core.conftest import GEOMETRY, _submit


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
