"""Scheduled retraining: a segmenter trained offline on every final mask so far, promoted only if it is better.

``retrain_flow(workspace)`` takes the campaign's finished scans (ledger state ``passed`` or ``at_quota`` with a
final mask), splits them into training and validation scans (seeded, so the same cases and seed give the same
split), trains a fresh segmenter of the campaign's architecture on the training scans' final masks, and
measures its mean Dice on the validation scans against their ground truth where the ledger has one, else
against their accepted final mask. The current ``champion`` (if any) is measured on the same validation scans.
The new segmenter is registered in MLflow (a ``retrain-...`` run of the campaign's experiment, tagged with its
validation Dice and the scans it saw) and in the ledger; alias ``champion`` moves to it only when its
validation Dice is strictly higher than the champion's.

:func:`retrain_deployment` makes the flow a Prefect deployment with a cron schedule; :func:`serve_retraining`
serves it (blocking, what ``dil retrain WORKSPACE --cron "0 2 * * *"`` runs); :func:`run_retraining_once` runs
it now (``--once``). Cron schedules are created by the Prefect server's scheduler service, which the
ephemeral (embedded) API does not run: without a configured ``PREFECT_API_URL``, :func:`serve_retraining`
starts a local Prefect server on 127.0.0.1 with its database in the workspace for as long as it serves.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from dil.workspace import Workspace

__all__ = [
    "RetrainSample",
    "image_on_grid",
    "local_prefect_server",
    "retrain_deployment",
    "retrain_flow",
    "run_retraining_once",
    "serve_retraining",
    "split_cases",
]

CHAMPION = "champion"


@dataclass(frozen=True)
class RetrainSample:
    """One finished scan on the working grid, with the full-resolution target to measure Dice against.

    Attributes
    ----------
    case_id : str
    image_grid : (gx, gy, gz) ndarray
        The scan on the segmenter's grid, exactly as the online rounds see it.
    target_grid : (gx, gy, gz) ndarray
        The final mask (training scans) on the grid, soft after linear resampling.
    target : (X, Y, Z) ndarray of uint8
        Validation target in the scan's geometry: ground truth where known, else the accepted final mask.
    target_kind : {"ground_truth", "final_mask"}
    preprocessing : dil_core.preprocess.Preprocessing
    """

    case_id: str
    image_grid: np.ndarray
    target_grid: np.ndarray
    target: np.ndarray
    target_kind: str
    preprocessing: Any


def split_cases(case_ids: Sequence[str], *, val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split finished scans into training and validation cases (seeded; at least one of each).

    Parameters
    ----------
    case_ids : sequence of str
        At least two distinct case ids (their order does not matter).
    val_fraction : float
        Share of validation cases in (0, 1); rounded, then clipped to ``[1, n - 1]``.
    seed : int
        Same cases and seed, same split.

    Returns
    -------
    (train, val) : lists of str, each sorted

    Raises
    ------
    ValueError
        Fewer than two distinct cases, or ``val_fraction`` outside (0, 1).
    """
    cases = sorted(set(case_ids))
    if len(cases) < 2:
        raise ValueError(f"case_ids: retraining needs at least 2 finished scans (one to validate on), got {len(cases)}")
    if isinstance(val_fraction, bool) or not (isinstance(val_fraction, int | float) and 0.0 < val_fraction < 1.0):
        raise ValueError(f"val_fraction: must lie strictly between 0 and 1, got {val_fraction!r}")
    n_val = min(max(1, round(val_fraction * len(cases))), len(cases) - 1)
    order = np.random.default_rng(seed).permutation(len(cases))
    val = sorted(cases[i] for i in order[:n_val])
    train = sorted(cases[i] for i in order[n_val:])
    return train, val


# ---------------------------------------------------------------------------------------------------- tasks
def image_on_grid(image: np.ndarray, preprocessing: Any) -> np.ndarray:
    """The segmenter's input for a scan: the same as ``dil_core.session.ScanSession.image_grid``."""
    from dil_core.preprocess import segmenter_input

    return segmenter_input(preprocessing, image)


