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
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_MINUTES_PER_SLICE", "ReportData", "ScanRow", "collect", "write_report"]

#: Physician minutes to contour one 2D slice by hand (configurable; a guess for small structures).
DEFAULT_MINUTES_PER_SLICE = 1.5

#: The three Dice scores the paper tracks per round (Figures 4-5), as the round flow names them.
DICE_KEYS: tuple[tuple[str, str], ...] = (
    ("dice_gt_prediction", "Dice(Y, F(X))"),
    ("dice_gt_proxy", "Dice(Y, proxy)"),
    ("dice_proxy_prediction", "Dice(proxy, F(X))"),
)
_FINISHED = ("passed", "at_quota")
_TABLE7_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass
class ScanRow:
    """One scan as the report shows it (one CSV row)."""

    position: int
    case_id: str
    state: str
    rounds: int
    slices: dict[str, int]
    labor: float
    full_slices: dict[str, int] | None
    final_metrics: dict[str, Any]
    round_metrics: list[dict[str, Any]]
    stop_rule: str | None
    stop_value: float | None
    started_at: datetime | None
    finished_at: datetime | None
    version_at_start: int | None = None
    version_registered: int | None = None

    @property
    def finished(self) -> bool:
        return self.state in _FINISHED

    @property
    def slices_total(self) -> int:
        return sum(self.slices.values())

    def full_contouring_slices(self, planes: Sequence[str]) -> float | None:
        """Slices of contouring the whole target on one plane: the mean over ``planes`` of the target counts."""
        if not self.full_slices:
            return None
        counts = [self.full_slices[p] for p in planes if p in self.full_slices]
        return float(sum(counts) / len(counts)) if counts else None


@dataclass
class ReportData:
    """Everything the page and the CSV show, read from one workspace."""

    campaign: str
    workspace: Path
    planes: tuple[str, ...]
    rho: float
    rule: str
    minutes_per_slice: float
    scans: list[ScanRow]
    versions: list[dict[str, Any]] = field(default_factory=list)
    versions_source: str = "none"
    generated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def finished(self) -> list[ScanRow]:
        """Finished scans in the order they finished (the paper's sequence of samples)."""
        done = [s for s in self.scans if s.finished]
        return sorted(done, key=lambda s: (s.finished_at or datetime.max.replace(tzinfo=timezone.utc), s.position))

    def savings(self) -> dict[str, float]:
        """Totals over finished scans: labor, full contourings, slices drawn / of full contouring / saved, minutes."""
        labor = full_equiv = drawn = full_slices = 0.0
        known = 0
        for s in self.finished:
            full = s.full_contouring_slices(self.planes)
            labor += s.labor
            full_equiv += 1.0
            if full is not None:
                drawn += s.slices_total
                full_slices += full
                known += 1
        saved = full_slices - drawn
        return {
            "finished": float(len(self.finished)),
            "labor": labor,
            "full_contourings": full_equiv,
            "labor_saved": full_equiv - labor,
            "slices_drawn": drawn,
            "slices_full": full_slices,
            "slices_saved": saved,
            "minutes_saved": saved * self.minutes_per_slice,
            "minutes_spent": drawn * self.minutes_per_slice,
            "minutes_full": full_slices * self.minutes_per_slice,
            "scans_with_targets": float(known),
        }


# ------------------------------------------------------------------------------------------------- reading
def _check_minutes(minutes_per_slice: float) -> float:
    if isinstance(minutes_per_slice, bool) or not isinstance(minutes_per_slice, int | float):
        raise ValueError(f"minutes_per_slice: must be a number > 0, got {minutes_per_slice!r}")
    value = float(minutes_per_slice)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"minutes_per_slice: must be a finite number > 0, got {minutes_per_slice!r}")
    return value


def _plane_axes(scan: Any, rounds: Iterable[Any], subs: Iterable[Any], planes: Sequence[str]) -> dict[str, int]:
    """Plane name -> array axis of this scan, from its rounds and labor rows, else its direction cosines."""
    out: dict[str, int] = {}
    for r in rounds:
        for axis, name in r.planes.items():
            out.setdefault(str(name), int(axis))
    for sub in subs:
        for row in sub.labor:
            out.setdefault(row.plane, int(row.axis))
    missing = [p for p in planes if p not in out]
    if missing and scan.geometry.get("direction"):
        from dil_core.planes import axis_of

        for p in missing:
            try:
                out[p] = axis_of(p, scan.geometry["direction"])
            except ValueError:
                continue
    return out


