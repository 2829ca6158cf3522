"""UNet against DynUNet (deep supervision) as the campaign's segmenter: Dice for the same training, and speed.

Both backbones, with the demo's widths (16, 32, 64, 128) on the demo's 32x48x32 working grid, are trained
offline (:func:`dil_core.training.train_offline`: what a scheduled retraining runs, augmentation on) on the
first ``--train`` scans of the shared training stream with their ground truth, for the same number of passes,
and evaluated on the fixed evaluation split (Dice of ``F(X) >= 0.5`` in each scan's own geometry, test-time
flips as the demo predicts). Seconds per optimiser step and per prediction are measured in the same run, and
the UNet is trained once more for the DynUNet's training time (more passes), to compare at equal CPU time.

    .venv/bin/python bench/segmenters.py [--train 20] [--epochs 30] [--smoke]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    data_available,
    device_line,
    evaluate,
    load_case,
    md_table,
    skipped,
    splits,
    stats,
    write_outputs,
)

from dil_core.models import build_segmenter, predict  # noqa: E402
from dil_core.training import train_offline  # noqa: E402

GRID = (32, 48, 32)
CHANNELS = (16, 32, 64, 128)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=20)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out-dir", type=Path, default=None)
    args = p.parse_args(argv)
    if not data_available():
        return skipped("segmenters", args.out_dir)
    channels = CHANNELS
    n_eval = 20
    if args.smoke:
        args.train, args.epochs, channels, n_eval = 2, 1, (4, 8, 16), 2
    t0 = time.monotonic()
    eval_ids, stream_ids = splits(20, 40)
    train = [load_case(c, GRID) for c in stream_ids[: args.train]]
    evals = [load_case(c, GRID) for c in eval_ids[:n_eval]]
    samples = [(c.image_grid, c.gt_grid) for c in train]
    rows, results = [], {}
    runs = [("unet", "unet", args.epochs), ("dynunet", "dynunet", args.epochs), ("unet, same time", "unet", None)]
    for label, name, epochs in runs:
        if epochs is None:  # as many passes as the DynUNet's training time buys the UNet
            per_pass = results["unet"]["seconds_per_step"] * len(samples)
            epochs = max(1, round(results["dynunet"]["train_s"] / per_pass))
        model = build_segmenter(name, channels=channels, seed=0)
        t = time.perf_counter()
        model, losses = train_offline(model, samples, learning_rate=1e-3, epochs=epochs, device="cpu", seed=0)
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        for c in evals[:5]:
            predict(model, c.image_grid, flips=True)
        predict_s = (time.perf_counter() - t) / min(5, len(evals))
        dices = evaluate(model, evals, flips=True)
        steps = epochs * len(samples)
        row = results[label] = {
            "segmenter": name, "epochs": epochs, "steps": steps, "train_s": train_s,
            "seconds_per_step": train_s / steps, "seconds_per_prediction": predict_s,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "loss_first_last": [losses[0], losses[-1]], "dice": stats(dices), "dice_per_scan": dices,
        }
        print(label, {k: v for k, v in row.items() if k != "dice_per_scan"}, flush=True)
        rows.append([label, row["parameters"], steps, f"{train_s:.0f}", f"{row['seconds_per_step']:.3f}",
                     f"{predict_s:.3f}", f"{row['dice']['mean']:.3f}", f"{np.mean([d >= 0.85 for d in dices]):.2f}"])
    payload = {"benchmark": "segmenters", "device": device_line(), "wall_s": round(time.monotonic() - t0, 1),
               "grid": GRID, "channels": channels, "train_scans": len(samples), "eval_scans": len(evals),
               "epochs": args.epochs, "results": results}
    md = (f"# Segmenters: UNet vs DynUNet (deep supervision), {len(samples)} training scans x {args.epochs} "
          f"passes, {len(evals)} evaluation scans\n\n{payload['device']}; wall {payload['wall_s']} s\n\n"
          + md_table(["segmenter", "parameters", "steps", "training s", "s / step", "s / prediction (flips)",
                      "Dice mean", "share >= 0.85"], rows))
    write_outputs("segmenters", payload, md, out_dir=args.out_dir)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
