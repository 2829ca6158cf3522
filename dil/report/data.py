"""Reading a campaign for the report: the ledger (and the MLflow registry) into :class:`ReportData`.

:func:`collect` reads a workspace's ledger, never writing it; :func:`table7` aggregates the finished scans
as the paper's Table 7. Definitions of labor, full contouring and savings: see :mod:`dil.report`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_MINUTES_PER_SLICE", "DICE_KEYS", "ReportData", "ScanRow", "collect", "table7"]

#: Physician minutes to contour one 2D slice by hand (configurable; a guess for small structures).
DEFAULT_MINUTES_PER_SLICE = 1.5

#: The three Dice scores the paper tracks per round (Figures 4-5), as the round flow names them.
DICE_KEYS: tuple[tuple[str, str], ...] = (
    ("dice_gt_prediction", "Dice(Y, F(X))"),
    ("dice_gt_proxy", "Dice(Y, proxy)"),
    ("dice_proxy_prediction", "Dice(proxy, F(X))"),
)
#: What is known without ground truth: the agreement estimates the round flow records.
ESTIMATE_KEYS: tuple[tuple[str, str], ...] = (
    ("dice_estimated", "Dice(mask, F(X)), estimated"),
    ("dice_consecutive", "Dice(consecutive masks)"),
)
_FINISHED = ("passed", "at_quota")
_TABLE7_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass
class ScanRow:
    """One scan as the report shows it (one CSV row)."""

    position: int
    case_id: str
    state: str
    rounds: int
    slices: dict[str, int]
    labor: float
    full_slices: dict[str, int] | None
    final_metrics: dict[str, Any]
    round_metrics: list[dict[str, Any]]
    stop_rule: str | None
    stop_value: float | None
    started_at: datetime | None
    finished_at: datetime | None
    version_at_start: int | None = None
    version_registered: int | None = None

    @property
    def finished(self) -> bool:
        return self.state in _FINISHED

    @property
    def outcome(self) -> str:
        """How the scan ended, as the report names it: accepted, passed by ground truth or an estimate, at quota."""
        if self.state == "passed":
            return {"accept": "accepted", "ground_truth": "passed (Dice >= rho)",
                    "estimated": "passed (estimated Dice >= rho)"}.get(self.stop_rule or "", "passed")
        return self.state.replace("_", " ")

    @property
    def slices_total(self) -> int:
        return sum(self.slices.values())

    def full_contouring_slices(self, planes: Sequence[str]) -> float | None:
        """Slices of contouring the whole target on one plane: the mean over ``planes`` of the target counts."""
        if not self.full_slices:
            return None
        counts = [self.full_slices[p] for p in planes if p in self.full_slices]
        return float(sum(counts) / len(counts)) if counts else None


@dataclass
class ReportData:
    """Everything the page and the CSV show, read from one workspace."""

    campaign: str
    workspace: Path
    planes: tuple[str, ...]
    rho: float
    rule: str
    minutes_per_slice: float
    scans: list[ScanRow]
    versions: list[dict[str, Any]] = field(default_factory=list)
    versions_source: str = "none"
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    review_minutes: float = 0.0

    @property
    def finished(self) -> list[ScanRow]:
        """Finished scans in the order they finished (the paper's sequence of samples)."""
        done = [s for s in self.scans if s.finished]
        return sorted(done, key=lambda s: (s.finished_at or datetime.max.replace(tzinfo=UTC), s.position))

    def savings(self) -> dict[str, float]:
        """Totals over finished scans: labor, full contourings, slices drawn / of full contouring / saved, minutes."""
        labor = full_equiv = drawn = full_slices = 0.0
        known = 0
        for s in self.finished:
            full = s.full_contouring_slices(self.planes)
            labor += s.labor
            full_equiv += 1.0
            if full is not None:
                drawn += s.slices_total
                full_slices += full
                known += 1
        saved = full_slices - drawn
        return {
            "finished": float(len(self.finished)),
            "labor": labor,
            "full_contourings": full_equiv,
            "labor_saved": full_equiv - labor,
            "slices_drawn": drawn,
            "slices_full": full_slices,
            "slices_saved": saved,
            "minutes_saved": saved * self.minutes_per_slice,
            "minutes_spent": drawn * self.minutes_per_slice,
            "minutes_review": len(self.finished) * self.review_minutes,
            "minutes_full": full_slices * self.minutes_per_slice,
            "scans_with_targets": float(known),
        }


# ------------------------------------------------------------------------------------------------- reading
def _check_minutes(minutes_per_slice: float) -> float:
    if isinstance(minutes_per_slice, bool) or not isinstance(minutes_per_slice, int | float):
        raise ValueError(f"minutes_per_slice: must be a number > 0, got {minutes_per_slice!r}")
    value = float(minutes_per_slice)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"minutes_per_slice: must be a finite number > 0, got {minutes_per_slice!r}")
    return value


