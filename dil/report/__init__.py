"""The labor-cost report for a project lead: one self-contained HTML page and a CSV, from the ledger (and MLflow).

``write_report(workspace)`` writes ``<ws>/report/report.html`` (plots as embedded PNG, no external resource:
the page's Content-Security-Policy forbids any) and ``<ws>/report/scans.csv`` (one row per scan). It shows:

* scans finished over time (passed / at quota);
* cumulative labor against full contouring, and the cumulative average proportion of it (the paper's Figure 8);
* per scan: rounds, slices drawn per plane, labor, final Dice; cumulative slices per plane at 20-100 % of the
  finished scans against the slices of full contouring (the paper's Table 7);
* Dice curves: cumulative averages over the scans of Dice(Y, F(X)), Dice(Y, proxy), Dice(proxy, F(X)) at a
  given round (the paper's Figures 4-5), from the rounds' metrics ``dice_gt_prediction``, ``dice_gt_proxy``,
  ``dice_proxy_prediction``;
* savings in slices and physician minutes, and the segmenter versions (MLflow registry, else the ledger).

Definitions (also printed on the page). Labor of a scan is eq. 4: the sum over planes of slices drawn / target
slices on that plane, 1.0 = contouring the whole target on one plane. Full contouring of a scan, in slices, is
the mean over the campaign's planes of its target slice counts. Slices saved = full contouring slices - slices
drawn, over finished scans (passed or at quota); minutes saved = slices saved x minutes per slice.

The ledger is read, never written. The page can be regenerated at any time: the figures are as of then.

Modules: :mod:`dil.report.data` reads the ledger into :class:`ReportData`, :mod:`dil.report.figures` draws
the plots, :mod:`dil.report.html` renders the page; this package writes the page and the CSV.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

# Every name of the former single module dil/report.py stays importable from here.
from dil.report.data import _FINISHED as _FINISHED
from dil.report.data import _TABLE7_FRACTIONS as _TABLE7_FRACTIONS
from dil.report.data import (
    DEFAULT_MINUTES_PER_SLICE,
    DICE_KEYS,
    ReportData,
    ScanRow,
    collect,
)
from dil.report.data import _assign_versions as _assign_versions
from dil.report.data import _check_minutes as _check_minutes
from dil.report.data import _ledger_versions as _ledger_versions
from dil.report.data import _plane_axes as _plane_axes
from dil.report.data import _versions as _versions
from dil.report.data import table7 as table7
from dil.report.figures import _cumulative_dice as _cumulative_dice
from dil.report.figures import _dice_rounds as _dice_rounds
from dil.report.figures import _empty as _empty
from dil.report.figures import _fig_dice as _fig_dice
from dil.report.figures import _fig_labor as _fig_labor
from dil.report.figures import _fig_scans_over_time as _fig_scans_over_time
from dil.report.figures import _figure as _figure
from dil.report.figures import _png as _png
from dil.report.html import _CSP as _CSP
from dil.report.html import _CSS as _CSS
from dil.report.html import _SCRIPT as _SCRIPT
from dil.report.html import _fmt as _fmt
from dil.report.html import _html_table as _html_table
from dil.report.html import render_html

__all__ = ["DEFAULT_MINUTES_PER_SLICE", "ReportData", "ScanRow", "collect", "write_report"]


def _csv_rows(data: ReportData) -> tuple[list[str], list[list[Any]]]:
    header = ["position", "case_id", "state", "outcome", "rounds"]
    header += [f"slices_{p}" for p in data.planes] + ["slices_total", "labor_fraction"]
    header += [f"target_slices_{p}" for p in data.planes]
    header += ["full_contouring_slices", "slices_saved", "minutes_spent", "minutes_review", "minutes_saved"]
    header += ["dice_gt_mask", *(k for k, _ in DICE_KEYS), "stop_rule", "stop_value"]
    header += ["started_at", "finished_at", "segmenter_version_at_start", "segmenter_version_registered"]
    rows = []
    for s in data.scans:
        full = s.full_contouring_slices(data.planes)
        saved = None if full is None or not s.finished else full - s.slices_total
        row: list[Any] = [s.position, s.case_id, s.state, s.outcome, s.rounds]
        row += [s.slices.get(p, 0) for p in data.planes] + [s.slices_total, round(s.labor, 6)]
        row += [(s.full_slices or {}).get(p) for p in data.planes]
        row += [
            None if full is None else round(full, 3),
            None if saved is None else round(saved, 3),
            round(s.slices_total * data.minutes_per_slice, 3),
            data.review_minutes if s.finished else 0.0,
            None if saved is None else round(saved * data.minutes_per_slice, 3),
        ]
        row += [s.final_metrics.get("dice_gt_mask"), *(s.final_metrics.get(k) for k, _ in DICE_KEYS)]
        row += [s.stop_rule, s.stop_value]
        row += [
            s.started_at.isoformat() if s.started_at else None,
            s.finished_at.isoformat() if s.finished_at else None,
            s.version_at_start,
            s.version_registered,
        ]
        rows.append(row)
    return header, rows


def write_report(
    workspace_root: str | os.PathLike[str],
    *,
    minutes_per_slice: float = DEFAULT_MINUTES_PER_SLICE,
    out_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, Path]:
    """Write the campaign's labor report: ``report.html`` and ``scans.csv``.

    Parameters
    ----------
    workspace_root : path
        A DIL workspace.
    minutes_per_slice : float
        Physician minutes per hand-contoured slice (> 0), for the time saved.
    out_dir : path, optional
        Where to write; default ``<ws>/report``.

    Returns
    -------
    (html_path, csv_path)

    Raises
    ------
    FileNotFoundError
        Not a workspace, or no ledger in it.
    ValueError
        ``minutes_per_slice`` not a finite number > 0.
    """
    data = collect(workspace_root, minutes_per_slice=minutes_per_slice)
    folder = Path(out_dir) if out_dir is not None else data.workspace / "report"
    folder.mkdir(parents=True, exist_ok=True)
    html_path = folder / "report.html"
    csv_path = folder / "scans.csv"
    _atomic_write(html_path, render_html(data))
    header, rows = _csv_rows(data)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    _atomic_write(csv_path, buf.getvalue())
    return html_path, csv_path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
