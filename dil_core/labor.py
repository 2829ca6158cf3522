"""Annotation labor, the paper's equations 3 and 4.

Drawing the whole target on one plane costs the same whatever the plane (eq. 3): ``C(Y) = n_x C_x``. Drawing
the slices ``Gamma_x`` on that plane therefore costs ``|Gamma_x| / n_x`` of a full contouring, and drawing on
several planes adds up (eq. 4). ``n_x`` is the number of *target* slices on the plane: slices that contain any
foreground of the full mask.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ScanLabor", "cumulative_labor", "labor_fraction", "target_slice_counts"]


def target_slice_counts(mask: np.ndarray, *, axes: Iterable[int] = (0, 1, 2)) -> dict[int, int]:
    """Count the slices holding any foreground, per axis: the ``n_x, n_y, n_z`` of eq. 3.

    Parameters
    ----------
    mask : (X, Y, Z) ndarray
        Full target mask; foreground is ``mask > 0``.
    axes : iterable of int
        Array axes to count along.

    Returns
    -------
    dict
        ``{axis: number of slices along axis with foreground}``.

    Raises
    ------
    ValueError
        If ``mask`` is not 3D or an axis is not 0, 1 or 2.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be a 3D (X, Y, Z) array, got shape {mask.shape}")
    fg = mask > 0
    counts: dict[int, int] = {}
    for axis in axes:
        if axis not in (0, 1, 2):
            raise ValueError(f"axes: each axis must be 0, 1 or 2, got {axis!r}")
        other = tuple(a for a in range(3) if a != axis)
        counts[int(axis)] = int(np.count_nonzero(fg.any(axis=other)))
    return counts


def labor_fraction(drawn: Mapping[int, Collection[int] | int], target_slices: Mapping[int, int]) -> float:
    """Fraction of full contouring spent on the drawn slices (eq. 4 divided by ``C(Y)``).

    Parameters
    ----------
    drawn : mapping
        ``{axis: drawn slice indices}`` or ``{axis: number of drawn slices}``.
    target_slices : mapping
        ``{axis: number of target slices on that axis}`` (see :func:`target_slice_counts`).

    Returns
    -------
    float
        ``sum over axes of |Gamma_axis| / n_axis``. 1.0 is the effort of contouring the whole target on one
        plane. It may exceed 1 (drawing more slices on two planes than one full contouring).

    Raises
    ------
    ValueError
        If an axis with drawn slices has no (or a non-positive) target slice count.

    References
    ----------
    Tian, Chen, Gao (2023), eqs. 3-4.
    """
    total = 0.0
    for axis, slices in drawn.items():
        count = slices if isinstance(slices, (int, np.integer)) else len(slices)
        if count < 0:
            raise ValueError(f"drawn: slice count on axis {axis} must be >= 0, got {count}")
        if count == 0:
            continue
        n = target_slices.get(axis)
        if n is None or n <= 0:
            raise ValueError(
                f"target_slices: axis {axis} has {count} drawn slice(s) but target slice count {n!r}; "
                "it must be a positive integer"
            )
        total += count / n
    return float(total)


@dataclass(frozen=True)
class ScanLabor:
    """Labor spent on one scan: slices drawn per axis and the target slice counts they are measured against."""

    case_id: str
    drawn: Mapping[int, int]
    target_slices: Mapping[int, int]
    fraction: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fraction", labor_fraction(self.drawn, self.target_slices))


@dataclass(frozen=True)
class CampaignLabor:
    """Cumulative labor over scans (the paper's Table 7 and Figure 8)."""

    scans: int
    drawn: dict[int, int]
    target_slices: dict[int, int]
    mean_fraction: float
    pooled_fraction: float


def cumulative_labor(scans: Iterable[ScanLabor]) -> CampaignLabor:
    """Aggregate per-scan labor.

    Returns
    -------
    CampaignLabor
        ``drawn`` and ``target_slices`` are summed per axis (Table 7's "C + S" and "full labeling C/S").
        ``mean_fraction`` is the average of per-scan fractions (Figure 8's cumulative average proportion);
        ``pooled_fraction`` weighs scans by their size: ``sum over axes of sum(drawn) / sum(target)`` over the
        axes on which anything was drawn.
    """
    items = list(scans)
    drawn: dict[int, int] = {}
    target: dict[int, int] = {}
    for s in items:
        for axis, n in s.drawn.items():
            drawn[axis] = drawn.get(axis, 0) + int(n)
        for axis, n in s.target_slices.items():
            target[axis] = target.get(axis, 0) + int(n)
    mean = float(np.mean([s.fraction for s in items])) if items else 0.0
    pooled = labor_fraction({a: n for a, n in drawn.items() if n}, target) if items else 0.0
    return CampaignLabor(len(items), drawn, target, mean, pooled)