def _plane_axes(scan: Any, rounds: Iterable[Any], subs: Iterable[Any], planes: Sequence[str]) -> dict[str, int]:
    """Plane name -> array axis of this scan, from its rounds and labor rows, else its direction cosines."""
    out: dict[str, int] = {}
    for r in rounds:
        for axis, name in r.planes.items():
            out.setdefault(str(name), int(axis))
    for sub in subs:
        for row in sub.labor:
            out.setdefault(row.plane, int(row.axis))
    missing = [p for p in planes if p not in out]
    if missing and scan.geometry.get("direction"):
        from dil_core.planes import axis_of

        for p in missing:
            try:
                out[p] = axis_of(p, scan.geometry["direction"])
            except ValueError:
                continue
    return out


def collect(workspace_root: str | os.PathLike[str], *, minutes_per_slice: float = DEFAULT_MINUTES_PER_SLICE) -> ReportData:
    """Read a campaign's state from its workspace (ledger, and the MLflow registry where there is one).

    Parameters
    ----------
    workspace_root : path
        A DIL workspace (holding ``campaign.yaml``).
    minutes_per_slice : float
        Physician minutes per hand-contoured slice, > 0.

    Returns
    -------
    ReportData

    Raises
    ------
    FileNotFoundError
        Not a workspace, or no ledger in it.
    ValueError
        ``minutes_per_slice`` not a finite number > 0.
    """
    minutes = _check_minutes(minutes_per_slice)
    from dil_core.config import load_config
    from dil_core.ledger import Ledger, LedgerNotFoundError, RoundStatus
    from dil_core.workspace import Workspace

    ws = Workspace(Path(workspace_root).resolve())
    if not ws.exists():
        raise FileNotFoundError(f"{ws.root} is not a DIL workspace (no {ws.config_file.name})")
    cfg = load_config(ws.config_file)
    try:
        ledger = Ledger.open(cfg.tracking.ledger_url or ws.ledger_url, create=False)
    except LedgerNotFoundError as err:
        raise FileNotFoundError(f"{ws.root}: no campaign ledger ({err})") from err
    planes = tuple(p.value for p in cfg.guidance.planes)
    try:
        campaign = ledger.get_campaign(cfg.name)
        labor = {lab.scan_id: lab for lab in ledger.labor_by_scan(campaign.id)}
        rows: list[ScanRow] = []
        for scan in sorted(ledger.list_scans(campaign.id), key=lambda s: s.position):
            rounds = [r for r in ledger.list_rounds(scan.id) if r.status is RoundStatus.PROCESSED]
            all_rounds = ledger.list_rounds(scan.id)
            subs = ledger.list_submissions(scan.id)
            slices: dict[str, int] = {}
            for sub in subs:
                for row in sub.labor:
                    slices[row.plane] = slices.get(row.plane, 0) + row.slices
            axes = _plane_axes(scan, all_rounds, subs, planes)
            full = None
            if scan.target_slices:
                full = {p: int(scan.target_slices[a]) for p, a in axes.items() if a in scan.target_slices}
            stops = ledger.list_stops(scan.id)
            last = stops[-1] if stops else None
            rows.append(
                ScanRow(
                    position=scan.position,
                    case_id=scan.case_id,
                    state=scan.state.value,
                    rounds=len(rounds),
                    slices=slices,
                    labor=labor[scan.id].fraction if scan.id in labor else 0.0,
                    full_slices=full,
                    final_metrics=dict(rounds[-1].metrics or {}) if rounds else {},
                    round_metrics=[dict(r.metrics or {}) for r in rounds],
                    stop_rule=last.rule if last else None,
                    stop_value=last.value if last else None,
                    started_at=all_rounds[0].created_at if all_rounds else None,
                    finished_at=scan.finished_at,
                )
            )
        versions, source = _versions(ws, cfg, ledger, campaign.id)
    finally:
        ledger.close()
    _assign_versions(rows, versions)
    return ReportData(
        campaign=cfg.name,
        workspace=ws.root,
        planes=planes,
        rho=cfg.stopping.rho,
        rule=cfg.stopping.rule.value,
        minutes_per_slice=minutes,
        scans=rows,
        versions=versions,
        review_minutes=cfg.annotator.review_minutes,
        versions_source=source,
    )


