"""When a scan is done: the quality bar rho, judged with ground truth (simulation) or estimated without it.

Rules are a registry. ``ground_truth`` is Algorithm 3's simulated stop, ``Dice(Y, mask) >= rho``. Without
ground truth, ``estimated`` takes the agreement of the scan's mask with the segmenter's prediction,
``Dice(mask, F(X) >= 0.5)``: two independent estimates of the target (one from the drawn slices, one from
every scan seen so far) that agree. ``consecutive`` takes the agreement of two consecutive masks,
``Dice(mask_{i-1}, mask_i)``. ``bench/estimated_stop.py`` measures how often each stops a scan that is truly
below rho: on the demo campaign (24 hippocampus scans, rho 0.85) ``consecutive`` stopped 21 scans of which 13
were below rho, ``estimated`` stopped 3, none below rho. ``accept`` never stops by itself: the annotator's
``dil accept`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dil_core.metrics import dice

__all__ = ["STOP_RULES", "StopDecision", "check_stop"]


@dataclass(frozen=True)
class StopDecision:
    """The outcome of a stopping check: the rule, the value it measured (None if none) and the verdict."""

    rule: str
    value: float | None
    passed: bool


def _ground_truth(mask, *, rho, ground_truth, previous_mask, prediction) -> StopDecision:  # type: ignore[no-untyped-def]
    if ground_truth is None:
        raise ValueError("stop rule 'ground_truth' needs the ground truth; use 'estimated' or 'accept' without it")
    value = dice(ground_truth, mask, empty=0.0)
    return StopDecision("ground_truth", value, value >= rho)


def _estimated(mask, *, rho, ground_truth, previous_mask, prediction) -> StopDecision:  # type: ignore[no-untyped-def]
    if prediction is None:
        return StopDecision("estimated", None, False)
    value = dice(mask, np.asarray(prediction) >= 0.5, empty=0.0)
    return StopDecision("estimated", value, value >= rho)


def _consecutive(mask, *, rho, ground_truth, previous_mask, prediction) -> StopDecision:  # type: ignore[no-untyped-def]
    if previous_mask is None:
        return StopDecision("consecutive", None, False)
    value = dice(previous_mask, mask, empty=0.0)
    return StopDecision("consecutive", value, value >= rho)


def _accept(mask, *, rho, ground_truth, previous_mask, prediction) -> StopDecision:  # type: ignore[no-untyped-def]
    return StopDecision("accept", None, False)


STOP_RULES: dict[str, Callable[..., StopDecision]] = {
    "ground_truth": _ground_truth,
    "estimated": _estimated,
    "consecutive": _consecutive,
    "accept": _accept,
}


def check_stop(
    mask: np.ndarray,
    *,
    rule: str,
    rho: float,
    ground_truth: np.ndarray | None = None,
    previous_mask: np.ndarray | None = None,
    prediction: np.ndarray | None = None,
) -> StopDecision:
    """Judge whether a scan's mask passes rho.

    Parameters
    ----------
    mask : (X, Y, Z) ndarray
        The scan's current mask.
    rule : {"ground_truth", "estimated", "consecutive", "accept"}
    rho : float
        The quality bar, in (0, 1).
    ground_truth : (X, Y, Z) ndarray, optional
        Needed by ``ground_truth``.
    previous_mask : (X, Y, Z) ndarray, optional
        The mask after the previous round; ``consecutive`` cannot pass without it.
    prediction : (X, Y, Z) ndarray, optional
        The segmenter's probabilities in the scan's geometry; ``estimated`` cannot pass without it.

    Raises
    ------
    ValueError
        Unknown rule (the message lists the known ones), rho outside (0, 1), or a missing input.
    """
    if rule not in STOP_RULES:
        raise ValueError(f"unknown stop rule {rule!r}; known rules: {', '.join(sorted(STOP_RULES))}")
    if not 0.0 < rho < 1.0:
        raise ValueError(f"rho must be in (0, 1), got {rho!r}")
    return STOP_RULES[rule](
        np.asarray(mask), rho=rho, ground_truth=ground_truth, previous_mask=previous_mask, prediction=prediction
    )
