"""Clinical slice planes (sagittal, coronal, axial) from an image's direction cosines.

ITK, SimpleITK and 3D Slicer's files use LPS physical coordinates: x runs to the patient's Left, y to
Posterior, z to Superior (Slicer *displays* RAS, which only flips the signs of x and y and so names the same
planes). Column ``c`` of the direction matrix is the LPS direction of index axis ``c``. A slice taken
*along* an index axis (fixing that index) is perpendicular to that axis' direction, so

* the index axis nearest L-R (largest ``|x|`` component) gives **sagittal** slices,
* the index axis nearest P-A (largest ``|y|``) gives **coronal** slices,
* the index axis nearest S-I (largest ``|z|``) gives **axial** slices.

A slice number is the image's own voxel index along that axis, as Slicer's data probe shows IJK, so
"sagittal slice 31" of an image whose axis 0 points L-R is ``volume[31, :, :]``.

For strongly oblique images (two index axes nearest the same anatomical axis, beyond 45 degrees) the
mapping is the assignment of index axes to anatomical axes that maximises the summed ``|cos|``, so it is
always a bijection.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dil_core.geometry import Geometry
from dil_core.typing import Plane, Volume

__all__ = ["SliceRef", "axis_of", "extract_slice", "plane_axes", "plane_of", "slice_count"]

#: Anatomical (LPS) axis -> the plane of slices perpendicular to it.
_PLANE_OF_ANATOMICAL: tuple[Plane, Plane, Plane] = (Plane.SAGITTAL, Plane.CORONAL, Plane.AXIAL)

#: Relative tolerance below which a direction matrix counts as singular.
_SINGULAR_TOL = 1e-6


def _direction_matrix(geometry_or_direction: object) -> np.ndarray:
    """Validate and return the ``(3, 3)`` direction matrix (columns = index axes in LPS)."""
    if isinstance(geometry_or_direction, Geometry):
        raw: object = geometry_or_direction.direction
    else:
        raw = geometry_or_direction
    try:
        m = np.asarray(raw, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"direction: expected a Geometry, a 3x3 matrix or 9 numbers, got {type(raw).__name__}"
        ) from err
    if m.shape == (9,):
        m = m.reshape(3, 3)
    if m.shape != (3, 3):
        raise ValueError(f"direction: expected a 3x3 matrix or 9 numbers, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"direction: values must be finite, got {m.ravel().tolist()}")
    norms = np.linalg.norm(m, axis=0)
    if np.any(norms <= _SINGULAR_TOL):
        raise ValueError(f"direction: singular matrix (a zero column), got {m.ravel().tolist()}")
    unit = m / norms
    if abs(np.linalg.det(unit)) <= _SINGULAR_TOL:
        raise ValueError(f"direction: singular matrix (columns not independent), got {m.ravel().tolist()}")
    return unit


def _assignment(unit: np.ndarray) -> tuple[int, int, int]:
    """Anatomical axis (0 = L-R, 1 = P-A, 2 = S-I) of each index axis, as a permutation."""
    cos = np.abs(unit)
    nearest = tuple(int(np.argmax(cos[:, c])) for c in range(3))
    if len(set(nearest)) == 3:
        return nearest  # type: ignore[return-value]
    # Degenerate (oblique beyond 45 degrees): best of the 6 permutations, first one on ties.
    best = max(itertools.permutations(range(3)), key=lambda p: sum(cos[p[c], c] for c in range(3)))
    return best  # type: ignore[return-value]


def plane_axes(geometry_or_direction: Geometry | np.ndarray | Sequence[float]) -> dict[Plane, int]:
    """Which array axis gives sagittal, coronal and axial slices.

    Parameters
    ----------
    geometry_or_direction : Geometry, (3, 3) array-like or 9 numbers
        A scan's geometry, or its direction cosines (row-major as ``SimpleITK.Image.GetDirection()``; column
        ``c`` is the LPS direction of index axis ``c``). Columns need not be unit length.

    Returns
    -------
    dict[Plane, int]
        ``{Plane.SAGITTAL: a, Plane.CORONAL: b, Plane.AXIAL: c}`` with ``{a, b, c} == {0, 1, 2}``: slices
        ``volume[a=i]`` are sagittal, and so on. Each index axis goes to the anatomical axis its direction is
        nearest (largest ``|component|``); if two axes tie for one, the assignment maximising the summed
        ``|cos|`` is used.

    Raises
    ------
    ValueError
        Not 3x3 (or 9 numbers), not finite, or singular.

    Examples
    --------
    >>> plane_axes(np.eye(3))[Plane.AXIAL]
    2
    >>> plane_axes([[0, 1, 0], [0, 0, 1], [1, 0, 0]])  # columns: axis 0 -> S, axis 1 -> L, axis 2 -> P
    {<Plane.SAGITTAL: 'sagittal'>: 1, <Plane.CORONAL: 'coronal'>: 2, <Plane.AXIAL: 'axial'>: 0}
    """
    anatomical = _assignment(_direction_matrix(geometry_or_direction))
    by_plane = {_PLANE_OF_ANATOMICAL[anatomical[c]]: c for c in range(3)}
    return {plane: by_plane[plane] for plane in _PLANE_OF_ANATOMICAL}


def _as_plane(plane: Plane | str) -> Plane:
    try:
        return Plane(plane.lower() if isinstance(plane, str) else plane)
    except ValueError as err:
        known = ", ".join(p.value for p in Plane)
        raise ValueError(f"plane: unknown plane {plane!r}; known: {known}") from err


def _as_axis(axis: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or int(axis) not in (0, 1, 2):
        raise ValueError(f"axis: must be 0, 1 or 2, got {axis!r}")
    return int(axis)


def axis_of(plane: Plane | str, geometry: Geometry | np.ndarray | Sequence[float]) -> int:
    """The array axis whose slices are ``plane`` slices in this geometry.

    Parameters
    ----------
    plane : Plane or str
        ``"sagittal"``, ``"coronal"`` or ``"axial"`` (case-insensitive).
    geometry : Geometry or direction
        As for :func:`plane_axes`.

    Returns
    -------
    int
        0, 1 or 2.

    Raises
    ------
    ValueError
        Unknown plane (the known ones are listed) or a bad direction.
    """
    return plane_axes(geometry)[_as_plane(plane)]


def plane_of(axis: int, geometry: Geometry | np.ndarray | Sequence[float]) -> Plane:
    """The clinical plane of slices taken along array ``axis``.

    Parameters
    ----------
    axis : int
        0, 1 or 2.
    geometry : Geometry or direction
        As for :func:`plane_axes`.

    Returns
    -------
    Plane

    Raises
    ------
    ValueError
        ``axis`` not in {0, 1, 2}, or a bad direction.
    """
    ax = _as_axis(axis)
    return next(plane for plane, a in plane_axes(geometry).items() if a == ax)


def slice_count(geometry: Geometry, plane: Plane | str) -> int:
    """Number of ``plane`` slices in a scan (its size along that plane's axis).

    Parameters
    ----------
    geometry : Geometry
        The scan's geometry.
    plane : Plane or str
        The clinical plane.

    Returns
    -------
    int

    Raises
    ------
    TypeError
        ``geometry`` is not a :class:`Geometry`.
    ValueError
        Unknown plane or a bad direction.
    """
    if not isinstance(geometry, Geometry):
        raise TypeError(f"geometry: expected a dil_core.geometry.Geometry, got {type(geometry).__name__}")
    return int(geometry.size[axis_of(plane, geometry)])


def extract_slice(volume: Volume, axis: int, index: int) -> np.ndarray:
    """The 2D slice ``index`` along array ``axis`` of an ``(X, Y, Z)`` volume (a view, not a copy).

    Parameters
    ----------
    volume : (X, Y, Z) ndarray
        The volume.
    axis : int
        0, 1 or 2.
    index : int
        Slice index, ``0 <= index < volume.shape[axis]`` (negative indices are refused, not wrapped).

    Returns
    -------
    ndarray
        The remaining two axes in their original order, e.g. ``(X, Z)`` for ``axis=1``.

    Raises
    ------
    ValueError
        ``volume`` is not 3D, ``axis`` not in {0, 1, 2}, or ``index`` out of range.
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"volume: expected a 3D (X, Y, Z) array, got shape {vol.shape}")
    ax = _as_axis(axis)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise ValueError(f"index: expected an integer, got {index!r}")
    if not 0 <= int(index) < vol.shape[ax]:
        raise ValueError(f"index: must be in [0, {vol.shape[ax]}) along axis {ax}, got {index}")
    sl: list[slice | int] = [slice(None)] * 3
    sl[ax] = int(index)
    return vol[tuple(sl)]


