"""The methods' decisions, each against a hand-computed case; the registry and the config check."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from dil_core import round as one_round
from dil_core.config import ConfigError
from dil_core.methods import METHODS, check_config, final_mask, get_method
from dil_core.methods.refine import agreement, corrected
from tests.dil_core._sessions import config, refine_params, session, sphere, trainer


def test_registry_lists_known_names_on_a_typo() -> None:
    assert set(METHODS) == {"paper", "refine"}
    with pytest.raises(ValueError, match=r"\['paper', 'refine'\].*'refne'"):
        get_method("refne")


def test_config_check_refuses_a_rule_that_cannot_judge_the_method() -> None:
    assert check_config(config(method="refine")).name == "refine"
    assert check_config(config(stopping={"rule": "estimated"})).name == "paper"
    with pytest.raises(ConfigError, match="estimated.*refine"):
        check_config(config(method="refine", stopping={"rule": "estimated"}))


def test_paper_final_mask_hand_computed() -> None:
    shape = (6, 4, 4)
    proxy = np.zeros(shape, np.uint8)
    proxy[3] = 1  # between the drawn slices 2 and 4
    prediction = np.full(shape, 0.9, np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[2, 1:3, 1:3] = 1  # slice 4 drawn empty
    drawn = {0: frozenset({2, 4})}
    only_proxy = final_mask(proxy, prediction, labels, drawn, mode="proxy")
    assert only_proxy[3].all() and only_proxy[2].sum() == 4 and only_proxy[[0, 1, 4, 5]].sum() == 0
    both = final_mask(proxy, prediction, labels, drawn, mode="proxy+prediction")
    assert both[[0, 1, 5]].all()  # outside the drawn span: the prediction
    assert both[3].all() and both[2].sum() == 4 and both[4].sum() == 0  # drawn slices exactly as drawn
    with pytest.raises(ValueError, match="mode"):
        final_mask(proxy, None, labels, drawn, mode="union")  # type: ignore[arg-type]


def test_refine_bisects_cold_then_follows_the_prediction_and_drops_it_when_contradicted() -> None:
    image, gt = sphere()
    method = get_method("refine")
    lo, hi = 5, 18
    cold = session(image, refine_params())
    cold._start(None)
    assert method.propose(cold, rng=0, extent={0: (lo, hi)}).slices[0] == ((lo + hi) // 2,)
    warm = session(image, refine_params(refine={"trust": 0.9}))
    pred = np.zeros((16, 16, 16), np.float32)
    pred[4:12, 4:12, 4:12] = 0.9
    warm._start(pred)
    first = method.propose(warm, rng=0, extent={0: (lo, hi)})
    sections = (warm.prediction >= 0.5).sum(axis=(1, 2)) * np.isin(np.arange(24), range(lo, hi + 1))
    assert first.slices[0] == (int(np.argmax(sections)),) and first.strategy == "refine"
    k = first.slices[0][0]
    one_round.apply(warm, method, np.zeros_like(gt), {0: [k]}, trainer=trainer())  # "no target here"
    assert agreement(warm) == 0.0
    assert method.propose(warm, rng=0, extent={0: (lo, hi)}).strategy == "bisect"


def test_refine_training_sample_uses_the_final_mask() -> None:
    image, gt = sphere()
    s = session(image, refine_params(training={"weight_scheme": "exp", "weight_length": 3.0, "weight_floor": 0.2},
                                     refine={"end_steps": 3}))
    method, tr = get_method("refine"), trainer()
    one_round.begin(s, method, tr)
    one_round.apply(s, method, gt, {0: [12]}, trainer=tr)
    np.testing.assert_array_equal(method.mask(s)[12], gt[12])  # no prediction: the drawn slice is the mask
    assert tr.buffer.n_seen == 0
    losses = one_round.finish(s, method, tr)
    assert len(losses) == 3 and tr.steps == 3 and tr.buffer.n_seen == 1
    _, target, weight = tr.buffer.auxiliary[-1]
    assert target.shape == weight.shape == (16, 16, 16) and 0.5 < target.max() <= 1.0
    # floor + (1 - floor) exp(-d / length) at the far end, 12 voxels from the drawn slice
    assert weight.min() == pytest.approx(0.2 + 0.8 * np.exp(-12 / 3), abs=0.01) and weight.max() <= 1.0


def test_refine_sets_an_untrusted_prediction_aside_after_fallback_after_slices() -> None:
    image, gt = sphere()
    method = get_method("refine")
    s = session(image, refine_params(refine={"trust": 0.99, "set_aside": 0.0, "fallback_after": 2}), grid=(24, 24, 24))
    s._start(ndimage.binary_dilation(gt, iterations=1).astype(np.float32))  # close, not exact
    one_round.apply(s, method, gt, {0: [12]}, trainer=trainer())
    assert 0.0 < agreement(s) < 0.99 and corrected(s) is not None  # one slice: the prediction still counts
    one_round.apply(s, method, gt, {0: [9]}, trainer=trainer())
    assert corrected(s) is None  # two slices and still below trust: the proxy alone
    np.testing.assert_array_equal(method.mask(s)[9:13], s.proxy.mask[9:13])


def test_refine_asks_for_the_ends_when_nobody_knows_the_extent() -> None:
    from dil_core.simulate import GroundTruthOracle

    image, gt = sphere()
    method = get_method("refine")
    oracle = GroundTruthOracle(gt)
    lo, hi = oracle.target_extent(0)
    s = session(image, refine_params())
    s._start(None)
    first = one_round.propose(s, method, rng=one_round.round_rng(0, 0, 1), extent=None)
    assert first.ends == {0: ("first", "last")} and first.n_slices == 2 and first.strategy == "ends"
    labels, drawn = oracle.answer({a: v for a, v in first.slices.items() if v}, first.ends)
    assert drawn == {0: frozenset({lo, hi})}
    one_round.apply(s, method, labels, drawn, trainer=trainer(), ends=first.ends)
    assert s.extent == {0: (lo, hi)}  # known now, from the drawing
    second = one_round.propose(s, method, rng=one_round.round_rng(0, 0, 2), extent=None)
    assert second.ends == {} and second.slices[0] == ((lo + hi) // 2,)  # then bisect inside the extent
    mask = method.mask(s)
    assert not mask[:lo].any() and not mask[hi + 1 :].any()  # nothing past the ends
    # told the extent (the paper's simulated user), no ends are asked for
    told = session(image, refine_params())
    told._start(None)
    assert one_round.propose(told, method, rng=0, extent={0: (lo, hi)}).ends == {}
