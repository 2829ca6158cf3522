"""Proposing the next slices: :func:`propose_slices` validates its inputs and runs one strategy."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np

from dil_core.guidance._checks import (
    _check_axes,
    _check_drawn,
    _check_extent,
    _check_positive_int,
    _check_shape,
    _check_soft,
    _check_spacing,
    _check_spread,
    _check_w1,
)
from dil_core.guidance.proposal import GuidanceRequest, Proposal
from dil_core.guidance.strategies import GUIDANCE_STRATEGIES
from dil_core.typing import RngLike

__all__ = ["propose_slices"]

_NEEDS: dict[str, tuple[str, ...]] = {"model": ("proxy", "prediction"), "uncertainty": ("prediction",)}


def propose_slices(
    *,
    shape: Sequence[int],
    axes: Sequence[int],
    drawn: Mapping[int, Collection[int]],
    tau: int,
    strategy: str = "model",
    proxy: np.ndarray | None = None,
    prediction: np.ndarray | None = None,
    w1: float = 0.5,
    rng: RngLike = None,
    spacing: Sequence[float] | None = None,
    extent: Mapping[int, tuple[int, int]] | None = None,
    spread: float = 2.0,
) -> Proposal:
    """Propose up to ``tau`` new slices to draw on each of ``axes``.

    Parameters
    ----------
    shape : (int, int, int)
        Volume shape ``(X, Y, Z)``.
    axes : sequence of int
        Axes (0, 1, 2; unique) to propose on, e.g. ``(1, 2)`` for two planes.
    drawn : mapping of int to collection of int
        Slices drawn so far (``Gamma``), axis -> indices; missing axes mean none drawn.
    tau : int
        New slices wanted per axis (``tau`` of Algorithm 4), ``>= 1``.
    strategy : {"model", "random", "uniform", "uncertainty", "bisect", "refine"}, default "model"
        A key of :data:`GUIDANCE_STRATEGIES` (see the module docstring).
    proxy : (X, Y, Z) ndarray, optional
        Current proxy mask ``Upsilon`` in [0, 1]; needed by ``"model"``.
    prediction : (X, Y, Z) ndarray, optional
        Segmenter output ``F(X)`` as probabilities in [0, 1]; needed by ``"model"`` and ``"uncertainty"``.
        With an untrained ``F`` (cold start) the disagreement term is noise: Algorithm 5 uses ``"random"``
        for the first round; that choice is the caller's.
    w1 : float, default 0.5
        Weight ``omega_1`` of eq 17, in [0, 1].
    rng : numpy.random.Generator, int or None
        Randomness for sampling and tie-breaking.
    spacing : (float, float, float), optional
        Voxel spacing (mm) for the distance term of ``"model"``; voxel units where omitted.
    extent : mapping of int to (int, int), optional
        Axis -> inclusive ``(lo, hi)`` range of slices believed to hold the target (from the ground truth
        in simulation, from the proxy or prediction in use). Restricts the candidates of every strategy,
        and is the range ``"uniform"`` spaces over; axes not named use the whole axis.
    spread : float, default 2.0
        ``"refine"``: the uncertainty of a slice ``d`` slices from the nearest drawn one counts
        ``1 - exp(-d / spread)``; 0 turns the factor off. Finite and ``>= 0``.

    Returns
    -------
    Proposal
        Chosen slices and per-slice scores for every requested axis. An axis gets fewer than ``tau``
        slices when fewer candidates remain or (``"model"``, ``"uncertainty"``) fewer have a positive score
        (Algorithm 4 lines 12-14).

    Raises
    ------
    ValueError
        On an unknown strategy (the known ones are listed), a missing ``proxy``/``prediction`` the strategy
        needs, a bad shape, axis, ``tau``, ``w1``, spacing, extent, drawn index, or an array whose shape
        differs from ``shape`` or whose values leave [0, 1].

    References
    ----------
    Eq 17 and Algorithm 4 (``"model"``); sec 2.3 and 3.3 (random slices as the default user).
    """
    if strategy not in GUIDANCE_STRATEGIES:
        raise ValueError(
            f"strategy: unknown guidance strategy {strategy!r}; known: {sorted(GUIDANCE_STRATEGIES)}"
        )
    missing = [name for name, arr in (("proxy", proxy), ("prediction", prediction))
               if name in _NEEDS.get(strategy, ()) and arr is None]
    if missing:
        raise ValueError(f"strategy {strategy!r} needs {' and '.join(missing)}, got None")
    shp = _check_shape(shape)
    axes_t = _check_axes(axes)
    drawn_f = _check_drawn(drawn, shp)
    tau_i = _check_positive_int("tau", tau)
    ext = _check_extent(extent, shp, axes_t)
    candidates = {}
    for a in axes_t:
        mask = np.zeros(shp[a], dtype=bool)
        lo, hi = ext[a]
        mask[lo : hi + 1] = True
        mask[list(drawn_f[a])] = False
        candidates[a] = mask
    req = GuidanceRequest(
        shape=shp,
        axes=axes_t,
        drawn=drawn_f,
        tau=tau_i,
        candidates=candidates,
        extent=ext,
        proxy=None if proxy is None else _check_soft("proxy", proxy, shp),
        prediction=None if prediction is None else _check_soft("prediction", prediction, shp),
        w1=_check_w1(w1),
        spacing=_check_spacing(spacing),
        rng=np.random.default_rng(rng),
        spread=_check_spread(spread),
    )
    slices, scores = GUIDANCE_STRATEGIES[strategy](req)
    return Proposal(slices=slices, scores=scores, strategy=strategy)
