"""Which slices to draw next: model guidance (Algorithm 4, eq 17) and the simulated users it is compared with.

Every strategy is "sample, then apply": :func:`propose_slices` returns a :class:`Proposal` holding the chosen
slice indices per axis *and* the per-slice score that led to them, so a round can be explained and replayed.

Strategies (registry :data:`GUIDANCE_STRATEGIES`):

``"model"``
    The paper's model guidance. Residual ``r = w1 * |proxy - F| + (1 - w1) * d2`` (eq 17) over the whole
    volume, summed per slice; ``tau`` undrawn slices per axis sampled without replacement with probability
    proportional to the sum (Algorithm 4).
``"random"``
    The paper's default simulated user (sec 2.3, "bad interaction" of its ref 38): ``tau`` undrawn slices
    per axis uniformly at random among the candidates (the target's extent when given).
``"uniform"``
    A power user: evenly spaced slices over the target's extent, both end slices included.
``"uncertainty"``
    Beyond the paper: the ``tau`` slices with the largest summed binary entropy of the prediction ``F(X)``.
``"bisect"``
    Beyond the paper: the middle of the extent first, then its two end slices, then always the middle of the
    widest undrawn gap: evenly spaced slices built one round at a time, for interpolating propagation.
``"refine"``
    Beyond the paper, for a scan whose mask starts from the segmenter's prediction (``dil_core.refine``):
    on an axis with nothing drawn, the slice where the prediction's cross-section is largest; then the
    slices whose summed binary entropy of the current soft mask, times ``1 - exp(-d / spread)`` with ``d``
    the number of slices to the nearest drawn one, is largest (where the blend of drawing and prediction is
    least sure, away from what is drawn); ``"bisect"`` where the prediction gives no score.

Candidates. On each requested axis the candidates are the slices not yet drawn on that axis and, where
``extent`` names the axis, inside ``extent[axis] = (lo, hi)`` (inclusive). Non-candidates score 0 and are
never proposed, whatever the strategy.

References
----------
Tian, Chen, Gao, "A dynamic interactive learning framework for automated 3D medical image segmentation",
2023: sec 2.3 (eq 3-4), sec 2.5 (eq 13-17, Algorithm 4), sec 3.3.

Modules: :mod:`~dil_core.guidance.proposal` (the request and proposal records),
:mod:`~dil_core.guidance.residual` (eq 17), :mod:`~dil_core.guidance.strategies` (the strategies and their
registry), :mod:`~dil_core.guidance.propose` (:func:`propose_slices`), ``_checks`` (input validation).
"""

from __future__ import annotations

# Every name of the former single module dil_core/guidance.py stays importable from here.
from dil_core.guidance._checks import _as_int as _as_int
from dil_core.guidance._checks import _check_axes as _check_axes
from dil_core.guidance._checks import _check_drawn as _check_drawn
from dil_core.guidance._checks import _check_extent as _check_extent
from dil_core.guidance._checks import _check_positive_int as _check_positive_int
from dil_core.guidance._checks import _check_shape as _check_shape
from dil_core.guidance._checks import _check_soft as _check_soft
from dil_core.guidance._checks import _check_spacing as _check_spacing
from dil_core.guidance._checks import _check_spread as _check_spread
from dil_core.guidance._checks import _check_w1 as _check_w1
from dil_core.guidance.proposal import GuidanceRequest, GuidanceStrategy, Proposal
from dil_core.guidance.propose import _NEEDS as _NEEDS
from dil_core.guidance.propose import propose_slices
from dil_core.guidance.residual import _distance_term as _distance_term
from dil_core.guidance.residual import _residual as _residual
from dil_core.guidance.residual import distance_term, residual_map
from dil_core.guidance.strategies import (
    GUIDANCE_STRATEGIES,
    bisect_order,
    evenly_spaced,
)
from dil_core.guidance.strategies import _bisect as _bisect
from dil_core.guidance.strategies import _model as _model
from dil_core.guidance.strategies import _random as _random
from dil_core.guidance.strategies import _refine as _refine
from dil_core.guidance.strategies import _uncertainty as _uncertainty
from dil_core.guidance.strategies import _uniform as _uniform

__all__ = [
    "GUIDANCE_STRATEGIES",
    "GuidanceRequest",
    "GuidanceStrategy",
    "Proposal",
    "distance_term",
    "bisect_order",
    "evenly_spaced",
    "propose_slices",
    "residual_map",
]
