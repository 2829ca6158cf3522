"""Algorithm 2 along one plane, with the incremental update that follows it in the paper."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dil_core.propagation._checks import check_axis, check_drawn, check_volumes, drawn_masks, fingerprint
from dil_core.propagation.nearest import nearest_drawn
from dil_core.propagation.registry import PropagationBackend, get_backend

__all__ = ["MapFn", "PlaneCache", "propagate_plane"]

#: ``map``-like: ``map_fn(fn, *iterables) -> iterable of results``; ``executor.map`` of a pool fits.
MapFn = Callable[..., Iterable[Any]]

# Dependency key of one slice: ("drawn", fp) for a drawn slice; (k*, fp_k*) for a nearest-kind backend;
# (lo, fp_lo, hi, fp_hi) for an interval-kind backend between two drawn slices; None outside the drawn range.
_Key = tuple[Any, ...] | None


@dataclass
class _PlaneState:
    image_fp: bytes
    keys: list[_Key]
    result: np.ndarray  # (d, *plane) float32, slice axis first


@dataclass
class PlaneCache:
    """Per-plane results kept between rounds, so that new slices only recompute what they change.

    For each ``(axis, backend)`` it keeps, per slice, what its result was computed from (the nearest drawn
    slice for copy/registration backends, the two bracketing drawn slices for interpolators, and the content of
    those drawn masks) and the result itself. A later call recomputes only the slices whose key changed: for
    Algorithm 2 that is the set ``{j : argmin_{k in Gamma u Gamma'} |j - k| not in Gamma, j not in Gamma'}``
    of the paper. A different image, or a backend seen for the first time, rebuilds the plane.

    Attributes
    ----------
    last_recomputed : dict[int, int]
        Per axis, how many undrawn slices the last call on that axis computed.
    """

    _planes: dict[tuple[int, str], _PlaneState] = field(default_factory=dict, repr=False)
    last_recomputed: dict[int, int] = field(default_factory=dict)

    def clear(self) -> None:
        """Forget every plane."""
        self._planes.clear()
        self.last_recomputed.clear()

    def __len__(self) -> int:
        return len(self._planes)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(list(self._planes))


def _keys(kind: str, size: int, drawn: frozenset[int], fps: dict[int, bytes]) -> list[_Key]:
    keys: list[_Key] = [None] * size
    if not drawn:
        return keys
    ks = sorted(drawn)
    if kind == "nearest":
        nearest = nearest_drawn(ks, size)
        for j in range(size):
            keys[j] = (int(nearest[j]), fps[int(nearest[j])])
    else:
        for lo, hi in zip(ks[:-1], ks[1:], strict=True):
            for j in range(lo + 1, hi):
                keys[j] = (lo, fps[lo], hi, fps[hi])
    for k in ks:
        keys[k] = ("drawn", fps[k])
    return keys


def _propagate(
    image: np.ndarray,
    labels: np.ndarray,
    drawn: Collection[int],
    *,
    axis: int,
    backend: str,
    cache: PlaneCache | None,
    map_fn: MapFn,
) -> tuple[np.ndarray, int]:
    """:func:`propagate_plane`, also returning how many undrawn slices were computed."""
    image, labels = check_volumes(image, labels)
    axis = check_axis(axis)
    spec: PropagationBackend = get_backend(backend)
    if cache is not None and not isinstance(cache, PlaneCache):
        raise TypeError(f"cache must be a PlaneCache or None, got {type(cache).__name__}")
    size = image.shape[axis]
    drawn_set = check_drawn(drawn, size, axis=axis)
    img = np.moveaxis(image, axis, 0)
    lab = np.moveaxis(labels, axis, 0)
    masks = drawn_masks(lab, drawn_set, axis=axis)
    fps = {k: fingerprint(m) for k, m in masks.items()}
    keys = _keys(spec.kind, size, drawn_set, fps)

    image_fp = fingerprint(image) if cache is not None else b""
    state = cache._planes.get((axis, spec.name)) if cache is not None else None
    if state is not None and (state.image_fp != image_fp or state.result.shape != img.shape):
        state = None
    result = state.result.copy() if state is not None else np.zeros(img.shape, dtype=np.float32)

    todo = [j for j in range(size) if j not in drawn_set and keys[j] is not None]
    if state is not None:
        todo = [j for j in todo if state.keys[j] != keys[j]]
    for j in range(size):
        if keys[j] is None:
            result[j] = 0.0
    for k, m in masks.items():
        result[k] = m

    if spec.kind == "nearest":
        assert spec.slice_fn is not None
        sources = [keys[j][0] for j in todo]  # type: ignore[index]
        outputs = map_fn(
            spec.slice_fn, [img[j] for j in todo], [img[k] for k in sources], [masks[k] for k in sources]
        )
        for j, out in zip(todo, outputs, strict=True):
            result[j] = out
    else:
        assert spec.interval_fn is not None
        intervals = sorted({(keys[j][0], keys[j][2]) for j in todo})  # type: ignore[index]
        for lo, hi in intervals:
            result[lo + 1 : hi] = spec.interval_fn(masks[lo], masks[hi], hi - lo)

    if cache is not None:
        cache._planes[(axis, spec.name)] = _PlaneState(image_fp=image_fp, keys=keys, result=result.copy())
        cache.last_recomputed[axis] = len(todo)
    out = np.ascontiguousarray(np.moveaxis(result, 0, axis))
    np.clip(out, 0.0, 1.0, out=out)
    return out, len(todo)


def propagate_plane(
    image: np.ndarray,
    labels: np.ndarray,
    drawn: Collection[int],
    *,
    axis: int,
    backend: str = "mci",
    cache: PlaneCache | None = None,
    map_fn: MapFn = map,
) -> np.ndarray:
    """Proxy mask along one plane from the slices drawn on it (Algorithm 2).

    Drawn slices keep their mask. With a ``"nearest"``-kind backend (``ants-affine``, ``ants-syn``,
    ``nearest``) every other slice ``j`` gets the mask of its nearest drawn slice ``k*`` (ties: the lower index),
    registered from ``X^{k*}`` to ``X^j`` or copied; every slice is filled. With an interpolating backend
    (``mci``, ``sdf``) the slices between two consecutive drawn slices are interpolated from both, and slices
    outside the drawn range stay empty (as 3D Slicer's fill-between leaves them). A drawn slice that is empty
    says "no target here" and propagates as such.

    Parameters
    ----------
    image : (X, Y, Z) ndarray
        The scan, real and finite.
    labels : (X, Y, Z) ndarray
        Binary (0/1) masks; only the drawn slices are read.
    drawn : collection of int
        Indices of the drawn slices along ``axis`` (``Gamma_x``).
    axis : {0, 1, 2}
        Array axis the slices are taken across.
    backend : str
        Key of :data:`PROPAGATION_BACKENDS`.
    cache : PlaneCache, optional
        Results of earlier calls on the same image; only slices whose nearest drawn slice (or bracketing drawn
        slices) changed are recomputed, and the cache is updated.
    map_fn : callable
        ``map``-like used to run the per-slice function of ``"nearest"``-kind backends (for instance
        ``executor.map`` of a pool, to fan registrations out); the default runs them in turn.

    Returns
    -------
    (X, Y, Z) float32 ndarray
        Per-voxel proxy in ``[0, 1]``: binary for ``mci``, ``sdf``, ``nearest``; soft at the boundaries for the
        ANTs backends (linear interpolation of the warped mask). All zeros when nothing is drawn.

    Raises
    ------
    ValueError
        If the shapes differ or are not 3D, the image is not finite, the axis is not 0-2, a slice index is out
        of range, a drawn slice is not binary, or the backend is unknown.
    TypeError
        If ``cache`` is not a :class:`PlaneCache`.

    References
    ----------
    Algorithm 2 and the incremental update after it (Tian, Chen, Gao 2023, sec. 2.4).
    """
    out, _ = _propagate(image, labels, drawn, axis=axis, backend=backend, cache=cache, map_fn=map_fn)
    return out
