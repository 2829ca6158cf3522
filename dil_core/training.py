"""Online training of the segmenter: smoothed targets, the voxel-weighted replay loss, and the trainer.

One training round (Algorithm 3 lines 9-13, Algorithm 5 lines 16-21) takes the new sample ``(X, Y~, W)``
of the current scan, draws ``m`` past samples ``S`` from the replay buffer, and runs ``n_F`` optimiser steps
on the loss of equation 9:

    L = (1 - lambda_L) / (m + 1) * sum_i <W_i, l(Y~_i, F(X_i))> + lambda_L * <W_new, l(Y~_new, F(X_new))>

with the smoothed target of equation 2, ``Y~ = (1 - lambda_Y) F_prev(X) + lambda_Y Y``. After the round the
new sample goes into the replay buffer (Algorithm 1). ``lambda_L`` and ``lambda_Y`` are plain numbers here
(the campaign config holds them constant); a schedule ``lambda(t)`` is the caller's business.

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
* **S is drawn once per round**, as Algorithm 3 line 13 / Algorithm 5 line 21 set ``S`` once and the
  ``n_F`` steps of the next round use it; every step augments each sample afresh.
* **No previous segmenter.** Algorithm 5 line 3 starts from ``F_prev = x -> 0``; line 17 would then train
  on ``lambda_Y * Y``, a target that is below 0.5 everywhere for ``lambda_Y < 0.5`` and teaches a shrunken
  or empty mask. :func:`smoothed_target` returns the proxy itself when there is no previous prediction.

References
----------
Tian, Chen, Gao (2023), section 2.2 (equations 1-2, Algorithm 1), section 2.4 (equation 9, Algorithm 3),
section 2.6 (Algorithm 5).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.utils import look_up_option

from dil_core.models import augment as augment_sample
from dil_core.models import pad_to_divisor, resolve_device, spatial_divisor
from dil_core.replay import ReplayBuffer
from dil_core.typing import RngLike

__all__ = [
    "BASE_LOSSES",
    "TrainStats",
    "Trainer",
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


def _check_count(name: str, value: object, minimum: int = 0) -> int:
    try:
        out = operator.index(value)  # type: ignore[arg-type]
    except TypeError as err:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from err
    if out < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
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


@dataclass(frozen=True)
class TrainStats:
    """What one training round did.

    Attributes
    ----------
    steps : int
        Optimiser steps taken (``n_F``).
    losses : tuple of float
        The loss of equation 9 at each step, before that step's update.
    n_replayed : int
        Replayed samples in each batch (``m``, or fewer while the buffer fills).
    """

    steps: int
    losses: tuple[float, ...]
    n_replayed: int

    @property
    def mean_loss(self) -> float:
        """Mean of :attr:`losses` (NaN after zero steps)."""
        return float(np.mean(self.losses)) if self.losses else math.nan


def _to_cpu(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


class Trainer:
    """The segmenter with its optimiser, replay buffer, device and randomness (Algorithms 3 and 5).

    Parameters
    ----------
    model : torch.nn.Module
        A segmenter from :func:`dil_core.models.build_segmenter`; moved to ``device`` (in place).
    buffer : ReplayBuffer
        The replay buffer of Algorithm 1; holds ``(image, target, weight)`` float32 arrays.
    lr : float
        Adam learning rate ``eta``.
    device : str or torch.device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    rng : numpy.random.Generator or int or None
        Randomness of augmentation and the torch seed of each round (dropout), the latter set inside
        :func:`torch.random.fork_rng` so global torch state is untouched. Retrieval uses the buffer's own.
    loss : str
        Base loss, see :data:`BASE_LOSSES`.
    amp : bool
        Mixed precision (``torch.autocast`` float16 + ``GradScaler``) on CUDA; ignored on the CPU.

    Raises
    ------
    ValueError
        ``lr`` not finite and positive, a bad device or loss name.

    Notes
    -----
    Seeded runs on the CPU are reproducible: same model seed, buffer seed and ``rng`` give the same weights.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        buffer: ReplayBuffer,
        *,
        lr: float = 1e-3,
        device: str | torch.device = "auto",
        rng: RngLike = None,
        loss: str = "dicece",
        amp: bool = True,
    ) -> None:
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        if not isinstance(buffer, ReplayBuffer):
            raise ValueError(f"buffer must be a ReplayBuffer, got {type(buffer).__name__}")
        look_up_option(loss, BASE_LOSSES)
        self.loss = loss
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.buffer = buffer
        self.lr = float(lr)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        self.amp = bool(amp) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp) if self.device.type == "cuda" else None
        self._rng = np.random.default_rng(rng)
        self.steps = 0
        self.rounds = 0

    def train_round(
        self,
        image_grid: np.ndarray,
        target_grid: np.ndarray,
        weight_grid: np.ndarray,
        *,
        n_steps: int,
        lambda_l: float,
        m: int,
        augment: bool = True,
        resample_every: int | None = None,
    ) -> TrainStats:
        """``n_steps`` optimiser steps on the new sample plus ``m`` replayed ones (Algorithm 5 lines 18-20).

        Parameters
        ----------
        image_grid, target_grid, weight_grid : (X, Y, Z) ndarray
            The new sample: image ``X``, smoothed target ``Y~`` in ``[0, 1]``, confidence map ``W >= 0``
            with a positive sum. Not stored: call :meth:`end_of_round_update` after the round.
        n_steps : int
            ``n_F >= 0``.
        lambda_l : float
            ``lambda_L`` in ``[0, 1]``.
        m : int
            Replayed samples per batch, ``0 <= m <= b``; drawn once for the round from the buffer.
        augment : bool
            Random flips and quarter turns of every sample at every step
            (:func:`dil_core.models.augment`).
        resample_every : int or None
            None: the ``m`` replayed samples are drawn once for the round (Algorithm 3 line 13). ``k >= 1``:
            drawn afresh every ``k`` steps, so that a long round (the once-per-scan training of
            ``dil_core.refine``) visits the whole buffer instead of the same ``m`` samples.

        Returns
        -------
        TrainStats

        Raises
        ------
        ValueError
            Shape mismatch (also against replayed samples), values out of range, ``weight_grid`` summing to
            zero, ``n_steps < 0``, ``lambda_l`` outside ``[0, 1]``, ``m`` outside ``[0, b]``,
            ``resample_every < 1``.
        """
        n_steps = _check_count("n_steps", n_steps)
        every = n_steps if resample_every is None else _check_count("resample_every", resample_every, 1)
        lam = _check_unit("lambda_l", lambda_l)
        m = _check_count("m", m)
        if m > self.buffer.b:
            raise ValueError(f"m must be <= b = {self.buffer.b} (the replay buffer size), got m={m}")
        new = _check_sample("new sample (image_grid, target_grid, weight_grid)", (image_grid, target_grid, weight_grid))
        if not new[2].sum() > 0:
            raise ValueError("weight_grid must have a positive sum (some voxel must count)")
        past = [_check_sample("replayed sample", s, new[0].shape) for s in self.buffer.retrieve(m)]
        n_replayed = len(past)
        self.model.train()
        divisor = spatial_divisor(self.model)
        base = _batch([new, *past], self.device, 1)
        losses: list[float] = []
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(int(self._rng.integers(2**63)))
            for step in range(n_steps):
                if step and every and step % every == 0:
                    past = [_check_sample("replayed sample", s, new[0].shape) for s in self.buffer.retrieve(m)]
                    base = _batch([new, *past], self.device, 1)
                images, targets, weights = (self._augmented(base) if augment else base)
                images, targets, weights = (pad_to_divisor(t, divisor) for t in (images, targets, weights))
                self.optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
                    per_sample = _per_sample_losses(self.model, images, targets, weights, self.loss)
                loss = combine_replay_losses(per_sample, lambda_l=lam)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    loss.backward()
                    self.optimizer.step()
                losses.append(float(loss.detach()))
        self.steps += n_steps
        self.rounds += 1
        return TrainStats(steps=n_steps, losses=tuple(losses), n_replayed=n_replayed)

    def _augmented(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        images, targets, weights = batch
        outs = [augment_sample(images[i, 0], targets[i, 0], weights[i, 0], rng=self._rng) for i in range(len(images))]
        return tuple(torch.stack([o[k] for o in outs])[:, None] for k in range(3))

    def end_of_round_update(self, sample: Sample) -> bool:
        """Offer the round's ``(X, Y~, W)`` to the replay buffer (Algorithm 3 line 13, Algorithm 5 line 21).

        Parameters
        ----------
        sample : (image, target, weight)
            ``(X, Y, Z)`` arrays; stored as float32 copies on the CPU.

        Returns
        -------
        bool
            Whether the buffer stored it (Algorithm 1 drops a sample with probability ``1/(b* + 1)``).

        Raises
        ------
        ValueError
            A malformed sample.
        """
        image, target, weight = _check_sample("sample", sample)
        return self.buffer.update((image.copy(), target.copy(), weight.copy()))

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: model, optimiser, scaler, buffer (samples as CPU tensors), rng, counts.

        The result holds only tensors and plain Python data, so ``torch.save`` and
        ``torch.load(..., weights_only=True)`` round-trip it.
        """
        buf = self.buffer.state_dict()
        buf["auxiliary"] = [tuple(torch.from_numpy(np.asarray(a)) for a in s) for s in buf["auxiliary"]]
        return {
            "model": _to_cpu(self.model.state_dict()),
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "buffer": buf,
            "rng_state": self._rng.bit_generator.state,
            "steps": self.steps,
            "rounds": self.rounds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict` (onto this trainer's device).

        Raises
        ------
        ValueError
            Missing entries, or weights that do not fit the model.
        """
        try:
            buf = dict(state["buffer"])
            buf["auxiliary"] = [
                tuple(a.numpy() if torch.is_tensor(a) else np.asarray(a) for a in s) for s in buf["auxiliary"]
            ]
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self.buffer.load_state_dict(buf)
            bit_generator = getattr(np.random, state["rng_state"]["bit_generator"])()
            bit_generator.state = state["rng_state"]
        except (KeyError, TypeError, RuntimeError, AttributeError) as err:
            raise ValueError(f"trainer state: missing or incompatible entry ({err})") from err
        self._rng = np.random.Generator(bit_generator)
        self.steps = int(state["steps"])
        self.rounds = int(state.get("rounds", 0))
