"""One round, driven by the ledger: a stored submission goes in, the next labeling request comes out.

``submit`` validates a label file and stores it (file first, then one ledger transaction) before anything
else: once it returns, the submission is safe. ``round_flow`` then processes the scan's submitted round:
propagate -> train -> predict -> stop check -> propose -> request. It is idempotent against crashes: the
checkpoint of a round is written before the ledger names it current, and a round the ledger still shows as
submitted is simply processed again from the previous checkpoint with the same randomness.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow

from dil_core.labor import target_slice_counts
from dil_core.ledger.records import RoundStatus, ScanRecord, ScanState
from dil_core.planes import plane_of
from dil_core.requests import LabelingRequest
from dil_core.metrics import dice
from dil_core.io import read_label, write_label
from dil.tracking import track_round
from dil_core.ledger import sha256_file
from flows.context import CampaignContext, labor_rows, round_rng
from tasks.rounds import (
    fan_out,
    finish_scan_task,
    predict_task,
    propagate_task,
    propose_task,
    stop_check_task,
    train_task,
    validate_submission_task,
    write_request_task,
)

__all__ = ["open_next_round", "process_round", "round_flow", "submit"]


class SubmissionRejected(ValueError):
    """A label file that cannot be accepted for a scan (the message says why); nothing was stored."""


def submit(ctx: CampaignContext, case_id: str, label_file: Path) -> tuple[int, bool]:
    """Validate and store a submission for the scan's open round. Returns (submission id, newly stored).

    The same file submitted twice is stored and counted once. Raises :class:`SubmissionRejected` (or the
    validation error) with nothing stored when the file or the scan's state does not allow it.
    """
    scan = ctx.scan(case_id)
    rnd = ctx.ledger.current_round(scan.id)
    if rnd is None:
        raise SubmissionRejected(f"scan {case_id!r} has no labeling request open (state: {scan.state.value})")
    data = ctx.scan_data(scan)
    content = validate_submission_task.fn(Path(label_file), data.geometry, rnd.requested)
    drawn = {a: idx for a, idx in content.labeled.items() if idx}
    digest = sha256_file(Path(label_file))
    existing = [s for s in ctx.submissions(scan) if s.sha256 == digest]
    if existing:
        return existing[0].id, False
    if rnd.status is not RoundStatus.REQUESTED:
        raise SubmissionRejected(
            f"round {rnd.number} of scan {case_id!r} already has its submission (status {rnd.status.value}); "
            "wait for the next labeling request"
        )
    sha, stored = ctx.store_file(scan, Path(label_file))
    planes = {a: plane_of(a, data.geometry).value for a in drawn}
    rows = labor_rows(content, ctx.target_slices(scan, data), planes)
    sub, created = ctx.ledger.record_submission(
        scan.id, rnd.id, sha, str(stored), Path(label_file).name, {a: sorted(v) for a, v in drawn.items()}, rows
    )
    return sub.id, created


def open_next_round(ctx: CampaignContext, scan: ScanRecord, number: int) -> None:
    """Propose slices for round ``number`` and write its labeling request (Algorithm 4 / first round)."""
    data = ctx.scan_data(scan)
    session = ctx.session(scan)
    if number == 1 and session.previous_prediction is None and ctx.has_trained() and not ctx.is_seed(scan):
        # F_prev of Algorithm 5: the segmenter as it is when the scan starts, fixed for the whole scan.
        pred = predict_task(ctx.trainer(), session.image_grid, flips=ctx.config.training.test_time_flips)
        ctx.save_previous_prediction(scan, pred)
        session.previous_prediction = pred
        session.set_prediction(pred)
    extent = None
    if data.ground_truth is not None and ctx.config.annotator.kind == "simulated":
        # The paper's simulated user draws *target* slices: it knows where the target is.
        extent = {a: _extent(data.ground_truth, a) for a in session.params.axes}
    proposal = propose_task(session, rng=round_rng(ctx.config.training.seed, scan.id, number), extent=extent)
    requested = {a: tuple(int(i) for i in s) for a, s in proposal.slices.items() if s}
    if not requested:
        ctx.ledger.set_scan_state(scan.id, ScanState.AT_QUOTA)
        return
    folder = ctx.workspace.requests_dir(scan.case_id, number)
    request = LabelingRequest(scan.case_id, number, requested, scan.image_path, proposal.strategy)
    proxy = session.proxy.mask if session.proxy is not None else None
    write_request_task(folder, request, data.geometry, proxy, session.prediction)
    planes = {a: plane_of(a, data.geometry).value for a in requested}
    scores = {a: [float(v) for v in proposal.scores[a]] for a in requested}
    ctx.ledger.open_round(scan.id, requested, scores, planes=planes)


class _Stopwatch:
    """Seconds per stage of a round, for the round's metrics and the latency benchmark."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 4)
        self._last = now
        return self.laps[name]


