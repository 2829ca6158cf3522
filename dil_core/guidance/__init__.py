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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import entr

from dil_core.typing import RngLike
from dil_core.weights import distance_to_drawn

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


@dataclass(frozen=True)
class Proposal:
    """Slices proposed for the next round, and why.

    Attributes
    ----------
    slices : dict[int, tuple[int, ...]]
        Axis -> proposed slice indices along that axis, sorted ascending; every requested axis is a key
        (an empty tuple where nothing could or needed to be proposed).
    scores : dict[int, ndarray]
        Axis -> float array of length ``shape[axis]``: the per-slice score the strategy ranked or sampled
        by (``"model"``: the summed residual of eq 17; ``"uncertainty"``: the summed entropy; ``"random"``:
        1 on every candidate; ``"uniform"``: 1 on the proposed slices). 0 on drawn slices and on slices
        outside the candidates.
    strategy : str
        The registry name of the strategy that made the proposal.
    """

    slices: dict[int, tuple[int, ...]]
    scores: dict[int, np.ndarray]
    strategy: str

    @property
    def n_slices(self) -> int:
        """Total number of proposed slices over all axes."""
        return sum(len(v) for v in self.slices.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (plain lists and floats) for the ledger or a labeling request."""
        return {
            "strategy": self.strategy,
            "slices": {str(a): [int(i) for i in s] for a, s in self.slices.items()},
            "scores": {str(a): [float(v) for v in s] for a, s in self.scores.items()},
        }


@dataclass(frozen=True)
class GuidanceRequest:
    """Validated inputs of one proposal, as every strategy receives them (see :func:`propose_slices`).

    Attributes
    ----------
    shape : (int, int, int)
        Volume shape ``(X, Y, Z)``.
    axes : tuple of int
        Axes to propose slices on, unique, each 0, 1 or 2.
    drawn : dict[int, frozenset[int]]
        Slices already drawn (all three axes are keys, possibly empty).
    tau : int
        Slices wanted per axis.
    candidates : dict[int, ndarray]
        Axis -> boolean mask of length ``shape[axis]``: undrawn and inside the extent.
    extent : dict[int, (int, int)]
        Axis -> inclusive ``(lo, hi)`` for every requested axis (the whole axis where none was given).
    proxy, prediction : (X, Y, Z) float ndarray or None
        Soft values in [0, 1].
    w1 : float
        Weight of the model disagreement in eq 17.
    spacing : (float, float, float)
        Voxel spacing used for distances (ones where none was given).
    rng : numpy.random.Generator
    spread : float
        ``"refine"``: slices over which the pull away from drawn slices fades (0: none).
    """

    shape: tuple[int, int, int]
    axes: tuple[int, ...]
    drawn: dict[int, frozenset[int]]
    tau: int
    candidates: dict[int, np.ndarray]
    extent: dict[int, tuple[int, int]]
    proxy: np.ndarray | None
    prediction: np.ndarray | None
    w1: float
    spacing: tuple[float, float, float]
    rng: np.random.Generator
    spread: float


#: A guidance strategy: validated request -> (slices per axis, scores per axis).
GuidanceStrategy: TypeAlias = Callable[
    [GuidanceRequest], "tuple[dict[int, tuple[int, ...]], dict[int, np.ndarray]]"
]


# --------------------------------------------------------------------------------------------- building blocks


def distance_term(
    shape: Sequence[int],
    drawn: Mapping[int, Collection[int]],
    *,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Normalised distance of every voxel to the nearest drawn slice, the ``d2`` of eq 17.

    ``d(x)`` is the distance from voxel ``x`` to the nearest drawn slice on *any* axis: a slice ``i`` on
    axis ``a`` is the plane ``x_a = i``, so ``d(x) = min_a min_{i in drawn[a]} |x_a - i| * spacing[a]``
    (:func:`dil_core.weights.distance_to_drawn`, the same ``d`` as the confidence map of eq 10-11).
    It is normalised by its maximum over the volume: ``d2 = d / max(d)``, in [0, 1], 0 on drawn slices and 1
    at the voxels farthest from every drawn slice. Scale-free (no length parameter), it keeps favouring far
    slices at every distance, which spreads the proposals (the "spatial uniformity" of sec 2.5); the
    saturating alternative ``1 - exp(-d)`` (the complement of eq 11) is nearly 1 three slices away from
    any drawn slice and would make the term almost constant. With nothing drawn, ``d2 = 1`` everywhere.

    Parameters
    ----------
    shape : (int, int, int)
        Volume shape ``(X, Y, Z)``.
    drawn : mapping of int to collection of int
        Axis -> drawn slice indices.
    spacing : (float, float, float), optional
        Voxel spacing along X, Y, Z (mm); distances are in voxels where omitted.

    Returns
    -------
    (X, Y, Z) float64 ndarray
        ``d2`` in [0, 1].

    Raises
    ------
    ValueError
        On a bad shape, axis, index or spacing.

    References
    ----------
    Eq 17, ``d2(x, Gamma)``; eq 10-11 for the confidence it mirrors.
    """
    shp = _check_shape(shape)
    drawn_f = _check_drawn(drawn, shp)
    sp = _check_spacing(spacing)
    return _distance_term(shp, drawn_f, sp)


def residual_map(
    proxy: np.ndarray,
    prediction: np.ndarray,
    drawn: Mapping[int, Collection[int]],
    *,
    w1: float = 0.5,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """The residual map of eq 17: ``r = w1 * |proxy - F| + (1 - w1) * d2``.

    Parameters
    ----------
    proxy : (X, Y, Z) ndarray
        Current proxy mask (``Upsilon``), soft or binary values in [0, 1].
    prediction : (X, Y, Z) ndarray
        Current segmenter output ``F(X)`` as probabilities in [0, 1].
    drawn : mapping of int to collection of int
        Axis -> drawn slice indices (``Gamma``).
    w1 : float, default 0.5
        Weight of the disagreement term ``d1 = |proxy - F|``, in [0, 1].
    spacing : (float, float, float), optional
        Voxel spacing for ``d2`` (see :func:`distance_term`).

    Returns
    -------
    (X, Y, Z) float64 ndarray
        ``r`` in [0, 1].

    Raises
    ------
    ValueError
        On mismatched shapes, values outside [0, 1] or NaN, ``w1`` outside [0, 1], bad axes or indices.

    References
    ----------
    Eq 17; Algorithm 4 line 3.
    """
    prox = _check_soft("proxy", proxy, None)
    shp = prox.shape
    pred = _check_soft("prediction", prediction, shp)
    return _residual(prox, pred, _check_drawn(drawn, shp), _check_w1(w1), _check_spacing(spacing))


def evenly_spaced(lo: int, hi: int, n: int) -> tuple[int, ...]:
    """``n`` evenly spaced slice indices over ``[lo, hi]``, both ends included (1 slice: the middle).

    Position ``m`` is ``lo + m * (hi - lo) / (n - 1)`` rounded half up; with more points than slices some
    indices repeat (the caller resolves that).

    Examples
    --------
    >>> evenly_spaced(2, 12, 3)
    (2, 7, 12)
    >>> evenly_spaced(2, 12, 5)
    (2, 5, 7, 10, 12)

    Raises
    ------
    ValueError
        If ``lo > hi`` or ``n < 1``.
    """
    if lo > hi:
        raise ValueError(f"evenly_spaced: lo must be <= hi, got lo={lo}, hi={hi}")
    if n < 1:
        raise ValueError(f"evenly_spaced: n must be >= 1, got {n}")
    if n == 1:
        return (int(math.floor((lo + hi) / 2 + 0.5)),)
    return tuple(int(math.floor(lo + m * (hi - lo) / (n - 1) + 0.5)) for m in range(n))


# ------------------------------------------------------------------------------------------------- strategies


def _model(req: GuidanceRequest) -> tuple[dict[int, tuple[int, ...]], dict[int, np.ndarray]]:
    """Algorithm 4 with the residual of eq 17, on every requested axis."""
    assert req.proxy is not None and req.prediction is not None
    r = _residual(req.proxy, req.prediction, req.drawn, req.w1, req.spacing)
    slices: dict[int, tuple[int, ...]] = {}
    scores: dict[int, np.ndarray] = {}
    for axis in req.axes:
        other = tuple(a for a in range(3) if a != axis)
        score = np.where(req.candidates[axis], r.sum(axis=other), 0.0)
        scores[axis] = score
        total = float(score.sum())
        if total <= 0.0:  # Algorithm 4 lines 12-14: nothing undrawn, or no residual left
            slices[axis] = ()
            continue
        index = np.flatnonzero(score > 0)
        p = score[index] / score[index].sum()
        size = min(req.tau, index.size)
        chosen = req.rng.choice(index, size=size, replace=False, p=p)
        slices[axis] = tuple(sorted(int(i) for i in chosen))
    return slices, scores


def _random(req: GuidanceRequest) -> tuple[dict[int, tuple[int, ...]], dict[int, np.ndarray]]:
    """Uniformly random candidate slices (the paper's default simulated user)."""
    slices: dict[int, tuple[int, ...]] = {}
    scores: dict[int, np.ndarray] = {}
    for axis in req.axes:
        cand = req.candidates[axis]
        scores[axis] = cand.astype(float)
        index = np.flatnonzero(cand)
        chosen = req.rng.choice(index, size=min(req.tau, index.size), replace=False)
        slices[axis] = tuple(sorted(int(i) for i in chosen))
    return slices, scores


def _uniform(req: GuidanceRequest) -> tuple[dict[int, tuple[int, ...]], dict[int, np.ndarray]]:
    """Evenly spaced slices over the extent, keeping what is drawn (a power user).

    On an axis with ``k`` drawn slices inside ``extent = (lo, hi)``, the target grid is
    ``evenly_spaced(lo, hi, k + tau)``. Drawn slices cannot be undone, so each claims one grid point: the
    assignment of drawn slices to grid points with the least total distance (re-spacing keeps the drawn
    ones and fills the new grid around them). The ``tau`` unclaimed grid points are proposed; one that is
    not a candidate (already drawn, or a repeat where the extent has fewer slices than points) moves to
    the nearest free candidate, lower index first on a tie. Fewer than ``tau`` come back only when the
    candidates run out. Drawn slices outside the extent do not count towards ``k``.
    """
    slices: dict[int, tuple[int, ...]] = {}
    scores: dict[int, np.ndarray] = {}
    for axis in req.axes:
        lo, hi = req.extent[axis]
        drawn_in = np.array(sorted(i for i in req.drawn[axis] if lo <= i <= hi), dtype=float)
        grid = np.array(evenly_spaced(lo, hi, drawn_in.size + req.tau), dtype=float)
        free = np.ones(grid.size, dtype=bool)
        if drawn_in.size:
            _, claimed = linear_sum_assignment(np.abs(drawn_in[:, None] - grid[None, :]))
            free[claimed] = False
        available = req.candidates[axis].copy()
        chosen: list[int] = []
        for g in grid[free].astype(int):
            index = np.flatnonzero(available)
            if index.size == 0:
                break
            pick = int(index[np.argmin(np.abs(index - g))])  # argmin: first (lower) index on a tie
            chosen.append(pick)
            available[pick] = False
        score = np.zeros(req.shape[axis])
        score[chosen] = 1.0
        scores[axis] = score
        slices[axis] = tuple(sorted(chosen))
    return slices, scores


def _uncertainty(req: GuidanceRequest) -> tuple[dict[int, tuple[int, ...]], dict[int, np.ndarray]]:
    """Top-``tau`` candidate slices by summed binary entropy of ``F(X)``; ties broken at random."""
    assert req.prediction is not None
    p = req.prediction
    entropy = (entr(p) + entr(1.0 - p)) / math.log(2.0)  # bits, 0 at p in {0, 1}, 1 at p = 0.5
    slices: dict[int, tuple[int, ...]] = {}
    scores: dict[int, np.ndarray] = {}
    for axis in req.axes:
        other = tuple(a for a in range(3) if a != axis)
        score = np.where(req.candidates[axis], entropy.sum(axis=other), 0.0)
        scores[axis] = score
        order = np.lexsort((req.rng.random(score.size), -score))  # by score desc, then random key
        top = [int(i) for i in order[: req.tau] if score[i] > 0]
        slices[axis] = tuple(sorted(top))
    return slices, scores


def bisect_order(lo: int, hi: int, drawn: Collection[int], n: int = 1) -> tuple[int, ...]:
    """The next ``n`` slices of ``[lo, hi]`` that split the widest undrawn gap, given the ``drawn`` ones.

    With nothing drawn inside the range: the middle. A gap that reaches an end of the range is closed by that
    end slice (its width counts in full); a gap between two drawn slices is split at its middle (it counts
    half its width, the distance from the new slice to either neighbour). Ties go to the lower slice.

    Examples
    --------
    >>> bisect_order(0, 20, (), 5)
    (0, 5, 10, 15, 20)
    >>> bisect_order(0, 20, (10,), 2)
    (0, 20)

    Raises
    ------
    ValueError
        If ``lo > hi`` or ``n < 0``.
    """
    if lo > hi:
        raise ValueError(f"bisect_order: lo must be <= hi, got lo={lo}, hi={hi}")
    if n < 0:
        raise ValueError(f"bisect_order: n must be >= 0, got {n}")
    have = {int(i) for i in drawn if lo <= i <= hi}
    out: list[int] = []
    for _ in range(n):
        if len(have) == hi - lo + 1:
            break
        if not have:
            pick = int(math.floor((lo + hi) / 2))
        else:
            pts = sorted(have)
            best: tuple[float, int] | None = None
            for a, b in zip([lo - 1, *pts], [*pts, hi + 1], strict=True):
                if b - a < 2:
                    continue
                if a == lo - 1:
                    width, pos = float(b - lo), lo
                elif b == hi + 1:
                    width, pos = float(hi - a), hi
                else:
                    width, pos = (b - a) / 2, (a + b) // 2
                if best is None or width > best[0]:
                    best = (width, pos)
            assert best is not None
            pick = best[1]
        have.add(pick)
        out.append(pick)
    return tuple(sorted(out))


def _bisect(req: GuidanceRequest) -> tuple[dict[int, tuple[int, ...]], dict[int, np.ndarray]]:
    """The middle of the widest undrawn gap of the extent, ``tau`` times (see :func:`bisect_order`)."""
    slices: dict[int, tuple[int, ...]] = {}
    scores: dict[int, np.ndarray] = {}
    for axis in req.axes:
        lo, hi = req.extent[axis]
        chosen = [i for i in bisect_order(lo, hi, req.drawn[axis], req.tau) if req.candidates[axis][i]]
        score = np.zeros(req.shape[axis])
        score[chosen] = 1.0
        slices[axis], scores[axis] = tuple(chosen), score
    return slices, scores


def _refine(req: GuidanceRequest) -> tuple[dict[int, tuple[int, ...]], dict[int, np.ndarray]]:
    """Largest predicted cross-section first, then the most uncertain slices of the soft mask, away from drawn ones.

    The soft mask is least sure right beside a drawn slice (the blend mixes the drawing and the prediction
    there), yet a neighbour of a drawn slice adds least: its correction is already there. Without the factor
    ``1 - exp(-d / spread)`` the hippocampus scans of the benchmark stream drew runs of adjacent slices
    (up to 11 in a row on the costliest ones); with ``spread = 2`` the stream of ``bench/labor_to_rho.py``
    reached rho = 0.85 for 0.083 of full contouring per scan instead of 0.101 (``--ours-spread 0``).
    """
    slices: dict[int, tuple[int, ...]] = {}
    scores: dict[int, np.ndarray] = {}
    fallback = _bisect(req)
    p = req.prediction
    for axis in req.axes:
        other = tuple(a for a in range(3) if a != axis)
        cand = req.candidates[axis]
        score = np.zeros(req.shape[axis])
        if p is not None:
            if not req.drawn[axis]:
                score = (p >= 0.5).sum(axis=other).astype(float)
            else:
                score = ((entr(p) + entr(1.0 - p)) / math.log(2.0)).sum(axis=other)
                if req.spread > 0:
                    drawn = np.asarray(sorted(req.drawn[axis]))
                    d = np.abs(np.arange(score.size)[:, None] - drawn[None, :]).min(axis=1)
                    score = score * -np.expm1(-d / req.spread)
            score = np.where(cand, score, 0.0)
        if not np.any(score > 0):
            slices[axis], scores[axis] = fallback[0][axis], fallback[1][axis]
            continue
        order = np.lexsort((np.arange(score.size), -score))  # by score desc, then lower index
        top = [int(i) for i in order[: req.tau] if score[i] > 0]
        slices[axis], scores[axis] = tuple(sorted(top)), score
    return slices, scores


#: Guidance strategies by name.
GUIDANCE_STRATEGIES: dict[str, GuidanceStrategy] = {
    "model": _model,
    "random": _random,
    "uniform": _uniform,
    "uncertainty": _uncertainty,
    "bisect": _bisect,
    "refine": _refine,
}

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


# ------------------------------------------------------------------------------------------------ internals


def _distance_term(
    shape: tuple[int, int, int], drawn: dict[int, frozenset[int]], spacing: tuple[float, float, float]
) -> np.ndarray:
    d = distance_to_drawn(shape, drawn, spacing=spacing)
    if np.isinf(d).all():  # nothing drawn anywhere
        return np.ones(shape)
    top = float(d.max())
    return d / top if top > 0 else np.zeros(shape)


def _residual(
    proxy: np.ndarray,
    prediction: np.ndarray,
    drawn: dict[int, frozenset[int]],
    w1: float,
    spacing: tuple[float, float, float],
) -> np.ndarray:
    d1 = np.abs(proxy - prediction)
    if w1 == 1.0:
        return d1
    return w1 * d1 + (1.0 - w1) * _distance_term(proxy.shape, drawn, spacing)  # type: ignore[arg-type]


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        shp = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as err:
        raise ValueError(f"shape: expected 3 positive ints, got {shape!r}") from err
    if len(shp) != 3 or min(shp) < 1:
        raise ValueError(f"shape: expected 3 positive ints, got {shape!r}")
    return shp  # type: ignore[return-value]


def _check_axes(axes: Sequence[int]) -> tuple[int, ...]:
    try:
        out = tuple(int(a) for a in axes)
    except (TypeError, ValueError) as err:
        raise ValueError(f"axes: expected a sequence of axes 0, 1 or 2, got {axes!r}") from err
    if not out or any(a not in (0, 1, 2) for a in out) or len(set(out)) != len(out):
        raise ValueError(f"axes: expected 1-3 unique axes among 0, 1, 2, got {axes!r}")
    return out


def _check_drawn(drawn: Mapping[int, Collection[int]], shape: tuple[int, int, int]) -> dict[int, frozenset[int]]:
    if not isinstance(drawn, Mapping):
        raise ValueError(f"drawn: expected a mapping axis -> slice indices, got {type(drawn).__name__}")
    out: dict[int, frozenset[int]] = {0: frozenset(), 1: frozenset(), 2: frozenset()}
    for axis, indices in drawn.items():
        if isinstance(axis, bool) or axis not in (0, 1, 2):
            raise ValueError(f"drawn: axis must be 0, 1 or 2, got {axis!r}")
        try:
            idx = frozenset(_as_int(i) for i in indices)
        except (TypeError, ValueError) as err:
            raise ValueError(f"drawn[{axis}]: expected integer slice indices, got {indices!r}") from err
        bad = sorted(i for i in idx if not 0 <= i < shape[int(axis)])
        if bad:
            raise ValueError(f"drawn[{axis}]: indices must be in [0, {shape[int(axis)] - 1}], got {bad}")
        out[int(axis)] = idx
    return out


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"not an integer: {value!r}")
    return int(value)


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    return int(value)


def _check_w1(w1: float) -> float:
    try:
        w = float(w1)
    except (TypeError, ValueError) as err:
        raise ValueError(f"w1: expected a number in [0, 1], got {w1!r}") from err
    if not 0.0 <= w <= 1.0:  # also rejects NaN
        raise ValueError(f"w1: expected a number in [0, 1], got {w1!r}")
    return w


def _check_spread(spread: float) -> float:
    try:
        v = float(spread)
    except (TypeError, ValueError) as err:
        raise ValueError(f"spread: expected a finite number >= 0, got {spread!r}") from err
    if not (math.isfinite(v) and v >= 0.0):
        raise ValueError(f"spread: expected a finite number >= 0, got {spread!r}")
    return v


def _check_spacing(spacing: Sequence[float] | None) -> tuple[float, float, float]:
    if spacing is None:
        return (1.0, 1.0, 1.0)
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as err:
        raise ValueError(f"spacing: expected 3 positive finite numbers, got {spacing!r}") from err
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing: expected 3 positive finite numbers, got {spacing!r}")
    return sp  # type: ignore[return-value]


def _check_extent(
    extent: Mapping[int, tuple[int, int]] | None, shape: tuple[int, int, int], axes: tuple[int, ...]
) -> dict[int, tuple[int, int]]:
    out = {a: (0, shape[a] - 1) for a in axes}
    if extent is None:
        return out
    if not isinstance(extent, Mapping):
        raise ValueError(f"extent: expected a mapping axis -> (lo, hi), got {type(extent).__name__}")
    for axis, rng_ in extent.items():
        if isinstance(axis, bool) or axis not in (0, 1, 2):
            raise ValueError(f"extent: axis must be 0, 1 or 2, got {axis!r}")
        try:
            lo, hi = (_as_int(v) for v in rng_)
        except (TypeError, ValueError) as err:
            raise ValueError(f"extent[{axis}]: expected (lo, hi) integers, got {rng_!r}") from err
        if not 0 <= lo <= hi < shape[int(axis)]:
            raise ValueError(
                f"extent[{axis}]: expected 0 <= lo <= hi <= {shape[int(axis)] - 1}, got ({lo}, {hi})"
            )
        if int(axis) in out:
            out[int(axis)] = (lo, hi)
    return out


def _check_soft(name: str, array: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise ValueError(f"{name}: expected an (X, Y, Z) array, got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name}: shape {arr.shape} differs from the volume shape {tuple(shape)}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name}: values must be in [0, 1], got range [{lo}, {hi}]")
    return arr
