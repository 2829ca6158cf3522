"""The one round of the system (Algorithm 3 lines 5-14, Algorithm 5 lines 8-25), and the scan's start and end.

Everything that runs a scan (the product's flows with the ledger in between, :mod:`dil_core.stream` in one
process for simulation and the benchmarks) calls these functions, and only these change a
:class:`~dil_core.session.ScanSession`::

    begin(session, method, trainer)                       # F_prev(X), fixed for the scan (Algorithm 5)
    proposal = propose(session, method, rng=..., extent=...)  # Algorithm 4 / first round, within the quota
    labels, drawn = annotator(proposal.slices, proposal.ends)  # the physician, or the ground-truth oracle
    result = apply(session, method, labels, drawn, trainer=trainer, ends=proposal.ends)  # propagate, after-round
    ...
    finish(session, method, trainer)                      # the method's end of scan (refine trains here)

Each step is deterministic given its inputs: the randomness of round ``k`` of the scan at queue position
``p`` is :func:`round_rng` ``(seed, p, k)``, so a round processed again after a crash, or in another process,
proposes the same slices. :func:`restore` rebuilds a session from stored rounds without training anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from dil_core.guidance import Proposal
from dil_core.methods import Method
from dil_core.metrics import dice
from dil_core.propagation import MapFn
from dil_core.session import ScanSession
from dil_core.training import Trainer

__all__ = ["RoundResult", "apply", "begin", "finish", "mask", "propose", "restore", "round_rng"]


def round_rng(seed: int, position: int, round_number: int) -> np.random.Generator:
    """The randomness of one round, from (campaign seed, the scan's queue position, round number) alone."""
    return np.random.default_rng([int(seed), int(position), int(round_number)])


@dataclass(frozen=True)
class RoundResult:
    """What one round did (for the ledger, MLflow and the benchmarks).

    ``drawn``: the slices the round's labels brought, per axis; ``new``: those not drawn before on the scan
    (what the round's labor counts); ``drawn_total``: slices drawn on the scan so far, per axis; ``trained``:
    the method changed the trainer (checkpoint it); ``predicted``: the round set a new ``F(X)``.
    """

    case_id: str
    round: int
    drawn: dict[int, tuple[int, ...]]
    new: dict[int, tuple[int, ...]]
    drawn_total: dict[int, int]
    proxy_slices_recomputed: dict[int, int]
    losses: tuple[float, ...]
    trained: bool = False
    predicted: bool = False
    metrics: dict[str, float] = field(default_factory=dict)


def begin(session: ScanSession, method: Method, trainer: Trainer) -> np.ndarray | None:
    """Start a scan: its ``F_prev(X)`` by the method's rule, which is also the prediction shown first.

    Returns the prediction on the working grid (None on a cold start), for the caller to persist. Starting a
    scan twice is an error: ``F_prev`` is fixed for the whole scan.
    """
    if session.started or session.rounds:
        raise RuntimeError(f"scan {session.case_id!r} has already started")
    previous = method.initial_prediction(session, trainer)
    session._start(previous)
    return previous


def restore(
    session: ScanSession,
    *,
    previous_prediction: np.ndarray | None,
    rounds: Iterable[Iterable[tuple[np.ndarray, Mapping[int, Iterable[int]]]]],
    prediction_grid: np.ndarray | None = None,
    ends_asked: Iterable[int] = (),
) -> ScanSession:
    """Rebuild a session from what was stored: ``F_prev``, each round's label files, the latest ``F(X)``.

    ``rounds`` holds, per processed round, its ``(labels, drawn)`` submissions; ``ends_asked`` the axes whose
    end slices any of them was asked for. Nothing is trained; the proxy is propagated once at the end (the
    same proxy the rounds built incrementally).
    """
    if session.started or session.rounds:
        raise RuntimeError(f"scan {session.case_id!r} is not a fresh session")
    session._start(previous_prediction)
    for submissions in rounds:
        for labels, drawn in submissions:
            session._add_labels(labels, drawn)
        session._count_round()
    session._ask_ends(ends_asked)
    if session.n_drawn:
        session._update_proxy()
    if prediction_grid is not None:
        session._set_prediction(prediction_grid)
    return session


def propose(
    session: ScanSession,
    method: Method,
    *,
    rng: np.random.Generator,
    extent: Mapping[int, tuple[int, int]] | None = None,
) -> Proposal:
    """The next slices (the method decides), trimmed so that ``|Gamma|`` never exceeds the quota gamma."""
    proposal = method.propose(session, rng=rng, extent=extent)
    left = session.params.quota_gamma - session.n_drawn
    if proposal.n_slices <= left:
        return proposal
    left -= sum(len(v) for v in proposal.ends.values())
    trimmed: dict[int, tuple[int, ...]] = {}
    for axis in sorted(proposal.slices, key=session.params.axes.index):
        take = proposal.slices[axis][: max(left, 0)]
        left -= len(take)
        trimmed[axis] = take
    return Proposal(slices=trimmed, scores=proposal.scores, strategy=proposal.strategy, ends=proposal.ends)


def apply(
    session: ScanSession,
    method: Method,
    labels: np.ndarray,
    drawn: Mapping[int, Iterable[int]],
    *,
    trainer: Trainer,
    ends: Iterable[int] = (),
    map_fn: MapFn = map,
) -> RoundResult:
    """One round: the annotator's slices join the scan, the proxy is propagated (Algorithm 2, incrementally),
    then the method's after-round step (the paper: n_F training steps and a new ``F(X)``).

    Parameters
    ----------
    labels : (X, Y, Z) ndarray
        A label volume of the scan; only the slices in ``drawn`` are read.
    drawn : mapping of int to iterable of int
        The slices the annotator drew (or left empty on purpose), per array axis, the end slices asked for
        included.
    ends : iterable of int
        Axes on which the round asked for the first and last slice showing the target.
    map_fn : callable
        ``map``-like runner for the per-slice registrations (the flows fan them out as tasks).
    """
    new = session._add_labels(labels, drawn)
    session._ask_ends(ends)
    session._count_round()
    proxy = session._update_proxy(map_fn=map_fn)
    after = method.after_round(session, trainer)
    if after.prediction_grid is not None:
        session._set_prediction(after.prediction_grid)
    metrics: dict[str, float] = {}
    if session.prediction is not None:
        metrics["dice_proxy_prediction"] = dice(proxy.mask, session.prediction >= 0.5)
    return RoundResult(
        case_id=session.case_id,
        round=session.rounds,
        drawn={int(a): tuple(sorted(int(i) for i in idx)) for a, idx in drawn.items()},
        new={a: tuple(sorted(v)) for a, v in new.items() if v},
        drawn_total={a: len(v) for a, v in session.drawn.items()},
        proxy_slices_recomputed=dict(proxy.recomputed),
        losses=after.losses,
        trained=after.trained,
        predicted=after.prediction_grid is not None,
        metrics=metrics,
    )


def mask(session: ScanSession, method: Method) -> np.ndarray:
    """The scan's current mask, as the method builds it (``(X, Y, Z)`` uint8; cached until the next change)."""
    return method.mask(session)


def finish(session: ScanSession, method: Method, trainer: Trainer) -> tuple[float, ...]:
    """The scan is done (passed, accepted or at quota): the method's end-of-scan step; returns its losses."""
    return method.at_finish(session, trainer)
