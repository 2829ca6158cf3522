"""Tests for dil_core.weights: confidence maps of equations 10-12, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from dil_core.weights import WEIGHT_SCHEMES, confidence_map, distance_to_drawn

E = math.e


@pytest.mark.parametrize(
    ("shape", "drawn", "spacing", "expected_line"),
    [
        # one slice at x=1 on a 5-voxel line: distances 1, 0, 1, 2, 3
        ((5, 1, 1), {0: [1]}, None, [1, 0, 1, 2, 3]),
        # two slices: nearest wins
        ((6, 1, 1), {0: [0, 4]}, None, [0, 1, 2, 1, 0, 1]),
        # spacing 2.5 mm along axis 0
        ((4, 1, 1), {0: [3]}, (2.5, 1.0, 1.0), [7.5, 5.0, 2.5, 0.0]),
        # an empty axis entry is no slice at all
        ((3, 1, 1), {0: [2], 1: []}, None, [2, 1, 0]),
    ],
)
def test_distance_along_a_line(shape, drawn, spacing, expected_line):
    d = distance_to_drawn(shape, drawn, spacing=spacing)
    assert d.shape == shape
    np.testing.assert_allclose(d.ravel(), expected_line)


def test_distance_two_planes_hand_computed():
    # slice x=0 (axis 0) and slice y=2 (axis 1, 2 mm apart): min(x * 1, |y - 2| * 2)
    d = distance_to_drawn((4, 3, 2), {0: [0], 1: [2]}, spacing=(1.0, 2.0, 1.0))
    expected_xy = np.array([[0, 0, 0], [1, 1, 0], [2, 2, 0], [3, 2, 0]], dtype=float)
    np.testing.assert_allclose(d, np.repeat(expected_xy[:, :, None], 2, axis=2))


def test_distance_equals_euclidean_distance_transform():
    # each drawn slice covers a whole plane, so the distance is the EDT to the drawn voxels
    shape, spacing = (7, 9, 5), (0.8, 1.5, 3.0)
    drawn = {0: [1, 5], 2: [3]}
    mask = np.ones(shape, dtype=bool)
    mask[[1, 5], :, :] = False
    mask[:, :, 3] = False
    expected = ndimage.distance_transform_edt(mask, sampling=spacing)
    np.testing.assert_allclose(distance_to_drawn(shape, drawn, spacing=spacing), expected, atol=1e-12)


def test_exp_scheme_hand_computed():
    w = confidence_map((5, 1, 1), {0: [1]}, scheme="exp")
    assert w.dtype == np.float32
    np.testing.assert_allclose(w.ravel(), [1 / E, 1.0, 1 / E, E**-2, E**-3], rtol=1e-6)


def test_exp_scheme_in_millimetres():
    w = confidence_map((3, 2, 1), {1: [0]}, scheme="exp", spacing=(1.0, 0.5, 1.0))
    np.testing.assert_allclose(w[:, :, 0], [[1.0, math.exp(-0.5)]] * 3, rtol=1e-6)


@pytest.mark.parametrize(("length", "floor"), [(1.0, 0.0), (3.0, 0.0), (2.0, 0.1)])
def test_exp_scheme_length_and_floor_hand_computed(length, floor):
    # one slice at x=1: distances 1, 0, 1, 2, 3
    w = confidence_map((5, 1, 1), {0: [1]}, scheme="exp", length=length, floor=floor)
    expected = [floor + (1 - floor) * math.exp(-d / length) for d in (1, 0, 1, 2, 3)]
    np.testing.assert_allclose(w.ravel(), expected, rtol=1e-6)
    # three voxels away: the paper's exp(-3) = 0.05 becomes 0.37 with a 3-voxel length scale
    if (length, floor) == (3.0, 0.0):
        assert w.ravel()[4] == pytest.approx(1 / E, rel=1e-6)


@pytest.mark.parametrize(("omega", "on", "off"), [(1.0, 2.0, 1.0), (4.0, 5.0, 1.0), (0.5, 1.5, 1.0)])
def test_constant_scheme_hand_computed(omega, on, off):
    w = confidence_map((4, 3, 2), {0: [2], 2: [0]}, scheme="constant", omega=omega)
    expected = np.full((4, 3, 2), off)
    expected[2, :, :] = on
    expected[:, :, 0] = on
    np.testing.assert_array_equal(w, expected.astype(np.float32))


def test_none_scheme_is_ones():
    w = confidence_map((3, 4, 5), {0: [1]}, scheme="none")
    np.testing.assert_array_equal(w, np.ones((3, 4, 5), dtype=np.float32))


@pytest.mark.parametrize("scheme", sorted(WEIGHT_SCHEMES))
@pytest.mark.parametrize("drawn", [{}, {0: [], 1: [], 2: []}])
def test_nothing_drawn_gives_ones(scheme, drawn):
    w = confidence_map((3, 4, 2), drawn, scheme=scheme)
    np.testing.assert_array_equal(w, np.ones((3, 4, 2), dtype=np.float32))


def test_exp_is_non_increasing_in_distance():
    rng = np.random.default_rng(0)
    drawn = {0: [3], 1: [10]}
    d = distance_to_drawn((12, 14, 6), drawn).ravel()
    w = confidence_map((12, 14, 6), drawn).ravel()
    order = np.argsort(d, kind="stable")
    assert np.all(np.diff(w[order]) <= 0)
    # and drawn voxels carry the maximum weight 1
    idx = rng.choice(np.flatnonzero(d == 0), 5)
    np.testing.assert_array_equal(w[idx], 1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (3, 3)}, "shape"),
        ({"shape": (3, 0, 3)}, "shape"),
        ({"shape": (3.5, 3, 3)}, "shape"),
        ({"drawn": {3: [0]}}, "axis"),
        ({"drawn": {0: [4]}}, r"\[0, 4\)"),
        ({"drawn": {1: [-1]}}, r"\[0, 4\)"),
        ({"scheme": "gauss"}, "exp"),
        ({"scheme": "constant", "omega": 0.0}, "omega"),
        ({"omega": float("nan")}, "omega"),
        ({"length": 0.0}, "length"),
        ({"length": float("inf")}, "length"),
        ({"floor": 1.0}, "floor"),
        ({"floor": -0.1}, "floor"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing"),
        ({"spacing": (1.0, 1.0)}, "spacing"),
    ],
)
def test_bad_inputs(kwargs, match):
    args = {"shape": (4, 4, 4), "drawn": {0: [1]}} | kwargs
    with pytest.raises(ValueError, match=match):
        confidence_map(args.pop("shape"), args.pop("drawn"), **args)
