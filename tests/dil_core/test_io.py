"""Tests for dil_core.io: round trips per format keep array and geometry; DICOM series; clear errors."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dil_core.geometry import Geometry
from dil_core.io import (
    Scan,
    ScanReadError,
    ScanWriteError,
    read_label,
    read_scan,
    write_image,
    write_label,
)


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix from angles in degrees about x, then y, then z (det +1)."""
    a, b, c = np.deg2rad([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


#: Oblique, anisotropic, off-origin geometry: every field differs from the default.
GEOMETRY = Geometry(
    size=(7, 6, 5),
    spacing=(0.7, 1.3, 2.5),
    origin=(-12.5, 30.25, 7.0),
    direction=tuple(_rotation(20.0, -15.0, 10.0).ravel().tolist()),
)


def _image_array(geometry: Geometry = GEOMETRY) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(100.0, 30.0, size=geometry.size).astype(np.float32)


def _label_array(geometry: Geometry = GEOMETRY) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 4, size=geometry.size).astype(np.uint8)


def _sitk_image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    image = sitk.GetImageFromArray(np.transpose(array, (2, 1, 0)))
    geometry.apply_to(image)
    return image


def _assert_geometry(got: Geometry, want: Geometry, *, atol: float = 1e-5) -> None:
    assert got.size == want.size
    np.testing.assert_allclose(got.spacing, want.spacing, atol=atol)
    np.testing.assert_allclose(got.origin, want.origin, atol=atol)
    np.testing.assert_allclose(got.direction, want.direction, atol=atol)


# ---------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_write_image_read_scan_round_trip(tmp_path: Path, suffix: str) -> None:
    array = _image_array()
    path = write_image(tmp_path / f"scan{suffix}", array, GEOMETRY)
    assert path == tmp_path / f"scan{suffix}"
    scan = read_scan(path)
    assert isinstance(scan, Scan)
    assert scan.array.dtype == np.float32
    assert scan.array.shape == GEOMETRY.size
    np.testing.assert_array_equal(scan.array, array)
    _assert_geometry(scan.geometry, GEOMETRY)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"scan{suffix}"]  # no temp file left behind


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_write_label_read_label_round_trip(tmp_path: Path, suffix: str) -> None:
    labels = _label_array()
    path = write_label(tmp_path / f"case-label{suffix}", labels, GEOMETRY)
    # The file holds an unsigned 8-bit integer volume: what Slicer and ITK-SNAP load as a label map.
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    assert reader.GetPixelID() == sitk.sitkUInt8
    got, geometry = read_label(path)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, labels)
    _assert_geometry(geometry, GEOMETRY)


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (np.array([True, False]), [1, 0]),
        (np.array([0.0, 1.0, 2.0, 255.0]), [0, 1, 2, 255]),
        (np.array([0, 7], dtype=np.int64), [0, 7]),
    ],
)
def test_write_label_casts_exact_values_to_uint8(tmp_path: Path, mask: np.ndarray, expected: list[int]) -> None:
    geometry = Geometry((mask.size, 1, 1), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    path = write_label(tmp_path / "m.nrrd", mask.reshape(geometry.size), geometry)
    got, _ = read_label(path)
    assert got.dtype == np.uint8
    assert got.ravel().tolist() == expected


def test_write_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "lab.nii.gz"
    write_label(target, np.zeros(GEOMETRY.size, np.uint8), GEOMETRY)
    write_label(target, np.ones(GEOMETRY.size, np.uint8), GEOMETRY)
    assert read_label(target)[0].min() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["lab.nii.gz"]


@pytest.mark.parametrize("suffix", [".nhdr", ".mhd"])
def test_read_detached_header_formats(tmp_path: Path, suffix: str) -> None:
    array = _image_array()
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(_sitk_image(array, GEOMETRY), str(path))
    assert len(list(tmp_path.iterdir())) == 2  # header + data file
    scan = read_scan(path)
    np.testing.assert_array_equal(scan.array, array)
    _assert_geometry(scan.geometry, GEOMETRY)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_read_label_keeps_raw_float_values(tmp_path: Path, suffix: str) -> None:
    """NaN, infinities and fractions come back as stored (ITK's NIfTI reader alone would turn NaN into 0)."""
    raw = np.array([0.0, 0.5, np.nan, 3.0, np.inf, -np.inf], dtype=np.float32).reshape(3, 2, 1)
    geometry = Geometry((3, 2, 1), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    path = tmp_path / f"raw{suffix}"
    sitk.WriteImage(_sitk_image(raw, geometry), str(path))
    got, _ = read_label(path)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, raw)  # NaN positions must match too
    np.testing.assert_array_equal(read_scan(path).array, raw)


def test_read_real_hippocampus_case(shared_data: Path) -> None:
    path = shared_data / "hippocampus" / "images" / "hippocampus_001.nii.gz"
    scan = read_scan(path)
    reference = sitk.ReadImage(str(path))
    assert scan.geometry.size == reference.GetSize()
    assert scan.array.shape == reference.GetSize()
    # array[i, j, k] is ITK index (i, j, k)
    assert scan.array[3, 5, 7] == pytest.approx(reference.GetPixel(3, 5, 7))
    labels, geometry = read_label(shared_data / "hippocampus" / "labels" / "hippocampus_001.nii.gz")
    assert geometry == scan.geometry
    assert set(np.unique(labels).tolist()) <= {0, 1, 2}


def test_read_real_nrrd_case(shared_data: Path) -> None:
    scan = read_scan(shared_data / "pyradiomics_testcases" / "images" / "breast1.nrrd")
    assert scan.geometry.size == (45, 120, 21)
    np.testing.assert_allclose(scan.geometry.spacing, (0.6641, 0.6641, 2.1), atol=1e-4)


# ----------------------------------------------------------------------------------------------- DICOM


def _write_dicom_series(
    folder: Path, array: np.ndarray, geometry: Geometry, *, series_uid: str, prefix: str = "slice"
) -> list[Path]:
    """Write an int16 volume as a DICOM series, one file per k slice, with the tags a reader needs."""
    folder.mkdir(parents=True, exist_ok=True)
    image = _sitk_image(array.astype(np.int16), geometry)
    d = geometry.direction
    shared_tags = {
        "0008|0008": "DERIVED\\SECONDARY",
        "0008|0060": "MR",
        "0008|0021": "20240101",
        "0008|0031": "120000",
        "0008|103e": f"test series {series_uid}",
        "0020|000d": "1.2.826.0.1.3680043.2.1125.1.1",
        "0020|000e": series_uid,
        "0020|0037": "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k in range(geometry.size[2]):
        slice_k = image[:, :, k : k + 1]  # 3D, one slice thick: keeps the full direction and the origin
        for tag, value in shared_tags.items():
            slice_k.SetMetaData(tag, value)
        slice_k.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        slice_k.SetMetaData("0020|0013", str(k + 1))
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        slice_k.SetMetaData("0020|0032", "\\".join(f"{v:.10f}" for v in position))
        path = folder / f"{prefix}{k:03d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(slice_k)
        files.append(path)
    return files


def _dicom_geometry() -> Geometry:
    return Geometry(
        size=(6, 5, 4),
        spacing=(0.8, 0.9, 2.0),
        origin=(-20.0, 15.5, 42.0),
        direction=tuple(_rotation(12.0, 0.0, -8.0).ravel().tolist()),
    )


def test_dicom_series_round_trip(tmp_path: Path) -> None:
    geometry = _dicom_geometry()
    array = np.arange(np.prod(geometry.size), dtype=np.int16).reshape(geometry.size) - 50
    files = _write_dicom_series(tmp_path / "series", array, geometry, series_uid="1.2.3.4.5")
    for source in (tmp_path / "series", files[2]):  # the folder, or one file standing for its series
        scan = read_scan(source)
        np.testing.assert_array_equal(scan.array, array.astype(np.float32))
        _assert_geometry(scan.geometry, geometry, atol=1e-4)


def test_dicom_folder_with_two_series_takes_the_largest(tmp_path: Path) -> None:
    big = _dicom_geometry()
    small = Geometry((6, 5, 3), big.spacing, big.origin, big.direction)
    big_array = np.full(big.size, 7, dtype=np.int16)
    _write_dicom_series(tmp_path, big_array, big, series_uid="1.2.3.4.100", prefix="big")
    _write_dicom_series(tmp_path, np.full(small.size, 3, dtype=np.int16), small, series_uid="1.2.3.4.200", prefix="s")
    scan = read_scan(tmp_path)
    assert scan.geometry.size == big.size
    np.testing.assert_array_equal(scan.array, big_array)


def test_dicom_folder_with_two_equal_series_names_them(tmp_path: Path) -> None:
    geometry = _dicom_geometry()
    _write_dicom_series(tmp_path, np.zeros(geometry.size), geometry, series_uid="1.2.3.4.100", prefix="a")
    _write_dicom_series(tmp_path, np.ones(geometry.size), geometry, series_uid="1.2.3.4.200", prefix="b")
    with pytest.raises(ScanReadError, match=r"1\.2\.3\.4\.100.*1\.2\.3\.4\.200"):
        read_scan(tmp_path)


# ------------------------------------------------------------------------------------------- bad inputs


def _truncated(suffix: str, pixel: int):  # noqa: ANN202
    """A maker of a file cut to 3/4 of its bytes (ITK reads a cut NIfTI as zeros without complaint)."""

    def make(tmp_path: Path) -> Path:
        path = tmp_path / f"cut{suffix}"
        noise = np.random.default_rng(0).normal(50, 20, size=(40, 40, 40))
        sitk.WriteImage(sitk.Cast(sitk.GetImageFromArray(noise), pixel), str(path), True)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 3 // 4])
        return path

    return make


def _write_2d(tmp_path: Path) -> Path:
    path = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.Image(8, 9, sitk.sitkFloat32), str(path))
    return path


def _write_4d(tmp_path: Path) -> Path:
    path = tmp_path / "time.nii.gz"
    sitk.WriteImage(sitk.Image([4, 5, 6, 3], sitk.sitkFloat32), str(path))
    return path


def _write_vector(tmp_path: Path) -> Path:
    path = tmp_path / "rgb.nrrd"
    sitk.WriteImage(sitk.Image([4, 5, 6], sitk.sitkVectorFloat32, 3), str(path))
    return path


def _write_garbage(tmp_path: Path) -> Path:
    path = tmp_path / "junk.nrrd"
    path.write_bytes(b"this is not an image at all\n" * 10)
    return path


def _write_empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.nii.gz"
    path.touch()
    return path


def _write_gzip_garbage(tmp_path: Path) -> Path:
    path = tmp_path / "notnifti.nii.gz"
    path.write_bytes(gzip.compress(b"\x00" * 500))
    return path


def _write_txt(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("hello", encoding="utf-8")
    return path


def _empty_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "nodicom"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here", encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: "", r"path is empty"),
        (lambda tmp: tmp / "missing.nii.gz", r"missing\.nii\.gz: no such file"),
        (_write_empty, r"empty\.nii\.gz: file is empty"),
        (_truncated(".nii.gz", sitk.sitkFloat32), r"cut\.nii\.gz: unreadable or truncated"),
        (_truncated(".nii.gz", sitk.sitkUInt8), r"cut\.nii\.gz: unreadable or truncated"),
        (_truncated(".nii", sitk.sitkFloat32), r"cut\.nii: unreadable or truncated .* of 256000 bytes"),
        (_truncated(".nii", sitk.sitkInt16), r"cut\.nii: unreadable or truncated .* of 128000 bytes"),
        (_truncated(".nrrd", sitk.sitkUInt8), r"cut\.nrrd: unreadable or truncated"),
        (_truncated(".mha", sitk.sitkFloat32), r"cut\.mha: unreadable or truncated"),
        (_write_garbage, r"junk\.nrrd: unreadable"),
        (_write_gzip_garbage, r"notnifti\.nii\.gz: unreadable"),
        (_write_2d, r"flat\.nii\.gz: expected a 3D image, got a 2D image"),
        (_write_4d, r"time\.nii\.gz: expected a 3D image, got a 4D image"),
        (_write_vector, r"rgb\.nrrd: expected one value per voxel, got 3 components"),
        (_write_txt, r"notes\.txt: unsupported file suffix '\.txt'"),
        (_empty_folder, r"nodicom: folder holds no DICOM series"),
    ],
    ids=["empty-path", "missing", "empty-file", "cut-niigz-float", "cut-niigz-uint8", "cut-nii-float",
         "cut-nii-int16", "cut-nrrd", "cut-mha", "garbage", "gzip-garbage", "2d", "4d", "vector",
         "suffix", "no-dicom"],
)
@pytest.mark.parametrize("reader", [read_scan, read_label], ids=["read_scan", "read_label"])
def test_read_bad_inputs(tmp_path: Path, make, message: str, reader) -> None:  # noqa: ANN001
    path = make(tmp_path)
    with pytest.raises(ScanReadError, match=message):
        reader(path)


