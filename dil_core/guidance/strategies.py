"""The guidance strategies, each ``GuidanceRequest -> (slices, scores)``, and their registry.

See :mod:`dil_core.guidance` for what each strategy does; :func:`evenly_spaced` and :func:`bisect_order` are
the slice orders of ``"uniform"`` and ``"bisect"``.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import entr

from dil_core.guidance.proposal import GuidanceRequest, GuidanceStrategy
from dil_core.guidance.residual import _residual

__all__ = ["GUIDANCE_STRATEGIES", "bisect_order", "evenly_spaced"]


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
