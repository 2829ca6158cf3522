"""The campaign: a workspace, its cohort queued in the ledger, and every scan driven through rounds.

With the simulated annotator (the ground-truth oracle) the campaign flow runs each scan's rounds to the end:
request -> the oracle writes a label file -> the same ``submit`` a physician's file goes through -> the
round. With physicians, the flow writes the first labeling request of each queued scan and returns; each
``dil submit`` then starts a short round flow. No process waits for a human.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_client

from dil_core.cohort import load_cohort
from dil_core.config import CampaignConfig, load_config
from dil_core.io import read_label, read_scan, write_label
from dil_core.labor import target_slice_counts
from dil_core.ledger import Ledger
from dil_core.ledger.records import TERMINAL_STATES, RoundStatus, ScanRecord, ScanState
from dil_core.preprocess import fit_preprocessor
from dil_core.simulate import GroundTruthOracle
from dil_core.stopping import check_stop
from dil.workspace import Workspace
from flows.context import CampaignContext
from flows.round import accept, open_next_round, process_round, submit

__all__ = ["add_scan", "campaign_flow", "init_workspace", "run_simulated_scan"]


def init_workspace(config: CampaignConfig) -> Workspace:
    """Create (or reopen) the campaign's workspace and ledger, and queue the cohort. Idempotent."""
    ws = Workspace(config.workspace)
    ws.root.mkdir(parents=True, exist_ok=True)
    if ws.exists():
        saved = load_config(ws.config_file)
        if saved.name != config.name:
            raise ValueError(
                f"workspace {ws.root} belongs to campaign {saved.name!r}, not {config.name!r}; choose another workspace"
            )
    else:
        tmp = ws.config_file.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
        tmp.replace(ws.config_file)
    ledger = Ledger.open(config.tracking.ledger_url or ws.ledger_url, create=True)
    campaign = ledger.create_campaign(config.name, config.model_dump(mode="json"), exist_ok=True)
    for case in load_cohort(config.cohort):
        add_scan(ledger, campaign.id, config, case.case_id, case.image, case.ground_truth)
    return ws


def add_scan(
    ledger: Ledger, campaign_id: int, config: CampaignConfig, case_id: str, image: Path, ground_truth: Path | None
) -> ScanRecord:
    """Queue one scan (a no-op if it is already there); reads it once to check it and fit the preprocessing."""
    scan = read_scan(image)
    # The crop box is the scan's non-background box; background is its minimum (0 for most MRI, the
    # z-scored constant for BraTS).
    prep = fit_preprocessor(scan.array, grid=config.training.grid, background=float(scan.array.min()))
    targets = None
    if ground_truth is not None:
        gt, gt_geom = read_label(ground_truth)
        if gt.shape != scan.array.shape:
            raise ValueError(f"ground truth {ground_truth} has size {gt.shape}, the scan {image} has {scan.array.shape}")
        targets = target_slice_counts(gt)
    g = scan.geometry
    return ledger.add_scan(
        campaign_id,
        case_id,
        str(Path(image).resolve()),
        {"size": list(g.size), "spacing": list(g.spacing), "origin": list(g.origin), "direction": list(g.direction)},
        ground_truth_path=str(Path(ground_truth).resolve()) if ground_truth else None,
        preprocessing=prep.to_dict(),
        target_slices=targets,
    )


def run_simulated_scan(
    ctx: CampaignContext, case_id: str, *, on_round: Callable[[dict[str, Any]], None] | None = None
) -> ScanRecord:
    """Drive one scan to rho or its quota with the ground-truth oracle as the annotator."""
    while True:
        scan = ctx.scan(case_id)
        if scan.state in TERMINAL_STATES:
            return scan
        rnd = ctx.ledger.current_round(scan.id)
        if rnd is None:
            done = [r for r in ctx.ledger.list_rounds(scan.id) if r.status is RoundStatus.PROCESSED]
            open_next_round(ctx, scan, len(done) + 1)
            continue
        if rnd.status is RoundStatus.REQUESTED:
            data = ctx.scan_data(scan)
            if data.ground_truth is None:
                raise ValueError(f"scan {case_id!r} has no ground truth: the simulated annotator cannot draw it")
            if ctx.config.method == "refine":
                # the simulated physician first looks at the mask as it is (the prediction, before any drawing)
                session = ctx.session(scan)
                if session.n_drawn == 0 and session.prediction is not None:
                    decision = check_stop(
                        session.mask(), rule="ground_truth", rho=ctx.rho_for(scan),
                        ground_truth=data.ground_truth,
                    )
                    if decision.passed:
                        accept(ctx, case_id, rule=decision.rule, value=decision.value)
                        if on_round is not None:
                            on_round({"case": case_id, "round": rnd.number, "state": "passed", "processed": True,
                                      "accepted": True, "slices_drawn": {}, "dice_gt_mask": decision.value})
                        continue
            labels = GroundTruthOracle(data.ground_truth).draw(rnd.requested)
            folder = ctx.workspace.inbox_dir(case_id)
            folder.mkdir(parents=True, exist_ok=True)
            path = write_label(folder / f"round-{rnd.number}.nii.gz", labels, data.geometry)
            submit(ctx, case_id, path)
            continue
        result = process_round(ctx, case_id)
        if on_round is not None:
            on_round(result)


GPU_TAG = "gpu"


def ensure_gpu_limit(slots: int = 1) -> None:
    """One training task at a time per GPU: a tag concurrency limit on ``gpu`` (an upsert, so idempotent)."""
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag=GPU_TAG, concurrency_limit=slots)


@flow(name="dil-campaign", persist_result=False)
def campaign_flow(workspace: str, on_round: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Queue every scan through rounds (simulated annotator) or write first requests (physicians)."""
    ctx = CampaignContext.open(Path(workspace))
    ensure_gpu_limit()
    scans = sorted(ctx.ledger.list_scans(ctx.campaign_id), key=lambda s: s.position)
    for scan in scans:
        if scan.state in TERMINAL_STATES:
            continue
        if ctx.config.annotator.kind == "simulated":
            run_simulated_scan(ctx, scan.case_id, on_round=on_round)
            ctx.forget(scan.id)
        elif ctx.ledger.current_round(scan.id) is None and scan.state is ScanState.QUEUED:
            open_next_round(ctx, scan, 1)
    return {"summary": ctx.ledger.status_summary(ctx.campaign_id)}