@task(name="retrain-load", cache_policy=NONE, retries=1, tags=["io"])
def load_samples_task(workspace: str, case_ids: Sequence[str]) -> list[RetrainSample]:
    """Read each finished scan, its final mask and its ground truth, and put them on the working grid."""
    from dil_core.config import load_config
    from dil_core.io import read_label, read_scan
    from dil_core.ledger import Ledger
    from dil_core.preprocess import Preprocessing, fit_preprocessor, to_grid

    ws = Workspace(Path(workspace))
    cfg = load_config(ws.config_file)
    ledger = Ledger.open(cfg.tracking.ledger_url or ws.ledger_url, create=False)
    try:
        campaign = ledger.get_campaign(cfg.name)
        samples = []
        for case in case_ids:
            scan = ledger.find_scan(campaign.id, case)
            if scan is None or not scan.final_mask_path:
                raise LookupError(f"campaign {cfg.name!r} has no finished scan {case!r} with a final mask")
            image = read_scan(scan.image_path).array
            prep = (
                Preprocessing.from_dict(scan.preprocessing)
                if scan.preprocessing
                else fit_preprocessor(image, grid=cfg.training.grid)
            )
            final, _ = read_label(scan.final_mask_path)
            final = (final > 0).astype(np.uint8)
            if final.shape != image.shape:
                raise ValueError(f"final mask of {case!r} has shape {final.shape}, the scan {image.shape}")
            gt = None
            if scan.ground_truth_path:
                gt_arr, _ = read_label(scan.ground_truth_path)
                gt = (gt_arr > 0).astype(np.uint8)
            samples.append(
                RetrainSample(
                    case_id=case,
                    image_grid=image_on_grid(image, prep),
                    target_grid=np.clip(to_grid(prep, final.astype(np.float32), order=1), 0.0, 1.0),
                    target=gt if gt is not None else final,
                    target_kind="ground_truth" if gt is not None else "final_mask",
                    preprocessing=prep,
                )
            )
        return samples
    finally:
        ledger.close()


@task(name="retrain-train", cache_policy=NONE, tags=["gpu"])
def train_offline_task(
    samples: Sequence[RetrainSample],
    *,
    segmenter: str,
    channels: Sequence[int],
    learning_rate: float,
    epochs: int,
    device: str,
    seed: int,
) -> tuple[Any, list[float]]:
    """Train a fresh segmenter on the samples' final masks: ``epochs`` passes, one step per scan, shuffled.

    Returns the model and the mean loss of each epoch. Uses :class:`dil_core.training.Trainer` with no replay
    (``m = 0``, ``lambda_L = 1``: the plain W-weighted BCE + Dice of eq. 9 with W = 1) and its augmentation.
    """
    from dil_core.models import build_segmenter, resolve_device
    from dil_core.replay import ReplayBuffer
    from dil_core.training import Trainer

    model = build_segmenter(segmenter, channels=channels, seed=seed)
    trainer = Trainer(model, ReplayBuffer(1, 2, rng=seed), lr=learning_rate, device=resolve_device(device), rng=seed)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        epoch = []
        for i in rng.permutation(len(samples)):
            s = samples[int(i)]
            weight = np.ones_like(s.image_grid, dtype=np.float32)
            stats = trainer.train_round(s.image_grid, s.target_grid, weight, n_steps=1, lambda_l=1.0, m=0)
            epoch.extend(stats.losses)
        losses.append(float(np.mean(epoch)))
    return trainer.model.cpu(), losses


@task(name="retrain-evaluate", cache_policy=NONE, tags=["gpu"])
def evaluate_task(model: Any, samples: Sequence[RetrainSample]) -> dict[str, float]:
    """Dice of the model's thresholded prediction against each validation target, in the scan's geometry."""
    from dil_core.metrics import dice
    from dil_core.models import predict
    from dil_core.preprocess import from_grid

    out = {}
    for s in samples:
        prob = predict(model, s.image_grid)
        mask = from_grid(s.preprocessing, prob, order=1, threshold=0.5)
        out[s.case_id] = float(dice(s.target, mask))
    return out


