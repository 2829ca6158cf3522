"""What a physician meets in the submit / accept loop, through the CLI, on demo scans without ground truth."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from dil.cli import main
from dil_core.io import read_label, write_label
from dil_core.ledger import Ledger
from tests.flows.conftest import REPO

DEMO = REPO / "data" / "demo"
CASES = ("hippocampus_001", "hippocampus_003")


def _campaign(tmp_path: Path, **changes: Any) -> Path:
    """A physicians' campaign of DIL's method on demo scans whose cohort has no ground-truth column."""
    lines = ["case_id,image"] + [f"{c},{DEMO / 'images' / f'{c}.nii.gz'}" for c in CASES]
    (tmp_path / "cohort.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text(encoding="utf-8"))
    data.update(name="phys", cohort="cohort.csv", workspace="ws")
    data["annotator"] = {"kind": "human", "open_scans": 2}
    data["stopping"].update(rule="accept", seed_scans=0)
    data["training"].update(channels=[4, 8, 16], device="cpu", buffer_b=4, buffer_b_star=8, replay_m=1)
    data["refine"]["end_steps"] = 4
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value}
    (tmp_path / "campaign.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    assert main(["campaign", "run", str(tmp_path / "campaign.yaml")]) == 0
    return tmp_path / "ws"


def _request(ws: Path, case: str, number: int) -> dict[str, Any]:
    return json.loads((ws / "requests" / case / f"round-{number}" / "request.json").read_text(encoding="utf-8"))


def _truth(case: str) -> tuple[np.ndarray, Any]:
    arr, geometry = read_label(DEMO / "labels" / f"{case}.nii.gz")
    return (arr > 0).astype(np.uint8), geometry


def _answer(ws: Path, case: str, number: int, into: np.ndarray | None = None) -> np.ndarray:
    """The physician's label map after drawing request ``number`` (drawn into ``into``: one growing map)."""
    gt, _ = _truth(case)
    labels = np.zeros(gt.shape, np.uint8) if into is None else into.copy()
    for s in _request(ws, case, number)["slices"]:
        index = s["index"]
        if index is None:  # "the first / last slice showing the target"
            hit = np.flatnonzero(gt.any(axis=tuple(a for a in range(3) if a != s["axis"])))
            index = int(hit[0] if s["find"] == "first" else hit[-1])
        sl: list[Any] = [slice(None)] * 3
        sl[s["axis"]] = index
        labels[tuple(sl)] = gt[tuple(sl)]
    return labels


def _submit(ws: Path, case: str, labels: np.ndarray, name: str, capsys: pytest.CaptureFixture[str]) -> str:
    _, geometry = _truth(case)
    path = write_label(ws.parent / name, labels, geometry)
    assert main(["submit", str(ws), case, str(path)]) == 0
    out = capsys.readouterr().out
    assert main(["resume", str(ws)]) == 0  # no service in this test: process the stored round now
    capsys.readouterr()
    return out


def _ledger(ws: Path) -> tuple[Ledger, int]:
    ledger = Ledger.open(f"sqlite:///{ws / 'ledger.db'}", create=False)
    return ledger, ledger.get_campaign("phys").id


