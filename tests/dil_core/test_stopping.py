from __future__ import annotations

import numpy as np
import pytest

from dil_core.stopping import check_stop


def _masks():
    gt = np.zeros((4, 4, 4), np.uint8)
    gt[0:2] = 1  # 32 voxels
    m = np.zeros_like(gt)
    m[0:1] = 1  # 16 voxels, all inside: Dice = 32 / 48
    return gt, m


@pytest.mark.parametrize(("rho", "passed"), [(0.6, True), (0.7, False)])
def test_ground_truth_rule(rho: float, passed: bool) -> None:
    gt, m = _masks()
    d = check_stop(m, rule="ground_truth", rho=rho, ground_truth=gt)
    assert d.value == pytest.approx(2 / 3)
    assert d.passed is passed


def test_consecutive_rule_needs_previous_mask() -> None:
    gt, m = _masks()
    assert check_stop(m, rule="consecutive", rho=0.5).passed is False
    d = check_stop(m, rule="consecutive", rho=0.6, previous_mask=gt)
    assert d.value == pytest.approx(2 / 3) and d.passed


def test_estimated_rule_is_agreement_with_the_prediction() -> None:
    gt, m = _masks()
    assert check_stop(m, rule="estimated", rho=0.5).passed is False
    d = check_stop(m, rule="estimated", rho=0.7, prediction=gt * 0.8)  # thresholded at 0.5
    assert d.value == pytest.approx(2 / 3) and not d.passed


def test_accept_never_passes_by_itself() -> None:
    gt, _ = _masks()
    assert check_stop(gt, rule="accept", rho=0.1, ground_truth=gt).passed is False


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rule": "oracle", "rho": 0.5}, "known rules"),
        ({"rule": "ground_truth", "rho": 1.0}, "rho"),
        ({"rule": "ground_truth", "rho": 0.5}, "needs the ground truth"),
    ],
)
def test_bad_input(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        check_stop(np.zeros((2, 2, 2)), **kwargs)
