"""End to end: a simulated campaign, the human loop through the CLI, and a crash in the middle of a round."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dil.cli import main
from dil_core.io import read_label, write_label
from dil_core.ledger import Ledger
from dil_core.metrics import dice
from tests.flows.conftest import REPO, small_config


def _ledger(ws: Path) -> Ledger:
    return Ledger.open(f"sqlite:///{ws / 'ledger.db'}", create=False)


def test_simulated_campaign_on_three_demo_scans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = small_config(tmp_path, 3)
    assert main(["campaign", "run", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "labor per scan" in out
    ledger = _ledger(tmp_path / "ws")
    campaign = ledger.get_campaign("test")
    scans = ledger.list_scans(campaign.id)
    assert len(scans) == 3
    for scan in scans:
        assert scan.state.value in ("passed", "at_quota")
        mask, _ = read_label(scan.final_mask_path)
        gt, _ = read_label(scan.ground_truth_path)
        rounds = [r for r in ledger.list_rounds(scan.id) if r.status.value == "processed"]
        assert rounds, scan.case_id
        reported = rounds[-1].metrics["dice_gt_mask"]
        assert dice(gt, mask) == pytest.approx(reported, abs=1e-6)
        if scan.state.value == "passed":
            assert reported >= 0.8
        labor = {lab.scan_id: lab for lab in ledger.labor_by_scan(campaign.id)}[scan.id]
        drawn = sum(len(s.drawn.get(a, ())) for s in ledger.list_submissions(scan.id) for a in s.drawn)
        assert labor.slices == drawn
    from prefect import get_client

    with get_client(sync_client=True) as client:  # training is limited to one task per GPU
        assert client.read_concurrency_limit_by_tag("gpu").concurrency_limit == 1
    # running again changes nothing: every scan is done
    before = ledger.status_summary(campaign.id)
    assert main(["campaign", "run", str(cfg)]) == 0
    assert _ledger(tmp_path / "ws").status_summary(campaign.id).cumulative_slices == before.cumulative_slices


def _end(gt: np.ndarray, axis: int, which: str) -> int:
    """The first or last slice along ``axis`` showing the target (what a physician finds by scrolling)."""
    hit = np.flatnonzero((gt > 0).any(axis=tuple(a for a in range(3) if a != axis)))
    return int(hit[0] if which == "first" else hit[-1])


def _draw_request(ws: Path, case: str, rnd: int, tmp: Path) -> Path:
    """Play the physician: draw exactly the requested slices from the ground truth, save a label file."""
    import json

    req = json.loads((ws / "requests" / case / f"round-{rnd}" / "request.json").read_text(encoding="utf-8"))
    gt_path = REPO / "data" / "demo" / "labels" / f"{case}.nii.gz"
    gt, geometry = read_label(gt_path)
    out = np.zeros(gt.shape, np.uint8)
    for s in req["slices"]:
        sl = [slice(None)] * 3
        sl[s["axis"]] = s["index"] if s["index"] is not None else _end(gt, s["axis"], s["find"])
        out[tuple(sl)] = gt[tuple(sl)] > 0
    return write_label(tmp / f"{case}-round-{rnd}.nii.gz", out, geometry)


def test_human_loop_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = small_config(
        tmp_path, 2, annotator={"kind": "human"}, stopping={"rule": "accept"}, guidance={"first_round": "uniform"}
    )
    ws = tmp_path / "ws"
    assert main(["campaign", "run", str(cfg)]) == 0
    case = "hippocampus_001"
    assert (ws / "requests" / case / "round-1" / "request.json").is_file()
    assert (ws / "requests" / case / "round-1" / "mask_seg.nii.gz").is_file()
    drawn_total = 0
    for rnd in (1, 2, 3):
        label = _draw_request(ws, case, rnd, tmp_path)
        drawn_total += sum(1 for _ in __import__("json").loads(
            (ws / "requests" / case / f"round-{rnd}" / "request.json").read_text(encoding="utf-8"))["slices"])
        assert main(["submit", str(ws), case, str(label)]) == 0
        out = capsys.readouterr().out
        assert f"round {rnd} stored" in out and "no round service is running" in out
        # the same file again is counted once
        assert main(["submit", str(ws), case, str(label)]) == 0
        assert "counted once" in capsys.readouterr().out
        assert main(["status", str(ws)]) == 0
        assert "waiting" in capsys.readouterr().out
        assert main(["resume", str(ws)]) == 0  # no service running: process the stored round now
        capsys.readouterr()
    ledger = _ledger(ws)
    campaign = ledger.get_campaign("test")
    scan = ledger.find_scan(campaign.id, case)
    assert len(ledger.list_submissions(scan.id)) == 3
    labor = {lab.scan_id: lab for lab in ledger.labor_by_scan(campaign.id)}[scan.id]
    assert labor.slices == drawn_total
    # a bad file is refused, nothing stored, state unchanged
    bad = tmp_path / "bad.nii.gz"
    gt, geometry = read_label(REPO / "data" / "demo" / "labels" / f"{case}.nii.gz")
    from dil_core.geometry import Geometry

    wrong = Geometry(geometry.size, (2.0, 2.0, 2.0), geometry.origin, geometry.direction)
    write_label(bad, np.zeros(gt.shape, np.uint8), wrong)
    before = sorted((ws / "submissions" / case).iterdir())
    assert main(["submit", str(ws), case, str(bad)]) == 1
    assert "spacing" in capsys.readouterr().err
    assert len(_ledger(ws).list_submissions(scan.id)) == 3
    assert sorted((ws / "submissions" / case).iterdir()) == before  # no copy left behind
    assert main(["status", str(ws)]) == 0
    assert "open (round 4)" in capsys.readouterr().out
    assert main(["accept", str(ws), case]) == 2  # no terminal to confirm at, and no --yes
    assert main(["accept", str(ws), case, "--yes"]) == 0
    scan = _ledger(ws).find_scan(campaign.id, case)
    assert scan.state.value == "passed" and Path(scan.final_mask_path).is_file()
    final, _ = read_label(scan.final_mask_path)
    offered, _ = read_label(ws / "requests" / case / "round-4" / "mask_seg.nii.gz")
    np.testing.assert_array_equal(final, offered)  # exactly the mask the request showed
    # the request that was waiting is closed, without a submission and without labor
    assert _ledger(ws).current_round(scan.id) is None
    assert {lab.scan_id: lab for lab in _ledger(ws).labor_by_scan(campaign.id)}[scan.id].slices == drawn_total


_REFINE = dict(
    method="refine",
    guidance={"strategy": "refine", "first_round": "bisect", "planes": ["coronal"]},
    propagation={"backend": "sdf-aligned"},
    training={"n_f": 0, "buffer_b": 4, "buffer_b_star": 8, "replay_m": 1, "test_time_flips": True},
    refine={"end_steps": 6},
    stopping={"quota_gamma": 40, "n_inter": 40},
)


def test_refine_campaign_trains_once_per_scan(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, 3, **(_REFINE | {"stopping": {"quota_gamma": 40, "n_inter": 40, "seed_scans": 1,
                                                              "rho_seed": 0.86}}))
    assert main(["campaign", "run", str(cfg)]) == 0
    ledger = _ledger(tmp_path / "ws")
    campaign = ledger.get_campaign("test")
    scans = sorted(ledger.list_scans(campaign.id), key=lambda s: s.position)
    for scan in scans:
        assert scan.state.value == "passed"
        rounds = [r for r in ledger.list_rounds(scan.id) if r.status.value == "processed"]
        gt, _ = read_label(scan.ground_truth_path)
        mask, _ = read_label(scan.final_mask_path)
        assert dice(gt, mask) >= (0.86 if scan.position == 0 else 0.8)  # the seed scan is labeled to rho_seed
        # the segmenter changes only when a scan finishes: no round trains, each finished scan is learned from
        assert all(r.model_version is None for r in rounds)
        assert scan.learned_tag == f"s{scan.id}-learned" and scan.learned_at >= scan.finished_at
        subs = ledger.list_submissions(scan.id)
        assert all(set(s.drawn) <= {1} for s in subs)  # coronal slices only (axis 1 of these scans)
    assert [s.learned_at for s in scans] == sorted(s.learned_at for s in scans)  # in the order they finished
    assert ledger.latest_model_tag(campaign.id) == scans[-1].learned_tag
    state = tmp_path / "ws" / "state" / "scans"
    assert not (state / scans[0].case_id / "f_prev.npy").exists()  # cold start: no F_prev
    assert (state / scans[1].case_id / "f_prev.npy").is_file()


def test_refine_accept_without_drawing_costs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = small_config(tmp_path, 1, annotator={"kind": "human"}, **(_REFINE | {"stopping": {"rule": "accept"}}))
    ws = tmp_path / "ws"
    assert main(["campaign", "run", str(cfg)]) == 0
    case = "hippocampus_001"
    assert main(["accept", str(ws), case, "--yes"]) == 1  # a cold start has neither a prediction nor a drawing
    assert "empty" in capsys.readouterr().err
    for rnd in (1, 2, 3):
        assert main(["submit", str(ws), case, str(_draw_request(ws, case, rnd, tmp_path))]) == 0
        assert main(["resume", str(ws)]) == 0
    assert main(["accept", str(ws), case, "--yes"]) == 0
    assert main(["resume", str(ws)]) == 0  # the segmenter learns from the accepted mask
    ledger = _ledger(ws)
    campaign = ledger.get_campaign("test")
    assert ledger.find_scan(campaign.id, case).learned_tag is not None
    # a scan that arrives now gets the segmenter's prediction with its first request, and may be accepted as is
    image = REPO / "data" / "demo" / "images" / "hippocampus_003.nii.gz"
    assert main(["add", str(ws), str(image)]) == 0
    assert (ws / "requests" / "hippocampus_003" / "round-1" / "prediction_seg.nii.gz").is_file()
    assert main(["accept", str(ws), "hippocampus_003", "--yes"]) == 0
    scan = ledger.find_scan(campaign.id, "hippocampus_003")
    assert scan.state.value == "passed" and ledger.current_round(scan.id) is None
    assert {lab.scan_id: lab for lab in ledger.labor_by_scan(campaign.id)}[scan.id].slices == 0
    mask, _ = read_label(scan.final_mask_path)
    assert mask.any()
    (only,) = ledger.list_rounds(scan.id)
    assert only.status.value == "processed" and ledger.list_submissions(scan.id) == []


def test_cli_errors_exit_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(tmp_path / "nowhere")]) == 2
    assert "not a DIL workspace" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncohort: c.csv\nworkspace: ws\nstopping: {rho: 2}\n", encoding="utf-8")
    assert main(["campaign", "run", str(bad)]) == 1
    assert "stopping.rho" in capsys.readouterr().err


_KILLER = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import {module} as target
original = getattr(target.{owner}, {name!r})
calls = [0]
def dying(*args, **kwargs):
    calls[0] += 1
    if calls[0] == {at}:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(target.{owner}, {name!r}, dying)
from dil.cli import main
sys.exit(main(["campaign", "run", {config!r}]))
"""


