"""Tests for dil_core.guidance: the peer strategies (random, uniform, uncertainty, bisect, refine)."""

from __future__ import annotations

import numpy as np
import pytest

from dil_core.guidance import (
    bisect_order,
    evenly_spaced,
    propose_slices,
)

# ---------------------------------------------------------------------------------------------------- random


def test_random_stays_in_extent_and_takes_all_when_few():
    shape = (20, 5, 5)
    for seed in range(20):
        prop = propose_slices(shape=shape, axes=(0,), drawn={0: {6}}, tau=3, strategy="random",
                              extent={0: (5, 9)}, rng=seed)
        assert set(prop.slices[0]) <= {5, 7, 8, 9}
        assert len(prop.slices[0]) == 3
    prop = propose_slices(shape=shape, axes=(0,), drawn={0: {6}}, tau=10, strategy="random",
                          extent={0: (5, 9)}, rng=0)
    assert prop.slices[0] == (5, 7, 8, 9)
    np.testing.assert_array_equal(np.flatnonzero(prop.scores[0]), [5, 7, 8, 9])


def test_random_without_extent_uses_whole_axis_and_empties():
    prop = propose_slices(shape=(3, 2, 2), axes=(0, 1), drawn={1: {0, 1}}, tau=5, strategy="random", rng=0)
    assert prop.slices == {0: (0, 1, 2), 1: ()}


# --------------------------------------------------------------------------------------------------- uniform


@pytest.mark.parametrize(
    ("lo", "hi", "n", "expected"),
    [
        (2, 12, 3, (2, 7, 12)),
        (2, 12, 5, (2, 5, 7, 10, 12)),  # 4.5 and 9.5 round half up
        (2, 12, 2, (2, 12)),
        (2, 12, 1, (7,)),
        (0, 10, 4, (0, 3, 7, 10)),  # 3.33 -> 3, 6.67 -> 7
        (4, 4, 2, (4, 4)),
    ],
)
def test_evenly_spaced_hand_computed(lo, hi, n, expected):
    assert evenly_spaced(lo, hi, n) == expected


@pytest.mark.parametrize(
    ("drawn", "tau", "extent", "shape0", "expected"),
    [
        ({}, 3, (2, 12), 20, (2, 7, 12)),  # the power user's first 3 slices
        ({0: {2, 12}}, 1, (2, 12), 20, (7,)),  # the ends drawn: fill the middle
        ({0: {2, 7, 12}}, 2, (2, 12), 20, (5, 10)),  # grid 2, 5, 7, 10, 12
        ({0: {2, 8, 12}}, 1, (2, 12), 20, (5,)),  # grid 2, 5, 9, 12: 8 claims 9, 5 is missing
        ({0: {3}}, 2, (2, 12), 20, (7, 12)),  # grid 2, 7, 12: 3 claims 2
        ({0: {0}}, 3, (2, 12), 20, (2, 7, 12)),  # drawn outside the extent does not count
        ({}, 3, None, 11, (0, 5, 10)),  # no extent: the whole axis
        ({0: {1}}, 3, (0, 2), 5, (0, 2)),  # grid 0, 1, 1, 2: the repeat finds no free slice
        ({0: {7}}, 1, (7, 7), 20, ()),  # nothing left inside the extent
    ],
)
def test_uniform_hand_computed(drawn, tau, extent, shape0, expected):
    prop = propose_slices(shape=(shape0, 3, 3), axes=(0,), drawn=drawn, tau=tau, strategy="uniform",
                          extent=None if extent is None else {0: extent}, rng=0)
    assert prop.slices[0] == expected
    np.testing.assert_array_equal(np.flatnonzero(prop.scores[0]), expected)


def test_uniform_grid_point_on_drawn_slice_moves_to_nearest_free():
    # extent (0, 4), drawn {2, 3}, tau 1: grid 0, 2, 4; 2 -> 2 and 3 -> 4 (cost 1) beats 3 -> 2, 2 -> 0,
    # so grid point 0 is free and proposed
    prop = propose_slices(shape=(5, 1, 1), axes=(0,), drawn={0: {2, 3}}, tau=1, strategy="uniform",
                          extent={0: (0, 4)})
    assert prop.slices[0] == (0,)
    # extent (0, 3), drawn {0, 1}, tau 2: grid 0, 1, 2, 3 -> 2, 3
    prop = propose_slices(shape=(5, 1, 1), axes=(0,), drawn={0: {0, 1}}, tau=2, strategy="uniform",
                          extent={0: (0, 3)})
    assert prop.slices[0] == (2, 3)


# ----------------------------------------------------------------------------------------------- uncertainty


def test_uncertainty_picks_highest_entropy_and_skips_certain_slices():
    shape = (6, 2, 2)
    prediction = np.zeros(shape)
    prediction[1] = 0.5  # 4 voxels x 1 bit
    prediction[4, 0, 0] = 0.5  # 1 bit
    prediction[5] = 1.0  # certain: 0 bits
    prop = propose_slices(shape=shape, axes=(0,), drawn={}, tau=3, strategy="uncertainty",
                          prediction=prediction, rng=0)
    assert prop.slices[0] == (1, 4)  # only two slices are uncertain
    np.testing.assert_allclose(prop.scores[0], [0, 4, 0, 0, 1, 0])
    prop = propose_slices(shape=shape, axes=(0,), drawn={0: {1}}, tau=1, strategy="uncertainty",
                          prediction=prediction, rng=0)
    assert prop.slices[0] == (4,)


