"""Tests for dil_core.validation: submissions checked against the scan's geometry, and their drawn slices."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dil_core.geometry import Geometry
from dil_core.validation import (
    DimensionError,
    DirectionMismatchError,
    EmptyPathError,
    MissingFileError,
    NonBinaryError,
    NonFiniteValueError,
    OriginMismatchError,
    SizeMismatchError,
    SpacingMismatchError,
    SubmissionContent,
    SubmissionError,
    UnreadableFileError,
    drawn_slices,
    submission_content,
    validate_submission,
)

SHAPE = (6, 7, 8)
# An oblique-free but non-trivial geometry: anisotropic spacing, offset origin, axes flipped and permuted.
GEOMETRY = Geometry(
    size=SHAPE,
    spacing=(0.8, 1.0, 2.5),
    origin=(10.5, -20.25, 30.0),
    direction=(0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0),
)


def _mask() -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[2:4, 1:5, 3:6] = 1
    return mask


def _write(
    path: Path, array_xyz: np.ndarray, geometry: Geometry = GEOMETRY, *, compress: bool = True
) -> Path:
    image = sitk.GetImageFromArray(np.transpose(array_xyz, (2, 1, 0)))
    geometry.apply_to(image)
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path


# --- good submissions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "dtype", "value"),
    [
        ("s.nii.gz", np.uint8, 1),
        ("s.nii", np.int16, 1),
        ("s.nrrd", np.uint8, 255),
        ("s.mha", np.float32, 7.0),
        ("s.nii.gz", np.int32, -3),
    ],
)
def test_good_submission(tmp_path: Path, name: str, dtype: type, value: float) -> None:
    path = _write(tmp_path / name, _mask().astype(dtype) * dtype(value))
    got = validate_submission(path, GEOMETRY)
    assert got.dtype == np.uint8 and got.shape == SHAPE
    np.testing.assert_array_equal(got, _mask())


def test_empty_submission_is_valid(tmp_path: Path) -> None:
    path = _write(tmp_path / "empty.nii.gz", np.zeros(SHAPE, np.uint8))
    assert validate_submission(str(path), GEOMETRY).sum() == 0


def test_geometry_within_tolerance(tmp_path: Path) -> None:
    close = Geometry(
        size=SHAPE,
        spacing=(0.8 * (1 + 2e-5), 1.0, 2.5),
        origin=(10.5 + 1e-5, -20.25, 30.0),
        direction=(0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0),
    )
    path = _write(tmp_path / "close.nrrd", _mask(), close)
    np.testing.assert_array_equal(validate_submission(path, GEOMETRY), _mask())


def test_real_hippocampus_submission(tmp_path: Path, demo_data: Path) -> None:
    image = sitk.ReadImage(str(demo_data / "images" / "hippocampus_001.nii.gz"))
    label = sitk.ReadImage(str(demo_data / "labels" / "hippocampus_001.nii.gz"))
    truth = np.transpose(sitk.GetArrayFromImage(label), (2, 1, 0)) > 0
    merged = sitk.GetImageFromArray(np.transpose(truth.astype(np.uint8), (2, 1, 0)))
    merged.CopyInformation(label)
    sitk.WriteImage(merged, str(tmp_path / "hippocampus_001.nii.gz"))
    got = validate_submission(tmp_path / "hippocampus_001.nii.gz", Geometry.from_sitk(image))
    np.testing.assert_array_equal(got, truth.astype(np.uint8))
    # The raw ground truth has two labels (1 anterior, 2 posterior): not a binary submission.
    with pytest.raises(NonBinaryError, match=r"1 \(\d+ voxels\), 2 \(\d+ voxels\)"):
        validate_submission(demo_data / "labels" / "hippocampus_001.nii.gz", Geometry.from_sitk(image))


# --- bad submissions: one test per problem --------------------------------------------------------------


@pytest.mark.parametrize("path", ["", "   ", None])
def test_empty_path(path: object) -> None:
    with pytest.raises(EmptyPathError, match="empty path"):
        validate_submission(path, GEOMETRY)  # type: ignore[arg-type]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="no such file") as info:
        validate_submission(tmp_path / "nothing.nii.gz", GEOMETRY)
    assert info.value.actual == str(tmp_path / "nothing.nii.gz")
    with pytest.raises(MissingFileError, match="is a folder"):
        validate_submission(tmp_path, GEOMETRY)


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "notes.nii.gz").write_bytes(b"this is not an image")
    with pytest.raises(UnreadableFileError, match="not a readable image file"):
        validate_submission(tmp_path / "notes.nii.gz", GEOMETRY)


def _cut(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize(
    ("name", "compress", "words"),
    [
        ("half.nii.gz", True, "truncated or corrupt gzip stream"),
        ("half.nii", False, "truncated NIfTI file: the header needs"),
        ("half.nrrd", False, "truncated or corrupt image data"),
        ("half.mha", True, "truncated or corrupt image data"),
    ],
)
def test_truncated_file(tmp_path: Path, name: str, compress: bool, words: str) -> None:
    # A larger random mask, so that half of the compressed file still holds the whole header.
    rng = np.random.default_rng(0)
    big = Geometry((40, 40, 40), GEOMETRY.spacing, GEOMETRY.origin, GEOMETRY.direction)
    path = _cut(_write(tmp_path / name, rng.integers(0, 2, big.size).astype(np.uint8), big, compress=compress), 0.5)
    with pytest.raises(UnreadableFileError) as info:
        validate_submission(path, big)
    assert words in str(info.value)


def test_corrupt_gzip_body(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.nii.gz", _mask())
    data = bytearray(path.read_bytes())
    data[-8:] = b"\x00" * 8  # wrong CRC and length in the gzip trailer
    path.write_bytes(bytes(data))
    with pytest.raises(UnreadableFileError, match="gzip"):
        validate_submission(path, GEOMETRY)


def test_nifti_check_reads_header_fields(tmp_path: Path) -> None:
    # Sanity of the hand-read NIfTI header: an intact file needs exactly vox_offset + voxel bytes.
    path = _write(tmp_path / "ok.nii", _mask().astype(np.int16), compress=False)
    with gzip.open(tmp_path / "ok.nii.gz", "wb") as stream:
        stream.write(path.read_bytes())
    for name in ("ok.nii", "ok.nii.gz"):
        validate_submission(tmp_path / name, GEOMETRY)
    assert path.stat().st_size == 352 + 2 * int(np.prod(SHAPE))


def test_2d_file(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((7, 6), np.uint8)), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(DimensionError, match=r"a 2D image of size \(6, 7\), expected a 3D") as info:
        validate_submission(tmp_path / "flat.nii.gz", GEOMETRY)
    assert (info.value.expected, info.value.actual) == (3, 2)


def test_4d_file(tmp_path: Path) -> None:
    volume = sitk.GetImageFromArray(np.zeros(SHAPE[::-1], np.uint8))
    sitk.WriteImage(sitk.JoinSeries([volume, volume]), str(tmp_path / "time.nii.gz"))
    with pytest.raises(DimensionError, match=r"a 4D image of size \(6, 7, 8, 2\)") as info:
        validate_submission(tmp_path / "time.nii.gz", GEOMETRY)
    assert (info.value.expected, info.value.actual) == (3, 4)


def test_multi_component_file(tmp_path: Path) -> None:
    scalar = sitk.GetImageFromArray(np.zeros(SHAPE[::-1], np.uint8))
    GEOMETRY.apply_to(scalar)
    sitk.WriteImage(sitk.Compose(scalar, scalar), str(tmp_path / "rgb.nrrd"))
    with pytest.raises(DimensionError, match="2 components per voxel, expected 1"):
        validate_submission(tmp_path / "rgb.nrrd", GEOMETRY)


def _replace(geometry: Geometry, **changes: object) -> Geometry:
    values = {
        "size": geometry.size,
        "spacing": geometry.spacing,
        "origin": geometry.origin,
        "direction": geometry.direction,
    }
    values.update(changes)
    return Geometry(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        (
            {"size": (6, 7, 9)},
            SizeMismatchError,
            "wrong size: expected (6, 7, 8) voxels, got (6, 7, 9)",
        ),
        (
            {"spacing": (0.8, 1.0, 3.0)},
            SpacingMismatchError,
            "wrong spacing: expected (0.8, 1, 2.5) mm, got (0.8, 1, 3) mm",
        ),
        (
            {"spacing": (0.8 * 1.001, 1.0, 2.5)},
            SpacingMismatchError,
            "wrong spacing: expected (0.8, 1, 2.5) mm, got (0.8008, 1, 2.5) mm",
        ),
        (
            {"origin": (10.5, -20.0, 30.0)},
            OriginMismatchError,
            "wrong origin: expected (10.5, -20.25, 30) mm, got (10.5, -20, 30) mm",
        ),
        (
            {"origin": (10.5 + 1e-3, -20.25, 30.0)},
            OriginMismatchError,
            "wrong origin: expected (10.5, -20.25, 30) mm, got (10.501, -20.25, 30) mm",
        ),
        (
            {"direction": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)},
            DirectionMismatchError,
            "wrong direction: expected (0, 1, 0, -1, 0, 0, 0, 0, 1), got (1, 0, 0, 0, 1, 0, 0, 0, 1)",
        ),
    ],
)
def test_wrong_geometry(tmp_path: Path, changes: dict[str, object], error: type, words: str) -> None:
    written = _replace(GEOMETRY, **changes)
    mask = np.zeros(written.size, np.uint8)
    path = _write(tmp_path / "wrong.nii.gz", mask, written)
    with pytest.raises(error) as info:
        validate_submission(path, GEOMETRY)
    assert words in str(info.value)
    assert isinstance(info.value, SubmissionError) and isinstance(info.value, ValueError)
    assert info.value.expected is not None and info.value.actual is not None


def test_slight_rotation_is_a_wrong_direction(tmp_path: Path) -> None:
    angle = 1e-3  # radians: 0.06 degrees, about 0.04 mm at 40 mm from the origin
    c, s = np.cos(angle), np.sin(angle)
    written = _replace(GEOMETRY, direction=(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    reference = _replace(GEOMETRY, direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    path = _write(tmp_path / "tilted.mha", _mask(), written)
    with pytest.raises(DirectionMismatchError, match="tolerance 0.0001"):
        validate_submission(path, reference)
    np.testing.assert_array_equal(validate_submission(path, reference, tol=1e-2), _mask())


@pytest.mark.parametrize(("bad", "words"), [(np.nan, "1 NaN and 0 infinite"), (np.inf, "0 NaN and 1 infinite")])
def test_non_finite_values(tmp_path: Path, bad: float, words: str) -> None:
    mask = _mask().astype(np.float32)
    mask[0, 1, 2] = bad
    path = _write(tmp_path / "nan.nrrd", mask)
    with pytest.raises(NonFiniteValueError, match="first at index \\(0, 1, 2\\)") as info:
        validate_submission(path, GEOMETRY)
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("values", "dtype", "words"),
    [
        ((1, 2), np.uint8, "2 distinct non-zero values [1 (24 voxels), 2 (1 voxels)]"),
        ((1.0, 0.5), np.float32, "2 distinct non-zero values [0.5 (1 voxels), 1 (24 voxels)]"),
        ((-1, 1), np.int16, "2 distinct non-zero values [-1 (24 voxels), 1 (1 voxels)]"),
    ],
)
def test_non_binary_values(tmp_path: Path, values: tuple[float, float], dtype: type, words: str) -> None:
    mask = _mask().astype(dtype) * dtype(values[0])
    mask[0, 0, 0] = values[1]
    path = _write(tmp_path / "labels.nii.gz", mask)
    with pytest.raises(NonBinaryError) as info:
        validate_submission(path, GEOMETRY)
    assert words in str(info.value)
    assert sorted(info.value.actual) == sorted(values)  # type: ignore[arg-type]


def test_many_values_are_summarised(tmp_path: Path) -> None:
    mask = np.arange(int(np.prod(SHAPE)), dtype=np.int16).reshape(SHAPE)
    path = _write(tmp_path / "ramp.nii.gz", mask)
    with pytest.raises(NonBinaryError, match=r"335 distinct non-zero values \[1 \(1 voxels\), .* and 325 more\]"):
        validate_submission(path, GEOMETRY)


def test_validate_submission_bad_arguments(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.nii.gz", _mask())
    with pytest.raises(TypeError, match="geometry must be"):
        validate_submission(path, {"size": SHAPE})  # type: ignore[arg-type]
    for tol in (-1e-4, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="tol must be a finite number >= 0"):
            validate_submission(path, GEOMETRY, tol=tol)  # type: ignore[arg-type]


# --- drawn slices ---------------------------------------------------------------------------------------


def _content(mask: np.ndarray, requested: dict[int, set[int]]) -> tuple[dict, dict, dict]:
    content = submission_content(mask, requested)
    as_sets = lambda d: {a: set(v) for a, v in d.items()}  # noqa: E731
    return as_sets(content.drawn), as_sets(content.empty_requested), as_sets(content.extra)


def test_requested_drawn_and_empty() -> None:
    mask = np.zeros((6, 7, 8), np.uint8)
    mask[1, 2:5, 2:6] = 1  # sagittal 1 (requested); crosses coronal 2, 3, 4
    mask[1:3, 2, 3:6] = 1  # coronal 2 (requested); crosses sagittal 1, 2
    drawn, empty, extra = _content(mask, {0: {1, 3}, 1: {2}})
    assert drawn == {0: {1}, 1: {2}}
    assert empty == {0: {3}, 1: set()}
    assert extra == {0: set(), 1: set()}


def test_extra_slice_on_one_plane_is_one_slice() -> None:
    mask = np.zeros((6, 7, 8), np.uint8)
    mask[1, 2:5, 2:6] = 1  # requested sagittal 1
    mask[4, 1:6, 2:7] = 1  # unrequested sagittal 4: crosses coronal 1..5, none requested
    drawn, empty, extra = _content(mask, {0: {1}, 1: {0}})
    assert extra == {0: {4}, 1: set()}  # one sagittal slice, not coronal 1..5
    assert drawn == {0: {1, 4}, 1: set()}
    assert empty == {0: set(), 1: {0}}


def test_requested_slice_crossed_by_other_drawings_counts_as_drawn() -> None:
    # The rule: a requested slice with any non-zero voxel is drawn, even if those voxels come from
    # drawings on another plane.
    mask = np.zeros((6, 7, 8), np.uint8)
    mask[4, 1:6, 2:7] = 1  # unrequested sagittal 4, crossing requested coronal 3
    drawn, empty, extra = _content(mask, {0: {1}, 1: {3}})
    assert drawn == {0: {4}, 1: {3}}
    assert empty == {0: {1}, 1: set()}
    assert extra == {0: {4}, 1: set()}


def test_extra_coronal_slice() -> None:
    mask = np.zeros((6, 7, 8), np.uint8)
    mask[0:5, 6, 1:7] = 1  # unrequested coronal 6 crossing requested sagittal 2 only along a line
    drawn, empty, extra = _content(mask, {0: {2}, 1: {1}})
    assert extra == {0: set(), 1: {6}}
    assert drawn == {0: {2}, 1: {6}}
    assert empty == {0: set(), 1: {1}}


def test_single_voxel_tie_goes_to_lower_axis() -> None:
    mask = np.zeros((6, 7, 8), np.uint8)
    mask[3, 4, 5] = 1
    assert _content(mask, {0: set(), 1: set()})[2] == {0: {3}, 1: set()}
    assert _content(mask, {1: set(), 2: set()})[2] == {1: {4}, 2: set()}


def test_extra_slices_on_two_planes() -> None:
    mask = np.zeros((8, 8, 8), np.uint8)
    mask[5, 0:3, 1:7] = 1  # sagittal 5: crosses coronal 0..2
    mask[0:4, 6, 1:7] = 1  # coronal 6: crosses sagittal 0..3, does not touch sagittal 5
    drawn, empty, extra = _content(mask, {0: {7}, 1: {4}})
    assert extra == {0: {5}, 1: {6}}
    assert drawn == extra
    assert empty == {0: {7}, 1: {4}}


def test_drawing_on_an_unrequested_plane_is_counted_on_requested_ones() -> None:
    mask = np.zeros((6, 7, 8), np.uint8)
    mask[1:4, 1:3, 6] = 1  # axial 6: 3 sagittal x 2 coronal voxels
    drawn, empty, extra = _content(mask, {0: set(), 1: set()})
    assert extra == {0: set(), 1: {1, 2}}  # 2 coronal slices of 3 voxels beat 3 sagittal slices of 2
    assert _content(mask, {0: set(), 1: set(), 2: set()})[2] == {0: set(), 1: set(), 2: {6}}


def test_redundant_greedy_pick_is_pruned() -> None:
    # Sagittal 0 holds 5 voxels (most), each also on a coronal line of 4 voxels that must be drawn anyway.
    mask = np.zeros((16, 5, 3), np.uint8)
    for y in range(5):
        mask[0, y, 1] = 1
        mask[1 + 3 * y : 4 + 3 * y, y, 1] = 1
    drawn, empty, extra = _content(mask, {0: set(), 1: set()})
    assert extra == {0: set(), 1: {0, 1, 2, 3, 4}}


def test_rule_holds_on_random_masks() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        mask = (rng.random((7, 8, 9)) < 0.03).astype(np.uint8)
        mask[rng.integers(7), 2:6, 3:7] = 1
        requested = {0: set(rng.choice(7, 2, replace=False).tolist()), 1: set(rng.choice(8, 2, replace=False).tolist())}
        content = submission_content(mask, requested)
        on_drawn = np.zeros(mask.shape, bool)
        for axis, indices in content.drawn.items():
            for i in indices:
                on_drawn[(slice(None),) * axis + (i,)] = True
        assert not (mask.astype(bool) & ~on_drawn).any()  # every drawn voxel lies on a drawn slice
        for axis, indices in content.extra.items():
            assert not indices & requested[axis]
            for i in indices:  # each extra slice has a voxel no drawn slice of another plane explains
                other = np.zeros(mask.shape, bool)
                for b, js in content.drawn.items():
                    for j in js if b != axis else ():
                        other[(slice(None),) * b + (j,)] = True
                index = (slice(None),) * axis + (i,)
                assert (mask[index].astype(bool) & ~other[index]).any()
        for axis in requested:
            assert content.drawn[axis] & requested[axis] == {i for i in requested[axis] if mask.take(i, axis).any()}
            assert content.empty_requested[axis] == requested[axis] - content.drawn[axis]


def test_content_object() -> None:
    mask = np.zeros((6, 7, 8), np.int16)
    mask[1, 2:5, 2:6] = 5
    content = submission_content(mask, {0: [1, 3], 2: ()})
    assert isinstance(content, SubmissionContent)
    assert content.mask.dtype == np.uint8 and set(np.unique(content.mask)) == {0, 1}
    assert not content.mask.flags.writeable
    # Sagittal 1 explains every voxel: the axial slices it crosses (2..5) are not extra.
    assert content.extra == {0: frozenset(), 2: frozenset()}
    assert content.labeled == {0: frozenset({1, 3}), 2: frozenset()}
    assert drawn_slices(mask, {0: [1, 3], 2: ()}) == content.drawn
    assert all(isinstance(v, frozenset) for v in content.drawn.values())


def test_empty_mask_leaves_every_request_empty() -> None:
    content = submission_content(np.zeros((4, 4, 4), np.uint8), {0: {0, 3}, 1: {2}})
    assert content.drawn == {0: frozenset(), 1: frozenset()}
    assert content.empty_requested == {0: frozenset({0, 3}), 1: frozenset({2})}


@pytest.mark.parametrize(
    ("mask", "requested", "words"),
    [
        (np.zeros((4, 4)), {0: {1}}, "mask must be a 3D"),
        (np.zeros((4, 4, 4, 1)), {0: {1}}, "mask must be a 3D"),
        (np.zeros((4, 4, 4)), {}, "at least one axis"),
        (np.zeros((4, 4, 4)), {3: {1}}, "axis must be 0, 1 or 2, got 3"),
        (np.zeros((4, 5, 6)), {1: {5}}, r"slice index\(es\) \[5\] on axis 1 outside 0..4"),
        (np.zeros((4, 5, 6)), {2: {-1, 2}}, r"\[-1\] on axis 2 outside 0..5"),
    ],
)
def test_submission_content_bad_inputs(mask: np.ndarray, requested: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        submission_content(mask, requested)
    with pytest.raises(ValueError, match=words):
        drawn_slices(mask, requested)
