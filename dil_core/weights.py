"""Confidence maps W: how much the loss trusts each voxel of a proxy mask, from its distance to drawn slices.

The proxy mask is exact on the slices the annotator drew and less reliable the further a voxel lies from
them, so the training loss (equation 9) weights each voxel by a non-increasing function of that distance
(equation 10). Two instantiations come from the paper: an exponential decay (equation 11) and a constant
bonus on the drawn slices (equation 12); ``"none"`` switches weighting off.

The paper writes equation 11 as ``exp(-d)`` with ``d`` in voxels. On a 1 mm hippocampus scan that is 0.05
three voxels from a drawn slice: with one or two slices drawn, almost the whole proxy is silenced, and a cold
segmenter trained that way learns little (6+6 slices gave Dice 0.28 against 0.51 unweighted, see
``bench/README.md``). So the exponential takes a length scale ``length`` and a ``floor``:
``W = floor + (1 - floor) exp(-d / length)``; ``length = 1, floor = 0`` is the paper's equation 11.

A drawn slice on array axis ``a`` at index ``k`` is the plane of voxels with ``x[a] == k``. The distance of
a voxel to the drawn set is the smallest ``|x[a] - k|`` over all drawn ``(a, k)`` (times ``spacing[a]`` when
spacing is given), which equals the Euclidean distance to the nearest drawn voxel because each drawn slice
covers a whole plane.

References
----------
Tian, Chen, Gao (2023), section 2.4, equations 9-12.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np

from dil_core.typing import freeze_drawn

__all__ = ["WEIGHT_SCHEMES", "confidence_map", "distance_to_drawn"]


def _exp_scheme(distance: np.ndarray, omega: float, length: float, floor: float) -> np.ndarray:
    """Equation 11 with a length scale and a floor: ``W = floor + (1 - floor) exp(-d / length)``."""
    del omega
    return floor + (1.0 - floor) * np.exp(-distance / length)


def _constant_scheme(distance: np.ndarray, omega: float, length: float, floor: float) -> np.ndarray:
    """Equation 12: ``W = omega * 1[x in drawn] + 1``; ``length`` and ``floor`` are not used."""
    del length, floor
    return np.where(distance == 0.0, omega + 1.0, 1.0)


def _no_scheme(distance: np.ndarray, omega: float, length: float, floor: float) -> np.ndarray:
    """No weighting: ``W = 1`` everywhere."""
    del omega, length, floor
    return np.ones_like(distance)


#: Weighting schemes ``g`` of equation 10: ``name -> g(distance, omega, length, floor) -> W``. ``distance`` is
#: ``+inf`` everywhere when nothing is drawn (see :func:`confidence_map` for what each scheme then returns).
WEIGHT_SCHEMES: dict[str, Callable[[np.ndarray, float, float, float], np.ndarray]] = {
    "exp": _exp_scheme,
    "constant": _constant_scheme,
    "none": _no_scheme,
}


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        out = tuple(operator.index(s) for s in shape)
    except TypeError as err:
        raise ValueError(f"shape must be three positive integers, got {shape!r}") from err
    if len(out) != 3 or any(s < 1 for s in out):
        raise ValueError(f"shape must be three positive integers, got {shape!r}")
    return out  # type: ignore[return-value]


def _check_spacing(spacing: Sequence[float] | None) -> np.ndarray:
    if spacing is None:
        return np.ones(3)
    try:
        out = np.asarray(spacing, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"spacing must be three positive finite numbers (mm), got {spacing!r}") from err
    if out.shape != (3,) or not np.all(np.isfinite(out)) or np.any(out <= 0):
        raise ValueError(f"spacing must be three positive finite numbers (mm), got {spacing!r}")
    return out


def distance_to_drawn(
    shape: Sequence[int],
    drawn: Mapping[int, Collection[int]],
    *,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Distance of every voxel to the nearest drawn slice, ``d(x, Gamma)`` of equations 10-11.

    Parameters
    ----------
    shape : (int, int, int)
        Volume shape ``(X, Y, Z)``.
    drawn : mapping of int to collection of int
        Drawn slices, ``{axis: indices}`` (array axes 0, 1, 2).
    spacing : (float, float, float), optional
        Millimetres per voxel along each axis; distances are in voxels when omitted.

    Returns
    -------
    (X, Y, Z) ndarray of float64
        ``min over drawn (a, k) of |x[a] - k| * spacing[a]``; ``+inf`` everywhere when nothing is drawn.

    Raises
    ------
    ValueError
        A bad shape or spacing, an axis outside 0-2, or a slice index outside ``[0, shape[axis])``.
    """
    dims = _check_shape(shape)
    step = _check_spacing(spacing)
    frozen = freeze_drawn(drawn)
    out = np.full(dims, np.inf)
    for axis, indices in sorted(frozen.items()):
        if not indices:
            continue
        ks = np.fromiter(sorted(indices), dtype=np.int64)
        if ks[0] < 0 or ks[-1] >= dims[axis]:
            bad = [int(k) for k in ks if k < 0 or k >= dims[axis]]
            raise ValueError(
                f"drawn slices: indices on axis {axis} must lie in [0, {dims[axis]}), got {bad}"
            )
        along = np.abs(np.arange(dims[axis])[:, None] - ks[None, :]).min(axis=1) * step[axis]
        view = [1, 1, 1]
        view[axis] = dims[axis]
        np.minimum(out, along.reshape(view), out=out)
    return out


