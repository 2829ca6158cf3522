"""The benchmarks' campaign driver: a campaign config's scans run through the product's one round, in memory.

A benchmark configuration is a campaign config (``configs/demo.yaml`` for DIL's method, ``configs/demo-paper.yaml``
for the paper's, with overrides); each scan is read and prepared as ``dil`` queues it
(:func:`dil_core.params.scan_preprocessing`), its session is built from the config by
:func:`dil_core.params.session_params`, the segmenter by :func:`dil_core.params.make_trainer`, and the stream
runs with :func:`dil_core.stream.run_stream`: the same :mod:`dil_core.round` calls, in the same order and with
the same per-round randomness, as ``dil campaign run``. ``tests/bench/test_same_round.py`` checks that both
give the same slices, labor and masks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dil_core.config import CampaignConfig, parse_config
from dil_core.io import read_label, read_scan
from dil_core.labor import target_slice_counts
from dil_core.methods import get_method
from dil_core.params import make_trainer, scan_preprocessing, session_params
from dil_core.planes import axis_of
from dil_core.preprocess import Preprocessing, segmenter_input, to_grid
from dil_core.session import ScanSession
from dil_core.stream import ScanOutcome, run_stream, simulated
from dil_core.training import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

__all__ = ["CampaignCase", "bench_config", "campaign_case", "run_campaign"]


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def bench_config(base: str, overrides: Mapping[str, Any] | None = None) -> CampaignConfig:
    """A campaign config from ``configs/<base>.yaml`` with nested ``overrides`` (validated as ``dil`` does).

    The cohort and workspace are placeholders: the benchmark brings its own scans and keeps nothing on disk.
    """
    data = yaml.safe_load((CONFIGS / f"{base}.yaml").read_text(encoding="utf-8"))
    data = _merge(data, {"cohort": "unused.csv", "workspace": "unused", **(overrides or {})})
    return parse_config(data, source=f"configs/{base}.yaml with overrides")


@dataclass
class CampaignCase:
    """One scan as the product reads it: the image as stored, binary ground truth, the product's grid."""

    case_id: str
    image: np.ndarray
    gt: np.ndarray
    spacing: tuple[float, float, float]
    geometry: Any
    prep: Preprocessing
    image_grid: np.ndarray
    gt_grid: np.ndarray

    @property
    def targets(self) -> dict[int, int]:
        return target_slice_counts(self.gt)

    @property
    def axes(self) -> tuple[int, int]:
        """The (coronal, sagittal) array axes, from the image's direction cosines."""
        return axis_of("coronal", self.geometry), axis_of("sagittal", self.geometry)


def campaign_case(case_id: str, image: Path, label: Path, config: CampaignConfig) -> CampaignCase:
    """Read a scan and its ground truth and prepare it exactly as ``dil`` queues a scan."""
    scan = read_scan(image)
    gt_arr, _ = read_label(label)
    gt = (np.asarray(gt_arr) > 0).astype(np.uint8)
    prep = scan_preprocessing(scan.array, config.training)
    return CampaignCase(
        case_id=case_id,
        image=scan.array,
        gt=gt,
        spacing=tuple(float(s) for s in scan.geometry.spacing),  # type: ignore[arg-type]
        geometry=scan.geometry,
        prep=prep,
        image_grid=segmenter_input(prep, scan.array),
        gt_grid=to_grid(prep, gt.astype(np.float32), order=1).astype(np.float32),
    )


def _session(case: CampaignCase, config: CampaignConfig, position: int) -> ScanSession:
    axes = tuple(axis_of(p, case.geometry) for p in config.guidance.planes)
    return ScanSession(
        case.image, preprocessing=case.prep, params=session_params(config, axes), spacing=case.spacing,
        case_id=case.case_id, position=position, seed=position < config.stopping.seed_scans,
    )


def run_campaign(
    cases: Sequence[CampaignCase],
    config: CampaignConfig,
    *,
    trainer: Trainer | None = None,
    on_scan: Callable[[ScanOutcome], None] | None = None,
    physician: Callable[[int, int], None] | None = None,
) -> tuple[list[ScanOutcome], Trainer]:
    """Run the cases as one simulated campaign of ``config`` (queue positions 0, 1, ... in the given order).

    ``physician`` is told ``(reviews, slices)`` as the simulated physician works (``dil_core.stream.run_scan``).
    """
    trainer = trainer or make_trainer(config.training)
    s = config.stopping
    items = (
        simulated(_session(c, config, i), c.gt, s.rho_seed if i < s.seed_scans else s.rho,
                  knows_extent=config.annotator.knows_extent)
        for i, c in enumerate(cases)
    )
    outcomes = run_stream(items, get_method(config.method), trainer, seed=config.training.seed, on_scan=on_scan,
                          physician=physician)
    return outcomes, trainer
