"""A scan's mask from the segmenter's prediction refined by a few drawn slices (DIL's method beyond the paper).

The paper builds a scan's mask from the drawn slices alone (the proxy of Algorithm 2) and uses the segmenter
only to choose slices and to learn. Once the segmenter has seen a few scans its prediction is closer to the
target than a proxy from two or three slices, so the ``refine`` method starts every scan from the prediction
and lets each drawn slice correct it where it is trusted:

* **Review first.** Before any slice is asked for, the mask is the prediction (its largest connected
  component); a scan whose prediction passes rho costs no drawing at all (in simulation the ground truth
  judges it, in use the physician reviews it and accepts).
* **Correct.** The segmenter's errors are alike on neighbouring slices, so a drawn slice's correction of the
  prediction (the difference of the two signed distance maps there) moves the prediction's boundary on the
  undrawn slices too, fading over ``length`` slices (:func:`corrected_prediction`).
* **Blend.** Inside the span of the drawn slices the mask is ``w * proxy + (1 - w) * corrected`` with
  ``w = exp(-d / scale)``, ``d`` the distance to the nearest drawn slice: the interpolated drawing near
  itself, the corrected prediction far from it. Outside that span (where interpolation has nothing to say)
  it is the corrected prediction. Drawn slices are kept exactly, and only components that touch the drawn
  foreground survive.
* **Where to draw** (guidance strategy ``"refine"``): the slice where the prediction's cross-section is
  largest first, then the slice where the soft mask is least sure (largest summed binary entropy), weighted
  by ``1 - exp(-d / spread)`` for a slice ``d`` slices from the nearest drawn one: a drawn slice's
  neighbours are already corrected, so the next slice goes where the drawing has not reached yet.
* **Trust.** While the prediction's Dice with the drawn slices (on them) is below ``trust``, slices are
  evenly spaced, as on a cold start; below ``set_aside``, or still below ``trust`` once ``fallback_after``
  slices are drawn, the prediction is set aside and the mask is the proxy alone, so that a segmenter that is
  wrong on this scan costs about what interpolation costs. (Setting it aside
  at the same bar as ``trust``, 0.75, cost more than it saved: 0.164 of full contouring on the 40-scan
  benchmark stream against 0.123; a single drawn slice often agrees less than that with a good prediction.)
* **Learning** happens once per scan, on its final mask (``dil_core.session``: the scan's accepted mask
  and ``end_steps`` optimiser steps with the replay of Algorithm 1 redrawn every ``resample_every`` steps),
  not after every round on a proxy from a few slices.

Chosen on the 20 evaluation scans of the benchmarks (hippocampus; UNet 16-128 trained on the first 3, 5 and
10 stream scans with full ground truth, predictions with test-time flips; ``bench/refine_choices.py``): coronal
slices drawn until Dice 0.85, mean per scan (the first three rows draw the largest section, then the most
uncertain slice; the last two are the whole method, trust and set-aside included),

    =============================================  ========  ========  =========
    mask                                           3 scans   5 scans   10 scans
    =============================================  ========  ========  =========
    blend of proxy and prediction (scale 3)        5.95      2.85      0.75
    corrected prediction alone (length 6)          7.05      1.95      0.85
    blend of proxy and corrected prediction        6.85      1.75      0.60
    the method, slices by entropy alone            4.60      1.75      0.60
    the method, slices kept apart (spread 2)       4.35      1.80      0.60
    =============================================  ========  ========  =========

and on the stream itself, where the segmenter learns from the masks: ``bench/labor_to_rho.py``
(``bench/README.md``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from dil_core.weights import distance_to_drawn

__all__ = ["corrected_prediction", "drawn_span", "keep_connected", "refined_mask", "soft_mask"]

#: Signed distances (pixels) are clipped to this radius before corrections are taken.
SDF_RADIUS = 5.0


def _clipped_sdf(mask_2d: np.ndarray, radius: float) -> np.ndarray:
    """2D signed distance (pixels; positive inside, +-1/2 on the first pixel either side), clipped to the radius."""
    inside = np.asarray(mask_2d) > 0
    if not inside.any():
        return np.full(inside.shape, -radius, np.float32)
    if inside.all():
        return np.full(inside.shape, radius, np.float32)
    d = np.where(inside, ndimage.distance_transform_edt(inside) - 0.5, 0.5 - ndimage.distance_transform_edt(~inside))
    return np.clip(d, -radius, radius).astype(np.float32)


def corrected_prediction(
    prediction: np.ndarray,
    labels: np.ndarray,
    drawn: Mapping[int, frozenset[int]],
    *,
    length: float = 6.0,
    radius: float = SDF_RADIUS,
) -> np.ndarray:
    """The prediction moved, slice by slice, by the corrections the drawn slices make to it.

    On each axis with drawn slices, every slice of ``F(X) >= 0.5`` becomes a 2D signed distance map ``phi_j``
    (clipped to ``radius``). A drawn slice ``k`` says how far the prediction's boundary is off there:
    ``delta_k = sdf(drawn_k) - phi_k``. The segmenter's errors are alike on neighbouring slices (a boundary
    one voxel too far out on one slice is so on the next), so each undrawn slice ``j`` takes the correction of
    its nearest drawn slice ``k``, fading with the distance: ``phi_j + exp(-|j - k| / length) delta_k > 0``.
    Drawn slices come out exactly as drawn. With several drawn axes, the corrected masks are averaged.

    Parameters
    ----------
    prediction : (X, Y, Z) ndarray
        ``F(X)`` in ``[0, 1]``.
    labels : (X, Y, Z) ndarray
        The drawn labels (binary on the drawn slices).
    drawn : mapping of int to frozenset of int
        The drawn slices per array axis.
    length : float
        Slices over which a correction fades by ``1/e`` (``> 0``).
    radius : float
        Clip of the signed distances (``> 0``): a correction never moves a boundary further than this.

    Returns
    -------
    (X, Y, Z) float32 ndarray
        The corrected mask as 0/1 values (a mean of them with several drawn axes); the prediction's own cut at
        0.5 where nothing is drawn.

    Raises
    ------
    ValueError
        Shapes that differ, or ``length`` / ``radius`` not finite and positive.
    """
    pred = np.asarray(prediction, dtype=np.float32)
    labels = np.asarray(labels)
    if pred.shape != labels.shape or pred.ndim != 3:
        raise ValueError(f"prediction {pred.shape} and labels {labels.shape} must share one 3D shape")
    for name, v in (("length", length), ("radius", radius)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    axes = {a: sorted(v) for a, v in drawn.items() if v}
    if not axes:
        return (pred >= 0.5).astype(np.float32)
    out = np.zeros(pred.shape, np.float32)
    for axis, ks in axes.items():
        p = np.moveaxis(pred >= 0.5, axis, 0)
        lab = np.moveaxis(labels > 0, axis, 0)
        delta = {k: _clipped_sdf(lab[k], radius) - _clipped_sdf(p[k], radius) for k in ks}
        ks_arr = np.asarray(ks)
        corrected = np.empty(p.shape, dtype=bool)
        for j in range(p.shape[0]):
            k = int(ks_arr[np.argmin(np.abs(ks_arr - j))])  # nearest drawn slice (the lower one on a tie)
            if j == k:
                corrected[j] = lab[j]
                continue
            corrected[j] = _clipped_sdf(p[j], radius) + np.exp(-abs(j - k) / length) * delta[k] > 0
        out += np.moveaxis(corrected, 0, axis)
    return out / len(axes)


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
