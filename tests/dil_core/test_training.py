"""Tests for dil_core.training: smoothed targets (eq. 2), weighted loss (eq. 9), replay loss, the Trainer."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from dil_core.models import build_segmenter, predict
from dil_core.replay import ReplayBuffer
from dil_core.training import (
    BASE_LOSSES,
    TrainStats,
    Trainer,
    combine_replay_losses,
    replay_loss,
    smoothed_target,
    weighted_loss,
)

torch.set_num_threads(1)


def _t(values) -> torch.Tensor:
    """A (1, 1, n, 1, 1) float tensor from a list of voxel values."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, -1, 1, 1)


def _sphere(n: int = 16, radius: float = 5.0, noise: float = 0.3, seed: int = 0):
    g = np.indices((n, n, n)) - (n - 1) / 2
    target = ((g**2).sum(0) <= radius**2).astype(np.float32)
    image = (target + noise * np.random.default_rng(seed).standard_normal(target.shape)).astype(np.float32)
    return image, target, np.ones_like(target)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


# --- equation 2 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prev", "proxy", "lam", "expected"),
    [
        ([0.2, 0.8, 0.0], [1.0, 0.0, 1.0], 0.25, [0.75 * 0.2 + 0.25, 0.75 * 0.8, 0.25]),
        ([0.2, 0.8, 0.0], [1.0, 0.0, 1.0], 1.0, [1.0, 0.0, 1.0]),
        ([0.2, 0.8, 0.0], [1.0, 0.0, 1.0], 0.0, [0.2, 0.8, 0.0]),
        ([0.5, 0.5, 0.5], [1.0, 0.0, 0.5], 0.8, [0.9, 0.1, 0.5]),
        (None, [1.0, 0.0, 1.0], 0.3, [1.0, 0.0, 1.0]),  # no F_prev: the proxy itself
    ],
)
def test_smoothed_target_hand_computed(prev, proxy, lam, expected):
    def vol(v):
        return None if v is None else np.array(v, dtype=np.float64).reshape(3, 1, 1)

    out = smoothed_target(vol(prev), vol(proxy), lambda_y=lam)
    assert out.dtype == np.float32 and out.shape == (3, 1, 1)
    np.testing.assert_allclose(out.ravel(), expected, rtol=1e-6)


def test_smoothed_target_clips_rounding_overshoot():
    proxy = np.array([1.00005, -0.00005, 0.5], np.float32).reshape(3, 1, 1)
    np.testing.assert_array_equal(smoothed_target(None, proxy, lambda_y=0.5).ravel(), [1.0, 0.0, 0.5])


def test_smoothed_target_without_previous_is_a_copy():
    proxy = np.ones((2, 2, 2), np.float32)
    out = smoothed_target(None, proxy, lambda_y=0.5)
    out[0, 0, 0] = 0
    assert proxy[0, 0, 0] == 1


@pytest.mark.parametrize(
    ("prev", "proxy", "lam", "match"),
    [
        (np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), 0.5, "differs"),
        (None, np.zeros((2, 2)), 0.5, "3D"),
        (None, np.zeros((2, 2, 2)), 1.5, "lambda_y"),
        (None, np.zeros((2, 2, 2)), -0.1, "lambda_y"),
        (None, np.full((2, 2, 2), 2.0), 0.5, r"\[0, 1\]"),
        (np.full((2, 2, 2), np.nan), np.zeros((2, 2, 2)), 0.5, "finite"),
    ],
)
def test_smoothed_target_bad_inputs(prev, proxy, lam, match):
    with pytest.raises(ValueError, match=match):
        smoothed_target(prev, proxy, lambda_y=lam)


# --- equation 9: voxel-weighted loss ----------------------------------------------------------------------


def test_weighted_bce_hand_computed():
    logits, target, weight = _t([2.0, -1.0]), _t([1.0, 1.0]), _t([1.0, 3.0])
    l1, l2 = math.log1p(math.exp(-2.0)), math.log1p(math.exp(1.0))
    got = weighted_loss(logits, target, weight, base="bce")
    assert got.item() == pytest.approx((l1 + 3 * l2) / 4, rel=1e-6)
    # logits 0: bce = ln 2 everywhere, whatever the weights
    assert weighted_loss(_t([0.0] * 3), _t([1, 0, 1]), _t([5, 1, 0.5]), base="bce").item() == pytest.approx(
        math.log(2), rel=1e-6
    )


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        # p = 0.5 on both voxels, target (1, 0): 1 - 2 * sum(W min(p, y)) / (sum(W p) + sum(W y))
        ([2.0, 0.0], 1 - 2.0 / 3.0),
        ([1.0, 1.0], 1 - 1.0 / 2.0),
        ([1.0, 3.0], 1 - 1.0 / 3.0),
    ],
)
def test_weighted_dice_hand_computed(weights, expected):
    got = weighted_loss(_t([0.0, 0.0]), _t([1.0, 0.0]), _t(weights), base="dice")
    assert got.item() == pytest.approx(expected, abs=1e-5)


