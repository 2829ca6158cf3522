"""Tests for dil_core.models: segmenter registry, device choice, prediction, augmentation, weights I/O."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dil_core.models import (
    FLIPS,
    SEGMENTERS,
    augment,
    build_segmenter,
    load_state,
    pad_to_divisor,
    predict,
    resolve_device,
    save_state,
    spatial_divisor,
)

torch.set_num_threads(1)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_registry_names():
    assert set(SEGMENTERS) == {"unet", "vnet", "dynunet"}


def test_dynunet_deep_supervision_heads_in_training_only():
    net = build_segmenter("dynunet", channels=(4, 8, 16, 32), seed=0)
    assert spatial_divisor(net) == 8
    x = torch.randn(2, 1, 16, 24, 16)
    net.train()
    heads = net(x)
    assert heads.shape == (2, 3, 1, 16, 24, 16)  # main head, then 2 coarser ones upsampled to full size
    net.eval()
    with torch.no_grad():
        main = net(x)
    assert main.shape == (2, 1, 16, 24, 16)
    out = predict(net, np.zeros((16, 24, 16), np.float32))
    assert out.shape == (16, 24, 16) and 0.0 <= out.min() <= out.max() <= 1.0


@pytest.mark.parametrize(("channels", "divisor"), [(None, 8), ((4, 8), 2), ((4, 8, 16), 4), ([8, 8, 8, 8, 8], 16)])
def test_unet_divisor_and_output_shape(channels, divisor):
    net = build_segmenter("unet", channels=channels, seed=0)
    assert spatial_divisor(net) == divisor
    x = torch.zeros(2, 1, divisor * 2, divisor, divisor * 3)
    with torch.no_grad():
        assert net(x).shape == x.shape


def test_unet_default_channels():
    net = build_segmenter("unet", seed=0)
    assert tuple(net.channels) == (16, 32, 64, 128)
    assert tuple(net.strides) == (2, 2, 2)
    assert net.num_res_units == 2


def test_vnet_builds_and_predicts():
    net = build_segmenter("vnet", channels=[16, 32, 64, 128], seed=0)
    assert spatial_divisor(net) == 16
    p = predict(net, np.zeros((16, 17, 5), np.float32))  # padded to 32x32x16 and cropped back
    assert p.shape == (16, 17, 5) and 0.0 <= p.min() <= p.max() <= 1.0


def test_same_seed_same_weights_and_global_rng_untouched():
    before = torch.get_rng_state()
    a = build_segmenter("unet", channels=(4, 8), seed=3)
    b = build_segmenter("unet", channels=(4, 8), seed=3)
    c = build_segmenter("unet", channels=(4, 8), seed=4)
    assert torch.equal(before, torch.get_rng_state())
    assert _same_weights(a, b)
    assert not _same_weights(a, c)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("resnet", {}, "unet"),
        ("unet", {"channels": (16,)}, "channels"),
        ("unet", {"channels": (16, 0)}, "channels"),
        ("unet", {"channels": "abc"}, "channels"),
        ("vnet", {"channels": (8, 16)}, "fixed widths"),
        ("dynunet", {"channels": (8, 16)}, "at least 3 levels"),
        ("unet", {"seed": -1}, "seed"),
    ],
)
def test_build_bad_inputs(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_segmenter(name, **kwargs)


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("device", ["tpu", "gpu0", "meta", 3.5])
def test_resolve_device_bad_inputs(device):
    with pytest.raises(ValueError, match="device"):
        resolve_device(device)


def test_pad_to_divisor_hand_computed():
    x = torch.ones(1, 1, 5, 8, 3)
    y = pad_to_divisor(x, 4, value=-1.0)
    assert y.shape == (1, 1, 8, 8, 4)
    assert torch.equal(y[..., :5, :8, :3], x)
    assert y.sum() == 5 * 8 * 3 - (8 * 8 * 4 - 5 * 8 * 3)
    assert pad_to_divisor(x, 1) is x
    with pytest.raises(ValueError, match="divisor"):
        pad_to_divisor(x, 0)


def test_predict_matches_the_network_and_restores_mode():
    net = build_segmenter("unet", channels=(4, 8), seed=1)
    net.train()
    image = np.random.default_rng(0).standard_normal((8, 6, 4)).astype(np.float32)
    p = predict(net, image, device="cpu")
    assert net.training
    assert p.dtype == np.float32 and p.shape == image.shape
    net.eval()
    with torch.no_grad():
        expected = torch.sigmoid(net(torch.from_numpy(image)[None, None]))[0, 0].numpy()
    np.testing.assert_allclose(p, expected, rtol=1e-5, atol=1e-6)
    assert 0.0 <= p.min() and p.max() <= 1.0


def test_predict_with_flips_is_the_mean_over_the_flip_group():
    net = build_segmenter("unet", channels=(4, 8), seed=2)
    image = np.random.default_rng(3).standard_normal((8, 6, 4)).astype(np.float32)
    got = predict(net, image, flips=True)
    one_by_one = [np.flip(predict(net, np.flip(image, f).copy()), f) if f else predict(net, image) for f in FLIPS]
    assert len(FLIPS) == 8 and len(set(FLIPS)) == 8
    np.testing.assert_allclose(got, np.mean(one_by_one, axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, predict(net, image), atol=1e-4)  # the flips do change the estimate
    # averaged over the whole group, the prediction commutes with every flip of the input
    for f in FLIPS[1:]:
        np.testing.assert_allclose(predict(net, np.flip(image, f).copy(), flips=True), np.flip(got, f), atol=1e-5)


def test_predict_odd_shape_is_padded_and_cropped():
    net = build_segmenter("unet", channels=(4, 8, 16), seed=1)
    image = np.random.default_rng(0).standard_normal((9, 7, 5)).astype(np.float32)
    p = predict(net, image)
    assert p.shape == (9, 7, 5)
    # the crop keeps indices: the same image embedded in a 12x8x8 zero volume gives the same prediction
    padded = np.zeros((12, 8, 8), np.float32)
    padded[:9, :7, :5] = image
    np.testing.assert_allclose(predict(net, padded)[:9, :7, :5], p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("image", "match"),
    [(np.zeros((4, 4)), "3D"), (np.full((4, 4, 4), np.nan), "finite"), (np.zeros((2, 4, 4, 4)), "3D")],
)
def test_predict_bad_inputs(image, match):
    net = build_segmenter("unet", channels=(4, 8), seed=0)
    with pytest.raises(ValueError, match=match):
        predict(net, image)


def test_augment_all_flips_hand_computed():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    out = augment(x, x + 1, 2 * x, rng=0, flip_prob=1.0, rot90_prob=0.0)
    expected = x[::-1, ::-1, ::-1]
    np.testing.assert_array_equal(out[0], expected)
    np.testing.assert_array_equal(out[1], expected + 1)
    np.testing.assert_array_equal(out[2], 2 * expected)


def test_augment_identity_when_probabilities_are_zero():
    x = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    for a, b in zip(augment(x, x, x, rng=5, flip_prob=0.0, rot90_prob=0.0), (x, x, x), strict=True):
        np.testing.assert_array_equal(a, b)


def test_augment_consistent_shape_preserving_and_seeded():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 6, 4)).astype(np.float32)  # only the (0, 1) plane may turn
    seen = set()
    for seed in range(20):
        img, tgt, w = augment(x, x + 1, 2 * x, rng=seed)
        assert img.shape == x.shape and img.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(tgt, img + 1)
        np.testing.assert_array_equal(w, 2 * img)
        np.testing.assert_array_equal(np.sort(img, axis=None), np.sort(x, axis=None))  # a voxel permutation
        again = augment(x, x + 1, 2 * x, rng=seed)
        np.testing.assert_array_equal(again[0], img)
        seen.add(img.tobytes())
    assert len(seen) > 5  # different seeds, different transforms


def test_augment_tensors_stay_tensors():
    x = torch.arange(27, dtype=torch.float32).reshape(3, 3, 3)
    img, tgt, w = augment(x, x, x, rng=1)
    assert all(type(t) is torch.Tensor for t in (img, tgt, w))
    np.testing.assert_array_equal(img.numpy(), augment(x.numpy(), x.numpy(), x.numpy(), rng=1)[0])


@pytest.mark.parametrize(
    ("shapes", "kwargs", "match"),
    [
        (((3, 3, 3), (3, 3, 3), (3, 3, 2)), {}, "share one 3D shape"),
        (((3, 3), (3, 3), (3, 3)), {}, "share one 3D shape"),
        (((3, 3, 3),) * 3, {"flip_prob": 1.5}, "flip_prob"),
        (((3, 3, 3),) * 3, {"rot90_prob": -0.1}, "rot90_prob"),
    ],
)
def test_augment_bad_inputs(shapes, kwargs, match):
    arrays = [np.zeros(s, np.float32) for s in shapes]
    with pytest.raises(ValueError, match=match):
        augment(*arrays, rng=0, **kwargs)


def test_save_load_bytes_and_path(tmp_path):
    a = build_segmenter("unet", channels=(4, 8), seed=0)
    b = build_segmenter("unet", channels=(4, 8), seed=1)
    assert not _same_weights(a, b)
    blob = save_state(a)
    assert isinstance(blob, bytes)
    assert load_state(b, blob) is b and _same_weights(a, b)
    c = build_segmenter("unet", channels=(4, 8), seed=2)
    assert save_state(a, tmp_path / "w.pt") is None
    load_state(c, tmp_path / "w.pt")
    assert _same_weights(a, c)


@pytest.mark.parametrize("source", ["wrong-model", b"not a checkpoint", "missing-file"])
def test_load_state_bad_inputs(tmp_path, source):
    target = build_segmenter("unet", channels=(4, 8), seed=0)
    if source == "wrong-model":
        source = save_state(build_segmenter("unet", channels=(4, 8, 16), seed=0))
    elif source == "missing-file":
        source = tmp_path / "nothing.pt"
    with pytest.raises(ValueError, match="cannot load"):
        load_state(target, source)


