"""The tasks of one round. Each wraps one ``dil_core`` call; arrays pass in memory (no result persistence).

Cache policy is NONE throughout: the inputs are large arrays and stateful sessions whose hashing would cost
more than the work, and a round must never reuse another round's result. Retries are given where a retry can
help (file I/O, registration). The end-of-scan step (the long training of ``refine``) is tagged ``gpu`` so a
concurrency limit on that tag keeps one such training per GPU. Rounds carry no tags, the paper's few in-round
steps included: every tagged task run asks the server for concurrency slots (about 0.2 s each, measured on
the embedded server), which would dominate a short round, and a round killed while it holds a slot would make
the next one wait until the slot's lease is repossessed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
from prefect import task, unmapped
from prefect.cache_policies import NONE

from dil_core import round as one_round
from dil_core.geometry import Geometry
from dil_core.guidance import Proposal
from dil_core.methods import Method
from dil_core.propagation import MapFn
from dil_core.requests import LabelingRequest, write_request
from dil_core.round import RoundResult
from dil_core.session import ScanSession
from dil_core.stopping import StopDecision, check_stop
from dil_core.training import Trainer

GPU_TAG = "gpu"


@task(name="begin-scan", cache_policy=NONE, retries=0)
def begin_task(session: ScanSession, method: Method, trainer: Trainer) -> np.ndarray | None:
    """``F_prev(X)`` for a scan's start (Algorithm 5), by the method's rule; None on a cold start."""
    return one_round.begin(session, method, trainer)


#: The registrations of one plane are split into at most this many tasks: each task run costs its own
#: orchestration and a round trip to the runner, more than one registration of a small slice; a few tasks per
#: worker still balance the load (bench/scale_out.py: a BraTS-size round, 151 registrations, 55 s in process,
#: 57-64 s on one Dask worker, 33-39 s on two).
FAN_OUT_TASKS = 8


@task(name="register-slices", cache_policy=NONE, retries=1)
def register_slices_task(
    fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    fixed: list[np.ndarray],
    moving: list[np.ndarray],
    moving_mask: list[np.ndarray],
) -> list[np.ndarray]:
    """Registrations of Algorithm 2: each nearest drawn slice's mask warped onto an undrawn slice."""
    return [fn(f, m, mm) for f, m, mm in zip(fixed, moving, moving_mask, strict=True)]


def fan_out(fn: Callable[..., np.ndarray], *iterables: Iterable[np.ndarray]) -> list[np.ndarray]:
    """A ``map`` that runs the per-slice registrations as tasks on the flow's task runner, in order.

    The slices are dealt into at most :data:`FAN_OUT_TASKS` contiguous chunks, one task each.
    """
    columns = [list(it) for it in iterables]
    n = len(columns[0]) if columns else 0
    if n == 0:
        return []
    k = min(FAN_OUT_TASKS, n)
    bounds = [round(i * n / k) for i in range(k + 1)]
    chunks = [[col[bounds[i]:bounds[i + 1]] for col in columns] for i in range(k)]
    futures = register_slices_task.map(unmapped(fn), *(list(c) for c in zip(*chunks, strict=True)))
    return [out for f in futures for out in f.result()]


@task(name="round", cache_policy=NONE, retries=0)
def apply_task(
    session: ScanSession,
    method: Method,
    labels: np.ndarray,
    drawn: Mapping[int, Iterable[int]],
    trainer: Trainer,
    *,
    ends: Iterable[int] = (),
    map_fn: MapFn = map,
) -> RoundResult:
    """The one round (:func:`dil_core.round.apply`): propagate, then the method's after-round step."""
    return one_round.apply(session, method, labels, drawn, trainer=trainer, ends=ends, map_fn=map_fn)


@task(name="finish-scan", cache_policy=NONE, retries=0, tags=[GPU_TAG])
def finish_task(session: ScanSession, method: Method, trainer: Trainer) -> tuple[float, ...]:
    """The method's end-of-scan step (``refine`` trains on the final mask with replay); its losses."""
    return one_round.finish(session, method, trainer)


@task(name="stop-check", cache_policy=NONE)
def stop_check_task(
    mask: np.ndarray,
    *,
    rule: str,
    rho: float,
    ground_truth: np.ndarray | None,
    previous_mask: np.ndarray | None,
    prediction: np.ndarray | None,
) -> StopDecision:
    """Does the scan's mask pass rho (by ground truth in simulation, else estimated or accepted)?"""
    return check_stop(
        mask, rule=rule, rho=rho, ground_truth=ground_truth, previous_mask=previous_mask, prediction=prediction
    )


@task(name="propose", cache_policy=NONE)
def propose_task(
    session: ScanSession, method: Method, *, rng: np.random.Generator, extent: Mapping[int, tuple[int, int]] | None
) -> Proposal:
    """The next slices (Algorithm 4, or the method's first-round strategy), within the quota."""
    return one_round.propose(session, method, rng=rng, extent=extent)


@task(name="write-request", cache_policy=NONE, retries=2, retry_delay_seconds=1)
def write_request_task(
    folder: Path,
    request: LabelingRequest,
    geometry: Geometry,
    *,
    mask: np.ndarray,
    proxy: np.ndarray | None,
    prediction: np.ndarray | None,
) -> Path:
    """Write ``requests/<case>/round-<k>/`` for the annotator (request.json last)."""
    return write_request(folder, request, geometry, mask=mask, proxy=proxy, prediction=prediction)
