"""MLflow tracking of a campaign's flows: the :class:`flows.hooks.Tracking` that ``dil`` installs.

Tracking mirrors the ledger and never fails a round: an MLflow error is logged as a warning, and
:func:`sync_campaign` catches up later (``dil report --sync``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dil.tracking._common import flatten_round_metrics, processed_rounds
from dil.tracking.store import Tracker

__all__ = ["CHAMPION", "MlflowTracking", "install", "sync_campaign", "tracker_for"]

CHAMPION = "champion"

_TRACKERS: dict[tuple[str, str, str | None], Tracker] = {}
_OPENING = threading.Lock()  # a service's round and learner threads open the campaign's tracker once between them
_log = logging.getLogger("dil.tracking")


def tracker_for(ctx: Any) -> Tracker:
    """The campaign's tracker (opened once per process) for a :class:`flows.context.CampaignContext`."""
    key = (str(ctx.workspace.root), ctx.config.name, ctx.config.tracking.mlflow_uri)
    with _OPENING:
        if key not in _TRACKERS:
            _TRACKERS[key] = Tracker.open(ctx.workspace.root, ctx.config.name, ctx.config.tracking.mlflow_uri)
        return _TRACKERS[key]


def _round_metrics(metrics: Mapping[str, Any], planes: Mapping[int, str], labor: float | None) -> dict[str, float | None]:
    plain = {k: v for k, v in metrics.items() if k != "seconds"}
    seconds = metrics.get("seconds")
    return flatten_round_metrics(
        plain, planes=planes, timings=seconds if isinstance(seconds, Mapping) else None, labor_fraction=labor
    )


def _register_learned(ctx: Any, tracker: Tracker, scan: Any, tag: str) -> int | None:
    """Register checkpoint ``tag`` (the segmenter that learned from ``scan``) in MLflow, mirrored in the ledger."""
    from dil_core.ledger import LedgerStateError, ScanState

    path = ctx.workspace.checkpoint(tag)
    if not Path(path).is_file():
        return None
    done = ctx.ledger.list_scans(ctx.campaign_id, state=[ScanState.PASSED, ScanState.AT_QUOTA])
    seen = sum(1 for s in done if s.learned_at is not None and (scan.learned_at is None or s.learned_at <= scan.learned_at))
    rounds = [r for r in ctx.ledger.list_rounds(scan.id) if r.status.value == "processed"]
    t = ctx.config.training
    version = tracker.register_segmenter(
        path, case_id=scan.case_id, rounds=len(rounds), scans_seen=max(seen, 1), state=scan.state.value,
        tags={"segmenter": t.segmenter, "channels": ",".join(map(str, t.channels)),
              "grid": ",".join(map(str, t.grid)), "checkpoint": tag},
    )
    if ctx.ledger.get_model_version(ctx.campaign_id, version=version) is None:
        try:
            ctx.ledger.register_model_version(
                ctx.campaign_id, tracker.model_uri(version), scans_seen=max(seen, 1),
                rounds_seen=processed_rounds(ctx.ledger, ctx.campaign_id), version=version, alias="latest",
            )
        except LedgerStateError as err:  # a newer version reached the ledger first; MLflow keeps this one
            _log.warning("segmenter version %s not mirrored in the ledger: %s", version, err)
    return version


