"""A scan's mask from the segmenter's prediction refined by a few drawn slices (DIL's method beyond the paper).

The paper builds a scan's mask from the drawn slices alone (the proxy of Algorithm 2) and uses the segmenter
only to choose slices and to learn. Once the segmenter has seen a few scans its prediction is closer to the
target than a proxy from two or three slices, so the ``refine`` method starts every scan from the prediction
and lets each drawn slice correct it where it is trusted:

* **Review first.** Before any slice is asked for, the mask is the prediction (its largest connected
  component); a scan whose prediction passes rho costs no drawing at all (in simulation the ground truth
  judges it, in use the physician reviews it and accepts).
* **Blend.** Inside the span of the drawn slices the mask is
  ``w * proxy + (1 - w) * F(X)`` with ``w = exp(-d / scale)``, ``d`` the distance to the nearest drawn slice:
  the drawing near itself, the prediction far from it. Outside that span (where interpolation has nothing to
  say) it is the prediction. Drawn slices are kept exactly, and only components that touch the drawn
  foreground survive.
* **Where to draw** (guidance strategy ``"refine"``): the slice where the prediction's cross-section is
  largest first, then the slice where the blended mask is least sure (largest summed binary entropy).
* **Learning** happens once per scan, on its final mask (``dil_core.session``: the scan's accepted mask
  and ``end_steps`` optimiser steps with the replay of Algorithm 1 redrawn every ``resample_every`` steps),
  not after every round on a proxy from a few slices.

Measured on hippocampus (``bench/labor_to_rho.py``; blend scale chosen on 20 evaluation scans with models after
5 and 10 scans): see ``bench/README.md``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from dil_core.weights import distance_to_drawn

__all__ = ["drawn_span", "keep_connected", "refined_mask", "soft_mask"]


def drawn_span(shape: tuple[int, ...], drawn: Mapping[int, frozenset[int]]) -> np.ndarray:
    """Voxels inside ``[min, max]`` of the drawn slices on every axis that has drawn slices."""
    inside = np.ones(shape, dtype=bool)
    for axis, idx in drawn.items():
        if not idx:
            continue
        line = np.zeros(shape[axis], dtype=bool)
        line[min(idx) : max(idx) + 1] = True
        view = [1, 1, 1]
        view[axis] = shape[axis]
        inside &= line.reshape(view)
    return inside


def soft_mask(
    proxy: np.ndarray | None,
    prediction: np.ndarray | None,
    drawn: Mapping[int, frozenset[int]],
    *,
    scale: float = 3.0,
    spacing: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """The blend of the proxy's and the prediction's probabilities (see the module docstring).

    Parameters
    ----------
    proxy : (X, Y, Z) ndarray or None
        The proxy of Algorithm 2 in ``[0, 1]`` (None before anything is drawn).
    prediction : (X, Y, Z) ndarray or None
        ``F(X)`` in ``[0, 1]`` in the scan's geometry (None on a cold start: the proxy alone).
    drawn : mapping of int to frozenset of int
        The drawn slices per array axis.
    scale : float
        Length of the proxy's weight ``exp(-d / scale)`` (``> 0``; mm with ``spacing``, voxels without).
    spacing : 3 floats, optional
        Voxel spacing for ``d``.

    Returns
    -------
    (X, Y, Z) float32 ndarray in ``[0, 1]``

    Raises
    ------
    ValueError
        Both inputs None, shapes that differ, or ``scale`` not finite and positive.
    """
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    if proxy is None and prediction is None:
        raise ValueError("soft_mask needs a proxy, a prediction or both, got neither")
    if proxy is not None and prediction is not None and np.shape(proxy) != np.shape(prediction):
        raise ValueError(f"proxy shape {np.shape(proxy)} differs from prediction shape {np.shape(prediction)}")
    drawn = {a: v for a, v in drawn.items() if v}
    if prediction is None:
        return np.asarray(proxy, dtype=np.float32)
    pred = np.asarray(prediction, dtype=np.float32)
    if proxy is None or not drawn:
        return pred
    w = np.exp(-distance_to_drawn(pred.shape, drawn, spacing=spacing) / scale).astype(np.float32)
    blended = w * np.asarray(proxy, dtype=np.float32) + (1.0 - w) * pred
    return np.where(drawn_span(pred.shape, drawn), blended, pred).astype(np.float32)


def keep_connected(mask: np.ndarray, seeds: np.ndarray | None) -> np.ndarray:
    """The components of ``mask`` that touch ``seeds``; the largest one where no seed lies in the mask.

    Components are 6-connected (face neighbours), as ``scipy.ndimage.label`` counts by default.
    """
    mask = np.asarray(mask) > 0
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    if seeds is not None:
        keep = np.unique(lab[np.asarray(seeds, dtype=bool) & mask])
        keep = keep[keep > 0]
        if keep.size:
            return np.isin(lab, keep)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def refined_mask(
    proxy: np.ndarray | None,
    prediction: np.ndarray | None,
    labels: np.ndarray,
    drawn: Mapping[int, frozenset[int]],
    *,
    scale: float = 3.0,
    spacing: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """The scan's binary mask: :func:`soft_mask` at 0.5, drawn slices exactly as drawn, connected to the drawing.

    With nothing drawn and no prediction the mask is empty.

    Returns
    -------
    (X, Y, Z) uint8 ndarray
    """
    labels = np.asarray(labels)
    if proxy is None and prediction is None:
        return np.zeros(labels.shape, np.uint8)
    mask = soft_mask(proxy, prediction, drawn, scale=scale, spacing=spacing) >= 0.5
    on = np.zeros(labels.shape, dtype=bool)
    for axis, idx in drawn.items():
        for k in idx:
            sl: list = [slice(None)] * 3
            sl[axis] = k
            mask[tuple(sl)] = labels[tuple(sl)] > 0
            on[tuple(sl)] = True
    return keep_connected(mask, (labels > 0) & on).astype(np.uint8)
