"""The residual map of eq 17, ``r = w1 * |proxy - F| + (1 - w1) * d2``, and its distance term ``d2``."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np

from dil_core.guidance._checks import (
    _check_drawn,
    _check_shape,
    _check_soft,
    _check_spacing,
    _check_w1,
)
from dil_core.weights import distance_to_drawn

__all__ = ["distance_term", "residual_map"]


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
