"""Check an annotator's submission before anything is stored, and tell which slices it draws.

A submission is a label volume (NIfTI, NRRD, MHA) in the scan's own geometry. :func:`validate_submission`
reads it with SimpleITK and either returns the binary ``(X, Y, Z)`` mask or raises a
:class:`SubmissionError` subclass naming the problem with the expected and the actual value, so that the
campaign can refuse the file and leave its state unchanged. :func:`submission_content` then splits the
mask's slices into drawn, requested-but-empty and extra slices (the annotator's labor, Eq 3-4).

Label values: the campaign's target is binary. A file may use ``0`` for background and **one** non-zero
value of its choice for the target (``{0, 1}``, ``{0, 255}``, ``{0, 7}``: Slicer and ITK-SNAP number
segments from 1 but users renumber them). Two or more distinct non-zero values are refused: which one is
the target is ambiguous (a multi-label file such as the hippocampus ground truth, 1 anterior / 2
posterior, must be merged, ``label > 0``, before it is submitted).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dil_core.geometry import Geometry

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


class SubmissionError(ValueError):
    """A submitted label file that cannot be accepted; nothing of it may be stored.

    Attributes
    ----------
    problem : str
        Short machine-readable name of the problem (``"wrong_spacing"``, ``"non_binary"``, ...).
    expected, actual : object
        What the scan requires and what the file has (``None`` where it does not apply).
    """

    problem = "invalid_submission"

    def __init__(self, message: str, *, expected: object = None, actual: object = None) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class EmptyPathError(SubmissionError):
    """No file name was given."""

    problem = "empty_path"


class MissingFileError(SubmissionError):
    """The file does not exist, or is a folder."""

    problem = "missing_file"


class UnreadableFileError(SubmissionError):
    """The file is not an image SimpleITK can read, or it is truncated or corrupt."""

    problem = "unreadable_file"


class DimensionError(SubmissionError):
    """The file is not a 3D scalar volume (2D, 4D, or several components per voxel)."""

    problem = "wrong_dimension"


class GeometryMismatchError(SubmissionError):
    """The file's geometry differs from the scan's."""

    problem = "wrong_geometry"


class SizeMismatchError(GeometryMismatchError):
    """Different number of voxels along some axis."""

    problem = "wrong_size"


class SpacingMismatchError(GeometryMismatchError):
    """Different voxel spacing."""

    problem = "wrong_spacing"


class OriginMismatchError(GeometryMismatchError):
    """Different origin (physical position of voxel (0, 0, 0))."""

    problem = "wrong_origin"


class DirectionMismatchError(GeometryMismatchError):
    """Different direction cosines (orientation)."""

    problem = "wrong_direction"


class NonFiniteValueError(SubmissionError):
    """The file holds NaN or infinite values."""

    problem = "non_finite"


class NonBinaryError(SubmissionError):
    """The file holds more than one distinct non-zero value."""

    problem = "non_binary"


def validate_submission(path: Path | str, geometry: Geometry, *, tol: float = 1e-4) -> np.ndarray:
    """Read a submitted label file and check it against the scan's geometry.

    Checks, in this order (the first failure is raised): a path is given; the file exists; SimpleITK reads
    its header; the file is complete (a cut gzip stream and a NIfTI shorter than its header says, which ITK
    would read without complaint, are caught here; ITK catches the rest when it reads the voxels); it is 3D
    with one component (a 4D file holding one volume, ``(X, Y, Z, 1)``, is read by ITK as 3D and accepted);
    size equal; spacing within ``tol * spacing`` per axis; origin within ``tol * min(spacing)`` per
    coordinate (a fraction of a voxel, as ITK compares origins); direction cosines within ``tol`` (they are
    unitless); no NaN or infinity; at most one distinct non-zero value.

    Parameters
    ----------
    path : Path or str
        The label file (NIfTI ``.nii``/``.nii.gz``, NRRD ``.nrrd``/``.nhdr``, MetaImage ``.mha``/``.mhd``).
    geometry : Geometry
        The scan's geometry, which the submission must have.
    tol : float, optional
        Relative tolerance of the geometry comparison (see above), >= 0. Default ``1e-4``: NIfTI stores
        spacing and origin as float32 and orientation as a quaternion, which round-trips far better than
        that.

    Returns
    -------
    (X, Y, Z) ndarray of uint8
        The mask in ITK index order, 1 where the file is non-zero, 0 elsewhere. All zero is valid (every
        requested slice left empty: no target on them).

    Raises
    ------
    EmptyPathError, MissingFileError, UnreadableFileError, DimensionError, SizeMismatchError,
    SpacingMismatchError, OriginMismatchError, DirectionMismatchError, NonFiniteValueError, NonBinaryError
        All subclasses of :class:`SubmissionError` (a ``ValueError``), with ``expected`` and ``actual``.
    TypeError
        If ``geometry`` is not a :class:`~dil_core.geometry.Geometry`.
    ValueError
        If ``tol`` is negative or not finite.

    References
    ----------
    DESIGN.md, "Contracts: Submission".
    """
    if not isinstance(geometry, Geometry):
        raise TypeError(f"geometry must be a dil_core.geometry.Geometry, got {type(geometry).__name__}")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if path is None or not str(path).strip():
        raise EmptyPathError("submission: no file given (empty path)", expected="a label file", actual=path)
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingFileError(f"submission {path}: no such file", expected="an existing file", actual=str(path))
    if path.is_dir():
        raise MissingFileError(
            f"submission {path}: is a folder, expected a label file (NIfTI, NRRD, MHA)",
            expected="a file",
            actual="a folder",
        )

    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise UnreadableFileError(
            f"submission {path}: not a readable image file ({_itk_reason(err)})",
            expected="a NIfTI, NRRD or MHA label volume",
            actual="unreadable",
        ) from err
    dimension = reader.GetDimension()
    size = tuple(int(s) for s in reader.GetSize())
    if dimension != 3:
        raise DimensionError(
            f"submission {path}: a {dimension}D image of size {size}, expected a 3D label volume of size "
            f"{tuple(geometry.size)}",
            expected=3,
            actual=dimension,
        )
    components = reader.GetNumberOfComponents()
    if components != 1:
        raise DimensionError(
            f"submission {path}: {components} components per voxel, expected 1 (a scalar label volume)",
            expected=1,
            actual=components,
        )
    _check_geometry(path, reader, geometry, tol)
    _check_nifti_data(path, geometry)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise UnreadableFileError(
            f"submission {path}: truncated or corrupt image data ({_itk_reason(err)})",
            expected="complete image data",
            actual="unreadable",
        ) from err
    array = np.transpose(sitk.GetArrayViewFromImage(image), (2, 1, 0))
    return _binary_mask(path, array)


def _itk_reason(err: BaseException) -> str:
    """The last informative line of an ITK exception text."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _fmt(values: Collection[float]) -> str:
    return "(" + ", ".join(f"{float(v) + 0.0:.6g}" for v in values) + ")"  # + 0.0: no "-0"


