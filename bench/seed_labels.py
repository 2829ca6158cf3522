"""What a few seed scans teach, by the bar they are labeled to: the reason for ``continual.seed_share``.

The first ``--seed-scans`` scans of the stream are labeled as a campaign labels its seed scans (cold start,
evenly spaced slices and the proxy alone, to ``rho_seed``; ``continuous.run_config`` with every scan a seed
scan), once per ``--rho-seeds`` bar. A fresh segmenter is then trained with the continual learner's own
recipe (``label_ceiling.train_variant``: batch 2, the same augmentation, the moving average; ``--steps``
steps) on those scans' final masks, and once on their ground truth. Reported per bar: the seed scans' labor
and their masks' Dice against the ground truth, and each segmenter's Dice on the evaluation split.

    .venv/bin/python bench/seed_labels.py [--seed-scans 5] [--rho-seeds 0.9 0.94] [--steps 3000] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import Clock, data_available, device_line, md_table, skipped, stats, write_outputs
from continuous import _cases, run_config
from continuous import parse_args as continuous_args
from label_ceiling import train_variant

from dil_core.continual import FinishedScan

NAME = "seed_labels"


def seeds_at(rho_seed: float, args: argparse.Namespace) -> dict:
    """The seed scans labeled to ``rho_seed`` and a segmenter trained on their final masks."""
    # a seed scan shows no prediction, so the learner's steps while it is drawn change nothing: it gets almost none
    run = argparse.Namespace(**{**vars(args), "rho_seed": rho_seed, "share": 0.001})
    stream, evals, _, _ = _cases(run)
    campaign = run_config("ours-continual", stream, [], run)
    masks = campaign.pop("_targets")
    scans = [FinishedScan(c.case_id, c.image_grid, m) for c, m in zip(stream, masks, strict=True)]
    segmenter = train_variant(f"final masks at rho_seed {rho_seed}", scans, evals, run)
    return {"rho_seed": rho_seed, "labor": [s["labor"] for s in campaign["per_scan"]],
            "mean_labor": campaign["mean_labor"], "mask_dice": stats([s["dice"] for s in campaign["per_scan"]]),
            "segmenter": segmenter}


def on_truth(args: argparse.Namespace) -> dict:
    """The same training on the seed scans' ground truth."""
    stream, evals, _, _ = _cases(args)
    scans = [FinishedScan(c.case_id, c.image_grid, np.clip(c.gt_grid, 0.0, 1.0).astype(np.float32)) for c in stream]
    return train_variant("ground truth", scans, evals, args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``continuous.py``'s options; the stream is the seed scans (``--seed-scans``), each labeled as a seed."""

    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--steps", type=int, default=3000, help="optimiser steps of each segmenter")
        p.add_argument("--rho-seeds", type=float, nargs="+", default=[0.9, 0.94], help="the bars to label the seeds to")

    argv = sys.argv[1:] if argv is None else list(argv)
    args = continuous_args([*argv, "--configs", "ours-continual"], description=__doc__.splitlines()[0], extra=extra)
    if args.smoke:
        args.steps, args.rho_seeds = 5, [0.5]
    args.stream = args.seed_scans
    if args.steps < 1 or args.seed_scans < 1:
        raise SystemExit(f"--steps and --seed-scans must be >= 1, got {args.steps} and {args.seed_scans}")
    if any(not 0.0 < r <= 1.0 for r in args.rho_seeds):
        raise SystemExit(f"--rho-seeds must lie in (0, 1], got {args.rho_seeds}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not data_available(args.dataset):
        return skipped(NAME, args.out_dir, args.dataset)
    clock = Clock()
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        truth_fut = pool.submit(on_truth, args)
        bars = [f.result() for f in [pool.submit(seeds_at, r, args) for r in args.rho_seeds]]
        truth = truth_fut.result()
    sizes = {"dataset": args.dataset, "seed_scans": args.seed_scans, "eval": args.eval, "rho_seeds": args.rho_seeds,
             "steps": args.steps, "batch": args.batch, "plane": args.plane, "channels": args.channels,
             "grid": args.grid}
    payload = {"benchmark": NAME, "sizes": sizes, "device": device_line(), "wall_s": clock(), "bars": bars,
               "ground_truth": truth}
    rows = [[f"final masks at rho_seed {b['rho_seed']}", b["mean_labor"], b["mask_dice"]["mean"],
             b["segmenter"]["segmenter_eval"]["mean"]] for b in bars]
    rows.append(["ground truth", "-", 1.0, truth["segmenter_eval"]["mean"]])
    md = [f"# What {args.seed_scans} seed scans teach ({args.dataset})", "", f"Sizes: {sizes}", "",
          f"Device: {device_line()}; wall {clock()} s", "",
          md_table(["labels", "labor per seed scan", "masks' Dice", "segmenter Dice (eval)"], rows)]
    write_outputs(NAME, payload, "\n".join(md) + "\n", out_dir=args.out_dir)
    for row in rows:
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
