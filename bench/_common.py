"""Shared pieces of the sec-3 benchmarks: hippocampus cohort, splits, segmenter, evaluation, JSON/markdown out.

Every benchmark runs on ``../shared/data/hippocampus`` (``DIL_SHARED_DATA`` overrides the root) and exits 0
with a "skipped" JSON where it is absent. Images are z-scored per scan (:func:`dil_core.preprocess.normalise`)
before they reach the segmenter; foreground is ``label > 0``. The two drawn planes are coronal and sagittal
(the paper's C+S), found from each image's direction cosines.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("DIL_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "bench" / "results"

import numpy as np
import torch

torch.set_num_threads(1)

from dil_core.io import read_label, read_scan
from dil_core.metrics import dice
from dil_core.models import build_segmenter, predict
from dil_core.planes import axis_of
from dil_core.preprocess import (
    Preprocessing,
    fit_preprocessor,
    from_grid,
    normalise,
    to_grid,
)
from dil_core.replay import ReplayBuffer
from dil_core.training import Trainer

HIPPO = SHARED / "hippocampus"


@dataclass
class Case:
    """One hippocampus scan, ready for every benchmark."""

    case_id: str
    image: np.ndarray  # (X, Y, Z) float32, z-scored
    gt: np.ndarray  # (X, Y, Z) uint8, binary
    spacing: tuple[float, float, float]
    axes: tuple[int, int]  # (coronal, sagittal) array axes
    prep: Preprocessing
    image_grid: np.ndarray
    gt_grid: np.ndarray


def data_available(dataset: str = "hippocampus") -> bool:
    """Whether ``../shared/data/<dataset>`` holds its images and labels (it is absent on a user's machine)."""
    root = SHARED / dataset
    return (root / "images").is_dir() and (root / "labels").is_dir()


def case_ids() -> list[str]:
    return sorted(
        p.name.replace(".nii.gz", "") for p in (HIPPO / "images").glob("*.nii.gz")
    )


def load_case(case_id: str, grid: tuple[int, int, int]) -> Case:
    scan = read_scan(HIPPO / "images" / f"{case_id}.nii.gz")
    label, _ = read_label(HIPPO / "labels" / f"{case_id}.nii.gz")
    image = normalise(scan.array)
    gt = (np.asarray(label) > 0).astype(np.uint8)
    axes = (axis_of("coronal", scan.geometry), axis_of("sagittal", scan.geometry))
    prep = fit_preprocessor(image, grid=grid, margin=4)
    return Case(
        case_id=case_id,
        image=image,
        gt=gt,
        spacing=tuple(float(s) for s in scan.geometry.spacing),  # type: ignore[arg-type]
        axes=axes,  # type: ignore[arg-type]
        prep=prep,
        image_grid=to_grid(prep, image, order=1).astype(np.float32),
        gt_grid=to_grid(prep, gt.astype(np.float32), order=1).astype(np.float32),
    )


def splits(n_eval: int, n_stream: int, *, seed: int = 0) -> tuple[list[str], list[str]]:
    """A fixed evaluation split and a training pool, disjoint, from one seeded permutation of the case ids."""
    ids = case_ids()
    perm = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    if n_eval + n_stream > len(perm):
        raise ValueError(f"need {n_eval} + {n_stream} scans, have {len(perm)}")
    return perm[:n_eval], perm[n_eval : n_eval + n_stream]


def make_trainer(
    channels: tuple[int, ...],
    *,
    seed: int,
    b: int = 8,
    b_star: int = 16,
    lr: float = 1e-3,
) -> Trainer:
    model = build_segmenter("unet", channels=channels, seed=seed)
    return Trainer(
        model,
        ReplayBuffer(b, b_star, rng=seed + 1),
        lr=lr,
        device="cpu",
        rng=seed + 2,
        amp=False,
    )


def predict_case(model: torch.nn.Module, case: Case, *, flips: bool = False) -> np.ndarray:
    """``F(X)`` in the scan's own geometry (soft, float32); ``flips``: test-time flips."""
    return from_grid(case.prep, predict(model, case.image_grid, flips=flips), order=1).astype(
        np.float32
    )


def evaluate(model: torch.nn.Module, cases: list[Case], *, flips: bool = False) -> list[float]:
    """Dice(ground truth, F(X) >= 0.5) per case, in each scan's own geometry."""
    return [dice(c.gt, predict_case(model, c, flips=flips) >= 0.5) for c in cases]


def stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {
            "mean": float("nan"),
            "std": float("nan"),
            "min": float("nan"),
            "max": float("nan"),
            "n": 0,
        }
    return {
        "mean": float(a.mean()),
        "std": float(a.std()),
        "min": float(a.min()),
        "max": float(a.max()),
        "n": int(a.size),
    }


def device_line() -> str:
    return f"CPU ({os.cpu_count()} cores, shared), torch {torch.__version__}, 1 thread, {platform.machine()}"


def write_outputs(
    name: str, payload: dict[str, Any], markdown: str, *, out_dir: Path | None = None
) -> tuple[Path, Path]:
    folder = Path(out_dir) if out_dir is not None else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    jpath = folder / f"{name}.json"
    mpath = folder / f"{name}.md"
    jpath.write_text(json.dumps(payload, indent=1, default=_jsonable), encoding="utf-8")
    mpath.write_text(markdown, encoding="utf-8")
    return jpath, mpath


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def skipped(name: str, out_dir: Path | None, dataset: str = "hippocampus") -> int:
    """Write the benchmark's outputs as skipped, naming the dataset that is not there; exit status 0."""
    reason = f"{dataset} data not found at {SHARED / dataset}"
    write_outputs(name, {"skipped": reason}, f"# {name}\n\nskipped: no data\n", out_dir=out_dir)
    print(f"skipped: {reason}")
    return 0


class Clock:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return round(time.perf_counter() - self.t0, 1)


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
