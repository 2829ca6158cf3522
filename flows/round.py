"""The round flow: a stored submission goes in, the scan's next labeling request (or its end) comes out.

Every step is :mod:`dil_core.round` (the one round), with the ledger in between:

* :func:`open_next_round` starts a scan (``F_prev``) when its first request is due, proposes the next slices
  and writes the request folder (the slices, and the mask an accept would finalize), then opens the round in
  the ledger;
* :func:`process_round` applies the submitted labels (propagate, the method's after-round step), judges the
  mask, and either opens the next round or finishes the scan (final mask, stop decision);
* :func:`learn_finished` lets the segmenter learn from finished scans, in the order they finished (the
  method's end-of-scan step), checkpoint first, then the ledger;
* :func:`accept` finalizes the mask of the scan's open request.

Crash safety: a checkpoint or mask file is written before the ledger names it, and a round the ledger still
shows as submitted is processed again from the previous state with the same randomness.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow
from prefect.context import TagsContext

from dil_core.io import read_label, write_label
from dil_core.labor import target_slice_counts
from dil_core.ledger import LedgerStateError
from dil_core.ledger.records import TERMINAL_STATES, RoundStatus, ScanRecord, ScanState
from dil_core.metrics import dice
from dil_core.planes import plane_of
from dil_core.requests import LabelingRequest
from dil_core.round import round_rng
from dil_core.session import ScanSession
from dil_core.simulate import GroundTruthOracle
from flows.context import CampaignContext, open_context
from tasks.rounds import (
    apply_task,
    begin_task,
    fan_out,
    finish_task,
    propose_task,
    stop_check_task,
    write_request_task,
)

__all__ = [
    "accept", "learn_finished", "learn_flow", "learn_scan", "open_next_round", "process_round", "reopen",
    "restart_first_request", "round_flow", "start_scan",
]


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


def _extent_for(ctx: CampaignContext, scan: ScanRecord, session: ScanSession) -> dict[int, tuple[int, int]] | None:
    """The simulated user's knowledge of where the target lies (its extent per plane); None with physicians."""
    data = ctx.scan_data(scan)
    a = ctx.config.annotator
    if data.ground_truth is None or a.kind != "simulated" or not a.knows_extent or not data.ground_truth.any():
        return None
    oracle = GroundTruthOracle(data.ground_truth)
    return {a: oracle.target_extent(a) for a in session.params.axes}


def start_scan(ctx: CampaignContext, scan: ScanRecord) -> ScanSession:
    """The scan's session, started (``F_prev`` fixed and stored) if it was not yet."""
    session = ctx.session(scan)
    if not session.started:
        trainer = ctx.trainer()
        previous = begin_task(session, ctx.method, trainer)
        ctx.save_array(ctx.previous_prediction_path(scan), previous)
        ctx.save_scan_model_tag(scan, ctx.trainer_tag if previous is not None else None)
        ctx.keep_session(scan, session)
    return session


def _propose(ctx: CampaignContext, scan: ScanRecord, session: ScanSession, number: int) -> Any:
    return propose_task(
        session, ctx.method, rng=round_rng(ctx.config.training.seed, scan.position, number),
        extent=_extent_for(ctx, scan, session),
    )


def _write_request(ctx: CampaignContext, scan: ScanRecord, session: ScanSession, number: int, proposal: Any) -> None:
    data = ctx.scan_data(scan)
    requested = {a: tuple(int(i) for i in s) for a, s in proposal.slices.items() if s}
    request = LabelingRequest(
        scan.case_id, number, requested, scan.image_path, proposal.strategy, rho=ctx.rho_for(scan),
        segmenter=ctx.scan_model_tag(scan), ends=proposal.ends,
    )
    write_request_task(
        ctx.workspace.requests_dir(scan.case_id, number), request, data.geometry, mask=ctx.method.mask(session),
        proxy=session.proxy.mask if session.proxy is not None else None, prediction=session.prediction,
    )


def open_next_round(ctx: CampaignContext, scan: ScanRecord, number: int) -> ScanRecord:
    """Propose round ``number`` and write its labeling request; a scan with nothing left to ask finishes.

    Returns the scan as the ledger has it afterwards.
    """
    session = start_scan(ctx, scan)
    proposal = _propose(ctx, scan, session, number)
    requested = {a: tuple(int(i) for i in s) for a, s in proposal.slices.items() if s}
    if not requested and not proposal.ends:  # every candidate slice is drawn: the scan ends at its quota
        return _finish(ctx, scan, session, None, "quota", None, False, {})
    _write_request(ctx, scan, session, number, proposal)
    ctx.ledger.open_round(scan.id, requested, **_round_details(ctx, scan, proposal))
    return ctx.scan(scan.case_id)


