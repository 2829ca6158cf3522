"""Continuous training in the round service: the candidate learns between submissions, the gate publishes champions.

:class:`ContinualTraining` keeps a :class:`dil_core.continual.ContinualLearner` in step with the ledger and
trains it whenever the service has nothing else to do:

* **The finished scans** come from the ledger (passed or at quota, with a final mask), in the order they
  finished; a reopened scan leaves the pool. Each is read once and kept on the working grid.
* **The champion** starts as the newest checkpoint the ledger names; if that changes without this learner
  (a scheduled retraining was promoted), it is loaded again and the gate measures the new one.
* **Training never blocks a round.** :meth:`ContinualTraining.run` asks ``should_stop`` before every step
  and every gate; the service says stop as soon as a submission arrives or a round is being processed.
* **A promotion** is registered in the tracking store first (MLflow: a ``continual-...`` run with the
  candidate's and the champion's hold-out Dice, a model version, alias ``champion``), then written as a
  trainer checkpoint ``cont-<steps>`` and named in the ledger (a model version with alias ``champion``), so
  the campaign's rounds predict with it from their next scan on. Only the last two hold the lock rounds take.
  Every gate, promoted or not, is appended to ``state/continual-gates.jsonl``.
* **The candidate** is checkpointed every ``continual.checkpoint_every`` steps and whenever training pauses, to
  ``state/checkpoints/continual-candidate.pt``; a restarted service goes on from it.
* Among several services on one campaign, the ledger lease ``continual:<campaign>`` lets one train at a time.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dil_core.continual import ContinualLearner, FinishedScan, GateResult
from dil_core.ledger import LedgerStateError, ScanState
from flows.context import CampaignContext, _atomic_save
from flows.retrain import CHAMPION

__all__ = ["ContinualTraining"]

_log = logging.getLogger("dil.continual")


class ContinualTraining:
    """The campaign's continual learner as a long-lived process keeps it (see the module docstring)."""

    def __init__(self, ctx: CampaignContext, worker: str) -> None:
        self.ctx = ctx
        self.worker = worker
        self.lease = f"continual:{ctx.campaign_id}"
        self._samples: dict[str, FinishedScan] = {}
        self._champion_tag: str | None = None
        self._saved_at = 0
        self.learner: ContinualLearner | None = None

    @property
    def candidate_path(self) -> Path:
        return self.ctx.workspace.state_dir() / "checkpoints" / "continual-candidate.pt"

    @property
    def gates_path(self) -> Path:
        return self.ctx.workspace.continual_gates()

    # -- keeping up with the ledger ------------------------------------------------------------------------
    def _finished(self) -> list[Any]:
        scans = self.ctx.ledger.list_scans(self.ctx.campaign_id, state=[ScanState.PASSED, ScanState.AT_QUOTA])
        done = [s for s in scans if s.final_mask_path and Path(s.final_mask_path).is_file()]
        return sorted(done, key=lambda s: (s.finished_at or datetime.min.replace(tzinfo=UTC), s.id))

    def _sample(self, scan: Any) -> FinishedScan:
        """The finished scan on the working grid (a seed scan marked as such, for ``continual.seed_share``)."""
        if scan.case_id not in self._samples:
            from tasks.retrain import load_samples_task

            (s,) = load_samples_task.fn(str(self.ctx.workspace.root), [scan.case_id])
            self._samples[scan.case_id] = FinishedScan(scan.case_id, s.image_grid, s.target_grid.astype(np.float32),
                                                       seed=self.ctx.is_seed(scan))
        return self._samples[scan.case_id]

    def sync(self) -> ContinualLearner:
        """The learner with the ledger's finished scans and champion (built, or restored, on first use)."""
        c = self.ctx.config.continual
        tag = self.ctx.latest_model_tag()
        if self.learner is None:
            champion = self.ctx.load_trainer(tag)
            self.learner = ContinualLearner(
                champion, batch=c.batch, gate_every=c.gate_every, holdout_every=c.holdout_every,
                holdout_size=c.holdout_size, flips=self.ctx.config.training.test_time_flips, ema=c.ema,
                seed_share=c.seed_share, rng=self.ctx.config.training.seed,
            )
            if self.candidate_path.is_file():
                self.learner.load_state_dict(torch.load(self.candidate_path, map_location="cpu", weights_only=False))
                self._saved_at = self.learner.steps
            self._champion_tag = tag
        elif tag != self._champion_tag:  # promoted elsewhere (a retraining): the gate measures that one now
            fresh = self.ctx.load_trainer(tag)
            self.learner.champion.model.load_state_dict(fresh.model.state_dict())
            self.learner._champion_score = None
            self._champion_tag = tag
        finished = self._finished()
        wanted = [s.case_id for s in finished]
        have = [s.case_id for s in self.learner.finished]
        if wanted[: len(have)] != have:  # a scan was reopened: the pool is rebuilt in finish order
            self.learner.finished = []
            have = []
        for scan in finished[len(have):]:
            self.learner.add(self._sample(scan))
        return self.learner

    # -- training ------------------------------------------------------------------------------------------
    def run(self, should_stop: Any, *, max_steps: int | None = None) -> int:
        """Train until ``should_stop()``, ``max_steps`` or nothing to train on; returns the steps run."""
        if not self.ctx.ledger.acquire_lease(self.lease, self.worker, lease_s=600.0):
            return 0
        done = 0
        try:
            learner = self.sync()
            c = self.ctx.config.continual
            while not should_stop() and (max_steps is None or done < max_steps):
                chunk = c.gate_every if max_steps is None else min(c.gate_every, max_steps - done)
                before = len(learner.gates)
                ran = learner.train(chunk, should_stop=should_stop)
                done += ran
                for gate in learner.gates[before:]:
                    self._record(gate)
                if learner.steps - self._saved_at >= c.checkpoint_every:
                    self.save()
                if ran == 0:
                    break
                self.ctx.ledger.acquire_lease(self.lease, self.worker, lease_s=600.0)  # renewed per chunk
                learner = self.sync()
        finally:
            if self.learner is not None and self.learner.steps != self._saved_at:
                self.save()  # each pause too: a service killed while physicians draw loses nothing trained
            self.ctx.ledger.release_lease(self.lease, self.worker)
        return done

    def save(self) -> None:
        """Checkpoint the candidate (written whole, then renamed)."""
        if self.learner is None:
            return
        state = self.learner.state_dict()
        _atomic_save(self.candidate_path, lambda tmp: torch.save(state, tmp), ".pt")
        self._saved_at = self.learner.steps

    def _record(self, gate: GateResult) -> None:
        line = {**gate.__dict__, "holdout": list(gate.holdout), "at": datetime.now(UTC).isoformat()}
        if gate.promoted:
            line["checkpoint"] = self._publish(gate)
        self.gates_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.gates_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
        _log.info("continual gate at step %s: candidate %s, champion %s -> %s", gate.step, gate.candidate,
                  gate.champion, "promoted" if gate.promoted else "kept")

    def _publish(self, gate: GateResult) -> str:
        """Register the new champion in the tracking store, then checkpoint it and name it in the ledger; its tag.

        Only the checkpoint and the ledger's entry are written under the context's lock (the service prunes
        checkpoints under it, so the file and its entry land together): a round waits for those two writes,
        never for the tracking store. A service killed in between leaves a tracked version the ledger does not
        name; the ledger, which decides what predicts, names no checkpoint that is not on disk.
        """
        assert self.learner is not None
        ctx = self.ctx
        tag = f"cont-{gate.step}"
        train, val = self.learner.split()
        uri, version = str(ctx.workspace.checkpoint(tag)), None
        metrics = {"val_dice": gate.candidate if gate.candidate is not None else float("nan")}
        if gate.champion is not None:
            metrics["champion_val_dice"] = gate.champion
        t = ctx.config.training
        params = {"steps": gate.step, "segmenter": t.segmenter, "channels": ",".join(map(str, t.channels)),
                  "grid": ",".join(map(str, t.grid)), "n_train": len(train), "n_val": len(val),
                  "batch": self.learner.batch, "gate_every": self.learner.gate_every}
        try:
            version, uri = ctx.tracking.register_retrained(
                ctx, self.learner.champion.model, train_cases=[s.case_id for s in train],
                val_cases=[s.case_id for s in val], params=params, metrics=metrics, losses=[], promoted=True,
                kind="continual",
            )
        except RuntimeError as err:  # no tracking store installed: the ledger alone records it
            _log.info("continual champion not registered in a tracking store: %s", err)
        except Exception:  # tracking never stops training; the ledger still names the checkpoint
            _log.exception("continual champion %s: the tracking store refused it", tag)
        rounds = sum(len(ctx.processed_rounds(s)) for s in ctx.ledger.list_scans(ctx.campaign_id))
        with ctx.lock:
            ctx.save_trainer(self.learner.champion, tag, cache=False)
            try:
                ctx.ledger.register_model_version(ctx.campaign_id, uri, scans_seen=len(train), rounds_seen=rounds,
                                                  version=version, alias=CHAMPION, checkpoint=tag)
            except LedgerStateError:  # the tracking store's numbering fell behind the ledger's: the ledger numbers it
                ctx.ledger.register_model_version(ctx.campaign_id, uri, scans_seen=len(train), rounds_seen=rounds,
                                                  alias=CHAMPION, checkpoint=tag)
        self._champion_tag = tag
        return tag