def _extent(mask: np.ndarray, axis: int) -> tuple[int, int]:
    other = tuple(a for a in range(3) if a != axis)
    idx = np.flatnonzero(mask.any(axis=other))
    return (int(idx[0]), int(idx[-1])) if idx.size else (0, mask.shape[axis] - 1)


def process_round(ctx: CampaignContext, case_id: str) -> dict[str, Any]:
    """Process the scan's submitted round; returns the round's metrics and the scan's new state."""
    scan = ctx.scan(case_id)
    rnd = ctx.ledger.current_round(scan.id)
    if rnd is None or rnd.status is not RoundStatus.SUBMITTED:
        return {"case": case_id, "state": scan.state.value, "processed": False}
    ctx.ledger.set_scan_state(scan.id, ScanState.RUNNING)
    data = ctx.scan_data(scan)
    session = ctx.session(scan, upto_round=rnd.number)
    previous_mask = session.mask() if session.proxy is not None else None
    for sub in ctx.submissions(scan, rnd.id):
        labels, _ = read_label(sub.stored_path)
        session.add_labels((labels > 0).astype(np.uint8), sub.drawn)
    session.rounds += 1

    clock = _Stopwatch()
    if session.params.backend.startswith("ants"):
        proxy = session.update_proxy(map_fn=fan_out)  # one registration task per undrawn slice
    else:
        proxy = propagate_task(session)
    clock.lap("propagation")
    trainer = ctx.trainer()
    t = ctx.config.training
    refine = ctx.config.method == "refine"
    pred_grid = None
    if refine:
        losses: list[float] = []  # refine: the prediction is F_prev(X); the segmenter trains when the scan ends
    else:
        sample = session.training_sample()
        losses = train_task(trainer, sample, n_steps=t.n_f, lambda_l=t.lambda_l, m=t.replay_m)
        clock.lap("training")
        pred_grid = predict_task(trainer, sample[0], flips=t.test_time_flips)
        session.set_prediction(pred_grid)
        clock.lap("prediction")
    mask = session.mask()
    decision = stop_check_task(
        mask, rule=ctx.config.stopping.rule.value, rho=ctx.rho_for(scan),
        ground_truth=data.ground_truth, previous_mask=previous_mask, prediction=session.prediction,
    )
    clock.lap("stop_check")
    predicted = session.prediction >= 0.5 if session.prediction is not None else None
    metrics: dict[str, Any] = {
        "slices_drawn": {str(a): len(v) for a, v in session.drawn.items()},
        "proxy_slices_recomputed": {str(a): int(n) for a, n in proxy.recomputed.items()},
        "loss_last": losses[-1] if losses else None,
        "dice_proxy_prediction": None if predicted is None else dice(proxy.mask, predicted),
        "stop_value": decision.value,
        "dice_consecutive": None if previous_mask is None else dice(previous_mask, mask),
        "dice_estimated": None if predicted is None else dice(mask, predicted),
        "seconds": clock.laps,
    }
    if data.ground_truth is not None:
        metrics["dice_gt_proxy"] = dice(data.ground_truth, proxy.mask)
        metrics["dice_gt_prediction"] = None if predicted is None else dice(data.ground_truth, predicted)
        metrics["dice_gt_mask"] = dice(data.ground_truth, mask)

    finished = decision.passed or not session.within_budget()
    if not refine:
        tag: str | None = f"s{scan.id}-r{rnd.number}"
        ctx.save_trainer(trainer, tag)
        ctx.save_prediction(scan, rnd.number, pred_grid)
    elif finished:
        # refine learns once per scan, from its final mask; the checkpoint is written before the ledger names it
        losses = finish_scan_task(session, trainer)
        metrics["loss_last"] = losses[-1] if losses else None
        metrics["seconds"]["training"] = clock.lap("training")
        tag = f"s{scan.id}-r{rnd.number}"
        ctx.save_trainer(trainer, tag)
    else:
        tag = ctx.latest_model_tag()  # the segmenter is unchanged by this round
    if finished:
        ctx.workspace.masks_dir().mkdir(parents=True, exist_ok=True)
        final_path = write_label(ctx.workspace.masks_dir() / f"{scan.case_id}_seg.nii.gz", mask, data.geometry)
    else:
        final_path = None
    state = ScanState.PASSED if decision.passed else (None if session.within_budget() else ScanState.AT_QUOTA)
    if state is not None and data.ground_truth is None:
        ctx.ledger.set_target_slices(scan.id, target_slice_counts(mask))
    # The stop decision (finishing the scan) is written before the round is closed: a crash in between
    # leaves a finished scan whose round is re-processed by nobody, and never a closed round on a scan that
    # should have stopped.
    ctx.ledger.record_stop(
        scan.id, rnd.id, decision.rule, decision.value, decision.passed,
        finish=state, final_mask_path=str(final_path) if final_path else None,
    )
    clock.lap("storage")
    ctx.ledger.mark_round_processed(rnd.id, metrics, tag)
    track_round(ctx, case_id, rnd.number, metrics)  # registers the finished scan's checkpoint before pruning
    if tag is not None:
        ctx.prune_checkpoints(keep=tag)
    if state is None:
        open_next_round(ctx, ctx.scan(case_id), rnd.number + 1)
        metrics["seconds"]["guidance_and_request"] = clock.lap("guidance_and_request")
    scan = ctx.scan(case_id)
    return {"case": case_id, "round": rnd.number, "state": scan.state.value, "processed": True, **metrics}


