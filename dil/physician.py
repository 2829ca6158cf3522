"""The physician's commands: ``dil submit``, ``dil accept``, ``dil status``.

They are thin on purpose: the ledger, the label file and a few hundred lines of checks, no torch, MONAI,
Prefect or MLflow, so a command answers in about a second. The round service (``dil serve``) does the work a
submission or an accept starts; these commands store what the physician did and wake it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dil_core.config import CampaignConfig, load_config
from dil_core.ledger import Ledger, RoundStatus, ScanState
from dil_core.workspace import Workspace

__all__ = ["Campaign", "continual_status", "open_campaign", "scan_phase", "scan_rows", "wait_for_next"]


@dataclass
class Campaign:
    """A workspace's config and ledger, opened without the heavy libraries."""

    workspace: Workspace
    config: CampaignConfig
    ledger: Ledger
    campaign_id: int


def open_campaign(workspace: str | Path) -> Campaign:
    """Open a workspace's config and ledger.

    Raises
    ------
    FileNotFoundError
        Not a DIL workspace.
    """
    ws = Workspace(Path(workspace).expanduser().resolve())
    if not ws.exists():
        raise FileNotFoundError(f"{ws.root} is not a DIL workspace (no campaign.yaml); create one with `dil init CONFIG`")
    cfg = load_config(ws.config_file)
    ledger = Ledger.open(cfg.tracking.ledger_url or ws.ledger_url, create=False)
    return Campaign(ws, cfg, ledger, ledger.get_campaign(cfg.name).id)


def scan_phase(state: ScanState, current: Any) -> str:
    """Where a scan stands for the physician: queued, open, waiting, processing or done (its final state)."""
    if state in (ScanState.PASSED, ScanState.AT_QUOTA, ScanState.FAILED):
        return f"done ({state.value})"
    if current is None:
        return "processing" if state is ScanState.RUNNING else "queued"
    if current.status is RoundStatus.REQUESTED:
        return f"open (round {current.number})"
    if current.claimed_by and current.claim_expires is not None and current.claim_expires > datetime.now(UTC):
        return f"processing (round {current.number})"
    return f"waiting (round {current.number} submitted)"


def scan_rows(camp: Campaign) -> list[dict[str, Any]]:
    """One row per scan for ``dil status`` and the HTTP API: phase, rounds, slices, labor and minutes."""
    a = camp.config.annotator
    labor = {lab.scan_id: lab for lab in camp.ledger.labor_by_scan(camp.campaign_id)}
    rows = []
    for scan in sorted(camp.ledger.list_scans(camp.campaign_id), key=lambda s: s.position):
        every = camp.ledger.list_rounds(scan.id)
        current = next((r for r in every if r.is_open), None)  # the ledger keeps at most one open round
        rounds = [r for r in every if r.status is RoundStatus.PROCESSED]
        planes: dict[str, int] = {}
        for sub in camp.ledger.list_submissions(scan.id):
            for row in sub.labor:
                planes[row.plane] = planes.get(row.plane, 0) + row.slices
        lab = labor[scan.id]
        finished = scan.state in (ScanState.PASSED, ScanState.AT_QUOTA)
        dice = rounds[-1].metrics.get("dice_gt_mask") if rounds and rounds[-1].metrics else None
        rows.append({
            "case": scan.case_id,
            "state": scan.state.value,
            "phase": scan_phase(scan.state, current),
            "round": None if current is None else current.number,
            "rounds": len(rounds),
            "slices": lab.slices,
            "slices_per_plane": planes,
            "labor": lab.fraction,
            "drawing_minutes": lab.slices * a.minutes_per_slice,
            "review_minutes": a.review_minutes if finished else 0.0,
            "dice_gt": dice,
            "learned": scan.learned_at is not None,
            "request": None if current is None else str(camp.workspace.requests_dir(scan.case_id, current.number)),
        })
    return rows


@dataclass
class _GatesRead:
    """What one process has read of a gates file so far: up to ``offset``, whole lines only."""

    ident: tuple[int, int]
    offset: int = 0
    gates: int = 0
    promotions: int = 0
    champion: str | None = None
    last: dict[str, Any] | None = None


_GATES_READ: dict[Path, _GatesRead] = {}
_GATES_LOCK = threading.Lock()


def _read_gates(path: Path) -> _GatesRead | None:
    """The gates file's summary, reading only what was appended since this process last read it.

    The file only grows (one JSON line per gate). A line still being written (no newline yet) is left for the
    next call; a line that does not parse (cut short by a kill, the next gate written after it) is skipped. A
    file replaced or shorter than what was read is read again from the start.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        _GATES_READ.pop(path, None)
        return None
    ident = (st.st_dev, st.st_ino)
    done = _GATES_READ.get(path)
    if done is None or done.ident != ident or st.st_size < done.offset:
        done = _GatesRead(ident)
    if st.st_size > done.offset:
        with open(path, "rb") as fh:
            fh.seek(done.offset)
            chunk = fh.read()
        whole = chunk[: chunk.rfind(b"\n") + 1]
        for line in whole.decode("utf-8", errors="replace").splitlines():
            try:
                gate = json.loads(line)
            except ValueError:  # a line cut short by a kill while it was written: the next gate follows it
                continue
            done.gates += 1
            done.last = gate
            if gate.get("promoted"):
                done.promotions += 1
                done.champion = gate.get("checkpoint")
        done.offset += len(whole)
    _GATES_READ[path] = done
    return done


def continual_status(camp: Campaign) -> dict[str, Any] | None:
    """The continual learner as its gates file shows it; None where ``continual.enabled`` is off.

    ``steps`` counts the optimiser steps up to the last gate (the learner gates every ``gate_every`` steps),
    ``champion`` is the checkpoint of the last promotion (None before the first), ``last_gate`` the last line.
    A long-lived process (``dil serve``'s status page) reads only the gates appended since its last call.
    """
    if not camp.config.continual.enabled:
        return None
    with _GATES_LOCK:
        done = _read_gates(camp.workspace.continual_gates())
        if done is None:
            return {"steps": 0, "gates": 0, "promotions": 0, "champion": None, "last_gate": None}
        return {
            "steps": done.last["step"] if done.last else 0,
            "gates": done.gates,
            "promotions": done.promotions,
            "champion": done.champion,
            "last_gate": dict(done.last) if done.last else None,
        }


def wait_for_next(camp: Campaign, case_id: str, round_number: int, *, timeout: float = 600.0) -> dict[str, Any]:
    """Wait until the scan's round ``round_number`` is processed; the scan's state and its next request."""
    deadline = time.monotonic() + timeout
    while True:
        scan = camp.ledger.find_scan(camp.campaign_id, case_id)
        assert scan is not None
        current = camp.ledger.current_round(scan.id)
        if scan.state in (ScanState.PASSED, ScanState.AT_QUOTA, ScanState.FAILED):
            return {"state": scan.state.value, "final_mask": scan.final_mask_path}
        if current is not None and current.number > round_number and current.status is RoundStatus.REQUESTED:
            return {"state": scan.state.value, "round": current.number, "requested": current.requested,
                    "planes": current.planes, "request": str(camp.workspace.requests_dir(case_id, current.number))}
        if time.monotonic() > deadline:
            raise TimeoutError(f"round {round_number} of {case_id!r} was not processed within {timeout:.0f} s")
        time.sleep(0.1)
