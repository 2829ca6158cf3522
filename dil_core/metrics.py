"""Overlap metrics on binary masks."""

from __future__ import annotations

import numpy as np

__all__ = ["dice"]


def dice(a: np.ndarray, b: np.ndarray, *, empty: float = 1.0) -> float:
    """Dice coefficient ``2|A n B| / (|A| + |B|)`` of two masks (foreground = non-zero).

    Parameters
    ----------
    a, b : ndarray
        Masks of the same shape.
    empty : float
        Value when both masks are empty.

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    a = np.asarray(a) > 0
    b = np.asarray(b) > 0
    if a.shape != b.shape:
        raise ValueError(f"dice: masks must have the same shape, got {a.shape} and {b.shape}")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return float(empty)
    return 2.0 * int(np.logical_and(a, b).sum()) / total
