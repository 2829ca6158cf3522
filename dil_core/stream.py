"""Algorithm 3 (rounds on one scan) and Algorithm 5 (a stream of scans) in one process, on the one round.

This is how simulation and the benchmarks drive scans: the same :mod:`dil_core.round` calls, in the same
order, with the same per-round randomness, as the product's flows make with the ledger and files in between.
A test runs both on the same scans and checks that slices, labor and masks agree.

A scan goes::

    begin -> review (a prediction that passes is accepted without drawing)
          -> [propose -> annotator draws -> apply -> judge] until passed, the quota, or nothing left to ask
          -> finish
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from dil_core import round as one_round
from dil_core.methods import Method
from dil_core.propagation import MapFn
from dil_core.round import RoundResult
from dil_core.session import ScanSession
from dil_core.simulate import GroundTruthOracle
from dil_core.stopping import StopDecision, check_stop
from dil_core.training import Trainer

__all__ = ["Annotator", "Judge", "ScanOutcome", "StreamScan", "run_scan", "run_stream", "simulated"]

#: Answers a request: (slices asked for per axis, end slices asked for per axis) -> (label volume, slices it
#: labels per axis).
Annotator = Callable[
    [Mapping[int, tuple[int, ...]], Mapping[int, tuple[str, ...]]], tuple[np.ndarray, Mapping[int, frozenset[int]]]
]
#: Judges a scan's mask against its bar (:func:`dil_core.stopping.check_stop` with the campaign's rule).
Judge = Callable[[np.ndarray], StopDecision]


@dataclass
class ScanOutcome:
    """How a scan ended: ``passed`` (by its rule, or reviewed and accepted with nothing drawn) or ``at_quota``."""

    session: ScanSession
    state: str
    decision: StopDecision | None
    reviewed_only: bool
    rounds: list[RoundResult] = field(default_factory=list)
    finish_losses: tuple[float, ...] = ()


@dataclass(frozen=True)
class StreamScan:
    """One scan of a stream: its fresh session, who draws it, how it is judged, where its target lies."""

    session: ScanSession
    annotator: Annotator
    judge: Judge
    extent: Mapping[int, tuple[int, int]] | None = None


def simulated(session: ScanSession, ground_truth: np.ndarray, rho: float, *, knows_extent: bool = True) -> StreamScan:
    """A scan as simulation runs it: the ground-truth oracle draws, the ground truth judges the mask against
    ``rho``; with ``knows_extent`` guidance is told the target's extent on each drawn plane (the paper's
    protocol: its simulated user draws target slices), else it finds the ends by asking for them."""
    truth = (np.asarray(ground_truth) > 0).astype(np.uint8)
    oracle = GroundTruthOracle(truth)

    def judge(mask: np.ndarray) -> StopDecision:
        return check_stop(mask, rule="ground_truth", rho=rho, ground_truth=truth)

    extent = {a: oracle.target_extent(a) for a in session.params.axes} if knows_extent else None
    return StreamScan(session, oracle.answer, judge, extent)


def run_scan(
    session: ScanSession,
    method: Method,
    trainer: Trainer,
    annotator: Annotator,
    *,
    judge: Judge,
    seed: int,
    extent: Mapping[int, tuple[int, int]] | None = None,
    on_round: Callable[[ScanSession, RoundResult, StopDecision], None] | None = None,
    map_fn: MapFn = map,
    physician: Callable[[int, int], None] | None = None,
) -> ScanOutcome:
    """Algorithm 3 on one scan: rounds until ``judge`` passes its mask, the quota gamma or ``n_inter`` rounds.

    Parameters
    ----------
    session : ScanSession
        A fresh session of the scan.
    method : Method
    trainer : Trainer
        Trained in place, as the method says.
    annotator : callable
        Draws the requested slices (the ground-truth oracle in simulation).
    judge : callable
        The stop rule on the scan's mask.
    seed : int
        The campaign seed; round ``k`` uses :func:`dil_core.round.round_rng` ``(seed, position, k)``.
    extent : mapping, optional
        Per axis, the slice range guidance may choose from (the simulated user knows the target's extent).
    physician : callable, optional
        Told ``(reviews, slices)`` each time the annotator works: one review of the prediction a scan starts
        from, then per request one review and the slices drawn for it (before the round is applied, while a
        physician would be drawing). The time-accounted benchmark trains the continual learner then.

    References
    ----------
    Tian, Chen, Gao (2023), Algorithm 3.
    """
    one_round.begin(session, method, trainer)
    outcome = ScanOutcome(session=session, state="at_quota", decision=None, reviewed_only=False)
    if session.prediction is not None:
        if physician is not None:
            physician(1, 0)
        decision = judge(one_round.mask(session, method))
        if decision.passed:  # the prediction passes as it is: reviewed, accepted, nothing drawn
            outcome.state, outcome.decision, outcome.reviewed_only = "passed", decision, True
    while outcome.state != "passed" and session.within_budget():
        rng = one_round.round_rng(seed, session.position, session.rounds + 1)
        proposal = one_round.propose(session, method, rng=rng, extent=extent)
        requested = {a: s for a, s in proposal.slices.items() if s}
        if not requested and not proposal.ends:  # every candidate slice is drawn: nothing left to ask
            break
        labels, drawn = annotator(requested, proposal.ends)
        if physician is not None:
            physician(1, sum(len(v) for v in drawn.values()))
        result = one_round.apply(session, method, labels, drawn, trainer=trainer, ends=proposal.ends, map_fn=map_fn)
        decision = judge(one_round.mask(session, method))
        outcome.rounds.append(result)
        outcome.decision = decision
        if on_round is not None:
            on_round(session, result, decision)
        if decision.passed:
            outcome.state = "passed"
    outcome.finish_losses = one_round.finish(session, method, trainer)
    return outcome


def run_stream(
    scans: Iterable[StreamScan],
    method: Method,
    trainer: Trainer,
    *,
    seed: int,
    on_round: Callable[[ScanSession, RoundResult, StopDecision], None] | None = None,
    on_scan: Callable[[ScanOutcome], None] | None = None,
    physician: Callable[[int, int], None] | None = None,
) -> list[ScanOutcome]:
    """Algorithm 5: the scans in order, each started from the segmenter as it is when the scan starts.

    References
    ----------
    Tian, Chen, Gao (2023), Algorithm 5.
    """
    done: list[ScanOutcome] = []
    for item in scans:
        outcome = run_scan(
            item.session, method, trainer, item.annotator, judge=item.judge, seed=seed, extent=item.extent,
            on_round=on_round, physician=physician,
        )
        if on_scan is not None:
            on_scan(outcome)
        done.append(outcome)
    return done
