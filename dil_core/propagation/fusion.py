"""Fusing the planes into the proxy mask (sec. 2.4: ``(Upsilon_x + Upsilon_y) / 2``, cut at 0.5)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dil_core.propagation._checks import check_axis, check_volumes
from dil_core.propagation.plane import MapFn, PlaneCache, _propagate
from dil_core.propagation.registry import get_backend

__all__ = ["FUSION_RULES", "ProxyResult", "binarize", "fuse", "proxy_mask"]

#: How plane probabilities combine; ``"mean"`` is the paper's.
FUSION_RULES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda stack: stack.mean(axis=0),
    "max": lambda stack: stack.max(axis=0),
    "min": lambda stack: stack.min(axis=0),
}


def fuse(plane_probs: Sequence[np.ndarray], *, rule: str = "mean") -> np.ndarray:
    """Combine per-plane proxies voxel by voxel.

    Parameters
    ----------
    plane_probs : sequence of (X, Y, Z) ndarray
        One proxy per plane, values in ``[0, 1]``, all of one shape.
    rule : {"mean", "max", "min"}
        ``"mean"`` is the paper's ``(Upsilon_x + Upsilon_y) / 2``; ``"max"``/``"min"`` are the soft union and
        intersection.

    Returns
    -------
    (X, Y, Z) float32 ndarray
        Values in ``[0, 1]``; threshold it with :func:`binarize`.

    Raises
    ------
    ValueError
        If no plane is given, shapes differ, values leave ``[0, 1]`` (or are NaN), or ``rule`` is unknown.

    References
    ----------
    Sec. 2.4, after Algorithm 2 (Tian, Chen, Gao 2023).
    """
    if rule not in FUSION_RULES:
        raise ValueError(f"rule must be one of {sorted(FUSION_RULES)}, got {rule!r}")
    arrays = [np.asarray(p, dtype=np.float32) for p in plane_probs]
    if not arrays:
        raise ValueError("plane_probs must hold at least one plane, got none")
    shape = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.shape != shape:
            raise ValueError(f"plane_probs[{i}] has shape {a.shape}, expected {shape} like plane_probs[0]")
        if not (np.all(a >= 0.0) and np.all(a <= 1.0)):
            raise ValueError(f"plane_probs[{i}] must lie in [0, 1], got values in [{a.min()}, {a.max()}]")
    return FUSION_RULES[rule](np.stack(arrays)).astype(np.float32)


def binarize(prob: np.ndarray, *, backend: str = "mci") -> np.ndarray:
    """Threshold a fused proxy at 0.5 the way its backend needs.

    Interpolating backends (``mci``, ``sdf``) keep ``prob >= 0.5``: with two binary planes, the union, since
    each plane is silent outside its drawn range. Copy and registration backends (``nearest``, ``ants-affine``,
    ``ants-syn``) keep ``prob > 0.5``: the intersection, which removes what one plane spills past the
    target's ends (DESIGN, measured anchors).

    Parameters
    ----------
    prob : ndarray
        Fused proxy, values in ``[0, 1]``.
    backend : str
        Key of :data:`PROPAGATION_BACKENDS`; its ``inclusive`` flag picks ``>=`` or ``>``.

    Returns
    -------
    uint8 ndarray
        0/1 mask of ``prob``'s shape.

    Raises
    ------
    ValueError
        If the backend is unknown.
    """
    spec = get_backend(backend)
    prob = np.asarray(prob)
    return ((prob >= 0.5) if spec.inclusive else (prob > 0.5)).astype(np.uint8)


@dataclass(frozen=True)
class ProxyResult:
    """A proxy mask and how it was made.

    Attributes
    ----------
    prob : (X, Y, Z) float32 ndarray
        Fused soft proxy (mean of the planes; drawn slices set to their masks when ``keep_drawn``).
    mask : (X, Y, Z) uint8 ndarray
        ``binarize(prob, backend=backend)``.
    per_plane : dict[int, ndarray]
        Each drawn axis's plane proxy (Algorithm 2).
    recomputed : dict[int, int]
        Per drawn axis, the number of undrawn slices computed in this call.
    backend : str
        The backend used.
    """

    prob: np.ndarray
    mask: np.ndarray
    per_plane: dict[int, np.ndarray] = field(default_factory=dict)
    recomputed: dict[int, int] = field(default_factory=dict)
    backend: str = "mci"


def proxy_mask(
    image: np.ndarray,
    labels: np.ndarray,
    drawn: Mapping[int, Collection[int]],
    *,
    backend: str = "mci",
    cache: PlaneCache | None = None,
    keep_drawn: bool = True,
    map_fn: MapFn = map,
) -> ProxyResult:
    """The proxy mask of a scan from the slices drawn on its planes (Algorithm 2 per plane, then fusion).

    Each axis with drawn slices gets :func:`propagate_plane`; the planes are averaged (:func:`fuse`) and cut
    at 0.5 (:func:`binarize`). Axes with no drawn slices are left out, so a single drawn axis gives that plane
    alone. With ``keep_drawn`` the drawn slices are then set to exactly what was drawn.

    Parameters
    ----------
    image : (X, Y, Z) ndarray
        The scan.
    labels : (X, Y, Z) ndarray
        Binary masks; only the drawn slices are read.
    drawn : mapping
        ``{axis: slice indices drawn along it}``.
    backend : str
        Key of :data:`PROPAGATION_BACKENDS`.
    cache : PlaneCache, optional
        Kept between rounds of one scan for the incremental update.
    keep_drawn : bool
        Overwrite the drawn slices with the annotator's masks after fusion (a drawn slice is ground truth).
    map_fn : callable
        ``map``-like for the per-slice registrations (see :func:`propagate_plane`).

    Returns
    -------
    ProxyResult

    Raises
    ------
    ValueError
        As :func:`propagate_plane`, and if ``drawn`` is not a mapping of axes.

    References
    ----------
    Algorithm 2 and sec. 2.4 (Tian, Chen, Gao 2023).
    """
    image, labels = check_volumes(image, labels)
    get_backend(backend)
    if not isinstance(drawn, Mapping):
        raise ValueError(f"drawn must be a mapping {{axis: slice indices}}, got {type(drawn).__name__}")
    per_plane: dict[int, np.ndarray] = {}
    recomputed: dict[int, int] = {}
    for axis_key in sorted(drawn, key=lambda a: int(a)):
        axis = check_axis(axis_key)
        if not drawn[axis_key]:
            continue
        per_plane[axis], recomputed[axis] = _propagate(
            image, labels, drawn[axis_key], axis=axis, backend=backend, cache=cache, map_fn=map_fn
        )
    if not per_plane:
        prob = np.zeros(image.shape, dtype=np.float32)
    else:
        prob = fuse(list(per_plane.values()), rule="mean")
    if keep_drawn:
        for axis in per_plane:
            for k in sorted({int(i) for i in drawn[axis]}):
                index = [slice(None)] * 3
                index[axis] = k  # type: ignore[call-overload]
                prob[tuple(index)] = labels[tuple(index)] > 0
    return ProxyResult(
        prob=prob, mask=binarize(prob, backend=backend), per_plane=per_plane, recomputed=recomputed, backend=backend
    )
