from __future__ import annotations

import numpy as np
import pytest

from dil_core.metrics import dice


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1, 1, 0, 0], [1, 0, 0, 0], 2 / 3),
        ([1, 1, 0, 0], [0, 0, 1, 1], 0.0),
        ([0, 2, 3, 0], [0, 1, 1, 0], 1.0),
        ([0, 0], [0, 0], 1.0),
    ],
)
def test_dice_table(a, b, expected) -> None:
    assert dice(np.array(a), np.array(b)) == pytest.approx(expected)


def test_dice_bad_input() -> None:
    with pytest.raises(ValueError, match="same shape"):
        dice(np.zeros(3), np.zeros(4))
    assert dice(np.zeros(3), np.zeros(3), empty=0.0) == 0.0
