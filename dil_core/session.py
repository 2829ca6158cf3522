"""Rounds on one scan (Algorithm 3) and a stream of scans (Algorithm 5), as pure, steppable state.

A :class:`ScanSession` holds what one scan's rounds need: the image, the slices drawn so far and their labels,
the proxy mask, the segmenter's prediction, and the smoothing target's ``F_prev(X)``. Each step of a round is
one method, so the flows can run the steps one at a time (with the ledger in between) and :func:`run_scan` /
:func:`run_stream` can run them all in one process for simulation and benchmarks.

One round (Algorithm 3 lines 5-14, Algorithm 5 lines 8-25)::

    proposal = session.propose(rng=...)                 # Algorithm 4 (or random on a cold start)
    labels = annotator(proposal.slices)                 # the physician, or the ground-truth oracle
    session.add_labels(labels, drawn)                   # Gamma <- Gamma u Gamma'
    session.update_proxy()                              # Algorithm 2, incremental, fused over planes
    image, target, weight = session.training_sample()   # eq. 2 smoothed target, eqs. 10-12 weights
    trainer.train_round(image, target, weight, ...)     # eq. 9, n_F steps with replay
    trainer.end_of_round_update((image, target, weight))  # Algorithm 1
    session.set_prediction(predict(trainer.model, image))

That is ``method="paper"``. With ``method="refine"`` (``dil_core.refine``) the scan starts from ``F_prev(X)``
(a scan whose prediction passes costs nothing), each round propagates and blends but trains nothing, and the
segmenter learns once, from the scan's final mask, in :func:`finish_scan`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from dil_core.guidance import Proposal, propose_slices
from dil_core.labor import labor_fraction
from dil_core.metrics import dice
from dil_core.models import predict
from dil_core.preprocess import Preprocessing, from_grid, segmenter_input, to_grid
from dil_core.propagation import MapFn, PlaneCache, ProxyResult, proxy_mask
from dil_core.refine import corrected_prediction, refined_mask, soft_mask
from dil_core.training import Trainer, smoothed_target
from dil_core.typing import RngLike, freeze_drawn
from dil_core.weights import confidence_map

__all__ = ["RoundRecord", "ScanSession", "SessionParams", "final_mask", "finish_scan", "run_scan", "run_stream"]


@dataclass(frozen=True)
class SessionParams:
    """Plain values the rounds need (taken from the campaign config at the flow boundary).

    axes: array axes drawn on (from the clinical planes). tau: slices per axis per round. quota_gamma, n_inter:
    Algorithm 3's bounds. rho: the quality bar. backend: propagation backend. strategy / first_round: guidance
    strategies after and before the segmenter has trained. w1: eq. 17. n_f, lambda_l, lambda_y, m,
    weight_scheme, omega, weight_length, weight_floor: training (eqs. 2, 9-12). final_mask: "proxy" or
    "proxy+prediction" (the paper's method).

    method: "paper" (train n_f steps after every round, the mask is the proxy) or "refine" (``dil_core.refine``:
    the mask is the prediction refined by the drawn slices, blended over ``blend_scale``; no training during
    the scan; ``end_steps`` steps on the final mask when the scan finishes, replay redrawn every
    ``resample_every`` steps). trust: with "refine", while the prediction's Dice with the drawn slices (on
    them) is below ``trust``, slices are chosen by ``first_round`` instead of ``strategy``, and below
    ``set_aside`` the mask is the proxy alone;
    correction_length: slices over which a drawn slice's correction of the prediction fades
    (``dil_core.refine.corrected_prediction``). spread: slices over which the ``"refine"`` guidance's pull away
    from drawn slices fades (``dil_core.guidance.propose_slices``). flips: predict with test-time flips
    (``dil_core.models.predict``).
    """

    axes: tuple[int, ...]
    tau: int = 1
    quota_gamma: int = 40
    n_inter: int = 20
    rho: float = 0.85
    backend: str = "mci"
    strategy: str = "model"
    first_round: str = "random"
    w1: float = 0.5
    n_f: int = 20
    lambda_l: float = 0.5
    lambda_y: float = 0.8
    m: int = 2
    weight_scheme: str = "exp"
    omega: float = 1.0
    weight_length: float = 1.0
    weight_floor: float = 0.0
    final_mask: Literal["proxy", "proxy+prediction"] = "proxy"
    method: Literal["paper", "refine"] = "paper"
    blend_scale: float = 3.0
    end_steps: int = 0
    resample_every: int | None = None
    trust: float = 0.0
    set_aside: float = 0.0
    fallback_after: int | None = None
    flips: bool = False
    correction_length: float = 6.0
    spread: float = 2.0

    def __post_init__(self) -> None:
        if not self.axes or len(set(self.axes)) != len(self.axes) or any(a not in (0, 1, 2) for a in self.axes):
            raise ValueError(f"axes must be distinct values among 0, 1, 2, got {self.axes!r}")
        if self.method not in ("paper", "refine"):
            raise ValueError(f"method must be 'paper' or 'refine', got {self.method!r}")
        if not (np.isfinite(self.blend_scale) and self.blend_scale > 0):
            raise ValueError(f"blend_scale must be a finite number > 0, got {self.blend_scale!r}")
        if self.end_steps < 0:
            raise ValueError(f"end_steps must be >= 0, got {self.end_steps!r}")


@dataclass(frozen=True)
class RoundRecord:
    """What one round did, for the callback, the ledger and the benchmarks."""

    case_id: str
    round: int
    requested: dict[int, tuple[int, ...]]
    drawn_total: dict[int, int]
    proxy_slices_recomputed: dict[int, int]
    losses: tuple[float, ...]
    metrics: dict[str, float] = field(default_factory=dict)


def _range_mask(shape: tuple[int, ...], drawn: Mapping[int, frozenset[int]]) -> np.ndarray:
    """Voxels inside the span of drawn slices on every axis with drawn slices."""
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


def final_mask(
    proxy: np.ndarray,
    prediction: np.ndarray | None,
    labels: np.ndarray,
    drawn: Mapping[int, frozenset[int]],
    *,
    mode: Literal["proxy", "proxy+prediction"] = "proxy",
) -> np.ndarray:
    """The scan's mask: the binary proxy, optionally completed by the segmenter where no slice was drawn.

    Parameters
    ----------
    proxy : (X, Y, Z) ndarray
        Binary proxy mask (Algorithm 2, fused).
    prediction : (X, Y, Z) ndarray or None
        Segmenter probabilities in the scan's geometry.
    labels, drawn
        The annotator's slices; they are always kept exactly as drawn.
    mode : {"proxy", "proxy+prediction"}
        ``"proxy+prediction"`` takes ``prediction >= 0.5`` outside the span of drawn slices (where interpolating
        propagation has nothing to say) and the proxy inside it.

    Returns
    -------
    (X, Y, Z) uint8 ndarray
    """
    mask = (np.asarray(proxy) > 0).astype(np.uint8)
    if mode == "proxy+prediction" and prediction is not None:
        outside = ~_range_mask(mask.shape, drawn)
        mask[outside] = (prediction[outside] >= 0.5).astype(np.uint8)
    elif mode not in ("proxy", "proxy+prediction"):
        raise ValueError(f"mode must be 'proxy' or 'proxy+prediction', got {mode!r}")
    for axis, idx in drawn.items():
        for k in idx:
            sl = [slice(None)] * 3
            sl[axis] = k
            mask[tuple(sl)] = labels[tuple(sl)] > 0
    return mask


class ScanSession:
    """One scan's state through the rounds of Algorithm 3.

    Parameters
    ----------
    image : (X, Y, Z) ndarray
        The scan, in its own geometry.
    preprocessing : Preprocessing
        Mapping between the scan and the segmenter's working grid.
    params : SessionParams
    previous_prediction : (gx, gy, gz) ndarray or None
        ``F_prev(X)`` on the working grid, from the segmenter as it was when the scan started (Algorithm 5
        line 17 keeps it fixed during the scan). None on a cold start.
    spacing : 3 floats or None
        Voxel spacing, for distances in the confidence map.
    """

    def __init__(
        self,
        image: np.ndarray,
        *,
        preprocessing: Preprocessing,
        params: SessionParams,
        previous_prediction: np.ndarray | None = None,
        spacing: Sequence[float] | None = None,
        case_id: str = "",
    ) -> None:
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 3:
            raise ValueError(f"image must be a 3D (X, Y, Z) array, got shape {image.shape}")
        self.case_id = case_id
        self.image = image
        self.preprocessing = preprocessing
        self.params = params
        self.spacing = tuple(spacing) if spacing is not None else None
        self.image_grid = segmenter_input(preprocessing, image)
        self.previous_prediction = previous_prediction
        self.labels = np.zeros(image.shape, dtype=np.uint8)
        self.drawn: dict[int, frozenset[int]] = {a: frozenset() for a in params.axes}
        self.cache = PlaneCache()
        self.proxy: ProxyResult | None = None
        self.prediction: np.ndarray | None = None
        self.prediction_grid: np.ndarray | None = None
        self.rounds = 0

    # -- bookkeeping --------------------------------------------------------------------------------------
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

    # -- the steps of a round ------------------------------------------------------------------------------
    def propose(self, *, rng: RngLike = None, extent: Mapping[int, tuple[int, int]] | None = None) -> Proposal:
        """Choose the next slices (Algorithm 4; ``first_round`` strategy until the segmenter has predicted).

        The proposal never exceeds the quota: ``tau`` per axis, trimmed so that ``|Gamma|`` stays <= gamma.
        """
        trained = self.prediction is not None
        strategy = self.params.strategy if trained else self.params.first_round
        proxy = self.proxy.prob if self.proxy is not None else np.zeros(self.image.shape, np.float32)
        prediction = self.prediction
        if self.params.method == "refine" and trained:
            # the guidance looks at the current soft mask; a prediction the drawing contradicts is not followed
            prediction = self.soft()
            if self.agreement() < self.params.trust:
                strategy = self.params.first_round
        proposal = propose_slices(
            shape=self.image.shape,
            axes=self.params.axes,
            drawn=self.drawn,
            tau=self.params.tau,
            strategy=strategy,
            proxy=proxy,
            prediction=prediction,
            w1=self.params.w1,
            rng=rng,
            spacing=self.spacing,
            extent=extent,
            spread=self.params.spread,
        )
        left = self.params.quota_gamma - self.n_drawn
        if sum(len(v) for v in proposal.slices.values()) > left:
            trimmed: dict[int, tuple[int, ...]] = {}
            for axis in sorted(proposal.slices, key=lambda a: self.params.axes.index(a)):
                take = proposal.slices[axis][: max(left, 0)]
                left -= len(take)
                trimmed[axis] = take
            proposal = Proposal(slices=trimmed, scores=proposal.scores, strategy=proposal.strategy)
        return proposal

    def add_labels(self, labels: np.ndarray, drawn: Mapping[int, Iterable[int]]) -> None:
        """Gamma <- Gamma u Gamma' (Algorithm 3 line 7): copy the drawn slices of ``labels`` into the session.

        A round may bring several label files; counting rounds (``rounds``) is the caller's, once per round.

        Raises
        ------
        ValueError
            If ``labels`` does not have the image's shape or a slice index is out of range.
        """
        labels = np.asarray(labels)
        if labels.shape != self.image.shape:
            raise ValueError(f"labels must have the image's shape {self.image.shape}, got {labels.shape}")
        new = freeze_drawn(drawn)
        for axis, idx in new.items():
            for k in idx:
                if not 0 <= k < self.image.shape[axis]:
                    raise ValueError(f"drawn slice {k} on axis {axis} is outside 0..{self.image.shape[axis] - 1}")
                sl: list[Any] = [slice(None)] * 3
                sl[axis] = k
                self.labels[tuple(sl)] = labels[tuple(sl)] > 0
            self.drawn[axis] = self.drawn.get(axis, frozenset()) | idx

    def update_proxy(self, *, map_fn: MapFn = map) -> ProxyResult:
        """Algorithm 2 on every drawn axis, incrementally, then fusion.

        ``map_fn`` runs the per-slice registrations (``map``-like); the flows pass one that fans them out as
        tasks.
        """
        self.proxy = proxy_mask(
            self.image, self.labels, self.drawn, backend=self.params.backend, cache=self.cache, map_fn=map_fn
        )
        return self.proxy

    def training_sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The new sample of eq. 9 on the working grid: image, smoothed target (eq. 2), weights (eqs. 10-12)."""
        if self.params.method == "refine":
            # the scan's final mask: the drawn slices, the proxy near them, the prediction far from them
            target = to_grid(self.preprocessing, self.mask().astype(np.float32), order=1)
        elif self.proxy is None:
            raise RuntimeError("update_proxy() must run before training_sample()")
        else:
            target = to_grid(self.preprocessing, self.proxy.mask.astype(np.float32), order=1)
            target = smoothed_target(self.previous_prediction, target, lambda_y=self.params.lambda_y)
        weight = confidence_map(
            self.image.shape,
            self.drawn,
            scheme=self.params.weight_scheme,
            omega=self.params.omega,
            length=self.params.weight_length,
            floor=self.params.weight_floor,
            spacing=self.spacing,
        )
        weight = to_grid(self.preprocessing, weight, order=1)
        return self.image_grid, np.clip(target, 0.0, 1.0).astype(np.float32), weight.astype(np.float32)

    def set_prediction(self, prediction_grid: np.ndarray) -> None:
        """Store ``F(X)`` (working grid) and its mapping back to the scan's geometry."""
        self.prediction_grid = np.asarray(prediction_grid, dtype=np.float32)
        self.prediction = from_grid(self.preprocessing, self.prediction_grid, order=1).astype(np.float32)

    def mask(self) -> np.ndarray:
        """The scan's current mask (:func:`final_mask`; ``dil_core.refine.refined_mask`` for ``refine``)."""
        if self.params.method == "refine":
            proxy = self.proxy.prob if self.proxy is not None else None
            return refined_mask(
                proxy, self.corrected(), self.labels, self.drawn, scale=self.params.blend_scale, spacing=self.spacing
            )
        proxy = self.proxy.mask if self.proxy is not None else np.zeros(self.image.shape, np.uint8)
        return final_mask(proxy, self.prediction, self.labels, self.drawn, mode=self.params.final_mask)

    def corrected(self) -> np.ndarray | None:
        """``refine``: the prediction corrected by the drawn slices (``dil_core.refine.corrected_prediction``);
        None without a prediction, or while the prediction agrees with the drawing less than ``set_aside`` (the
        mask is then the proxy alone)."""
        if self.prediction is None:
            return None
        agreement = self.agreement()
        fallback = self.params.fallback_after
        if agreement < self.params.set_aside or (
            fallback is not None and self.n_drawn >= fallback and agreement < self.params.trust
        ):
            return None
        return corrected_prediction(self.prediction, self.labels, self.drawn, length=self.params.correction_length)

    def soft(self) -> np.ndarray:
        """``refine``: what guidance looks at, the mean of ``F(X)`` and the soft blend of proxy and corrected
        prediction (``dil_core.refine.soft_mask``): uncertain where the prediction is, or where the drawing
        moved it."""
        proxy = self.proxy.prob if self.proxy is not None else None
        corrected = self.corrected()
        if proxy is None and corrected is None:
            return np.zeros(self.image.shape, np.float32)
        blend = soft_mask(proxy, corrected, self.drawn, scale=self.params.blend_scale, spacing=self.spacing)
        return blend if self.prediction is None else 0.5 * (self.prediction + blend)

    def agreement(self) -> float:
        """Dice of ``F(X) >= 0.5`` with the drawn labels, on the drawn slices (1.0 with nothing to compare)."""
        if self.prediction is None or not self.n_drawn:
            return 1.0
        on = np.zeros(self.image.shape, dtype=bool)
        for axis, idx in self.drawn.items():
            if idx:
                sl: list[Any] = [slice(None)] * 3
                sl[axis] = sorted(idx)
                on[tuple(sl)] = True
        return dice(self.labels[on] > 0, self.prediction[on] >= 0.5, empty=1.0)