def test_the_physicians_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = _campaign(tmp_path)
    case = CASES[0]
    gt, _ = _truth(case)
    lo, hi = (int(i) for i in np.flatnonzero(gt.any(axis=(0, 2)))[[0, -1]])
    # a cold start asks for where the target starts and ends, not for edge slices outside it
    first = _request(ws, case, 1)
    assert [(s["index"], s.get("find")) for s in first["slices"]] == [(None, "first"), (None, "last")]
    assert first["quality_bar"] == 0.85 and (ws / "requests" / case / "round-1" / "mask_seg.nii.gz").is_file()
    growing = _answer(ws, case, 1)
    out = _submit(ws, case, growing, "r1.nii.gz", capsys)
    assert f"new slices: coronal {lo}, {hi}" in out
    # one growing label map (as in Slicer): the slices of earlier rounds are not counted again
    for number in (2, 3):
        asked = [s["index"] for s in _request(ws, case, number)["slices"]]
        assert asked and all(lo < i < hi for i in asked)  # inside the target's extent from now on
        growing = _answer(ws, case, number, growing)
        out = _submit(ws, case, growing, f"r{number}.nii.gz", capsys)
        assert f"new slices: coronal {', '.join(map(str, asked))}" in out and "not counted again" in out
    ledger, camp = _ledger(ws)
    scan = ledger.find_scan(camp, case)
    assert {lab.case_id: lab.slices for lab in ledger.labor_by_scan(camp)}[case] == 4
    mask, _ = read_label(ws / "requests" / case / "round-4" / "mask_seg.nii.gz")
    assert not mask[:, :lo].any() and not mask[:, hi + 1 :].any()  # nothing past the ends drawn
    # a requested slice left empty is an answer: two all-empty files for two rounds both count
    other = CASES[1]
    empty = np.zeros_like(_truth(other)[0])
    for number in (1, 2):
        out = _submit(ws, other, empty, f"empty-{number}.nii.gz", capsys)
        assert "counted once" not in out
    assert _ledger(ws)[0].current_round(_ledger(ws)[0].find_scan(camp, other).id).number == 3
    # accept finalizes exactly the request's mask; not without confirmation
    assert main(["accept", str(ws), case]) == 2
    assert "--yes" in capsys.readouterr().err
    assert main(["accept", str(ws), case, "--yes"]) == 0
    final, _ = read_label(ledger.find_scan(camp, case).final_mask_path)
    np.testing.assert_array_equal(final, mask)
    assert main(["resume", str(ws)]) == 0  # the segmenter learns from the accepted scan
    capsys.readouterr()
    scan = ledger.find_scan(camp, case)
    assert scan.learned_tag is not None
    # labor without ground truth: one definition, against the final mask's target slices, everywhere
    targets = dict(scan.target_slices)
    assert targets[1] == int(final.any(axis=(0, 2)).sum())
    labor = {lab.case_id: lab.fraction for lab in ledger.labor_by_scan(camp)}[case]
    assert labor == pytest.approx(4 / targets[1])
    assert main(["status", str(ws)]) == 0
    assert f"{labor:.3f}" in capsys.readouterr().out
    assert main(["report", str(ws)]) == 0
    capsys.readouterr()
    with open(ws / "report" / "scans.csv") as fh:
        row = next(r for r in csv.DictReader(fh) if r["case_id"] == case)
    assert float(row["labor_fraction"]) == pytest.approx(labor, abs=1e-6) and row["outcome"] == "accepted"
    page = (ws / "report" / "report.html").read_text(encoding="utf-8")
    assert "accepted" in page and "Dice &gt;= rho" not in page and "passed (Dice" not in page
    # reopen undoes the accept: a new request, and the segmenter retrained without the scan
    assert main(["reopen", str(ws), case, "--yes"]) == 0
    capsys.readouterr()
    scan = ledger.find_scan(camp, case)
    assert scan.state.value == "waiting_for_labels" and scan.final_mask_path is None and scan.learned_at is None
    assert ledger.current_round(scan.id).number == 5 and ledger.latest_model_tag(camp) is None
    assert main(["status", str(ws)]) == 0
    assert "open (round 5)" in capsys.readouterr().out


def test_version_and_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("dil 0.")
    (tmp_path / "campaign.yaml").write_text("name: x\n", encoding="utf-8")
    assert main(["retrain", str(tmp_path)]) == 2  # the usage error comes before anything is opened
    assert "--once" in capsys.readouterr().err


def test_continual_status_reads_the_gates_file(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from dil.physician import continual_status
    from dil_core.workspace import Workspace

    ws = Workspace(tmp_path)

    def camp(enabled: bool) -> Any:
        return SimpleNamespace(workspace=ws, config=SimpleNamespace(continual=SimpleNamespace(enabled=enabled)))

    assert continual_status(camp(False)) is None
    assert continual_status(camp(True)) == {"steps": 0, "gates": 0, "promotions": 0, "champion": None,
                                            "last_gate": None}
    ws.continual_gates().parent.mkdir(parents=True)
    rows = [{"step": 50, "promoted": True, "checkpoint": "cont-50"}, {"step": 100, "promoted": False},
            {"step": 150, "promoted": True, "checkpoint": "cont-150"}, {"step": 200, "promoted": False}]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 25'  # the last line cut short by a kill
    ws.continual_gates().write_text(text, encoding="utf-8")
    got = continual_status(camp(True))
    assert got == {"steps": 200, "gates": 4, "promotions": 2, "champion": "cont-150", "last_gate": rows[-1]}

    # the service's status page calls it again and again: each call reads only what the learner appended since,
    # and the line cut short by the kill, with the gate written after it, does not parse and is skipped
    from dil.physician import _GATES_READ

    path = ws.continual_gates()
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"step": 250, "promoted": True, "checkpoint": "cont-250"}) + "\n")
        fh.write(json.dumps({"step": 300, "promoted": False}))  # still being written: no newline yet
    got = continual_status(camp(True))
    assert (got["steps"], got["gates"], got["promotions"], got["champion"]) == (200, 4, 2, "cont-150")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n")
    got = continual_status(camp(True))
    assert (got["steps"], got["gates"], got["promotions"], got["champion"]) == (300, 5, 2, "cont-150")
    assert _GATES_READ[path].offset == path.stat().st_size
    # a new gates file (a fresh workspace state) is read from its start
    replacement = path.with_suffix(".new")
    replacement.write_text(json.dumps({"step": 50, "promoted": True, "checkpoint": "cont-50"}) + "\n",
                           encoding="utf-8")
    replacement.replace(path)
    assert continual_status(camp(True)) == {"steps": 50, "gates": 1, "promotions": 1, "champion": "cont-50",
                                            "last_gate": {"step": 50, "promoted": True, "checkpoint": "cont-50"}}
    path.unlink()
    assert continual_status(camp(True))["gates"] == 0
