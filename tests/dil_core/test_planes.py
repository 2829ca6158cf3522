"""Tests for dil_core.planes: clinical planes from direction cosines (LPS, as ITK and Slicer)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dil_core.geometry import Geometry
from dil_core.planes import SliceRef, axis_of, extract_slice, plane_axes, plane_of, slice_count
from dil_core.typing import Plane

S, C, A = Plane.SAGITTAL, Plane.CORONAL, Plane.AXIAL
IDENTITY = {S: 0, C: 1, A: 2}


def _rot(axis: int, degrees: float) -> np.ndarray:
    """Rotation by ``degrees`` about LPS axis ``axis`` (0 = x, 1 = y, 2 = z)."""
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [k for k in range(3) if k != axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def _columns(*cols: tuple[float, float, float]) -> np.ndarray:
    """Direction matrix whose column c is ``cols[c]`` (the LPS direction of index axis c)."""
    return np.array(cols, dtype=float).T


def _geometry(direction: np.ndarray, size: tuple[int, int, int] = (7, 6, 5)) -> Geometry:
    return Geometry(size, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.asarray(direction).ravel().tolist()))


L, P, SUP = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
R, ANT, INF = (-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0)


# ------------------------------------------------------------------------------------ hand-made tables


@pytest.mark.parametrize(
    ("direction", "expected"),
    [
        (_columns(L, P, SUP), IDENTITY),  # LPS identity
        (_columns(R, ANT, SUP), IDENTITY),  # RAS-style flipped signs: same planes
        (_columns(R, P, INF), IDENTITY),
        (_columns(SUP, L, P), {S: 1, C: 2, A: 0}),  # permuted axes: axis0 axial, axis1 sagittal, axis2 coronal
        (_columns(P, SUP, R), {S: 2, C: 0, A: 1}),
        (_columns(ANT, R, INF), {S: 1, C: 0, A: 2}),  # in-plane swap, as in some transposed exports
        (_columns(L, INF, ANT), {S: 0, C: 2, A: 1}),  # coronal acquisition stored with k along P-A
    ],
    ids=["lps", "ras", "rpi", "s-l-p", "p-s-r", "a-r-i", "l-i-a"],
)
def test_plane_axes_axis_aligned(direction: np.ndarray, expected: dict[Plane, int]) -> None:
    assert plane_axes(direction) == expected
    assert plane_axes(_geometry(direction)) == expected
    assert plane_axes(tuple(direction.ravel())) == expected  # 9 numbers, row-major as SimpleITK
    for plane, axis in expected.items():
        assert axis_of(plane, _geometry(direction)) == axis
        assert plane_of(axis, _geometry(direction)) == plane


@pytest.mark.parametrize("about", [0, 1, 2], ids=["about-LR", "about-PA", "about-SI"])
@pytest.mark.parametrize("degrees", [-30.0, -17.5, 5.0, 30.0])
@pytest.mark.parametrize(
    ("base", "expected"),
    [(_columns(L, P, SUP), IDENTITY), (_columns(SUP, L, P), {S: 1, C: 2, A: 0})],
    ids=["identity", "permuted"],
)
def test_plane_axes_oblique_up_to_30_degrees(
    about: int, degrees: float, base: np.ndarray, expected: dict[Plane, int]
) -> None:
    assert plane_axes(_rot(about, degrees) @ base) == expected


def test_plane_axes_ignores_column_length() -> None:
    """Columns scaled by spacing (a direction-times-spacing matrix) name the same planes."""
    direction = _columns(SUP, L, P) * np.array([0.5, 3.0, 1.2])
    assert plane_axes(direction) == {S: 1, C: 2, A: 0}


@pytest.mark.parametrize(
    ("direction", "expected"),
    [
        # Both axis 0 (|cos| .8 to L-R) and axis 1 (.71 to L-R) are nearest L-R: the best bijection puts axis 0
        # on L-R (.8 + .704 = 1.504 beats .6 + .71 = 1.31).
        (_columns((0.8, 0.6, 0.0), (0.71, 0.704, 0.0), SUP), IDENTITY),
        # Exactly 45 degrees about S-I: a tie everywhere; the first best permutation (identity) wins.
        (_rot(2, 45.0), IDENTITY),
        # 60 degrees about S-I is no longer degenerate: axes 0 and 1 trade places.
        (_rot(2, 60.0), {S: 1, C: 0, A: 2}),
        # Axis 0 and axis 2 both nearest S-I; axis 1 is L-R; axis 2 has the better claim on S-I (.9 > .6), so
        # axis 0 takes P-A (.55 + .9 beats .6 + .3).
        (_columns((0.58, 0.55, 0.6), L, (0.0, 0.3, 0.9)), {S: 1, C: 0, A: 2}),
    ],
    ids=["two-near-LR", "45-degrees", "60-degrees", "two-near-SI"],
)
def test_plane_axes_degenerate_is_still_a_bijection(direction: np.ndarray, expected: dict[Plane, int]) -> None:
    assert plane_axes(direction) == expected


def test_plane_axes_random_rotations_bijection_and_optimal() -> None:
    rng = np.random.default_rng(7)
    degenerate = 0
    for _ in range(300):
        q = rng.normal(size=4)
        w, x, y, z = q / np.linalg.norm(q)
        rot = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        got = plane_axes(rot)
        assert sorted(got.values()) == [0, 1, 2]
        anatomical_of_axis = {axis: [S, C, A].index(plane) for plane, axis in got.items()}
        cos = np.abs(rot)
        score = sum(cos[anatomical_of_axis[c], c] for c in range(3))
        best = max(sum(cos[p[c], c] for c in range(3)) for p in itertools.permutations(range(3)))
        assert score == pytest.approx(best)
        nearest = [int(np.argmax(cos[:, c])) for c in range(3)]
        if len(set(nearest)) == 3:
            assert [anatomical_of_axis[c] for c in range(3)] == nearest
        else:
            degenerate += 1
    assert degenerate > 0  # the sample did exercise the degenerate branch


# ------------------------------------------------------------------------------------------- real data


def _all_headers(shared_data: Path) -> list[Path]:
    sets = ["hippocampus", "left_atrium", "brats2015", "pyradiomics_testcases"]
    files = [
        f for name in sets for f in sorted((shared_data / name).rglob("*")) if f.name.endswith((".nii.gz", ".nrrd"))
    ]
    return files


def test_every_shared_image_maps_planes_by_nearest_axis(shared_data: Path) -> None:
    files = _all_headers(shared_data)
    assert len(files) >= 400  # 183 x 2 hippocampus, 20 x 2 left atrium, 4 x 3 BraTS, 3 x 2 pyradiomics
    seen_sets = set()
    reader = sitk.ImageFileReader()
    for path in files:
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        direction = np.asarray(reader.GetDirection(), dtype=float).reshape(3, 3)
        geometry = Geometry(
            tuple(reader.GetSize()), tuple(reader.GetSpacing()), tuple(reader.GetOrigin()), tuple(direction.ravel())
        )
        got = plane_axes(geometry)
        assert sorted(got.values()) == [0, 1, 2], path
        nearest = [int(np.argmax(np.abs(direction[:, c]))) for c in range(3)]
        for plane, anatomical in zip((S, C, A), range(3), strict=True):
            assert nearest[got[plane]] == anatomical, path
        seen_sets.add(path.relative_to(shared_data).parts[0])
    assert seen_sets == {"hippocampus", "left_atrium", "brats2015", "pyradiomics_testcases"}


def test_hippocampus_is_lps_flipped_so_axis0_is_sagittal(shared_data: Path) -> None:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(shared_data / "hippocampus" / "images" / "hippocampus_001.nii.gz"))
    reader.ReadImageInformation()
    assert plane_axes(reader.GetDirection()) == IDENTITY


# ------------------------------------------------------------------------------- helpers and SliceRef


def test_slice_ref_text_and_axis() -> None:
    geometry = _geometry(_columns(SUP, L, P), size=(40, 30, 20))
    ref = SliceRef(Plane.SAGITTAL, 29)
    assert str(ref) == "sagittal slice 29"
    assert ref.to_axis(geometry) == 1
    assert SliceRef.parse("  Sagittal slice 29 ") == ref
    assert SliceRef.parse(str(SliceRef(Plane.AXIAL, 0))) == SliceRef(Plane.AXIAL, 0)
    assert SliceRef("coronal", 3).plane is Plane.CORONAL  # a plain string is accepted
    assert SliceRef.from_axis(0, 39, geometry) == SliceRef(Plane.AXIAL, 39)
    assert SliceRef(Plane.CORONAL, 19).to_axis(geometry) == 2


@pytest.mark.parametrize(
    ("plane", "expected"), [(Plane.SAGITTAL, 30), ("coronal", 20), ("AXIAL", 40)]
)
def test_slice_count(plane: Plane | str, expected: int) -> None:
    assert slice_count(_geometry(_columns(SUP, L, P), size=(40, 30, 20)), plane) == expected


@pytest.mark.parametrize(
    ("axis", "index", "expected"),
    [
        (0, 1, lambda v: v[1, :, :]),
        (1, 2, lambda v: v[:, 2, :]),
        (2, 3, lambda v: v[:, :, 3]),
        (2, np.int64(0), lambda v: v[:, :, 0]),
    ],
)
def test_extract_slice(axis: int, index: int, expected) -> None:  # noqa: ANN001
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    got = extract_slice(volume, axis, index)
    np.testing.assert_array_equal(got, expected(volume))
    assert np.shares_memory(got, volume)


# ------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("direction", "message"),
    [
        (np.eye(2), r"direction: expected a 3x3 matrix or 9 numbers, got shape \(2, 2\)"),
        (np.eye(4), r"got shape \(4, 4\)"),
        (tuple(range(8)), r"got shape \(8,\)"),
        ([[1, 0, 0], [0, 1, 0]], r"got shape \(2, 3\)"),
        (np.diag([1.0, np.nan, 1.0]), r"direction: values must be finite"),
        (np.diag([1.0, 0.0, 1.0]), r"direction: singular matrix \(a zero column\)"),
        (_columns(L, L, SUP), r"direction: singular matrix \(columns not independent\)"),
        (_columns(L, P, (1.0, 1.0, 0.0)), r"singular matrix \(columns not independent\)"),
        ("identity", r"direction: expected a Geometry, a 3x3 matrix or 9 numbers"),
    ],
    ids=["2x2", "4x4", "8-numbers", "2x3", "nan", "zero-column", "repeated-column", "coplanar", "string"],
)
def test_plane_axes_bad_direction(direction: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plane_axes(direction)  # type: ignore[arg-type]


def test_axis_and_plane_of_bad_inputs() -> None:
    geometry = _geometry(np.eye(3))
    with pytest.raises(ValueError, match=r"plane: unknown plane 'oblique'; known: sagittal, coronal, axial"):
        axis_of("oblique", geometry)
    for axis in (3, -1, True, 1.0):
        with pytest.raises(ValueError, match=r"axis: must be 0, 1 or 2"):
            plane_of(axis, geometry)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"direction: singular"):
        plane_of(0, np.zeros((3, 3)))


def test_slice_count_bad_inputs() -> None:
    with pytest.raises(TypeError, match=r"geometry: expected a dil_core.geometry.Geometry, got ndarray"):
        slice_count(np.eye(3), Plane.AXIAL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"plane: unknown plane 'transverse'"):
        slice_count(_geometry(np.eye(3)), "transverse")


@pytest.mark.parametrize(
    ("volume", "axis", "index", "message"),
    [
        (np.zeros((2, 3)), 0, 0, r"volume: expected a 3D \(X, Y, Z\) array, got shape \(2, 3\)"),
        (np.zeros((2, 3, 4)), 3, 0, r"axis: must be 0, 1 or 2, got 3"),
        (np.zeros((2, 3, 4)), 2, 4, r"index: must be in \[0, 4\) along axis 2, got 4"),
        (np.zeros((2, 3, 4)), 0, -1, r"index: must be in \[0, 2\) along axis 0, got -1"),
        (np.zeros((2, 3, 4)), 0, 1.0, r"index: expected an integer, got 1.0"),
    ],
    ids=["2d", "axis", "too-far", "negative", "float"],
)
def test_extract_slice_bad_inputs(volume: np.ndarray, axis: int, index: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        extract_slice(volume, axis, index)


def test_slice_ref_bad_inputs() -> None:
    geometry = _geometry(np.eye(3), size=(7, 6, 5))
    with pytest.raises(ValueError, match=r"index: sagittal slice 7 does not exist; the scan has 7 sagittal"):
        SliceRef(Plane.SAGITTAL, 7).to_axis(geometry)
    with pytest.raises(ValueError, match=r"index: must be a non-negative integer, got -1"):
        SliceRef(Plane.AXIAL, -1)
    with pytest.raises(ValueError, match=r"index: must be a non-negative integer, got 2.5"):
        SliceRef(Plane.AXIAL, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"plane: unknown plane 'oblique'"):
        SliceRef("oblique", 1)  # type: ignore[arg-type]
    for text in ("sagittal 31", "slice 31", "sagittal slice -1", "sagittal slice x", None):
        with pytest.raises(ValueError, match=r"text: expected '<sagittal\|coronal\|axial> slice <index>'"):
            SliceRef.parse(text)  # type: ignore[arg-type]
