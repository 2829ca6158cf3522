"""The tasks of a retraining: load the finished scans, train a fresh segmenter offline, evaluate it.

Each wraps ``dil_core`` calls; the flow is :func:`flows.retrain.retrain_flow`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NONE

from dil_core.workspace import Workspace

__all__ = ["RetrainSample", "evaluate_task", "image_on_grid", "load_samples_task", "split_cases", "train_offline_task"]


@dataclass(frozen=True)
class RetrainSample:
    """One finished scan on the working grid, with the full-resolution target to measure Dice against.

    Attributes
    ----------
    case_id : str
    image_grid : (gx, gy, gz) ndarray
        The scan on the segmenter's grid, exactly as the online rounds see it.
    target_grid : (gx, gy, gz) ndarray
        The final mask (training scans) on the grid, soft after linear resampling.
    target : (X, Y, Z) ndarray of uint8
        Validation target in the scan's geometry: ground truth where known, else the accepted final mask.
    target_kind : {"ground_truth", "final_mask"}
    preprocessing : dil_core.preprocess.Preprocessing
    """

    case_id: str
    image_grid: np.ndarray
    target_grid: np.ndarray
    target: np.ndarray
    target_kind: str
    preprocessing: Any


def split_cases(case_ids: Sequence[str], *, val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split finished scans into training and validation cases (seeded; at least one of each).

    Parameters
    ----------
    case_ids : sequence of str
        At least two distinct case ids (their order does not matter).
    val_fraction : float
        Share of validation cases in (0, 1); rounded, then clipped to ``[1, n - 1]``.
    seed : int
        Same cases and seed, same split.

    Returns
    -------
    (train, val) : lists of str, each sorted

    Raises
    ------
    ValueError
        Fewer than two distinct cases, or ``val_fraction`` outside (0, 1).
    """
    cases = sorted(set(case_ids))
    if len(cases) < 2:
        raise ValueError(f"case_ids: retraining needs at least 2 finished scans (one to validate on), got {len(cases)}")
    if isinstance(val_fraction, bool) or not (isinstance(val_fraction, int | float) and 0.0 < val_fraction < 1.0):
        raise ValueError(f"val_fraction: must lie strictly between 0 and 1, got {val_fraction!r}")
    n_val = min(max(1, round(val_fraction * len(cases))), len(cases) - 1)
    order = np.random.default_rng(seed).permutation(len(cases))
    val = sorted(cases[i] for i in order[:n_val])
    train = sorted(cases[i] for i in order[n_val:])
    return train, val


# ---------------------------------------------------------------------------------------------------- tasks
def image_on_grid(image: np.ndarray, preprocessing: Any) -> np.ndarray:
    """The segmenter's input for a scan: the same as ``dil_core.session.ScanSession.image_grid``."""
    from dil_core.preprocess import segmenter_input

    return segmenter_input(preprocessing, image)


@task(name="retrain-load", cache_policy=NONE, retries=1, tags=["io"])
def load_samples_task(workspace: str, case_ids: Sequence[str]) -> list[RetrainSample]:
    """Read each finished scan, its final mask and its ground truth, and put them on the working grid."""
    from dil_core.config import load_config
    from dil_core.io import read_label, read_scan
    from dil_core.ledger import Ledger
    from dil_core.params import scan_preprocessing
    from dil_core.preprocess import Preprocessing, to_grid

    ws = Workspace(Path(workspace))
    cfg = load_config(ws.config_file)
    ledger = Ledger.open(cfg.tracking.ledger_url or ws.ledger_url, create=False)
    try:
        campaign = ledger.get_campaign(cfg.name)
        samples = []
        for case in case_ids:
            scan = ledger.find_scan(campaign.id, case)
            if scan is None or not scan.final_mask_path:
                raise LookupError(f"campaign {cfg.name!r} has no finished scan {case!r} with a final mask")
            image = read_scan(scan.image_path).array
            prep = (
                Preprocessing.from_dict(scan.preprocessing)
                if scan.preprocessing
                else scan_preprocessing(image, cfg.training)
            )
            final, _ = read_label(scan.final_mask_path)
            final = (final > 0).astype(np.uint8)
            if final.shape != image.shape:
                raise ValueError(f"final mask of {case!r} has shape {final.shape}, the scan {image.shape}")
            gt = None
            if scan.ground_truth_path:
                gt_arr, _ = read_label(scan.ground_truth_path)
                gt = (gt_arr > 0).astype(np.uint8)
            samples.append(
                RetrainSample(
                    case_id=case,
                    image_grid=image_on_grid(image, prep),
                    target_grid=np.clip(to_grid(prep, final.astype(np.float32), order=1), 0.0, 1.0),
                    target=gt if gt is not None else final,
                    target_kind="ground_truth" if gt is not None else "final_mask",
                    preprocessing=prep,
                )
            )
        return samples
    finally:
        ledger.close()


@task(name="retrain-train", cache_policy=NONE, tags=["gpu"])
def train_offline_task(
    samples: Sequence[RetrainSample],
    *,
    segmenter: str,
    channels: Sequence[int],
    learning_rate: float,
    epochs: int,
    device: str,
    seed: int,
    patch: Sequence[int] | None = None,
) -> tuple[Any, list[float]]:
    """Train a fresh segmenter on the samples' final masks (:func:`dil_core.training.train_offline`)."""
    from dil_core.models import build_segmenter
    from dil_core.training import train_offline

    model = build_segmenter(segmenter, channels=channels, seed=seed, patch=patch)
    return train_offline(
        model, [(s.image_grid, s.target_grid) for s in samples], learning_rate=learning_rate, epochs=epochs,
        device=device, seed=seed,
    )


@task(name="retrain-evaluate", cache_policy=NONE, tags=["gpu"])
def evaluate_task(model: Any, samples: Sequence[RetrainSample]) -> dict[str, float]:
    """Dice of the model's thresholded prediction against each validation target, in the scan's geometry."""
    from dil_core.metrics import dice
    from dil_core.models import predict
    from dil_core.preprocess import from_grid

    out = {}
    for s in samples:
        prob = predict(model, s.image_grid)
        mask = from_grid(s.preprocessing, prob, order=1, threshold=0.5)
        out[s.case_id] = float(dice(s.target, mask))
    return out