def test_read_error_is_a_value_error() -> None:
    assert issubclass(ScanReadError, ValueError)


@pytest.mark.parametrize(
    ("mask", "error", "message"),
    [
        (np.zeros((7, 6)), ValueError, r"mask: expected a 3D"),
        (np.zeros((6, 7, 5)), ValueError, r"mask: shape \(6, 7, 5\) does not match the geometry's size \(7, 6, 5\)"),
        (np.full(GEOMETRY.size, 0.5), ValueError, r"mask: labels must be whole numbers in \[0, 255\]"),
        (np.full(GEOMETRY.size, 256), ValueError, r"whole numbers in \[0, 255\]"),
        (np.full(GEOMETRY.size, -1), ValueError, r"whole numbers in \[0, 255\]"),
        (np.full(GEOMETRY.size, np.nan), ValueError, r"whole numbers in \[0, 255\]"),
        (np.full(GEOMETRY.size, "a"), ValueError, r"mask: expected bool or numeric labels"),
    ],
    ids=["2d", "shape", "fraction", "too-big", "negative", "nan", "strings"],
)
def test_write_label_bad_masks(tmp_path: Path, mask: np.ndarray, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        write_label(tmp_path / "x.nii.gz", mask, GEOMETRY)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("writer", [write_label, write_image], ids=["write_label", "write_image"])
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("x.png", r"unsupported suffix '\.png'"),
        ("x.mhd", r"unsupported suffix '\.mhd'"),
        ("nofolder/x.nii.gz", r"folder .*nofolder does not exist"),
        ("", r"path is empty"),
    ],
)
def test_write_bad_paths(tmp_path: Path, writer, name: str, message: str) -> None:  # noqa: ANN001
    path = str(tmp_path / name) if name else ""
    with pytest.raises(ScanWriteError, match=message):
        writer(path, np.zeros(GEOMETRY.size, np.uint8), GEOMETRY)


def test_write_image_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"array: shape \(1, 2, 3\) does not match"):
        write_image(tmp_path / "x.nii.gz", np.zeros((1, 2, 3)), GEOMETRY)
    with pytest.raises(ValueError, match=r"array: expected real numbers"):
        write_image(tmp_path / "x.nii.gz", np.zeros(GEOMETRY.size, complex), GEOMETRY)
    with pytest.raises(TypeError, match=r"geometry: expected a dil_core.geometry.Geometry"):
        write_image(tmp_path / "x.nii.gz", np.zeros(GEOMETRY.size), {"size": GEOMETRY.size})


def test_failed_write_leaves_target_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "keep.nrrd"
    write_label(target, np.ones(GEOMETRY.size, np.uint8), GEOMETRY)
    before = target.read_bytes()

    def fail(self: sitk.ImageFileWriter, *args: object) -> None:
        Path(self.GetFileName()).write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk.ImageFileWriter, "Execute", fail)
    with pytest.raises(ScanWriteError, match=r"keep\.nrrd: could not write: disk full"):
        write_label(target, np.zeros(GEOMETRY.size, np.uint8), GEOMETRY)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.nrrd"]
    assert not any(name.startswith(".keep") for name in os.listdir(tmp_path))
