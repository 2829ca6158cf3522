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

import math
from collections.abc import Collection
from pathlib import Path

import numpy as np

from dil_core.geometry import Geometry
from dil_core.nifti import NiftiTooLarge, NiftiTruncated, stored_voxels

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


def _check_nifti_data(path: Path, geometry: Geometry) -> None:
    """Read a NIfTI's voxel bytes as stored (:func:`dil_core.nifti.stored_voxels`), never more than a label
    volume of the scan's size holds (a gzip bomb costs nothing), and catch what ITK reads without complaint:
    a cut file or gzip stream, and NaN or infinite values (ITK's NIfTI reader turns them into 0)."""
    limit = int(np.prod(geometry.size)) * 8  # the widest voxel type: float64
    try:
        _, flat, _values = stored_voxels(path, limit=limit)
    except NiftiTooLarge as err:
        raise UnreadableFileError(f"submission {path}: {err}", expected=limit, actual="more") from err
    except NiftiTruncated as err:
        raise UnreadableFileError(f"submission {path}: {err}", expected="a complete file", actual="truncated") from err
    if flat.size:
        raise NonFiniteValueError(
            f"submission {path}: {flat.size} NaN or infinite voxel value(s) in the file; expected finite label values",
            expected="finite values",
            actual={"non_finite": int(flat.size)},
        )


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


# What a valid submission draws lives in dil_core.drawn; importable from here too.
from dil_core.drawn import SubmissionContent as SubmissionContent  # noqa: E402
from dil_core.drawn import drawn_slices as drawn_slices  # noqa: E402
from dil_core.drawn import submission_content as submission_content  # noqa: E402
