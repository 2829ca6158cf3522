"""What a guidance strategy receives (:class:`GuidanceRequest`) and what a proposal returns (:class:`Proposal`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np

__all__ = ["GuidanceRequest", "GuidanceStrategy", "Proposal"]


@dataclass(frozen=True)
class Proposal:
    """Slices proposed for the next round, and why.

    Attributes
    ----------
    slices : dict[int, tuple[int, ...]]
        Axis -> proposed slice indices along that axis, sorted ascending; every requested axis is a key
        (an empty tuple where nothing could or needed to be proposed).
    scores : dict[int, ndarray]
        Axis -> float array of length ``shape[axis]``: the per-slice score the strategy ranked or sampled
        by (``"model"``: the summed residual of eq 17; ``"uncertainty"``: the summed entropy; ``"random"``:
        1 on every candidate; ``"uniform"``: 1 on the proposed slices). 0 on drawn slices and on slices
        outside the candidates.
    strategy : str
        The registry name of the strategy that made the proposal.
    ends : dict[int, tuple[str, ...]]
        Axis -> ``("first", "last")``: the annotator is asked for the first and the last slice showing the
        target on that plane, wherever they are (the system does not know the target's extent yet). Empty
        for most proposals.
    """

    slices: dict[int, tuple[int, ...]]
    scores: dict[int, np.ndarray]
    strategy: str
    ends: dict[int, tuple[str, ...]] = field(default_factory=dict)

    @property
    def n_slices(self) -> int:
        """Total number of proposed slices over all axes (an end slice counts as one)."""
        return sum(len(v) for v in self.slices.values()) + sum(len(v) for v in self.ends.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (plain lists and floats) for the ledger or a labeling request."""
        return {
            "strategy": self.strategy,
            "slices": {str(a): [int(i) for i in s] for a, s in self.slices.items()},
            "scores": {str(a): [float(v) for v in s] for a, s in self.scores.items()},
            "ends": {str(a): list(e) for a, e in self.ends.items()},
        }


@dataclass(frozen=True)
class GuidanceRequest:
    """Validated inputs of one proposal, as every strategy receives them (see :func:`propose_slices`).

    Attributes
    ----------
    shape : (int, int, int)
        Volume shape ``(X, Y, Z)``.
    axes : tuple of int
        Axes to propose slices on, unique, each 0, 1 or 2.
    drawn : dict[int, frozenset[int]]
        Slices already drawn (all three axes are keys, possibly empty).
    tau : int
        Slices wanted per axis.
    candidates : dict[int, ndarray]
        Axis -> boolean mask of length ``shape[axis]``: undrawn and inside the extent.
    extent : dict[int, (int, int)]
        Axis -> inclusive ``(lo, hi)`` for every requested axis (the whole axis where none was given).
    proxy, prediction : (X, Y, Z) float ndarray or None
        Soft values in [0, 1].
    w1 : float
        Weight of the model disagreement in eq 17.
    spacing : (float, float, float)
        Voxel spacing used for distances (ones where none was given).
    rng : numpy.random.Generator
    spread : float
        ``"refine"``: slices over which the pull away from drawn slices fades (0: none).
    """

    shape: tuple[int, int, int]
    axes: tuple[int, ...]
    drawn: dict[int, frozenset[int]]
    tau: int
    candidates: dict[int, np.ndarray]
    extent: dict[int, tuple[int, int]]
    proxy: np.ndarray | None
    prediction: np.ndarray | None
    w1: float
    spacing: tuple[float, float, float]
    rng: np.random.Generator
    spread: float


#: A guidance strategy: validated request -> (slices per axis, scores per axis).
GuidanceStrategy: TypeAlias = Callable[
    [GuidanceRequest], "tuple[dict[int, tuple[int, ...]], dict[int, np.ndarray]]"
]
