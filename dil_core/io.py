"""Reading scans and label volumes, writing label maps and images, in the scan's own geometry (SimpleITK).

Every array this module hands out or takes in is ``(X, Y, Z)`` in ITK index order (``array[i, j, k]`` is ITK
index ``(i, j, k)``), with the physical geometry (size, spacing, origin, direction cosines in LPS) carried
beside it as a :class:`~dil_core.geometry.Geometry`.

Formats read: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``, ``.mhd``) and a
folder holding a DICOM series (or one file of such a series). Formats written: NIfTI, NRRD and MetaImage
(``.mha``), chosen by the file suffix.

Label maps and the viewers
--------------------------
:func:`write_label` writes an unsigned 8-bit integer volume with the scan's size, spacing, origin and
direction, so it overlays the scan voxel for voxel.

* **3D Slicer** loads an integer volume as a *label map* when the "LabelMap" option of Add Data is ticked,
  which Slicer ticks by itself when the file name contains ``label`` or ``seg`` (for example
  ``case-label.nrrd`` or ``case_seg.nii.gz``); from Python, ``slicer.util.loadLabelVolume(path)``. A plain
  ``uint8`` ``.nrrd`` is enough: a ``.seg.nrrd`` (Segmentation node) is not needed, and Slicer can turn the
  label map into a segmentation with "Import labelmap" in the Segmentations module when the annotator wants
  to draw on it.
* **ITK-SNAP** opens any of these files with *Segmentation > Open Segmentation* (or ``itksnap -g scan -s
  label``); it requires the same size and geometry as the main image, which this module guarantees.

Writes are atomic: the file is first written to a temporary name in the target folder, then moved over the
target with :func:`os.replace`, so a reader never sees a half-written volume.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from dil_core.geometry import Geometry
from dil_core.nifti import NiftiTruncated, stored_voxels

__all__ = [
    "READ_SUFFIXES",
    "WRITE_SUFFIXES",
    "Scan",
    "ScanReadError",
    "ScanWriteError",
    "read_label",
    "read_scan",
    "write_image",
    "write_label",
]

#: File suffixes :func:`read_scan` and :func:`read_label` accept (a folder is read as a DICOM series).
READ_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")

#: File suffixes :func:`write_label` and :func:`write_image` write (single-file formats only, so that the
#: write can be atomic).
WRITE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha")


class ScanReadError(ValueError):
    """A scan or label file could not be read as a 3D image; the message names the path and the problem."""


class ScanWriteError(ValueError):
    """A volume could not be written; the message names the path and the problem."""


@dataclass(frozen=True)
class Scan:
    """A 3D scan in memory.

    Attributes
    ----------
    array : (X, Y, Z) ndarray of float32
        Intensities in ITK index order.
    geometry : Geometry
        Size, spacing, origin and direction of the scan, as ITK keeps them (LPS).
    """

    array: np.ndarray
    geometry: Geometry


def _suffix(path: Path) -> str:
    """The lower-case suffix that selects a format (``.nii.gz`` counts as one suffix)."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def _check_path(path: str | os.PathLike[str], *, what: str) -> Path:
    if path is None or not str(path).strip():
        raise ScanReadError(f"{what}: path is empty ({path!r}); give a file or a DICOM folder")
    return Path(path).expanduser()


def _dicom_series_files(folder: Path, *, series_id: str | None = None) -> list[str]:
    """File names of the DICOM series in ``folder`` (the one named, else the only or the largest one)."""
    try:
        series_ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError as err:
        raise ScanReadError(f"{folder}: cannot scan the folder for DICOM series: {err}") from err
    if not series_ids:
        raise ScanReadError(
            f"{folder}: folder holds no DICOM series (expected a folder of DICOM slices, or a file with one of "
            f"the suffixes {', '.join(READ_SUFFIXES)})"
        )
    files = {sid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid)) for sid in series_ids}
    if series_id is not None:
        if series_id not in files:
            raise ScanReadError(f"{folder}: DICOM series {series_id!r} not found; found {sorted(files)}")
        return files[series_id]
    largest = max(len(f) for f in files.values())
    best = [sid for sid, f in files.items() if len(f) == largest]
    if len(best) > 1:
        listing = ", ".join(f"{sid} ({len(files[sid])} files)" for sid in sorted(files))
        raise ScanReadError(
            f"{folder}: folder holds {len(files)} DICOM series of equal largest size, cannot choose one: "
            f"{listing}; move the wanted series into a folder of its own"
        )
    return files[best[0]]


def _dicom_series_id(file: Path) -> str | None:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(file))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    key = "0020|000e"
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else None


