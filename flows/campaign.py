"""The campaign: a workspace, its cohort queued in the ledger, and the scans driven through rounds.

With the simulated annotator (the ground-truth oracle) the campaign flow runs each scan to the end, one after
the other: request -> the oracle reviews the mask and accepts it, or draws the requested slices into a label
file -> the same submission a physician's file goes through -> the round -> learning when the scan ends.

With physicians, the flow opens the first requests of at most ``annotator.open_scans`` scans (seed scans
first) and returns; the round service (``dil serve``) processes submissions and keeps the queue rolling, so
that every scan after the seed scans starts from the segmenter that learned from the scans before it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from typing import Any

from prefect import flow, get_client
from prefect.exceptions import ObjectNotFound

from dil_core.io import write_label
from dil_core.ledger import LedgerStateError
from dil_core.ledger.records import TERMINAL_STATES, RoundStatus, ScanRecord, ScanState
from dil_core.simulate import GroundTruthOracle
from dil_core.stopping import check_stop
from dil_core.submission import submit_label_file
from flows.context import CampaignContext, open_context
from flows.round import (
    accept,
    learn_finished,
    open_next_round,
    process_round,
    restart_first_request,
)
from flows.setup import add_scan, init_workspace
from tasks.rounds import GPU_TAG

__all__ = ["add_scan", "campaign_flow", "fill_queue", "init_workspace", "refresh_untouched", "run_simulated_scan"]



def fill_queue(ctx: CampaignContext) -> list[str]:
    """Open the first request of queued scans (queue order) while fewer than ``annotator.open_scans`` are open.

    Nothing opens while a finished scan waits for the segmenter to learn from it: the next scan starts from
    the segmenter that has seen every scan before it. Returns the case ids opened.
    """
    if ctx.ledger.scans_to_learn(ctx.campaign_id):
        return []
    scans = sorted(ctx.ledger.list_scans(ctx.campaign_id), key=lambda s: s.position)
    busy = sum(1 for s in scans if s.state in (ScanState.WAITING_FOR_LABELS, ScanState.RUNNING))
    opened = []
    for scan in scans:
        if busy >= ctx.config.annotator.open_scans:
            break
        if scan.state is ScanState.QUEUED and ctx.ledger.current_round(scan.id) is None:
            try:
                after = open_next_round(ctx, scan, 1)
            except LedgerStateError:  # another worker opened it first
                continue
            opened.append(scan.case_id)
            busy += after.state not in TERMINAL_STATES
    return opened


def run_simulated_scan(
    ctx: CampaignContext, case_id: str, *, on_round: Callable[[dict[str, Any]], None] | None = None
) -> ScanRecord:
    """Drive one scan to rho or its quota with the ground-truth oracle as the annotator, then learn from it."""
    while True:
        scan = ctx.scan(case_id)
        if scan.state in TERMINAL_STATES:
            learn_finished(ctx)
            return ctx.scan(case_id)
        rnd = ctx.ledger.current_round(scan.id)
        if rnd is None:
            done = [r for r in ctx.ledger.list_rounds(scan.id) if r.status is RoundStatus.PROCESSED]
            open_next_round(ctx, scan, len(done) + 1)
            continue
        if rnd.status is RoundStatus.REQUESTED:
            data = ctx.scan_data(scan)
            if data.ground_truth is None:
                raise ValueError(f"scan {case_id!r} has no ground truth: the simulated annotator cannot draw it")
            session = ctx.session(scan)
            if session.n_drawn == 0 and session.prediction is not None:
                # the simulated physician first reviews the mask as it is (before any drawing)
                decision = check_stop(
                    ctx.method.mask(session), rule="ground_truth", rho=ctx.rho_for(scan), ground_truth=data.ground_truth
                )
                if decision.passed:
                    accept(ctx, case_id, rule=decision.rule, value=decision.value)
                    if on_round is not None:
                        on_round({"case": case_id, "round": rnd.number, "state": "passed", "processed": True,
                                  "accepted": True, "slices_drawn": {}, "dice_gt_mask": decision.value})
                    continue
            labels, _ = GroundTruthOracle(data.ground_truth).answer(rnd.requested, rnd.ends)
            folder = ctx.workspace.root / "state" / "oracle" / case_id
            folder.mkdir(parents=True, exist_ok=True)
            path = write_label(folder / f"round-{rnd.number}.nii.gz", labels, data.geometry)
            submit_label_file(ctx.ledger, ctx.workspace, ctx.campaign_id, case_id, path)
            continue
        result = process_round(ctx, case_id)
        if on_round is not None:
            on_round(result)


def owns_prefect(ctx: CampaignContext) -> bool:
    """Whether the Prefect API is this workspace's own (embedded, or its local server), not a shared one."""
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return True
    record = ctx.workspace.prefect_home / "server.json"
    try:
        return bool(json.loads(record.read_text(encoding="utf-8")).get("url") == url)
    except (OSError, ValueError):
        return False


def ensure_gpu_limit(slots: int = 1, *, reset: bool = False) -> None:
    """One training task at a time per GPU: a tag concurrency limit on ``gpu`` (an upsert, so idempotent).

    ``reset`` drops the slots that processes hold now, for a Prefect server only this campaign's processes use
    (the embedded one): a process killed inside a training task keeps its slot there, and the embedded server
    does not repossess it, so every later training would wait for it.
    """
    with get_client(sync_client=True) as client:
        if reset:
            with contextlib.suppress(ObjectNotFound):
                client.delete_concurrency_limit_by_tag(tag=GPU_TAG)
        client.create_concurrency_limit(tag=GPU_TAG, concurrency_limit=slots)


@flow(name="dil-campaign", persist_result=False)
def campaign_flow(workspace: str, on_round: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run every scan through rounds (simulated annotator) or open the first requests (physicians)."""
    ctx = open_context(workspace)
    ensure_gpu_limit(reset=owns_prefect(ctx))
    if ctx.config.annotator.kind == "simulated":
        for scan in sorted(ctx.ledger.list_scans(ctx.campaign_id), key=lambda s: s.position):
            if scan.state not in TERMINAL_STATES:
                run_simulated_scan(ctx, scan.case_id, on_round=on_round)
                ctx.forget(scan.id)
    else:
        learn_finished(ctx)
        fill_queue(ctx)
    return {"summary": ctx.ledger.status_summary(ctx.campaign_id)}


def refresh_untouched(ctx: CampaignContext) -> list[str]:
    """Refresh open first requests that nobody has answered yet when a newer segmenter exists.

    Such a scan starts again from the newest segmenter's prediction: its ``F_prev``, the proposed slices and
    the request's files are replaced, and the ledger's round is revised in place. Seed scans show no
    prediction and are left as they are. Returns the case ids refreshed.
    """
    latest = ctx.latest_model_tag()
    if latest is None:
        return []
    done = []
    for scan in ctx.ledger.list_scans(ctx.campaign_id, state=[ScanState.WAITING_FOR_LABELS]):
        rnd = ctx.ledger.current_round(scan.id)
        if (ctx.is_seed(scan) or rnd is None or rnd.number != 1 or rnd.status is not RoundStatus.REQUESTED
                or ctx.submissions(scan) or ctx.scan_model_tag(scan) == latest):
            continue
        if restart_first_request(ctx, scan, rnd):
            done.append(scan.case_id)
    return done
