"""The ``dil`` command line: init, add, campaign run, submit, accept, status, resume.

Every command exits non-zero with a one-line message on error. Prefect and the heavy libraries are imported
only after the workspace's environment is prepared (telemetry off, Prefect home inside the workspace).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dil.workspace import Workspace, prepare_environment

console = Console(stderr=False, width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True)


class CLIError(Exception):
    """An error shown to the user as one line, exit code 2."""


def _load_config(path: str):  # type: ignore[no-untyped-def]
    from dil_core.config import load_config

    return load_config(path)


def _context(workspace: str):  # type: ignore[no-untyped-def]
    ws = Workspace(Path(workspace).resolve())
    if not ws.exists():
        raise CLIError(f"{ws.root} is not a DIL workspace (no campaign.yaml); create one with `dil init CONFIG`")
    prepare_environment(ws)
    from flows.context import CampaignContext

    return CampaignContext.open(ws.root)


def _print_labor(ctx: Any) -> None:
    table = Table(title=f"campaign {ctx.config.name}: labor per scan")
    for col in ("case", "state", "rounds", "slices per plane", "labor (fraction of full)", "Dice (GT)"):
        table.add_column(col)
    total_fraction = 0.0
    n = 0
    labor_by_id = {lab.scan_id: lab for lab in ctx.ledger.labor_by_scan(ctx.campaign_id)}
    for scan in sorted(ctx.ledger.list_scans(ctx.campaign_id), key=lambda s: s.position):
        rounds = [r for r in ctx.ledger.list_rounds(scan.id) if r.status.value == "processed"]
        labor = labor_by_id[scan.id]
        per_plane = ", ".join(f"{p} {v}" for p, v in sorted(ctx.slices_by_plane(scan).items())) or "-"
        dice = rounds[-1].metrics.get("dice_gt_mask") if rounds and rounds[-1].metrics else None
        table.add_row(
            scan.case_id, scan.state.value, str(len(rounds)), per_plane, f"{labor.fraction:.3f}",
            "-" if dice is None else f"{dice:.3f}",
        )
        total_fraction += labor.fraction
        n += 1
    console.print(table)
    summary = ctx.ledger.status_summary(ctx.campaign_id)
    console.print(
        f"scans: {summary.n_scans} ({', '.join(f'{k} {v}' for k, v in sorted(summary.counts.items()) if v)}); "
        f"slices drawn: {summary.cumulative_slices}; mean labor per scan: "
        f"{(total_fraction / n if n else 0.0):.3f} of full contouring"
    )


def cmd_init(args: argparse.Namespace) -> int:
    cfg = _load_config(args.config)
    prepare_environment(Workspace(cfg.workspace))
    from flows.campaign import init_workspace

    ws = init_workspace(cfg)
    console.print(f"workspace ready: {ws.root}")
    return 0


def cmd_campaign_run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cfg = _load_config(args.config)
    prepare_environment(Workspace(cfg.workspace))
    start = time.perf_counter()
    from flows.campaign import campaign_flow, init_workspace

    ws = init_workspace(cfg)
    ctx = _context(str(ws.root))
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
    _print_labor(_context(str(ws.root)))
    console.print(f"wall time: {time.perf_counter() - start:.0f} s")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    ctx = _context(args.workspace)
    from dil_core.cohort import validate_case_id
    from flows.campaign import add_scan
    from flows.round import open_next_round

    image = Path(args.image)
    case_id = args.case_id or image.name.split(".")[0]
    validate_case_id(case_id)
    scan = add_scan(ctx.ledger, ctx.campaign_id, ctx.config, case_id, image, Path(args.ground_truth) if args.ground_truth else None)
    if ctx.config.annotator.kind == "human" and ctx.ledger.current_round(scan.id) is None and scan.state.value == "queued":
        open_next_round(ctx, scan, 1)
    console.print(f"scan {scan.case_id} queued (state {ctx.scan(case_id).state.value})")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    ws = Workspace(Path(args.workspace).resolve())
    if ws.exists() and os.environ.get("DIL_LOCAL_SERVER", "on") != "off" and "PREFECT_API_URL" not in os.environ:
        from dil.server import start_server

        start_server(ws)  # first use: later submissions reuse it (stop it with `dil server stop`)
    ctx = _context(args.workspace)
    from flows.round import round_flow, submit

    sub_id, created = submit(ctx, args.case, Path(args.label_file))
    console.print(f"submission {'stored' if created else 'already stored (counted once)'} for {args.case} (id {sub_id})")
    if args.no_process:
        return 0
    result = round_flow(str(ctx.workspace.root), args.case)
    _report_round(ctx, args.case, result)
    return 0


def _report_round(ctx: Any, case: str, result: dict[str, Any]) -> None:
    scan = ctx.scan(case)
    if scan.state.value in ("passed", "at_quota"):
        console.print(f"{case}: {scan.state.value}; final mask {scan.final_mask_path}")
        return
    rnd = ctx.ledger.current_round(scan.id)
    if rnd is not None:
        folder = ctx.workspace.requests_dir(case, rnd.number)
        names = ", ".join(
            f"{rnd.planes.get(a, a)} slice {i}" for a, idx in sorted(rnd.requested.items()) for i in idx
        )
        console.print(f"{case}: next request round {rnd.number}: draw {names}\n  {folder / 'request.json'}")


def cmd_accept(args: argparse.Namespace) -> int:
    ctx = _context(args.workspace)
    from flows.round import accept

    path = accept(ctx, args.case)
    console.print(f"{args.case}: accepted; final mask {path}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    ctx = _context(args.workspace)
    _print_labor(ctx)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    ctx = _context(args.workspace)
    from flows.campaign import campaign_flow
    from flows.round import round_flow

    pending = [
        s for s in ctx.ledger.list_scans(ctx.campaign_id)
        if (r := ctx.ledger.current_round(s.id)) is not None and r.status.value == "submitted"
    ]
    for scan in pending:
        _report_round(ctx, scan.case_id, round_flow(str(ctx.workspace.root), scan.case_id))
    if ctx.config.annotator.kind == "simulated":
        campaign_flow(str(ctx.workspace.root))
    _print_labor(_context(args.workspace))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    ctx = _context(args.workspace)
    from dil.report import write_report
    from dil.tracking import sync_campaign

    if args.sync:
        sync_campaign(ctx)
    html_path, csv_path = write_report(ctx.workspace.root, minutes_per_slice=args.minutes_per_slice)
    console.print(f"report: {html_path}\ntable:  {csv_path}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    ctx = _context(args.workspace)
    from flows.retrain import run_retraining_once, serve_retraining

    opts = {"epochs": args.epochs, "val_fraction": args.val_fraction, "seed": args.seed}
    if args.once:
        r = run_retraining_once(ctx.workspace.root, **opts)
        if r["status"] == "skipped":
            console.print(f"retraining skipped: {r['reason']}")
        else:
            console.print(
                f"segmenter version {r['version']}: validation Dice {r['val_dice']:.3f}; "
                + ("now champion" if r["promoted"] else "champion kept")
            )
        return 0
    if not args.cron:
        raise CLIError("give --cron '0 2 * * *' to serve retraining on a schedule, or --once to run it now")
    serve_retraining(ctx.workspace.root, args.cron, **opts)
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    ws = Workspace(Path(args.workspace).resolve())
    if not ws.exists():
        raise CLIError(f"{ws.root} is not a DIL workspace (no campaign.yaml)")
    from dil.server import server_url, start_server, stop_server

    if args.action == "start":
        console.print(f"local Prefect server: {start_server(ws)}")
    elif args.action == "stop":
        console.print("stopped" if stop_server(ws) else "no local server was running")
    else:
        url = server_url(ws)
        console.print(f"running at {url}" if url else "not running")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dil",
        description="Dynamic interactive labeling of 3D medical images: guided slices, proxy masks, online training.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create a campaign workspace from a config and queue its cohort")
    p.add_argument("config", help="campaign YAML (see configs/demo.yaml)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("campaign", help="campaign commands")
    csub = p.add_subparsers(dest="campaign_command", required=True, metavar="COMMAND")
    pr = csub.add_parser("run", help="run a campaign: simulated annotator to the end, or write first requests")
    pr.add_argument("config", help="campaign YAML")
    pr.set_defaults(func=cmd_campaign_run)

    p = sub.add_parser("add", help="add a scan to a campaign's queue (it joins while the campaign runs)")
    p.add_argument("workspace")
    p.add_argument("image", help="NIfTI, NRRD, MHA file or DICOM series folder")
    p.add_argument("--case-id", help="case id (default: the file name without extension)")
    p.add_argument("--ground-truth", help="ground-truth label file, for simulation and evaluation")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("submit", help="submit a label file for a scan's open request and run the round")
    p.add_argument("workspace")
    p.add_argument("case")
    p.add_argument("label_file")
    p.add_argument("--no-process", action="store_true", help="store only; run the round later with `dil resume`")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("accept", help="accept a scan's current mask as final")
    p.add_argument("workspace")
    p.add_argument("case")
    p.set_defaults(func=cmd_accept)

    p = sub.add_parser("status", help="each scan's state and the labor spent")
    p.add_argument("workspace")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("report", help="write the labor-cost report (HTML with plots, and a CSV)")
    p.add_argument("workspace")
    p.add_argument("--minutes-per-slice", type=float, default=1.5, help="physician minutes to draw one slice")
    p.add_argument("--sync", action="store_true", help="replay the ledger into MLflow first")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("retrain", help="retrain the segmenter on all final masks, now or on a cron schedule")
    p.add_argument("workspace")
    p.add_argument("--cron", help='cron schedule, e.g. "0 2 * * *" (serves a Prefect deployment until stopped)')
    p.add_argument("--once", action="store_true", help="run one retraining now and exit")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--val-fraction", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("server", help="keep a local Prefect server for a workspace (submissions skip start-up)")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("workspace")
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("resume", help="process stored submissions and continue a simulated campaign after a stop")
    p.add_argument("workspace")
    p.set_defaults(func=cmd_resume)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CLIError as err:
        err_console.print(f"error: {err}")
        return 2
    except (ValueError, FileNotFoundError, LookupError, RuntimeError) as err:
        err_console.print(f"error: {err}")
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted; stored submissions are safe, continue with `dil resume`")
        return 130


if __name__ == "__main__":
    sys.exit(main())
