"""The one round: the start rule, the quota, a round's result, restoring from stored rounds, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dil_core import round as one_round
from dil_core.methods import get_method
from dil_core.simulate import GroundTruthOracle
from tests.dil_core._sessions import params, refine_params, session, sphere, trainer

torch.set_num_threads(1)
PAPER = {"stopping": {"quota_gamma": 12, "n_inter": 6}, "training": {"n_f": 2, "replay_m": 1, "buffer_b": 2,
                                                                     "buffer_b_star": 4}}


def test_round_rng_depends_on_seed_position_and_round_only() -> None:
    a = one_round.round_rng(0, 3, 2).random(4)
    np.testing.assert_array_equal(a, one_round.round_rng(0, 3, 2).random(4))
    assert not np.array_equal(a, one_round.round_rng(0, 3, 3).random(4))
    assert not np.array_equal(a, one_round.round_rng(0, 4, 2).random(4))
    assert not np.array_equal(a, one_round.round_rng(1, 3, 2).random(4))


def test_begin_is_cold_for_seed_scans_and_untrained_segmenters() -> None:
    image, _ = sphere()
    method, fresh = get_method("refine"), trainer()
    s = session(image, refine_params())
    assert one_round.begin(s, method, fresh) is None and s.prediction is None  # never trained: cold
    with pytest.raises(RuntimeError, match="already started"):
        one_round.begin(s, method, fresh)
    fresh.steps = 1  # as if it had trained
    seed = session(image, refine_params(), seed=True)
    assert one_round.begin(seed, method, fresh) is None  # a seed scan starts cold whatever the segmenter
    warm = session(image, refine_params())
    pred = one_round.begin(warm, method, fresh)
    assert pred is not None and pred.shape == (16, 16, 16)
    np.testing.assert_array_equal(warm.previous_prediction, pred)
    assert warm.prediction is not None and warm.prediction.shape == image.shape


def test_proposal_respects_the_quota() -> None:
    image, _ = sphere()
    s = session(image, params((0, 1), stopping={"quota_gamma": 3}, guidance={"tau": 2, "first_round": "random"}))
    p = one_round.propose(s, get_method("paper"), rng=one_round.round_rng(0, 0, 1))
    assert p.n_slices == 3 and len(p.slices[0]) == 2 and len(p.slices[1]) == 1  # planes in config order


def test_apply_propagates_trains_and_reports_new_slices() -> None:
    image, gt = sphere()
    s = session(image, params((0, 1), **PAPER))
    method, tr = get_method("paper"), trainer()
    one_round.begin(s, method, tr)
    result = one_round.apply(s, method, gt, {0: [12], 1: [10]}, trainer=tr)
    assert result.round == 1 == s.rounds and result.new == {0: (12,), 1: (10,)}
    assert result.trained and result.predicted and len(result.losses) == 2 and tr.steps == 2
    assert s.proxy is not None and s.prediction is not None
    again = one_round.apply(s, method, gt, {0: [12, 14]}, trainer=tr)
    assert again.new == {0: (14,)} and again.drawn_total == {0: 2, 1: 1}
    assert get_method("refine").after_round(s, tr).trained is False  # refine trains only at the end


def test_restore_gives_the_state_the_rounds_built() -> None:
    image, gt = sphere()
    p = refine_params()
    method, tr = get_method("refine"), trainer()
    live = session(image, p)
    one_round.begin(live, method, tr)
    rounds = [[(gt, {0: [12]})], [(gt, {0: [8, 16]})]]
    for subs in rounds:
        for labels, drawn in subs:
            one_round.apply(live, method, labels, drawn, trainer=tr)
    rebuilt = one_round.restore(session(image, p), previous_prediction=None, rounds=rounds)
    assert rebuilt.rounds == live.rounds == 2 and rebuilt.drawn == live.drawn
    np.testing.assert_array_equal(method.mask(rebuilt), method.mask(live))
    with pytest.raises(RuntimeError, match="fresh"):
        one_round.restore(rebuilt, previous_prediction=None, rounds=[])


def _drive(seed: int):
    image, gt = sphere()
    s = session(image, params((0, 1), propagation={"backend": "mci"}, **PAPER), position=2)
    method, tr = get_method("paper"), trainer(seed)
    oracle = GroundTruthOracle(gt)
    one_round.begin(s, method, tr)
    asked = []
    while s.within_budget():
        proposal = one_round.propose(s, method, rng=one_round.round_rng(seed, s.position, s.rounds + 1),
                                     extent={a: oracle.target_extent(a) for a in (0, 1)})
        req = {a: v for a, v in proposal.slices.items() if v}
        asked.append(req)
        one_round.apply(s, method, oracle.draw(req), req, trainer=tr)
    return s, asked


def test_same_seed_same_rounds() -> None:
    first, asked = _drive(0)
    again, asked2 = _drive(0)
    assert asked == asked2 and again.drawn == first.drawn and first.rounds == 6
    np.testing.assert_array_equal(get_method("paper").mask(first), get_method("paper").mask(again))
