"""The campaign commands of ``dil``: init, campaign run, add, serve, resume, report, retrain, server.

These run flows, so they import Prefect, torch and MLflow (after the environment is prepared).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from dil.console import CLIError, _workspace, console, heavy_context, print_status
from dil.environment import prepare_environment
from dil_core.workspace import Workspace


def _load_config(path: str) -> Any:
    from dil_core.config import load_config

    return load_config(path)


def cmd_init(args: argparse.Namespace) -> int:
    cfg = _load_config(args.config)
    prepare_environment(Workspace(cfg.workspace))
    from flows.setup import init_workspace

    ws = init_workspace(cfg)
    console.print(f"workspace ready: {ws.root}")
    return 0


def cmd_campaign_run(args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    cfg = _load_config(args.config)
    start = time.perf_counter()
    prepare_environment(None)  # telemetry off and one ITK thread before any scan is read
    from flows.setup import init_workspace

    ws = init_workspace(cfg)  # checked and created before Prefect is imported (its home lives in the workspace)
    prepare_environment(ws, prefect_api_url=cfg.tracking.prefect_api_url)
    from flows.campaign import campaign_flow

    ctx = heavy_context(ws.root)
    scans = ctx.ledger.list_scans(ctx.campaign_id)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
        disable=not console.is_terminal,
    ) as progress:
        bar = progress.add_task("rounds (scans done)", total=len(scans))

        def on_round(result: dict[str, Any]) -> None:
            done = sum(1 for s in ctx.ledger.list_scans(ctx.campaign_id) if s.state.value in ("passed", "at_quota"))
            progress.update(bar, completed=done, description=f"{result['case']} round {result.get('round')}")
            if not console.is_terminal:
                dice = result.get("dice_gt_mask")
                console.print(
                    f"{result['case']} round {result.get('round')}: state {result['state']}"
                    + ("" if dice is None else f", Dice {dice:.3f}")
                )

        campaign_flow(str(ws.root), on_round=on_round)
    from dil.physician import open_campaign

    print_status(open_campaign(ws.root))
    if cfg.annotator.kind == "human":
        console.print(f"requests are in {ws.root / 'requests'}; start the round service with `dil serve {ws.root}`")
    console.print(f"wall time: {time.perf_counter() - start:.0f} s")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    ctx = heavy_context(args.workspace)
    from dil.client import wake as wake_service
    from dil_core.cohort import validate_case_id
    from flows.campaign import add_scan, fill_queue

    image = Path(args.image)
    case_id = args.case_id or image.name.split(".")[0]
    validate_case_id(case_id)
    scan = add_scan(ctx.ledger, ctx.campaign_id, ctx.config, case_id, image,
                    Path(args.ground_truth) if args.ground_truth else None)
    if ctx.config.annotator.kind == "human" and not wake_service(ctx.workspace):
        fill_queue(ctx)  # no service running: open its request now if the queue has room
    console.print(f"scan {scan.case_id} queued (state {ctx.scan(case_id).state.value})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from dil.service import RoundService, acquire_service_lock, check_work_dir
    from dil_core.config import load_config

    ws = _workspace(args.workspace)
    work_dir = check_work_dir(ws, args.work_dir, load_config(ws.config_file).tracking.ledger_url)
    lock = acquire_service_lock(ws, work_dir)  # a second service refuses before the heavy imports
    ctx = heavy_context(args.workspace)
    service = RoundService(ctx, port=args.port, lock=lock, work_dir=work_dir, lease_s=args.lease,
                           host=args.host)
    console.print(f"round service for {ctx.workspace.root}: HTTP API at {service.url}; inbox {ctx.workspace.inbox_dir()}")
    service.run_forever()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    ctx = heavy_context(args.workspace)
    from dil.deployments import register_deployments, run_worker
    from dil.server import deployment_server

    url = deployment_server(ctx.workspace)

    ids = register_deployments(ctx.workspace, ctx.config.name, pool=args.pool)
    console.print(f"deployments {', '.join(ids)} on work pool {args.pool!r} of {url}; worker starting")
    return run_worker(ctx.workspace, pool=args.pool, limit=args.limit, name=args.name)


def cmd_resume(args: argparse.Namespace) -> int:
    ctx = heavy_context(args.workspace)
    if args.pool:
        from dil.deployments import register_deployments, submit_rounds
        from dil.server import deployment_server

        deployment_server(ctx.workspace)
        register_deployments(ctx.workspace, ctx.config.name)
        names = submit_rounds(ctx)
        console.print(f"{len(names)} round(s) sent to work pool 'dil': " + (", ".join(names) or "none")
                      + f"; run them with `dil worker {ctx.workspace.root}`")
        return 0
    from flows.campaign import campaign_flow
    from flows.round import learn_finished, round_flow

    failures = []
    for scan, _rnd in ctx.ledger.submitted_rounds(ctx.campaign_id):
        try:
            result = round_flow(str(ctx.workspace.root), scan.case_id)
            console.print(f"{scan.case_id}: round {result.get('round')} processed; {result['state']}")
        except Exception as err:  # keep going: report every failing scan at the end
            failures.append(f"{scan.case_id}: {type(err).__name__}: {err}")
    learn_finished(ctx)
    campaign_flow(str(ctx.workspace.root))
    from dil.physician import open_campaign

    print_status(open_campaign(ctx.workspace.root))
    if failures:
        raise RuntimeError(f"{len(failures)} scan(s) could not be processed: " + "; ".join(failures))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    ctx = heavy_context(args.workspace)
    from dil.report import write_report
    from dil.tracking import sync_campaign

    if args.sync:
        sync_campaign(ctx)
    minutes = args.minutes_per_slice if args.minutes_per_slice is not None else ctx.config.annotator.minutes_per_slice
    html_path, csv_path = write_report(ctx.workspace.root, minutes_per_slice=minutes)
    console.print(f"report: {html_path}\ntable:  {csv_path}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    if not args.once and not args.cron:
        raise CLIError("give --cron '0 2 * * *' to serve retraining on a schedule, or --once to run it now")
    ctx = heavy_context(args.workspace)
    from flows.retrain import retrain_deployment, retrain_flow

    opts = {"epochs": args.epochs, "val_fraction": args.val_fraction, "seed": args.seed}
    if args.once:
        r = retrain_flow(str(ctx.workspace.root), **opts)
        if r["status"] == "skipped":
            console.print(f"retraining skipped: {r['reason']}")
        else:
            console.print(
                f"segmenter version {r['version']}: validation Dice {r['val_dice']:.3f}; "
                + ("now champion" if r["promoted"] else "champion kept")
            )
        return 0
    from dil.server import serve_deployments

    serve_deployments(ctx.workspace, [retrain_deployment(ctx.workspace.root, args.cron, **opts)])
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    ws = _workspace(args.workspace)
    from dil.server import server_url, start_server, stop_server

    if args.action == "start":
        url = start_server(ws)
        console.print(f"local Prefect server: {url} (UI at {url.removesuffix('/api')})")
    elif args.action == "stop":
        console.print("stopped" if stop_server(ws) else "no local server was running")
    else:
        url = server_url(ws)
        console.print(f"running at {url} (UI at {url.removesuffix('/api')})" if url else "not running")
    return 0


def cmd_reopen(args: argparse.Namespace) -> int:
    ctx = heavy_context(args.workspace)
    from dil.client import wake as wake_service
    from flows.round import reopen

    if not args.yes:
        import sys

        if not sys.stdin.isatty():
            raise CLIError("reopen undoes the scan's end and retrains the segmenter without it: confirm with --yes")
        if input(f"reopen {args.case} and retrain the segmenter without it? [y/N] ").strip().lower() not in ("y", "yes"):
            console.print("not reopened")
            return 1
    scan = reopen(ctx, args.case)
    wake_service(ctx.workspace)
    rnd = ctx.ledger.current_round(scan.id)
    where = ctx.workspace.requests_dir(args.case, rnd.number) if rnd is not None else "-"
    console.print(f"{args.case}: reopened ({scan.state.value}); next request {where}")
    return 0
