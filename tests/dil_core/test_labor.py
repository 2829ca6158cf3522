from __future__ import annotations

import numpy as np
import pytest

from dil_core.labor import ScanLabor, cumulative_labor, labor_fraction, target_slice_counts


def _box() -> np.ndarray:
    m = np.zeros((10, 8, 6), np.uint8)
    m[2:7, 1:3, 0:6] = 1  # 5 slices on axis 0, 2 on axis 1, 6 on axis 2
    return m


def test_target_slice_counts_hand_computed() -> None:
    assert target_slice_counts(_box()) == {0: 5, 1: 2, 2: 6}
    assert target_slice_counts(np.zeros((3, 3, 3))) == {0: 0, 1: 0, 2: 0}


@pytest.mark.parametrize(
    ("drawn", "targets", "expected"),
    [
        ({0: {1, 2}}, {0: 4}, 0.5),
        ({0: [1], 1: [3, 4]}, {0: 4, 1: 8}, 0.25 + 0.25),
        ({0: 3, 1: 0}, {0: 6}, 0.5),  # counts instead of sets; an empty axis needs no target count
        ({0: set(range(17)), 1: set(range(45))}, {0: 17, 1: 45}, 2.0),  # full contouring on two planes
        ({}, {}, 0.0),
        ({0: [1, 2, 3, 4, 5, 6], 1: [1, 2, 3, 4, 5, 6]}, {0: 23, 1: 43}, 6 / 23 + 6 / 43),  # paper: ~38% at 6+6
    ],
)
def test_labor_fraction_table(drawn, targets, expected) -> None:
    assert labor_fraction(drawn, targets) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("drawn", "targets", "match"),
    [({0: [1]}, {}, "axis 0"), ({0: [1]}, {0: 0}, "positive"), ({1: -1}, {1: 3}, ">= 0")],
)
def test_labor_fraction_bad_input(drawn, targets, match) -> None:
    with pytest.raises(ValueError, match=match):
        labor_fraction(drawn, targets)


def test_target_slice_counts_bad_input() -> None:
    with pytest.raises(ValueError, match="3D"):
        target_slice_counts(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="axis"):
        target_slice_counts(np.zeros((3, 3, 3)), axes=(3,))


def test_cumulative_labor_hand_computed() -> None:
    a = ScanLabor("a", {0: 2, 1: 2}, {0: 10, 1: 20})  # 0.2 + 0.1 = 0.3
    b = ScanLabor("b", {0: 4, 1: 0}, {0: 10, 1: 10})  # 0.4
    assert a.fraction == pytest.approx(0.3)
    total = cumulative_labor([a, b])
    assert total.scans == 2
    assert total.drawn == {0: 6, 1: 2}
    assert total.target_slices == {0: 20, 1: 30}
    assert total.mean_fraction == pytest.approx(0.35)
    assert total.pooled_fraction == pytest.approx(6 / 20 + 2 / 30)
    empty = cumulative_labor([])
    assert empty.scans == 0 and empty.mean_fraction == 0.0
