"""Input validation of the guidance functions: each ``_check_*`` returns the value normalised or raises ValueError."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np


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
