"""Tests for dil_core.guidance: model guidance (eq 17, Algorithm 4) and the peer strategies."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dil_core.guidance import (
    GUIDANCE_STRATEGIES,
    Proposal,
    bisect_order,
    distance_term,
    evenly_spaced,
    propose_slices,
    residual_map,
)

# ------------------------------------------------------------------------------------------ hand-computed maps


@pytest.mark.parametrize(
    ("shape", "drawn", "spacing", "expected"),
    [
        # one drawn slice at x=0: d = [0, 1, 2] along x, max 2
        ((3, 1, 1), {0: {0}}, None, np.array([0.0, 0.5, 1.0]).reshape(3, 1, 1)),
        # x=0 drawn (spacing 2) and y=2 drawn: d(i, j) = min(2i, |j - 2|), max 2
        (
            (3, 3, 1),
            {0: {0}, 1: {2}},
            (2.0, 1.0, 1.0),
            np.array([[0, 0, 0], [1, 0.5, 0], [1, 0.5, 0]], dtype=float).reshape(3, 3, 1),
        ),
        # nothing drawn: d2 = 1 everywhere
        ((2, 2, 2), {}, None, np.ones((2, 2, 2))),
        ((2, 2, 2), {1: set()}, None, np.ones((2, 2, 2))),
        # every voxel on a drawn slice: d2 = 0
        ((2, 1, 1), {0: {0, 1}}, None, np.zeros((2, 1, 1))),
    ],
)
def test_distance_term_hand_computed(shape, drawn, spacing, expected):
    np.testing.assert_allclose(distance_term(shape, drawn, spacing=spacing), expected)


def _tiny():
    """(3, 2, 2) volume, slice x=0 drawn, proxy empty, prediction 0.8 at (1,0,0) and 0.4 at (2,1,1)."""
    proxy = np.zeros((3, 2, 2))
    prediction = np.zeros((3, 2, 2))
    prediction[1, 0, 0] = 0.8
    prediction[2, 1, 1] = 0.4
    return proxy, prediction, {0: {0}}


def test_residual_map_hand_computed():
    proxy, prediction, drawn = _tiny()
    r = residual_map(proxy, prediction, drawn, w1=0.5)
    # d2 = [0, 0.5, 1] along x; r = 0.5 * d1 + 0.5 * d2
    expected = np.zeros((3, 2, 2))
    expected[1] = 0.25
    expected[2] = 0.5
    expected[1, 0, 0] += 0.4
    expected[2, 1, 1] += 0.2
    np.testing.assert_allclose(r, expected)


@pytest.mark.parametrize(
    ("axis", "w1", "expected"),
    [
        # axis 0: x=0 drawn -> 0; x=1: 0.5*0.8 + 0.5*0.5*4 = 1.4; x=2: 0.5*0.4 + 0.5*1*4 = 2.2
        (0, 0.5, [0.0, 1.4, 2.2]),
        # axis 1: y=0: 0.5*0.8 + 0.5*(0+0.5+1)*2 = 1.9; y=1: 0.5*0.4 + 1.5 = 1.7
        (1, 0.5, [1.9, 1.7]),
        (2, 0.5, [1.9, 1.7]),
        # w1 = 1: only |proxy - F|
        (0, 1.0, [0.0, 0.8, 0.4]),
        (1, 1.0, [0.8, 0.4]),
        # w1 = 0: only the distance term (d2 sums 0, 2, 4 on x = 0, 1, 2)
        (0, 0.0, [0.0, 2.0, 4.0]),
        (2, 0.0, [3.0, 3.0]),
    ],
)
def test_model_scores_are_per_slice_residual_sums(axis, w1, expected):
    proxy, prediction, drawn = _tiny()
    prop = propose_slices(
        shape=(3, 2, 2), axes=(axis,), drawn=drawn, tau=1, proxy=proxy, prediction=prediction, w1=w1, rng=0
    )
    np.testing.assert_allclose(prop.scores[axis], expected)
    assert prop.strategy == "model"
    assert len(prop.slices[axis]) == 1
    assert expected[prop.slices[axis][0]] > 0


def test_model_never_chooses_zero_residual_slices():
    shape = (8, 4, 4)
    proxy = np.zeros(shape)
    prediction = np.zeros(shape)
    prediction[3, :2, :] = 1.0
    prediction[5, 0, 0] = 0.3
    for seed in range(20):
        prop = propose_slices(
            shape=shape, axes=(0, 1, 2), drawn={}, tau=5, proxy=proxy, prediction=prediction, w1=1.0, rng=seed
        )
        assert prop.slices[0] == (3, 5)  # only two slices have residual: fewer than tau come back
        assert set(prop.slices[1]) <= {0, 1}
        assert len(prop.slices[2]) == 4


def test_model_all_zero_residual_returns_nothing():
    shape = (4, 3, 2)
    same = np.full(shape, 0.7)
    prop = propose_slices(shape=shape, axes=(0, 2), drawn={}, tau=2, proxy=same, prediction=same, w1=1.0, rng=0)
    assert prop.slices == {0: (), 2: ()}
    assert prop.n_slices == 0


def test_model_samples_proportionally_to_residual():
    shape = (2, 1, 1)
    proxy = np.zeros(shape)
    prediction = np.array([0.75, 0.25]).reshape(shape)
    gen = np.random.default_rng(123)
    picks = [
        propose_slices(shape=shape, axes=(0,), drawn={}, tau=1, proxy=proxy, prediction=prediction, w1=1.0, rng=gen)
        .slices[0][0]
        for _ in range(2000)
    ]
    share = picks.count(0) / len(picks)
    assert 0.71 < share < 0.79  # expected 0.75; binomial sd ~0.01


@pytest.mark.parametrize("strategy", sorted(GUIDANCE_STRATEGIES))
def test_drawn_slices_never_reproposed(strategy):
    shape = (10, 9, 8)
    gen = np.random.default_rng(5)
    proxy = (gen.random(shape) > 0.5).astype(float)
    prediction = gen.random(shape)
    drawn = {0: {0, 3, 4, 9}, 1: {2}, 2: set(range(7))}
    for seed in range(10):
        prop = propose_slices(
            shape=shape, axes=(0, 1, 2), drawn=drawn, tau=3, strategy=strategy,
            proxy=proxy, prediction=prediction, rng=seed,
        )
        for axis in (0, 1, 2):
            assert not set(prop.slices[axis]) & drawn[axis]
            assert all(prop.scores[axis][i] == 0 for i in drawn[axis])
            assert list(prop.slices[axis]) == sorted(set(prop.slices[axis]))
            assert len(prop.slices[axis]) == min(3, shape[axis] - len(drawn[axis]))
            assert prop.scores[axis].shape == (shape[axis],)


@pytest.mark.parametrize("strategy", sorted(GUIDANCE_STRATEGIES))
def test_same_seed_same_proposal(strategy):
    shape = (12, 10, 8)
    gen = np.random.default_rng(1)
    proxy = (gen.random(shape) > 0.5).astype(float)
    prediction = np.round(gen.random(shape), 1)  # many ties for "uncertainty"
    kwargs = dict(shape=shape, axes=(1, 2), drawn={1: {4}}, tau=3, strategy=strategy, proxy=proxy,
                  prediction=prediction)
    a = propose_slices(**kwargs, rng=42)
    b = propose_slices(**kwargs, rng=42)
    assert a.slices == b.slices
    for axis in (1, 2):
        np.testing.assert_array_equal(a.scores[axis], b.scores[axis])


@pytest.mark.parametrize("strategy", ["model", "random"])
def test_stochastic_strategies_vary_with_seed(strategy):
    shape = (30, 4, 4)
    proxy = np.zeros(shape)
    prediction = np.full(shape, 0.5)
    seen = {
        propose_slices(shape=shape, axes=(0,), drawn={}, tau=2, strategy=strategy, proxy=proxy,
                       prediction=prediction, rng=seed).slices[0]
        for seed in range(10)
    }
    assert len(seen) > 1


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


def test_extent_restricts_every_strategy():
    shape = (10, 3, 3)
    prediction = np.full(shape, 0.5)
    proxy = np.zeros(shape)
    for strategy in GUIDANCE_STRATEGIES:
        prop = propose_slices(shape=shape, axes=(0,), drawn={}, tau=4, strategy=strategy, proxy=proxy,
                              prediction=prediction, extent={0: (3, 5)}, rng=0)
        assert set(prop.slices[0]) == {3, 4, 5}, strategy


def test_proposal_to_dict_is_json():
    proxy, prediction, drawn = _tiny()
    prop = propose_slices(shape=(3, 2, 2), axes=(0, 1), drawn=drawn, tau=1, proxy=proxy, prediction=prediction,
                          rng=0)
    record = json.loads(json.dumps(prop.to_dict()))
    assert record["strategy"] == "model"
    assert record["slices"]["0"] == list(prop.slices[0])
    np.testing.assert_allclose(record["scores"]["0"], [0.0, 1.4, 2.2])
    assert isinstance(prop, Proposal)


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


# ------------------------------------------------------------------------------------------------ bad inputs

_OK = dict(shape=(4, 3, 2), axes=(0, 1), drawn={0: {1}}, tau=1, proxy=np.zeros((4, 3, 2)),
           prediction=np.zeros((4, 3, 2)))


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"strategy": "best"}, r"unknown guidance strategy 'best'.*'model'.*'random'.*'uncertainty'.*'uniform'"),
        ({"proxy": None, "prediction": None}, r"'model' needs proxy and prediction"),
        ({"proxy": None}, r"'model' needs proxy, got None"),
        ({"strategy": "uncertainty", "prediction": None}, r"'uncertainty' needs prediction"),
        ({"shape": (4, 3)}, r"shape: expected 3 positive ints"),
        ({"shape": (4, 0, 2)}, r"shape: expected 3 positive ints"),
        ({"axes": (0, 0)}, r"axes: expected 1-3 unique axes"),
        ({"axes": (3,)}, r"axes: expected 1-3 unique axes"),
        ({"axes": ()}, r"axes: expected 1-3 unique axes"),
        ({"tau": 0}, r"tau: expected an integer >= 1, got 0"),
        ({"tau": 1.5}, r"tau: expected an integer >= 1, got 1.5"),
        ({"tau": True}, r"tau: expected an integer >= 1, got True"),
        ({"w1": 1.5}, r"w1: expected a number in \[0, 1\], got 1.5"),
        ({"w1": float("nan")}, r"w1: expected a number in \[0, 1\]"),
        ({"drawn": {0: {4}}}, r"drawn\[0\]: indices must be in \[0, 3\], got \[4\]"),
        ({"drawn": {0: {-1}}}, r"drawn\[0\]: indices must be in \[0, 3\], got \[-1\]"),
        ({"drawn": {3: {0}}}, r"drawn: axis must be 0, 1 or 2, got 3"),
        ({"drawn": {0: {1.5}}}, r"drawn\[0\]: expected integer slice indices"),
        ({"drawn": [1]}, r"drawn: expected a mapping"),
        ({"proxy": np.zeros((4, 3, 3))}, r"proxy: shape \(4, 3, 3\) differs from the volume shape \(4, 3, 2\)"),
        ({"prediction": np.full((4, 3, 2), 1.5)}, r"prediction: values must be in \[0, 1\], got range \[1.5, 1.5\]"),
        ({"prediction": np.full((4, 3, 2), np.nan)}, r"prediction: contains NaN"),
        ({"proxy": np.zeros((4, 3))}, r"proxy: expected an \(X, Y, Z\) array"),
        ({"spacing": (1.0, -1.0, 1.0)}, r"spacing: expected 3 positive finite numbers"),
        ({"spacing": (1.0, 1.0)}, r"spacing: expected 3 positive finite numbers"),
        ({"extent": {0: (3, 1)}}, r"extent\[0\]: expected 0 <= lo <= hi <= 3, got \(3, 1\)"),
        ({"extent": {1: (0, 3)}}, r"extent\[1\]: expected 0 <= lo <= hi <= 2, got \(0, 3\)"),
        ({"extent": {0: (1,)}}, r"extent\[0\]: expected \(lo, hi\) integers"),
        ({"extent": {5: (0, 1)}}, r"extent: axis must be 0, 1 or 2, got 5"),
    ],
)
def test_propose_slices_bad_inputs(override, match):
    with pytest.raises(ValueError, match=match):
        propose_slices(**{**_OK, **override})


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: distance_term((2, 2), {}), r"shape"),
        (lambda: distance_term((2, 2, 2), {0: {2}}), r"drawn\[0\]: indices must be in \[0, 1\]"),
        (lambda: distance_term((2, 2, 2), {}, spacing=(0, 1, 1)), r"spacing"),
        (lambda: residual_map(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), {}), r"prediction: shape"),
        (lambda: residual_map(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), {}, w1=-0.1), r"w1"),
        (lambda: residual_map(-np.ones((2, 2, 2)), np.zeros((2, 2, 2)), {}), r"proxy: values must be in"),
        (lambda: evenly_spaced(5, 4, 2), r"lo must be <= hi"),
        (lambda: evenly_spaced(1, 4, 0), r"n must be >= 1"),
    ],
)
def test_building_blocks_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()
