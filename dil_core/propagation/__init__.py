"""Proxy masks from sparsely drawn slices (Algorithm 2 of Tian, Chen, Gao 2023, sec. 2.4).

``propagate_plane`` fills one plane from the slices drawn on it; ``fuse`` and ``binarize`` merge planes;
``proxy_mask`` does both for every drawn axis; ``PlaneCache`` makes later rounds recompute only the slices that
new drawings change. Backends, by name in :data:`PROPAGATION_BACKENDS`:

- ``ants-affine``, ``ants-syn``: the paper's Algorithm 2, ANTs registration (mutual information) of the nearest
  drawn slice onto each undrawn one (:func:`register_slice`, a pure per-slice function for fan-out);
- ``nearest``: the same without registration (copy);
- ``mci``: ITK morphological contour interpolation between consecutive drawn slices (3D Slicer's
  fill-between), nothing outside the drawn range;
- ``sdf``: linear interpolation of signed distance maps, nothing outside the drawn range;
- ``sdf-aligned``: the same after moving both maps to the interpolated centre of mass (a curved structure's
  cross-section travels instead of shrinking), zero level half a pixel out.

Thresholds of the fused proxy: ``>= 0.5`` (union of two binary planes) for ``mci``/``sdf``/``sdf-aligned``, ``> 0.5``
(intersection) for ``nearest``/``ants-*`` (see :func:`binarize`).
"""

from __future__ import annotations

from dil_core.propagation.ants import ANTS_RANDOM_SEED, ANTS_SETTINGS, register_slice
from dil_core.propagation.fusion import FUSION_RULES, ProxyResult, binarize, fuse, proxy_mask
from dil_core.propagation.mci import mci_between
from dil_core.propagation.nearest import copy_slice, nearest_drawn
from dil_core.propagation.plane import MapFn, PlaneCache, propagate_plane
from dil_core.propagation.registry import PROPAGATION_BACKENDS, PropagationBackend, get_backend
from dil_core.propagation.sdf import aligned_sdf_between, sdf_between, signed_distance

__all__ = [
    "ANTS_RANDOM_SEED",
    "ANTS_SETTINGS",
    "FUSION_RULES",
    "PROPAGATION_BACKENDS",
    "MapFn",
    "PlaneCache",
    "PropagationBackend",
    "aligned_sdf_between",
    "ProxyResult",
    "binarize",
    "copy_slice",
    "fuse",
    "get_backend",
    "mci_between",
    "nearest_drawn",
    "propagate_plane",
    "proxy_mask",
    "register_slice",
    "sdf_between",
    "signed_distance",
]
