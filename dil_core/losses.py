"""The losses of online training: the smoothed target (eq 2), the voxel-weighted loss and the replay loss (eq 9).

The loss of one optimiser step on the new sample and ``m`` replayed ones (equation 9):

    L = (1 - lambda_L) / (m + 1) * sum_i <W_i, l(Y~_i, F(X_i))> + lambda_L * <W_new, l(Y~_new, F(X_new))>

with the smoothed target of equation 2, ``Y~ = (1 - lambda_Y) F_prev(X) + lambda_Y Y``. The trainer that
runs these steps is :class:`dil_core.training.Trainer`, which re-exports every name here.

Choices where the paper is silent or would misbehave
----------------------------------------------------
* **Voxel-weighted loss.** ``l`` is binary cross-entropy plus soft Dice (``"dicece"``), the two losses the
  paper names. BCE is voxel-wise, ``<W, l> / sum(W)`` (normalised so that the loss scale does not depend on
  the weighting scheme or the grid size). Dice is not voxel-wise; its W-weighted form is
  ``1 - 2 sum(W min(P, Y~)) / (sum(W P) + sum(W Y~))``, computed by MONAI's ``DiceLoss(soft_label=True)``
  on ``(W P, W Y~)`` (for ``W >= 0``, ``min(W P, W Y~) = W min(P, Y~)``; for a binary target it is the
  usual ``2 sum(W P Y) / ...``). MONAI's ``DiceCELoss`` takes no voxel weights, hence the two parts.
* **Replay with m = 0.** The formula is kept: the loss is ``lambda_L * l_new``. With Adam this scaling
  barely matters (Adam is invariant to a constant factor on the loss, up to its epsilon).
* **No previous segmenter.** Algorithm 5 line 3 starts from ``F_prev = x -> 0``; line 17 would then train
  on ``lambda_Y * Y``, a target that is below 0.5 everywhere for ``lambda_Y < 0.5`` and teaches a shrunken
  or empty mask. :func:`smoothed_target` returns the proxy itself when there is no previous prediction.

References
----------
Tian, Chen, Gao (2023), section 2.2 (equations 1-2), section 2.4 (equation 9).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.utils import look_up_option

from dil_core.models import pad_to_divisor, spatial_divisor

__all__ = [
    "BASE_LOSSES",
    "Sample",
    "combine_replay_losses",
    "replay_loss",
    "smoothed_target",
    "weighted_loss",
]

#: A training sample: image, (smoothed) target and confidence map, each ``(X, Y, Z)``.
Sample = tuple[np.ndarray, np.ndarray, np.ndarray]

_EPS = 1e-8


def _check_unit(name: str, value: float) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from err
    if not 0.0 <= out <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return out


#: Tolerance on ``[0, 1]`` for targets and predictions (resampling can overshoot by a rounding error).
_PROB_TOL = 1e-4


def _as_probabilities(name: str, arr: np.ndarray) -> np.ndarray:
    """Check ``arr`` is finite and within ``[0, 1]`` up to :data:`_PROB_TOL`; return it clipped to ``[0, 1]``."""
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got NaN or infinite values")
    if arr.size and (arr.min() < -_PROB_TOL or arr.max() > 1.0 + _PROB_TOL):
        raise ValueError(f"{name} must lie in [0, 1], got values in [{arr.min()}, {arr.max()}]")
    return np.clip(arr, 0.0, 1.0)


def smoothed_target(
    previous_prediction: np.ndarray | None, proxy: np.ndarray, *, lambda_y: float
) -> np.ndarray:
    """Label smoothing of equation 2: ``Y~ = (1 - lambda_Y) F_prev(X) + lambda_Y Y``.

    Parameters
    ----------
    previous_prediction : (X, Y, Z) ndarray or None
        ``F_prev(X)``, probabilities in ``[0, 1]`` of the segmenter as it was when the scan started
        (Algorithm 5 line 27), or None when there is none yet.
    proxy : (X, Y, Z) ndarray
        The (proxy) target ``Y``, in ``[0, 1]`` (values beyond by at most 1e-4, e.g. from resampling, are
        clipped).
    lambda_y : float
        ``lambda_Y`` in ``[0, 1]``; 1 switches smoothing off.

    Returns
    -------
    (X, Y, Z) ndarray of float32
        The smoothed target. When ``previous_prediction`` is None it is ``proxy`` itself, whatever
        ``lambda_y``: a deliberate deviation from Algorithm 5 line 3 (``F_prev = x -> 0``), whose zeros
        would scale the first target down to ``lambda_Y Y`` and teach a shrunken or empty mask.

    Raises
    ------
    ValueError
        Shapes differ, values outside ``[0, 1]`` or not finite, ``lambda_y`` outside ``[0, 1]``.

    References
    ----------
    Tian, Chen, Gao (2023), equation 2; Algorithm 5 lines 3, 17.
    """
    lam = _check_unit("lambda_y", lambda_y)
    y = np.asarray(proxy, dtype=np.float32)
    if y.ndim != 3:
        raise ValueError(f"proxy must be a 3D (X, Y, Z) array, got shape {y.shape}")
    y = _as_probabilities("proxy", y)
    if previous_prediction is None:
        return y
    prev = np.asarray(previous_prediction, dtype=np.float32)
    if prev.shape != y.shape:
        raise ValueError(f"previous_prediction shape {prev.shape} differs from proxy shape {y.shape}")
    prev = _as_probabilities("previous_prediction", prev)
    return ((1.0 - lam) * prev + lam * y).astype(np.float32)


def _spatial_dims(x: torch.Tensor) -> list[int]:
    return list(range(1, x.ndim))


def _weighted_bce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    voxel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    dims = _spatial_dims(voxel)
    return (weight * voxel).sum(dims) / weight.sum(dims).clamp_min(_EPS)


_SOFT_DICE = DiceLoss(sigmoid=False, soft_label=True, reduction="none")


def _weighted_dice(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    prob = torch.sigmoid(logits)
    return _SOFT_DICE(weight * prob, weight * target).reshape(logits.shape[0])


def _weighted_dicece(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _weighted_bce(logits, target, weight) + _weighted_dice(logits, target, weight)


#: Voxel-weighted base losses ``l``: ``name -> f(logits, target, weight) -> (N,)`` per-sample losses, all
#: tensors ``(N, 1, X, Y, Z)`` in float32.
BASE_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "bce": _weighted_bce,
    "dice": _weighted_dice,
    "dicece": _weighted_dicece,
}


def weighted_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    *,
    base: str = "dicece",
    reduction: str = "mean",
) -> torch.Tensor:
    """The voxel-weighted loss ``<W, l(theta | Y~, F(X))>`` of equation 9.

    Parameters
    ----------
    logits : (N, 1, X, Y, Z) torch.Tensor
        Network output before the sigmoid.
    target : (N, 1, X, Y, Z) torch.Tensor
        Soft target ``Y~`` in ``[0, 1]``.
    weight : (N, 1, X, Y, Z) torch.Tensor
        Confidence map ``W >= 0`` (equations 10-12); voxels with ``W = 0`` do not count.
    base : {"dicece", "bce", "dice"}
        ``"bce"``: ``sum(W * bce) / sum(W)``; ``"dice"``: W-weighted soft Dice (MONAI ``DiceLoss``,
        ``soft_label=True``, on ``W * sigmoid(logits)`` and ``W * target``); ``"dicece"``: their sum.
    reduction : {"mean", "none"}
        Mean over the batch, or the ``(N,)`` per-sample losses.

    Returns
    -------
    torch.Tensor
        A float32 scalar, or shape ``(N,)``. Computed in float32 even under autocast.

    Raises
    ------
    ValueError
        Shapes differ or are not ``(N, 1, X, Y, Z)``, negative weights, an unknown base or reduction.

    References
    ----------
    Tian, Chen, Gao (2023), equation 9.
    """
    fn = look_up_option(base, BASE_LOSSES)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    shapes = [tuple(t.shape) for t in (logits, target, weight)]
    if len(set(shapes)) != 1 or len(shapes[0]) != 5 or shapes[0][1] != 1:
        raise ValueError(f"logits, target and weight must share one (N, 1, X, Y, Z) shape, got {shapes}")
    if bool((weight < 0).any()):
        raise ValueError("weight must be >= 0 everywhere (a confidence map), got negative values")
    per_sample = fn(logits.float(), target.float(), weight.float())
    return per_sample.mean() if reduction == "mean" else per_sample


def combine_replay_losses(per_sample: torch.Tensor, *, lambda_l: float) -> torch.Tensor:
    """Equation 2/9 from per-sample losses: ``lambda_L l_0 + (1 - lambda_L) / (m + 1) sum_{i>=1} l_i``.

    Parameters
    ----------
    per_sample : (m + 1,) torch.Tensor
        Entry 0 is the new sample's loss, entries ``1..m`` the replayed samples'.
    lambda_l : float
        ``lambda_L`` in ``[0, 1]``. With ``m = 0`` the loss is ``lambda_L * l_0``.

    Returns
    -------
    torch.Tensor
        Scalar.

    Raises
    ------
    ValueError
        ``per_sample`` not 1D and non-empty, or ``lambda_l`` outside ``[0, 1]``.
    """
    lam = _check_unit("lambda_l", lambda_l)
    if per_sample.ndim != 1 or per_sample.shape[0] < 1:
        raise ValueError(f"per_sample must be a non-empty 1D tensor, got shape {tuple(per_sample.shape)}")
    m = per_sample.shape[0] - 1
    return lam * per_sample[0] + (1.0 - lam) / (m + 1) * per_sample[1:].sum()


def _check_sample(name: str, sample: Sequence[Any], shape: tuple[int, ...] | None = None) -> Sample:
    if not isinstance(sample, tuple | list) or len(sample) != 3:
        raise ValueError(f"{name} must be an (image, target, weight) triple, got {type(sample).__name__}")
    arrays = tuple(np.asarray(a.detach().cpu() if torch.is_tensor(a) else a, dtype=np.float32) for a in sample)
    shapes = [a.shape for a in arrays]
    if len(set(shapes)) != 1 or len(shapes[0]) != 3:
        raise ValueError(f"{name}: image, target and weight must share one 3D shape, got {shapes}")
    if shape is not None and shapes[0] != shape:
        raise ValueError(f"{name}: shape {shapes[0]} differs from the new sample's {shape}")
    image, target, weight = arrays
    if not np.isfinite(image).all():
        raise ValueError(f"{name}: image must be finite, got NaN or infinite values")
    target = _as_probabilities(f"{name}: target", target)
    if not np.isfinite(weight).all() or weight.min() < 0:
        raise ValueError(f"{name}: weight must be finite and >= 0")
    return image, target, weight  # type: ignore[return-value]


def _batch(samples: Sequence[Sample], device: torch.device, divisor: int) -> tuple[torch.Tensor, ...]:
    """Stack samples into padded ``(N, 1, X, Y, Z)`` image, target, weight tensors (weight 0 in padding)."""
    out = []
    for k in range(3):
        t = torch.stack([torch.as_tensor(s[k], dtype=torch.float32) for s in samples])[:, None].to(device)
        out.append(pad_to_divisor(t, divisor))
    return tuple(out)


def _per_sample_losses(
    model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, base: str
) -> torch.Tensor:
    logits = model(images)
    if logits.dim() == images.dim() + 1:  # deep supervision (dynunet in training mode): the main head first
        heads = logits.shape[1]
        scale = torch.tensor([0.5**i for i in range(heads)], dtype=logits.dtype, device=logits.device)
        scale = scale / scale.sum()  # nnU-Net's weights: each coarser head half the one before, summing to 1
        return sum(  # type: ignore[return-value]
            scale[i] * weighted_loss(logits[:, i], targets, weights, base=base, reduction="none")
            for i in range(heads)
        )
    return weighted_loss(logits, targets, weights, base=base, reduction="none")


def replay_loss(
    model: torch.nn.Module,
    new_sample: Sample,
    replayed: Sequence[Sample],
    *,
    lambda_l: float,
    base: str = "dicece",
) -> torch.Tensor:
    """The loss of equation 9 on the new sample and ``m`` replayed ones, in one batched forward pass.

    Parameters
    ----------
    model : torch.nn.Module
        The segmenter (logits out); runs on the device of its parameters, in its current mode.
    new_sample : (image, target, weight)
        ``(X, Y, Z)`` arrays of the current scan: ``X``, ``Y~`` (equation 2), ``W`` (equations 10-12).
    replayed : sequence of (image, target, weight)
        The ``m`` samples ``S`` drawn from the replay buffer, same shape as the new sample.
    lambda_l : float
        ``lambda_L`` in ``[0, 1]``.
    base : str
        Base loss, see :data:`BASE_LOSSES`.

    Returns
    -------
    torch.Tensor
        Scalar ``(1 - lambda_L)/(m + 1) sum_i loss_i + lambda_L loss_new``, differentiable.

    Raises
    ------
    ValueError
        Malformed samples, shape mismatch, ``lambda_l`` outside ``[0, 1]``.

    References
    ----------
    Tian, Chen, Gao (2023), equations 2 and 9.
    """
    lam = _check_unit("lambda_l", lambda_l)
    new = _check_sample("new_sample", new_sample)
    past = [_check_sample(f"replayed[{i}]", s, new[0].shape) for i, s in enumerate(replayed)]
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    images, targets, weights = _batch([new, *past], device, spatial_divisor(model))
    return combine_replay_losses(_per_sample_losses(model, images, targets, weights, base), lambda_l=lam)
