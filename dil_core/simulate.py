"""Simulated annotators: a ground-truth oracle that "draws" the requested slices, and random target slices.

In the paper's experiments (sec 3) the user is simulated: asked for a set of slices, it returns the ground
truth on exactly those slices, and by default it picks the slices at random among the *target* slices, those
holding any foreground (sec 2.3, 3.3).

Ground truth is read as binary with foreground ``label > 0``: a multi-label map (hippocampus 0/1/2) is one
target. Negative values or NaN are rejected (no label map has them), as is a map with no foreground (no
target slice to count labor against, eq 3-4).

References
----------
Tian, Chen, Gao (2023), sec 2.3 (eq 3-4), sec 3.3.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np

from dil_core.labor import labor_fraction
from dil_core.typing import RngLike

__all__ = ["GroundTruthOracle", "random_target_slices"]


class GroundTruthOracle:
    """A simulated annotator that draws requested slices from the ground truth.

    Parameters
    ----------
    ground_truth : (X, Y, Z) ndarray
        Full label map; foreground is ``ground_truth > 0``. Bool, integer or float, finite, ``>= 0``,
        with at least one foreground voxel. Copied (later changes to the argument do not leak in).

    Raises
    ------
    ValueError
        If ``ground_truth`` is not 3D, not numeric, has NaN, infinite or negative values, or no foreground.

    Examples
    --------
    >>> gt = np.zeros((4, 4, 4), dtype=np.uint8); gt[1:3, 1:3, 1:3] = 1
    >>> oracle = GroundTruthOracle(gt)
    >>> oracle.target_extent(0)
    (1, 2)
    >>> int(oracle.draw({0: [1]}).sum())
    4
    """

    def __init__(self, ground_truth: np.ndarray) -> None:
        mask = _binary_ground_truth(ground_truth)
        mask.setflags(write=False)
        self._mask = mask
        self._targets: dict[int, frozenset[int]] = {}
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            self._targets[axis] = frozenset(int(i) for i in np.flatnonzero(mask.any(axis=other)))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Volume shape ``(X, Y, Z)``."""
        return self._mask.shape  # type: ignore[return-value]

    @property
    def mask(self) -> np.ndarray:
        """The binary ground truth, ``(X, Y, Z)`` bool, read-only."""
        return self._mask

    def draw(self, requested: Mapping[int, Collection[int]]) -> np.ndarray:
        """Draw the requested slices: the ground truth on them, 0 everywhere else.

        Where requested slices on two axes cross, both carry the same ground truth, so the label volume is
        consistent. A requested slice without foreground comes back empty (the annotator looked at it and
        found no target; see :meth:`labor_of`).

        Parameters
        ----------
        requested : mapping of int to collection of int
            Axis (0, 1, 2) -> slice indices to draw.

        Returns
        -------
        (X, Y, Z) uint8 ndarray
            1 on foreground voxels of the requested slices, 0 elsewhere.

        Raises
        ------
        ValueError
            On an axis outside 0-2, a non-integer index, or an index outside ``[0, shape[axis])``.
        """
        req = self._check_requested(requested)
        covered = np.zeros(self.shape, dtype=bool)
        for axis, indices in req.items():
            if indices:
                index: list[object] = [slice(None)] * 3
                index[axis] = sorted(indices)
                covered[tuple(index)] = True
        return (covered & self._mask).astype(np.uint8)

    def answer(
        self, requested: Mapping[int, Collection[int]], ends: Mapping[int, Collection[str]] | None = None
    ) -> tuple[np.ndarray, dict[int, frozenset[int]]]:
        """Answer a labeling request: the requested slices, plus the first / last target slice of each plane in
        ``ends`` (a request that does not know where the target lies asks for them). Returns the label volume
        and the slices it labels, per axis."""
        drawn = {int(a): set(int(i) for i in v) for a, v in requested.items()}
        for axis, which in (ends or {}).items():
            lo, hi = self.target_extent(axis)
            drawn.setdefault(int(axis), set()).update(({lo} if "first" in which else set()) |
                                                      ({hi} if "last" in which else set()))
        frozen = {a: frozenset(v) for a, v in drawn.items()}
        return self.draw(frozen), frozen

    def target_slices(self, axis: int) -> frozenset[int]:
        """Indices of the slices along ``axis`` with any foreground (the target slices of eq 3-4).

        Raises
        ------
        ValueError
            If ``axis`` is not 0, 1 or 2.
        """
        return self._targets[_check_axis(axis)]

    def target_extent(self, axis: int) -> tuple[int, int]:
        """Inclusive ``(lo, hi)`` range of the target slices along ``axis``.

        Raises
        ------
        ValueError
            If ``axis`` is not 0, 1 or 2.
        """
        targets = self._targets[_check_axis(axis)]
        return min(targets), max(targets)

    def target_slice_counts(self) -> dict[int, int]:
        """Number of target slices per axis: ``n_x, n_y, n_z`` of eq 3."""
        return {axis: len(t) for axis, t in self._targets.items()}

    def labor_of(self, requested: Mapping[int, Collection[int]]) -> dict[int, frozenset[int]]:
        """The slices counted as drawn for a request: every requested slice, per axis.

        A requested slice that holds no foreground is counted too: the annotator had to open and review it
        to find it empty, which is labor (DESIGN, "Submission": an empty requested slice is information).
        Eq 4 counts only target slices because the paper's simulated user only picks target slices; a
        request from guidance may ask for an empty one, and this keeps that cost visible.

        Parameters
        ----------
        requested : mapping of int to collection of int
            Axis (0, 1, 2) -> slice indices.

        Returns
        -------
        dict[int, frozenset[int]]
            Axis -> slice indices, for every axis in ``requested``.

        Raises
        ------
        ValueError
            On an axis outside 0-2 or an index out of range.
        """
        return self._check_requested(requested)

    def labor_fraction(self, requested: Mapping[int, Collection[int]]) -> float:
        """Labor of a request as a fraction of full contouring (eq 4 over ``C(Y)``), see :meth:`labor_of`.

        Raises
        ------
        ValueError
            On an axis outside 0-2 or an index out of range.

        References
        ----------
        Eq 3-4; :func:`dil_core.labor.labor_fraction`.
        """
        return labor_fraction(self.labor_of(requested), self.target_slice_counts())

    def _check_requested(self, requested: Mapping[int, Collection[int]]) -> dict[int, frozenset[int]]:
        if not isinstance(requested, Mapping):
            raise ValueError(f"requested: expected a mapping axis -> slice indices, got {type(requested).__name__}")
        out: dict[int, frozenset[int]] = {}
        for axis, indices in requested.items():
            a = _check_axis(axis, name="requested")
            try:
                idx = frozenset(_as_int(i) for i in indices)
            except (TypeError, ValueError) as err:
                raise ValueError(f"requested[{a}]: expected integer slice indices, got {indices!r}") from err
            bad = sorted(i for i in idx if not 0 <= i < self.shape[a])
            if bad:
                raise ValueError(f"requested[{a}]: indices must be in [0, {self.shape[a] - 1}], got {bad}")
            out[a] = out.get(a, frozenset()) | idx
        return out