def _read_image(path: str | os.PathLike[str], *, what: str) -> tuple[np.ndarray, Geometry]:
    """Read a 3D scalar image from a file or a DICOM folder, with errors that name path and problem.

    Returns the ``(X, Y, Z)`` array in its stored dtype and the geometry.
    """
    p = _check_path(path, what=what)
    if not p.exists():
        raise ScanReadError(f"{what}: {p}: no such file or folder")
    nifti_nonfinite: tuple[np.ndarray, np.ndarray] | None = None
    if p.is_dir():
        files = _dicom_series_files(p)
        reader: sitk.ImageSeriesReader | sitk.ImageFileReader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)  # type: ignore[union-attr]
    else:
        suffix = _suffix(p)
        if suffix not in READ_SUFFIXES:
            raise ScanReadError(
                f"{what}: {p}: unsupported file suffix {suffix or '(none)'!r}; known: {', '.join(READ_SUFFIXES)}"
                " or a DICOM folder"
            )
        if p.stat().st_size == 0:
            raise ScanReadError(f"{what}: {p}: file is empty (0 bytes)")
        if suffix == ".dcm":
            # One file of a DICOM series stands for its whole series (the other files of its folder).
            sid = _dicom_series_id(p)
            if sid is None:
                raise ScanReadError(f"{what}: {p}: unreadable DICOM file (no series instance UID)")
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(_dicom_series_files(p.parent, series_id=sid))
        else:
            info = sitk.ImageFileReader()
            info.SetFileName(str(p))
            try:
                info.ReadImageInformation()
            except RuntimeError as err:
                raise ScanReadError(f"{what}: {p}: unreadable image header: {_first_line(err)}") from err
            _check_3d_scalar(p, info.GetDimension(), tuple(info.GetSize()), info.GetNumberOfComponents(), what)
            if suffix in (".nii", ".nii.gz"):
                try:
                    _, *found = stored_voxels(p)
                    nifti_nonfinite = (found[0], found[1])
                except NiftiTruncated as err:
                    raise ScanReadError(f"{what}: {p}: unreadable or truncated image data: {err}") from err
            reader = info
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise ScanReadError(
            f"{what}: {p}: unreadable or truncated image data: {_first_line(err)}"
        ) from err
    _check_3d_scalar(p, image.GetDimension(), tuple(image.GetSize()), image.GetNumberOfComponentsPerPixel(), what)
    array = _to_array(image)
    if nifti_nonfinite is not None:
        flat_index, values = nifti_nonfinite
        if np.issubdtype(array.dtype, np.floating) and flat_index.size and flat_index.max() < array.size:
            # NIfTI stores X fastest: the C-order flat index of array.T (Z, Y, X).
            np.put(array.T, flat_index, values)
    return array, Geometry.from_sitk(image)


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    # ITK messages start with file/line noise; the useful sentence is usually the last one.
    return lines[-1] if lines else type(err).__name__


def _check_3d_scalar(p: Path, dim: int, size: tuple[int, ...], comps: int, what: str) -> None:
    if dim != 3:
        raise ScanReadError(f"{what}: {p}: expected a 3D image, got a {dim}D image of size {size}")
    if comps != 1:
        raise ScanReadError(f"{what}: {p}: expected one value per voxel, got {comps} components (a vector image)")
    if min(size) < 1:
        raise ScanReadError(f"{what}: {p}: image has an empty size {size}")


def _to_array(image: sitk.Image) -> np.ndarray:
    """SimpleITK image -> ``(X, Y, Z)`` array (a copy, native dtype)."""
    return np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)))


def read_scan(path: str | os.PathLike[str]) -> Scan:
    """Read a 3D scan with its geometry.

    Parameters
    ----------
    path : str or PathLike
        A NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) or MetaImage (``.mha``, ``.mhd``) file, a
        folder holding a DICOM series, or one ``.dcm`` file of a series (the whole series is read). A folder
        with several series is read as its largest one; if several are equally largest, it is an error.

    Returns
    -------
    Scan
        ``array`` is ``(X, Y, Z)`` float32 in ITK index order (DICOM rescale slope and intercept applied);
        ``geometry`` keeps size, spacing, origin and direction.

    Raises
    ------
    ScanReadError
        The path is empty or missing, the suffix is unknown, the file is empty, unreadable or truncated, the
        image is not 3D (the message gives its dimension) or has several components per voxel, or a folder
        holds no DICOM series or several equally large ones.
    """
    array, geometry = _read_image(path, what="scan")
    return Scan(array=array.astype(np.float32, copy=False), geometry=geometry)


def read_label(path: str | os.PathLike[str]) -> tuple[np.ndarray, Geometry]:
    """Read a label volume as it is stored: raw values, no binarisation, no checks against a scan.

    Parameters
    ----------
    path : str or PathLike
        Any file or folder :func:`read_scan` accepts.

    Returns
    -------
    labels : (X, Y, Z) ndarray
        The stored values in the file's own dtype (it may be float, and may hold NaN: validating a submission
        is another module's job).
    geometry : Geometry
        The label volume's own geometry.

    Raises
    ------
    ScanReadError
        As :func:`read_scan`.
    """
    return _read_image(path, what="label")