def _versions(ws: Any, cfg: Any, ledger: Any, campaign_id: int) -> tuple[list[dict[str, Any]], str]:
    """Segmenter versions from the MLflow registry where there is a store, else from the ledger."""
    store = ws.mlflow_dir / "mlflow.db"
    if cfg.tracking.mlflow_uri or store.is_file():
        try:
            from dil.tracking import Tracker

            tracker = Tracker.open(ws.root, cfg.name, cfg.tracking.mlflow_uri)
            found = [
                {
                    "version": v.version,
                    "kind": v.kind,
                    "scan": v.scan,
                    "rounds": v.rounds,
                    "scans_seen": v.scans_seen,
                    "created": datetime.fromtimestamp(v.created_ms / 1000, tz=UTC),
                    "aliases": ", ".join(v.aliases),
                    "val_dice": v.val_dice,
                }
                for v in tracker.versions()
            ]
            if found:
                return found, "MLflow registry"
        except Exception as err:  # an unreachable tracking server must not stop the report
            return _ledger_versions(ledger, campaign_id), f"ledger (MLflow unavailable: {type(err).__name__})"
    return _ledger_versions(ledger, campaign_id), "ledger"


def _ledger_versions(ledger: Any, campaign_id: int) -> list[dict[str, Any]]:
    return [
        {
            "version": v.version,
            "kind": "",
            "scan": None,
            "rounds": v.rounds_seen,
            "scans_seen": v.scans_seen,
            "created": v.created_at,
            "aliases": v.alias or "",
            "val_dice": None,
        }
        for v in ledger.list_model_versions(campaign_id)
    ]


def _assign_versions(rows: list[ScanRow], versions: list[dict[str, Any]]) -> None:
    """Per scan: the newest version registered before its first round (its F_prev), and the one it registered."""
    ordered = sorted(versions, key=lambda v: v["created"])
    for row in rows:
        if row.started_at is not None:
            before = [v["version"] for v in ordered if v["created"] <= row.started_at]
            row.version_at_start = before[-1] if before else None
        mine = [v["version"] for v in versions if v.get("scan") == row.case_id and v.get("kind") == "scan"]
        row.version_registered = max(mine) if mine else None


# -------------------------------------------------------------------------------------------------- tables
def table7(data: ReportData) -> list[dict[str, Any]]:
    """Cumulative slices per plane (drawn and of full labeling) at 20-100 % of the finished scans (Table 7)."""
    done = data.finished
    out = []
    for frac in _TABLE7_FRACTIONS:
        k = max(1, math.ceil(frac * len(done) - 1e-9)) if done else 0
        part = done[:k]
        row: dict[str, Any] = {"fraction": frac, "scans": k}
        for p in data.planes:
            row[f"drawn_{p}"] = sum(s.slices.get(p, 0) for s in part)
            full = [s.full_slices.get(p) for s in part if s.full_slices]
            row[f"full_{p}"] = sum(v for v in full if v is not None) if full else None
        row["labor"] = sum(s.labor for s in part)
        out.append(row)
    return out