def _round_details(ctx: CampaignContext, scan: ScanRecord, proposal: Any) -> dict[str, Any]:
    data = ctx.scan_data(scan)
    axes = {a for a, s in proposal.slices.items() if s} | set(proposal.ends)
    return {
        "scores": {a: [float(v) for v in proposal.scores[a]] for a in axes if a in proposal.scores},
        "planes": {a: plane_of(a, data.geometry).value for a in axes},
        "ends": proposal.ends,
    }


def restart_first_request(ctx: CampaignContext, scan: ScanRecord, rnd: Any) -> bool:
    """Start an untouched scan again from the newest segmenter: new ``F_prev``, slices and request files.

    The ledger decides first: the round is revised only while it still waits for labels, so a submission that
    arrived meanwhile wins and nothing is rewritten (returns False). Only then are ``F_prev`` and the request's
    files replaced; a crash in between leaves the old files with an old segmenter tag, and the next pass
    refreshes the request again.
    """
    session = ctx.new_session(scan)
    previous = begin_task(session, ctx.method, ctx.trainer())
    tag = ctx.trainer_tag if previous is not None else None
    proposal = _propose(ctx, scan, session, rnd.number)
    requested = {a: tuple(int(i) for i in s) for a, s in proposal.slices.items() if s}
    if not requested and not proposal.ends:
        return False
    try:
        ctx.ledger.revise_request(rnd.id, requested, **_round_details(ctx, scan, proposal))
    except LedgerStateError:  # the physician's submission got there first: it is processed as it was asked
        ctx.forget(scan.id)
        return False
    ctx.save_array(ctx.previous_prediction_path(scan), previous)
    ctx.save_scan_model_tag(scan, tag)
    ctx.keep_session(scan, session)
    _write_request(ctx, scan, session, rnd.number, proposal)
    return True


def _finish(
    ctx: CampaignContext, scan: ScanRecord, session: ScanSession, rnd: Any, rule: str, value: float | None,
    passed: bool, metrics: dict[str, Any], *, model_version: str | None = None,
) -> ScanRecord:
    """The scan is done: its final mask is written, then the ledger finishes it (passed or at quota)."""
    data = ctx.scan_data(scan)
    mask = ctx.method.mask(session)
    ctx.workspace.masks_dir().mkdir(parents=True, exist_ok=True)
    path = write_label(ctx.workspace.final_mask(scan.case_id), mask, data.geometry)
    if data.ground_truth is None:
        ctx.ledger.set_target_slices(scan.id, target_slice_counts(mask))
    state = ScanState.PASSED if passed else ScanState.AT_QUOTA
    ctx.ledger.record_stop(scan.id, None if rnd is None else rnd.id, rule, value, passed, finish=state,
                           final_mask_path=str(path))
    if rnd is not None and rnd.status is RoundStatus.SUBMITTED:
        ctx.ledger.mark_round_processed(rnd.id, metrics, model_version)
    return ctx.scan(scan.case_id)


def _round_labels(ctx: CampaignContext, scan: ScanRecord, rnd: Any) -> tuple[np.ndarray, dict[int, set[int]]]:
    """The round's submitted label files as one volume and the slices they label (later files win)."""
    data = ctx.scan_data(scan)
    labels = np.zeros(data.image.shape, np.uint8)
    drawn: dict[int, set[int]] = {}
    for sub in ctx.submissions(scan, rnd.id):
        arr, _ = read_label(sub.stored_path)
        for axis, idx in sub.drawn.items():
            for k in idx:
                sl: list[Any] = [slice(None)] * 3
                sl[axis] = k
                labels[tuple(sl)] = arr[tuple(sl)] > 0
            drawn.setdefault(axis, set()).update(idx)
    return labels, drawn


def worker_id() -> str:
    """Who processes a round, as its claim in the ledger names it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _processed_by_another(ctx: CampaignContext, scan: ScanRecord, rnd: Any, timeout: float = 600.0) -> dict[str, Any]:
    """Another worker holds the round: wait for its result in the ledger and report that (nothing is done twice)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = next(r for r in ctx.ledger.list_rounds(scan.id) if r.id == rnd.id)
        if done.status is RoundStatus.PROCESSED:
            now = ctx.scan(scan.case_id)
            return {"case": scan.case_id, "round": done.number, "state": now.state.value, "processed": True,
                    "processed_by": done.claimed_by, **(done.metrics or {})}
        if done.claimed_by is None or (done.claim_expires is not None and
                                       done.claim_expires < datetime.now(timezone.utc)):
            if ctx.ledger.claim_round(rnd.id, worker_id(), lease_s=120.0):  # its holder gave up or died
                ctx.ledger.release_round(rnd.id, worker_id())
                return process_round(ctx, scan.case_id)
        time.sleep(0.2)
    raise TimeoutError(f"round {rnd.number} of {scan.case_id!r} is held by {rnd.claimed_by} and was not processed")