def collect(workspace_root: str | os.PathLike[str], *, minutes_per_slice: float = DEFAULT_MINUTES_PER_SLICE) -> ReportData:
    """Read a campaign's state from its workspace (ledger, and the MLflow registry where there is one).

    Parameters
    ----------
    workspace_root : path
        A DIL workspace (holding ``campaign.yaml``).
    minutes_per_slice : float
        Physician minutes per hand-contoured slice, > 0.

    Returns
    -------
    ReportData

    Raises
    ------
    FileNotFoundError
        Not a workspace, or no ledger in it.
    ValueError
        ``minutes_per_slice`` not a finite number > 0.
    """
    minutes = _check_minutes(minutes_per_slice)
    from dil.workspace import Workspace
    from dil_core.config import load_config
    from dil_core.ledger import Ledger, LedgerNotFoundError, RoundStatus

    ws = Workspace(Path(workspace_root).resolve())
    if not ws.exists():
        raise FileNotFoundError(f"{ws.root} is not a DIL workspace (no {ws.config_file.name})")
    cfg = load_config(ws.config_file)
    try:
        ledger = Ledger.open(cfg.tracking.ledger_url or ws.ledger_url, create=False)
    except LedgerNotFoundError as err:
        raise FileNotFoundError(f"{ws.root}: no campaign ledger ({err})") from err
    planes = tuple(p.value for p in cfg.guidance.planes)
    try:
        campaign = ledger.get_campaign(cfg.name)
        labor = {lab.scan_id: lab for lab in ledger.labor_by_scan(campaign.id)}
        rows: list[ScanRow] = []
        for scan in sorted(ledger.list_scans(campaign.id), key=lambda s: s.position):
            rounds = [r for r in ledger.list_rounds(scan.id) if r.status is RoundStatus.PROCESSED]
            all_rounds = ledger.list_rounds(scan.id)
            subs = ledger.list_submissions(scan.id)
            slices: dict[str, int] = {}
            for sub in subs:
                for row in sub.labor:
                    slices[row.plane] = slices.get(row.plane, 0) + row.slices
            axes = _plane_axes(scan, all_rounds, subs, planes)
            full = None
            if scan.target_slices:
                full = {p: int(scan.target_slices[a]) for p, a in axes.items() if a in scan.target_slices}
            stops = ledger.list_stops(scan.id)
            last = stops[-1] if stops else None
            rows.append(
                ScanRow(
                    position=scan.position,
                    case_id=scan.case_id,
                    state=scan.state.value,
                    rounds=len(rounds),
                    slices=slices,
                    labor=labor[scan.id].fraction if scan.id in labor else 0.0,
                    full_slices=full,
                    final_metrics=dict(rounds[-1].metrics or {}) if rounds else {},
                    round_metrics=[dict(r.metrics or {}) for r in rounds],
                    stop_rule=last.rule if last else None,
                    stop_value=last.value if last else None,
                    started_at=all_rounds[0].created_at if all_rounds else None,
                    finished_at=scan.finished_at,
                )
            )
        versions, source = _versions(ws, cfg, ledger, campaign.id)
    finally:
        ledger.close()
    _assign_versions(rows, versions)
    return ReportData(
        campaign=cfg.name,
        workspace=ws.root,
        planes=planes,
        rho=cfg.stopping.rho,
        rule=cfg.stopping.rule.value,
        minutes_per_slice=minutes,
        scans=rows,
        versions=versions,
        versions_source=source,
    )


def _versions(ws: Any, cfg: Any, ledger: Any, campaign_id: int) -> tuple[list[dict[str, Any]], str]:
    """Segmenter versions from the MLflow registry where there is a store, else from the ledger."""
    store = ws.mlflow_dir / "mlflow.db"
    if cfg.tracking.mlflow_uri or store.is_file():
        try:
            from dil.tracking import Tracker

            tracker = Tracker.open(ws.root, cfg.name, cfg.tracking.mlflow_uri)
            found = [
                {
                    "version": v.version,
                    "kind": v.kind,
                    "scan": v.scan,
                    "rounds": v.rounds,
                    "scans_seen": v.scans_seen,
                    "created": datetime.fromtimestamp(v.created_ms / 1000, tz=timezone.utc),
                    "aliases": ", ".join(v.aliases),
                    "val_dice": v.val_dice,
                }
                for v in tracker.versions()
            ]
            if found:
                return found, "MLflow registry"
        except Exception as err:  # an unreachable tracking server must not stop the report
            return _ledger_versions(ledger, campaign_id), f"ledger (MLflow unavailable: {type(err).__name__})"
    return _ledger_versions(ledger, campaign_id), "ledger"


