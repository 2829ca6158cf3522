"""Scheduled retraining: a segmenter trained offline on every final mask so far, promoted only if it is better.

``retrain_flow(workspace)`` takes the campaign's finished scans (ledger state ``passed`` or ``at_quota`` with a
final mask), splits them into training and validation scans (seeded, so the same cases and seed give the same
split), trains a fresh segmenter of the campaign's architecture on the training scans' final masks, and
measures its mean Dice on the validation scans against their ground truth where the ledger has one, else
against their accepted final mask. The current ``champion`` (if any) is measured on the same validation scans.
The new segmenter is registered through the installed tracking (MLflow: a ``retrain-...`` run tagged with its
validation Dice and the scans it saw) and in the ledger; alias ``champion`` moves to it only when its
validation Dice is strictly higher than the champion's, and then the campaign predicts with it: its weights
become the newest segmenter checkpoint, from which later scans start and learn on (one rule: a campaign always
predicts with the newest checkpoint the ledger names, the segmenter that learned from the last finished scan
or the champion of the last retraining, whichever came later).

:func:`retrain_deployment` makes the flow a Prefect deployment with a cron schedule (``dil retrain --cron``
serves it).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger

from dil_core.ledger import LedgerStateError, ScanState
from dil_core.models import build_segmenter
from dil_core.workspace import Workspace
from flows.context import CampaignContext
from tasks.retrain import evaluate_task, load_samples_task, split_cases, train_offline_task

__all__ = ["CHAMPION", "retrain_deployment", "retrain_flow"]

CHAMPION = "champion"


def _finished_cases(ctx: CampaignContext) -> list[str]:
    return [
        s.case_id
        for s in ctx.ledger.list_scans(ctx.campaign_id, state=[ScanState.PASSED, ScanState.AT_QUOTA])
        if s.final_mask_path and Path(s.final_mask_path).is_file()
    ]


def _champion_checkpoint(ctx: CampaignContext, model: Any, version: int) -> str:
    """A trainer checkpoint with the new champion's weights, so the campaign predicts with it from now on.

    The online segmenter's replay buffer comes along (later scans still learn with replay); the optimiser
    starts afresh for the new weights. Written before the ledger names it.
    """
    import torch

    trainer = ctx.load_trainer(ctx.latest_model_tag())
    trainer.model.load_state_dict(model.state_dict())
    trainer.optimizer = torch.optim.Adam(trainer.model.parameters(), lr=trainer.lr)
    trainer.steps = max(trainer.steps, 1)
    tag = f"retrain-v{version}"
    ctx.save_trainer(trainer, tag, cache=False)
    return tag


def _check_options(epochs: int, val_fraction: float, seed: int, learning_rate: float | None) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: must be an integer >= 1, got {epochs!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: must be an integer >= 0, got {seed!r}")
    if learning_rate is not None and not (
        isinstance(learning_rate, int | float) and math.isfinite(learning_rate) and learning_rate > 0
    ):
        raise ValueError(f"learning_rate: must be a finite number > 0, got {learning_rate!r}")
    if isinstance(val_fraction, bool) or not (isinstance(val_fraction, int | float) and 0.0 < val_fraction < 1.0):
        raise ValueError(f"val_fraction: must lie strictly between 0 and 1, got {val_fraction!r}")


@flow(name="dil-retrain", persist_result=False)
def retrain_flow(
    workspace: str,
    epochs: int = 20,
    val_fraction: float = 0.25,
    seed: int = 0,
    learning_rate: float | None = None,
) -> dict[str, Any]:
    """Retrain the campaign's segmenter on all final masks so far; promote it to ``champion`` if it is better.

    Parameters
    ----------
    workspace : str
        The campaign's workspace.
    epochs : int
        Passes over the training scans (one optimiser step per scan and pass), >= 1.
    val_fraction : float
        Share of finished scans held out for validation, in (0, 1) (at least one scan each side).
    seed : int
        Seeds the split, the initial weights, augmentation and the scan order.
    learning_rate : float, optional
        Adam learning rate; default: the campaign's ``training.learning_rate``.

    Returns
    -------
    dict
        ``status`` (``registered`` or ``skipped`` with a ``reason``), ``version``, ``val_dice`` (mean and
        ``per_case``), ``champion_before`` / ``champion_val_dice`` (None without a champion), ``promoted``,
        ``train_cases``, ``val_cases``, ``losses``.

    Raises
    ------
    ValueError
        Bad ``epochs``, ``val_fraction``, ``seed`` or ``learning_rate``.
    FileNotFoundError
        ``workspace`` is not a DIL workspace.
    """
    _check_options(epochs, val_fraction, seed, learning_rate)
    logger = get_run_logger()
    ctx = CampaignContext.open(Path(workspace))
    try:
        finished = _finished_cases(ctx)
        if len(finished) < 2:
            reason = f"{len(finished)} finished scan(s) with a final mask; retraining needs at least 2"
            logger.warning("retraining skipped: %s", reason)
            return {"status": "skipped", "reason": reason, "promoted": False}
        train_cases, val_cases = split_cases(finished, val_fraction=val_fraction, seed=seed)
        train = load_samples_task(str(ctx.workspace.root), train_cases)
        val = load_samples_task(str(ctx.workspace.root), val_cases)
        t = ctx.config.training
        lr = float(learning_rate) if learning_rate is not None else t.learning_rate
        model, losses = train_offline_task(
            train, segmenter=t.segmenter, channels=list(t.channels), learning_rate=lr, epochs=epochs,
            device=t.device, seed=seed, patch=t.patch,
        )
        scores = evaluate_task(model, val)
        val_dice = float(np.mean(list(scores.values())))
        champion_before, champion_dice = None, None
        held = ctx.tracking.champion(ctx)
        if held is not None:
            champion_before, state = held
            champion = build_segmenter(t.segmenter, channels=t.channels, seed=0, patch=t.patch)
            champion.load_state_dict(state)
            champion_dice = float(np.mean(list(evaluate_task(champion, val).values())))
        promoted = champion_dice is None or val_dice > champion_dice
        params = {
            "epochs": epochs, "val_fraction": val_fraction, "seed": seed, "learning_rate": lr,
            "segmenter": t.segmenter, "channels": ",".join(map(str, t.channels)), "grid": ",".join(map(str, t.grid)),
            "n_train": len(train_cases), "n_val": len(val_cases),
        }
        metrics = {"val_dice": val_dice, **{f"val_dice_{c}": d for c, d in sorted(scores.items())}}
        if champion_dice is not None:
            metrics["champion_val_dice"] = champion_dice
        version, uri = ctx.tracking.register_retrained(
            ctx, model, train_cases=train_cases, val_cases=val_cases, params=params, metrics=metrics,
            losses=losses, promoted=promoted,
        )
        rounds = sum(len(ctx.processed_rounds(s)) for s in ctx.ledger.list_scans(ctx.campaign_id))
        checkpoint = _champion_checkpoint(ctx, model, version) if promoted else None
        try:
            ctx.ledger.register_model_version(
                ctx.campaign_id, uri, scans_seen=len(train_cases), rounds_seen=rounds, version=version,
                alias=CHAMPION if promoted else None, checkpoint=checkpoint,
            )
        except LedgerStateError as err:  # the ledger saw a newer version first: the tracking store has this one
            logger.warning("model version %s not mirrored in the ledger: %s", version, err)
        logger.info(
            "retrained segmenter version %s: validation Dice %.3f (champion %s: %s) -> %s",
            version, val_dice, champion_before, "none" if champion_dice is None else f"{champion_dice:.3f}",
            "promoted to champion" if promoted else "champion kept",
        )
        return {
            "status": "registered", "version": version, "val_dice": val_dice, "val_dice_per_case": scores,
            "champion_before": champion_before, "champion_val_dice": champion_dice, "promoted": promoted,
            "train_cases": train_cases, "val_cases": val_cases, "losses": losses,
        }
    finally:
        ctx.ledger.close()


def _check_cron(cron: str) -> str:
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except Exception as err:  # pydantic's ValidationError, or croniter's for a malformed field
        raise ValueError(f"cron: not a valid cron expression (5 fields, e.g. '0 2 * * *'), got {cron!r}") from err
    return cron


def retrain_deployment(
    workspace: str | os.PathLike[str],
    cron: str,
    *,
    name: str | None = None,
    epochs: int = 20,
    val_fraction: float = 0.25,
    seed: int = 0,
    timezone_name: str | None = None,
) -> Any:
    """The retraining flow as a Prefect deployment on a cron schedule (not yet sent to the API).

    Parameters
    ----------
    workspace : path
        The campaign's workspace (an absolute path is stored in the deployment's parameters).
    cron : str
        Cron expression, e.g. ``"0 2 * * *"`` (every night at 02:00).
    name : str, optional
        Deployment name; default ``<campaign>-retrain``.
    epochs, val_fraction, seed
        Default parameters of each scheduled run (see :func:`retrain_flow`).
    timezone_name : str, optional
        IANA time zone of the schedule (default: UTC).

    Returns
    -------
    prefect.deployments.runner.RunnerDeployment
        Call ``.apply()`` to register it, or give it to ``prefect.serve``.

    Raises
    ------
    ValueError
        An invalid cron expression.
    FileNotFoundError
        ``workspace`` is not a DIL workspace.
    """
    from prefect.client.schemas.schedules import CronSchedule

    from dil_core.config import load_config

    ws = Workspace(Path(workspace).resolve())
    if not ws.exists():
        raise FileNotFoundError(f"{ws.root} is not a DIL workspace (no {ws.config_file.name})")
    cfg = load_config(ws.config_file)
    schedule = CronSchedule(cron=_check_cron(cron), timezone=timezone_name or "UTC")
    return retrain_flow.to_deployment(
        name=name or f"{cfg.name}-retrain",
        schedules=[schedule],
        parameters={"workspace": str(ws.root), "epochs": epochs, "val_fraction": val_fraction, "seed": seed},
        tags=["dil", "retrain", cfg.name],
        description=f"Nightly retraining of campaign {cfg.name!r}'s segmenter on all final masks; "
        "alias 'champion' moves only to a better version.",
    )
