"""The report page: :func:`render_html`, its style sheet, its Content-Security-Policy and its check script."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from dil.report.data import ReportData, table7
from dil.report.figures import _fig_dice, _fig_labor, _fig_scans_over_time

__all__ = ["render_html"]


# --------------------------------------------------------------------------------------------------- tables
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _html_table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


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
        ("physician time spent", f"{sv['minutes_spent'] / 60:.1f} h drawing + {sv['minutes_review'] / 60:.1f} h review"),
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
            [s.position + 1, s.case_id, s.outcome, s.rounds]
            + [s.slices.get(p, 0) for p in planes]
            + [s.labor, round(s.slices_total * data.minutes_per_slice + (data.review_minutes if s.finished else 0), 1),
               None if full is None else round(full, 1), s.final_metrics.get("dice_gt_mask"),
               s.final_metrics.get("dice_estimated"), s.stop_rule, s.stop_value, s.version_at_start,
               s.version_registered]
        )
    scans_html = _html_table(
        ["#", "case", "outcome", "rounds", *(f"slices {p}" for p in planes), "labor", "physician minutes",
         "full contouring (slices)", "Dice(Y, mask)", "Dice(mask, F(X)) estimated", "stop rule", "stop value",
         "segmenter at start", "version registered"],
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
