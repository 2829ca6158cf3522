"""Tests for dil_core.refine: the blend of drawing and prediction, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dil_core.refine import corrected_prediction, drawn_span, keep_connected, refined_mask, soft_mask


def _line(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)


def test_soft_mask_hand_computed():
    # slices 2 and 4 drawn on axis 0 of a 7-voxel line, scale 1: inside [2, 4] w = exp(-d), outside F(X)
    proxy = _line([0, 0, 1, 1, 1, 0, 0])
    pred = _line([0.9, 0.8, 0.2, 0.2, 0.2, 0.7, 0.6])
    out = soft_mask(proxy, pred, {0: frozenset({2, 4})}, scale=1.0).ravel()
    w = math.exp(-1.0)
    np.testing.assert_allclose(out, [0.9, 0.8, 1.0, w + (1 - w) * 0.2, 1.0, 0.7, 0.6], rtol=1e-6)


def test_soft_mask_scale_and_one_sided_inputs():
    proxy = _line([1, 1, 1, 1, 1])
    pred = _line([0, 0, 0, 0, 0])
    far = soft_mask(proxy, pred, {0: frozenset({0, 4})}, scale=10.0).ravel()
    near = soft_mask(proxy, pred, {0: frozenset({0, 4})}, scale=0.5).ravel()
    assert far[2] == pytest.approx(math.exp(-0.2)) and near[2] == pytest.approx(math.exp(-4.0))
    np.testing.assert_array_equal(soft_mask(proxy, None, {0: frozenset({0})}), proxy)  # cold start: proxy
    np.testing.assert_array_equal(soft_mask(None, pred, {}), pred)  # nothing drawn: the prediction
    np.testing.assert_array_equal(soft_mask(proxy, pred, {0: frozenset()}), pred)


def test_drawn_span_is_the_box_of_drawn_slices():
    span = drawn_span((5, 4, 3), {0: frozenset({1, 3}), 2: frozenset({2}), 1: frozenset()})
    expected = np.zeros((5, 4, 3), bool)
    expected[1:4, :, 2] = True
    np.testing.assert_array_equal(span, expected)


def test_refined_mask_keeps_drawn_slices_and_drops_what_does_not_touch_them():
    shape = (9, 6, 6)
    pred = np.zeros(shape, np.float32)
    pred[2:7, 1:4, 1:4] = 0.9  # the target as predicted
    pred[0, 5, 5] = 0.9  # a stray voxel, not connected to the drawing
    labels = np.zeros(shape, np.uint8)
    labels[4, 1:5, 1:5] = 1  # the drawn slice is larger than predicted there
    mask = refined_mask(None, pred, labels, {0: frozenset({4})})
    np.testing.assert_array_equal(mask[4], labels[4])
    assert mask[2:7, 1:4, 1:4].all() and mask[0, 5, 5] == 0
    assert mask.sum() == 4 * 9 + 16
    # an empty drawn slice is "no target here": it cuts the prediction there
    empty = refined_mask(None, pred, np.zeros(shape, np.uint8), {0: frozenset({4})})
    assert not empty[4].any() and empty[2:4].sum() == 18 and empty[5:].sum() == 0  # largest component kept


def test_keep_connected_largest_without_seeds():
    m = np.zeros((6, 1, 1), bool)
    m[[0, 2, 3, 4]] = True
    np.testing.assert_array_equal(keep_connected(m, None).ravel(), [0, 0, 1, 1, 1, 0])
    seeds = np.zeros_like(m)
    seeds[0] = True
    np.testing.assert_array_equal(keep_connected(m, seeds).ravel(), [1, 0, 0, 0, 0, 0])


def test_refined_mask_with_nothing_is_empty_and_bad_inputs():
    assert not refined_mask(None, None, np.zeros((2, 2, 2)), {}).any()
    with pytest.raises(ValueError, match="scale"):
        soft_mask(None, _line([0.5]), {}, scale=0.0)
    with pytest.raises(ValueError, match="neither"):
        soft_mask(None, None, {})
    with pytest.raises(ValueError, match="differs"):
        soft_mask(_line([0, 1]), _line([0, 1, 1]), {0: frozenset({0})})


def test_corrected_prediction_carries_the_correction_to_nearby_slices():
    # the prediction: a 5x5 square on every slice; slice 0 is drawn as a 7x7 square (one pixel more all round).
    # On the ring, sdf(drawn) - sdf(pred) = 0.5 - (-0.5) = 1; at the ring's corners 0.5 - (0.5 - sqrt 2) = sqrt 2.
    # Slice j takes exp(-j / 6) of it: the side pixels flip while exp(-j/6) > 0.5 (j <= 4), the corners while
    # exp(-j/6) > (sqrt 2 - 0.5) / sqrt 2 = 0.646 (j <= 2).
    pred = np.zeros((12, 9, 9), np.float32)
    pred[:, 2:7, 2:7] = 0.9
    labels = np.zeros((12, 9, 9), np.uint8)
    labels[0, 1:8, 1:8] = 1
    out = corrected_prediction(pred, labels, {0: frozenset({0})}, length=6.0)
    assert [int(out[j].sum()) for j in range(12)] == [49, 49, 49, 45, 45] + [25] * 7
    np.testing.assert_array_equal(out[0], labels[0])
    # nothing drawn: the prediction's own 0.5 cut; a shorter length fades sooner
    np.testing.assert_array_equal(corrected_prediction(pred, labels, {}), (pred >= 0.5).astype(np.float32))
    short = corrected_prediction(pred, labels, {0: frozenset({0})}, length=1.0)
    assert [int(short[j].sum()) for j in range(3)] == [49, 25, 25]
    with pytest.raises(ValueError, match="length"):
        corrected_prediction(pred, labels, {0: frozenset({0})}, length=0.0)
    with pytest.raises(ValueError, match="shape"):
        corrected_prediction(pred[:5], labels, {0: frozenset({0})})


def test_corrected_prediction_follows_the_nearest_drawn_slice_and_averages_axes():
    pred = np.zeros((9, 8, 8), np.float32)
    pred[:, 2:6, 2:6] = 0.9
    labels = np.zeros((9, 8, 8), np.uint8)
    labels[8] = 0  # slice 8 drawn empty: "no target here", which erodes its neighbours
    labels[0, 2:6, 2:6] = 1  # slice 0 drawn as predicted: no correction
    out = corrected_prediction(pred, labels, {0: frozenset({0, 8})}, length=2.0)
    assert out[1].sum() == 16 and out[8].sum() == 0 and out[7].sum() < 16
    two = corrected_prediction(pred, labels, {0: frozenset({0, 8}), 1: frozenset({4})}, length=2.0)
    assert set(np.unique(two)) <= {0.0, 0.5, 1.0}  # the mean of two corrected masks
