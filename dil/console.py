"""What every ``dil`` command shares: the consoles, the one-line error, opening a workspace, the status table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dil.environment import prepare_environment
from dil_core.workspace import Workspace

__all__ = ["CLIError", "console", "err_console", "heavy_context", "print_status"]

console = Console(stderr=False, width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True)


class CLIError(Exception):
    """An error shown to the user as one line, exit code 2."""


def _workspace(path: str) -> Workspace:
    ws = Workspace(Path(path).expanduser().resolve())
    if not ws.exists():
        raise CLIError(f"{ws.root} is not a DIL workspace (no campaign.yaml); create one with `dil init CONFIG`")
    return ws


def heavy_context(workspace: str | Path) -> Any:
    """The campaign context for commands that run flows: environment first, MLflow tracking installed."""
    ws = _workspace(str(workspace))
    from dil_core.config import load_config

    prepare_environment(ws, prefect_api_url=load_config(ws.config_file).tracking.prefect_api_url)
    from dil.tracking import install
    from flows.context import open_context

    install()
    return open_context(ws.root)


def print_status(camp: Any) -> None:
    """The per-scan table and the campaign's totals (labor, physician minutes)."""
    from dil.physician import continual_status, scan_rows

    rows = scan_rows(camp)
    table = Table(title=f"campaign {camp.config.name}: labor per scan")
    for col in ("case", "phase", "rounds", "slices per plane", "labor (fraction of full)", "minutes", "Dice (GT)"):
        table.add_column(col)
    for r in rows:
        planes = ", ".join(f"{p} {n}" for p, n in sorted(r["slices_per_plane"].items())) or "-"
        minutes = r["drawing_minutes"] + r["review_minutes"]
        table.add_row(
            r["case"], r["phase"], str(r["rounds"]), planes, f"{r['labor']:.3f}", f"{minutes:.1f}",
            "-" if r["dice_gt"] is None else f"{r['dice_gt']:.3f}",
        )
    console.print(table)
    n = len(rows)
    done = sum(1 for r in rows if r["phase"].startswith("done"))
    drawing = sum(r["drawing_minutes"] for r in rows)
    review = sum(r["review_minutes"] for r in rows)
    console.print(
        f"scans: {n} ({done} done); slices drawn: {sum(r['slices'] for r in rows)}; mean labor per scan: "
        f"{(sum(r['labor'] for r in rows) / n if n else 0.0):.3f} of full contouring; physician minutes: "
        f"{drawing:.1f} drawing + {review:.1f} review"
    )
    learner = continual_status(camp)
    if learner is not None:
        last = learner["last_gate"] or {}
        console.print(
            f"continual training: {learner['steps']} steps, {learner['gates']} gates, {learner['promotions']} "
            f"promotions; champion {learner['champion'] or 'not yet promoted'}"
            + (f"; last gate: candidate {last['candidate']:.3f} against champion {last['champion']:.3f} on the "
               "hold-out" if last.get("candidate") is not None and last.get("champion") is not None else "")
        )