# ----------------------------------------------------------------------------------------------------- flow
def _finished_cases(ledger: Any, campaign_id: int) -> list[str]:
    from dil_core.ledger import ScanState

    return [
        s.case_id
        for s in ledger.list_scans(campaign_id, state=[ScanState.PASSED, ScanState.AT_QUOTA])
        if s.final_mask_path and Path(s.final_mask_path).is_file()
    ]


def _champion_model(tracker: Any, cfg: Any) -> tuple[int | None, Any]:
    """The current champion as a model (architecture from its version's tags, else the config), or None."""
    version = tracker.alias_version(CHAMPION)
    if version is None:
        return None, None
    t = cfg.training
    return version, tracker.load_model(version, segmenter=t.segmenter, channels=list(t.channels))


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
    from dil.tracking import Tracker, processed_rounds
    from dil_core.config import load_config
    from dil_core.ledger import Ledger, LedgerStateError

    logger = get_run_logger()
    ws = Workspace(Path(workspace).resolve())
    if not ws.exists():
        raise FileNotFoundError(f"{ws.root} is not a DIL workspace (no {ws.config_file.name})")
    cfg = load_config(ws.config_file)
    ledger = Ledger.open(cfg.tracking.ledger_url or ws.ledger_url, create=False)
    try:
        campaign = ledger.get_campaign(cfg.name)
        finished = _finished_cases(ledger, campaign.id)
        if len(finished) < 2:
            reason = f"{len(finished)} finished scan(s) with a final mask; retraining needs at least 2"
            logger.warning("retraining skipped: %s", reason)
            return {"status": "skipped", "reason": reason, "promoted": False}
        train_cases, val_cases = split_cases(finished, val_fraction=val_fraction, seed=seed)
        train = load_samples_task(str(ws.root), train_cases)
        val = load_samples_task(str(ws.root), val_cases)
        t = cfg.training
        lr = float(learning_rate) if learning_rate is not None else t.learning_rate
        model, losses = train_offline_task(
            train, segmenter=t.segmenter, channels=list(t.channels), learning_rate=lr, epochs=epochs,
            device=t.device, seed=seed,
        )
        scores = evaluate_task(model, val)
        val_dice = float(np.mean(list(scores.values())))

        tracker = Tracker.open(ws.root, cfg.name, cfg.tracking.mlflow_uri)
        champion_before, champion = _champion_model(tracker, cfg)
        champion_dice = None
        if champion is not None:
            champion_dice = float(np.mean(list(evaluate_task(champion, val).values())))
        promoted = champion_dice is None or val_dice > champion_dice

        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        run = tracker.client.create_run(
            tracker.experiment_id,
            run_name=f"retrain-{stamp}",
            tags={"campaign": cfg.name, "kind": "retrain", "mlflow.parentRunId": tracker.campaign_run_id()},
        )
        run_id = run.info.run_id
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        params = {
            "epochs": epochs, "val_fraction": val_fraction, "seed": seed, "learning_rate": lr,
            "segmenter": t.segmenter, "channels": ",".join(map(str, t.channels)), "grid": ",".join(map(str, t.grid)),
            "n_train": len(train_cases), "n_val": len(val_cases),
        }
        metrics = [Metric("train_loss", v, now, i + 1) for i, v in enumerate(losses)]
        metrics.append(Metric("val_dice", val_dice, now, 0))
        metrics += [Metric("val_dice_" + re.sub(r"[^A-Za-z0-9_\-./ ]", "_", c)[:200], d, now, 0)
                    for c, d in sorted(scores.items())]
        if champion_dice is not None:
            metrics.append(Metric("champion_val_dice", champion_dice, now, 0))
        tracker.client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
        version = tracker.register_segmenter(
            model,
            case_id=None,
            rounds=None,
            scans_seen=len(train_cases),
            kind="retrain",
            run_id=run_id,
            tags={
                "segmenter": t.segmenter,
                "channels": ",".join(map(str, t.channels)),
                "val_dice": f"{val_dice:.6f}",
                "val_cases": ",".join(val_cases)[:5000],
                "promoted": str(promoted).lower(),
            },
        )
        if promoted:
            tracker.set_alias(CHAMPION, version)
        tracker.client.set_terminated(run_id, "FINISHED")
        try:
            ledger.register_model_version(
                campaign.id, tracker.model_uri(version), scans_seen=len(train_cases),
                rounds_seen=processed_rounds(ledger, campaign.id), version=version,
                alias=CHAMPION if promoted else None,
            )
        except LedgerStateError as err:  # the ledger saw a newer version first: MLflow still has this one
            logger.warning("model version %s not mirrored in the ledger: %s", version, err)
        logger.info(
            "retrained segmenter version %s: validation Dice %.3f (champion %s: %s) -> %s",
            version, val_dice, champion_before, "none" if champion_dice is None else f"{champion_dice:.3f}",
            "promoted to champion" if promoted else "champion kept",
        )
        return {
            "status": "registered",
            "version": version,
            "val_dice": val_dice,
            "val_dice_per_case": scores,
            "champion_before": champion_before,
            "champion_val_dice": champion_dice,
            "promoted": promoted,
            "train_cases": train_cases,
            "val_cases": val_cases,
            "losses": losses,
            "run_id": run_id,
        }
    finally:
        ledger.close()


