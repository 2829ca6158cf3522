"""Continuous training: the segmenter keeps learning from every finished scan while physicians draw.

The paper's segmenter learns only inside a scan's rounds, and DIL's ``refine`` method only ``end_steps``
steps when a scan finishes. Between two submissions the machine waits for minutes while a physician draws;
:class:`ContinualLearner` spends that time on optimiser steps over all finished scans' final masks, and a gate
decides which weights the campaign predicts with:

* **Two models.** The *candidate* trains; the *champion* (the campaign's :class:`~dil_core.training.Trainer`)
  predicts. The champion never trains by itself: it only receives the candidate's weights when the gate
  promotes them, so every champion is a past state of the one candidate.
* **Replay of all finished scans.** Each step draws ``batch`` training scans uniformly from every finished
  scan outside the hold-out, each augmented afresh (:func:`strong_augment`: flips and quarter turns, a small
  rotation and scaling, intensity scale and shift; all MONAI transforms). The weight map is 1 everywhere (a
  final mask is what the physician accepted) unless a finished scan brings its own
  (``FinishedScan.weight_grid``; weighting by the distance to drawn slices measured no gain). With
  ``seed_share`` the seed scans (labeled to the campaign's higher bar ``rho_seed``) fill that share of the
  batches: a segmenter learns more from a few masks close to the truth than from many that just pass rho
  (``bench/README.md`` section 8).
* **Rolling hold-out.** Every ``holdout_every``-th finished scan (in finish order) is a validation scan, and
  the last ``holdout_size`` of them form the hold-out; older validation scans go back into training. A scan in
  the hold-out has been trained on by neither model (neither trains on it before it leaves the hold-out, and the
  champion only ever holds candidate weights), so the comparison is fair.
* **The gate.** Every ``gate_every`` steps the candidate's mean Dice on the hold-out (thresholded prediction
  on the working grid against the final mask there) is compared with the champion's on the same scans; the
  candidate is promoted only when it is strictly higher. While the hold-out is still empty (fewer than
  ``holdout_every`` finished scans), the gate promotes: there is nothing to validate on, and the candidate has
  seen every finished scan. With ``ema`` the gate measures and promotes a moving average of the candidate's
  weights instead of the weights of its last step.

Time accounting (the benchmark's and the simulation's): a physician spends ``minutes_per_slice`` per drawn
slice and ``review_minutes`` per review; :meth:`ContinualLearner.idle` turns such minutes into the optimiser
steps this machine runs in that time (its own measured seconds per step), times ``share``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from dil_core.augmentation import strong_augment
from dil_core.losses import _per_sample_losses
from dil_core.models import pad_to_divisor, predict, spatial_divisor
from dil_core.patches import patch_size, random_patches
from dil_core.training import Trainer, _to_cpu
from dil_core.typing import RngLike, generator_from_state

__all__ = ["ContinualLearner", "FinishedScan", "GateResult", "holdout_split", "strong_augment"]


@dataclass(frozen=True)
class FinishedScan:
    """A finished scan on the segmenter's working grid: its image and its final mask (in ``[0, 1]``).

    ``weight_grid``, optional: how much the loss trusts each voxel of the final mask (``>= 0``, not all zero);
    ones when not given. ``seed``: a seed scan, labeled to the campaign's higher bar ``rho_seed``
    (:attr:`ContinualLearner.seed_share`).
    """

    case_id: str
    image_grid: np.ndarray
    target_grid: np.ndarray
    weight_grid: np.ndarray | None = None
    seed: bool = False

    def __post_init__(self) -> None:
        if np.shape(self.image_grid) != np.shape(self.target_grid) or np.ndim(self.image_grid) != 3:
            raise ValueError(
                f"finished scan {self.case_id!r}: image {np.shape(self.image_grid)} and target "
                f"{np.shape(self.target_grid)} must share one 3D shape"
            )
        w = self.weight_grid
        if w is not None and (np.shape(w) != np.shape(self.target_grid) or not np.all(np.isfinite(w))
                              or np.any(w < 0) or not np.any(w > 0)):
            raise ValueError(
                f"finished scan {self.case_id!r}: weights must be finite, >= 0, not all zero and of the target's "
                f"shape {np.shape(self.target_grid)}, got shape {np.shape(w)}"
            )

    @property
    def weights(self) -> np.ndarray:
        """The voxel weights of its loss (ones when none were given)."""
        return np.ones_like(self.target_grid, np.float32) if self.weight_grid is None else self.weight_grid


@dataclass(frozen=True)
class GateResult:
    """One gate: the candidate's and the champion's hold-out Dice, and whether the candidate was promoted."""

    step: int
    candidate: float | None
    champion: float | None
    promoted: bool
    holdout: tuple[str, ...]
    n_train: int


def holdout_split(n_finished: int, *, every: int, size: int) -> tuple[list[int], list[int]]:
    """Indices (finish order) of the training scans and of the rolling hold-out.

    Scan ``i`` is a validation scan when ``(i + 1) % every == 0``; the last ``size`` validation scans are held
    out, the rest train. ``every=5, size=2`` on 12 scans holds out 4 and 9 and trains on the other 10; on 15
    scans it holds out 9 and 14, and 4 trains again.
    """
    if every < 2 or size < 1:
        raise ValueError(f"holdout_every must be >= 2 and holdout_size >= 1, got {every} and {size}")
    val = [i for i in range(n_finished) if (i + 1) % every == 0][-size:]
    held = set(val)
    return [i for i in range(n_finished) if i not in held], val


def warmup_ema(decay: float) -> Any:
    """A ``multi_avg_fn`` for ``AveragedModel``: an exponential moving average whose decay warms up.

    After ``n`` averaged steps the decay is ``min(decay, (1 + n) / (10 + n))``, so a long average (``decay``
    0.999, about 1000 steps) does not hold the first steps' weights for a thousand steps: after 0 steps the
    average moves 90% of the way to the model, after 90 steps 10%, and from ``n = 9 / (1 - decay) - 10`` on it
    moves ``1 - decay``.
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: Any) -> None:
        n = float(num_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        for a, c in zip(averaged, current, strict=True):
            if a.is_floating_point():
                a.lerp_(c.to(a.dtype), weight)
            else:  # counters (a norm layer's batches seen): the model's own
                a.copy_(c)

    return update


def _dice_on_grid(prob: np.ndarray, target: np.ndarray) -> float:
    a, b = prob >= 0.5, target >= 0.5
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


@dataclass
class ContinualLearner:
    """The candidate segmenter, its optimiser, the finished scans and the gate (see the module docstring).

    Parameters
    ----------
    champion : Trainer
        The campaign's trainer; its model predicts, and receives the candidate's weights on promotion.
    batch : int
        Finished scans per optimiser step.
    gate_every : int
        Steps between gates.
    holdout_every, holdout_size : int
        The rolling hold-out (:func:`holdout_split`).
    share : float
        Share of the measured steps-per-minute that :meth:`idle` hands out, in ``(0, 1]``.
    loss : str
        Base loss (:data:`dil_core.losses.BASE_LOSSES`); default the champion's.
    flips : bool
        Test-time flips when the gate predicts the hold-out (as the campaign predicts).
    ema : float, optional
        With a decay in ``(0, 1)``, the gate measures and promotes an exponential moving average of the
        candidate's weights (``torch.optim.swa_utils.AveragedModel``) instead of its last step's weights.
    seed_share : float, optional
        With a share in ``[0, 1]``, each scan of a batch is a seed scan (``FinishedScan.seed``) with this
        probability while the training scans hold both seed and other scans, uniformly within each group;
        None: uniformly over all training scans.
    rng : seed or Generator
        Batches and augmentation.
    clock : callable
        Seconds for timing the steps (:attr:`seconds_per_step`); default ``time.perf_counter``.
    """

    champion: Trainer
    batch: int = 2
    gate_every: int = 50
    holdout_every: int = 5
    holdout_size: int = 3
    share: float = 1.0
    loss: str | None = None
    flips: bool = False
    ema: float | None = None
    seed_share: float | None = None
    rng: RngLike = 0
    clock: Callable[[], float] = time.perf_counter
    finished: list[FinishedScan] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.batch < 1 or self.gate_every < 1:
            raise ValueError(f"batch and gate_every must be >= 1, got {self.batch} and {self.gate_every}")
        if not (isinstance(self.share, int | float) and 0.0 < self.share <= 1.0):
            raise ValueError(f"share must lie in (0, 1], got {self.share!r}")
        holdout_split(0, every=self.holdout_every, size=self.holdout_size)  # checks the two sizes
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise ValueError(f"ema must lie in (0, 1), got {self.ema!r}")
        if self.seed_share is not None and not 0.0 <= self.seed_share <= 1.0:
            raise ValueError(f"seed_share must lie in [0, 1], got {self.seed_share!r}")
        self.model = copy.deepcopy(self.champion.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.champion.lr)
        self.averaged = None if self.ema is None else AveragedModel(
            self.model, multi_avg_fn=warmup_ema(self.ema), use_buffers=True)
        self.loss = self.loss or self.champion.loss
        self._rng = np.random.default_rng(self.rng)
        self.steps = 0
        self.seconds = 0.0
        self._since_gate = 0
        self._champion_score: tuple[tuple[str, ...], float] | None = None
        self._credit = 0.0  # steps owed by idle() but not yet run (fractions carry over)
        self.owed = 0.0  # every step idle() has handed out so far (minutes times the rate at the time)

    # -- the finished scans --------------------------------------------------------------------------------
    def add(self, scan: FinishedScan) -> None:
        """A scan finished: its final mask joins the pool (as a training or a validation scan)."""
        if self.finished and np.shape(scan.image_grid) != np.shape(self.finished[0].image_grid):
            raise ValueError(
                f"finished scan {scan.case_id!r} has grid {np.shape(scan.image_grid)}, the others "
                f"{np.shape(self.finished[0].image_grid)}"
            )
        self.finished.append(scan)

    def split(self) -> tuple[list[FinishedScan], list[FinishedScan]]:
        """The training scans and the hold-out, as :func:`holdout_split` assigns them now."""
        train, val = holdout_split(len(self.finished), every=self.holdout_every, size=self.holdout_size)
        return [self.finished[i] for i in train], [self.finished[i] for i in val]

    # -- training ------------------------------------------------------------------------------------------
    @property
    def seconds_per_step(self) -> float | None:
        """Mean wall seconds of one of this learner's optimiser steps so far (None before the first)."""
        return self.seconds / self.steps if self.steps else None

    def step(self) -> float:
        """One optimiser step of the candidate on ``batch`` augmented training scans; returns the loss."""
        train, _ = self.split()
        if not train:
            raise ValueError("no finished scan to train on yet")
        start = self.clock()
        p = self.sampling(train)
        picks = self._rng.choice(len(train), size=self.batch, p=p,
                                 replace=(len(train) if p is None else int((p > 0).sum())) < self.batch)
        triples = [self._augmented(train[int(i)]) for i in picks]
        device = self.champion.device
        divisor = spatial_divisor(self.model)
        images, targets, weights = (
            pad_to_divisor(torch.from_numpy(np.stack([t[k] for t in triples]))[:, None].to(device), divisor)
            for k in range(3)
        )
        if patch_size(self.model) is not None:  # large grids train on patches (see build_segmenter)
            images, targets, weights = random_patches((images, targets, weights), patch_size(self.model),
                                                      rng=self._rng)
        self.model.to(device).train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = _per_sample_losses(self.model, images, targets, weights, self.loss).mean()  # type: ignore[arg-type]
        loss.backward()
        self.optimizer.step()
        if self.averaged is not None:
            self.averaged.update_parameters(self.model)
        self.steps += 1
        self._since_gate += 1
        self.seconds += self.clock() - start
        return float(loss.detach())

    def sampling(self, train: Sequence[FinishedScan]) -> np.ndarray | None:
        """Each training scan's probability of a place in a batch (None: uniform; see ``seed_share``)."""
        seeds = np.array([s.seed for s in train])
        if self.seed_share is None or seeds.all() or not seeds.any():
            return None
        p = np.where(seeds, self.seed_share / seeds.sum(), (1.0 - self.seed_share) / (~seeds).sum())
        return p / p.sum()

    def _augmented(self, scan: FinishedScan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if scan.weight_grid is None:
            image, target = strong_augment(scan.image_grid, scan.target_grid, rng=self._rng)  # type: ignore[misc]
            return image, target, np.ones_like(target)
        out = strong_augment(scan.image_grid, scan.target_grid, rng=self._rng, weight=scan.weight_grid)
        return out  # type: ignore[return-value]

    def train(self, n_steps: int, *, should_stop: Callable[[], bool] | None = None) -> int:
        """Up to ``n_steps`` steps, a gate after every ``gate_every``; returns the steps run.

        ``should_stop`` is asked before each step and before each gate (the round service stops as soon as a
        round waits); a gate it puts off comes first when training goes on. Nothing is trained before the
        first finished scan outside the hold-out.
        """

        def stop() -> bool:
            return should_stop is not None and should_stop()

        done = 0
        while done < n_steps and self.split()[0] and not stop():
            if self._since_gate < self.gate_every:
                self.step()
                done += 1
            if self._since_gate >= self.gate_every and not stop():
                self.gate()
        return done

    def idle(self, minutes: float, *, should_stop: Callable[[], bool] | None = None) -> int:
        """Train for ``minutes`` of physician time: the steps this machine runs in it, times ``share``.

        The rate is this learner's own measured seconds per step; before its first step one step is run to
        measure it. Returns the steps run.
        """
        if minutes < 0 or not math.isfinite(minutes):
            raise ValueError(f"minutes must be a finite number >= 0, got {minutes!r}")
        if not self.split()[0]:
            return 0
        done = 0
        if self.seconds_per_step is None:
            done += self.train(1, should_stop=should_stop)
            self._credit -= 1
        rate = self.share * 60.0 / (self.seconds_per_step or 1.0)
        self._credit += minutes * rate
        self.owed += minutes * rate
        n = max(0, int(self._credit))
        ran = self.train(n, should_stop=should_stop)
        self._credit -= ran
        return done + ran

    # -- the gate ------------------------------------------------------------------------------------------
    def _score(self, model: torch.nn.Module, scans: Sequence[FinishedScan]) -> float:
        return float(np.mean([
            _dice_on_grid(predict(model, s.image_grid, device=self.champion.device, flips=self.flips), s.target_grid)
            for s in scans
        ]))

    def gate(self) -> GateResult:
        """Compare the candidate with the champion on the hold-out; promote the candidate if it is better."""
        train, val = self.split()
        names = tuple(s.case_id for s in val)
        self._since_gate = 0
        if not val:
            result = GateResult(self.steps, None, None, True, names, len(train))
        else:
            if self._champion_score is None or self._champion_score[0] != names:
                self._champion_score = (names, self._score(self.champion.model, val))
            candidate = self._score(self.candidate, val)
            champion = self._champion_score[1]
            result = GateResult(self.steps, candidate, champion, candidate > champion, names, len(train))
        if result.promoted:
            self.promote(result.candidate, names)
        self.gates.append(result)
        return result

    def promote(self, score: float | None = None, holdout: tuple[str, ...] = ()) -> None:
        """The champion takes the candidate's weights (its optimiser is left as it is: the champion never trains)."""
        self.champion.model.load_state_dict(self.candidate.state_dict())
        self.champion.steps = max(self.champion.steps, 1)  # a trained segmenter: scans start from its prediction
        self._champion_score = None if score is None else (holdout, score)

    @property
    def candidate(self) -> torch.nn.Module:
        """The weights the gate measures: the moving average with ``ema``, else the model as trained."""
        return self.model if self.averaged is None else self.averaged.module

    @property
    def promotions(self) -> int:
        return sum(g.promoted for g in self.gates)

    # -- state ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The candidate's weights and optimiser, the counters and the randomness (not the finished scans)."""
        return {
            "model": _to_cpu(self.model.state_dict()),
            "optimizer": _to_cpu(self.optimizer.state_dict()),  # copies: a loaded state must not share tensors
            "steps": self.steps,
            "seconds": self.seconds,
            "since_gate": self._since_gate,
            "rng_state": self._rng.bit_generator.state,
            "averaged": None if self.averaged is None else _to_cpu(self.averaged.state_dict()),
        }

    def load_state_dict(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.averaged is not None and state.get("averaged") is not None:
                self.averaged.load_state_dict(state["averaged"])
            rng = generator_from_state(state["rng_state"])
        except (KeyError, TypeError, RuntimeError, AttributeError) as err:
            raise ValueError(f"continual learner state: missing or incompatible entry ({err})") from err
        self._rng = rng
        self.steps = int(state["steps"])
        self.seconds = float(state.get("seconds", 0.0))
        self._since_gate = int(state.get("since_gate", 0))