@flow(name="dil-round", persist_result=False)
def round_flow(workspace: str, case_id: str) -> dict[str, Any]:
    """Process a scan's submitted round (a short flow started by each submission)."""
    ctx = CampaignContext.open(Path(workspace))
    return process_round(ctx, case_id)


def accept(ctx: CampaignContext, case_id: str, *, rule: str = "accept", value: float | None = None) -> Path:
    """The annotator accepts the scan's current mask: it becomes final and the scan passes.

    With method ``refine`` the mask may be the prediction alone (nothing drawn: no labor); the segmenter then
    trains on it, as on every finished scan. The round waiting for labels is closed without a submission in
    the same transaction that finishes the scan. ``rule``/``value`` name who judged: ``accept`` (the
    physician) or, in simulation, ``ground_truth`` and the Dice it measured.
    """
    scan = ctx.scan(case_id)
    if scan.state in (ScanState.PASSED,):
        raise ValueError(f"scan {case_id!r} has already passed")
    data = ctx.scan_data(scan)
    session = ctx.session(scan)
    if session.proxy is None and session.prediction is None:
        raise ValueError(f"scan {case_id!r} has no processed round yet: there is no mask to accept")
    rnd = ctx.ledger.current_round(scan.id)
    if rnd is not None and rnd.status is RoundStatus.SUBMITTED:
        raise ValueError(
            f"scan {case_id!r}: round {rnd.number} has a submission that is not processed yet; "
            f"run `dil resume` first, then accept"
        )
    mask = session.mask()
    tag = ctx.latest_model_tag()
    if ctx.config.method == "refine" and rnd is not None:
        trainer = ctx.trainer()
        finish_scan_task(session, trainer)
        tag = f"s{scan.id}-r{rnd.number}"
        ctx.save_trainer(trainer, tag)
    ctx.workspace.masks_dir().mkdir(parents=True, exist_ok=True)
    path = write_label(ctx.workspace.masks_dir() / f"{scan.case_id}_seg.nii.gz", mask, data.geometry)
    if data.ground_truth is None:
        ctx.ledger.set_target_slices(scan.id, target_slice_counts(mask))
    metrics: dict[str, Any] = {"accepted": True, "stop_value": value,
                               "slices_drawn": {str(a): len(v) for a, v in session.drawn.items()}}
    if data.ground_truth is not None:
        metrics["dice_gt_mask"] = dice(data.ground_truth, mask)
        if session.prediction is not None:
            metrics["dice_gt_prediction"] = dice(data.ground_truth, session.prediction >= 0.5)
    ctx.ledger.record_stop(
        scan.id, None if rnd is None else rnd.id, rule, value, True, finish=ScanState.PASSED,
        final_mask_path=str(path), close_round=rnd is not None, metrics=metrics, model_version=tag,
    )
    last = [r for r in ctx.ledger.list_rounds(scan.id) if r.status is RoundStatus.PROCESSED][-1]
    track_round(ctx, case_id, last.number)
    if tag is not None:
        ctx.prune_checkpoints(keep=tag)
    return path