def test_uncertainty_breaks_ties_with_rng():
    shape = (4, 1, 1)
    prediction = np.full(shape, 0.5)
    picks = {
        propose_slices(shape=shape, axes=(0,), drawn={}, tau=1, strategy="uncertainty", prediction=prediction,
                       rng=seed).slices[0]
        for seed in range(30)
    }
    assert picks == {(0,), (1,), (2,), (3,)}


# ------------------------------------------------------------------------------------------- bisect, refine


@pytest.mark.parametrize(
    ("lo", "hi", "drawn", "n", "expected"),
    [
        (0, 20, (), 1, (10,)),  # the middle first
        (0, 20, (10,), 2, (0, 20)),  # then both ends (each closes a gap of 10)
        (0, 20, (0, 10, 20), 2, (5, 15)),  # then the middles of the widest gaps, lower first on a tie
        (0, 20, (), 5, (0, 5, 10, 15, 20)),  # five at once: evenly spaced
        (4, 9, (4, 5, 6, 7, 8, 9), 1, ()),  # nothing left
        (3, 3, (), 2, (3,)),
        (0, 10, (2,), 1, (10,)),  # the gap to the upper end (8) is wider than to the lower end (2)
        (0, 10, (30,), 1, (5,)),  # slices outside the range do not count
    ],
)
def test_bisect_order_hand_computed(lo, hi, drawn, n, expected):
    assert bisect_order(lo, hi, drawn, n) == expected


def test_bisect_strategy_builds_evenly_spaced_slices_round_by_round():
    drawn: set[int] = set()
    for expected in [(7,), (2,), (12,), (4,), (9,)]:
        prop = propose_slices(shape=(15, 2, 2), axes=(0,), drawn={0: drawn}, tau=1, strategy="bisect",
                              extent={0: (2, 12)})
        assert prop.slices[0] == expected
        drawn |= set(expected)
    assert sorted(drawn) == [2, 4, 7, 9, 12]


def test_refine_starts_at_the_largest_predicted_section_then_follows_entropy():
    shape = (10, 6, 6)
    pred = np.zeros(shape)
    pred[2:8, 1:4, 1:4] = 0.9  # the target, 9 voxels per slice
    pred[5, :, :] = 0.9  # slice 5: 36 voxels, the largest cross-section
    pred[7, 1:4, 1:4] = 0.5  # slice 7: the most uncertain
    first = propose_slices(shape=shape, axes=(0,), drawn={}, tau=1, strategy="refine", prediction=pred)
    assert first.slices[0] == (5,)
    assert first.scores[0][5] == 36 and first.scores[0][3] == 9
    nxt = propose_slices(shape=shape, axes=(0,), drawn={0: {5}}, tau=1, strategy="refine", prediction=pred)
    assert nxt.slices[0] == (7,)
    assert nxt.scores[0][5] == 0  # drawn


def test_refine_spread_keeps_the_next_slice_away_from_drawn_ones():
    pred = np.zeros((10, 2, 2))
    pred[[4, 6]] = 0.5  # 1 bit per voxel, 4 bits per slice, right beside the drawn slice 5
    pred[1] = 0.9  # H(0.9) = 0.469 bits per voxel, 1.876 per slice, 4 slices away
    kwargs = dict(shape=(10, 2, 2), axes=(0,), drawn={0: {5}}, tau=1, strategy="refine", prediction=pred)
    flat = propose_slices(**kwargs, spread=0.0)
    assert flat.slices[0] == (4,)  # the tie of 4 and 6 goes to the lower index
    assert flat.scores[0][4] == pytest.approx(4.0)
    spread = propose_slices(**kwargs, spread=2.0)
    h09 = -(0.9 * np.log2(0.9) + 0.1 * np.log2(0.1))
    assert spread.scores[0][4] == pytest.approx(4.0 * (1 - np.exp(-0.5)))  # 1.574
    assert spread.scores[0][1] == pytest.approx(4 * h09 * (1 - np.exp(-2.0)))  # 1.622
    assert spread.slices[0] == (1,)
    assert propose_slices(**{**kwargs, "drawn": {}}, spread=2.0).slices[0] == (1,)  # first slice: largest section


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "wide"])
def test_refine_spread_must_be_finite_and_not_negative(bad):
    with pytest.raises(ValueError, match="spread: expected a finite number >= 0"):
        propose_slices(shape=(4, 2, 2), axes=(0,), drawn={}, tau=1, strategy="refine",
                       prediction=np.zeros((4, 2, 2)), spread=bad)


def test_refine_without_a_prediction_bisects():
    prop = propose_slices(shape=(9, 2, 2), axes=(0,), drawn={0: {4}}, tau=1, strategy="refine",
                          extent={0: (1, 7)})
    assert prop.slices[0] == (1,)
    certain = np.zeros((9, 2, 2))  # zero entropy everywhere: nothing to score, the same fallback
    prop = propose_slices(shape=(9, 2, 2), axes=(0,), drawn={0: {4}}, tau=1, strategy="refine",
                          extent={0: (1, 7)}, prediction=certain)
    assert prop.slices[0] == (1,)