def test_dicece_is_the_sum():
    rng = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 4, 3, 2, generator=rng)
    target = (torch.rand(2, 1, 4, 3, 2, generator=rng) > 0.5).float()
    weight = torch.rand(2, 1, 4, 3, 2, generator=rng)
    total = weighted_loss(logits, target, weight, base="dicece", reduction="none")
    parts = weighted_loss(logits, target, weight, base="bce", reduction="none") + weighted_loss(
        logits, target, weight, base="dice", reduction="none"
    )
    assert total.shape == (2,)
    torch.testing.assert_close(total, parts)
    assert weighted_loss(logits, target, weight).item() == pytest.approx(total.mean().item(), rel=1e-6)


@pytest.mark.parametrize("base", sorted(BASE_LOSSES))
def test_zero_weight_region_does_not_count(base):
    target = torch.zeros(1, 1, 6, 4, 4)
    target[:, :, 1:4, 1:3, 1:3] = 1
    correct = 8 * target - 4  # +4 on foreground, -4 on background
    wrong = correct.clone()
    wrong[:, :, 3:, :, :] *= -1  # errors in the region x >= 3
    weight = torch.ones_like(target)
    weight[:, :, 3:, :, :] = 0
    loss_wrong = weighted_loss(wrong, target, weight, base=base)
    loss_correct = weighted_loss(correct, target, weight, base=base)
    torch.testing.assert_close(loss_wrong, loss_correct)
    # and with unit weights the same errors do count
    assert weighted_loss(wrong, target, torch.ones_like(target), base=base) > loss_correct + 0.1


@pytest.mark.parametrize(
    ("shapes", "kwargs", "match"),
    [
        (((1, 1, 2, 2, 2), (1, 1, 2, 2, 2), (1, 1, 2, 2, 3)), {}, "share one"),
        (((1, 2, 2, 2), (1, 2, 2, 2), (1, 2, 2, 2)), {}, "share one"),
        (((1, 2, 2, 2, 2),) * 3, {}, "share one"),
        (((1, 1, 2, 2, 2),) * 3, {"base": "focal"}, "dicece"),
        (((1, 1, 2, 2, 2),) * 3, {"reduction": "sum"}, "reduction"),
    ],
)
def test_weighted_loss_bad_inputs(shapes, kwargs, match):
    tensors = [torch.zeros(s) for s in shapes]
    with pytest.raises(ValueError, match=match):
        weighted_loss(*tensors, **kwargs)


def test_weighted_loss_negative_weight():
    with pytest.raises(ValueError, match=">= 0"):
        weighted_loss(_t([0.0]), _t([1.0]), _t([-1.0]))


# --- equations 2 and 9: the replay combination ------------------------------------------------------------


@pytest.mark.parametrize(
    ("losses", "lam", "expected"),
    [
        ([1.0, 2.0, 3.0], 0.5, 0.5 * 1.0 + 0.5 / 3 * 5.0),
        ([1.0, 2.0, 3.0], 1.0, 1.0),
        ([1.0, 2.0, 3.0], 0.0, 5.0 / 3),
        ([4.0], 0.25, 1.0),  # m = 0: lambda_L * l_new
        ([2.0, 6.0], 0.5, 1.0 + 0.25 * 6.0),
    ],
)
def test_combine_replay_losses_hand_computed(losses, lam, expected):
    assert combine_replay_losses(torch.tensor(losses), lambda_l=lam).item() == pytest.approx(expected)


@pytest.mark.parametrize(("losses", "lam", "match"), [([], 0.5, "non-empty"), ([1.0], 1.2, "lambda_l")])
def test_combine_replay_losses_bad_inputs(losses, lam, match):
    with pytest.raises(ValueError, match=match):
        combine_replay_losses(torch.tensor(losses), lambda_l=lam)


def _sample(seed: int, shape=(4, 3, 2)):
    r = np.random.default_rng(seed)
    return (
        r.standard_normal(shape).astype(np.float32),  # with an identity model, the image is the logits
        (r.random(shape) > 0.5).astype(np.float32),
        r.random(shape).astype(np.float32),
    )


@pytest.mark.parametrize(("m", "lam"), [(0, 0.7), (1, 0.5), (3, 0.2)])
def test_replay_loss_equals_formula(m, lam):
    new, past = _sample(0), [_sample(i + 1) for i in range(m)]

    def one(s):
        return weighted_loss(*(torch.from_numpy(a)[None, None] for a in s)).item()

    expected = lam * one(new) + (1 - lam) / (m + 1) * sum(one(s) for s in past)
    got = replay_loss(torch.nn.Identity(), new, past, lambda_l=lam)
    assert got.item() == pytest.approx(expected, rel=1e-5)