def _ledger_versions(ledger: Any, campaign_id: int) -> list[dict[str, Any]]:
    return [
        {
            "version": v.version,
            "kind": "",
            "scan": None,
            "rounds": v.rounds_seen,
            "scans_seen": v.scans_seen,
            "created": v.created_at,
            "aliases": v.alias or "",
            "val_dice": None,
        }
        for v in ledger.list_model_versions(campaign_id)
    ]


def _assign_versions(rows: list[ScanRow], versions: list[dict[str, Any]]) -> None:
    """Per scan: the newest version registered before its first round (its F_prev), and the one it registered."""
    ordered = sorted(versions, key=lambda v: v["created"])
    for row in rows:
        if row.started_at is not None:
            before = [v["version"] for v in ordered if v["created"] <= row.started_at]
            row.version_at_start = before[-1] if before else None
        mine = [v["version"] for v in versions if v.get("scan") == row.case_id and v.get("kind") == "scan"]
        row.version_registered = max(mine) if mine else None


# ------------------------------------------------------------------------------------------------- figures
def _figure(width: float = 7.5, height: float = 3.4, ncols: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _png(fig: Any) -> str:
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:
        if ax.get_xlabel() == "scans finished":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _fig_scans_over_time(data: ReportData) -> str:
    fig, (ax,) = _figure()
    done = [s for s in data.finished if s.finished_at is not None]
    if not done:
        _empty(ax, "no scan has finished yet")
    else:
        for state, label, style in (("passed", "passed (Dice >= rho)", "-"), ("at_quota", "at quota", "--")):
            times = sorted(s.finished_at for s in done if s.state == state)
            if times:
                ax.step(times, range(1, len(times) + 1), where="post", linestyle=style, marker="o", ms=3, label=label)
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
        from matplotlib.ticker import MaxNLocator

        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("scans")
        ax.set_xlabel("time (UTC)")
        ax.legend(loc="upper left")
    ax.set_title(f"Scans finished over time ({len(done)} of {len(data.scans)})")
    return _png(fig)


def _fig_labor(data: ReportData) -> str:
    fig, axes = _figure(9.5, 3.6, 2)
    done = data.finished
    if not done:
        for ax in axes:
            _empty(ax, "no scan has finished yet")
    else:
        n = list(range(1, len(done) + 1))
        cum = []
        total = 0.0
        for s in done:
            total += s.labor
            cum.append(total)
        axes[0].plot(n, n, "k--", label="full contouring")
        axes[0].plot(n, cum, "o-", ms=3, label="DIL (slices drawn)")
        axes[0].fill_between(n, cum, n, alpha=0.15, label="saved")
        axes[0].set_xlabel("scans finished")
        axes[0].set_ylabel("cumulative labor (full contourings)")
        axes[0].legend(loc="upper left")
        axes[0].set_title("Cumulative labor")
        axes[1].axhline(1.0, color="k", linestyle="--", label="full contouring")
        axes[1].plot(n, [c / k for c, k in zip(cum, n, strict=True)], "o-", ms=3, color="C3", label="DIL")
        axes[1].set_ylim(0, max(1.1, max(c / k for c, k in zip(cum, n, strict=True)) * 1.1))
        axes[1].set_xlabel("scans finished")
        axes[1].set_ylabel("cumulative average proportion")
        axes[1].legend(loc="upper right")
        axes[1].set_title("Proportion of full labor (paper Fig. 8)")
    return _png(fig)


def _dice_rounds(data: ReportData) -> list[int | None]:
    """Rounds to plot Dice curves at: round 2 (round 1 if no scan reached 2) and each scan's final round."""
    reached = max((s.rounds for s in data.finished), default=0)
    first = 2 if reached >= 2 else 1
    return [first, None]


def _cumulative_dice(scans: list[ScanRow], key: str, round_number: int | None) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    values: list[float] = []
    for i, s in enumerate(scans, start=1):
        if not s.round_metrics:
            continue
        if round_number is None:
            metrics = s.round_metrics[-1]
        elif len(s.round_metrics) >= round_number:
            metrics = s.round_metrics[round_number - 1]
        else:
            continue
        v = metrics.get(key)
        if isinstance(v, int | float) and math.isfinite(v):
            values.append(float(v))
            xs.append(i)
            ys.append(sum(values) / len(values))
    return xs, ys


def _fig_dice(data: ReportData) -> str:
    rounds = _dice_rounds(data)
    fig, axes = _figure(9.5, 3.6, len(rounds))
    done = data.finished
    for ax, rnd in zip(axes, rounds, strict=True):
        drawn = False
        for (key, label), style in zip(DICE_KEYS, ("-", "--", ":"), strict=True):
            xs, ys = _cumulative_dice(done, key, rnd)
            if xs:
                ax.plot(xs, ys, style, marker="o", ms=3, label=label)
                drawn = True
        if drawn:
            ax.axhline(data.rho, color="0.5", linewidth=0.8, label=f"rho = {data.rho:g}")
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("scans finished")
            ax.set_ylabel("cumulative average Dice")
            ax.legend(loc="best", fontsize="small")
        else:
            _empty(ax, "no Dice recorded yet")
        ax.set_title(f"round {rnd}" if rnd else "final round of each scan")
    return _png(fig)


# --------------------------------------------------------------------------------------------------- tables
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "-"
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _html_table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def table7(data: ReportData) -> list[dict[str, Any]]:
    """Cumulative slices per plane (drawn and of full labeling) at 20-100 % of the finished scans (Table 7)."""
    done = data.finished
    out = []
    for frac in _TABLE7_FRACTIONS:
        k = max(1, math.ceil(frac * len(done) - 1e-9)) if done else 0
        part = done[:k]
        row: dict[str, Any] = {"fraction": frac, "scans": k}
        for p in data.planes:
            row[f"drawn_{p}"] = sum(s.slices.get(p, 0) for s in part)
            full = [s.full_slices.get(p) for s in part if s.full_slices]
            row[f"full_{p}"] = sum(v for v in full if v is not None) if full else None
        row["labor"] = sum(s.labor for s in part)
        out.append(row)
    return out


def _csv_rows(data: ReportData) -> tuple[list[str], list[list[Any]]]:
    header = ["position", "case_id", "state", "rounds"]
    header += [f"slices_{p}" for p in data.planes] + ["slices_total", "labor_fraction"]
    header += [f"target_slices_{p}" for p in data.planes]
    header += ["full_contouring_slices", "slices_saved", "minutes_spent", "minutes_saved"]
    header += ["dice_gt_mask", *(k for k, _ in DICE_KEYS), "stop_rule", "stop_value"]
    header += ["started_at", "finished_at", "segmenter_version_at_start", "segmenter_version_registered"]
    rows = []
    for s in data.scans:
        full = s.full_contouring_slices(data.planes)
        saved = None if full is None or not s.finished else full - s.slices_total
        row: list[Any] = [s.position, s.case_id, s.state, s.rounds]
        row += [s.slices.get(p, 0) for p in data.planes] + [s.slices_total, round(s.labor, 6)]
        row += [(s.full_slices or {}).get(p) for p in data.planes]
        row += [
            None if full is None else round(full, 3),
            None if saved is None else round(saved, 3),
            round(s.slices_total * data.minutes_per_slice, 3),
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


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.sub { color: #666; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; min-width: 9em; background: #fafafa; }
.card .v { font-size: 1.5em; font-weight: 600; } .card .k { color: #666; font-size: 0.85em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.88em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.55em; text-align: right; }
th { background: #f0f0f0; } td:nth-child(2), td:first-child { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
.note { color: #555; font-size: 0.88em; }
"""

# Checks, once the page has loaded, that every figure decoded; reports a failure on the console.
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, bad = [];
  for (var i = 0; i < imgs.length; i++) {
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) { bad.push(imgs[i].alt); }
  }
  if (bad.length) { console.error("report: figures failed to render: " + bad.join("; ")); }
  document.body.setAttribute("data-figures", String(imgs.length));
  document.body.setAttribute("data-rendered", bad.length ? "failed" : "ok");
});
"""

_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)


def render_html(data: ReportData) -> str:
    """The report page as one HTML string (figures embedded as base64 PNG)."""
    sv = data.savings()
    counts: dict[str, int] = {}
    for s in data.scans:
        counts[s.state] = counts.get(s.state, 0) + 1
    e = html.escape
    cards = [
        ("scans", f"{len(data.scans)}"),
        ("passed", f"{counts.get('passed', 0)}"),
        ("at quota", f"{counts.get('at_quota', 0)}"),
        ("in progress / queued", f"{len(data.scans) - counts.get('passed', 0) - counts.get('at_quota', 0)}"),
        ("slices drawn (all scans)", f"{sum(s.slices_total for s in data.scans)}"),
        ("labor, finished scans", f"{sv['labor']:.2f} of {sv['full_contourings']:.0f} full"),
        ("slices saved", f"{sv['slices_saved']:.0f} of {sv['slices_full']:.0f}"),
        ("physician time saved", f"{sv['minutes_saved'] / 60:.1f} h"),
    ]
    card_html = "".join(f'<div class="card"><div class="v">{e(v)}</div><div class="k">{e(k)}</div></div>' for k, v in cards)

    planes = list(data.planes)
    t7 = table7(data)
    t7_rows = [
        [f"{int(r['fraction'] * 100)}% ({r['scans']})"]
        + ["/".join(_fmt(r[f"full_{p}"]) for p in planes)]
        + ["+".join(str(r[f"drawn_{p}"]) for p in planes)]
        + [r["labor"]]
        for r in t7
    ]
    plane_label = "/".join(p[0].upper() for p in planes)
    t7_html = _html_table(
        ["finished scans", f"cum. full labeling ({plane_label})", f"cum. slices drawn ({'+'.join(p[0].upper() for p in planes)})",
         "cum. labor (full contourings)"],
        t7_rows,
    )
    scan_rows = []
    for s in data.scans:
        full = s.full_contouring_slices(data.planes)
        scan_rows.append(
            [s.position + 1, s.case_id, s.state, s.rounds]
            + [s.slices.get(p, 0) for p in planes]
            + [s.labor, None if full is None else round(full, 1), s.final_metrics.get("dice_gt_mask"),
               s.stop_rule, s.stop_value, s.version_at_start, s.version_registered]
        )
    scans_html = _html_table(
        ["#", "case", "state", "rounds", *(f"slices {p}" for p in planes), "labor", "full contouring (slices)",
         "Dice(Y, mask)", "stop rule", "stop value", "segmenter at start", "version registered"],
        scan_rows,
    )
    versions_html = (
        _html_table(
            ["version", "kind", "scan", "rounds", "scans seen", "registered (UTC)", "aliases", "validation Dice"],
            [[v["version"], v["kind"], v["scan"], v["rounds"], v["scans_seen"], v["created"], v["aliases"], v["val_dice"]]
             for v in data.versions],
        )
        if data.versions
        else "<p class='note'>No segmenter version registered yet.</p>"
    )
    figures = [
        ("Scans finished over time", _fig_scans_over_time(data)),
        ("Cumulative labor against full contouring (paper Figure 8)", _fig_labor(data)),
        ("Dice curves: cumulative averages over scans (paper Figures 4-5)", _fig_dice(data)),
    ]
    fig_html = {
        title: f'<img alt="{e(title)}" src="data:image/png;base64,{png}">' for title, png in figures
    }
    titles = [t for t, _ in figures]
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>DIL campaign {e(data.campaign)}: labor report</title>
<style>{_CSS}</style>
<script>{_SCRIPT}</script>
</head>
<body>
<h1>Campaign {e(data.campaign)}: labeling labor report</h1>
<p class="sub">Generated {e(_fmt(data.generated_at))} UTC from {e(str(data.workspace))}. Quality bar rho = {data.rho:g}
(stopping rule: {e(data.rule)}); planes: {e(', '.join(planes))}; {data.minutes_per_slice:g} physician minutes per slice.</p>
<div class="cards">{card_html}</div>

<h2>{e(titles[0])}</h2>
{fig_html[titles[0]]}

<h2>{e(titles[1])}</h2>
{fig_html[titles[1]]}
<p class="note">Finished scans: {sv['finished']:.0f}. Labor spent {sv['labor']:.2f} full contourings instead of
{sv['full_contourings']:.0f} ({(sv['labor'] / sv['full_contourings'] * 100) if sv['full_contourings'] else 0:.0f}%);
slices drawn {sv['slices_drawn']:.0f} against {sv['slices_full']:.0f} for full contouring: {sv['slices_saved']:.0f}
slices and {sv['minutes_saved']:.0f} physician minutes ({sv['minutes_saved'] / 60:.1f} h) saved.</p>

<h2>Cumulative labor at 20-100% of the finished scans (paper Table 7)</h2>
{t7_html}

<h2>Per scan</h2>
{scans_html}

<h2>{e(titles[2])}</h2>
{fig_html[titles[2]]}

<h2>Segmenter versions</h2>
<p class="note">Source: {e(data.versions_source)}. "segmenter at start" is the newest version registered before the
scan's first round (its F_prev, Algorithm 5); alias <code>latest</code> is the newest version, <code>champion</code>
the best scheduled retraining on validation Dice.</p>
{versions_html}

<h2>Definitions</h2>
<p class="note">Labor of a scan (paper eqs. 3-4): the sum over planes of slices drawn / target slices on that plane; 1.0 is
contouring the whole target on one plane. Full contouring in slices: the mean over the campaign's planes of the scan's
target slice counts. Slices saved = full contouring slices - slices drawn, over finished scans (passed or at quota).
Minutes = slices x {data.minutes_per_slice:g} min. Dice(Y, .) needs ground truth and is blank without it.</p>
</body>
</html>
"""


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
