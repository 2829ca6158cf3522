"""One scan's state through its rounds (Algorithm 3): what was drawn, the proxy, the segmenter's prediction.

A :class:`ScanSession` is plain state. It changes only through :mod:`dil_core.round` (the one round of the
system), which calls the underscored methods below; everything else reads it. What a method derives from the
state (a refined mask, a soft mask) is cached in :attr:`ScanSession.derived`, which every change clears.

:class:`SessionParams` holds the plain values the rounds need. It has no defaults of its own: the campaign
config's defaults are the only ones, and :func:`dil_core.params.session_params` maps a validated config onto
it in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from dil_core.labor import labor_fraction
from dil_core.preprocess import Preprocessing, from_grid, segmenter_input
from dil_core.propagation import MapFn, PlaneCache, ProxyResult, proxy_mask
from dil_core.typing import freeze_drawn

__all__ = ["ScanSession", "SessionParams"]


@dataclass(frozen=True)
class SessionParams:
    """The values one scan's rounds need, from the campaign config (:func:`dil_core.params.session_params`).

    axes: array axes drawn on (from the clinical planes). tau: slices per axis per round. quota_gamma, n_inter:
    Algorithm 3's bounds. backend: propagation backend (Algorithm 2). strategy / first_round: guidance after
    and before the scan has a prediction (Algorithm 4 / Algorithm 5 line 9). w1: eq. 17. n_f, lambda_l,
    lambda_y, m, weight_scheme, omega, weight_length, weight_floor: training (eqs. 2, 9-12). final_mask: the
    paper method's mask ("proxy" or "proxy+prediction"). method: a name of :data:`dil_core.methods.METHODS`.
    blend_scale, end_steps, resample_every, trust, set_aside, fallback_after, correction_length, spread: the
    ``refine`` method (:mod:`dil_core.methods.refine`). flips: predict with test-time flips.
    """

    axes: tuple[int, ...]
    tau: int
    quota_gamma: int
    n_inter: int
    backend: str
    strategy: str
    first_round: str
    w1: float
    n_f: int
    lambda_l: float
    lambda_y: float
    m: int
    weight_scheme: str
    omega: float
    weight_length: float
    weight_floor: float
    final_mask: Literal["proxy", "proxy+prediction"]
    method: str
    blend_scale: float
    end_steps: int
    resample_every: int | None
    trust: float
    set_aside: float
    fallback_after: int | None
    flips: bool
    correction_length: float
    spread: float

    def __post_init__(self) -> None:
        if not self.axes or len(set(self.axes)) != len(self.axes) or any(a not in (0, 1, 2) for a in self.axes):
            raise ValueError(f"axes must be distinct values among 0, 1, 2, got {self.axes!r}")
        if not (np.isfinite(self.blend_scale) and self.blend_scale > 0):
            raise ValueError(f"blend_scale must be a finite number > 0, got {self.blend_scale!r}")
        if self.end_steps < 0:
            raise ValueError(f"end_steps must be >= 0, got {self.end_steps!r}")


class ScanSession:
    """One scan's state through the rounds of Algorithm 3.

    Parameters
    ----------
    image : (X, Y, Z) ndarray
        The scan, in its own geometry.
    preprocessing : Preprocessing
        Mapping between the scan and the segmenter's working grid.
    params : SessionParams
    spacing : 3 floats or None
        Voxel spacing, for distances in the confidence map and the blend.
    case_id : str
    position : int
        The scan's place in the campaign's queue (0-based); seeds its rounds' randomness.
    seed : bool
        A seed scan: labeled as on a cold start, with no prediction shown (``stopping.seed_scans``).

    Attributes
    ----------
    labels : (X, Y, Z) uint8 ndarray
        The drawn labels (only the drawn slices are meaningful).
    drawn : dict of int to frozenset of int
        ``Gamma``: drawn slices per axis.
    proxy : ProxyResult or None
        Algorithm 2's proxy, fused over planes (None before anything is drawn).
    previous_prediction : (gx, gy, gz) ndarray or None
        ``F_prev(X)`` on the working grid, fixed for the whole scan (Algorithm 5 line 17).
    prediction, prediction_grid : ndarray or None
        The segmenter's current ``F(X)`` in the scan's geometry and on the working grid.
    rounds : int
        Rounds applied so far.
    ends_asked : set of int
        Axes on which the annotator was asked for the first and last slice showing the target; on those the
        target's extent is known from the drawing (:attr:`extent`).
    """

    def __init__(
        self,
        image: np.ndarray,
        *,
        preprocessing: Preprocessing,
        params: SessionParams,
        spacing: Sequence[float] | None = None,
        case_id: str = "",
        position: int = 0,
        seed: bool = False,
    ) -> None:
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 3:
            raise ValueError(f"image must be a 3D (X, Y, Z) array, got shape {image.shape}")
        self.case_id = case_id
        self.position = int(position)
        self.seed = bool(seed)
        self.image = image
        self.preprocessing = preprocessing
        self.params = params
        self.spacing = tuple(float(s) for s in spacing) if spacing is not None else None
        self.image_grid = segmenter_input(preprocessing, image)
        self.labels = np.zeros(image.shape, dtype=np.uint8)
        self.drawn: dict[int, frozenset[int]] = {a: frozenset() for a in params.axes}
        self.proxy: ProxyResult | None = None
        self.previous_prediction: np.ndarray | None = None
        self.prediction: np.ndarray | None = None
        self.prediction_grid: np.ndarray | None = None
        self.rounds = 0
        self.ends_asked: set[int] = set()
        self.started = False
        self.derived: dict[str, Any] = {}
        self._cache = PlaneCache()

    # -- reading -----------------------------------------------------------------------------------------------
    @property
    def n_drawn(self) -> int:
        """``|Gamma|``: slices drawn so far over all axes."""
        return sum(len(v) for v in self.drawn.values())

    def within_budget(self) -> bool:
        """Algorithm 3 line 4: ``|Gamma| < gamma and i < n_inter``."""
        return self.n_drawn < self.params.quota_gamma and self.rounds < self.params.n_inter

    def labor(self, target_slices: Mapping[int, int]) -> float:
        """Fraction of full contouring drawn so far (eq. 4)."""
        return labor_fraction({a: v for a, v in self.drawn.items() if v}, target_slices)

    @property
    def extent(self) -> dict[int, tuple[int, int]]:
        """The target's known extent ``(lo, hi)`` per axis: on axes whose end slices were asked for, the first
        and last drawn slice with any target (the annotator drew them); nothing for other axes."""
        out: dict[int, tuple[int, int]] = {}
        for axis in sorted(self.ends_asked):
            other = tuple(a for a in range(3) if a != axis)
            has = np.asarray(self.labels).any(axis=other)
            hit = [k for k in self.drawn.get(axis, ()) if has[k]]
            if hit:
                out[axis] = (min(hit), max(hit))
        return out

    def drawn_voxels(self) -> np.ndarray:
        """Boolean ``(X, Y, Z)``: voxels on a drawn slice."""
        on = np.zeros(self.image.shape, dtype=bool)
        for axis, idx in self.drawn.items():
            if idx:
                sl: list[Any] = [slice(None)] * 3
                sl[axis] = sorted(idx)
                on[tuple(sl)] = True
        return on

    # -- changes (dil_core.round only) -----------------------------------------------------------------------
    def _changed(self) -> None:
        self.derived.clear()

    def _start(self, previous_prediction: np.ndarray | None) -> None:
        """Fix ``F_prev(X)`` for the scan; it is also the prediction the first round sees (None: cold start)."""
        self.started = True
        self.previous_prediction = None if previous_prediction is None else np.asarray(previous_prediction, np.float32)
        if self.previous_prediction is not None:
            self._set_prediction(self.previous_prediction)
        self._changed()

    def _add_labels(self, labels: np.ndarray, drawn: Mapping[int, Iterable[int]]) -> dict[int, frozenset[int]]:
        """Gamma <- Gamma u Gamma' (Algorithm 3 line 7); returns the slices new to the scan, per axis.

        A slice drawn again replaces its earlier labels (the annotator's latest word counts).

        Raises
        ------
        ValueError
            If ``labels`` does not have the image's shape, or a slice index or axis is out of range.
        """
        labels = np.asarray(labels)
        if labels.shape != self.image.shape:
            raise ValueError(f"labels must have the image's shape {self.image.shape}, got {labels.shape}")
        new: dict[int, frozenset[int]] = {}
        for axis, idx in freeze_drawn(drawn).items():
            for k in idx:
                if not 0 <= k < self.image.shape[axis]:
                    raise ValueError(f"drawn slice {k} on axis {axis} is outside 0..{self.image.shape[axis] - 1}")
                sl: list[Any] = [slice(None)] * 3
                sl[axis] = k
                self.labels[tuple(sl)] = labels[tuple(sl)] > 0
            before = self.drawn.get(axis, frozenset())
            new[axis] = idx - before
            self.drawn[axis] = before | idx
        self._changed()
        return new

    def _count_round(self) -> None:
        self.rounds += 1

    def _ask_ends(self, axes: Iterable[int]) -> None:
        """The round asked for the first and last slice showing the target on ``axes``."""
        self.ends_asked.update(int(a) for a in axes)
        self._changed()

    def _update_proxy(self, *, map_fn: MapFn = map) -> ProxyResult:
        """Algorithm 2 on every drawn axis, incrementally, then fusion (``map_fn`` runs the registrations)."""
        self.proxy = proxy_mask(
            self.image, self.labels, self.drawn, backend=self.params.backend, cache=self._cache, map_fn=map_fn
        )
        self._changed()
        return self.proxy

    def _set_prediction(self, prediction_grid: np.ndarray) -> None:
        """Store ``F(X)`` (working grid) and its mapping back to the scan's geometry."""
        self.prediction_grid = np.asarray(prediction_grid, dtype=np.float32)
        self.prediction = from_grid(self.preprocessing, self.prediction_grid, order=1).astype(np.float32)
        self._changed()
