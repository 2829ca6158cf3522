"""Morphological contour interpolation (ITK's MorphologicalContourInterpolator, as 3D Slicer's fill-between)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["mci_between"]

_FILTERS: dict[str, Any] = {}


def _itk() -> Any:
    """Import ITK and the filter type once (the first import takes several seconds)."""
    if "itk" not in _FILTERS:
        import itk

        _FILTERS["itk"] = itk
        _FILTERS["image_type"] = itk.Image[itk.UC, 3]
        _FILTERS["filter_type"] = itk.MorphologicalContourInterpolator[_FILTERS["image_type"]]
    return _FILTERS["itk"]


def mci_between(mask_lo: np.ndarray, mask_hi: np.ndarray, gap: int) -> np.ndarray:
    """Masks of the ``gap - 1`` slices strictly between two drawn slices ``gap`` apart, by MCI.

    The two masks are stacked ``gap`` slices apart in a small volume and ITK's
    ``MorphologicalContourInterpolator`` runs along that axis only, with exactly those two slice positions
    marked as labeled (``UseCustomSlicePositions``). Running it per pair of consecutive drawn slices gives the
    same result as one run over the whole axis (MCI matches regions of consecutive labeled slices only), and lets
    an incremental update redo just the intervals that changed. An empty drawn slice means "no target here":
    with extrapolation on, the regions of the other slice shrink towards it and vanish before it.

    Parameters
    ----------
    mask_lo, mask_hi : 2D ndarray
        Binary masks of the lower and upper drawn slice, same shape.
    gap : int
        Index difference between them (>= 1).

    Returns
    -------
    (gap - 1, *mask_lo.shape) float32 ndarray
        0.0/1.0 masks of the in-between slices, lower first.

    Raises
    ------
    ValueError
        If the masks are not 2D of one shape or ``gap < 1``.

    Notes
    -----
    The filter runs on ITK's platform threader with one work unit: with the default thread pool, using this
    filter in a process that also loads SimpleITK or ANTsPy (each with its own ITK) corrupts the heap and aborts
    the interpreter at exit (seen with itk 5.4.7, SimpleITK 2.5.7, antspyx 0.6.3).

    References
    ----------
    Albu, Beugeling, Laurendeau, IEEE TBME 55(8), 2008 (the interpolation); Zukic et al., Insight Journal 2016
    (the ITK filter).
    """
    lo = np.asarray(mask_lo) > 0
    hi = np.asarray(mask_hi) > 0
    if lo.ndim != 2 or lo.shape != hi.shape:
        raise ValueError(f"mask_lo and mask_hi must be 2D of one shape, got {lo.shape} and {hi.shape}")
    gap = int(gap)
    if gap < 1:
        raise ValueError(f"gap must be >= 1, got {gap}")
    if gap == 1 or not (lo.any() or hi.any()):
        return np.zeros((gap - 1, *lo.shape), dtype=np.float32)
    itk = _itk()
    block = np.zeros((gap + 1, *lo.shape), dtype=np.uint8)
    block[0], block[gap] = lo, hi
    image = itk.image_from_array(block)  # numpy axis 0 is ITK index axis 2
    filt = _FILTERS["filter_type"].New()
    filt.SetMultiThreader(itk.PlatformMultiThreader.New())
    filt.SetNumberOfWorkUnits(1)
    filt.SetInput(image)
    filt.SetLabel(1)
    filt.SetAxis(2)
    filt.SetUseExtrapolation(True)
    filt.SetUseCustomSlicePositions(True)
    filt.SetLabeledSliceIndices(2, 1, [0, gap])
    filt.Update()
    out = itk.array_from_image(filt.GetOutput())
    return (out[1:gap] > 0).astype(np.float32)