def _check_geometry(path: Path, reader: object, geometry: Geometry, tol: float) -> None:
    size = tuple(int(s) for s in reader.GetSize())  # type: ignore[attr-defined]
    if size != tuple(geometry.size):
        raise SizeMismatchError(
            f"submission {path}: wrong size: expected {tuple(geometry.size)} voxels, got {size}",
            expected=tuple(geometry.size),
            actual=size,
        )
    expected_spacing = np.asarray(geometry.spacing, dtype=float)
    spacing = np.asarray(reader.GetSpacing(), dtype=float)  # type: ignore[attr-defined]
    if np.any(np.abs(spacing - expected_spacing) > tol * np.abs(expected_spacing)):
        raise SpacingMismatchError(
            f"submission {path}: wrong spacing: expected {_fmt(expected_spacing)} mm, got {_fmt(spacing)} mm "
            f"(tolerance {tol:g} of the spacing)",
            expected=tuple(expected_spacing.tolist()),
            actual=tuple(spacing.tolist()),
        )
    expected_origin = np.asarray(geometry.origin, dtype=float)
    origin = np.asarray(reader.GetOrigin(), dtype=float)  # type: ignore[attr-defined]
    origin_tol = tol * float(np.min(np.abs(expected_spacing)))
    if np.any(np.abs(origin - expected_origin) > origin_tol):
        raise OriginMismatchError(
            f"submission {path}: wrong origin: expected {_fmt(expected_origin)} mm, got {_fmt(origin)} mm "
            f"(tolerance {origin_tol:g} mm)",
            expected=tuple(expected_origin.tolist()),
            actual=tuple(origin.tolist()),
        )
    expected_direction = np.asarray(geometry.direction, dtype=float)
    direction = np.asarray(reader.GetDirection(), dtype=float)  # type: ignore[attr-defined]
    if np.any(np.abs(direction - expected_direction) > tol):
        raise DirectionMismatchError(
            f"submission {path}: wrong direction: expected {_fmt(expected_direction)}, got {_fmt(direction)} "
            f"(tolerance {tol:g}; row-major 3x3 cosines)",
            expected=tuple(expected_direction.tolist()),
            actual=tuple(direction.tolist()),
        )