Annotator = Callable[[Mapping[int, tuple[int, ...]]], np.ndarray]


class StopRule(Protocol):
    def __call__(self, session: ScanSession) -> bool: ...


def run_round(
    session: ScanSession,
    trainer: Trainer,
    annotator: Annotator,
    *,
    rng: np.random.Generator,
    extent: Mapping[int, tuple[int, int]] | None = None,
) -> RoundRecord:
    """One round of Algorithm 3 (lines 5-14) on ``session``, training ``trainer`` in place."""
    proposal = session.propose(rng=rng, extent=extent)
    requested = {a: s for a, s in proposal.slices.items() if s}
    labels = annotator(requested)
    session.add_labels(labels, requested)
    session.rounds += 1
    proxy = session.update_proxy()
    losses: tuple[float, ...] = ()
    if session.params.method == "paper":
        image, target, weight = session.training_sample()
        if session.params.n_f > 0:
            stats = trainer.train_round(
                image, target, weight, n_steps=session.params.n_f, lambda_l=session.params.lambda_l, m=session.params.m
            )
            losses = tuple(float(x) for x in stats.losses)
        trainer.end_of_round_update((image, target, weight))
        session.set_prediction(predict(trainer.model, image, device=trainer.device, flips=session.params.flips))
    metrics = {}
    if session.prediction is not None:
        metrics["dice_proxy_prediction"] = dice(proxy.mask, session.prediction >= 0.5)
    return RoundRecord(
        case_id=session.case_id,
        round=session.rounds,
        requested={a: tuple(s) for a, s in requested.items()},
        drawn_total={a: len(v) for a, v in session.drawn.items()},
        proxy_slices_recomputed=dict(proxy.recomputed),
        losses=losses,
        metrics=metrics,
    )


