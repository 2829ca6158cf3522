"""The scan's state: checks at the door, what a change does, what a change clears."""

from __future__ import annotations

import numpy as np
import pytest

from dil_core.session import SessionParams
from tests.dil_core._sessions import params, session, sphere


def test_params_bad_input() -> None:
    good = params((0,)).__dict__
    with pytest.raises(ValueError, match="axes"):
        SessionParams(**{**good, "axes": (0, 0)})
    with pytest.raises(ValueError, match="axes"):
        SessionParams(**{**good, "axes": (3,)})
    with pytest.raises(ValueError, match="blend_scale"):
        SessionParams(**{**good, "blend_scale": 0.0})
    with pytest.raises(TypeError):
        SessionParams(axes=(0,))  # no defaults of its own: the config's are the only ones


def test_session_bad_input() -> None:
    image, gt = sphere()
    s = session(image, params((0,)))
    with pytest.raises(ValueError, match="shape"):
        s._add_labels(gt[:-1], {0: [3]})
    with pytest.raises(ValueError, match="outside"):
        s._add_labels(gt, {0: [99]})
    with pytest.raises(ValueError, match="3D"):
        session(image[0], params((0,)))


def test_labels_count_new_slices_and_later_drawings_win() -> None:
    image, gt = sphere()
    s = session(image, params((0, 1)))
    assert s._add_labels(gt, {0: [10, 12]}) == {0: frozenset({10, 12})}
    s.derived["mask"] = "stale"
    redrawn = np.zeros_like(gt)
    assert s._add_labels(redrawn, {0: [12, 14], 1: [11]}) == {0: frozenset({14}), 1: frozenset({11})}
    assert s.derived == {}  # every change clears what methods derived from the state
    assert s.n_drawn == 4 and not s.labels[12].any() and s.labels[10].any()
    on = s.drawn_voxels()
    assert on[10].all() and on[:, 11].all() and not on[5, 5, 5]
    assert s.labor({0: 20, 1: 10}) == pytest.approx(3 / 20 + 1 / 10)