@pytest.mark.parametrize(
    ("module", "owner", "name"),
    [("dil_core.session", "ScanSession", "_update_proxy"), ("dil_core.training", "Trainer", "train_round")],
    ids=["propagation", "training"],
)
def test_sigkill_mid_round_then_resume_loses_nothing(tmp_path: Path, module: str, owner: str, name: str) -> None:
    ref_dir, crash_dir = tmp_path / "ref", tmp_path / "crash"
    ref_dir.mkdir()
    crash_dir.mkdir()
    ref_cfg = small_config(ref_dir, 2)
    crash_cfg = small_config(crash_dir, 2)
    assert main(["campaign", "run", str(ref_cfg)]) == 0
    script = _KILLER.format(repo=str(REPO), module=module, owner=owner, name=name, at=4, config=str(crash_cfg))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = crash_dir / "killed.log"
    # Own session: the killed process's embedded Prefect server is orphaned, and is cleaned up with the group.
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            returncode = proc.wait(timeout=900)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    assert returncode == -signal.SIGKILL, log.read_text(encoding="utf-8")[-2000:]
    crashed = _ledger(crash_dir / "ws")
    mid = crashed.status_summary(crashed.get_campaign("test").id)
    assert mid.n_submissions >= 1
    assert main(["resume", str(crash_dir / "ws")]) == 0
    ref, res = _ledger(ref_dir / "ws"), _ledger(crash_dir / "ws")
    ref_c, res_c = ref.get_campaign("test").id, res.get_campaign("test").id
    ref_sum, res_sum = ref.status_summary(ref_c), res.status_summary(res_c)
    assert res_sum.cumulative_slices == ref_sum.cumulative_slices
    assert res_sum.cumulative_labor == pytest.approx(ref_sum.cumulative_labor)
    assert res_sum.n_submissions == ref_sum.n_submissions
    for scan in res.list_scans(res_c):
        for sub in res.list_submissions(scan.id):
            assert Path(sub.stored_path).is_file()