def _check_volume(array: object, geometry: Geometry, *, name: str) -> np.ndarray:
    if not isinstance(geometry, Geometry):
        raise TypeError(f"geometry: expected a dil_core.geometry.Geometry, got {type(geometry).__name__}")
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise ValueError(f"{name}: expected a 3D (X, Y, Z) array, got shape {arr.shape}")
    if tuple(arr.shape) != tuple(geometry.size):
        raise ValueError(f"{name}: shape {arr.shape} does not match the geometry's size {tuple(geometry.size)}")
    return arr


def _write_atomic(image: sitk.Image, path: str | os.PathLike[str], *, compress: bool) -> Path:
    if path is None or not str(path).strip():
        raise ScanWriteError(f"path is empty ({path!r})")
    target = Path(path).expanduser()
    suffix = _suffix(target)
    if suffix not in WRITE_SUFFIXES:
        raise ScanWriteError(
            f"{target}: unsupported suffix {suffix or '(none)'!r} for writing; known: {', '.join(WRITE_SUFFIXES)}"
        )
    if not target.parent.is_dir():
        raise ScanWriteError(f"{target}: folder {target.parent} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    try:
        writer = sitk.ImageFileWriter()
        writer.SetFileName(tmp_name)
        writer.SetUseCompression(compress)
        writer.Execute(image)
        os.replace(tmp_name, target)
    except RuntimeError as err:
        raise ScanWriteError(f"{target}: could not write: {_first_line(err)}") from err
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def _from_array(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    geometry.apply_to(image)
    return image


def write_label(path: str | os.PathLike[str], mask: np.ndarray, geometry: Geometry) -> Path:
    """Write a label map (``uint8``) in a scan's geometry, atomically.

    Parameters
    ----------
    path : str or PathLike
        Target file; the suffix picks the format: ``.nii.gz``, ``.nii``, ``.nrrd`` (gzip encoded) or ``.mha``.
        Name it ``*-label.nrrd`` / ``*_seg.nii.gz`` so 3D Slicer loads it as a label map (see module notes).
    mask : (X, Y, Z) ndarray of bool or integers in [0, 255]
        Labels in ITK index order; floats are accepted only when every value is a whole number in [0, 255].
    geometry : Geometry
        The scan's geometry; ``geometry.size`` must equal ``mask.shape``.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ValueError
        ``mask`` is not 3D, its shape differs from ``geometry.size``, or it holds values that are not whole
        numbers in [0, 255] (NaN included).
    ScanWriteError
        Unknown suffix, missing folder, or the writer failed (the target is then left untouched).
    """
    arr = _check_volume(mask, geometry, name="mask")
    if arr.dtype != np.bool_:
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"mask: expected bool or numeric labels, got dtype {arr.dtype}")
        if arr.size:
            bad = ~np.isfinite(arr) if np.issubdtype(arr.dtype, np.floating) else np.zeros(arr.shape, bool)
            with np.errstate(invalid="ignore"):
                bad |= (arr < 0) | (arr > 255)
                if np.issubdtype(arr.dtype, np.floating):
                    bad |= np.mod(np.where(np.isfinite(arr), arr, 0), 1) != 0
            if bad.any():
                first = arr[bad].flat[0]
                raise ValueError(
                    f"mask: labels must be whole numbers in [0, 255] (uint8); {int(bad.sum())} voxels are not, "
                    f"e.g. {first!r}"
                )
    return _write_atomic(_from_array(arr.astype(np.uint8), geometry), path, compress=True)


def write_image(path: str | os.PathLike[str], array: np.ndarray, geometry: Geometry) -> Path:
    """Write a float32 image (a scan, a soft mask, a confidence map) in a scan's geometry, atomically.

    Parameters
    ----------
    path : str or PathLike
        Target file with suffix ``.nii.gz``, ``.nii``, ``.nrrd`` or ``.mha``.
    array : (X, Y, Z) ndarray of real numbers
        Values in ITK index order; written as float32.
    geometry : Geometry
        Geometry to stamp on the file; ``geometry.size`` must equal ``array.shape``.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ValueError
        ``array`` is not 3D, not real-valued, or its shape differs from ``geometry.size``.
    ScanWriteError
        Unknown suffix, missing folder, or the writer failed.
    """
    arr = _check_volume(array, geometry, name="array")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
        raise ValueError(f"array: expected real numbers, got dtype {arr.dtype}")
    return _write_atomic(_from_array(arr.astype(np.float32), geometry), path, compress=True)