# ------------------------------------------------------------------------------------------- deployment
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
        Call ``.apply()`` to register it, or give it to :func:`serve_retraining` / ``prefect.serve``.

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def local_prefect_server(workspace: Workspace, *, timeout_s: float = 120.0) -> Iterator[str]:
    """A Prefect server (with its scheduler) on 127.0.0.1, database in the workspace's Prefect home.

    Yields the API URL; the server is stopped when the block ends. Its log is
    ``<ws>/prefect/server.log``.
    """
    home = workspace.prefect_home
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="true")
    log = open(home / "server.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the local Prefect server exited with code {proc.returncode}; see {home / 'server.log'}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the local Prefect server did not answer within {timeout_s:.0f} s; see {home / 'server.log'}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def serve_retraining(
    workspace: str | os.PathLike[str],
    cron: str,
    *,
    api_url: str | None = None,
    **options: Any,
) -> None:
    """Serve the retraining deployment on its cron schedule until interrupted (Ctrl-C / SIGTERM).

    Parameters
    ----------
    workspace : path
        The campaign's workspace.
    cron : str
        Cron expression, e.g. ``"0 2 * * *"``.
    api_url : str, optional
        Prefect API to register with; default: ``PREFECT_API_URL`` if set, else the campaign config's
        ``tracking.prefect_api_url``, else a local server started for as long as this serves.
    **options
        ``name``, ``epochs``, ``val_fraction``, ``seed``, ``timezone_name`` for :func:`retrain_deployment`.

    Raises
    ------
    ValueError, FileNotFoundError
        As :func:`retrain_deployment`.
    """
    from prefect import serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from dil_core.config import load_config

    deployment = retrain_deployment(workspace, cron, **options)
    ws = Workspace(Path(workspace).resolve())
    url = api_url or os.environ.get("PREFECT_API_URL") or load_config(ws.config_file).tracking.prefect_api_url
    with contextlib.ExitStack() as stack:
        if not url:
            url = stack.enter_context(local_prefect_server(ws))
        stack.enter_context(temporary_settings({PREFECT_API_URL: url}))
        serve(deployment, pause_on_shutdown=False)


def run_retraining_once(workspace: str | os.PathLike[str], **options: Any) -> dict[str, Any]:
    """Run the retraining flow now (``dil retrain WORKSPACE --once``); see :func:`retrain_flow` for options."""
    return retrain_flow(str(Path(workspace).resolve()), **options)