def test_simulated_campaign_on_postgresql(tmp_path: Path) -> None:
    """The scale-out path: the same campaign with its ledger on the local PostgreSQL server."""
    import uuid

    from tests.dil_core.test_ledger import _postgres_url

    url = _postgres_url()
    if url is None:
        pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432")
    name = f"pg-{uuid.uuid4().hex[:12]}"
    cfg = small_config(tmp_path, 2, name=name, tracking={"ledger_url": url}, stopping={"n_inter": 3})
    assert main(["campaign", "run", str(cfg)]) == 0
    assert not (tmp_path / "ws" / "ledger.db").exists()
    ledger = Ledger.open(url, create=False)
    campaign = ledger.get_campaign(name)
    scans = ledger.list_scans(campaign.id)
    assert len(scans) == 2 and all(s.state.value in ("passed", "at_quota") for s in scans)
    summary = ledger.status_summary(campaign.id)
    assert summary.n_submissions == sum(len(ledger.list_submissions(s.id)) for s in scans) > 0
    assert main(["status", str(tmp_path / "ws")]) == 0


def test_a_scan_added_while_the_campaign_runs_joins_the_queue(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, 1, annotator={"kind": "human"}, stopping={"rule": "accept"})
    ws = tmp_path / "ws"
    assert main(["campaign", "run", str(cfg)]) == 0
    image = REPO / "data" / "demo" / "images" / "hippocampus_003.nii.gz"
    assert main(["add", str(ws), str(image)]) == 0
    ledger = _ledger(ws)
    scan = ledger.find_scan(ledger.get_campaign("test").id, "hippocampus_003")
    assert scan is not None and scan.state.value == "waiting_for_labels"
    assert (ws / "requests" / "hippocampus_003" / "round-1" / "request.json").is_file()
    assert main(["add", str(ws), str(tmp_path / "missing.nii.gz")]) == 1
