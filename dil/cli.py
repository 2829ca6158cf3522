"""The ``dil`` command line.

Physician's commands (thin, about a second): ``submit``, ``accept``, ``status``. Campaign commands: ``init``,
``campaign run``, ``add``, ``serve`` (the round service), ``resume``, ``report``, ``retrain``, ``server``,
``worker`` (a Prefect process worker for the campaign's deployments).
Every command exits non-zero with a one-line message on error. Prefect, MLflow and torch are imported only by
the commands that need them, after the workspace's environment is prepared (telemetry off, Prefect's home
inside the workspace).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import dil
from dil import commands
from dil.console import CLIError, _workspace, console, err_console, print_status


# ------------------------------------------------------------------------------------- physician (thin)
def cmd_submit(args: argparse.Namespace) -> int:
    from dil.client import ServiceError, service_url, upload, wait_for_next

    ws = _workspace(args.workspace)
    label = Path(args.label_file).expanduser()
    url = service_url(ws)
    if url is None and args.start_service:
        from dil.server import start_service

        url = start_service(ws)
    if url is not None:  # the service checks and stores it, with the code it uses for every submission
        if not label.is_file():
            raise FileNotFoundError(f"submission {label}: no such file")
        try:
            got = upload(url, args.case, label)
        except ServiceError as err:
            raise ValueError(str(err)) from err
        _print_stored(args.case, got["round"], got["stored"], got["new"], got["again"])
        if args.wait:
            row = wait_for_next(url, args.case, got["round"], timeout=args.timeout)
            console.print(f"{args.case}: {row['phase']}" + (f"\n  {row['request']}/request.json" if row["request"] else ""))
        else:
            console.print(f"the next request will appear in {got['next_request']}")
        return 0
    from dil.physician import open_campaign
    from dil_core.submission import submit_label_file

    camp = open_campaign(ws.root)
    got_local = submit_label_file(camp.ledger, camp.workspace, camp.campaign_id, args.case, label)
    _print_stored(args.case, got_local.round, got_local.created, got_local.new, got_local.again)
    console.print(f"no round service is running for {ws.root}: the submission is stored and waits; start the "
                  f"service with `dil serve {ws.root}`")
    return 0


def _print_stored(case: str, number: int, created: bool, new: dict, again: dict) -> None:
    if not created:
        console.print(f"{case}: this file was already stored for round {number} (counted once)")
        return
    new_s = "; ".join(f"{p} {', '.join(map(str, s))}" for p, s in new.items()) or "none"
    again_s = "; ".join(f"{p} {', '.join(map(str, s))}" for p, s in again.items())
    console.print(f"{case}: round {number} stored; new slices: {new_s}"
                  + (f"; already drawn before (not counted again): {again_s}" if again_s else ""))


def cmd_accept(args: argparse.Namespace) -> int:
    from dil.client import wake
    from dil.physician import open_campaign
    from dil_core.submission import accept_request

    camp = open_campaign(_workspace(args.workspace).root)
    scan = camp.ledger.find_scan(camp.campaign_id, args.case)
    if scan is None:
        raise LookupError(f"the campaign has no scan {args.case!r}")
    rnd = camp.ledger.current_round(scan.id)
    mask = None if rnd is None else camp.workspace.requests_dir(args.case, rnd.number) / "mask_seg.nii.gz"
    if not args.yes:
        if not sys.stdin.isatty():
            raise CLIError("accept finalizes the scan's mask: confirm with --yes when not at a terminal")
        shown = mask if mask is not None else scan.final_mask_path
        answer = input(f"accept {shown} as the final mask of {args.case}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            console.print("not accepted")
            return 1
    path = accept_request(camp.ledger, camp.workspace, camp.campaign_id, args.case)
    wake(camp.workspace)
    console.print(f"{args.case}: accepted; final mask {path}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from dil.physician import open_campaign

    print_status(open_campaign(_workspace(args.workspace).root))
    return 0


# ------------------------------------------------------------------------------------------ the parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dil",
        description="Dynamic interactive labeling of 3D medical images: guided slices, proxy masks, online training.",
    )
    parser.add_argument("--version", action="version", version=f"dil {dil.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create a campaign workspace from a config and queue its cohort")
    p.add_argument("config", help="campaign YAML (see configs/demo.yaml)")
    p.set_defaults(func=commands.cmd_init)

    p = sub.add_parser("campaign", help="campaign commands")
    csub = p.add_subparsers(dest="campaign_command", required=True, metavar="COMMAND")
    pr = csub.add_parser("run", help="run a campaign: simulated annotator to the end, or open the first requests")
    pr.add_argument("config", help="campaign YAML")
    pr.set_defaults(func=commands.cmd_campaign_run)

    p = sub.add_parser("add", help="add a scan to a campaign's queue (it joins while the campaign runs)")
    p.add_argument("workspace")
    p.add_argument("image", help="NIfTI, NRRD, MHA file or DICOM series folder")
    p.add_argument("--case-id", help="case id (default: the file name without extension)")
    p.add_argument("--ground-truth", help="ground-truth label file, for simulation and evaluation")
    p.set_defaults(func=commands.cmd_add)

    p = sub.add_parser("submit", help="store a label file for a scan's open request (the round service runs it)")
    p.add_argument("workspace")
    p.add_argument("case")
    p.add_argument("label_file")
    p.add_argument("--wait", action="store_true", help="wait for the next request and print it")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits at most")
    p.add_argument("--start-service", action="store_true", help="start the round service if none is running")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("accept", help="accept the mask of a scan's open request as final")
    p.add_argument("workspace")
    p.add_argument("case")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_accept)

    p = sub.add_parser("reopen", help="undo a scan's accept: a new request, and the segmenter retrained without it")
    p.add_argument("workspace")
    p.add_argument("case")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=commands.cmd_reopen)

    p = sub.add_parser("status", help="each scan's phase, rounds, labor and physician minutes")
    p.add_argument("workspace")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("serve", help="run the workspace's round service (inbox, HTTP API, rounds) until stopped")
    p.add_argument("workspace")
    p.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address the HTTP API listens on (default 127.0.0.1; 0.0.0.0 in a container)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="this service's own folder (lock, address, uploads), for several services on one campaign "
                        "with a PostgreSQL ledger (default: the workspace's service/)")
    p.add_argument("--lease", type=float, default=60.0,
                   help="seconds a round's claim lasts unless renewed (how soon another machine's service takes "
                        "over the round of one that died)")
    p.set_defaults(func=commands.cmd_serve)

    p = sub.add_parser("report", help="write the labor-cost report (HTML with plots, and a CSV)")
    p.add_argument("workspace")
    p.add_argument("--minutes-per-slice", type=float, default=None,
                   help="physician minutes to draw one slice (default: the campaign's annotator.minutes_per_slice)")
    p.add_argument("--sync", action="store_true", help="replay the ledger into MLflow first")
    p.set_defaults(func=commands.cmd_report)

    p = sub.add_parser("retrain", help="retrain the segmenter on all final masks, now or on a cron schedule")
    p.add_argument("workspace")
    p.add_argument("--cron", help='cron schedule, e.g. "0 2 * * *" (serves a Prefect deployment until stopped)')
    p.add_argument("--once", action="store_true", help="run one retraining now and exit")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--val-fraction", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=commands.cmd_retrain)

    p = sub.add_parser("server", help="keep a local Prefect server for a workspace")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("workspace")
    p.set_defaults(func=commands.cmd_server)

    p = sub.add_parser("resume", help="process stored submissions and continue a campaign after a stop")
    p.add_argument("workspace")
    p.add_argument("--pool", action="store_true",
                   help="send each submitted round to the work pool as a flow run instead (run by `dil worker`)")
    p.set_defaults(func=commands.cmd_resume)

    p = sub.add_parser("worker", help="register the campaign's round and retraining deployments and run a "
                                      "Prefect process worker on their work pool")
    p.add_argument("workspace")
    p.add_argument("--pool", default="dil", help="work pool (process type; created if missing)")
    p.add_argument("--limit", type=int, default=None, help="most flow runs at once")
    p.add_argument("--name", default=None, help="the worker's name")
    p.set_defaults(func=commands.cmd_worker)
    return parser


def _one_line(err: BaseException) -> str:
    """An error as the user should read it: the message, without the driver's traceback or SQL."""
    orig = getattr(err, "orig", None)  # SQLAlchemy wraps the driver's error
    text = str(orig if orig is not None else err).strip().splitlines()
    return text[0] if text else type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    # Workspace files hold case ids, image paths and the ledger: readable by their owner only.
    os.umask(0o077)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CLIError as err:
        err_console.print(f"error: {err}")
        return 2
    except (ValueError, FileNotFoundError, LookupError, RuntimeError, TimeoutError) as err:
        err_console.print(f"error: {err}")
        return 1
    except OSError as err:
        err_console.print(f"error: {err.strerror or err}: {err.filename or ''}".rstrip(": "))
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted; stored submissions are safe, continue with `dil resume`")
        return 130
    except Exception as err:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(err, SQLAlchemyError):
            err_console.print(f"error: the ledger's database: {_one_line(err)}")
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
