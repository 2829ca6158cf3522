"""Labeling requests: what the physician is asked to draw next, in files 3D Slicer and ITK-SNAP open.

A request lives in ``requests/<case>/round-<k>/``::

    request.json        case, round, slices to draw named as a clinician names them ("coronal slice 27"),
                        the quality bar and the segmenter version the prediction comes from
    mask_seg.nii.gz     the scan's current mask: exactly what ``dil accept`` finalizes
    proxy_seg.nii.gz    current proxy mask (the drawn slices propagated), when anything is drawn
    prediction_seg.nii.gz  current segmenter prediction (>= 0.5), when there is one

All are label maps in the scan's own geometry, which 3D Slicer and ITK-SNAP open directly.

``request.json`` also gives the path of the scan's image and, for each slice, the array axis, so a program can
read it back without the plane mapping.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dil_core.geometry import Geometry
from dil_core.io import write_label
from dil_core.planes import SliceRef

__all__ = ["LabelingRequest", "read_request", "write_request"]


@dataclass(frozen=True)
class LabelingRequest:
    """Slices to draw on one scan in one round (``slices``: array axis -> indices)."""

    case_id: str
    round: int
    slices: Mapping[int, Sequence[int]]
    image: str
    strategy: str = ""
    rho: float | None = None
    segmenter: str | None = None
    #: Axis -> ("first", "last"): draw the first / last slice that shows the target on that plane.
    ends: Mapping[int, Sequence[str]] = field(default_factory=dict)

    def slice_refs(self, geometry: Geometry) -> list[SliceRef]:
        """The slices as clinical names, in plane order then index order."""
        refs = [SliceRef.from_axis(a, i, geometry) for a, idx in sorted(self.slices.items()) for i in sorted(idx)]
        return refs

    def to_json(self, geometry: Geometry) -> dict[str, Any]:
        refs = [
            {"plane": SliceRef.from_axis(a, i, geometry).plane.value, "index": int(i), "axis": int(a),
             "name": str(SliceRef.from_axis(a, i, geometry))}
            for a, idx in sorted(self.slices.items())
            for i in sorted(idx)
        ]
        for axis, which in sorted(self.ends.items()):
            plane = SliceRef.from_axis(axis, 0, geometry).plane.value
            refs += [{"plane": plane, "index": None, "axis": int(axis), "find": w,
                      "name": f"the {w} {plane} slice that shows the target"} for w in which]
        return {
            "case": self.case_id,
            "round": self.round,
            "image": self.image,
            "slices": refs,
            "strategy": self.strategy,
            "quality_bar": self.rho,
            "segmenter": self.segmenter,
            "files": {"mask": "mask_seg.nii.gz", "proxy": "proxy_seg.nii.gz", "prediction": "prediction_seg.nii.gz"},
            "instructions": (
                "Draw the target on each listed slice (any non-zero label) in a label volume of this scan's "
                "geometry and submit it. A listed slice without an index (\"find\": \"first\" or \"last\") is the "
                "first or last slice of that plane showing the target: find it and draw it. Leave a listed slice "
                "empty if it shows no target. If the mask "
                "(mask_seg.nii.gz) is good enough as it is, accept it instead of drawing."
            ),
        }


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_request(
    folder: str | os.PathLike[str],
    request: LabelingRequest,
    geometry: Geometry,
    *,
    mask: np.ndarray | None = None,
    proxy: np.ndarray | None = None,
    prediction: np.ndarray | None = None,
) -> Path:
    """Write a labeling request folder; returns the path of ``request.json`` (written last).

    Parameters
    ----------
    folder : path
        ``requests/<case>/round-<k>``; created if needed.
    request : LabelingRequest
    geometry : Geometry
        The scan's geometry: plane names come from its direction cosines, volumes are written in it.
    mask : (X, Y, Z) ndarray, optional
        The scan's current mask (what an accept finalizes).
    proxy, prediction : (X, Y, Z) ndarray, optional
        Binary proxy mask and segmenter probabilities (thresholded at 0.5).
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if mask is not None:
        write_label(out / "mask_seg.nii.gz", (np.asarray(mask) > 0).astype(np.uint8), geometry)
    if proxy is not None:
        write_label(out / "proxy_seg.nii.gz", (np.asarray(proxy) > 0).astype(np.uint8), geometry)
    if prediction is not None:
        write_label(out / "prediction_seg.nii.gz", (np.asarray(prediction) >= 0.5).astype(np.uint8), geometry)
    path = out / "request.json"
    _write_json_atomic(path, request.to_json(geometry))
    return path


def read_request(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``request.json`` (a folder or the file itself).

    Raises
    ------
    ValueError
        If the file is missing or not a request.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "request.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read labeling request {p}: {err}") from err
    if not isinstance(data, dict) or "slices" not in data or "case" not in data:
        raise ValueError(f"{p} is not a labeling request (no 'case' or 'slices')")
    return data