def run_scan(
    session: ScanSession,
    trainer: Trainer,
    annotator: Annotator,
    *,
    stop: StopRule,
    rng: RngLike = None,
    extent: Mapping[int, tuple[int, int]] | None = None,
    on_round: Callable[[ScanSession, RoundRecord], None] | None = None,
) -> ScanSession:
    """Algorithm 3: rounds on one scan until ``stop(session)``, the quota gamma or ``n_inter`` rounds.

    References
    ----------
    Tian, Chen, Gao (2023), Algorithm 3.
    """
    gen = np.random.default_rng(rng)
    if session.params.method == "refine" and session.prediction is not None and stop(session):
        return session  # the prediction passes as it is: nothing to draw
    while session.within_budget():
        record = run_round(session, trainer, annotator, rng=gen, extent=extent)
        if on_round is not None:
            on_round(session, record)
        if stop(session):
            break
    return session


def finish_scan(session: ScanSession, trainer: Trainer) -> tuple[float, ...]:
    """``refine``: train on the scan's final mask, ``end_steps`` steps with replay, then store it for replay.

    Returns the losses; nothing happens for ``method="paper"`` (it trained after every round) or with
    ``end_steps = 0``.
    """
    p = session.params
    if p.method != "refine" or p.end_steps == 0:
        return ()
    sample = session.training_sample()
    stats = trainer.train_round(
        *sample, n_steps=p.end_steps, lambda_l=p.lambda_l, m=p.m, resample_every=p.resample_every
    )
    trainer.end_of_round_update(sample)
    return tuple(float(x) for x in stats.losses)


