"""Dynamic interactive learning (paper sec 3.4, Table 6, Figures 4-5): a segmenter trained from proxy masks only.

Algorithm 5 over a hippocampus stream through the product's round (``bench/_campaign.py``: the paper's method
as ``configs/demo-paper.yaml`` configures it, with the overrides below): each scan gets rounds of 1+1
slices (model guidance, replay, weighted loss, label smoothing) until Dice(ground truth, mask) >= rho or 6+6
slices (the mask of the paper's method: the proxy, drawn slices as drawn); the segmenter never sees a full ground truth. Its Dice on the fixed evaluation split is compared with
dynamic learning on full ground truth (``dynamic_learning.py``), and along the stream we record the three
curves of Figures 4-5: Dice(Y, proxy), Dice(Y, F), Dice(proxy, F) at the end of each scan.

    .venv/bin/python bench/dynamic_interactive.py [--stream 40] [--eval 20] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _campaign import bench_config, campaign_case, run_campaign
from _common import (
    HIPPO,
    RESULTS,
    Clock,
    data_available,
    device_line,
    evaluate,
    md_table,
    skipped,
    splits,
    stats,
    write_outputs,
)

from dil_core.metrics import dice


def _plot(curves: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = np.arange(1, len(curves["dice_gt_proxy"]) + 1)
    for key, label in (
        ("dice_gt_proxy", "Dice(Y, proxy)"),
        ("dice_gt_prediction", "Dice(Y, F(X))"),
        ("dice_proxy_prediction", "Dice(proxy, F(X))"),
    ):
        ax.plot(xs, curves[key], marker=".", label=label)
    ax.set_xlabel("scan in the stream")
    ax.set_ylabel("Dice at the end of the scan")
    ax.set_ylim(0, 1)
    ax.set_title("Dynamic interactive learning along the stream (Figures 4-5)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stream", type=int, default=40)
    p.add_argument("--eval", type=int, default=20)
    p.add_argument(
        "--max-slices", type=int, default=6, help="per plane (the paper's 6+6 cap)"
    )
    p.add_argument("--rho", type=float, default=0.85)
    p.add_argument("--n-f", type=int, default=20)
    p.add_argument("--backend", default="mci")
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--grid", type=int, nargs=3, default=[32, 48, 32])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes (stream 3, eval 2, 2+2 slices, small UNet)",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.stream, args.eval, args.max_slices, args.n_f, args.channels = (
            3,
            2,
            2,
            2,
            [4, 8, 16],
        )
    name = "dynamic_interactive"
    if not data_available():
        return skipped(name, args.out_dir)
    clock = Clock()
    grid = tuple(args.grid)
    eval_ids, stream_ids = splits(args.eval, args.stream)
    config = bench_config("demo-paper", {
        "stopping": {"rho": args.rho, "quota_gamma": 2 * args.max_slices, "n_inter": args.max_slices},
        "guidance": {"strategy": "model", "first_round": "random", "planes": ["coronal", "sagittal"], "w1": 0.5},
        "propagation": {"backend": args.backend},
        "training": {"n_f": args.n_f, "weight_scheme": "exp", "replay_m": 2, "lambda_l": 0.5, "lambda_y": 0.8,
                     "channels": list(args.channels), "grid": list(grid), "device": "cpu", "seed": args.seed},
    })

    def read(case_id: str):  # noqa: ANN202
        return campaign_case(case_id, HIPPO / "images" / f"{case_id}.nii.gz", HIPPO / "labels" / f"{case_id}.nii.gz",
                             config)

    evals = [read(c) for c in eval_ids]
    stream = [read(c) for c in stream_ids]
    by_id = {c.case_id: c for c in stream}
    curves: dict[str, list[float]] = {
        "dice_gt_proxy": [],
        "dice_gt_prediction": [],
        "dice_proxy_prediction": [],
    }
    labor: list[float] = []

    def on_scan(outcome) -> None:  # noqa: ANN001
        session = outcome.session
        c = by_id[session.case_id]
        pred = session.prediction >= 0.5
        curves["dice_gt_proxy"].append(dice(c.gt, session.proxy.mask))
        curves["dice_gt_prediction"].append(dice(c.gt, pred))
        curves["dice_proxy_prediction"].append(dice(session.proxy.mask, pred))
        labor.append(session.labor(c.targets))
        print(
            f"[{clock()} s] {session.case_id}: "
            + " ".join(f"{v[-1]:.3f}" for v in curves.values()),
            flush=True,
        )

    _, trainer = run_campaign(stream, config, on_scan=on_scan)
    eval_dice = evaluate(trainer.model, evals)
    dyn_gt = None
    try:
        data = json.loads(
            ((args.out_dir or RESULTS) / "dynamic_learning.json").read_text(encoding="utf-8")
        )
        dyn_gt = {
            k: data["results"][k]["mean_over_orders"]
            for k in ("offline", "dynamic+RP", "dynamic+RP+LS")
        }
    except (OSError, KeyError, ValueError):
        pass
    sizes = {
        "stream": len(stream),
        "eval": len(evals),
        "max_slices_per_plane": args.max_slices,
        "rho": args.rho,
        "n_f": args.n_f,
        "backend": args.backend,
        "channels": args.channels,
        "grid": list(grid),
        "guidance": "model (w1=0.5), first round random",
        "training": "replay m=2, WL exp, lambda_Y=0.8",
    }
    out_dir = args.out_dir or RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot(curves, out_dir / f"{name}.png")
    payload = {
        "benchmark": name,
        "paper": "Table 6, Figures 4-5",
        "sizes": sizes,
        "device": device_line(),
        "wall_s": clock(),
        "eval_dice": stats(eval_dice),
        "curves": curves,
        "labor_per_scan": labor,
        "mean_labor": float(np.mean(labor)),
        "dynamic_gt_reference": dyn_gt,
    }
    rows = [["dynam+Inter (proxy masks only)", *stats(eval_dice).values()]]
    if dyn_gt:
        rows += [
            [f"{k} (full ground truth, dynamic_learning.py)", v, "", "", "", ""]
            for k, v in dyn_gt.items()
        ]
    md = f"# Dynamic interactive learning (Table 6, Figures 4-5)\n\nSizes: {sizes}\n\nDevice: {device_line()}; wall {clock()} s\n\n"
    md += md_table(["segmenter", "Dice mean", "std", "min", "max", "n"], rows)
    md += f"\nMean labor per stream scan: {np.mean(labor):.3f} of full contouring (1+1 per round, up to "
    md += f"{args.max_slices}+{args.max_slices}).\n\nLast 5 scans: Dice(Y, proxy) {np.mean(curves['dice_gt_proxy'][-5:]):.3f}, "
    md += f"Dice(Y, F) {np.mean(curves['dice_gt_prediction'][-5:]):.3f}, Dice(proxy, F) {np.mean(curves['dice_proxy_prediction'][-5:]):.3f}\n"
    md += f"\n![curves]({name}.png)\n"
    write_outputs(name, payload, md, out_dir=args.out_dir)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
