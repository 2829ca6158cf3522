"""What a campaign's final masks allow: the continual learner's own recipe, trained on label variants of one stream.

``bench/continuous.py`` measures the campaign's final segmenter against an offline one trained on the stream's
ground truth. This benchmark asks where the difference comes from. One ``ours-continual`` campaign runs along
the stream (``continuous.run_config``, time accounting included) and leaves each scan's final mask on the
working grid, and whether the physician accepted the scan without drawing. Then a fresh segmenter is trained
with the learner's own recipe (:class:`dil_core.continual.ContinualLearner`: the same batch, augmentation and
moving average; no hold-out, no gate, ``--steps`` steps) on each labelling of the same scans:

``ground-truth``       every scan's ground truth: what this recipe makes of perfect labels;
``final-masks``        every scan's final mask: the labels the campaign's learner has;
``without-accepted``   only the scans the physician drew on, with their final masks (the scans accepted
                       without drawing hold the segmenter's own earlier prediction);
``gt-on-drawn``        ground truth on the scans drawn on, final masks on the accepted ones;
``gt-on-accepted``     ground truth on the accepted scans, final masks on the drawn ones;
``weighted-exp``       every scan's final mask, each voxel of a drawn-on scan weighted by its distance ``d`` (mm)
                       to the nearest drawn slice, ``0.25 + 0.75 exp(-d / 3)`` (the paper's confidence map,
                       equation 11 with a length scale and a floor); accepted scans weighted 1 throughout;
``weighted-drawn``     the same, with the drawn slices weighted 5 and every other voxel 1 (equation 12, omega 4);
``offline``            ``continuous.py``'s reference (``train_offline`` on the ground truth), for the gap.

Each is evaluated on the evaluation split with test-time flips, as the campaign's segmenter is.

Two checks on the campaign itself tell label noise from a bias that a calibration could remove: each final
mask's volume over its ground truth's (drawn on and accepted scans apart), and the campaign's final segmenter's
Dice on the evaluation split at thresholds around 0.5 (:data:`THRESHOLDS`), and on its own training scans.

    .venv/bin/python bench/label_ceiling.py [--stream 80] [--rho 0.85] [--steps 3000] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _campaign import CampaignCase, bench_config
from _common import (Clock, data_available, device_line, evaluate, md_table, predict_case, skipped, stats,
                     write_outputs)
from continuous import _cases, _overrides, ema_of, run_config, run_offline
from continuous import parse_args as continuous_args

from dil_core.continual import ContinualLearner, FinishedScan
from dil_core.metrics import dice
from dil_core.params import make_trainer

if TYPE_CHECKING:
    import torch

NAME = "label_ceiling"

#: labelling -> (which scans train, where the ground truth replaces the final mask, the voxel weights
#: (:data:`WEIGHTINGS`)), per scan's ``accepted`` flag.
VARIANTS: dict[str, tuple[str, str, str]] = {
    "ground-truth": ("all", "all", "none"),
    "final-masks": ("all", "none", "none"),
    "without-accepted": ("drawn", "none", "none"),
    "gt-on-drawn": ("all", "drawn", "none"),
    "gt-on-accepted": ("all", "accepted", "none"),
    "weighted-exp": ("all", "none", "exp"),
    "weighted-drawn": ("all", "none", "drawn"),
}


def _exp(distance: np.ndarray) -> np.ndarray:
    return 0.25 + 0.75 * np.exp(-distance / 3.0)


def _on_drawn(distance: np.ndarray) -> np.ndarray:
    return 1.0 + 4.0 * np.clip(1.0 - distance, 0.0, 1.0)  # 5 on a drawn slice, 1 from 1 mm away (grid-resampled)


#: weighting -> the weights of a drawn-on scan from its distance to the drawn slices (an accepted scan: ones);
#: ``None``: no weights at all. The loss normalises each scan's weights (``dil_core.losses.weighted_loss``), so
#: only their ratios within a scan count: one constant weight per scan is the same as none.
WEIGHTINGS: dict[str, Callable[[np.ndarray], np.ndarray] | None] = {"none": None, "exp": _exp, "drawn": _on_drawn}


#: thresholds of the final segmenter's probabilities in the calibration check (the campaign uses 0.5).
THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6)
THRESHOLDS_LABELS = [f">= {t}" for t in THRESHOLDS]


def _picks(rule: str, accepted: bool) -> bool:
    return rule == "all" or (rule == "drawn" and not accepted) or (rule == "accepted" and accepted)


def scan_weights(weighting: str, distance: np.ndarray, accepted: bool) -> np.ndarray | None:
    """The voxel weights :data:`WEIGHTINGS` gives a scan with this distance (mm) to its drawn slices."""
    rule = WEIGHTINGS[weighting]
    if rule is None:
        return None
    return (np.ones(distance.shape) if accepted else rule(distance)).astype(np.float32)


def labelled(stream: list[CampaignCase], masks: list[np.ndarray], accepted: list[bool], variant: str,
             distances: list[np.ndarray] | None = None) -> list[FinishedScan]:
    """The training scans of ``variant`` (:data:`VARIANTS`): each one's image, the target it gets, and its weights
    from ``distances`` (each scan's distance to its drawn slices; needed by the weighted variants only)."""
    train, truth, weighting = VARIANTS[variant]
    if WEIGHTINGS[weighting] is not None and distances is None:
        raise ValueError(f"variant {variant!r} weights voxels by their distance to drawn slices: give distances")
    far = [None] * len(stream) if distances is None else distances
    return [
        FinishedScan(case.case_id, case.image_grid,
                     np.clip(case.gt_grid, 0.0, 1.0).astype(np.float32) if _picks(truth, acc) else mask,
                     None if d is None else scan_weights(weighting, d, acc))
        for case, mask, acc, d in zip(stream, masks, accepted, far, strict=True)
        if _picks(train, acc)
    ]


def train_variant(variant: str, scans: list[FinishedScan], evals: list[CampaignCase], args: argparse.Namespace) -> dict:
    """A fresh segmenter trained ``args.steps`` steps with the learner's recipe on ``scans``; its Dice on ``evals``."""
    import torch

    torch.set_num_threads(1)
    clock = Clock()
    config = bench_config("demo", _overrides(args, continual=True))
    c = config.continual
    # every scan trains: the hold-out's first validation scan would be scan number 10**6; no gate ever runs
    learner = ContinualLearner(make_trainer(config.training), batch=c.batch, gate_every=10**9,
                               holdout_every=10**6, holdout_size=1, ema=c.ema, rng=config.training.seed)
    for scan in scans:
        learner.add(scan)
    steps = learner.train(args.steps)
    return {"name": variant, "scans": len(scans), "steps": steps, "seconds_per_step": learner.seconds_per_step,
            "segmenter_eval": stats(evaluate(learner.candidate, evals, flips=config.training.test_time_flips)),
            "wall_s": clock()}


def volume_ratios(stream: list[CampaignCase], masks: list[np.ndarray]) -> list[float]:
    """Each final mask's volume over its ground truth's, on the working grid (both taken at 0.5)."""
    return [float((m >= 0.5).sum() / max(1, (c.gt_grid >= 0.5).sum())) for c, m in zip(stream, masks, strict=True)]


def calibration(model: torch.nn.Module, stream: list[CampaignCase], evals: list[CampaignCase], flips: bool) -> dict:
    """The final segmenter's mean Dice per threshold, on the evaluation split and on the scans it trained on."""

    def sweep(cases: list[CampaignCase]) -> dict[str, float]:
        probs = [predict_case(model, c, flips=flips) for c in cases]
        return {f"{t:.2f}": float(np.mean([dice(c.gt, p >= t) for c, p in zip(cases, probs, strict=True)]))
                for t in THRESHOLDS}

    return {"eval": sweep(evals), "stream": sweep(stream)}


def _mean(summary: dict) -> str:
    return f"{summary['mean']:.3f}" if summary["n"] else "none"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``continuous.py``'s options (the stream, its campaign, the time accounting) and ``--steps``."""

    def steps(p: argparse.ArgumentParser) -> None:
        p.add_argument("--steps", type=int, default=3000, help="optimiser steps of each labelling's segmenter")
        p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                       help="the labellings to train (default: all)")

    argv = sys.argv[1:] if argv is None else list(argv)
    args = continuous_args([*argv, "--configs", "ours-continual"], description=__doc__.splitlines()[0],
                           extra=steps)
    if args.smoke:
        args.steps = 5
    if args.steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {args.steps}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not data_available(args.dataset):
        return skipped(NAME, args.out_dir, args.dataset)
    clock = Clock()
    stream, evals, stream_ids, eval_ids = _cases(args)
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        offline_fut = pool.submit(run_offline, stream, evals, args)
        campaign = run_config("ours-continual", stream, evals, args, keep_model=True)
        masks, distances = campaign.pop("_targets"), campaign.pop("_drawn_distance")
        accepted = [bool(s["reviewed_only"]) for s in campaign["per_scan"]]
        futs = [pool.submit(train_variant, v, labelled(stream, masks, accepted, v, distances), evals, args)
                for v in args.variants]
        flips = bench_config("demo", _overrides(args, continual=True)).training.test_time_flips
        thresholds = calibration(campaign.pop("_model"), stream, evals, flips)
        variants = [f.result() for f in futs]
        offline = offline_fut.result()
    reference = offline["segmenter_eval"]["mean"] if offline.get("segmenter_eval") else None
    sizes = {"dataset": args.dataset, "stream": len(stream), "eval": len(evals), "rho": args.rho, "plane": args.plane,
             "steps": args.steps, "variants": args.variants, "batch": args.batch, "ema": ema_of(args),
             "share": args.share, "channels": args.channels, "grid": args.grid}
    mask_dice = [s["dice"] for s in campaign["per_scan"]]
    ratios = volume_ratios(stream, masks)
    payload = {
        "benchmark": NAME, "sizes": sizes, "device": device_line(), "wall_s": clock(), "stream_ids": stream_ids,
        "eval_ids": eval_ids, "offline": offline, "variants": variants,
        "campaign": {"mean_labor": campaign["mean_labor"], "accepted_without_drawing": int(sum(accepted)),
                     "segmenter_eval": campaign["segmenter_eval"], "learner_steps": campaign["learner"]["steps"],
                     "final_mask_dice": stats(mask_dice),
                     "final_mask_dice_drawn": stats([d for d, a in zip(mask_dice, accepted, strict=True) if not a]),
                     "final_mask_dice_accepted": stats([d for d, a in zip(mask_dice, accepted, strict=True) if a]),
                     "volume_ratio_drawn": stats([r for r, a in zip(ratios, accepted, strict=True) if not a]),
                     "volume_ratio_accepted": stats([r for r, a in zip(ratios, accepted, strict=True) if a]),
                     "segmenter_by_threshold": thresholds},
    }
    md = [f"# What the final masks allow ({args.dataset}, {len(stream)} scans, rho {args.rho})", "",
          f"Sizes: {sizes}", "", f"Device: {device_line()}; wall {clock()} s", "",
          f"The campaign (ours-continual): mean labor {campaign['mean_labor']:.3f}, {sum(accepted)} scans accepted "
          f"without drawing, final masks' Dice against the ground truth {np.mean(mask_dice):.3f} "
          f"(drawn on: {_mean(payload['campaign']['final_mask_dice_drawn'])}, accepted: "
          f"{_mean(payload['campaign']['final_mask_dice_accepted'])}); its final segmenter "
          f"{campaign['segmenter_eval']['mean']:.3f} on the evaluation split after {campaign['learner']['steps']} "
          "learner steps.", ""]
    c = payload["campaign"]
    md += [f"Final masks' volume over the ground truth's: drawn on {_mean(c['volume_ratio_drawn'])}, accepted "
           f"{_mean(c['volume_ratio_accepted'])}. The campaign's final segmenter by threshold:", "",
           md_table(["Dice of", *THRESHOLDS_LABELS],
                    [[name, *thresholds[k].values()] for k, name in (("eval", "the evaluation split"),
                                                                         ("stream", "its training scans"))])]
    rows = [[v["name"], v["scans"], v["steps"], v["segmenter_eval"]["mean"],
             "-" if reference is None else reference - v["segmenter_eval"]["mean"]] for v in variants]
    if reference is not None:
        rows.append(["offline (continuous.py's reference)", len(stream), offline["steps"], reference, 0.0])
    md.append(md_table(["labels", "training scans", "steps", "segmenter Dice (eval)", "gap to offline"], rows))
    write_outputs(NAME, payload, "\n".join(md) + "\n", out_dir=args.out_dir)
    for v in variants:
        print(f"{v['name']}: Dice {v['segmenter_eval']['mean']:.4f} ({v['scans']} scans)", flush=True)
    print(f"wall {clock()} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
