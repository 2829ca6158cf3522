"""Receive a physician's label file: copy it in, check it, and record it in the ledger, nothing else.

This is all a submission does before it is acknowledged (``dil submit``, the inbox, the HTTP upload): no
segmenter, no Prefect, no MLflow, so it answers in about a second. The round that the submission completes is
processed afterwards by the round service from the ledger.

The order keeps every failure harmless:

1. the file is copied into the scan's ``submissions/`` folder under a temporary name, hashed while copied;
2. the copy (never the original, which may change meanwhile) is validated against the scan's geometry;
3. the copy is renamed to its content address, and one ledger transaction records it with its labor.

A refused file leaves nothing behind. A crash before step 3's transaction leaves at most an orphan file.

Identity of a submission is (scan, round, content): the same file sent twice for one round counts once, and
an all-empty file for round 3 is a new answer even when an all-empty file answered round 2. Labor counts only
slices new to the scan, so a physician who keeps one growing label map is not charged again for the slices
drawn in earlier rounds.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dil_core.geometry import Geometry
from dil_core.ledger import Ledger, RoundStatus, ScanRecord
from dil_core.ledger.files import file_suffix
from dil_core.planes import plane_of
from dil_core.validation import SubmissionError, submission_content, validate_submission
from dil_core.workspace import Workspace

__all__ = ["SubmissionRejected", "Submitted", "submit_label_file"]

_CHUNK = 1 << 20


class SubmissionRejected(SubmissionError):
    """A label file the scan cannot take now (no open request, round already answered); nothing was stored."""

    problem = "not_open"


@dataclass(frozen=True)
class Submitted:
    """The answer to a submission: what was stored and counted, and where the next request will appear.

    ``new``, ``again`` and ``empty`` name slices by plane: ``new`` are the slices counted as labor (labeled for
    the first time on this scan), ``again`` those labeled in an earlier round (not counted again), ``empty``
    the requested slices left empty ("no target here"; counted, they were looked at).
    """

    submission_id: int
    created: bool
    case_id: str
    round: int
    new: dict[str, list[int]] = field(default_factory=dict)
    again: dict[str, list[int]] = field(default_factory=dict)
    empty: dict[str, list[int]] = field(default_factory=dict)
    next_request: Path | None = None


def geometry_of(scan: ScanRecord) -> Geometry:
    g = scan.geometry
    return Geometry(
        size=tuple(int(v) for v in g["size"]),
        spacing=tuple(float(v) for v in g["spacing"]),
        origin=tuple(float(v) for v in g["origin"]),
        direction=tuple(float(v) for v in g["direction"]),
    )


#: Formats whose voxels live in a second file next to the header; stored as one self-contained file.
_DETACHED = {".nhdr": ".nrrd", ".mhd": ".mha"}


def _stage_detached(src: Path, folder: Path, geometry: Geometry) -> tuple[str, Path, str]:
    """A detached header and its data file, read once (the header's size checked against the scan first) and
    written into ``folder`` as one self-contained file; (sha256, staged path, stored suffix)."""
    import SimpleITK as sitk

    from dil_core.validation import SizeMismatchError, UnreadableFileError

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(src))
    try:
        reader.ReadImageInformation()
        size = tuple(int(v) for v in reader.GetSize())
        if size != tuple(geometry.size):
            raise SizeMismatchError(
                f"submission {src}: wrong size: expected {tuple(geometry.size)} voxels, got {size}",
                expected=tuple(geometry.size), actual=size,
            )
        image = reader.Execute()
    except RuntimeError as err:
        raise UnreadableFileError(
            f"submission {src}: the header or its data file cannot be read ({str(err).strip().splitlines()[-1]})",
            expected="a header and its data file", actual="unreadable",
        ) from err
    suffix = _DETACHED[src.suffix.lower()]
    fd, tmp = tempfile.mkstemp(prefix=".incoming-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, useCompression=True)
        digest = hashlib.sha256()
        with open(tmp, "rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest.hexdigest(), Path(tmp), suffix


def _stage(src: Path, folder: Path) -> tuple[str, Path]:
    """Copy ``src`` into ``folder`` under a temporary name keeping its suffix; (sha256, staged path)."""
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=".incoming-", suffix=file_suffix(src.name) or ".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest.hexdigest(), Path(tmp)


def _commit(staged: Path, sha: str, suffix: str) -> Path:
    """Rename a staged copy to its content address (a no-op when that content is already stored)."""
    final = staged.parent / f"{sha}{suffix}"
    if final.is_file() and final.stat().st_size == staged.stat().st_size:
        staged.unlink()
    else:
        os.replace(staged, final)
        fd = os.open(staged.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return final


def _named(slices: Mapping[int, Any], planes: Mapping[int, str]) -> dict[str, list[int]]:
    return {planes[a]: sorted(int(i) for i in idx) for a, idx in sorted(slices.items()) if idx}


def submit_label_file(
    ledger: Ledger, workspace: Workspace, campaign_id: int, case_id: str, label_file: str | os.PathLike[str]
) -> Submitted:
    """Validate and store a label file for the scan's open request; returns what was counted.

    Raises
    ------
    SubmissionError
        (a ``ValueError``) The file is missing, unreadable, of another geometry, not binary, holds NaN
        (:mod:`dil_core.validation`), or the scan has no request open for it (:class:`SubmissionRejected`).
        Nothing is stored then.
    LookupError
        The campaign has no such scan.
    """
    scan = ledger.find_scan(campaign_id, case_id)
    if scan is None:
        raise LookupError(f"the campaign has no scan {case_id!r}")
    rnd = ledger.current_round(scan.id)
    if rnd is None:
        raise SubmissionRejected(f"scan {case_id!r} has no labeling request open (state: {scan.state.value})")
    src = Path(label_file).expanduser()
    if not src.is_file():
        validate_submission(src, geometry_of(scan))  # raises the precise error (missing, a folder, empty path)
    folder = workspace.submissions_dir(case_id)
    folder.mkdir(parents=True, exist_ok=True)
    if src.suffix.lower() in _DETACHED:  # .nhdr / .mhd: the voxels are in another file; store one file
        sha, staged, suffix = _stage_detached(src, folder, geometry_of(scan))
    else:
        sha, staged = _stage(src, folder)
        suffix = file_suffix(src.name)
    try:
        earlier = ledger.list_submissions(scan.id)
        same = next((s for s in earlier if s.sha256 == sha and s.round_id == rnd.id), None)
        if same is not None:
            staged.unlink()
            return Submitted(same.id, False, case_id, rnd.number, next_request=workspace.requests_dir(
                case_id, rnd.number + 1))
        if rnd.status is not RoundStatus.REQUESTED:
            raise SubmissionRejected(
                f"round {rnd.number} of scan {case_id!r} already has its submission (status {rnd.status.value}); "
                "wait for the next labeling request"
            )
        geometry = geometry_of(scan)
        mask = validate_submission(staged, geometry)
        content = submission_content(mask, rnd.requested)
        before: dict[int, set[int]] = {}
        for sub in earlier:
            for axis, idx in sub.drawn.items():
                before.setdefault(int(axis), set()).update(idx)
        labeled = {a: idx for a, idx in content.labeled.items() if idx}
        new = {a: idx - before.get(a, set()) for a, idx in labeled.items()}
        again = {a: idx & before.get(a, set()) for a, idx in labeled.items()}
        planes = {a: plane_of(a, geometry).value for a in range(3)}
        targets = dict(scan.target_slices or {}) or {a: geometry.size[a] for a in range(3)}
        rows = [
            {"axis": a, "plane": planes[a], "slices": len(idx), "fraction": len(idx) / max(targets.get(a, 1), 1)}
            for a, idx in sorted(new.items()) if idx
        ]
        stored = _commit(staged, sha, suffix)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    sub, created = ledger.record_submission(
        scan.id, rnd.id, sha, str(stored), src.name, {a: sorted(v) for a, v in labeled.items()}, rows
    )
    return Submitted(
        sub.id, created, case_id, rnd.number,
        new=_named(new, planes), again=_named(again, planes), empty=_named(content.empty_requested, planes),
        next_request=workspace.requests_dir(case_id, rnd.number + 1),
    )


def _copy_atomic(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=file_suffix(dest.name), dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def accept_request(
    ledger: Ledger,
    workspace: Workspace,
    campaign_id: int,
    case_id: str,
    *,
    rule: str = "accept",
    value: float | None = None,
) -> Path:
    """Finalize the mask of the scan's open request (``mask_seg.nii.gz`` in its folder); the scan passes.

    The checks come first, then the mask is copied to ``masks/<case>_seg.nii.gz``, then one ledger
    transaction finishes the scan and closes the round without a submission. A scan at its quota is accepted
    with the final mask it ended with.

    Raises
    ------
    ValueError
        The scan has passed already, has a submission that is not processed yet, or has no mask to accept.
    LookupError
        No such scan.
    """
    from dil_core.io import read_label
    from dil_core.labor import target_slice_counts
    from dil_core.ledger import ScanState
    from dil_core.metrics import dice

    scan = ledger.find_scan(campaign_id, case_id)
    if scan is None:
        raise LookupError(f"the campaign has no scan {case_id!r}")
    if scan.state is ScanState.PASSED:
        raise ValueError(f"scan {case_id!r} has already passed")
    if scan.state is ScanState.AT_QUOTA:
        if not scan.final_mask_path or not Path(scan.final_mask_path).is_file():
            raise ValueError(f"scan {case_id!r} is at its quota without a final mask to accept")
        ledger.record_stop(scan.id, None, rule, value, True, finish=ScanState.PASSED)
        return Path(scan.final_mask_path)
    rnd = ledger.current_round(scan.id)
    if rnd is None:
        raise ValueError(f"scan {case_id!r} has no labeling request open ({scan.state.value}): nothing to accept")
    if rnd.status is not RoundStatus.REQUESTED:
        raise ValueError(
            f"scan {case_id!r}: round {rnd.number} has a submission that is not processed yet; accept the mask "
            "of the request that follows it"
        )
    src = workspace.requests_dir(case_id, rnd.number) / "mask_seg.nii.gz"
    if not src.is_file():
        raise ValueError(f"scan {case_id!r}: request {rnd.number} has no mask to accept ({src} is missing)")
    metrics: dict[str, Any] = {"accepted": True, "stop_value": value}
    mask, _ = read_label(src)
    if not mask.any():
        raise ValueError(
            f"scan {case_id!r}: the mask of request {rnd.number} is empty (nothing drawn, no prediction): draw "
            "the requested slices first"
        )
    if scan.ground_truth_path:
        truth, _ = read_label(scan.ground_truth_path)
        metrics["dice_gt_mask"] = dice(truth > 0, mask > 0)
    path = _copy_atomic(src, workspace.final_mask(case_id))
    if not scan.ground_truth_path:
        ledger.set_target_slices(scan.id, target_slice_counts(mask > 0))
    ledger.record_stop(
        scan.id, rnd.id, rule, value, True, finish=ScanState.PASSED, final_mask_path=str(path), close_round=True,
        metrics=metrics,
    )
    return path
