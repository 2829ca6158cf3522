"""Tests for dil_core.guidance: model guidance (eq 17, Algorithm 4) and what every strategy shares."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dil_core.guidance import (
    GUIDANCE_STRATEGIES,
    Proposal,
    distance_term,
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


# ---------------------------------------------------------------------------------------------- every strategy


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