def run_stream(
    scans: Iterable[tuple[str, np.ndarray, Preprocessing, Annotator, StopRule, Mapping[int, tuple[int, int]] | None]],
    trainer: Trainer,
    params: SessionParams,
    *,
    rng: RngLike = None,
    on_round: Callable[[ScanSession, RoundRecord], None] | None = None,
    on_scan: Callable[[ScanSession], None] | None = None,
) -> list[ScanSession]:
    """Algorithm 5: a stream of scans; ``F_prev`` is the segmenter as it was when each scan started.

    Each item is ``(case_id, image, preprocessing, annotator, stop, extent)``.
    """
    gen = np.random.default_rng(rng)
    done: list[ScanSession] = []
    trained = False
    for case_id, image, prep, annotator, stop, extent in scans:
        image_grid = segmenter_input(prep, np.asarray(image, np.float32))
        previous = predict(trainer.model, image_grid, device=trainer.device, flips=params.flips) if trained else None
        session = ScanSession(image, preprocessing=prep, params=params, previous_prediction=previous, case_id=case_id)
        if params.method == "refine" and previous is not None:
            session.set_prediction(previous)
        run_scan(session, trainer, annotator, stop=stop, rng=gen, extent=extent, on_round=on_round)
        finish_scan(session, trainer)
        trained = trained or session.rounds > 0 or (params.method == "refine" and params.end_steps > 0)
        if on_scan is not None:
            on_scan(session)
        done.append(session)
    return done
