"""The cohort of a labeling campaign: which scans, under which case ids, with which ground truth.

A cohort comes from one of two sources:

* a **folder of images**: every file whose name ends in a known image suffix (``.nii.gz``, ``.nii``,
  ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) is a case, and so is every sub-folder holding one DICOM series;
  ground truth, when there is any, are label files of the same case ids in a labels folder (``images/`` +
  ``labels/`` beside it, or one named with ``labels_dir``);
* a **CSV manifest** with the columns ``case_id``, ``image`` and optionally ``ground_truth``; relative paths
  are resolved against the CSV's folder, so a manifest travels with its data.

Case ids name folders in the workspace (``requests/<case>/round-<k>/``) and rows in the ledger, so they are
checked at the door by :func:`validate_case_id`.
"""

from __future__ import annotations

import csv
import os
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

#: File name endings of single-file or header image formats, longest first (``.nii.gz`` before ``.nii``).
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: The longest case id accepted, in characters.
MAX_CASE_ID_LENGTH = 128

#: Manifest columns: required, then optional.
REQUIRED_COLUMNS: tuple[str, ...] = ("case_id", "image")
OPTIONAL_COLUMNS: tuple[str, ...] = ("ground_truth",)

_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})  # control, invisible format, line/paragraph separators


class CohortError(ValueError):
    """A cohort source that cannot be read: bad manifest, bad case id, missing file, empty cohort."""


@dataclass(frozen=True)
class Case:
    """One scan of the cohort.

    Attributes
    ----------
    case_id : str
        Unique, file-system-safe name of the case (see :func:`validate_case_id`).
    image : Path
        Absolute path of the image file, or of the folder holding its DICOM series.
    ground_truth : Path or None
        Absolute path of the ground-truth label file, ``None`` where there is none (real use).
    """

    case_id: str
    image: Path
    ground_truth: Path | None = None


def case_id_from_name(name: str) -> str | None:
    """The case id a file name gives, or ``None`` if it has no known image suffix.

    Parameters
    ----------
    name : str
        A file name (no folder), e.g. ``"hippocampus_001.nii.gz"``.

    Returns
    -------
    str or None
        The name without its image suffix (``"hippocampus_001"``); the suffix is matched case-insensitively.

    Examples
    --------
    >>> case_id_from_name("case_7.nii.gz"), case_id_from_name("scan.MHA"), case_id_from_name("notes.txt")
    ('case_7', 'scan', None)
    """
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def validate_case_id(case_id: str, *, taken: Collection[str] = ()) -> str:
    """Check that a case id is safe as a folder name and a ledger key, and return it.

    Rules: a non-empty string of at most :data:`MAX_CASE_ID_LENGTH` characters and as many bytes in UTF-8 (it
    names folders and a ledger key), with no path separator
    (``/`` or ``\\``), no ``..``, not ``.``, no control, invisible-format or line-separator character, no
    leading or trailing whitespace, and not already in ``taken``.

    Parameters
    ----------
    case_id : str
        The id to check.
    taken : collection of str, optional
        Ids already in use (uniqueness is checked against them, case-sensitively).

    Returns
    -------
    str
        ``case_id``, unchanged.

    Raises
    ------
    TypeError
        If ``case_id`` is not a string.
    ValueError
        If a rule is broken; the message names the rule and shows the id with ``repr``.
    """
    if not isinstance(case_id, str):
        raise TypeError(f"case_id must be a string, got {type(case_id).__name__} {case_id!r}")
    problem = _case_id_problem(case_id)
    if problem is None and case_id in taken:
        problem = "is a duplicate (ids must be unique)"
    if problem is not None:
        raise ValueError(f"case_id {case_id!r} {problem}")
    return case_id


def _case_id_problem(case_id: str) -> str | None:
    if not case_id:
        return "is empty"
    if len(case_id) > MAX_CASE_ID_LENGTH:
        return f"is {len(case_id)} characters long (at most {MAX_CASE_ID_LENGTH})"
    size = len(case_id.encode("utf-8"))
    if size > MAX_CASE_ID_LENGTH:  # folder names and the ledger's key are limited in bytes, not characters
        return f"is {size} bytes long in UTF-8 (at most {MAX_CASE_ID_LENGTH})"
    if "/" in case_id or "\\" in case_id:
        return "contains a path separator ('/' or '\\')"
    if ".." in case_id or case_id == ".":
        return "contains '..' or is '.'"
    for position, char in enumerate(case_id):
        if unicodedata.category(char) in _BAD_CATEGORIES:
            return f"contains the control character {char!r} at position {position}"
    if case_id != case_id.strip():
        return "has leading or trailing whitespace"
    return None


