"""Tests for dil_core.simulate: the ground-truth oracle and random target slices."""

from __future__ import annotations

import numpy as np
import pytest

from dil_core.simulate import GroundTruthOracle, random_target_slices


def _gt() -> np.ndarray:
    """(5, 4, 6) label map: label 1 at (1, 1, 2), (1, 2, 2), (2, 1, 3); label 2 at (3, 2, 4)."""
    gt = np.zeros((5, 4, 6), dtype=np.uint8)
    gt[1, 1, 2] = 1
    gt[1, 2, 2] = 1
    gt[2, 1, 3] = 1
    gt[3, 2, 4] = 2
    return gt


FG = {(1, 1, 2), (1, 2, 2), (2, 1, 3), (3, 2, 4)}


@pytest.mark.parametrize(
    ("requested", "expected_voxels"),
    [
        ({0: [1]}, {(1, 1, 2), (1, 2, 2)}),
        ({0: [1, 3]}, {(1, 1, 2), (1, 2, 2), (3, 2, 4)}),
        ({1: [1]}, {(1, 1, 2), (2, 1, 3)}),
        ({2: [4]}, {(3, 2, 4)}),
        ({0: [0, 4]}, set()),  # empty slices come back empty
        ({0: [1], 2: [2]}, {(1, 1, 2), (1, 2, 2)}),  # crossing slices agree: union is the ground truth
        ({0: [2], 1: [2]}, {(2, 1, 3), (1, 2, 2), (3, 2, 4)}),
        ({0: range(5)}, FG),
        ({}, set()),
        ({1: []}, set()),
    ],
)
def test_draw_returns_exactly_the_requested_slices(requested, expected_voxels):
    labels = GroundTruthOracle(_gt()).draw(requested)
    assert labels.dtype == np.uint8
    assert labels.shape == (5, 4, 6)
    assert set(map(tuple, np.argwhere(labels))) == expected_voxels
    assert set(np.unique(labels)) <= {0, 1}


def test_draw_agrees_with_ground_truth_on_every_requested_slice():
    gen = np.random.default_rng(0)
    gt = (gen.random((7, 8, 9)) > 0.6).astype(np.uint8)
    oracle = GroundTruthOracle(gt)
    requested = {0: {1, 5}, 1: {0, 7}, 2: {4}}
    labels = oracle.draw(requested)
    covered = np.zeros(gt.shape, dtype=bool)
    covered[[1, 5]] = True
    covered[:, [0, 7]] = True
    covered[:, :, 4] = True
    np.testing.assert_array_equal(labels[covered], gt[covered])
    assert not labels[~covered].any()


@pytest.mark.parametrize(
    ("axis", "slices", "extent"),
    [
        (0, {1, 2, 3}, (1, 3)),
        (1, {1, 2}, (1, 2)),
        (2, {2, 3, 4}, (2, 4)),
    ],
)
def test_target_slices_and_extent_hand_computed(axis, slices, extent):
    oracle = GroundTruthOracle(_gt())
    assert oracle.target_slices(axis) == frozenset(slices)
    assert oracle.target_extent(axis) == extent


def test_target_slices_with_a_gap():
    gt = np.zeros((6, 2, 2), dtype=bool)
    gt[[1, 4], 0, 0] = True
    oracle = GroundTruthOracle(gt)
    assert oracle.target_slices(0) == frozenset({1, 4})
    assert oracle.target_extent(0) == (1, 4)
    assert oracle.target_slice_counts() == {0: 2, 1: 1, 2: 1}


@pytest.mark.parametrize(
    ("requested", "labor", "fraction"),
    [
        ({0: [1]}, {0: frozenset({1})}, 1 / 3),
        ({0: [1, 2, 3]}, {0: frozenset({1, 2, 3})}, 1.0),  # full contouring on one plane
        ({0: [1], 1: [1]}, {0: frozenset({1}), 1: frozenset({1})}, 1 / 3 + 1 / 2),
        ({0: [0]}, {0: frozenset({0})}, 1 / 3),  # empty requested slice is reviewed labor
        ({2: [0, 5, 3]}, {2: frozenset({0, 3, 5})}, 3 / 3),
        ({}, {}, 0.0),
    ],
)
def test_labor_counts_every_requested_slice(requested, labor, fraction):
    oracle = GroundTruthOracle(_gt())
    assert oracle.labor_of(requested) == labor
    assert oracle.labor_fraction(requested) == pytest.approx(fraction)


def test_multilabel_and_float_ground_truth_are_foreground_above_zero():
    gt = _gt().astype(np.float32) * 0.5
    oracle = GroundTruthOracle(gt)
    assert set(map(tuple, np.argwhere(oracle.draw({0: range(5)})))) == FG
    assert oracle.mask.dtype == bool


def test_oracle_copies_its_input():
    gt = _gt()
    oracle = GroundTruthOracle(gt)
    gt[0, 0, 0] = 1
    assert not oracle.draw({0: [0]}).any()
    with pytest.raises(ValueError):
        oracle.mask[0, 0, 0] = True


