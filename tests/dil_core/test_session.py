from __future__ import annotations

import numpy as np
import pytest
import torch

from dil_core.models import build_segmenter
from dil_core.preprocess import fit_preprocessor
from dil_core.replay import ReplayBuffer
from dil_core.session import ScanSession, SessionParams, final_mask, run_scan, run_stream
from dil_core.simulate import GroundTruthOracle
from dil_core.stopping import check_stop
from dil_core.training import Trainer

torch.set_num_threads(1)


def _sphere(shape=(24, 24, 24), radius=7.0, seed=0):
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = [(s - 1) / 2 for s in shape]
    gt = ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= radius**2).astype(np.uint8)
    rng = np.random.default_rng(seed)
    image = (100 + 80 * gt + rng.normal(0, 10, shape)).astype(np.float32)
    return image, gt


def _trainer(seed=0):
    model = build_segmenter("unet", channels=(4, 8), seed=seed)
    return Trainer(model, ReplayBuffer(2, 4, rng=seed), lr=3e-3, device="cpu", rng=seed)


def test_final_mask_hand_computed() -> None:
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


def test_params_and_labels_bad_input() -> None:
    with pytest.raises(ValueError, match="axes"):
        SessionParams(axes=(0, 0))
    with pytest.raises(ValueError, match="axes"):
        SessionParams(axes=(3,))
    image, gt = _sphere()
    s = ScanSession(image, preprocessing=fit_preprocessor(image, grid=(16, 16, 16)), params=SessionParams(axes=(0,)))
    with pytest.raises(ValueError, match="shape"):
        s.add_labels(gt[:-1], {0: [3]})
    with pytest.raises(ValueError, match="outside"):
        s.add_labels(gt, {0: [99]})
    with pytest.raises(RuntimeError, match="update_proxy"):
        s.training_sample()
    with pytest.raises(ValueError, match="3D"):
        ScanSession(image[0], preprocessing=fit_preprocessor(image, grid=(16, 16, 16)), params=SessionParams(axes=(0,)))


def test_proposal_respects_the_quota() -> None:
    image, gt = _sphere()
    params = SessionParams(axes=(0, 1), tau=2, quota_gamma=3, first_round="random")
    s = ScanSession(image, preprocessing=fit_preprocessor(image, grid=(16, 16, 16)), params=params)
    p = s.propose(rng=0)
    assert sum(len(v) for v in p.slices.values()) == 3


def _run(seed: int):
    image, gt = _sphere()
    params = SessionParams(axes=(0, 1), tau=1, quota_gamma=12, n_inter=6, rho=0.8, n_f=2, m=1, backend="mci")
    session = ScanSession(image, preprocessing=fit_preprocessor(image, grid=(16, 16, 16)), params=params)
    oracle = GroundTruthOracle(gt)
    extent = {a: oracle.target_extent(a) for a in (0, 1)}
    records = []
    run_scan(
        session, _trainer(seed), oracle.draw,
        stop=lambda s: check_stop(s.mask(), rule="ground_truth", rho=0.8, ground_truth=gt).passed,
        rng=seed, extent=extent, on_round=lambda s, r: records.append(r),
    )
    return session, records, gt


def test_run_scan_reaches_rho_on_a_sphere_and_is_reproducible() -> None:
    session, records, gt = _run(0)
    assert check_stop(session.mask(), rule="ground_truth", rho=0.8, ground_truth=gt).passed
    assert session.n_drawn <= 12 and session.rounds == len(records) >= 1
    assert all(r.losses for r in records) and records[-1].drawn_total == {a: len(v) for a, v in session.drawn.items()}
    again, records2, _ = _run(0)
    assert again.drawn == session.drawn
    assert [r.requested for r in records2] == [r.requested for r in records]


def test_run_stream_fixes_f_prev_per_scan() -> None:
    image, gt = _sphere()
    params = SessionParams(axes=(0, 1), tau=1, quota_gamma=6, n_inter=2, n_f=1, m=1, backend="sdf")
    oracle = GroundTruthOracle(gt)
    extent = {a: oracle.target_extent(a) for a in (0, 1)}
    prep = fit_preprocessor(image, grid=(16, 16, 16))
    never = lambda s: False  # noqa: E731
    sessions = run_stream(
        [("a", image, prep, oracle.draw, never, extent), ("b", image, prep, oracle.draw, never, extent)],
        _trainer(1), params, rng=1,
    )
    assert sessions[0].previous_prediction is None  # cold start: no F_prev
    assert sessions[1].previous_prediction is not None and sessions[1].previous_prediction.shape == (16, 16, 16)
    assert all(s.rounds == 2 for s in sessions)


# -- method "refine" -------------------------------------------------------------------------------------------------


def _refine_params(**kw):
    base = dict(axes=(0,), tau=1, quota_gamma=24, n_inter=24, rho=0.8, backend="sdf-aligned", method="refine",
                strategy="refine", first_round="bisect", end_steps=60, resample_every=4, m=1, lambda_l=0.5,
                weight_scheme="none")
    return SessionParams(**(base | kw))