def process_round(ctx: CampaignContext, case_id: str, *, learn: bool = True) -> dict[str, Any]:
    """Process the scan's submitted round; returns the round's metrics and the scan's new state.

    With ``learn`` the segmenter learns from the scan at once if the round finished it (the simulated
    campaign); the round service passes False and lets its learner do it without holding up other rounds.
    """
    scan = ctx.scan(case_id)
    rnd = ctx.ledger.current_round(scan.id)
    if rnd is None or rnd.status is not RoundStatus.SUBMITTED:
        return {"case": case_id, "state": scan.state.value, "processed": False}
    if not ctx.ledger.claim_round(rnd.id, worker_id(), lease_s=120.0):
        return _processed_by_another(ctx, scan, rnd)
    try:
        return _process_claimed(ctx, scan, rnd, learn=learn)
    except BaseException:
        ctx.ledger.release_round(rnd.id, worker_id())  # another try may take it at once
        ctx.forget(scan.id)
        ctx.drop_trainer()
        raise


def _process_claimed(ctx: CampaignContext, scan: ScanRecord, rnd: Any, *, learn: bool) -> dict[str, Any]:
    case_id = scan.case_id
    data = ctx.scan_data(scan)
    session = start_scan(ctx, scan)
    method = ctx.method
    previous_mask = method.mask(session).copy() if session.proxy is not None else None
    labels, drawn = _round_labels(ctx, scan, rnd)
    clock = _Stopwatch()
    trainer = ctx.trainer()
    map_fn = fan_out if session.params.backend.startswith("ants") else map  # one task per registration
    result = apply_task(session, method, labels, drawn, trainer, ends=tuple(rnd.ends), map_fn=map_fn)
    clock.lap("round")
    mask = method.mask(session)
    decision = stop_check_task(
        mask, rule=ctx.config.stopping.rule.value, rho=ctx.rho_for(scan),
        ground_truth=data.ground_truth, previous_mask=previous_mask, prediction=session.prediction,
    )
    clock.lap("stop_check")
    predicted = session.prediction >= 0.5 if session.prediction is not None else None
    proxy = session.proxy
    assert proxy is not None
    metrics: dict[str, Any] = {
        "slices_drawn": {str(a): len(v) for a, v in session.drawn.items()},
        "slices_new": {str(a): len(v) for a, v in result.new.items()},
        "proxy_slices_recomputed": {str(a): int(n) for a, n in proxy.recomputed.items()},
        "loss_last": result.losses[-1] if result.losses else None,
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
    tag = None
    if result.trained:  # the paper's n_F steps and buffer update: checkpoint before the ledger names it
        tag = f"s{scan.id}-r{rnd.number}"
        ctx.save_trainer(trainer, tag)
    if result.predicted:
        ctx.save_array(ctx.prediction_path(scan, rnd.number), session.prediction_grid)
    finished = decision.passed or not session.within_budget()
    if finished:
        scan = _finish(ctx, scan, session, rnd, decision.rule, decision.value, decision.passed, metrics,
                       model_version=tag)
    else:
        ctx.ledger.record_stop(scan.id, rnd.id, decision.rule, decision.value, False)
        ctx.ledger.mark_round_processed(rnd.id, metrics, tag)
    clock.lap("storage")
    if not finished:  # the physician's next request first, the tracking store after it
        scan = open_next_round(ctx, scan, rnd.number + 1)
        metrics["seconds"]["guidance_and_request"] = clock.lap("guidance_and_request")
    ctx.tracking.round_processed(ctx, case_id, rnd.number, metrics)
    if scan.state in TERMINAL_STATES and learn:
        learn_finished(ctx)
    return {"case": case_id, "round": rnd.number, "state": scan.state.value, "processed": True, **metrics}


@flow(name="dil-round", persist_result=False)
def round_flow(workspace: str, case_id: str, learn: bool = True) -> dict[str, Any]:
    """Process a scan's submitted round (one flow run per submission); see :func:`process_round`.

    The flow run keeps the tags it was started under (the service's ``campaign:``/``case:``); its tasks get none
    of them: a tagged task run asks the server for concurrency slots first (0.2 to 2 s each, measured in
    ``dil serve``), which the physician would wait for (see :mod:`tasks.rounds`).
    """
    with TagsContext(current_tags=set()):
        return process_round(open_context(workspace), case_id, learn=learn)


@flow(name="dil-learn", persist_result=False)
def learn_flow(workspace: str) -> list[str]:
    """Let the segmenter learn from every finished scan it has not learned from yet (in finish order)."""
    return learn_finished(open_context(workspace), prune=False)


def learn_scan(ctx: CampaignContext, scan: ScanRecord) -> str | None:
    """The segmenter learns from one finished scan (the method's end-of-scan step on its final state).

    Starts from the newest checkpoint, writes the new one before the ledger marks the scan learned, and
    registers the version with the tracking store. Returns the checkpoint tag now newest (None: untrained).
    """
    session = ctx.session(scan)
    before = ctx.latest_model_tag()
    trainer = ctx.load_trainer(before)
    steps = trainer.steps
    losses = finish_task(session, ctx.method, trainer)
    if not (losses or trainer.steps != steps):  # nothing trained (continual training learns instead): no new
        ctx.ledger.mark_scan_learned(scan.id, None)  # checkpoint, and the newest one stays what it was
        return before
    tag = f"s{scan.id}-learned"
    ctx.save_trainer(trainer, tag, cache=False)
    ctx.ledger.mark_scan_learned(scan.id, tag)
    ctx.tracking.segmenter_learned(ctx, scan.case_id, tag)
    return tag


def learn_finished(ctx: CampaignContext, *, prune: bool = True) -> list[str]:
    """Learn from every finished scan the segmenter has not learned from yet, in the order they finished.

    ``prune`` deletes the checkpoints older than the newest (a long-lived service prunes between rounds
    instead, so that no round loads a checkpoint being deleted). Learning holds the ledger lease
    ``learn:<campaign>``: with several workers on one campaign, one learns while the others go on with rounds.
    """
    done: list[str] = []
    lease = f"learn:{ctx.campaign_id}"  # one learner per segmenter, whichever worker it is
    if not ctx.ledger.acquire_lease(lease, worker_id(), lease_s=600.0):
        return done
    try:
        for scan in ctx.ledger.scans_to_learn(ctx.campaign_id):
            ctx.ledger.acquire_lease(lease, worker_id(), lease_s=600.0)  # renewed for each scan
            learn_scan(ctx, scan)
            done.append(scan.case_id)
    finally:
        ctx.ledger.release_lease(lease, worker_id())
    latest = ctx.latest_model_tag()
    if prune and latest is not None:
        ctx.prune_checkpoints(keep=latest)
    return done


def accept(ctx: CampaignContext, case_id: str, *, rule: str = "accept", value: float | None = None) -> Path:
    """The annotator accepts the mask of the scan's open request (the file ``mask_seg.nii.gz`` in it).

    The scan passes with exactly that mask; the round is closed without a submission in the same transaction.
    A scan at its quota is accepted with the final mask it ended with. ``rule``/``value`` name who judged:
    ``accept`` (the physician) or, in simulation, ``ground_truth`` and the Dice it measured.
    """
    from dil_core.submission import accept_request

    path = accept_request(ctx.ledger, ctx.workspace, ctx.campaign_id, case_id, rule=rule, value=value)
    scan = ctx.scan(case_id)
    last = [r for r in ctx.ledger.list_rounds(scan.id) if r.status is RoundStatus.PROCESSED]
    if last:
        ctx.tracking.round_processed(ctx, case_id, last[-1].number, None)
    return path



def reopen(ctx: CampaignContext, case_id: str) -> ScanRecord:
    """Undo a scan's end (an accept by mistake): it gets a new request, and the segmenter forgets it.

    The ledger marks the scan waiting again and every learned scan to be learned again; the segmenter is then
    rebuilt by learning the other finished scans in the order they finished, from a fresh one (``refine``,
    which learns only when a scan finishes, forgets the scan entirely; the paper's method keeps what it
    learned during the scan's rounds). Returns the scan with its new request open.
    """
    scan = ctx.ledger.reopen_scan(ctx.scan(case_id).id)
    ctx.forget(scan.id)
    ctx.drop_trainer()
    number = len(ctx.ledger.list_rounds(scan.id)) + 1
    learn_finished(ctx)
    return open_next_round(ctx, ctx.scan(case_id), number)