#: NIfTI datatype code -> numpy dtype of the voxels (the float ones are checked for NaN and infinity).
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _nifti_header(head: bytes) -> tuple[str, tuple[int, ...], int, int, int] | None:
    """(byte order, dims, datatype, bitpix, vox_offset) of a single-file NIfTI-1/2 header; None otherwise."""
    if len(head) >= 348 and head[344:348] == b"n+1\x00":
        for order in "<>":
            if struct.unpack(order + "i", head[:4])[0] == 348:
                dims = struct.unpack(order + "8h", head[40:56])
                datatype, bitpix = struct.unpack(order + "2h", head[70:74])
                offset = int(struct.unpack(order + "f", head[108:112])[0])
                return order, dims, datatype, bitpix, offset
    if len(head) >= 540 and head[4:12] == b"n+2\x00\r\n\x1a\n":
        for order in "<>":
            if struct.unpack(order + "i", head[:4])[0] == 540:
                dims = struct.unpack(order + "8q", head[16:80])
                datatype, bitpix = struct.unpack(order + "2h", head[12:16])
                offset = struct.unpack(order + "q", head[168:176])[0]
                return order, dims, datatype, bitpix, offset
    return None


def _check_nifti_data(path: Path, geometry: Geometry) -> None:
    """Read a NIfTI's voxel bytes as stored, within the size its header promises (already checked against the
    scan), and catch what ITK reads without complaint: a cut file or gzip stream, and NaN or infinite float
    values (ITK's NIfTI reader turns them into 0). Reading stops at the promised size, so a small gzip file
    that inflates to gigabytes (a "gzip bomb") costs no more than a label volume of the scan's size."""
    with path.open("rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as stream:  # type: ignore[operator]
            head = stream.read(544)
            header = _nifti_header(head)
            if header is None:
                return
            order, dims, datatype, bitpix, offset = header
            needed = offset + _voxel_bytes(dims, bitpix)
            expected = offset + int(np.prod(geometry.size)) * max(int(bitpix), 8) // 8
            if needed > expected:
                raise UnreadableFileError(
                    f"submission {path}: its header promises {needed} bytes, more than a label volume of the "
                    f"scan's size holds ({expected})", expected=expected, actual=needed,
                )
            got, carry = len(head), head[offset:] if len(head) > offset else b""
            skip = max(offset - len(head), 0)
            if skip:
                got += len(stream.read(skip))
            kind = _NIFTI_FLOATS.get(int(datatype))
            bad = 0
            while got < needed:
                chunk = stream.read(min(_CHUNK, needed - got))
                if not chunk:
                    break
                got += len(chunk)
                carry += chunk
                if kind is not None:
                    usable = len(carry) - len(carry) % int(kind[1:])
                    bad += int((~np.isfinite(np.frombuffer(carry[:usable], dtype=order + kind))).sum())
                    carry = carry[usable:]
                else:
                    carry = b""
            if kind is not None and carry:
                usable = len(carry) - len(carry) % int(kind[1:])
                bad += int((~np.isfinite(np.frombuffer(carry[:usable], dtype=order + kind))).sum())
    except (EOFError, OSError, zlib.error) as err:
        raise UnreadableFileError(
            f"submission {path}: truncated or corrupt gzip stream ({err})",
            expected="a complete file",
            actual="truncated",
        ) from err
    if got < needed:
        raise UnreadableFileError(
            f"submission {path}: truncated NIfTI file: the header needs {needed} bytes, the file has {got}",
            expected=needed,
            actual=got,
        )
    if bad:
        raise NonFiniteValueError(
            f"submission {path}: {bad} NaN or infinite voxel value(s) in the file; expected finite label values",
            expected="finite values",
            actual={"non_finite": bad},
        )


def _voxel_bytes(dims: tuple[int, ...], bitpix: int) -> int:
    rank = max(0, min(int(dims[0]), 7))
    count = 1
    for extent in dims[1 : rank + 1]:
        count *= max(int(extent), 1)
    return count * max(int(bitpix), 0) // 8


def _binary_mask(path: Path, array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array)
        if bad.any():
            n_nan = int(np.isnan(array).sum())
            n_inf = int(bad.sum()) - n_nan
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise NonFiniteValueError(
                f"submission {path}: {n_nan} NaN and {n_inf} infinite voxel value(s), first at index {first}; "
                "expected finite label values",
                expected="finite values",
                actual={"nan": n_nan, "inf": n_inf},
            )
    foreground = array != 0
    values = array[foreground]
    if values.size and np.any(values != values.flat[0]):
        distinct, counts = np.unique(values, return_counts=True)
        shown = ", ".join(f"{v.item():g} ({c} voxels)" for v, c in zip(distinct[:10], counts[:10]))
        more = f" and {distinct.size - 10} more" if distinct.size > 10 else ""
        raise NonBinaryError(
            f"submission {path}: non-binary label values: {distinct.size} distinct non-zero values "
            f"[{shown}{more}]; expected 0 and one foreground value (merge labels, e.g. label > 0, first)",
            expected="0 and one non-zero value",
            actual=[v.item() for v in distinct],
        )
    return np.ascontiguousarray(foreground, dtype=np.uint8)


@dataclass(frozen=True, eq=False)
class SubmissionContent:
    """What a validated submission draws, per requested plane (array axis).

    Every dict has one key per requested axis (an axis with nothing in it maps to an empty frozenset).

    Attributes
    ----------
    mask : (X, Y, Z) ndarray of uint8
        The binary mask (read-only).
    drawn : dict of int to frozenset of int
        Slices holding a drawing: the requested slices with any non-zero voxel, plus ``extra``.
        These are the annotator's labor (Eq 3-4).
    empty_requested : dict of int to frozenset of int
        Requested slices left empty: "no target on this slice", information, not an error.
    extra : dict of int to frozenset of int
        Slices the annotator drew without being asked (a subset of ``drawn``).
    """

    mask: np.ndarray = field(repr=False)
    drawn: dict[int, frozenset[int]]
    empty_requested: dict[int, frozenset[int]]
    extra: dict[int, frozenset[int]]

    @property
    def labeled(self) -> dict[int, frozenset[int]]:
        """Slices whose content the annotator decided (``drawn`` and ``empty_requested``): the labeled
        slices that propagation (Alg 2) copies from, empty ones included."""
        return {axis: self.drawn[axis] | self.empty_requested[axis] for axis in self.drawn}


def submission_content(mask: np.ndarray, requested: Mapping[int, Collection[int]]) -> SubmissionContent:
    """Split a submission's slices into drawn, requested-but-empty and extra ones.

    The rule. Only the planes (array axes) that are keys of ``requested`` are considered.

    1. A requested slice with any non-zero voxel is **drawn**; one with none is **empty_requested**.
    2. A voxel drawn on a sagittal slice also lies on coronal slices, so a non-zero voxel off the requested
       slices does not say on which plane the annotator drew it. An unrequested slice counts as drawn
       (**extra**) only if its non-zero voxels are not all explained by the drawn slices of the other
       requested planes: the extra slices are the fewest slices that, with the slices of rule 1, cover every
       non-zero voxel. They are found greedily (repeatedly take the unrequested slice holding most of the
       still-unexplained voxels; ties go to the lower axis, then the lower index) and pruned (an extra
       slice whose voxels all lie on other drawn slices is dropped, latest first).

    So a 2D drawing on an unrequested sagittal slice is one extra sagittal slice, not the dozens of coronal
    slices its voxels cross; the lines that requested sagittal drawings leave on coronal slices add nothing.
    A drawing on a plane not in ``requested`` (say axial) is counted on the requested planes it crosses.

    Parameters
    ----------
    mask : (X, Y, Z) ndarray
        The submission, non-zero = drawn (as :func:`validate_submission` returns it).
    requested : mapping of int to collection of int
        The labeling request: array axis (0, 1, 2) -> slice indices asked for on that axis. At least one axis.

    Returns
    -------
    SubmissionContent

    Raises
    ------
    ValueError
        If ``mask`` is not 3D, ``requested`` is empty, names an axis outside 0-2, or a slice index outside
        the mask.

    References
    ----------
    DESIGN.md, "Contracts: Submission"; labor, Eq 3-4.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be a 3D (X, Y, Z) array, got shape {mask.shape}")
    if not requested:
        raise ValueError("requested must name at least one axis (plane), got an empty mapping")
    asked: dict[int, frozenset[int]] = {}
    for axis, indices in requested.items():
        if axis not in (0, 1, 2):
            raise ValueError(f"requested: axis must be 0, 1 or 2, got {axis!r}")
        chosen = frozenset(int(i) for i in indices)
        outside = sorted(i for i in chosen if not 0 <= i < mask.shape[axis])
        if outside:
            raise ValueError(
                f"requested: slice index(es) {outside} on axis {axis} outside 0..{mask.shape[axis] - 1} "
                f"(mask shape {mask.shape})"
            )
        asked[int(axis)] = chosen
    binary = np.ascontiguousarray(mask != 0, dtype=np.uint8)
    binary.setflags(write=False)
    axes = sorted(asked)
    coords = np.nonzero(binary)  # one index array per axis

    nonempty = {a: frozenset(np.unique(coords[a]).tolist()) for a in axes}
    drawn_req = {a: asked[a] & nonempty[a] for a in axes}
    empty_req = {a: asked[a] - nonempty[a] for a in axes}

    explained = np.zeros(coords[0].size, dtype=bool)
    for a in axes:
        explained |= np.isin(coords[a], list(drawn_req[a]))
    chosen_extra: list[tuple[int, int]] = []
    while not explained.all():
        best: tuple[int, int, int] | None = None  # (-count, axis, index)
        for a in axes:
            counts = np.bincount(coords[a][~explained], minlength=mask.shape[a])
            index = int(np.argmax(counts))
            if counts[index] and (best is None or (-int(counts[index]), a, index) < best):
                best = (-int(counts[index]), a, index)
        if best is None:  # residual voxels lie on no requested plane's slice: impossible, axes non-empty
            break
        _, a, index = best
        chosen_extra.append((a, index))
        explained |= coords[a] == index

    extra_list = list(chosen_extra)
    for a, index in reversed(chosen_extra):
        others = [(b, j) for b, j in extra_list if (b, j) != (a, index)]
        on_slice = coords[a] == index
        covered = np.zeros(int(on_slice.sum()), dtype=bool)
        for b in axes:
            lines = drawn_req[b] | {j for c, j in others if c == b}
            if b != a and lines:
                covered |= np.isin(coords[b][on_slice], list(lines))
        if covered.all():
            extra_list.remove((a, index))

    extra = {a: frozenset(i for b, i in extra_list if b == a) for a in axes}
    drawn = {a: drawn_req[a] | extra[a] for a in axes}
    return SubmissionContent(mask=binary, drawn=drawn, empty_requested=empty_req, extra=extra)


def drawn_slices(mask: np.ndarray, requested: Mapping[int, Collection[int]]) -> dict[int, frozenset[int]]:
    """The drawn slices of a submission: ``submission_content(mask, requested).drawn``.

    See :func:`submission_content` for the rule, the parameters and the errors.
    """
    return submission_content(mask, requested).drawn