def confidence_map(
    shape: Sequence[int],
    drawn: Mapping[int, Collection[int]],
    *,
    scheme: str = "exp",
    omega: float = 1.0,
    length: float = 1.0,
    floor: float = 0.0,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Confidence map ``W(x | Gamma)`` that weights the voxel-wise loss of equation 9.

    Parameters
    ----------
    shape : (int, int, int)
        Volume shape ``(X, Y, Z)``.
    drawn : mapping of int to collection of int
        Drawn slices ``Gamma``, ``{axis: indices}`` (array axes 0, 1, 2).
    scheme : {"exp", "constant", "none"}
        ``"exp"``: ``W = floor + (1 - floor) exp(-d(x, Gamma) / length)`` (equation 11 at ``length = 1``,
        ``floor = 0``); ``"constant"``: ``W = omega * 1[x in Gamma] + 1`` (equation 12); ``"none"``: ``W = 1``.
        See :data:`WEIGHT_SCHEMES`.
    omega : float
        Extra confidence on drawn voxels for ``"constant"`` (``omega > 0``); ignored by the other schemes.
    length : float
        Length scale of ``"exp"`` (``> 0``, in the unit of ``d``: mm with ``spacing``, voxels without).
    floor : float
        Weight of ``"exp"`` far from every drawn slice, in ``[0, 1)``.
    spacing : (float, float, float), optional
        Millimetres per voxel; ``d`` is in mm when given, in voxels otherwise.

    Returns
    -------
    (X, Y, Z) ndarray of float32
        The weights, all ``> 0`` except where ``exp(-d)`` underflows (``d`` above ~100).
        With nothing drawn every scheme returns ones: equation 12 gives ones by itself, and for ``"exp"``
        ``exp(-inf) = 0`` everywhere would silence the loss, while no voxel is then more trustworthy than
        another.

    Raises
    ------
    ValueError
        An unknown scheme (the message lists the known ones), ``omega`` or ``length`` not finite and
        positive, ``floor`` outside ``[0, 1)``, or a bad shape, spacing or drawn-slice index.

    References
    ----------
    Tian, Chen, Gao (2023), equations 10-12.
    """
    if scheme not in WEIGHT_SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(WEIGHT_SCHEMES)}, got {scheme!r}")
    g = WEIGHT_SCHEMES[scheme]
    if not (np.isfinite(omega) and omega > 0):
        raise ValueError(f"omega must be finite and > 0 (equation 12), got {omega!r}")
    if not (np.isfinite(length) and length > 0):
        raise ValueError(f"length must be finite and > 0 (the length scale of equation 11), got {length!r}")
    if not (np.isfinite(floor) and 0.0 <= floor < 1.0):
        raise ValueError(f"floor must be in [0, 1) (the least weight of equation 11), got {floor!r}")
    distance = distance_to_drawn(shape, drawn, spacing=spacing)
    if np.isinf(distance).all():
        return np.ones(distance.shape, dtype=np.float32)
    return np.asarray(g(distance, float(omega), float(length), float(floor)), dtype=np.float32)
