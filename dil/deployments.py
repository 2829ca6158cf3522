"""The campaign's flows as Prefect deployments on a process work pool, and the worker that runs them.

``dil worker WORKSPACE`` registers two deployments of the workspace's campaign on the work pool ``dil``
(a ``process`` pool, created if missing) and runs a Prefect process worker on it:

* ``dil-round/<campaign>``: process a scan's submitted round (parameter ``case_id``), learning from the scan
  if the round finished it; the round is claimed in the ledger first, so a round the round service or
  another worker holds is never processed twice;
* ``dil-retrain/<campaign>``: retrain the segmenter on every final mask (:func:`flows.retrain.retrain_flow`).

Each flow run is a fresh process started by the worker (the pool's ``process`` type) from this package's
folder; its entry points here prepare the environment (telemetry off, the workspace's Prefect home) and
install MLflow tracking before the flow's code runs, as ``dil`` does for its own commands. Runs are created
from the Prefect UI or API, by ``prefect deployment run``, or by ``dil resume WORKSPACE --pool`` for every
submitted round. A flow run pays a process start (the libraries' import, the segmenter's load); a physician's
round goes through the warm round service (``dil serve``) instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow

import dil
from dil.telemetry import TELEMETRY_OFF
from dil_core.workspace import Workspace

__all__ = ["POOL", "pool_retrain", "pool_round", "register_deployments", "run_worker", "submit_rounds"]

#: The project's work pool (process type).
POOL = "dil"
_SOURCE = Path(dil.__file__).resolve().parents[1]  # the folder holding the dil, flows and tasks packages


def _prepare(workspace: str) -> Any:
    from dil.console import heavy_context

    return heavy_context(workspace)


@flow(name="dil-round", persist_result=False)
def pool_round(workspace: str, case_id: str) -> dict[str, Any]:
    """Process the scan's submitted round on a pool worker (see :func:`flows.round.process_round`)."""
    from flows.round import process_round

    ctx = _prepare(workspace)
    return process_round(ctx, case_id, learn=True)


@flow(name="dil-retrain", persist_result=False)
def pool_retrain(workspace: str, epochs: int = 20, val_fraction: float = 0.25, seed: int = 0) -> dict[str, Any]:
    """Retrain the campaign's segmenter on a pool worker (see :func:`flows.retrain.retrain_flow`)."""
    from flows.retrain import retrain_flow

    _prepare(workspace)
    return dict(retrain_flow.fn(workspace, epochs=epochs, val_fraction=val_fraction, seed=seed))


def _ensure_pool(pool: str) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass


def register_deployments(ws: Workspace, campaign: str, *, pool: str = POOL) -> dict[str, str]:
    """Create (or update) the campaign's round and retraining deployments on ``pool``; their ids by name.

    Needs a Prefect server (``PREFECT_API_URL``): a work pool is the server's.
    """
    _ensure_pool(pool)
    env = {**TELEMETRY_OFF, "PREFECT_HOME": str(ws.prefect_home)}
    ids = {}
    for entry, params in (("pool_round", {"workspace": str(ws.root)}),
                          ("pool_retrain", {"workspace": str(ws.root)})):
        remote = flow.from_source(source=str(_SOURCE), entrypoint=f"dil/deployments.py:{entry}")
        dep_id = remote.deploy(  # type: ignore[union-attr]
            name=campaign, work_pool_name=pool, parameters=params, job_variables={"env": env},
            build=False, push=False, print_next_steps=False, ignore_warnings=True,
            tags=[f"campaign:{campaign}"],
        )
        ids[f"{remote.name}/{campaign}"] = str(dep_id)
    return ids


def submit_rounds(ctx: Any) -> list[str]:
    """One ``dil-round/<campaign>`` flow run per submitted round, for the pool's workers; the runs' names."""
    from prefect.deployments import run_deployment

    names = []
    for scan, rnd in ctx.ledger.submitted_rounds(ctx.campaign_id):
        name = f"{scan.case_id}-round-{rnd.number}"
        run_deployment(f"dil-round/{ctx.config.name}", parameters={"case_id": scan.case_id},
                       flow_run_name=name, timeout=0, tags=[f"case:{scan.case_id}"])
        names.append(name)
    return names


def run_worker(ws: Workspace, *, pool: str = POOL, limit: int | None = None, name: str | None = None) -> int:
    """Run ``prefect worker start`` on ``pool`` until interrupted (its exit code)."""
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    if name:
        cmd += ["--name", name]
    env = {**os.environ, **TELEMETRY_OFF, "PREFECT_HOME": str(ws.prefect_home)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_SOURCE), env.get("PYTHONPATH", "")) if p)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130
