"""Helpers shared by the tracking store and registry: checks, metric flattening, URIs, the init lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Valid MLflow metric / tag key (letters, digits, ``_ - . / space``), at most 250 characters.
_KEY = re.compile(r"^[A-Za-z0-9_\-./ ]{1,250}$")
_CAMPAIGN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

#: Tag on a run: the highest step already logged there (re-logging a round after a crash is skipped).
_LOGGED_STEP = "dil.last_step"
_ARTIFACT_DIR = "segmenter"
_CAMPAIGN_KEY = ("campaign",)
_WEIGHTS_FILE = "segmenter.pt"


def default_tracking_uri(workspace_root: str | os.PathLike[str]) -> str:
    """The embedded store of a workspace: ``sqlite:///<ws>/mlflow/mlflow.db``."""
    return f"sqlite:///{Path(workspace_root).resolve() / 'mlflow' / 'mlflow.db'}"


def _is_local_store(uri: str) -> bool:
    """Whether artifacts must be placed by the client (a database or file URI, not a tracking server)."""
    return not uri.startswith(("http://", "https://", "databricks"))


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if missing), held for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _metric_value(key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) and not hasattr(value, "__float__"):
        raise ValueError(f"metrics[{key!r}]: must be a number or None, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metrics[{key!r}]: must be a number or None, got {value!r}") from err
    return out


def _check_key(key: object, what: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(
            f"{what}: keys must be 1-250 characters of letters, digits, '_', '-', '.', '/', ' '; got {key!r}"
        )
    return key


def _check_case(case_id: object) -> str:
    if not isinstance(case_id, str) or not case_id.strip() or len(case_id) > 250:
        raise ValueError(f"case_id: must be a non-empty string of at most 250 characters, got {case_id!r}")
    return case_id


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    out = int(value.__index__())  # type: ignore[attr-defined]
    if out < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    return out


def flatten_round_metrics(
    metrics: Mapping[str, Any],
    *,
    planes: Mapping[int, str] | None = None,
    timings: Mapping[str, float] | None = None,
    labor_fraction: float | None = None,
) -> dict[str, float | None]:
    """Turn a round's ledger metrics into flat MLflow metrics.

    Nested per-axis counts (``{"slices_drawn": {"0": 3, "1": 2}}``) become one metric per plane
    (``slices_drawn_sagittal``), numbers pass through, anything else (strings, lists) is dropped.

    Parameters
    ----------
    metrics : mapping
        As stored by the round flow (``slices_drawn``, ``dice_gt_proxy``, ``stop_value``, ...).
    planes : mapping of int to str, optional
        Array axis -> clinical plane name (the round's ``planes``); axes without a name stay ``axis<k>``.
    timings : mapping of str to float, optional
        Seconds per stage (``{"propagate": 0.01, "train": 2.3}``), logged as ``time_<stage>_s``.
    labor_fraction : float, optional
        The scan's labor so far (fraction of full contouring, eq. 4), logged as ``labor_fraction``.

    Returns
    -------
    dict of str to float or None
        Ready for :meth:`Tracker.log_round` (None values are skipped there).
    """
    names = {int(k): str(v) for k, v in (planes or {}).items()}
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            for axis, n in value.items():
                try:
                    a = int(axis)
                except (TypeError, ValueError):
                    label = str(axis)
                else:
                    label = names.get(a, f"axis{a}")
                if isinstance(n, int | float) and not isinstance(n, bool):
                    out[f"{key}_{label}"] = float(n)
        elif value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
            out[str(key)] = None if value is None else float(value)
    for stage, seconds in (timings or {}).items():
        out[f"time_{stage}_s"] = None if seconds is None else float(seconds)
    if labor_fraction is not None:
        out["labor_fraction"] = float(labor_fraction)
    return out


def processed_rounds(ledger: Any, campaign_id: int) -> int:
    """Rounds processed in the whole campaign: the step of the campaign run's cumulative labor."""
    n = 0
    for scan in ledger.list_scans(campaign_id):
        n += sum(1 for r in ledger.list_rounds(scan.id) if r.status.value == "processed")
    return n


@dataclass(frozen=True)
class ModelVersionInfo:
    """A registered segmenter version, as the report and the retraining flow read it."""

    version: int
    kind: str
    scan: str | None
    rounds: int | None
    scans_seen: int | None
    created_ms: int
    aliases: tuple[str, ...]
    val_dice: float | None
    source: str
    tags: dict[str, str]


def _with_alias(info: ModelVersionInfo, alias: str) -> ModelVersionInfo:
    from dataclasses import replace

    return replace(info, aliases=tuple(sorted({*info.aliases, alias})))
