"""The names of the registries a config may name, without importing the registries (and SciPy with them).

A config is read by the physician's thin commands too, which must answer in about a second. The registries
(:data:`dil_core.guidance.GUIDANCE_STRATEGIES`, :data:`dil_core.propagation.PROPAGATION_BACKENDS`) hold exactly
these names; ``tests/dil_core/test_config.py`` checks that they agree.
"""

from __future__ import annotations

__all__ = ["GUIDANCE_STRATEGY_NAMES", "PROPAGATION_BACKEND_NAMES"]

GUIDANCE_STRATEGY_NAMES: tuple[str, ...] = ("bisect", "model", "random", "refine", "uncertainty", "uniform")
PROPAGATION_BACKEND_NAMES: tuple[str, ...] = ("ants-affine", "ants-syn", "mci", "nearest", "sdf", "sdf-aligned")
