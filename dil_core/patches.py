"""Patches: a segmenter trained on crops of a large working grid, and its sliding-window prediction.

A small target in a large scan (the left atrium in a cardiac MRI, a tumour in BraTS) needs a finer working grid
than a whole-grid batch fits. With ``training.patch`` the segmenter trains on random crops of that size, half
of them centred on the target (MONAI ``RandCropByPosNegLabeld``, as nnU-Net oversamples the foreground), and
predicts the whole grid with a Gaussian-weighted sliding window of the same size (MONAI
``sliding_window_inference``, overlap 1/4). The network itself is unchanged (fully convolutional); the patch
rides on it as the attribute ``patch_size`` that :func:`dil_core.models.build_segmenter` sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dil_core.typing import RngLike

__all__ = ["check_patch", "patch_size", "random_patches", "sliding_window_logits"]


def check_patch(patch: Sequence[int], divisor: int) -> tuple[int, int, int]:
    """``patch`` as 3 ints, each a positive multiple of the network's ``divisor``.

    Raises
    ------
    ValueError
        Not 3 sizes, or one that is not a multiple of ``divisor``.
    """
    sizes = tuple(int(v) for v in patch)
    if len(sizes) != 3 or any(v < divisor or v % divisor for v in sizes):
        raise ValueError(f"patch must be 3 multiples of {divisor} (the network's divisor), got {list(patch)}")
    return sizes  # type: ignore[return-value]


def patch_size(model: torch.nn.Module) -> tuple[int, int, int] | None:
    """The patch ``model`` trains on and predicts with by sliding window (None: whole grids)."""
    return getattr(model, "patch_size", None)


def random_patches(
    batch: Sequence[torch.Tensor], patch: Sequence[int], *, rng: RngLike = None
) -> tuple[torch.Tensor, ...]:
    """One patch of every sample of ``(images, targets, weights)`` (each ``(N, 1, X, Y, Z)``), cut at one place.

    Each patch is centred on a target voxel (``target > 0``) or anywhere, with equal odds, so that patches of a
    small target in a large scan still show it half the time.
    """
    from monai.transforms import RandCropByPosNegLabeld

    keys = ["image", "target", "weight"]
    crop = RandCropByPosNegLabeld(keys=keys, label_key="target", spatial_size=tuple(int(v) for v in patch),
                                  pos=1, neg=1, num_samples=1)
    crop.set_random_state(seed=int(np.random.default_rng(rng).integers(2**32)))
    out: list[list[torch.Tensor]] = [[], [], []]
    for i in range(batch[0].shape[0]):
        (cropped,) = crop({k: t[i] for k, t in zip(keys, batch, strict=True)})
        for k, key in enumerate(keys):
            t = cropped[key]
            out[k].append(t.as_tensor() if hasattr(t, "as_tensor") else torch.as_tensor(t))
    return tuple(torch.stack(ts) for ts in out)


def sliding_window_logits(model: torch.nn.Module, x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """``model``'s logits on ``x`` (``(N, 1, X, Y, Z)``) by a sliding window of ``patch`` (one pass if it fits)."""
    if all(s <= p for s, p in zip(x.shape[-3:], patch, strict=True)):
        return model(x)
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(x, roi_size=tuple(patch), sw_batch_size=x.shape[0], predictor=model,
                                    overlap=0.25, mode="gaussian")