@pytest.mark.parametrize(
    ("ground_truth", "match"),
    [
        (np.ones((3, 3)), r"ground_truth: expected an \(X, Y, Z\) array, got shape \(3, 3\)"),
        (np.zeros((2, 2, 2)), r"ground_truth: no foreground voxel"),
        (np.full((2, 2, 2), np.nan), r"ground_truth: contains NaN"),
        (-np.ones((2, 2, 2), dtype=int), r"ground_truth: label values must be >= 0, got minimum -1"),
        (np.full((2, 2, 2), "a"), r"ground_truth: expected a numeric or bool label map"),
    ],
)
def test_oracle_bad_ground_truth(ground_truth, match):
    with pytest.raises(ValueError, match=match):
        GroundTruthOracle(ground_truth)
    with pytest.raises(ValueError, match=match):
        random_target_slices(ground_truth, (0,), 1, rng=0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda o: o.draw({3: [0]}), r"requested: axis must be 0, 1 or 2, got 3"),
        (lambda o: o.draw({0: [5]}), r"requested\[0\]: indices must be in \[0, 4\], got \[5\]"),
        (lambda o: o.draw({1: [-1]}), r"requested\[1\]: indices must be in \[0, 3\], got \[-1\]"),
        (lambda o: o.draw({0: [1.0]}), r"requested\[0\]: expected integer slice indices"),
        (lambda o: o.draw([0]), r"requested: expected a mapping"),
        (lambda o: o.labor_of({0: [9]}), r"requested\[0\]: indices must be in"),
        (lambda o: o.labor_fraction({True: [0]}), r"requested: axis must be 0, 1 or 2, got True"),
        (lambda o: o.target_slices(3), r"axis: axis must be 0, 1 or 2, got 3"),
        (lambda o: o.target_extent(-1), r"axis: axis must be 0, 1 or 2, got -1"),
    ],
)
def test_oracle_bad_requests(call, match):
    with pytest.raises(ValueError, match=match):
        call(GroundTruthOracle(_gt()))


# ------------------------------------------------------------------------------------------ random_target_slices


def test_random_target_slices_are_target_slices():
    gt = _gt()
    for seed in range(20):
        out = random_target_slices(gt, (0, 2), 2, rng=seed)
        assert set(out) == {0, 2}
        assert len(out[0]) == 2 and out[0] <= {1, 2, 3}
        assert len(out[2]) == 2 and out[2] <= {2, 3, 4}


@pytest.mark.parametrize(
    ("axes", "k", "expected"),
    [
        ((1,), 5, {1: frozenset({1, 2})}),  # fewer target slices than k: all of them
        ((0, 1, 2), 3, {0: frozenset({1, 2, 3}), 1: frozenset({1, 2}), 2: frozenset({2, 3, 4})}),
        ((2,), 0, {2: frozenset()}),
    ],
)
def test_random_target_slices_saturate(axes, k, expected):
    assert random_target_slices(_gt(), axes, k, rng=0) == expected


def test_random_target_slices_same_seed_same_result():
    gen = np.random.default_rng(3)
    gt = (gen.random((20, 20, 20)) > 0.9).astype(np.uint8)
    a = random_target_slices(gt, (0, 1), 4, rng=11)
    b = random_target_slices(gt, (0, 1), 4, rng=11)
    assert a == b
    seen = {tuple(sorted(random_target_slices(gt, (0,), 4, rng=s)[0])) for s in range(10)}
    assert len(seen) > 1


@pytest.mark.parametrize(
    ("axes", "k", "match"),
    [
        ((0, 0), 1, r"axes: expected 1-3 unique axes"),
        ((), 1, r"axes: expected 1-3 unique axes"),
        ((3,), 1, r"axes: axis must be 0, 1 or 2, got 3"),
        (5, 1, r"axes: expected a sequence"),
        ((0,), -1, r"k: expected an integer >= 0, got -1"),
        ((0,), 1.5, r"k: expected an integer >= 0, got 1.5"),
    ],
)
def test_random_target_slices_bad_inputs(axes, k, match):
    with pytest.raises(ValueError, match=match):
        random_target_slices(_gt(), axes, k, rng=0)


# ----------------------------------------------------------------------------------------------- real data


@pytest.mark.shared
def test_oracle_on_a_hippocampus_scan(shared_data):
    sitk = pytest.importorskip("SimpleITK")
    img = sitk.ReadImage(str(shared_data / "hippocampus" / "labels" / "hippocampus_001.nii.gz"))
    gt = np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0))
    oracle = GroundTruthOracle(gt)
    for axis in (0, 1, 2):
        targets = oracle.target_slices(axis)
        lo, hi = oracle.target_extent(axis)
        assert min(targets) == lo and max(targets) == hi
        # drawing every target slice on one plane is the whole ground truth at labor 1.0
        np.testing.assert_array_equal(oracle.draw({axis: targets}), (gt > 0).astype(np.uint8))
        assert oracle.labor_fraction({axis: targets}) == pytest.approx(1.0)
    picks = random_target_slices(gt, (1, 2), 3, rng=0)
    assert all(len(v) == 3 and v <= oracle.target_slices(a) for a, v in picks.items())
