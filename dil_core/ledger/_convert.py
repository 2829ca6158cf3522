"""Validation of ledger inputs and conversion of rows to records. Private helpers of :mod:`dil_core.ledger`."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from enum import Enum
from pathlib import PurePath
from typing import Any

from dil_core.ledger._orm import CampaignRow, ModelVersionRow, RoundRow, ScanRow, StopDecisionRow, SubmissionRow
from dil_core.ledger.records import (
    CampaignRecord,
    LaborRow,
    ModelVersionRecord,
    RoundRecord,
    RoundStatus,
    ScanRecord,
    ScanState,
    StopRecord,
    SubmissionRecord,
)
from dil_core.typing import Plane, freeze_drawn

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PLANES = tuple(p.value for p in Plane)


# ---------------------------------------------------------------------------------------------- validation
def json_value(value: Any, name: str) -> Any:
    """``value`` as plain JSON (numpy scalars/arrays, paths, enums and sets converted); NaN/inf refused."""

    def default(obj: Any) -> Any:
        if isinstance(obj, Enum):
            return obj.value
        if isinstance(obj, PurePath):
            return str(obj)
        if isinstance(obj, (set, frozenset)):
            return sorted(obj)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        if hasattr(obj, "tolist"):  # numpy scalars and arrays
            return obj.tolist()
        raise TypeError(f"{type(obj).__name__} is not JSON serializable")

    try:
        return json.loads(json.dumps(value, default=default, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: must be JSON-serialisable with finite numbers ({err})") from err


def json_mapping(value: Any, name: str, *, optional: bool) -> dict[str, Any] | None:
    """A JSON object (dict with string keys) or, when ``optional``, None."""
    if value is None and optional:
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: expected a mapping, got {type(value).__name__}")
    out = json_value(dict(value), name)
    if not isinstance(out, dict):  # pragma: no cover - json of a dict is a dict
        raise ValueError(f"{name}: expected a mapping")
    return out


def text(value: Any, name: str, *, max_len: int | None = None) -> str:
    """A non-empty string (paths accepted via ``os.fspath``)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}: must be a non-empty string, got {value!r}")
    if max_len is not None and len(value) > max_len:
        raise ValueError(f"{name}: must be at most {max_len} characters, got {len(value)}")
    return value


def optional_text(value: Any, name: str, *, max_len: int | None = None) -> str | None:
    return None if value is None else text(value, name, max_len=max_len)


def integer(value: Any, name: str, *, minimum: int | None = None) -> int:
    """An ``int`` (numpy integers accepted, bools refused) no smaller than ``minimum``."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{name}: must be an integer, got {value!r}")
    out = int(value.__index__())
    if minimum is not None and out < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {out}")
    return out


def finite_or_none(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name}: must be a finite number or None, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: must be a finite number or None, got {value!r}") from err
    if not math.isfinite(out):
        raise ValueError(f"{name}: must be a finite number or None, got {value!r}")
    return out


def sha256_hex(value: Any) -> str:
    if not isinstance(value, str) or not _SHA256.match(value.lower()):
        raise ValueError(f"sha256: must be 64 hex digits, got {value!r}")
    return value.lower()


def scan_state(value: Any, name: str = "state") -> ScanState:
    try:
        return ScanState(value)
    except ValueError as err:
        known = [s.value for s in ScanState]
        raise ValueError(f"{name}: unknown scan state {value!r}; known: {known}") from err


def geometry(value: Any) -> dict[str, Any]:
    """Geometry as JSON; ``size`` must be three positive integers (a :class:`Geometry` or a mapping)."""
    out = json_mapping(value, "geometry", optional=False)
    assert out is not None
    size = out.get("size")
    if (
        not isinstance(size, list)
        or len(size) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise ValueError(f"geometry: 'size' must be three positive integers, got {size!r}")
    return out


def axis_key(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name}: axis must be 0, 1 or 2, got {value!r}")
    try:
        axis = int(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: axis must be 0, 1 or 2, got {value!r}") from err
    if axis not in (0, 1, 2) or str(axis) != str(value).strip():
        raise ValueError(f"{name}: axis must be 0, 1 or 2, got {value!r}")
    return axis


def slices(value: Mapping[Any, Any], name: str, size: list[int]) -> dict[int, frozenset[int]]:
    """``{axis: indices}`` checked against the scan's ``size`` (each index in ``[0, size[axis])``)."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: expected a mapping axis -> slice indices, got {type(value).__name__}")
    try:
        frozen = freeze_drawn({axis_key(a, name): _indices(v, name, a) for a, v in value.items()})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: {err}") from err
    for axis, indices in frozen.items():
        bad = sorted(i for i in indices if not 0 <= i < size[axis])
        if bad:
            raise ValueError(
                f"{name}: slice indices on axis {axis} must lie in [0, {size[axis]}), got {bad[:5]}"
            )
    return frozen


