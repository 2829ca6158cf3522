"""The propagation backends, by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np

from dil_core.propagation.ants import register_slice
from dil_core.propagation.mci import mci_between
from dil_core.propagation.nearest import copy_slice
from dil_core.propagation.sdf import aligned_sdf_between, sdf_between

__all__ = ["PROPAGATION_BACKENDS", "PropagationBackend", "get_backend"]

#: ``(fixed_2d, moving_2d, moving_mask_2d) -> 2D mask in [0, 1]``: one undrawn slice from its nearest drawn one.
SliceFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
#: ``(mask_lo, mask_hi, gap) -> (gap - 1, ...) masks``: the slices between two consecutive drawn ones.
IntervalFn = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class PropagationBackend:
    """How one backend fills the undrawn slices of a plane, and how its fused proxy is thresholded.

    Attributes
    ----------
    name : str
        Registry key.
    kind : {"nearest", "interval"}
        ``"nearest"``: every undrawn slice comes from its nearest drawn slice (Algorithm 2), through
        ``slice_fn``; every slice of the axis gets a mask. ``"interval"``: the slices between two consecutive
        drawn slices come from both, through ``interval_fn``; slices outside the drawn range stay empty.
    slice_fn, interval_fn : callable or None
        The one matching ``kind``.
    inclusive : bool
        Threshold of the fused mean at 0.5: ``>= 0.5`` (union of two binary planes) when True, ``> 0.5``
        (intersection) when False. Interpolators leave the outside of their drawn range empty, so a plane
        that is silent must not veto the other: union. Copy and registration fill every slice and overshoot the
        target's ends (the paper's remark after Algorithm 2): intersection.
    description : str
        One line for listings.
    """

    name: str
    kind: Literal["nearest", "interval"]
    inclusive: bool
    description: str
    slice_fn: SliceFn | None = None
    interval_fn: IntervalFn | None = None


PROPAGATION_BACKENDS: dict[str, PropagationBackend] = {
    "ants-affine": PropagationBackend(
        "ants-affine",
        "nearest",
        inclusive=False,
        description="Algorithm 2: ANTs affine registration (mutual information) from the nearest drawn slice",
        slice_fn=partial(register_slice, transform="Affine"),
    ),
    "ants-syn": PropagationBackend(
        "ants-syn",
        "nearest",
        inclusive=False,
        description="Algorithm 2: ANTs affine + SyN registration (mutual information) from the nearest drawn slice",
        slice_fn=partial(register_slice, transform="SyN"),
    ),
    "mci": PropagationBackend(
        "mci",
        "interval",
        inclusive=True,
        description="ITK morphological contour interpolation between consecutive drawn slices (Slicer fill-between)",
        interval_fn=mci_between,
    ),
    "sdf": PropagationBackend(
        "sdf",
        "interval",
        inclusive=True,
        description="linear interpolation of signed distance maps between consecutive drawn slices",
        interval_fn=sdf_between,
    ),
    "sdf-aligned": PropagationBackend(
        "sdf-aligned",
        "interval",
        inclusive=True,
        description="signed distance maps interpolated after moving both to the interpolated centre of mass",
        interval_fn=aligned_sdf_between,
    ),
    "nearest": PropagationBackend(
        "nearest",
        "nearest",
        inclusive=False,
        description="Algorithm 2 without registration: copy of the nearest drawn slice's mask",
        slice_fn=copy_slice,
    ),
}


def get_backend(name: str) -> PropagationBackend:
    """Look up a backend by name.

    Raises
    ------
    ValueError
        If ``name`` is not registered; the message lists the known names.
    """
    try:
        return PROPAGATION_BACKENDS[name]
    except (KeyError, TypeError) as err:
        raise ValueError(f"backend must be one of {sorted(PROPAGATION_BACKENDS)}, got {name!r}") from err