class MlflowTracking:
    """Per-round metrics, cumulative labor and the registered segmenter in the campaign's MLflow experiment."""

    def round_processed(self, ctx: Any, case_id: str, round_number: int, metrics: Mapping[str, Any] | None) -> None:
        try:
            tracker = tracker_for(ctx)
            scan = ctx.scan(case_id)
            rnd = next(r for r in ctx.ledger.list_rounds(scan.id) if r.number == round_number)
            labor = {lab.scan_id: lab.fraction for lab in ctx.ledger.labor_by_scan(ctx.campaign_id)}
            total = processed_rounds(ctx.ledger, ctx.campaign_id)
            summary = ctx.ledger.status_summary(ctx.campaign_id)
            tracker.log_round(
                case_id, round_number,
                _round_metrics(metrics if metrics is not None else rnd.metrics or {}, rnd.planes, labor.get(scan.id)),
                cumulative_labor=sum(labor.values()), rounds_total=max(total, 1),
                campaign_metrics={"scans_passed": summary.counts.get("passed", 0),
                                  "scans_at_quota": summary.counts.get("at_quota", 0)},
            )
            if scan.state.value in ("passed", "at_quota"):
                tracker.end_scan(case_id, scan.state.value)
        except Exception as err:  # MLflow mirrors the ledger: never fail the round for it
            _log.warning("MLflow tracking of %s round %s failed (%s: %s); `dil report --sync` catches up",
                         case_id, round_number, type(err).__name__, err)

    def segmenter_learned(self, ctx: Any, case_id: str, tag: str) -> int | None:
        try:
            return _register_learned(ctx, tracker_for(ctx), ctx.scan(case_id), tag)
        except Exception as err:
            _log.warning("MLflow registration of the segmenter after %s failed (%s: %s)",
                         case_id, type(err).__name__, err)
            return None

    def champion(self, ctx: Any) -> tuple[int, dict[str, Any]] | None:
        tracker = tracker_for(ctx)
        version = tracker.alias_version(CHAMPION)
        if version is None:
            return None
        return version, tracker.load_state(version=version)

    def register_retrained(
        self, ctx: Any, model: Any, *, train_cases: list[str], val_cases: list[str], params: Mapping[str, Any],
        metrics: Mapping[str, float], losses: list[float], promoted: bool, kind: str = "retrain",
    ) -> tuple[int, str]:
        from mlflow.entities import Metric, Param

        tracker = tracker_for(ctx)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        run = tracker.client.create_run(
            tracker.experiment_id, run_name=f"{kind}-{stamp}",
            tags={"campaign": ctx.config.name, "kind": kind, "mlflow.parentRunId": tracker.campaign_run_id()},
        )
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        batch = [Metric("train_loss", v, now, i + 1) for i, v in enumerate(losses)]
        for key, value in metrics.items():
            batch.append(Metric(re.sub(r"[^A-Za-z0-9_\-./ ]", "_", key)[:250], float(value), now, 0))
        tracker.client.log_batch(run_id, metrics=batch, params=[Param(k, str(v)) for k, v in params.items()])
        t = ctx.config.training
        version = tracker.register_segmenter(
            model, case_id=None, rounds=None, scans_seen=len(train_cases), kind=kind, run_id=run_id,
            tags={"segmenter": t.segmenter, "channels": ",".join(map(str, t.channels)),
                  "val_dice": f"{metrics.get('val_dice', float('nan')):.6f}",
                  "val_cases": ",".join(val_cases)[:5000], "promoted": str(promoted).lower()},
        )
        if promoted:
            tracker.set_alias(CHAMPION, version)
        tracker.client.set_terminated(run_id, "FINISHED")
        return version, tracker.model_uri(version)


def install() -> None:
    """Make every campaign context opened from now on in this process track to MLflow."""
    from flows.hooks import install_tracking

    install_tracking(lambda ctx: MlflowTracking())


def sync_campaign(ctx: Any) -> int:
    """Replay every processed round of the ledger into MLflow, in processing order, and register the
    segmenter checkpoints still on disk. Idempotent (rounds already logged are skipped); returns the number
    of rounds newly logged."""
    from dil_core.ledger import RoundStatus

    tracker = tracker_for(ctx)
    scans = {s.id: s for s in ctx.ledger.list_scans(ctx.campaign_id)}
    rounds = []
    labor_of_round: dict[int, float] = {}
    for scan in scans.values():
        for sub in ctx.ledger.list_submissions(scan.id):
            labor_of_round[sub.round_id] = labor_of_round.get(sub.round_id, 0.0) + sum(r.fraction for r in sub.labor)
        rounds += [(r, scan) for r in ctx.ledger.list_rounds(scan.id) if r.status is RoundStatus.PROCESSED]
    rounds.sort(key=lambda item: (item[0].processed_at, item[0].id))
    cumulative = 0.0
    per_scan: dict[int, float] = {}
    logged = 0
    for total, (rnd, scan) in enumerate(rounds, start=1):
        spent = labor_of_round.get(rnd.id, 0.0)
        cumulative += spent
        per_scan[scan.id] = per_scan.get(scan.id, 0.0) + spent
        logged += tracker.log_round(
            scan.case_id, rnd.number, _round_metrics(rnd.metrics or {}, rnd.planes, per_scan[scan.id]),
            cumulative_labor=cumulative, rounds_total=total,
        )
    for scan in scans.values():
        if scan.state.value in ("passed", "at_quota"):
            tracker.end_scan(scan.case_id, scan.state.value)
        if scan.learned_tag:
            _register_learned(ctx, tracker, scan, scan.learned_tag)
    return logged
