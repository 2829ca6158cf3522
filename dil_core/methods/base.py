"""What a labeling method is: the five decisions that differ between the paper's method and DIL's own.

:mod:`dil_core.round` runs every round the same way and asks the scan's method, once each time, for what it
needs: the prediction a scan starts from, the next slices, the scan's mask, what to do after a round (train?
predict?) and when the scan finishes. A method never changes the session itself; it returns what the round
applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dil_core.guidance import Proposal
from dil_core.models import predict
from dil_core.preprocess import to_grid
from dil_core.session import ScanSession
from dil_core.training import Trainer
from dil_core.typing import RngLike
from dil_core.weights import confidence_map

__all__ = ["AfterRound", "Method", "starting_prediction", "training_sample"]


@dataclass(frozen=True)
class AfterRound:
    """What a method did after a round's labels were propagated: whether it changed the trainer (weights or
    replay buffer), the losses of any training, a new ``F(X)``."""

    trained: bool = False
    losses: tuple[float, ...] = ()
    prediction_grid: np.ndarray | None = None


class Method(Protocol):
    """A labeling method (see :data:`dil_core.methods.METHODS`)."""

    name: str
    #: Stop rules that cannot judge this method's mask, with the reason.
    unsupported_stop_rules: Mapping[str, str]
    #: Why continual training (``dil_core.continual``) cannot run beside this method; None: it can (the method
    #: trains only when a scan finishes, which the continual learner then does instead).
    no_continual: str | None

    def initial_prediction(self, session: ScanSession, trainer: Trainer) -> np.ndarray | None:
        """``F_prev(X)`` on the working grid when the scan starts (None: a cold start)."""
        ...

    def propose(
        self, session: ScanSession, *, rng: RngLike, extent: Mapping[int, tuple[int, int]] | None
    ) -> Proposal:
        """The next slices to draw (before the quota is applied)."""
        ...

    def mask(self, session: ScanSession) -> np.ndarray:
        """The scan's current mask, ``(X, Y, Z)`` uint8."""
        ...

    def after_round(self, session: ScanSession, trainer: Trainer) -> AfterRound:
        """Anything to do once a round's labels are propagated (the paper trains and predicts here)."""
        ...

    def at_finish(self, session: ScanSession, trainer: Trainer) -> tuple[float, ...]:
        """Anything to do when the scan is done (``refine`` trains on the final mask here); the losses."""
        ...


def starting_prediction(session: ScanSession, trainer: Trainer) -> np.ndarray | None:
    """The one rule for ``F_prev(X)`` at a scan's start, for every method.

    A seed scan starts cold (nothing shown, nothing to smooth with), as does every scan while the segmenter has
    never taken an optimiser step (Algorithm 5 line 3, ``F_prev = x -> 0``). Otherwise it is the segmenter as
    it is now, on this scan (Algorithm 5 line 27: fixed for the whole scan), with test-time flips if asked.
    """
    if session.seed or trainer.steps == 0:
        return None
    return predict(trainer.model, session.image_grid, device=trainer.device, flips=session.params.flips)


def training_sample(session: ScanSession, target_grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sample of eq. 9 on the working grid: the image, ``target_grid`` clipped to [0, 1], and the
    confidence map of eqs. 10-12 from the drawn slices."""
    p = session.params
    weight = confidence_map(
        session.image.shape,
        session.drawn,
        scheme=p.weight_scheme,
        omega=p.omega,
        length=p.weight_length,
        floor=p.weight_floor,
        spacing=session.spacing,
    )
    weight_grid = to_grid(session.preprocessing, weight, order=1)
    target = np.clip(target_grid, 0.0, 1.0).astype(np.float32)
    return session.image_grid, target, weight_grid.astype(np.float32)
