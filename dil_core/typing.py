"""Type aliases shared by the core modules."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import TypeAlias

import numpy as np

#: Anything :func:`numpy.random.default_rng` accepts as a seed.
RngLike: TypeAlias = "np.random.Generator | int | None"

#: A 3D volume, ``(X, Y, Z)`` in ITK index order.
Volume: TypeAlias = np.ndarray

#: Drawn slices: array axis -> set of slice indices along that axis.
DrawnSlices: TypeAlias = Mapping[int, frozenset[int]]


def generator_from_state(state: Mapping[str, object]) -> np.random.Generator:
    """A generator continuing from ``state``, a ``Generator.bit_generator.state`` written before.

    Raises
    ------
    AttributeError, KeyError, TypeError, ValueError
        Not such a state (callers name what they were restoring).
    """
    bit_generator = getattr(np.random, state["bit_generator"])()  # type: ignore[arg-type]
    bit_generator.state = state
    return np.random.Generator(bit_generator)


class Plane(str, Enum):
    """Clinical slice planes, named as 3D Slicer and ITK-SNAP name them."""

    SAGITTAL = "sagittal"
    CORONAL = "coronal"
    AXIAL = "axial"


def freeze_drawn(drawn: Mapping[int, object]) -> dict[int, frozenset[int]]:
    """Normalise ``{axis: iterable of indices}`` to ``{axis: frozenset[int]}`` (empty axes kept)."""
    out: dict[int, frozenset[int]] = {}
    for axis, indices in drawn.items():
        if int(axis) not in (0, 1, 2):
            raise ValueError(f"drawn slices: axis must be 0, 1 or 2, got {axis!r}")
        out[int(axis)] = frozenset(int(i) for i in indices)  # type: ignore[union-attr]
    return out
