"""The campaign config mapped onto the core's plain arguments, in one place.

The validated :class:`~dil_core.config.CampaignConfig` is the only holder of defaults. Flows, the round
service and the benchmarks all build a scan's :class:`~dil_core.session.SessionParams`, its preprocessing and
the segmenter's :class:`~dil_core.training.Trainer` with these functions, so a benchmark measures exactly
what a campaign with the same config runs.
"""

from __future__ import annotations

import numpy as np

from dil_core.config import CampaignConfig, TrainingConfig
from dil_core.models import build_segmenter, resolve_device
from dil_core.preprocess import Preprocessing, fit_preprocessor
from dil_core.replay import ReplayBuffer
from dil_core.session import SessionParams
from dil_core.training import Trainer

__all__ = ["make_trainer", "scan_preprocessing", "session_params"]


def session_params(config: CampaignConfig, axes: tuple[int, ...]) -> SessionParams:
    """A scan's round parameters from the campaign config; ``axes`` are the config's planes on this scan."""
    g, s, t, r = config.guidance, config.stopping, config.training, config.refine
    return SessionParams(
        axes=tuple(axes),
        tau=g.tau,
        quota_gamma=s.quota_gamma,
        n_inter=s.n_inter,
        backend=config.propagation.backend,
        strategy=g.strategy,
        first_round=g.first_round,
        w1=g.w1,
        n_f=t.n_f,
        lambda_l=t.lambda_l,
        lambda_y=t.lambda_y,
        m=t.replay_m,
        weight_scheme=t.weight_scheme,
        omega=t.omega,
        weight_length=t.weight_length,
        weight_floor=t.weight_floor,
        final_mask=config.final_mask,
        method=config.method,
        blend_scale=r.blend_scale,
        end_steps=0 if config.continual.enabled else r.end_steps,  # the continual learner trains instead
        resample_every=r.resample_every,
        trust=r.trust,
        set_aside=r.set_aside,
        fallback_after=r.fallback_after,
        flips=t.test_time_flips,
        correction_length=r.correction_length,
        spread=r.spread,
    )


def make_trainer(training: TrainingConfig) -> Trainer:
    """A fresh segmenter with its optimiser and replay buffer (Algorithm 1), seeded by ``training.seed``."""
    model = build_segmenter(training.segmenter, channels=training.channels, seed=training.seed, patch=training.patch)
    buffer = ReplayBuffer(training.buffer_b, training.buffer_b_star, rng=training.seed)
    return Trainer(
        model, buffer, lr=training.learning_rate, device=resolve_device(training.device), rng=training.seed
    )


def scan_preprocessing(image: np.ndarray, training: TrainingConfig) -> Preprocessing:
    """The crop box and working grid of one scan: its non-background box (background = its minimum)."""
    return fit_preprocessor(image, grid=training.grid, background=float(np.min(image)))
