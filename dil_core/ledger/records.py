"""Plain records the ledger returns, and the states a scan and a round go through.

The ledger never hands out ORM objects: every public method returns one of these frozen dataclasses (or a
list of them), detached from any database session.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from dil_core.typing import Plane


class ScanState(str, Enum):
    """Where a scan is in the campaign (Alg 5: a stream of scans, each labeled in rounds until it stops)."""

    QUEUED = "queued"
    WAITING_FOR_LABELS = "waiting_for_labels"
    RUNNING = "running"
    PASSED = "passed"
    AT_QUOTA = "at_quota"
    FAILED = "failed"


class RoundStatus(str, Enum):
    """A round is *requested* (request out), then *submitted* (label file in), then *processed*."""

    REQUESTED = "requested"
    SUBMITTED = "submitted"
    PROCESSED = "processed"


#: States a scan never leaves on its own; entering one stamps ``finished_at``.
TERMINAL_STATES: frozenset[ScanState] = frozenset({ScanState.PASSED, ScanState.AT_QUOTA, ScanState.FAILED})

#: Allowed scan state transitions (setting the current state again is always a no-op).
#: ``running -> queued`` releases a claimed scan; ``at_quota``/``failed -> queued`` reopens one;
#: ``at_quota -> passed`` accepts the mask a scan ended its quota with; ``passed``/``at_quota ->
#: waiting_for_labels`` reopens a finished scan for more rounds (``dil reopen``).
SCAN_TRANSITIONS: Mapping[ScanState, frozenset[ScanState]] = {
    ScanState.QUEUED: frozenset({ScanState.RUNNING, ScanState.WAITING_FOR_LABELS, ScanState.FAILED}),
    ScanState.RUNNING: frozenset(
        {ScanState.WAITING_FOR_LABELS, ScanState.PASSED, ScanState.AT_QUOTA, ScanState.FAILED, ScanState.QUEUED}
    ),
    ScanState.WAITING_FOR_LABELS: frozenset(
        {ScanState.RUNNING, ScanState.PASSED, ScanState.AT_QUOTA, ScanState.FAILED}
    ),
    ScanState.PASSED: frozenset({ScanState.WAITING_FOR_LABELS}),
    ScanState.AT_QUOTA: frozenset({ScanState.QUEUED, ScanState.PASSED, ScanState.WAITING_FOR_LABELS}),
    ScanState.FAILED: frozenset({ScanState.QUEUED}),
}


@dataclass(frozen=True)
class CampaignRecord:
    """A labeling campaign: a name and the (validated, JSON) configuration it runs with."""

    id: int
    name: str
    config: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class ScanRecord:
    """One 3D scan of a campaign.

    Attributes
    ----------
    geometry : dict
        The scan's geometry as JSON (``size``, ``spacing``, ``origin``, ``direction``; see
        :class:`dil_core.geometry.Geometry`).
    position : int
        Queue order within the campaign (smaller first).
    target_slices : dict of int to int, or None
        Array axis -> number of target slices on that plane (the denominator of Eq 3-4), when known.
    """

    id: int
    campaign_id: int
    case_id: str
    image_path: str
    ground_truth_path: str | None
    geometry: dict[str, Any]
    preprocessing: dict[str, Any] | None
    state: ScanState
    position: int
    added_at: datetime
    finished_at: datetime | None
    final_mask_path: str | None
    target_slices: dict[int, int] | None
    learned_at: datetime | None = None
    learned_tag: str | None = None


@dataclass(frozen=True)
class RoundRecord:
    """One labeling round of a scan (Alg 3: request slices, receive them, propagate, train, check).

    Attributes
    ----------
    number : int
        1-based round number within the scan.
    requested : dict of int to tuple of int
        Array axis -> sorted slice indices the annotator is asked to draw.
    planes : dict of int to str
        Array axis -> clinical plane name (``sagittal``, ``coronal``, ``axial``) where known.
    proposal_scores : dict of int to tuple of float, or None
        Array axis -> guidance score of every slice along that axis (Alg 4's per-slice residual sums).
    """

    id: int
    scan_id: int
    number: int
    status: RoundStatus
    requested: dict[int, tuple[int, ...]]
    planes: dict[int, str]
    proposal_scores: dict[int, tuple[float, ...]] | None
    created_at: datetime
    processed_at: datetime | None
    metrics: dict[str, Any] | None
    model_version: str | None
    claimed_by: str | None = None
    claim_expires: datetime | None = None
    #: Axis -> ("first", "last"): the end slices of the target the round asked for (drawn wherever they are).
    ends: dict[int, tuple[str, ...]] = field(default_factory=dict)

    @property
    def is_open(self) -> bool:
        """Whether the round still awaits a submission or its processing."""
        return self.status is not RoundStatus.PROCESSED


@dataclass(frozen=True)
class LaborRow:
    """Labor of one submission on one plane (Eq 3-4): drawn slices and their fraction of the target slices."""

    axis: int
    plane: str
    slices: int
    fraction: float

    def __post_init__(self) -> None:
        axis = _as_int(self.axis)
        if axis not in (0, 1, 2):
            raise ValueError(f"labor row: axis must be 0, 1 or 2, got {self.axis!r}")
        object.__setattr__(self, "axis", axis)
        known = [p.value for p in Plane]
        plane = self.plane.value if isinstance(self.plane, Plane) else self.plane
        if plane not in known:
            raise ValueError(f"labor row: plane must be one of {known}, got {self.plane!r}")
        object.__setattr__(self, "plane", plane)
        slices = _as_int(self.slices)
        if slices is None or slices < 0:
            raise ValueError(f"labor row: slices must be an int >= 0, got {self.slices!r}")
        object.__setattr__(self, "slices", slices)
        try:
            fraction = float(self.fraction)
        except (TypeError, ValueError) as err:
            raise ValueError(f"labor row: fraction must be a number, got {self.fraction!r}") from err
        if isinstance(self.fraction, bool) or not (0.0 <= fraction < float("inf")):
            raise ValueError(f"labor row: fraction must be finite and >= 0, got {self.fraction!r}")
        object.__setattr__(self, "fraction", fraction)


def _as_int(value: object) -> int | None:
    """``value`` as an int if it is an integer (numpy integers included, bools not), else None."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        return None
    return int(value.__index__())  # type: ignore[attr-defined]


@dataclass(frozen=True)
class SubmissionRecord:
    """A stored label file: its content hash, where it lies, what was drawn, and the labor it counted."""

    id: int
    round_id: int
    scan_id: int
    sha256: str
    stored_path: str
    original_name: str
    drawn: dict[int, frozenset[int]]
    n_drawn: int
    received_at: datetime
    labor: tuple[LaborRow, ...]


@dataclass(frozen=True)
class StopRecord:
    """One stopping-rule decision (e.g. ``rule="dice_estimate", value=0.87, passed=True``)."""

    id: int
    scan_id: int
    round_id: int | None
    rule: str
    value: float | None
    passed: bool
    decided_at: datetime


@dataclass(frozen=True)
class ModelVersionRecord:
    """A segmenter version (F_prev of Alg 5, or a scheduled retraining) and where its weights are."""

    id: int
    campaign_id: int
    version: int
    uri: str
    scans_seen: int
    rounds_seen: int
    created_at: datetime
    alias: str | None
    checkpoint: str | None = None


@dataclass(frozen=True)
class ScanLabor:
    """Labor spent on one scan: the sum of its labor rows (Eq 3-4), total and per plane."""

    scan_id: int
    case_id: str
    state: ScanState
    fraction: float
    slices: int
    by_plane: dict[str, float]


@dataclass(frozen=True)
class StatusSummary:
    """Where a campaign stands: scans per state, labor spent, rounds, submissions, latest model version."""

    campaign: str
    counts: dict[str, int]
    n_scans: int
    cumulative_labor: float
    cumulative_slices: int
    n_rounds: int
    n_submissions: int
    latest_model_version: int | None
