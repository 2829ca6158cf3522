"""Tests for dil_core.guidance: bad inputs of propose_slices and of the building blocks."""

from __future__ import annotations

import numpy as np
import pytest

from dil_core.guidance import (
    distance_term,
    evenly_spaced,
    propose_slices,
    residual_map,
)

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