class _Heads(torch.nn.Module):
    """Deep-supervision output as DynUNet gives it in training mode: heads x, 2x, 3x on a new axis 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x, 2 * x, 3 * x], dim=1)


def test_deep_supervision_heads_are_weighted_half_each_coarser_one():
    new = _sample(0)

    def one(scale: float) -> float:
        image, target, weight = (torch.from_numpy(a)[None, None] for a in new)
        return weighted_loss(scale * image, target, weight).item()

    expected = (4 * one(1) + 2 * one(2) + 1 * one(3)) / 7  # weights 1, 1/2, 1/4 normalised
    got = replay_loss(_Heads(), new, [], lambda_l=1.0)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_trainer_with_dynunet_learns_a_sphere():
    image, target, weight = _sphere()
    net = build_segmenter("dynunet", channels=(4, 8, 16), seed=0)
    tr = Trainer(net, ReplayBuffer(2, 4, rng=0), lr=1e-2, device="cpu", rng=0)
    stats = tr.train_round(image, target, weight, n_steps=30, lambda_l=1.0, m=0)
    assert np.mean(stats.losses[-5:]) < 0.8 * np.mean(stats.losses[:5])
    assert _dice(predict(tr.model, image) >= 0.5, target > 0) > 0.7


def test_replay_loss_is_differentiable():
    net = build_segmenter("unet", channels=(4, 8), seed=0)
    loss = replay_loss(net, _sample(0, (4, 4, 4)), [_sample(1, (4, 4, 4))], lambda_l=0.5)
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize(
    ("new", "past", "lam", "match"),
    [
        (_sample(0), [_sample(1, (4, 3, 3))], 0.5, "differs"),
        (_sample(0)[:2], [], 0.5, "triple"),
        (_sample(0), [], 1.5, "lambda_l"),
        ((_sample(0)[0], np.full((4, 3, 2), 2.0), _sample(0)[2]), [], 0.5, "target"),
    ],
)
def test_replay_loss_bad_inputs(new, past, lam, match):
    with pytest.raises(ValueError, match=match):
        replay_loss(torch.nn.Identity(), new, past, lambda_l=lam)


# --- the Trainer --------------------------------------------------------------------------------------------


def _trainer(seed: int = 0, *, b: int = 2, b_star: int = 4, lr: float = 1e-2) -> Trainer:
    net = build_segmenter("unet", channels=(4, 8), seed=seed)
    return Trainer(net, ReplayBuffer(b, b_star, rng=seed), lr=lr, device="cpu", rng=seed)


def test_trainer_learns_a_sphere():
    image, target, weight = _sphere()
    tr = _trainer()
    stats = tr.train_round(image, target, weight, n_steps=30, lambda_l=1.0, m=0, augment=True)
    assert isinstance(stats, TrainStats) and stats.steps == 30 and len(stats.losses) == 30
    assert np.mean(stats.losses[-5:]) < 0.8 * np.mean(stats.losses[:5])
    assert stats.mean_loss == pytest.approx(np.mean(stats.losses))
    assert _dice(predict(tr.model, image) >= 0.5, target > 0) > 0.7
    assert tr.steps == 30 and tr.rounds == 1


def _two_rounds(seed: int, rng_seed: int | None = None) -> Trainer:
    tr = _trainer(seed)
    if rng_seed is not None:
        tr._rng = np.random.default_rng(rng_seed)
    image, target, weight = _sphere(8, 2.5)
    tr.train_round(image, target, weight, n_steps=3, lambda_l=0.5, m=1)
    tr.end_of_round_update((image, target, weight))
    image2, target2, weight2 = _sphere(8, 3.0, seed=1)
    stats = tr.train_round(image2, target2, weight2, n_steps=3, lambda_l=0.5, m=1)
    assert stats.n_replayed == 1
    return tr


def test_same_seed_same_weights_on_cpu():
    before = torch.get_rng_state()
    a, b = _two_rounds(0), _two_rounds(0)
    assert torch.equal(before, torch.get_rng_state())  # the trainer forks torch's generator
    assert _same_weights(a.model, b.model)
    assert not _same_weights(a.model, _two_rounds(0, rng_seed=1).model)  # other augmentations


def test_state_dict_round_trip_resumes_identically():
    a = _two_rounds(0)
    blob = io.BytesIO()
    torch.save(a.state_dict(), blob)
    blob.seek(0)
    state = torch.load(blob, weights_only=True)
    b = _trainer(seed=5)
    b.load_state_dict(state)
    assert _same_weights(a.model, b.model)
    assert (b.steps, b.rounds, len(b.buffer)) == (a.steps, a.rounds, len(a.buffer))
    np.testing.assert_array_equal(b.buffer.buffer[0][1], a.buffer.buffer[0][1])
    image, target, weight = _sphere(8, 2.0, seed=2)
    sa = a.train_round(image, target, weight, n_steps=2, lambda_l=0.5, m=1)
    sb = b.train_round(image, target, weight, n_steps=2, lambda_l=0.5, m=1)
    assert sa.losses == sb.losses
    assert _same_weights(a.model, b.model)


def test_load_state_dict_bad_state():
    a = _two_rounds(0)
    other = Trainer(build_segmenter("unet", channels=(4, 8, 16), seed=0), ReplayBuffer(2, 4), device="cpu")
    with pytest.raises(ValueError, match="trainer state"):
        other.load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="trainer state"):
        _trainer().load_state_dict({"model": {}})


def test_end_of_round_update_stores_copies():
    tr = _trainer()
    image, target, weight = _sphere(8, 2.5)
    assert tr.end_of_round_update((image, target, weight))
    image[:] = 99.0
    stored = tr.buffer.buffer[0]
    assert stored[0].dtype == np.float32 and stored[0].max() < 99.0


@pytest.mark.parametrize(("n_steps", "every", "draws"), [(6, None, 1), (6, 2, 3), (6, 4, 2), (6, 1, 6), (3, 6, 1)])
def test_replay_is_redrawn_every_k_steps(monkeypatch, n_steps, every, draws):
    tr = _trainer(b=2, b_star=4)
    for seed in range(3):
        tr.end_of_round_update(_sphere(8, 2.5, seed=seed))
    calls = []
    original = tr.buffer.retrieve
    monkeypatch.setattr(tr.buffer, "retrieve", lambda m: calls.append(m) or original(m))
    stats = tr.train_round(*_sphere(8, 2.5), n_steps=n_steps, lambda_l=0.5, m=2, resample_every=every)
    assert calls == [2] * draws  # once per round (Algorithm 3 line 13), or every k steps
    assert stats.steps == n_steps and stats.n_replayed == 2


def test_zero_steps_change_nothing():
    tr = _trainer()
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    stats = tr.train_round(*_sphere(8, 2.5), n_steps=0, lambda_l=0.5, m=0)
    assert stats.losses == () and math.isnan(stats.mean_loss)
    assert all(torch.equal(before[k], v) for k, v in tr.model.state_dict().items())


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"target_grid": np.zeros((8, 8, 7), np.float32)}, "share one 3D shape"),
        ({"lambda_l": 1.5}, "lambda_l"),
        ({"lambda_l": -0.5}, "lambda_l"),
        ({"m": 3}, "m must be <= b"),
        ({"m": -1}, "m must be"),
        ({"n_steps": -1}, "n_steps"),
        ({"weight_grid": np.zeros((8, 8, 8), np.float32)}, "positive sum"),
        ({"weight_grid": -np.ones((8, 8, 8), np.float32)}, "weight"),
        ({"target_grid": np.full((8, 8, 8), 1.5, np.float32)}, "target"),
        ({"image_grid": np.full((8, 8, 8), np.inf, np.float32)}, "finite"),
        ({"resample_every": 0}, "resample_every"),
    ],
)
def test_train_round_bad_inputs(change, match):
    image, target, weight = _sphere(8, 2.5)
    args = {"image_grid": image, "target_grid": target, "weight_grid": weight, "n_steps": 1, "lambda_l": 0.5, "m": 1}
    args |= change
    with pytest.raises(ValueError, match=match):
        _trainer().train_round(**args)


def test_train_round_rejects_replayed_samples_of_another_shape():
    tr = _trainer()
    tr.end_of_round_update(_sphere(8, 2.5))
    with pytest.raises(ValueError, match="differs"):
        tr.train_round(*_sphere(16), n_steps=1, lambda_l=0.5, m=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"lr": 0.0}, "lr"), ({"lr": float("inf")}, "lr"), ({"loss": "l2"}, "dicece"), ({"device": "tpu"}, "device")],
)
def test_trainer_bad_inputs(kwargs, match):
    net = build_segmenter("unet", channels=(4, 8), seed=0)
    with pytest.raises(ValueError, match=match):
        Trainer(net, ReplayBuffer(1, 2), **kwargs)


def test_trainer_bad_buffer():
    with pytest.raises(ValueError, match="ReplayBuffer"):
        Trainer(build_segmenter("unet", channels=(4, 8), seed=0), [], device="cpu")  # type: ignore[arg-type]


def test_end_of_round_update_bad_input():
    with pytest.raises(ValueError, match="share one 3D shape"):
        _trainer().end_of_round_update((np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), np.zeros((2, 2, 3))))
