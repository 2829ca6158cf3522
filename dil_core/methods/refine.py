"""DIL's method ``refine``: the scan's mask is the segmenter's prediction refined by the drawn slices.

The arithmetic (corrections, blend, connectivity) is :mod:`dil_core.refine`; this module is the method's
decisions around it:

* the scan starts from ``F_prev(X)`` (one that passes is accepted without drawing) and keeps it for the whole
  scan: no training during a scan;
* the mask is :func:`dil_core.refine.refined_mask` of the proxy and the corrected prediction, the prediction
  set aside (the proxy alone) while it agrees with the drawing less than ``set_aside`` (or still below
  ``trust`` once ``fallback_after`` slices are drawn);
* guidance looks at the mean of ``F(X)`` and the soft blend, with ``strategy`` while the prediction agrees
  with the drawing at least ``trust`` and ``first_round`` otherwise;
* the segmenter trains once, when the scan finishes, ``end_steps`` steps on its final mask with replay.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dil_core.guidance import Proposal, propose_slices
from dil_core.methods.base import AfterRound, starting_prediction, training_sample
from dil_core.metrics import dice
from dil_core.preprocess import to_grid
from dil_core.refine import corrected_prediction, refined_mask, soft_mask
from dil_core.session import ScanSession
from dil_core.training import Trainer
from dil_core.typing import RngLike

__all__ = ["RefineMethod", "agreement", "corrected", "soft"]

#: Strategies that space slices over the target's extent (their first slices are its two ends).
_NEEDS_EXTENT = frozenset({"bisect", "uniform"})


def agreement(session: ScanSession) -> float:
    """Dice of ``F(X) >= 0.5`` with the drawn labels, on the drawn slices (1.0 with nothing to compare)."""
    if session.prediction is None or not session.n_drawn:
        return 1.0
    if "agreement" not in session.derived:
        on = session.drawn_voxels()
        session.derived["agreement"] = dice(session.labels[on] > 0, session.prediction[on] >= 0.5, empty=1.0)
    return float(session.derived["agreement"])


def corrected(session: ScanSession) -> np.ndarray | None:
    """The prediction corrected by the drawn slices; None without a prediction or while it is set aside."""
    if session.prediction is None:
        return None
    if "corrected" not in session.derived:
        p = session.params
        agree = agreement(session)
        aside = agree < p.set_aside or (
            p.fallback_after is not None and session.n_drawn >= p.fallback_after and agree < p.trust
        )
        session.derived["corrected"] = None if aside else corrected_prediction(
            session.prediction, session.labels, session.drawn, length=p.correction_length
        )
    return session.derived["corrected"]


def soft(session: ScanSession) -> np.ndarray:
    """What guidance looks at: the mean of ``F(X)`` and the soft blend of proxy and corrected prediction."""
    if "soft" not in session.derived:
        proxy = session.proxy.prob if session.proxy is not None else None
        fixed = corrected(session)
        if proxy is None and fixed is None:
            out = np.zeros(session.image.shape, np.float32)
        else:
            blend = soft_mask(proxy, fixed, session.drawn, scale=session.params.blend_scale, spacing=session.spacing)
            out = blend if session.prediction is None else 0.5 * (session.prediction + blend)
        session.derived["soft"] = out
    return session.derived["soft"]


class RefineMethod:
    """``method: refine`` (see the module docstring)."""

    name = "refine"
    unsupported_stop_rules: Mapping[str, str] = {
        "estimated": "its mask is built from the prediction the rule would compare it with",
        "consecutive": "its consecutive masks share the prediction, so they agree whatever their quality",
    }
    no_continual: str | None = None

    def initial_prediction(self, session: ScanSession, trainer: Trainer) -> np.ndarray | None:
        return starting_prediction(session, trainer)

    def propose(
        self, session: ScanSession, *, rng: RngLike, extent: Mapping[int, tuple[int, int]] | None
    ) -> Proposal:
        """``strategy`` while the prediction is trusted, ``first_round`` otherwise; where that evenly spacing
        strategy needs the target's extent on a plane and nobody knows it, the first and last slice showing the
        target are asked for first (the annotator knows where the target starts and ends; the system does not).
        """
        p = session.params
        strategy, prediction = p.first_round, None
        if session.prediction is not None:
            prediction = soft(session)
            strategy = p.strategy if agreement(session) >= p.trust else p.first_round
        known = {**(extent or {}), **session.extent}
        if strategy in _NEEDS_EXTENT:
            unknown = tuple(a for a in p.axes if a not in known and a not in session.ends_asked)
            if unknown:
                return Proposal(
                    slices={a: () for a in p.axes}, scores={a: np.zeros(session.image.shape[a]) for a in p.axes},
                    strategy="ends", ends={a: ("first", "last") for a in unknown},
                )
        proxy = session.proxy.prob if session.proxy is not None else np.zeros(session.image.shape, np.float32)
        return propose_slices(
            shape=session.image.shape,
            axes=p.axes,
            drawn=session.drawn,
            tau=p.tau,
            strategy=strategy,
            proxy=proxy,
            prediction=prediction,
            w1=p.w1,
            rng=rng,
            spacing=session.spacing,
            extent=known or None,
            spread=p.spread,
        )

    def mask(self, session: ScanSession) -> np.ndarray:
        """:func:`dil_core.refine.refined_mask`, empty beyond the target's known ends (the slices past the first
        and last one showing it hold no target)."""
        if "mask" not in session.derived:
            proxy = session.proxy.prob if session.proxy is not None else None
            mask = refined_mask(
                proxy, corrected(session), session.labels, session.drawn,
                scale=session.params.blend_scale, spacing=session.spacing,
            )
            for axis, (lo, hi) in session.extent.items():
                view = np.moveaxis(mask, axis, 0)
                view[:lo] = 0
                view[hi + 1 :] = 0
            session.derived["mask"] = mask
        return session.derived["mask"]

    def after_round(self, session: ScanSession, trainer: Trainer) -> AfterRound:
        return AfterRound()  # F_prev(X) stays the prediction; the segmenter learns when the scan finishes

    def at_finish(self, session: ScanSession, trainer: Trainer) -> tuple[float, ...]:
        """``end_steps`` steps on the final mask with replay redrawn every ``resample_every``; then keep it."""
        p = session.params
        if p.end_steps == 0:
            return ()
        target = to_grid(session.preprocessing, self.mask(session).astype(np.float32), order=1)
        sample = training_sample(session, target)
        stats = trainer.train_round(
            *sample, n_steps=p.end_steps, lambda_l=p.lambda_l, m=p.m, resample_every=p.resample_every
        )
        trainer.end_of_round_update(sample)
        return tuple(float(x) for x in stats.losses)
