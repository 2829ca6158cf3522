"""Campaign state between rounds: rebuilt from the ledger and the workspace, never held for a human.

The ledger is the one source of truth. A scan's session (drawn slices and their labels) is rebuilt from its
stored submissions; the segmenter and replay buffer come from the checkpoint the ledger names as current. A
process may keep both in memory between rounds; it checks them against the ledger before use, so a restarted
process and a long-lived one compute the same thing.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dil_core.config import CampaignConfig, load_config
from dil_core.geometry import Geometry
from dil_core.io import read_label, read_scan
from dil_core.labor import target_slice_counts
from dil_core.ledger import Ledger, store_submission_file
from dil_core.ledger.records import RoundStatus, ScanRecord
from dil_core.models import build_segmenter, resolve_device
from dil_core.planes import axis_of
from dil_core.preprocess import Preprocessing, fit_preprocessor
from dil_core.replay import ReplayBuffer
from dil_core.session import ScanSession, SessionParams
from dil_core.training import Trainer
from dil_core.validation import SubmissionContent
from dil.workspace import Workspace

__all__ = ["CampaignContext", "round_rng"]


def round_rng(seed: int, scan_id: int, round_number: int) -> np.random.Generator:
    """The randomness of one round, derived from (seed, scan, round) alone, so a resumed run repeats it."""
    return np.random.default_rng([seed, scan_id, round_number])


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(obj, tmp)
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
    _sessions: dict[int, ScanSession] = field(default_factory=dict)
    _scans: dict[int, ScanData] = field(default_factory=dict)
    _trainer: Trainer | None = None
    _trainer_tag: str | None = None

    # -- opening ---------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path) -> CampaignContext:
        ws = Workspace(Path(root).resolve())
        if not ws.exists():
            raise FileNotFoundError(f"{ws.root} is not a DIL workspace (no {ws.config_file.name}); run `dil init` first")
        cfg = load_config(ws.config_file)
        ledger = Ledger.open(cfg.tracking.ledger_url or ws.ledger_url, create=False)
        campaign = ledger.get_campaign(cfg.name)
        return cls(ws, cfg, ledger, campaign.id)

    # -- ledger queries the rounds need -----------------------------------------------------------------------
    def scan(self, case_id: str) -> ScanRecord:
        scan = self.ledger.find_scan(self.campaign_id, case_id)
        if scan is None:
            raise LookupError(f"campaign {self.config.name!r} has no scan {case_id!r}")
        return scan

    def submissions(self, scan: ScanRecord, round_id: int | None = None) -> list[Any]:
        subs = self.ledger.list_submissions(scan.id)
        return [s for s in subs if round_id is None or s.round_id == round_id]

    def latest_model_tag(self) -> str | None:
        """The checkpoint named by the most recently processed round of the campaign (None on a cold start)."""
        latest = None
        for scan in self.ledger.list_scans(self.campaign_id):
            for r in self.ledger.list_rounds(scan.id):
                if r.status is RoundStatus.PROCESSED and r.model_version and (
                    latest is None or (r.processed_at, r.id) > (latest.processed_at, latest.id)
                ):
                    latest = r
        return None if latest is None else latest.model_version

    def slices_by_plane(self, scan: ScanRecord) -> dict[str, int]:
        out: dict[str, int] = {}
        planes = {}
        for r in self.ledger.list_rounds(scan.id):
            planes.update(r.planes)
        for sub in self.submissions(scan):
            for axis, idx in sub.drawn.items():
                name = planes.get(axis, f"axis {axis}")
                out[name] = out.get(name, 0) + len(idx)
        return out

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
        c = self.config
        return SessionParams(
            axes=self.axes(geometry),
            tau=c.guidance.tau,
            quota_gamma=c.stopping.quota_gamma,
            n_inter=c.stopping.n_inter,
            rho=c.stopping.rho,
            backend=c.propagation.backend,
            strategy=c.guidance.strategy,
            first_round=c.guidance.first_round,
            w1=c.guidance.w1,
            n_f=c.training.n_f,
            lambda_l=c.training.lambda_l,
            lambda_y=c.training.lambda_y,
            m=c.training.replay_m,
            weight_scheme=c.training.weight_scheme,
            omega=c.training.omega,
            weight_length=c.training.weight_length,
            weight_floor=c.training.weight_floor,
            final_mask=c.final_mask,
            method=c.method,
            blend_scale=c.refine.blend_scale,
            end_steps=c.refine.end_steps,
            resample_every=c.refine.resample_every,
            trust=c.refine.trust,
            set_aside=c.refine.set_aside,
            fallback_after=c.refine.fallback_after,
            correction_length=c.refine.correction_length,
            spread=c.refine.spread,
            flips=c.training.test_time_flips,
        )

    # -- scans ----------------------------------------------------------------------------------------------
    def scan_data(self, scan: ScanRecord) -> ScanData:
        if scan.id not in self._scans:
            loaded = read_scan(scan.image_path)
            prep = (
                Preprocessing.from_dict(scan.preprocessing)
                if scan.preprocessing
                else fit_preprocessor(loaded.array, grid=self.config.training.grid)
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
        session = self._sessions.get(scan.id)
        if session is not None and session.proxy is not None:
            return {a: max(n, 1) for a, n in target_slice_counts(session.mask()).items()}
        return {a: data.image.shape[a] for a in range(3)}

    def previous_prediction_path(self, scan: ScanRecord) -> Path:
        return self.workspace.state_dir(scan.case_id) / "f_prev.npy"

    def session(self, scan: ScanRecord, *, upto_round: int | None = None) -> ScanSession:
        """The scan's session with every processed round applied (rounds < ``upto_round`` if given)."""
        data = self.scan_data(scan)
        rounds = [r for r in self.ledger.list_rounds(scan.id) if r.status is RoundStatus.PROCESSED]
        if upto_round is not None:
            rounds = [r for r in rounds if r.number < upto_round]
        cached = self._sessions.get(scan.id)
        if cached is not None and cached.rounds == len(rounds):
            return cached
        fprev_path = self.previous_prediction_path(scan)
        previous = np.load(fprev_path) if fprev_path.is_file() else None
        session = ScanSession(
            data.image,
            preprocessing=data.preprocessing,
            params=self.params(data.geometry),
            previous_prediction=previous,
            spacing=data.geometry.spacing,
            case_id=scan.case_id,
        )
        refine = self.config.method == "refine"
        if refine and previous is not None:
            session.set_prediction(previous)  # refine: the prediction is F_prev(X) for the whole scan
        for r in rounds:
            for sub in self.submissions(scan, r.id):
                labels, _ = read_label(sub.stored_path)
                session.add_labels((labels > 0).astype(np.uint8), sub.drawn)
            session.rounds += 1
        if session.n_drawn:
            session.update_proxy()
        if rounds and not refine:
            if self.trainer_tag_for(rounds[-1]) is not None:
                pred_path = self.workspace.state_dir(scan.case_id) / f"prediction-r{rounds[-1].number}.npy"
                if pred_path.is_file():
                    session.set_prediction(np.load(pred_path))
        self._sessions[scan.id] = session
        return session

    def save_prediction(self, scan: ScanRecord, round_number: int, prediction_grid: np.ndarray) -> None:
        folder = self.workspace.state_dir(scan.case_id)
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_np_save(folder / f"prediction-r{round_number}.npy", prediction_grid)

    def save_previous_prediction(self, scan: ScanRecord, prediction_grid: np.ndarray | None) -> None:
        if prediction_grid is None:
            return
        path = self.previous_prediction_path(scan)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_np_save(path, prediction_grid)

    # -- the segmenter --------------------------------------------------------------------------------------
    @staticmethod
    def trainer_tag_for(round_record: Any) -> str | None:
        return getattr(round_record, "model_version", None)

    def _new_trainer(self) -> Trainer:
        t = self.config.training
        model = build_segmenter(t.segmenter, channels=t.channels, seed=t.seed)
        buffer = ReplayBuffer(t.buffer_b, t.buffer_b_star, rng=t.seed)
        return Trainer(model, buffer, lr=t.learning_rate, device=resolve_device(t.device), rng=t.seed)

    def trainer(self) -> Trainer:
        """The segmenter as the last processed round left it (a fresh one on a cold start)."""
        tag = self.latest_model_tag()
        if self._trainer is not None and self._trainer_tag == tag:
            return self._trainer
        trainer = self._new_trainer()
        if tag is not None:
            state = torch.load(self.workspace.checkpoint(tag), map_location="cpu", weights_only=False)
            trainer.load_state_dict(state)
        self._trainer, self._trainer_tag = trainer, tag
        return trainer

    def has_trained(self) -> bool:
        return self.latest_model_tag() is not None

    def save_trainer(self, trainer: Trainer, tag: str) -> None:
        """Write the checkpoint of ``tag`` before the ledger names it current (crash: an orphan file, no loss)."""
        _atomic_torch_save(trainer.state_dict(), self.workspace.checkpoint(tag))
        self._trainer, self._trainer_tag = trainer, tag

    def prune_checkpoints(self, keep: str) -> None:
        """Delete trainer checkpoints other than ``keep``, once the ledger names ``keep`` as current.

        Only the current checkpoint is ever read back (a resumed round starts from it); the segmenter versions
        that finished scans are kept by the model registry.
        """
        folder = self.workspace.checkpoint(keep).parent
        for path in folder.glob("trainer-*.pt"):
            if path.name != self.workspace.checkpoint(keep).name:
                path.unlink(missing_ok=True)

    def forget(self, scan_id: int) -> None:
        self._sessions.pop(scan_id, None)

    # -- submissions ----------------------------------------------------------------------------------------
    def store_file(self, scan: ScanRecord, src: Path) -> tuple[str, Path]:
        """Copy a label file into the workspace, content-addressed, atomically; returns (sha256, path)."""
        return store_submission_file(src, self.workspace.submissions_dir(scan.case_id))


def _atomic_np_save(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
    os.close(fd)
    try:
        np.save(tmp, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def labor_rows(content: SubmissionContent, targets: dict[int, int], planes: dict[int, str]) -> list[dict[str, Any]]:
    """Labor per plane of one submission: drawn slices (requested-empty ones included: they were reviewed)."""
    rows = []
    for axis, labeled in content.labeled.items():
        n = len(labeled)
        if n:
            rows.append({"axis": axis, "plane": planes[axis], "slices": n, "fraction": n / max(targets.get(axis, 1), 1)})
    return rows
