"""An older workspace's ledger opens with this version of DIL: migrated in place, nothing lost."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from dil_core.ledger import SCHEMA_VERSION, LaborRow, Ledger

SCHEMA1 = Path(__file__).resolve().parents[1] / "data" / "ledger_schema1.db"


def test_a_schema_1_ledger_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    shutil.copy(SCHEMA1, path)
    ledger = Ledger.open(path, create=False)
    assert SCHEMA_VERSION == 2
    campaign = ledger.get_campaign("old")
    a, b = sorted(ledger.list_scans(campaign.id), key=lambda s: s.position)
    # what schema 1 held is all there
    (sub,) = ledger.list_submissions(a.id)
    assert sub.drawn == {0: frozenset({3})} and ledger.cumulative_labor(campaign.id) == 0.1
    assert a.state.value == "passed" and a.final_mask_path == "/ws/masks/a.nii.gz"
    # a scan finished under schema 1 was learned from then, by its last round's checkpoint
    assert a.learned_at == a.finished_at and a.learned_tag == "s1-r1"
    assert ledger.latest_model_tag(campaign.id) == "s1-r1" and ledger.scans_to_learn(campaign.id) == []
    # submissions are now unique per (round, content): the same bytes answer b's round as a new submission
    rnd = ledger.current_round(b.id)
    sha = hashlib.sha256(b"a1").hexdigest()
    _, created = ledger.record_submission(b.id, rnd.id, sha, "/ws/b.nii.gz", "b.nii.gz", {0: [4]},
                                          [LaborRow(0, "sagittal", 1, 0.1)])
    assert created
    assert ledger.acquire_lease("learn:1", "here:1") and not ledger.acquire_lease("learn:1", "there:2")
    ledger.close()
    again = Ledger.open(path, create=False)  # opening again changes nothing
    assert len(again.list_submissions(b.id)) == 1
