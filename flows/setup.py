"""Setting a campaign up: its workspace, its ledger and its queue of scans. No Prefect here, so `dil init` and
`dil add` check and store without starting (or even importing) an orchestrator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dil_core.cohort import load_cohort, validate_case_id
from dil_core.config import CampaignConfig, load_config
from dil_core.io import read_label, read_scan
from dil_core.labor import target_slice_counts
from dil_core.ledger import Ledger
from dil_core.ledger.records import ScanRecord
from dil_core.methods import check_config
from dil_core.params import scan_preprocessing
from dil_core.workspace import Workspace

__all__ = ["add_scan", "init_workspace"]


def init_workspace(config: CampaignConfig) -> Workspace:
    """Create (or reopen) the campaign's workspace and ledger, and queue the cohort. Idempotent.

    Everything that can fail is checked before anything is written: the method and its stop rule, the cohort
    (every scan read, its ground truth checked), the ledger's database. A failed init leaves nothing behind.
    """
    check_config(config)
    cases = load_cohort(config.cohort)
    prepared = [_prepare_scan(config, c.case_id, c.image, c.ground_truth) for c in cases]
    ws = Workspace(config.workspace)
    existed = ws.root.exists()
    ws.root.mkdir(parents=True, exist_ok=True)
    if ws.exists():
        saved = load_config(ws.config_file)
        if saved.name != config.name:
            raise ValueError(
                f"workspace {ws.root} belongs to campaign {saved.name!r}, not {config.name!r}; choose another workspace"
            )
    try:
        ledger = Ledger.open(config.tracking.ledger_url or ws.ledger_url, create=True)
    except BaseException:
        if not existed and not any(ws.root.iterdir()):
            ws.root.rmdir()
        raise
    campaign = ledger.create_campaign(config.name, config.model_dump(mode="json"), exist_ok=True)
    for record in prepared:
        ledger.add_scan(campaign.id, **record)
    if not ws.exists():
        tmp = ws.config_file.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
        tmp.replace(ws.config_file)
    return ws


def _prepare_scan(
    config: CampaignConfig, case_id: str, image: Path, ground_truth: Path | None
) -> dict[str, Any]:
    """What the ledger records of a scan: read it once to check it and fit its preprocessing."""
    validate_case_id(case_id)
    scan = read_scan(image)
    prep = scan_preprocessing(scan.array, config.training)
    targets = None
    if ground_truth is not None:
        gt, _ = read_label(ground_truth)
        if gt.shape != scan.array.shape:
            raise ValueError(f"ground truth {ground_truth} has size {gt.shape}, the scan {image} has {scan.array.shape}")
        targets = target_slice_counts(gt)
    g = scan.geometry
    return {
        "case_id": case_id,
        "image_path": str(Path(image).resolve()),
        "geometry": {"size": list(g.size), "spacing": list(g.spacing), "origin": list(g.origin),
                     "direction": list(g.direction)},
        "ground_truth_path": str(Path(ground_truth).resolve()) if ground_truth else None,
        "preprocessing": prep.to_dict(),
        "target_slices": targets,
    }


def add_scan(
    ledger: Ledger, campaign_id: int, config: CampaignConfig, case_id: str, image: Path, ground_truth: Path | None
) -> ScanRecord:
    """Queue one scan (a no-op if it is already there); reads it once to check it and fit the preprocessing."""
    return ledger.add_scan(campaign_id, **_prepare_scan(config, case_id, image, ground_truth))
