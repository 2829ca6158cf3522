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