_SLICE_TEXT = re.compile(r"^\s*(sagittal|coronal|axial)\s+slice\s+(\d+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class SliceRef:
    """A slice named as a clinician names it: a plane and the image's voxel index along that plane's axis.

    Attributes
    ----------
    plane : Plane
        Sagittal, coronal or axial.
    index : int
        Voxel index (0-based, as Slicer's IJK) along the array axis of that plane.

    Examples
    --------
    >>> str(SliceRef(Plane.SAGITTAL, 31))
    'sagittal slice 31'
    >>> SliceRef.parse("Axial slice 7")
    SliceRef(plane=<Plane.AXIAL: 'axial'>, index=7)
    """

    plane: Plane
    index: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "plane", _as_plane(self.plane))
        if isinstance(self.index, bool) or not isinstance(self.index, (int, np.integer)) or self.index < 0:
            raise ValueError(f"index: must be a non-negative integer, got {self.index!r}")
        object.__setattr__(self, "index", int(self.index))

    def __str__(self) -> str:
        return f"{self.plane.value} slice {self.index}"

    def to_axis(self, geometry: Geometry) -> int:
        """The array axis of this slice in ``geometry`` (checks that the index exists there).

        Raises
        ------
        ValueError
            The index is beyond the number of slices on that plane.
        """
        axis = axis_of(self.plane, geometry)
        if isinstance(geometry, Geometry) and self.index >= geometry.size[axis]:
            raise ValueError(
                f"index: {self} does not exist; the scan has {geometry.size[axis]} {self.plane.value} slices "
                f"(0..{geometry.size[axis] - 1})"
            )
        return axis

    @classmethod
    def from_axis(cls, axis: int, index: int, geometry: Geometry) -> SliceRef:
        """Name slice ``index`` along array ``axis`` of a scan."""
        return cls(plane_of(axis, geometry), index)

    @classmethod
    def parse(cls, text: str) -> SliceRef:
        """Read ``"sagittal slice 31"`` (case-insensitive) back into a :class:`SliceRef`.

        Raises
        ------
        ValueError
            ``text`` is not ``"<plane> slice <index>"``.
        """
        match = _SLICE_TEXT.match(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"text: expected '<sagittal|coronal|axial> slice <index>', got {text!r}")
        return cls(Plane(match.group(1).lower()), int(match.group(2)))
