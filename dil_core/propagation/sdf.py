"""Signed-distance interpolation between two drawn slices, plain or shape-aligned.

Plain linear interpolation of two signed distance maps shrinks a cross-section that moves between the slices:
halfway between two equal discs whose centres are one radius apart it gives the lens where they overlap. A
curved structure such as the hippocampus moves in every slice, so plain interpolation under-segments
(hippocampus, 20 scans, 7 evenly spaced coronal slices: 577 voxels missed against 248 added for MCI, 687
against 109 for plain SDF). The aligned variant first moves both maps to the interpolated centre of mass
(``(1 - t) c_lo + t c_hi``) and then interpolates, so the shape travels along the structure instead of fading
out in one place and in at another; a half-pixel offset of the zero level compensates the erosion that is
left. Measured on those 20 scans (Dice of the proxy from k evenly spaced coronal slices, both ends included):

    ======  =====  =====  ====================
    k       mci    sdf    sdf-aligned (+0.5)
    ======  =====  =====  ====================
    5       0.786  0.771  0.859
    6       0.844  0.831  0.877
    7       0.870  0.869  0.892
    ======  =====  =====  ====================
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import center_of_mass, distance_transform_edt, shift

__all__ = ["ALIGNED_OFFSET", "aligned_sdf_between", "sdf_between", "signed_distance"]

#: Pixels by which :func:`aligned_sdf_between` moves the zero level outwards.
ALIGNED_OFFSET = 0.5


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


def aligned_sdf_between(
    mask_lo: np.ndarray, mask_hi: np.ndarray, gap: int, *, offset: float = ALIGNED_OFFSET
) -> np.ndarray:
    """Masks of the ``gap - 1`` slices between two drawn slices, interpolated after aligning their centres.

    Slice ``t`` of the way from the lower to the upper drawn slice has the centre ``c = (1 - t) c_lo + t c_hi``
    (centres of mass of the two drawn masks). Both signed distance maps are translated so that their centre
    lies at ``c`` (linear resampling, edge values beyond the border), and the slice is
    ``(1 - t) d_lo' + t d_hi' > -offset``. An empty drawn slice erodes the other shape in place, as in
    :func:`sdf_between` (no centre to move to).

    Parameters
    ----------
    mask_lo, mask_hi : 2D ndarray
        Binary masks of the lower and upper drawn slice, same shape.
    gap : int
        Index difference between them (>= 1).
    offset : float
        Pixels the zero level moves outwards (>= 0).

    Returns
    -------
    (gap - 1, *mask_lo.shape) float32 ndarray
        0.0/1.0 masks of the in-between slices, lower first.

    Raises
    ------
    ValueError
        If the masks are not 2D of one shape, ``gap < 1`` or ``offset`` is negative or not finite.
    """
    lo = np.asarray(mask_lo) > 0
    hi = np.asarray(mask_hi) > 0
    if lo.ndim != 2 or lo.shape != hi.shape:
        raise ValueError(f"mask_lo and mask_hi must be 2D of one shape, got {lo.shape} and {hi.shape}")
    if int(gap) < 1:
        raise ValueError(f"gap must be >= 1, got {gap}")
    if not (np.isfinite(offset) and offset >= 0):
        raise ValueError(f"offset must be a finite number >= 0, got {offset!r}")
    out = np.zeros((int(gap) - 1, *lo.shape), dtype=np.float32)
    d_lo, d_hi = _distance_or_none(lo), _distance_or_none(hi)
    if d_lo is None and d_hi is None:
        return out
    c_lo = np.asarray(center_of_mass(lo)) if d_lo is not None else None
    c_hi = np.asarray(center_of_mass(hi)) if d_hi is not None else None
    if d_lo is None:
        d_lo, c_lo = d_hi - d_hi.max(), c_hi  # type: ignore[union-attr]
    if d_hi is None:
        d_hi, c_hi = d_lo - d_lo.max(), c_lo
    for s in range(1, int(gap)):
        t = s / int(gap)
        c = (1.0 - t) * c_lo + t * c_hi  # type: ignore[operator]
        a = shift(d_lo, c - c_lo, order=1, mode="nearest")
        b = shift(d_hi, c - c_hi, order=1, mode="nearest")
        out[s - 1] = ((1.0 - t) * a + t * b) > -offset
    return out
