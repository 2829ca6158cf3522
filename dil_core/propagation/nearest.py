"""Nearest drawn slice (Algorithm 2, line 8) and the plain copy backend."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

__all__ = ["copy_slice", "nearest_drawn"]


def nearest_drawn(drawn: Collection[int], size: int) -> np.ndarray:
    """For each slice index ``j`` in ``[0, size)``, the drawn index ``k* = argmin_k |j - k|``.

    Parameters
    ----------
    drawn : collection of int
        Drawn slice indices, each in ``[0, size)``.
    size : int
        Number of slices along the axis (``d_x`` in Algorithm 2).

    Returns
    -------
    (size,) int64 ndarray
        ``k*`` per slice; ties go to the lower index; ``-1`` everywhere when nothing is drawn.

    Raises
    ------
    ValueError
        If ``size`` is negative or an index lies outside ``[0, size)``.

    References
    ----------
    Algorithm 2, line 8 (Tian, Chen, Gao 2023).
    """
    if int(size) < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    ks = np.array(sorted({int(k) for k in drawn}), dtype=np.int64)
    if ks.size and (ks[0] < 0 or ks[-1] >= size):
        raise ValueError(f"drawn: slice indices must be in [0, {size}), got {ks.tolist()}")
    if ks.size == 0:
        return np.full(int(size), -1, dtype=np.int64)
    j = np.arange(int(size))
    upper = np.clip(np.searchsorted(ks, j, side="left"), 0, ks.size - 1)  # first k >= j (or the last k)
    lower = np.clip(upper - 1, 0, ks.size - 1)
    k_up, k_lo = ks[upper], ks[lower]
    take_lower = np.abs(j - k_lo) <= np.abs(j - k_up)  # ties: the lower index
    return np.where(take_lower, k_lo, k_up)


def copy_slice(fixed_2d: np.ndarray, moving_2d: np.ndarray, moving_mask_2d: np.ndarray) -> np.ndarray:
    """Algorithm 2 without registration: the nearest drawn slice's mask, as is.

    Parameters
    ----------
    fixed_2d, moving_2d : 2D ndarray
        Images of the target and the source slice (unused; kept for the per-slice backend signature).
    moving_mask_2d : 2D ndarray
        The source slice's binary mask.

    Returns
    -------
    2D float32 ndarray
        The mask, as 0.0/1.0.
    """
    return (np.asarray(moving_mask_2d) > 0).astype(np.float32)
