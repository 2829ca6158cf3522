"""Validation at the door and small array helpers shared by the propagation modules."""

from __future__ import annotations

import hashlib
from collections.abc import Collection

import numpy as np


def check_volumes(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``image`` as float32 and ``labels`` as an ndarray after checking shapes and values.

    Raises
    ------
    ValueError
        If either is not 3D, the shapes differ, or ``image`` holds NaN or infinity.
    """
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.ndim != 3:
        raise ValueError(f"image must be a 3D (X, Y, Z) array, got shape {image.shape}")
    if labels.shape != image.shape:
        raise ValueError(f"labels must have the image's shape {image.shape}, got {labels.shape}")
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise ValueError(f"image must hold real numbers, got dtype {image.dtype}")
    if not np.isfinite(image).all():
        raise ValueError("image must be finite, found NaN or infinity")
    return image.astype(np.float32, copy=False), labels


def check_axis(axis: object) -> int:
    """Return ``axis`` as an int in {0, 1, 2}.

    Raises
    ------
    ValueError
        If ``axis`` is not one of 0, 1, 2.
    """
    try:
        value = int(axis)  # type: ignore[call-overload]
    except (TypeError, ValueError) as err:
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}") from err
    if value != axis or value not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    return value


def check_drawn(drawn: Collection[int], size: int, *, axis: int) -> frozenset[int]:
    """Return the drawn slice indices along ``axis`` as a frozenset after checking their range.

    Raises
    ------
    ValueError
        If an index is not an integer or lies outside ``[0, size)``.
    """
    if isinstance(drawn, (str, bytes)):
        raise ValueError(f"drawn (axis {axis}): expected a collection of slice indices, got {drawn!r}")
    out: set[int] = set()
    for index in drawn:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise ValueError(f"drawn (axis {axis}): slice indices must be integers, got {index!r}")
        if not 0 <= int(index) < size:
            raise ValueError(f"drawn (axis {axis}): slice index must be in [0, {size}), got {int(index)}")
        out.add(int(index))
    return frozenset(out)


def drawn_masks(labels_first: np.ndarray, drawn: frozenset[int], *, axis: int) -> dict[int, np.ndarray]:
    """The binary 2D masks of the drawn slices, ``labels_first`` having the slice axis first.

    Raises
    ------
    ValueError
        If a drawn slice holds values other than 0 and 1.
    """
    out: dict[int, np.ndarray] = {}
    for k in sorted(drawn):
        sl = np.asarray(labels_first[k])
        binary = sl.astype(bool)
        if not np.array_equal(binary, sl):
            bad = np.unique(sl[(sl != 0) & (sl != 1)])[:5]
            raise ValueError(f"labels must be binary (0/1) on drawn slices; axis {axis} slice {k} holds {bad.tolist()}")
        out[k] = binary
    return out


def fingerprint(array: np.ndarray) -> bytes:
    """A short content hash of an array (shape, dtype and bytes)."""
    array = np.ascontiguousarray(array)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((array.shape, array.dtype.str)).encode())
    h.update(array.view(np.uint8).reshape(-1) if array.size else b"")
    return h.digest()
