"""The continual learner's augmentation: flips and quarter turns, a small affine and an intensity change.

Every step of :class:`dil_core.continual.ContinualLearner` augments each finished scan afresh with
:func:`strong_augment` (MONAI transforms throughout).
"""

from __future__ import annotations

import numpy as np
from monai.transforms import Compose, RandAffined, RandScaleIntensityd, RandShiftIntensityd

from dil_core.models import augment
from dil_core.typing import RngLike

__all__ = ["strong_augment"]


def strong_augment(
    image: np.ndarray, target: np.ndarray, *, rng: RngLike = None, rotate: float = 0.15, scale: float = 0.1,
    intensity: float = 0.1, weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flips and quarter turns (:func:`dil_core.models.augment`), then a small affine and an intensity change.

    The affine (MONAI ``RandAffined``, probability 0.5) rotates by up to ``rotate`` radians about each axis and
    scales by up to ``1 +- scale``, bilinear for both image and target (the target stays soft in ``[0, 1]``);
    the image's intensities are then scaled by up to ``1 +- intensity`` and shifted by up to ``+- intensity``
    (``RandScaleIntensityd``, ``RandShiftIntensityd``, probability 0.5 each). Shapes never change.
    With ``weight`` (voxel weights of the loss) the same geometric transforms move it too, and it is returned
    third.
    """
    gen = np.random.default_rng(rng)
    img, tgt, wgt = augment(image, target, np.ones_like(target) if weight is None else weight, rng=gen)
    keys = ["image", "target"] + ([] if weight is None else ["weight"])
    compose = Compose([
        RandAffined(keys=keys, prob=0.5, rotate_range=(rotate,) * 3, scale_range=(scale,) * 3,
                    mode=("bilinear",) * len(keys), padding_mode="border"),
        RandScaleIntensityd(keys=["image"], factors=intensity, prob=0.5),
        RandShiftIntensityd(keys=["image"], offsets=intensity, prob=0.5),
    ])
    compose.set_random_state(seed=int(gen.integers(2**32)))
    out = compose({"image": img[None], "target": tgt[None], **({} if weight is None else {"weight": wgt[None]})})
    as_np = [np.asarray(out[k].as_tensor() if hasattr(out[k], "as_tensor") else out[k])[0] for k in keys]
    pair = as_np[0].astype(np.float32), np.clip(as_np[1], 0.0, 1.0).astype(np.float32)
    return pair if weight is None else (*pair, np.clip(as_np[2], 0.0, None).astype(np.float32))
