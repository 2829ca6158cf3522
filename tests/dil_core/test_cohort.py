"""Tests for dil_core.cohort: folder and manifest cohorts, case ids, manifest errors with line numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dil_core.cohort import Case, CohortError, case_id_from_name, load_cohort, validate_case_id


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture()
def layout(tmp_path: Path) -> Path:
    """root/images/{a,b,c}.nii.gz and root/labels/{a,b}.nii.gz (c has no ground truth)."""
    for name in ("a", "b", "c"):
        _touch(tmp_path / "root" / "images" / f"{name}.nii.gz")
    for name in ("a", "b"):
        _touch(tmp_path / "root" / "labels" / f"{name}.nii.gz")
    return tmp_path / "root"


# --- case ids -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("hippocampus_001.nii.gz", "hippocampus_001"),
        ("a.nii", "a"),
        ("scan.NRRD", "scan"),
        ("scan.nhdr", "scan"),
        ("x.y.mha", "x.y"),
        ("case 7.mhd", "case 7"),
        ("volume.nii.gz.nii", "volume.nii.gz"),
        ("notes.txt", None),
        ("scan.raw", None),
        (".nii.gz", None),
        ("image.gz", None),
    ],
)
def test_case_id_from_name(name: str, expected: str | None) -> None:
    assert case_id_from_name(name) == expected


@pytest.mark.parametrize("case_id", ["a", "hippocampus_001", "case 7", "x.y", "Ünïcode-é", "a" * 128])
def test_validate_case_id_accepts(case_id: str) -> None:
    assert validate_case_id(case_id) == case_id


@pytest.mark.parametrize(
    ("case_id", "words"),
    [
        ("", "empty"),
        ("a" * 129, "129 characters"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        (".", "'.'"),
        ("a\tb", "control character"),
        ("a\nb", "control character"),
        ("a\x00", "control character"),
        ("a\u200bb", "control character"),  # zero-width space: invisible
        (" a", "whitespace"),
        ("a ", "whitespace"),
    ],
)
def test_validate_case_id_rejects(case_id: str, words: str) -> None:
    with pytest.raises(ValueError, match="case_id") as info:
        validate_case_id(case_id)
    assert words in str(info.value)


def test_validate_case_id_duplicate_and_type() -> None:
    assert validate_case_id("a", taken={"b"}) == "a"
    with pytest.raises(ValueError, match="duplicate"):
        validate_case_id("a", taken={"a", "b"})
    with pytest.raises(TypeError, match="case_id must be a string"):
        validate_case_id(7)  # type: ignore[arg-type]


# --- folders --------------------------------------------------------------------------------------------


def test_folder_layouts_agree(layout: Path, tmp_path: Path) -> None:
    images, labels = layout / "images", layout / "labels"
    expected = [
        Case("a", images / "a.nii.gz", labels / "a.nii.gz"),
        Case("b", images / "b.nii.gz", labels / "b.nii.gz"),
        Case("c", images / "c.nii.gz", None),
    ]
    assert load_cohort(layout) == expected  # root with images/ + labels/
    assert load_cohort(images) == expected  # images folder, sibling labels/
    assert load_cohort(str(images), labels_dir=str(labels)) == expected  # explicit labels folder


def test_folder_without_labels(tmp_path: Path) -> None:
    _touch(tmp_path / "scans" / "b.mha")
    _touch(tmp_path / "scans" / "a.nrrd")
    _touch(tmp_path / "scans" / "README.txt")
    _touch(tmp_path / "scans" / ".hidden.nii.gz")
    (tmp_path / "scans" / "not_dicom").mkdir()
    _touch(tmp_path / "scans" / "not_dicom" / "x.txt")
    cases = load_cohort(tmp_path / "scans")
    assert [(c.case_id, c.image.name, c.ground_truth) for c in cases] == [
        ("a", "a.nrrd", None),
        ("b", "b.mha", None),
    ]
    assert all(c.image.is_absolute() for c in cases)


def test_msd_style_sibling(tmp_path: Path) -> None:
    _touch(tmp_path / "imagesTr" / "x_1.nii.gz")
    _touch(tmp_path / "labelsTr" / "x_1.nii.gz")
    (case,) = load_cohort(tmp_path / "imagesTr")
    assert case.ground_truth == tmp_path / "labelsTr" / "x_1.nii.gz"


def test_labels_matched_by_case_id_across_formats(tmp_path: Path) -> None:
    _touch(tmp_path / "img" / "k.nii.gz")
    _touch(tmp_path / "gt" / "k.nrrd")
    (case,) = load_cohort(tmp_path / "img", labels_dir=tmp_path / "gt")
    assert case == Case("k", tmp_path / "img" / "k.nii.gz", tmp_path / "gt" / "k.nrrd")


def _write_dicom_series(folder: Path, series_uid: str, n_slices: int = 3, first: int = 0) -> None:
    sitk = pytest.importorskip("SimpleITK")
    folder.mkdir(parents=True, exist_ok=True)
    volume = np.arange(n_slices * 4 * 5, dtype=np.int16).reshape(n_slices, 4, 5)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(n_slices):
        image = sitk.GetImageFromArray(volume[k])
        image.SetMetaData("0008|0060", "MR")
        image.SetMetaData("0020|000e", series_uid)
        image.SetMetaData("0008|0018", f"{series_uid}.{first + k + 1}")
        image.SetMetaData("0020|0013", str(k + 1))
        image.SetMetaData("0020|0032", f"0\\0\\{k}")
        writer.SetFileName(str(folder / f"slice_{first + k:03d}.dcm"))
        writer.Execute(image)


def test_dicom_series_folder_is_a_case(tmp_path: Path) -> None:
    _write_dicom_series(tmp_path / "images" / "patient_7", "1.2.826.0.1.3680043.2.1125.9.1")
    _touch(tmp_path / "images" / "patient_2.nii.gz")
    _touch(tmp_path / "labels" / "patient_7.nii.gz")
    cases = load_cohort(tmp_path)
    assert [c.case_id for c in cases] == ["patient_2", "patient_7"]
    assert cases[1].image == tmp_path / "images" / "patient_7"
    assert cases[1].ground_truth == tmp_path / "labels" / "patient_7.nii.gz"
    assert cases[0].ground_truth is None


def test_dicom_folder_with_two_series_is_an_error(tmp_path: Path) -> None:
    _write_dicom_series(tmp_path / "images" / "mixed", "1.2.826.0.1.3680043.2.1125.9.2")
    _write_dicom_series(tmp_path / "images" / "mixed", "1.2.826.0.1.3680043.2.1125.9.3", first=10)
    with pytest.raises(CohortError, match="holds 2 series"):
        load_cohort(tmp_path / "images")


@pytest.mark.parametrize(
    ("files", "words"),
    [
        (["x.nii", "x.nii.gz"], "duplicate case_id 'x'"),
        (["a..b.nii.gz"], "bad case_id"),
        ([" lead.nii.gz"], "whitespace"),
        ([], "empty"),
        (["notes.txt"], "empty"),
    ],
)
def test_bad_folders(tmp_path: Path, files: list[str], words: str) -> None:
    (tmp_path / "images").mkdir()
    for name in files:
        _touch(tmp_path / "images" / name)
    with pytest.raises(CohortError, match="case_id|empty") as info:
        load_cohort(tmp_path / "images")
    assert words in str(info.value)


def test_bad_sources(tmp_path: Path, layout: Path) -> None:
    with pytest.raises(CohortError, match="does not exist"):
        load_cohort(tmp_path / "nowhere")
    with pytest.raises(CohortError, match="not a .csv"):
        load_cohort(layout / "images" / "a.nii.gz")
    with pytest.raises(CohortError, match="labels_dir .* is not a folder"):
        load_cohort(layout / "images", labels_dir=tmp_path / "nowhere")
    manifest = _write_csv(tmp_path / "m.csv", "case_id,image\na,root/images/a.nii.gz\n")
    with pytest.raises(CohortError, match="labels_dir applies to a folder"):
        load_cohort(manifest, labels_dir=layout / "labels")


# --- manifests ------------------------------------------------------------------------------------------


def test_manifest_paths_relative_to_csv(layout: Path, tmp_path: Path) -> None:
    absolute = layout / "labels" / "b.nii.gz"
    manifest = _write_csv(
        tmp_path / "sub" / "cohort.csv",
        "\ufeffcase_id, image ,ground_truth,site\n"  # BOM, spaces in header names, an extra column
        "second,../root/images/b.nii.gz," + str(absolute) + ",X\n"
        "\n"  # blank lines are skipped
        "first,../root/images/a.nii.gz,,Y\n",
    )
    assert load_cohort(manifest) == [
        Case("second", layout / "images" / "b.nii.gz", absolute),
        Case("first", layout / "images" / "a.nii.gz", None),
    ]


def test_manifest_without_ground_truth_column(layout: Path) -> None:
    manifest = _write_csv(layout / "m.csv", "image,case_id\nimages/c.nii.gz,c\n")
    assert load_cohort(manifest) == [Case("c", layout / "images" / "c.nii.gz", None)]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "line 1: empty file"),
        ("case_id,ground_truth\na,labels/a.nii.gz\n", "line 1: missing column(s) image"),
        ("id,image\na,images/a.nii.gz\n", "line 1: missing column(s) case_id"),
        ("case_id,image,image\na,images/a.nii.gz,x\n", "line 1: column(s) image appear more than once"),
        ("case_id,image\n", "is empty"),
        (
            "case_id,image\na,images/a.nii.gz\nb,images/b.nii.gz\na,images/c.nii.gz\n",
            "line 4: duplicate case_id 'a' (first on line 2)",
        ),
        ("case_id,image\na,images/a.nii.gz\nx/y,images/b.nii.gz\n", "line 3: bad case_id"),
        ("case_id,image\n,images/a.nii.gz\n", "line 2: bad case_id: case_id '' is empty"),
        ("case_id,image\n..,images/a.nii.gz\n", "line 2: bad case_id"),
        ("case_id,image\na\n", "line 2: empty image cell"),
        ("case_id,image\na,images/a.nii.gz,extra\n", "line 2: 3 fields, the header has 2"),
        ("case_id,image\na,images/a.nii.gz\nb,images/zzz.nii.gz\n", "line 3: missing image file 'images/zzz.nii.gz'"),
        (
            "case_id,image,ground_truth\na,images/a.nii.gz,labels/a.nii.gz\nc,images/c.nii.gz,labels/c.nii.gz\n",
            "line 3: missing ground truth file 'labels/c.nii.gz'",
        ),
        ('case_id,image\n"multi\nline",images/a.nii.gz\n', "line 3: bad case_id"),
    ],
)
def test_bad_manifests(layout: Path, text: str, words: str) -> None:
    manifest = _write_csv(layout / "cohort.csv", text)
    with pytest.raises(CohortError) as info:
        load_cohort(manifest)
    assert words in str(info.value)
    assert str(manifest) in str(info.value)


# --- the bundled demo cohort ----------------------------------------------------------------------------


def test_demo_cohort(demo_data: Path) -> None:
    cases = load_cohort(demo_data / "cohort.csv")
    assert len(cases) == 24
    assert cases[0].case_id == "hippocampus_001"
    assert cases == sorted(cases, key=lambda c: c.case_id)
    assert all(c.image.is_file() and c.ground_truth is not None and c.ground_truth.is_file() for c in cases)
    assert load_cohort(demo_data) == cases
    assert load_cohort(demo_data / "images") == cases


def test_demo_cohort_is_an_unchanged_copy(demo_data: Path, shared_data: Path) -> None:
    for kind in ("images", "labels"):
        for path in sorted((demo_data / kind).iterdir()):
            assert path.read_bytes() == (shared_data / "hippocampus" / kind / path.name).read_bytes()
    first = sorted(p.name for p in (shared_data / "hippocampus" / "images").iterdir())[:24]
    assert sorted(p.name for p in (demo_data / "images").iterdir()) == first