def _gt_stop(gt, rho=0.8):
    return lambda s: check_stop(s.mask(), rule="ground_truth", rho=rho, ground_truth=gt).passed


def test_refine_stream_learns_and_the_next_scan_costs_nothing() -> None:
    # two spheres of the same kind: the first is drawn slice by slice (cold start, no training during the
    # scan), then the segmenter trains once on its final mask; the second one's prediction passes as it is
    image, gt = _sphere(seed=0)
    image2, gt2 = _sphere(seed=1)
    prep = fit_preprocessor(image, grid=(16, 16, 16))
    o1, o2 = GroundTruthOracle(gt), GroundTruthOracle(gt2)
    trainer = _trainer(0)
    sessions = run_stream(
        [("a", image, prep, o1.draw, _gt_stop(gt), {0: o1.target_extent(0)}),
         ("b", image2, prep, o2.draw, _gt_stop(gt2), {0: o2.target_extent(0)})],
        trainer, _refine_params(), rng=0,
    )
    first, second = sessions
    assert first.previous_prediction is None and first.rounds >= 2  # the proxy alone needs several slices
    assert trainer.steps == 2 * 60  # end_steps once per scan, nothing during the rounds
    assert second.prediction is not None and second.rounds == 0 and second.n_drawn == 0
    assert check_stop(second.mask(), rule="ground_truth", rho=0.8, ground_truth=gt2).passed


def test_refine_first_slices_bisect_then_follow_the_prediction() -> None:
    image, gt = _sphere()
    prep = fit_preprocessor(image, grid=(16, 16, 16))
    oracle = GroundTruthOracle(gt)
    lo, hi = oracle.target_extent(0)
    cold = ScanSession(image, preprocessing=prep, params=_refine_params())
    assert cold.propose(extent={0: (lo, hi)}).slices[0] == ((lo + hi) // 2,)  # no prediction: bisect
    warm = ScanSession(image, preprocessing=prep, params=_refine_params())
    pred = np.zeros((16, 16, 16), np.float32)
    pred[4:12, 4:12, 4:12] = 0.9
    warm.set_prediction(pred)
    first = warm.propose(extent={0: (lo, hi)})
    largest = int(np.argmax(((warm.prediction >= 0.5).sum(axis=(1, 2)) * np.isin(np.arange(24), range(lo, hi + 1)))))
    assert first.slices[0] == (largest,) and first.strategy == "refine"
    # a drawing that contradicts the prediction: the next slices are chosen as on a cold start
    k = first.slices[0][0]
    wrong = np.zeros_like(gt)
    warm.add_labels(wrong, {0: [k]})
    warm.update_proxy()
    low_trust = SessionParams(**{**_refine_params().__dict__, "trust": 0.9})
    warm.params = low_trust
    assert warm.agreement() == 0.0
    assert warm.propose(extent={0: (lo, hi)}).strategy == "bisect"


def test_refine_mask_and_training_sample_use_the_final_mask() -> None:
    image, gt = _sphere()
    prep = fit_preprocessor(image, grid=(16, 16, 16))
    s = ScanSession(image, preprocessing=prep, params=_refine_params(weight_scheme="exp", weight_length=3.0,
                                                                     weight_floor=0.2))
    s.add_labels(gt, {0: [12]})
    s.update_proxy()
    mask = s.mask()
    np.testing.assert_array_equal(mask[12], gt[12])  # no prediction: the drawn slice is the mask
    img, target, weight = s.training_sample()
    assert target.shape == weight.shape == (16, 16, 16) and 0.5 < target.max() <= 1.0  # one slice, resampled
    # floor + (1 - floor) exp(-d / length) at the far end, 12 voxels from the drawn slice
    assert weight.min() == pytest.approx(0.2 + 0.8 * np.exp(-12 / 3), abs=0.01) and weight.max() <= 1.0
    with pytest.raises(ValueError, match="method"):
        _refine_params(method="best")
    with pytest.raises(ValueError, match="blend_scale"):
        _refine_params(blend_scale=0.0)


def test_refine_falls_back_to_the_proxy_when_the_prediction_stays_untrusted() -> None:
    from scipy import ndimage

    image, gt = _sphere()
    prep = fit_preprocessor(image, grid=(24, 24, 24))
    params = _refine_params(trust=0.99, set_aside=0.0, fallback_after=2)
    s = ScanSession(image, preprocessing=prep, params=params)
    s.set_prediction(ndimage.binary_dilation(gt, iterations=1).astype(np.float32))  # close, not exact
    s.add_labels(gt, {0: [12]})
    s.update_proxy()
    assert 0.0 < s.agreement() < 0.99
    assert s.corrected() is not None  # one slice: the prediction is still used
    s.add_labels(gt, {0: [9]})
    s.update_proxy()
    assert s.corrected() is None  # two slices and still below trust: the proxy alone
    np.testing.assert_array_equal(s.mask()[9:13], s.proxy.mask[9:13])
    trusting = ScanSession(image, preprocessing=prep, params=_refine_params(trust=0.5, fallback_after=2))
    trusting.set_prediction(s.prediction_grid)
    trusting.add_labels(gt, {0: [9, 12]})
    assert trusting.corrected() is not None