def load_cohort(source: Path | str, *, labels_dir: Path | str | None = None) -> list[Case]:
    """Read a cohort from a folder of images or from a CSV manifest.

    Parameters
    ----------
    source : Path or str
        One of:

        * a CSV file: columns ``case_id``, ``image`` (required) and ``ground_truth`` (optional; an empty
          cell means none); other columns are ignored; relative paths are resolved against the CSV's
          folder; a UTF-8 byte-order mark is accepted. Cases keep the order of the rows.
        * a folder holding ``images/`` (and optionally ``labels/``): read as ``images/`` + ``labels/``.
        * a folder of images: each image file (see :data:`IMAGE_SUFFIXES`) and each sub-folder holding one
          DICOM series is a case (id = file name without suffix, or the sub-folder's name); hidden entries
          and other files are skipped. Ground truth comes from ``labels_dir`` if given, else from a sibling
          folder named like the images folder with ``images`` replaced by ``labels`` (``images`` ->
          ``labels``, ``imagesTr`` -> ``labelsTr``) if there is one. Cases are sorted by id.
    labels_dir : Path or str, optional
        Folder of ground-truth label files, matched to images by case id (same names, any known suffix).
        Only with a folder source. An image without a label file has ``ground_truth=None``.

    Returns
    -------
    list of Case
        At least one case; ids unique; paths absolute.

    Raises
    ------
    CohortError
        If the source or ``labels_dir`` is missing or of the wrong kind, a manifest column is missing, a
        case id is bad or duplicated, an image or ground-truth file is missing, a DICOM folder holds more than
        one series, or the cohort is empty. Manifest errors name the line (1-based, header = line 1).
    """
    source = Path(source).expanduser()
    if source.is_file():
        if labels_dir is not None:
            raise CohortError(f"labels_dir applies to a folder of images only, not to the manifest {source}")
        if source.suffix.lower() != ".csv":
            raise CohortError(f"cohort source {source} is a file but not a .csv manifest")
        cases = _load_manifest(source)
    elif source.is_dir():
        cases = _load_folder(source, None if labels_dir is None else Path(labels_dir).expanduser())
    else:
        raise CohortError(f"cohort source {source} does not exist (expected a folder of images or a .csv)")
    if not cases:
        raise CohortError(f"cohort {source} is empty: no case found")
    return cases


def _absolute(path: Path) -> Path:
    return Path(os.path.normpath(path.absolute()))


def _load_manifest(manifest: Path) -> list[Case]:
    base = manifest.parent
    cases: list[Case] = []
    with manifest.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.reader(stream)
        header = next(reader, None)
        if header is None:
            raise CohortError(f"{manifest}: line 1: empty file, expected the header case_id,image[,ground_truth]")
        columns = [name.strip() for name in header]
        missing = [name for name in REQUIRED_COLUMNS if name not in columns]
        if missing:
            raise CohortError(
                f"{manifest}: line 1: missing column(s) {', '.join(missing)}; header is {columns}, "
                f"expected {', '.join(REQUIRED_COLUMNS)} and optionally {', '.join(OPTIONAL_COLUMNS)}"
            )
        duplicated = sorted({name for name in columns if name and columns.count(name) > 1})
        if duplicated:
            raise CohortError(f"{manifest}: line 1: column(s) {', '.join(duplicated)} appear more than once")
        index = {name: columns.index(name) for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if name in columns}
        seen: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            where = f"{manifest}: line {line}"
            if len(row) > len(columns):
                raise CohortError(f"{where}: {len(row)} fields, the header has {len(columns)}")
            cells = {name: (row[i] if i < len(row) else "") for name, i in index.items()}
            case_id = cells["case_id"]
            if case_id in seen:
                raise CohortError(f"{where}: duplicate case_id {case_id!r} (first on line {seen[case_id]})")
            try:
                validate_case_id(case_id)
            except ValueError as err:
                raise CohortError(f"{where}: bad case_id: {err}") from err
            seen[case_id] = line
            image = _manifest_path(cells["image"], base, where, "image", required=True)
            truth = _manifest_path(cells.get("ground_truth", ""), base, where, "ground_truth", required=False)
            cases.append(Case(case_id, image, truth))  # type: ignore[arg-type]
    return cases


def _manifest_path(cell: str, base: Path, where: str, column: str, *, required: bool) -> Path | None:
    what = "image" if column == "image" else "ground truth"
    if not cell.strip():
        if required:
            raise CohortError(f"{where}: empty {column} cell")
        return None
    path = Path(cell).expanduser()
    resolved = _absolute(path if path.is_absolute() else base / path)
    if not resolved.exists():
        raise CohortError(f"{where}: missing {what} file {cell!r} (looked for {resolved})")
    return resolved


def _load_folder(folder: Path, labels_dir: Path | None) -> list[Case]:
    images_dir = folder
    if labels_dir is None and (folder / "images").is_dir():
        images_dir = folder / "images"
    if labels_dir is not None:
        if not labels_dir.is_dir():
            raise CohortError(f"labels_dir {labels_dir} is not a folder")
    else:
        sibling = images_dir.parent / images_dir.name.replace("images", "labels")
        if "images" in images_dir.name and sibling.is_dir():
            labels_dir = sibling
    images = _scan_folder(images_dir, allow_dicom=True, role="image")
    labels = _scan_folder(labels_dir, allow_dicom=False, role="ground truth") if labels_dir else {}
    return [
        Case(case_id, _absolute(path), None if case_id not in labels else _absolute(labels[case_id]))
        for case_id, path in sorted(images.items())
    ]


def _scan_folder(folder: Path, *, allow_dicom: bool, role: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if not (allow_dicom and _is_dicom_series(entry)):
                continue
            case_id = entry.name
        else:
            maybe = case_id_from_name(entry.name)
            if maybe is None:
                continue
            case_id = maybe
        if case_id in found:
            raise CohortError(
                f"{folder}: duplicate case_id {case_id!r}: {found[case_id].name} and {entry.name} "
                f"are both {role}s of it"
            )
        try:
            validate_case_id(case_id)
        except ValueError as err:
            raise CohortError(f"{folder}: {role} {entry.name!r} gives a bad case_id: {err}") from err
        found[case_id] = entry
    return found


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as stream:
            return stream.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _is_dicom_series(folder: Path) -> bool:
    """True if ``folder`` holds exactly one DICOM series; more than one is an error."""
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    if not any(_looks_like_dicom(p) for p in files[:16]):
        return False
    import SimpleITK as sitk  # imported here: a manifest or a NIfTI folder needs no ITK

    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if len(series) > 1:
        raise CohortError(
            f"DICOM folder {folder} holds {len(series)} series ({', '.join(series)}); put each series in "
            "its own folder or list them in a manifest"
        )
    return len(series) == 1
