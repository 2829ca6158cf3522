"""Dynamic learning with ground truth (paper sec 3.2, Algorithm 6, Tables 1-2) on hippocampus.

A training stream of scans with full ground truth arrives one scan at a time; the segmenter takes ``n_f`` steps
on each (Algorithm 3 with the whole ground truth as the "proxy"), optionally with replay (Algorithm 1, ``m``
replayed samples per step) and label smoothing (eq 2, ``lambda_Y``). The offline benchmark trains on the same
scans in random batches of ``m + 1`` for the same number of steps. Dice on a fixed evaluation split, over
several stream orders (the +- of Table 1), and along the stream at 25/50/75/100 % (Table 2).

    .venv/bin/python bench/dynamic_learning.py [--stream 40] [--eval 20] [--orders 3] [--steps 20] [--smoke]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import (
    Case,
    Clock,
    data_available,
    device_line,
    evaluate,
    load_case,
    make_trainer,
    md_table,
    skipped,
    splits,
    stats,
    write_outputs,
)

from dil_core.models import predict
from dil_core.replay import ReplayBuffer
from dil_core.training import smoothed_target

SETTINGS = ("offline", "dynamic", "dynamic+RP", "dynamic+LS", "dynamic+RP+LS")


def run_dynamic(
    stream: list[Case],
    evals: list[Case],
    *,
    replay: bool,
    smoothing: bool,
    args,
    seed: int,
) -> dict:
    trainer = make_trainer(
        tuple(args.channels), seed=seed, b=args.b, b_star=args.b_star
    )
    m = args.m if replay else 0
    lam_l = args.lambda_l if replay else 1.0
    checkpoints = sorted(
        {max(1, round(len(stream) * f)) for f in (0.25, 0.5, 0.75, 1.0)}
    )
    along: dict[int, float] = {}
    for t, case in enumerate(stream, start=1):
        target = case.gt_grid
        if smoothing and t > 1:
            target = smoothed_target(
                predict(trainer.model, case.image_grid), target, lambda_y=args.lambda_y
            )
        weight = np.ones_like(target)
        trainer.train_round(
            case.image_grid, target, weight, n_steps=args.steps, lambda_l=lam_l, m=m
        )
        if replay:
            trainer.end_of_round_update(
                (case.image_grid, target.astype(np.float32), weight)
            )
        if t in checkpoints:
            along[t] = float(np.mean(evaluate(trainer.model, evals)))
    return {
        "eval_dice": evaluate(trainer.model, evals),
        "along_stream": along,
        "model": trainer.model,
    }


def run_offline(
    stream: list[Case], evals: list[Case], *, args, seed: int, steps: int
) -> dict:
    n = len(stream)
    trainer = make_trainer(tuple(args.channels), seed=seed)
    # every sample in the buffer, B = B*: each step is a random batch of m + 1 scans, equally weighted
    trainer.buffer = ReplayBuffer(n, n + 1, rng=seed + 3)
    samples = [(c.image_grid, c.gt_grid, np.ones_like(c.gt_grid)) for c in stream]
    for s in samples:
        trainer.buffer.update(s)
    rng = np.random.default_rng(seed + 4)
    m = min(args.m, n - 1)
    for _ in range(steps):
        i = int(rng.integers(n))
        trainer.train_round(*samples[i], n_steps=1, lambda_l=1.0 / (m + 2), m=m)
    return {
        "eval_dice": evaluate(trainer.model, evals),
        "along_stream": {},
        "model": trainer.model,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stream", type=int, default=40)
    p.add_argument("--eval", type=int, default=20)
    p.add_argument("--orders", type=int, default=3)
    p.add_argument(
        "--steps", type=int, default=20, help="n_F: optimiser steps per stream sample"
    )
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--grid", type=int, nargs=3, default=[32, 48, 32])
    p.add_argument("--m", type=int, default=2)
    p.add_argument("--b", type=int, default=8)
    p.add_argument("--b-star", type=int, default=16)
    p.add_argument("--lambda-l", type=float, default=0.5)
    p.add_argument("--lambda-y", type=float, default=0.8)
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument(
        "--save-offline",
        type=Path,
        default=None,
        help="write the first order's offline weights here",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes (stream 4, eval 2, 1 order, 2 steps)",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.stream, args.eval, args.orders, args.steps, args.channels = (
            4,
            2,
            1,
            2,
            [4, 8, 16],
        )
    name = "dynamic_learning"
    if not data_available():
        return skipped(name, args.out_dir)
    clock = Clock()
    grid = tuple(args.grid)
    eval_ids, stream_ids = splits(args.eval, args.stream)
    evals = [load_case(c, grid) for c in eval_ids]
    pool = [load_case(c, grid) for c in stream_ids]
    results: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    for order in range(args.orders):
        perm = np.random.default_rng(100 + order).permutation(len(pool))
        stream = [pool[i] for i in perm]
        seed = 10 * order
        for setting in SETTINGS:
            if setting == "offline":
                r = run_offline(
                    stream, evals, args=args, seed=seed, steps=args.steps * len(stream)
                )
                if order == 0 and args.save_offline is not None:
                    import torch

                    args.save_offline.parent.mkdir(parents=True, exist_ok=True)
                    torch.save(r["model"].state_dict(), args.save_offline)
            else:
                r = run_dynamic(
                    stream,
                    evals,
                    replay="RP" in setting,
                    smoothing="LS" in setting,
                    args=args,
                    seed=seed,
                )
            r.pop("model")
            results[setting].append(r)
            print(
                f"[{clock()} s] order {order} {setting}: mean Dice {np.mean(r['eval_dice']):.3f}",
                flush=True,
            )
    table = {}
    for setting, runs in results.items():
        per_order = [float(np.mean(r["eval_dice"])) for r in runs]
        pooled = [d for r in runs for d in r["eval_dice"]]
        along: dict[str, list[float]] = {}
        for r in runs:
            for t, v in r["along_stream"].items():
                along.setdefault(str(t), []).append(v)
        table[setting] = {
            "per_order_mean": per_order,
            "mean_over_orders": float(np.mean(per_order)),
            "std_over_orders": float(np.std(per_order)),
            "pooled_scans": stats(pooled),
            "along_stream_mean": {t: float(np.mean(v)) for t, v in along.items()},
        }
    sizes = {
        "stream": args.stream,
        "eval": args.eval,
        "orders": args.orders,
        "steps_per_sample": args.steps,
        "offline_steps": args.steps * args.stream,
        "channels": args.channels,
        "grid": list(grid),
        "m": args.m,
        "b": args.b,
        "b_star": args.b_star,
        "lambda_l": args.lambda_l,
        "lambda_y": args.lambda_y,
        "batch": "1 new + m replayed (dynamic+RP), 1 (dynamic), m+1 random (offline)",
    }
    payload = {
        "benchmark": name,
        "paper": "Tables 1-2, Algorithm 6",
        "sizes": sizes,
        "device": device_line(),
        "wall_s": clock(),
        "results": table,
        "eval_ids": eval_ids,
        "stream_ids": stream_ids,
    }
    rows = [
        [
            s,
            t["mean_over_orders"],
            t["std_over_orders"],
            t["pooled_scans"]["std"],
            t["pooled_scans"]["min"],
            t["pooled_scans"]["max"],
        ]
        for s, t in table.items()
    ]
    md = f"# Dynamic learning with ground truth (Tables 1-2, Algorithm 6)\n\nSizes: {sizes}\n\nDevice: {device_line()}; wall {clock()} s\n\n"
    md += "Dice on the evaluation split (mean over orders, +- std over orders; std/min/max over all eval scans x orders)\n\n"
    md += md_table(
        ["setting", "Dice mean", "+- (orders)", "std (scans)", "min", "max"], rows
    )
    ts = sorted({t for s in table.values() for t in s["along_stream_mean"]}, key=int)
    if ts:
        md += "\nDice on the evaluation split after the first t stream samples (Table 2)\n\n"
        md += md_table(
            ["setting", *[f"t={t}" for t in ts]],
            [
                [s, *[table[s]["along_stream_mean"].get(t, float("nan")) for t in ts]]
                for s in table
                if table[s]["along_stream_mean"]
            ],
        )
    write_outputs(name, payload, md, out_dir=args.out_dir)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
