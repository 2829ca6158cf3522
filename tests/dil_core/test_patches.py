"""Patches: training on crops of a large grid (half on the target), a sliding window to predict the whole grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dil_core.models import build_segmenter, predict
from dil_core.patches import patch_size, random_patches
from dil_core.replay import ReplayBuffer
from dil_core.training import Trainer

torch.set_num_threads(1)


def test_patch_is_checked_and_kept_on_the_network() -> None:
    net = build_segmenter("unet", channels=(4, 8, 16), seed=0, patch=(8, 16, 8))
    assert patch_size(net) == (8, 16, 8) and patch_size(build_segmenter("unet", channels=(4, 8), seed=0)) is None
    with pytest.raises(ValueError, match="multiples of 4"):
        build_segmenter("unet", channels=(4, 8, 16), seed=0, patch=(8, 6, 8))


def test_random_patches_are_aligned_and_find_a_small_target() -> None:
    target = torch.zeros(4, 1, 32, 32, 32)
    target[:, :, 20:23, 5:8, 10:13] = 1.0  # a 3x3x3 target in a 32^3 grid
    image = 10.0 * target + torch.arange(32.0).reshape(1, 1, 32, 1, 1)  # position-coded, target-coded
    weight = image.clone()
    hits = 0
    for seed in range(10):
        img, tgt, wt = random_patches((image, target, weight), (8, 8, 8), rng=seed)
        assert img.shape == tgt.shape == wt.shape == (4, 1, 8, 8, 8)
        assert torch.equal(img, wt)  # one window for the three of each sample
        # image minus 10 x target is the position code alone: image and target were cut at the same place
        code = img - 10.0 * tgt
        assert torch.equal(code, code[:, :, :, :1, :1].expand_as(code))
        assert torch.equal(code[:, 0, 1:, 0, 0] - code[:, 0, :-1, 0, 0], torch.ones(4, 7))
        hits += int((tgt.flatten(1).amax(1) > 0).sum())
    assert 10 <= hits <= 32  # about half of the 40 patches are centred on the target (a few more touch it)


def test_a_patch_trained_segmenter_segments_the_whole_grid_by_sliding_window() -> None:
    def sphere(seed: int, n: int = 32) -> tuple[np.ndarray, np.ndarray]:
        g = np.indices((n, n, n)) - (n - 1) / 2
        t = ((g**2).sum(0) <= 7.0**2).astype(np.float32)
        return (t + 0.3 * np.random.default_rng(seed).standard_normal(t.shape)).astype(np.float32), t

    net = build_segmenter("unet", channels=(4, 8, 16), seed=0, patch=(16, 16, 16))
    trainer = Trainer(net, ReplayBuffer(1, 2, rng=0), lr=3e-3, device="cpu", rng=0)
    image, target = sphere(0)
    trainer.train_round(image, target, np.ones_like(target), n_steps=120, lambda_l=1.0, m=0)
    test_image, test_target = sphere(1)
    prob = predict(net, test_image)
    assert prob.shape == (32, 32, 32) and 0.0 <= prob.min() and prob.max() <= 1.0
    mask = prob >= 0.5
    assert 2 * (mask & (test_target > 0)).sum() / (mask.sum() + test_target.sum()) > 0.8
