"""Small sessions for the round tests: a noisy sphere, its preprocessing, parameters from a config."""

from __future__ import annotations

from typing import Any

import numpy as np

from dil_core.config import CampaignConfig, parse_config
from dil_core.models import build_segmenter
from dil_core.params import session_params
from dil_core.preprocess import fit_preprocessor
from dil_core.replay import ReplayBuffer
from dil_core.session import ScanSession, SessionParams
from dil_core.training import Trainer


def sphere(shape=(24, 24, 24), radius=7.0, seed=0) -> tuple[np.ndarray, np.ndarray]:
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = [(s - 1) / 2 for s in shape]
    gt = ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= radius**2).astype(np.uint8)
    rng = np.random.default_rng(seed)
    image = (100 + 80 * gt + rng.normal(0, 10, shape)).astype(np.float32)
    return image, gt


def config(**sections: Any) -> CampaignConfig:
    """A campaign config with the project's defaults and the given sections (nested dicts) changed."""
    return parse_config({"name": "t", "cohort": "c.csv", "workspace": "w", **sections})


def params(axes: tuple[int, ...], **sections: Any) -> SessionParams:
    return session_params(config(**sections), axes)


REFINE = {
    "method": "refine",
    "stopping": {"quota_gamma": 24, "n_inter": 24},
    "guidance": {"strategy": "refine", "first_round": "bisect"},
    "propagation": {"backend": "sdf-aligned"},
    "training": {"replay_m": 1, "lambda_l": 0.5, "weight_scheme": "none", "buffer_b": 2, "buffer_b_star": 4},
    "refine": {"end_steps": 60, "resample_every": 4},
}


def refine_params(axes: tuple[int, ...] = (0,), **changes: Any) -> SessionParams:
    sections = {k: (dict(v) if isinstance(v, dict) else v) for k, v in REFINE.items()}
    for key, value in changes.items():
        sections[key] = {**sections.get(key, {}), **value} if isinstance(value, dict) else value
    return params(axes, **sections)


def session(image: np.ndarray, p: SessionParams, grid=(16, 16, 16), **kw: Any) -> ScanSession:
    return ScanSession(image, preprocessing=fit_preprocessor(image, grid=grid), params=p, **kw)


def trainer(seed: int = 0) -> Trainer:
    model = build_segmenter("unet", channels=(4, 8), seed=seed)
    return Trainer(model, ReplayBuffer(2, 4, rng=seed), lr=3e-3, device="cpu", rng=seed)
