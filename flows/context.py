"""Campaign state between rounds: rebuilt from the ledger and the workspace, never held for a human.

The ledger is the one source of truth. A scan's session (drawn slices and their labels) is rebuilt from its
stored submissions with :func:`dil_core.round.restore`; the segmenter and replay buffer come from the
checkpoint the ledger names as the newest. A long-lived process (the round service, a worker) keeps one
context per workspace (:func:`open_context`) with its sessions, scans and segmenter warm; it checks each
against the ledger before use, so a restarted process and a long-lived one compute the same thing.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dil_core import round as one_round
from dil_core.config import CampaignConfig, load_config
from dil_core.geometry import Geometry
from dil_core.io import read_label, read_scan
from dil_core.labor import target_slice_counts
from dil_core.ledger import Ledger
from dil_core.ledger.records import RoundStatus, ScanRecord
from dil_core.methods import Method, check_config
from dil_core.params import make_trainer, scan_preprocessing, session_params
from dil_core.planes import axis_of
from dil_core.preprocess import Preprocessing
from dil_core.session import ScanSession, SessionParams
from dil_core.training import Trainer
from dil_core.workspace import Workspace
from flows.hooks import Tracking, tracking_for

__all__ = ["CampaignContext", "ScanData", "open_context"]


def _atomic_save(path: Path, write: Any, suffix: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class ScanData:
    """A scan loaded from disk: image, geometry, preprocessing, optional ground truth."""

    record: ScanRecord
    image: np.ndarray
    geometry: Geometry
    preprocessing: Preprocessing
    ground_truth: np.ndarray | None


@dataclass
class CampaignContext:
    """Everything a round needs, loaded from one workspace."""

    workspace: Workspace
    config: CampaignConfig
    ledger: Ledger
    campaign_id: int
    method: Method
    tracking: Tracking | None = None
    _sessions: dict[int, ScanSession] = field(default_factory=dict)
    _scans: dict[int, ScanData] = field(default_factory=dict)
    _trainer: Trainer | None = None
    _trainer_tag: str | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)

    # -- opening ---------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path) -> CampaignContext:
        ws = Workspace(Path(root).resolve())
        if not ws.exists():
            raise FileNotFoundError(f"{ws.root} is not a DIL workspace (no {ws.config_file.name}); run `dil init` first")
        cfg = load_config(ws.config_file)
        ledger = Ledger.open(cfg.tracking.ledger_url or ws.ledger_url, create=False)
        campaign = ledger.get_campaign(cfg.name)
        ctx = cls(ws, cfg, ledger, campaign.id, check_config(cfg))
        ctx.tracking = tracking_for(ctx)
        return ctx

    # -- ledger queries the rounds need -----------------------------------------------------------------------
    def scan(self, case_id: str) -> ScanRecord:
        scan = self.ledger.find_scan(self.campaign_id, case_id)
        if scan is None:
            raise LookupError(f"campaign {self.config.name!r} has no scan {case_id!r}")
        return scan

    def submissions(self, scan: ScanRecord, round_id: int | None = None) -> list[Any]:
        subs = self.ledger.list_submissions(scan.id)
        return [s for s in subs if round_id is None or s.round_id == round_id]

    def processed_rounds(self, scan: ScanRecord) -> list[Any]:
        return [r for r in self.ledger.list_rounds(scan.id) if r.status is RoundStatus.PROCESSED]

    def latest_model_tag(self) -> str | None:
        """The newest segmenter checkpoint the ledger names (None on a cold start)."""
        return self.ledger.latest_model_tag(self.campaign_id)

    # -- parameters -----------------------------------------------------------------------------------------
    def is_seed(self, scan: ScanRecord) -> bool:
        """One of the first ``stopping.seed_scans`` scans of the cohort (labeled to ``rho_seed``, no prediction)."""
        return scan.position < self.config.stopping.seed_scans

    def rho_for(self, scan: ScanRecord) -> float:
        """The bar this scan's mask must pass."""
        s = self.config.stopping
        return s.rho_seed if self.is_seed(scan) else s.rho

    def axes(self, geometry: Geometry) -> tuple[int, ...]:
        return tuple(axis_of(p, geometry) for p in self.config.guidance.planes)

    def params(self, geometry: Geometry) -> SessionParams:
        return session_params(self.config, self.axes(geometry))

    # -- scans ----------------------------------------------------------------------------------------------
    def scan_data(self, scan: ScanRecord) -> ScanData:
        if scan.id not in self._scans:
            loaded = read_scan(scan.image_path)
            prep = (
                Preprocessing.from_dict(scan.preprocessing)
                if scan.preprocessing
                else scan_preprocessing(loaded.array, self.config.training)
            )
            gt = None
            if scan.ground_truth_path:
                gt_arr, _ = read_label(scan.ground_truth_path)
                gt = (gt_arr > 0).astype(np.uint8)
            self._scans[scan.id] = ScanData(scan, loaded.array, loaded.geometry, prep, gt)
        return self._scans[scan.id]

    def target_slices(self, scan: ScanRecord, data: ScanData) -> dict[int, int]:
        """Target slice counts per axis (eq. 3): from ground truth when known, else from the scan's mask."""
        if scan.target_slices:
            return dict(scan.target_slices)
        if data.ground_truth is not None:
            return target_slice_counts(data.ground_truth)
        return {a: data.image.shape[a] for a in range(3)}

    def previous_prediction_path(self, scan: ScanRecord) -> Path:
        return self.workspace.state_dir(scan.case_id) / "f_prev.npy"

    def scan_model_tag(self, scan: ScanRecord) -> str | None:
        """The checkpoint the scan's ``F_prev`` came from (None: a cold start, or not started)."""
        path = self.workspace.state_dir(scan.case_id) / "f_prev.json"
        try:
            return json.loads(path.read_text(encoding="utf-8")).get("segmenter")
        except (OSError, ValueError):
            return None

    def save_scan_model_tag(self, scan: ScanRecord, tag: str | None) -> None:
        path = self.workspace.state_dir(scan.case_id) / "f_prev.json"
        _atomic_save(path, lambda tmp: Path(tmp).write_text(json.dumps({"segmenter": tag}), encoding="utf-8"), ".json")

    def prediction_path(self, scan: ScanRecord, round_number: int) -> Path:
        return self.workspace.state_dir(scan.case_id) / f"prediction-r{round_number}.npy"

    def new_session(self, scan: ScanRecord) -> ScanSession:
        """A fresh session of the scan (nothing started, nothing drawn)."""
        data = self.scan_data(scan)
        return ScanSession(
            data.image,
            preprocessing=data.preprocessing,
            params=self.params(data.geometry),
            spacing=data.geometry.spacing,
            case_id=scan.case_id,
            position=scan.position,
            seed=self.is_seed(scan),
        )

    def session(self, scan: ScanRecord) -> ScanSession:
        """The scan's session with every processed round applied, rebuilt from the ledger when not cached.

        A scan with no request yet has a fresh, not started session.
        """
        rounds = self.processed_rounds(scan)
        subs_of: dict[int, list[Any]] = {}
        for sub in self.submissions(scan):
            subs_of.setdefault(sub.round_id, []).append(sub)
        labeled = [r for r in rounds if subs_of.get(r.id)]  # a round closed by an accept brought no labels
        opened = bool(rounds) or self.ledger.current_round(scan.id) is not None
        cached = self._sessions.get(scan.id)
        if cached is not None and cached.rounds == len(labeled) and cached.started == opened:
            return cached
        session = self.new_session(scan)
        if opened:
            fprev = self.previous_prediction_path(scan)
            stored = [
                [((read_label(sub.stored_path)[0] > 0).astype(np.uint8), sub.drawn) for sub in subs_of[r.id]]
                for r in labeled
            ]
            pred = self.prediction_path(scan, labeled[-1].number) if labeled else None
            one_round.restore(
                session,
                previous_prediction=np.load(fprev) if fprev.is_file() else None,
                rounds=stored,
                prediction_grid=np.load(pred) if pred is not None and pred.is_file() else None,
                ends_asked={a for r in labeled for a in r.ends},
            )
        self._sessions[scan.id] = session
        return session

    def keep_session(self, scan: ScanRecord, session: ScanSession) -> None:
        self._sessions[scan.id] = session

    def save_array(self, path: Path, array: np.ndarray | None) -> None:
        if array is not None:
            _atomic_save(path, lambda tmp: np.save(tmp, array), ".npy")

    def forget(self, scan_id: int) -> None:
        self._sessions.pop(scan_id, None)
        self._scans.pop(scan_id, None)

    # -- the segmenter --------------------------------------------------------------------------------------
    def trainer(self) -> Trainer:
        """The segmenter as the newest checkpoint in the ledger left it (a fresh one on a cold start)."""
        tag = self.latest_model_tag()
        if self._trainer is not None and self._trainer_tag == tag:
            return self._trainer
        trainer = self.load_trainer(tag)
        self._trainer, self._trainer_tag = trainer, tag
        return trainer

    @property
    def trainer_tag(self) -> str | None:
        """The checkpoint :meth:`trainer` last returned (None: fresh)."""
        return self._trainer_tag

    def load_trainer(self, tag: str | None) -> Trainer:
        """A trainer from checkpoint ``tag`` (a fresh, seeded one for None), not shared with the context."""
        trainer = make_trainer(self.config.training)
        if tag is not None:
            state = torch.load(self.workspace.checkpoint(tag), map_location="cpu", weights_only=False)
            trainer.load_state_dict(state)
        return trainer

    def drop_trainer(self) -> None:
        """Forget the segmenter in memory (after a failed round): the next :meth:`trainer` loads it again."""
        self._trainer, self._trainer_tag = None, None

    def save_trainer(self, trainer: Trainer, tag: str, *, cache: bool = True) -> None:
        """Write the checkpoint of ``tag`` before the ledger names it (crash: an orphan file, no loss).

        ``cache`` keeps ``trainer`` as the context's segmenter for ``tag`` (a learner in another thread passes
        False: the next :meth:`trainer` call loads the checkpoint).
        """
        _atomic_save(self.workspace.checkpoint(tag), lambda tmp: torch.save(trainer.state_dict(), tmp), ".pt")
        if cache:
            self._trainer, self._trainer_tag = trainer, tag

    def prune_checkpoints(self, keep: str) -> None:
        """Delete trainer checkpoints other than ``keep``, once the ledger names ``keep`` as the newest.

        Only the newest checkpoint is ever read back (a round processed again starts from it); the segmenter
        versions that learned from finished scans are kept by the model registry.
        """
        folder = self.workspace.checkpoint(keep).parent
        if not self.workspace.checkpoint(keep).is_file():
            return
        for path in folder.glob("trainer-*.pt"):
            if path.name != self.workspace.checkpoint(keep).name:
                path.unlink(missing_ok=True)


_OPEN: dict[Path, CampaignContext] = {}
_OPEN_LOCK = threading.Lock()


def open_context(workspace: str | os.PathLike[str]) -> CampaignContext:
    """The process's context of a workspace, opened once and kept warm (what long-lived processes use)."""
    root = Path(workspace).resolve()
    with _OPEN_LOCK:
        if root not in _OPEN:
            _OPEN[root] = CampaignContext.open(root)
        return _OPEN[root]
