"""The paper's method (Algorithms 3-5): the mask is the proxy of the drawn slices; the segmenter trains after
every round on the smoothed proxy and guides the next slices (Algorithm 4, eq. 17).

``final_mask = "proxy+prediction"`` (beyond the paper) takes the prediction outside the span of the drawn
slices, where interpolating propagation has nothing to say.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from dil_core.guidance import Proposal, propose_slices
from dil_core.methods.base import AfterRound, starting_prediction, training_sample
from dil_core.models import predict
from dil_core.preprocess import to_grid
from dil_core.refine import drawn_span
from dil_core.session import ScanSession
from dil_core.training import Trainer, smoothed_target
from dil_core.typing import RngLike

__all__ = ["PaperMethod", "final_mask"]


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
        ``"proxy+prediction"`` takes ``prediction >= 0.5`` outside the span of drawn slices and the proxy
        inside it.

    Returns
    -------
    (X, Y, Z) uint8 ndarray
    """
    if mode not in ("proxy", "proxy+prediction"):
        raise ValueError(f"mode must be 'proxy' or 'proxy+prediction', got {mode!r}")
    mask = (np.asarray(proxy) > 0).astype(np.uint8)
    if mode == "proxy+prediction" and prediction is not None:
        outside = ~drawn_span(mask.shape, drawn)
        mask[outside] = (prediction[outside] >= 0.5).astype(np.uint8)
    for axis, idx in drawn.items():
        for k in idx:
            sl: list[Any] = [slice(None)] * 3
            sl[axis] = k
            mask[tuple(sl)] = labels[tuple(sl)] > 0
    return mask


class PaperMethod:
    """Algorithms 3-5 as the paper writes them (``method: paper``)."""

    name = "paper"
    unsupported_stop_rules: Mapping[str, str] = {}
    no_continual: str | None = "it trains the segmenter inside the rounds, which would bypass the champion gate"

    def initial_prediction(self, session: ScanSession, trainer: Trainer) -> np.ndarray | None:
        return starting_prediction(session, trainer)

    def propose(
        self, session: ScanSession, *, rng: RngLike, extent: Mapping[int, tuple[int, int]] | None
    ) -> Proposal:
        """Algorithm 4 once the scan has a prediction (Algorithm 5 line 11), ``first_round`` before (line 9)."""
        p = session.params
        proxy = session.proxy.prob if session.proxy is not None else np.zeros(session.image.shape, np.float32)
        return propose_slices(
            shape=session.image.shape,
            axes=p.axes,
            drawn=session.drawn,
            tau=p.tau,
            strategy=p.strategy if session.prediction is not None else p.first_round,
            proxy=proxy,
            prediction=session.prediction,
            w1=p.w1,
            rng=rng,
            spacing=session.spacing,
            extent=extent,
            spread=p.spread,
        )

    def mask(self, session: ScanSession) -> np.ndarray:
        if "mask" not in session.derived:
            proxy = session.proxy.mask if session.proxy is not None else np.zeros(session.image.shape, np.uint8)
            session.derived["mask"] = final_mask(
                proxy, session.prediction, session.labels, session.drawn, mode=session.params.final_mask
            )
        return session.derived["mask"]

    def after_round(self, session: ScanSession, trainer: Trainer) -> AfterRound:
        """n_F steps of eq. 9 on the smoothed proxy (eq. 2) with replay, Algorithm 1's update, then ``F(X)``."""
        p = session.params
        if session.proxy is None:
            raise RuntimeError("the proxy must be propagated before the paper method trains on it")
        target = to_grid(session.preprocessing, session.proxy.mask.astype(np.float32), order=1)
        sample = training_sample(session, smoothed_target(session.previous_prediction, target, lambda_y=p.lambda_y))
        losses: tuple[float, ...] = ()
        if p.n_f > 0:
            stats = trainer.train_round(*sample, n_steps=p.n_f, lambda_l=p.lambda_l, m=p.m)
            losses = tuple(float(x) for x in stats.losses)
        trainer.end_of_round_update(sample)
        prediction = predict(trainer.model, sample[0], device=trainer.device, flips=p.flips)
        return AfterRound(trained=True, losses=losses, prediction_grid=prediction)

    def at_finish(self, session: ScanSession, trainer: Trainer) -> tuple[float, ...]:
        return ()  # it trained after every round
