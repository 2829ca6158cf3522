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
* **S is drawn once per round**, as Algorithm 3 line 13 / Algorithm 5 line 21 set ``S`` once and the
  ``n_F`` steps of the next round use it; every step augments each sample afresh.

The losses (equations 2 and 9, and the choices made for them) are in :mod:`dil_core.losses`; every name
there is re-exported here.

References
----------
Tian, Chen, Gao (2023), section 2.2 (equations 1-2, Algorithm 1), section 2.4 (equation 9, Algorithm 3),
section 2.6 (Algorithm 5).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.utils import look_up_option

# The losses were part of this module: all their names, private ones too, stay importable from here.
from dil_core.losses import (  # noqa: F401
    _EPS,
    _PROB_TOL,
    _SOFT_DICE,
    BASE_LOSSES,
    Sample,
    _as_probabilities,
    _batch,
    _check_sample,
    _check_unit,
    _per_sample_losses,
    _spatial_dims,
    _weighted_bce,
    _weighted_dice,
    _weighted_dicece,
    combine_replay_losses,
    replay_loss,
    smoothed_target,
    weighted_loss,
)
from dil_core.models import augment as augment_sample
from dil_core.models import pad_to_divisor, resolve_device, spatial_divisor
from dil_core.patches import patch_size, random_patches
from dil_core.replay import ReplayBuffer
from dil_core.typing import RngLike, generator_from_state

__all__ = [
    "BASE_LOSSES",
    "TrainStats",
    "Trainer",
    "combine_replay_losses",
    "replay_loss",
    "smoothed_target",
    "train_offline",
    "weighted_loss",
]


def _check_count(name: str, value: object, minimum: int = 0) -> int:
    try:
        out = operator.index(value)  # type: ignore[arg-type]
    except TypeError as err:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from err
    if out < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return out


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
                if patch_size(self.model) is not None:  # large grids train on patches (see build_segmenter)
                    images, targets, weights = random_patches((images, targets, weights), patch_size(self.model),
                                                              rng=self._rng)
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
            rng = generator_from_state(state["rng_state"])
        except (KeyError, TypeError, RuntimeError, AttributeError) as err:
            raise ValueError(f"trainer state: missing or incompatible entry ({err})") from err
        self._rng = rng
        self.steps = int(state["steps"])
        self.rounds = int(state.get("rounds", 0))


def train_offline(
    model: torch.nn.Module,
    samples: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    learning_rate: float,
    epochs: int,
    device: str = "auto",
    seed: int = 0,
) -> tuple[torch.nn.Module, list[float]]:
    """Train ``model`` on fully labeled samples: ``epochs`` passes, one step per sample, shuffled per pass.

    What a scheduled retraining runs on every finished scan's final mask. It uses :class:`Trainer` with no
    replay (``m = 0``, ``lambda_L = 1``: the plain BCE + Dice of eq. 9 with W = 1) and its augmentation.

    Parameters
    ----------
    model : torch.nn.Module
        A fresh segmenter (trained in place).
    samples : sequence of (image_grid, target_grid)
        ``(gx, gy, gz)`` arrays on the working grid; targets in ``[0, 1]``.
    learning_rate : float
    epochs : int
        Passes over the samples, >= 1.
    device : str
    seed : int
        Seeds the augmentation and the order of the samples.

    Returns
    -------
    model : torch.nn.Module
        On the CPU.
    losses : list of float
        The mean loss of each pass.
    """
    from dil_core.models import resolve_device
    from dil_core.replay import ReplayBuffer

    epochs = _check_count("epochs", epochs, 1)
    if not samples:
        raise ValueError("samples: at least one (image, target) pair is needed")
    trainer = Trainer(model, ReplayBuffer(1, 2, rng=seed), lr=learning_rate, device=resolve_device(device), rng=seed)
    order = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        epoch: list[float] = []
        for i in order.permutation(len(samples)):
            image, target = samples[int(i)]
            weight = np.ones_like(image, dtype=np.float32)
            epoch.extend(trainer.train_round(image, target, weight, n_steps=1, lambda_l=1.0, m=0).losses)
        losses.append(float(np.mean(epoch)))
    return trainer.model.cpu(), losses
