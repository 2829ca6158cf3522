"""Shared pieces of the labor benchmarks: per-configuration summaries, the 3D Slicer power user, the plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _campaign import CampaignCase

from dil_core.guidance import evenly_spaced
from dil_core.labor import ScanLabor, cumulative_labor
from dil_core.metrics import dice
from dil_core.propagation import proxy_mask
from dil_core.simulate import GroundTruthOracle

__all__ = ["plot_cumulative", "power_user", "summarise"]


def summarise(name: str, per_scan: list[dict]) -> dict:
    labors = [ScanLabor(s["case_id"], s["drawn"], s["targets"]) for s in per_scan]
    camp = cumulative_labor(labors)
    fr = [s["labor"] for s in per_scan]
    return {
        "name": name,
        "scans": len(per_scan),
        "mean_labor": camp.mean_fraction,
        "pooled_labor": camp.pooled_fraction,
        "max_labor": float(max(fr)) if fr else float("nan"),
        "slices": {str(a): n for a, n in camp.drawn.items()},
        "full_slices": {str(a): n for a, n in camp.target_slices.items()},
        "reached": int(sum(s["reached"] for s in per_scan)),
        "zero_labor_scans": int(sum(s["labor"] == 0 for s in per_scan)),
        "cumulative_mean": [float(np.mean(fr[: i + 1])) for i in range(len(fr))],
        "per_scan": per_scan,
    }


def power_user(stream: list[CampaignCase], rho: float, backend: str = "mci", name: str = "power-user") -> dict:
    """Evenly spaced slices on one plane, both ends included, MCI; the fewest k >= 2 reaching rho, per scan."""
    per_axis: dict[str, list[dict]] = {"coronal": [], "sagittal": []}
    for case in stream:
        oracle = GroundTruthOracle(case.gt)
        for plane, axis in zip(("coronal", "sagittal"), case.axes):
            lo, hi = oracle.target_extent(axis)
            n = len(oracle.target_slices(axis))
            for k in range(2, hi - lo + 2):
                idx = frozenset(evenly_spaced(lo, hi, k))
                proxy = proxy_mask(
                    case.image, oracle.draw({axis: idx}), {axis: idx}, backend=backend
                )
                d = dice(case.gt, proxy.mask)
                if d >= rho:
                    break
            per_axis[plane].append(
                {
                    "case_id": case.case_id,
                    "drawn": {axis: k},
                    "targets": {axis: n},
                    "labor": k / n,
                    "rounds": 1,
                    "dice": d,
                    "reached": bool(d >= rho),
                    "dice_prior_prediction": 0.0,
                    "seconds": 0.0,
                }
            )
    better = min(
        per_axis, key=lambda p: float(np.mean([s["labor"] for s in per_axis[p]]))
    )
    out = summarise(name, per_axis[better])
    out["plane"] = better
    out["other_plane_mean_labor"] = float(
        np.mean(
            [s["labor"] for s in per_axis[next(p for p in per_axis if p != better)]]
        )
    )
    per_scan_best = [
        min((per_axis[p][i] for p in per_axis), key=lambda s: s["labor"])
        for i in range(len(stream))
    ]
    out["per_scan_best_plane_mean_labor"] = float(
        np.mean([s["labor"] for s in per_scan_best])
    )
    return out


def plot_cumulative(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in results:
        xs = np.arange(1, len(r["cumulative_mean"]) + 1)
        ax.plot(xs, r["cumulative_mean"], label=f"{r['name']} ({r['mean_labor']:.3f})")
    ax.set_xlabel("scans labeled (stream order)")
    ax.set_ylabel("cumulative mean labor / full contouring")
    ax.set_title("Labor to Dice >= rho along the stream (Figure 8)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
