"""The physical geometry of a scan: size, spacing, origin, direction (as ITK and SimpleITK keep them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """Geometry of a 3D image in ITK's convention.

    Attributes
    ----------
    size : (int, int, int)
        Voxels along ITK index axes i, j, k (the ``(X, Y, Z)`` array shape).
    spacing : (float, float, float)
        Millimetres between voxel centres along i, j, k.
    origin : (float, float, float)
        Physical (LPS) position of voxel ``(0, 0, 0)``.
    direction : tuple of 9 floats
        Direction cosines, row-major as ``SimpleITK.Image.GetDirection()``: column ``c`` of the 3x3 matrix is
        the LPS direction of index axis ``c``.
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @property
    def direction_matrix(self) -> np.ndarray:
        """The direction cosines as a ``(3, 3)`` array; column ``c`` is index axis ``c`` in LPS."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @classmethod
    def from_sitk(cls, image: object) -> Geometry:
        """Read the geometry of a 3D ``SimpleITK.Image``."""
        size = tuple(int(s) for s in image.GetSize())  # type: ignore[attr-defined]
        if len(size) != 3:
            raise ValueError(f"expected a 3D image, got {len(size)}D of size {size}")
        return cls(
            size=size,  # type: ignore[arg-type]
            spacing=tuple(float(s) for s in image.GetSpacing()),  # type: ignore[attr-defined,arg-type]
            origin=tuple(float(o) for o in image.GetOrigin()),  # type: ignore[attr-defined,arg-type]
            direction=tuple(float(d) for d in image.GetDirection()),  # type: ignore[attr-defined]
        )

    def apply_to(self, image: object) -> None:
        """Copy spacing, origin and direction onto a ``SimpleITK.Image`` of the same size."""
        image.SetSpacing(self.spacing)  # type: ignore[attr-defined]
        image.SetOrigin(self.origin)  # type: ignore[attr-defined]
        image.SetDirection(self.direction)  # type: ignore[attr-defined]
