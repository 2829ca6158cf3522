"""The report's figures (matplotlib, no display needed), each as a base64 PNG to embed in the page."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

from dil.report.data import DICE_KEYS, ESTIMATE_KEYS, ReportData, ScanRow


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
        outcomes = sorted({s.outcome for s in done})
        for label, style in zip(outcomes, ("-", "--", ":", "-."), strict=False):
            times = sorted(s.finished_at for s in done if s.outcome == label)
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
    """Cumulative Dice curves; without ground truth (a physicians' campaign) the agreement estimates instead."""
    rounds = _dice_rounds(data)
    fig, axes = _figure(9.5, 3.6, len(rounds))
    done = data.finished
    truth = any(m.get(k) is not None for s in done for m in s.round_metrics for k, _ in DICE_KEYS[:2])
    keys = DICE_KEYS if truth else ESTIMATE_KEYS
    for ax, rnd in zip(axes, rounds, strict=True):
        drawn = False
        for (key, label), style in zip(keys, ("-", "--", ":"), strict=False):
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
            _empty(ax, "no Dice recorded yet" if truth else "no ground truth; no agreement estimate recorded yet")
        ax.set_title(f"round {rnd}" if rnd else "final round of each scan")
    return _png(fig)
