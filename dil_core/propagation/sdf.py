"""Signed-distance interpolation between two drawn slices."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

__all__ = ["sdf_between", "signed_distance"]


def signed_distance(mask_2d: np.ndarray) -> np.ndarray:
    """Signed distance of a 2D mask in pixels, positive inside, zero on the boundary between pixels.

    Parameters
    ----------
    mask_2d : 2D ndarray
        Binary mask (foreground = non-zero) with at least one foreground and one background pixel.

    Returns
    -------
    2D float32 ndarray
        ``edt(inside) - 1/2`` on foreground pixels, ``-(edt(outside) - 1/2)`` on background pixels.

    Raises
    ------
    ValueError
        If the mask is not 2D, or is all foreground or all background (no boundary).
    """
    inside = np.asarray(mask_2d) > 0
    if inside.ndim != 2:
        raise ValueError(f"mask_2d must be 2D, got shape {inside.shape}")
    if inside.all() or not inside.any():
        raise ValueError("mask_2d must hold both foreground and background to have a signed distance")
    d_in = distance_transform_edt(inside)
    d_out = distance_transform_edt(~inside)
    return np.where(inside, d_in - 0.5, -(d_out - 0.5)).astype(np.float32)


def _distance_or_none(mask: np.ndarray) -> np.ndarray | None:
    if not mask.any():
        return None
    if mask.all():  # the whole slice is target: further inside than any pixel can be
        return np.full(mask.shape, float(sum(mask.shape)), dtype=np.float32)
    return signed_distance(mask)


def sdf_between(mask_lo: np.ndarray, mask_hi: np.ndarray, gap: int) -> np.ndarray:
    """Masks of the ``gap - 1`` slices strictly between two drawn slices ``gap`` apart.

    Each drawn mask becomes a signed distance map (positive inside); slice ``t`` of the way from the lower to the
    upper one gets ``(1 - t) d_lo + t d_hi > 0``. An empty drawn slice means "no target here": its distance map
    is taken as the other slice's map minus that map's deepest inside distance, so the shape erodes linearly and
    vanishes at the empty slice (a cone, like MCI's extrapolation towards an empty slice). Two empty slices give
    nothing in between.

    Parameters
    ----------
    mask_lo, mask_hi : 2D ndarray
        Binary masks of the lower and upper drawn slice, same shape.
    gap : int
        Index difference between them (>= 1).

    Returns
    -------
    (gap - 1, *mask_lo.shape) float32 ndarray
        0.0/1.0 masks of the in-between slices, lower first.

    Raises
    ------
    ValueError
        If the masks are not 2D of one shape or ``gap < 1``.
    """
    lo = np.asarray(mask_lo) > 0
    hi = np.asarray(mask_hi) > 0
    if lo.ndim != 2 or lo.shape != hi.shape:
        raise ValueError(f"mask_lo and mask_hi must be 2D of one shape, got {lo.shape} and {hi.shape}")
    if int(gap) < 1:
        raise ValueError(f"gap must be >= 1, got {gap}")
    out = np.zeros((int(gap) - 1, *lo.shape), dtype=np.float32)
    d_lo, d_hi = _distance_or_none(lo), _distance_or_none(hi)
    if d_lo is None and d_hi is None:
        return out
    if d_lo is None:
        d_lo = d_hi - d_hi.max()  # type: ignore[union-attr]
    if d_hi is None:
        d_hi = d_lo - d_lo.max()
    for s in range(1, int(gap)):
        t = s / int(gap)
        out[s - 1] = ((1.0 - t) * d_lo + t * d_hi) > 0
    return out
