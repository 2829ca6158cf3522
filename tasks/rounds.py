"""The tasks of one round. Each wraps one ``dil_core`` call; arrays pass in memory (no result persistence).

Cache policy is NONE throughout: the inputs are large arrays and stateful sessions whose hashing would cost
more than the work, and a round must never reuse another round's result. Retries are given where a retry can
help (file I/O, registration); training is tagged ``gpu`` so a concurrency limit on that tag keeps one
training task per GPU. Other tasks carry no tags: every tagged task run asks the server for concurrency
slots (about 0.2 s each, measured on the embedded server), which would dominate a round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
from prefect import task, unmapped
from prefect.cache_policies import NONE

from dil_core.geometry import Geometry
from dil_core.guidance import Proposal
from dil_core.models import predict
from dil_core.propagation import ProxyResult
from dil_core.requests import LabelingRequest, write_request
from dil_core.session import ScanSession, finish_scan
from dil_core.stopping import StopDecision, check_stop
from dil_core.training import Trainer
from dil_core.validation import SubmissionContent, submission_content, validate_submission


@task(name="validate-submission", cache_policy=NONE, retries=0)
def validate_submission_task(path: Path, geometry: Geometry, requested: Mapping[int, tuple[int, ...]]) -> SubmissionContent:
    """Check a label file against the scan's geometry and find the drawn slices (DESIGN: Submission)."""
    mask = validate_submission(path, geometry)
    return submission_content(mask, requested)


@task(name="propagate", cache_policy=NONE, retries=1)
def propagate_task(session: ScanSession) -> ProxyResult:
    """Algorithm 2 on every drawn plane, incrementally (only slices whose nearest drawn slice changed)."""
    return session.update_proxy()


@task(name="register-slice", cache_policy=NONE, retries=1)
def register_slice_task(
    fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    fixed: np.ndarray,
    moving: np.ndarray,
    moving_mask: np.ndarray,
) -> np.ndarray:
    """One registration of Algorithm 2: the nearest drawn slice's mask warped onto one undrawn slice."""
    return fn(fixed, moving, moving_mask)


def fan_out(fn: Callable[..., np.ndarray], *iterables: Iterable[np.ndarray]) -> list[np.ndarray]:
    """A ``map`` that runs each per-slice registration as a task on the flow's task runner."""
    futures = register_slice_task.map(unmapped(fn), *(list(it) for it in iterables))
    return [f.result() for f in futures]


@task(name="train", cache_policy=NONE, retries=0, tags=["gpu"])
def train_task(
    trainer: Trainer, sample: tuple[np.ndarray, np.ndarray, np.ndarray], *, n_steps: int, lambda_l: float, m: int
) -> list[float]:
    """n_F steps of eq. 9 on the new sample and m replayed ones, then Algorithm 1's buffer update."""
    losses: list[float] = []
    if n_steps > 0:
        stats = trainer.train_round(*sample, n_steps=n_steps, lambda_l=lambda_l, m=m)
        losses = [float(x) for x in stats.losses]
    trainer.end_of_round_update(sample)
    return losses


@task(name="finish-scan", cache_policy=NONE, retries=0, tags=["gpu"])
def finish_scan_task(session: ScanSession, trainer: Trainer) -> list[float]:
    """Method ``refine``: train on the finished scan's final mask with replay, then keep it for replay."""
    return list(finish_scan(session, trainer))


@task(name="predict", cache_policy=NONE, retries=0)
def predict_task(trainer: Trainer, image_grid: np.ndarray, *, flips: bool = False) -> np.ndarray:
    """F(X) on the working grid (with ``flips``: the mean over the eight flips of the image)."""
    return predict(trainer.model, image_grid, device=trainer.device, flips=flips)


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
    session: ScanSession, *, rng: np.random.Generator, extent: Mapping[int, tuple[int, int]] | None
) -> Proposal:
    """Algorithm 4 (model guidance) or the first-round strategy."""
    return session.propose(rng=rng, extent=extent)


@task(name="write-request", cache_policy=NONE, retries=2, retry_delay_seconds=1)
def write_request_task(
    folder: Path,
    request: LabelingRequest,
    geometry: Geometry,
    proxy: np.ndarray | None,
    prediction: np.ndarray | None,
) -> Path:
    """Write ``requests/<case>/round-<k>/`` for the annotator."""
    return write_request(folder, request, geometry, proxy=proxy, prediction=prediction)