def _indices(value: Any, name: str, axis: Any) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"indices of axis {axis} must be an iterable of integers, got {value!r}")
    return [integer(i, f"{name}[{axis}]") for i in value]


def planes(value: Mapping[Any, Any] | None, axes: Iterable[int]) -> dict[int, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"planes: expected a mapping axis -> plane name, got {type(value).__name__}")
    out: dict[int, str] = {}
    for axis, plane in value.items():
        a = axis_key(axis, "planes")
        name = plane.value if isinstance(plane, Plane) else plane
        if name not in _PLANES:
            raise ValueError(f"planes: plane of axis {a} must be one of {list(_PLANES)}, got {plane!r}")
        out[a] = name
    extra = sorted(set(out) - set(axes))
    if extra:
        raise ValueError(f"planes: names given for axes {extra} that have no requested slices")
    if len(set(out.values())) != len(out):
        raise ValueError(f"planes: one plane name per axis, got {out}")
    return out


def scores(value: Mapping[Any, Any] | None, size: list[int]) -> dict[str, list[float]] | None:
    """Per-slice guidance scores, one finite score for every slice along each given axis."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"scores: expected a mapping axis -> per-slice scores, got {type(value).__name__}")
    out: dict[str, list[float]] = {}
    for axis, seq in value.items():
        a = axis_key(axis, "scores")
        flat = json_value(seq, f"scores[{a}]")
        if not isinstance(flat, list) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in flat
        ):
            raise ValueError(f"scores[{a}]: must be a 1D sequence of finite numbers")
        if len(flat) != size[a]:
            raise ValueError(f"scores[{a}]: needs one score per slice ({size[a]}), got {len(flat)}")
        out[str(a)] = [float(x) for x in flat]
    return out


def target_slices(value: Mapping[Any, Any] | None, size: list[int]) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"target_slices: expected a mapping axis -> count, got {type(value).__name__}")
    out: dict[str, int] = {}
    for axis, count in value.items():
        a = axis_key(axis, "target_slices")
        n = integer(count, f"target_slices[{a}]", minimum=0)
        if n > size[a]:
            raise ValueError(f"target_slices[{a}]: at most the {size[a]} slices on that axis, got {n}")
        out[str(a)] = n
    return out


def labor_rows(value: Iterable[Any]) -> list[LaborRow]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValueError(f"labor_rows: expected an iterable of LaborRow, got {type(value).__name__}")
    rows: list[LaborRow] = []
    for i, row in enumerate(value):
        if isinstance(row, Mapping):
            try:
                row = LaborRow(**row)
            except TypeError as err:
                raise ValueError(f"labor_rows[{i}]: {err}") from err
        if not isinstance(row, LaborRow):
            raise ValueError(f"labor_rows[{i}]: expected a LaborRow or a mapping, got {type(row).__name__}")
        rows.append(row)
    axes = [r.axis for r in rows]
    if len(set(axes)) != len(axes):
        raise ValueError(f"labor_rows: one row per axis, got axes {axes}")
    return rows


# ------------------------------------------------------------------------------------------ row -> record
def _int_keys(mapping: Mapping[str, Any] | None) -> dict[int, Any] | None:
    return None if mapping is None else {int(k): v for k, v in mapping.items()}


def campaign_record(row: CampaignRow) -> CampaignRecord:
    return CampaignRecord(id=row.id, name=row.name, config=dict(row.config_json), created_at=row.created_at)


def scan_record(row: ScanRow) -> ScanRecord:
    target = _int_keys(row.target_slices_json)
    return ScanRecord(
        id=row.id,
        campaign_id=row.campaign_id,
        case_id=row.case_id,
        image_path=row.image_path,
        ground_truth_path=row.ground_truth_path,
        geometry=dict(row.geometry_json),
        preprocessing=None if row.preprocessing_json is None else dict(row.preprocessing_json),
        state=ScanState(row.state),
        position=row.position,
        added_at=row.added_at,
        finished_at=row.finished_at,
        final_mask_path=row.final_mask_path,
        target_slices=None if target is None else {k: int(v) for k, v in sorted(target.items())},
        learned_at=row.learned_at,
        learned_tag=row.learned_tag,
    )


_ENDS = ("first", "last")


def ends(value: Mapping[Any, Any] | None) -> dict[int, tuple[str, ...]]:
    """``{axis: ("first", "last")}``: the end slices of the target asked for on each axis."""
    if not value:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"ends: expected a mapping axis -> ('first', 'last'), got {type(value).__name__}")
    out: dict[int, tuple[str, ...]] = {}
    for axis, names in value.items():
        got = tuple(str(n) for n in names)
        if not got or any(n not in _ENDS for n in got) or len(set(got)) != len(got):
            raise ValueError(f"ends: axis {axis} asks for {list(got)}; each of 'first', 'last' at most once")
        out[axis_key(axis, "ends")] = tuple(n for n in _ENDS if n in got)
    return out


def requested_json(
    requested: Mapping[int, frozenset[int]], plane_names: Mapping[int, str], end_names: Mapping[int, tuple[str, ...]]
    | None = None,
) -> list[dict[str, Any]]:
    out = []
    for axis in sorted(requested):
        entry: dict[str, Any] = {"axis": axis, "plane": plane_names.get(axis), "slices": sorted(requested[axis])}
        if end_names and axis in end_names:
            entry["ends"] = list(end_names[axis])
        out.append(entry)
    return out


def round_record(row: RoundRow) -> RoundRecord:
    entries = row.requested_json
    scores_ = _int_keys(row.proposal_scores_json)
    return RoundRecord(
        id=row.id,
        scan_id=row.scan_id,
        number=row.number,
        status=RoundStatus(row.status),
        requested={int(e["axis"]): tuple(int(i) for i in e["slices"]) for e in entries},
        ends={int(e["axis"]): tuple(e["ends"]) for e in entries if e.get("ends")},
        planes={int(e["axis"]): e["plane"] for e in entries if e.get("plane")},
        proposal_scores=None if scores_ is None else {k: tuple(float(x) for x in v) for k, v in scores_.items()},
        created_at=row.created_at,
        processed_at=row.processed_at,
        metrics=None if row.metrics_json is None else dict(row.metrics_json),
        model_version=row.model_version,
        claimed_by=row.claimed_by,
        claim_expires=row.claim_expires,
    )


def submission_record(row: SubmissionRow, labor: Iterable[Any]) -> SubmissionRecord:
    drawn = _int_keys(row.drawn_json) or {}
    return SubmissionRecord(
        id=row.id,
        round_id=row.round_id,
        scan_id=row.scan_id,
        sha256=row.sha256,
        stored_path=row.stored_path,
        original_name=row.original_name,
        drawn={k: frozenset(int(i) for i in v) for k, v in sorted(drawn.items())},
        n_drawn=row.n_drawn,
        received_at=row.received_at,
        labor=tuple(
            LaborRow(axis=r.axis, plane=r.plane, slices=r.slices, fraction=r.fraction)
            for r in sorted(labor, key=lambda r: r.axis)
        ),
    )


def stop_record(row: StopDecisionRow) -> StopRecord:
    return StopRecord(
        id=row.id,
        scan_id=row.scan_id,
        round_id=row.round_id,
        rule=row.rule,
        value=row.value,
        passed=bool(row.passed),
        decided_at=row.decided_at,
    )


def model_version_record(row: ModelVersionRow) -> ModelVersionRecord:
    return ModelVersionRecord(
        id=row.id,
        campaign_id=row.campaign_id,
        version=row.version,
        uri=row.uri,
        scans_seen=row.scans_seen,
        rounds_seen=row.rounds_seen,
        created_at=row.created_at,
        alias=row.alias,
        checkpoint=row.checkpoint,
    )