def random_target_slices(
    ground_truth: np.ndarray,
    axes: Sequence[int],
    k: int,
    *,
    rng: RngLike = None,
) -> dict[int, frozenset[int]]:
    """``k`` random target slices (slices with foreground) per axis, the paper's default simulated user.

    Parameters
    ----------
    ground_truth : (X, Y, Z) ndarray
        Full label map; foreground is ``> 0`` (as :class:`GroundTruthOracle`).
    axes : sequence of int
        Unique axes among 0, 1, 2; drawn in this order from ``rng``.
    k : int
        Slices per axis, ``>= 0``; all target slices of an axis where it has fewer than ``k``.
    rng : numpy.random.Generator, int or None
        Randomness.

    Returns
    -------
    dict[int, frozenset[int]]
        Axis -> chosen slice indices.

    Raises
    ------
    ValueError
        On a bad ground truth (see :class:`GroundTruthOracle`), axes or ``k``.

    References
    ----------
    Sec 2.3 (random selection as the default user), sec 3.3.
    """
    oracle = GroundTruthOracle(ground_truth)
    try:
        axes_t = tuple(_check_axis(a, name="axes") for a in axes)
    except TypeError as err:
        raise ValueError(f"axes: expected a sequence of axes 0, 1 or 2, got {axes!r}") from err
    if not axes_t or len(set(axes_t)) != len(axes_t):
        raise ValueError(f"axes: expected 1-3 unique axes among 0, 1, 2, got {axes!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k: expected an integer >= 0, got {k!r}")
    gen = np.random.default_rng(rng)
    out: dict[int, frozenset[int]] = {}
    for axis in axes_t:
        targets = np.array(sorted(oracle.target_slices(axis)), dtype=np.int64)
        chosen = gen.choice(targets, size=min(int(k), targets.size), replace=False)
        out[axis] = frozenset(int(i) for i in chosen)
    return out


def _binary_ground_truth(ground_truth: np.ndarray) -> np.ndarray:
    arr = np.asarray(ground_truth)
    if arr.ndim != 3:
        raise ValueError(f"ground_truth: expected an (X, Y, Z) array, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"ground_truth: expected a numeric or bool label map, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("ground_truth: contains NaN or infinite values")
    if arr.dtype.kind in "if" and arr.size and arr.min() < 0:
        raise ValueError(f"ground_truth: label values must be >= 0, got minimum {arr.min()}")
    mask = arr > 0
    if not mask.any():
        raise ValueError(f"ground_truth: no foreground voxel (> 0) in a volume of shape {arr.shape}")
    return mask


def _check_axis(axis: object, *, name: str = "axis") -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis not in (0, 1, 2):
        raise ValueError(f"{name}: axis must be 0, 1 or 2, got {axis!r}")
    return int(axis)


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"not an integer: {value!r}")
    return int(value)
