"""Continuous training while physicians draw, with honest time accounting, against today's ``ours`` and the power user.

A simulated physician spends ``--minutes-per-slice`` per drawn slice and ``--review-minutes`` per review (the
prediction a scan starts from, and each request's mask). In that time the round service's continual learner
(``dil_core/continual.py``) trains; here it gets exactly the optimiser steps that this machine runs in those
minutes, measured in the same run by the learner's own steps, times ``--share`` (1: all of it). The time of
the rounds themselves is not given to it (a round is never blocked by training). Configurations, on the same
stream in the same run:

``ours``             ``configs/demo.yaml`` as ``labor_to_rho.py`` runs it: ``end_steps`` steps when a scan finishes.
``ours-continual``   the same method with ``continual.enabled``: no end-of-scan steps; the candidate trains on
                     every finished scan's final mask while the physician works, and the campaign predicts with
                     the champion its gate promotes (rolling hold-out of the campaign's own finished masks).
``power-user``       evenly spaced slices on one plane + MCI, the fewest that reach rho (``_labor.power_user``).
``offline``          a segmenter trained on the stream's full ground truth (``--offline-epochs`` passes): the
                     reference for the final segmenter's Dice on the evaluation split.
``offline-final-masks`` the same training on ``ours-continual``'s final masks: what these labels allow.

Reported: mean labor over the whole stream and over scans 41-80 (``--late-from``), labor and the share of
scans accepted without drawing per block of 20, the final segmenters' Dice on the evaluation split, the rate
(seconds per step) and the steps and promotions of the learner.

    .venv/bin/python bench/continuous.py [--stream 80] [--offset 0] [--share 1.0] [--dataset hippocampus]
    .venv/bin/python bench/continuous.py --dataset left_atrium --stream 20 --plane sagittal

The left atrium's scans are large: the working grid is the segmenter's (``--grid``), as everywhere in DIL.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _campaign import CampaignCase, bench_config, campaign_case, run_campaign
from _common import (HIPPO, SHARED, Clock, data_available, device_line, evaluate, md_table, skipped, splits, stats,
                     write_outputs)
from _labor import power_user, summarise
from labor_to_rho import scan_row

from dil_core.config import ContinualConfig
from dil_core.continual import ContinualLearner, FinishedScan
from dil_core.methods import get_method
from dil_core.models import build_segmenter
from dil_core.preprocess import to_grid
from dil_core.stream import ScanOutcome
from dil_core.training import train_offline
from dil_core.weights import distance_to_drawn

NAME = "continuous"
#: the distance (mm) recorded for a voxel of a scan with nothing drawn on it (accepted without drawing)
FAR = 1000.0


def ema_of(args: argparse.Namespace) -> float | None:
    """The decay ``--ema`` stands for: the config's default when not given, None (the weights as trained) for 0."""
    return ContinualConfig().ema if args.ema is None else (args.ema or None)


def _overrides(args: argparse.Namespace, continual: bool) -> dict:
    return {
        "stopping": {"seed_scans": args.seed_scans, "rho_seed": args.rho_seed, "rho": args.rho},
        "guidance": {"planes": [args.plane]},
        "training": {"device": args.device, "grid": list(args.grid), "seed": args.seed, "channels": list(args.channels),
                     "patch": None if args.patch is None else list(args.patch)},
        "annotator": {"minutes_per_slice": args.minutes_per_slice, "review_minutes": args.review_minutes},
        "refine": {"end_steps": args.end_steps},
        "continual": {"enabled": continual, "share": args.share, "batch": args.batch, "gate_every": args.gate_every,
                      "ema": ema_of(args), "seed_share": args.seed_share},
    }


def run_config(name: str, stream: list[CampaignCase], evals: list[CampaignCase], args: argparse.Namespace,
               keep_model: bool = False) -> dict:
    """One configuration along the stream; ``ours-continual`` with its learner fed the physician's minutes.

    ``keep_model``: the result holds the campaign's final segmenter under ``_model``, and each scan's distance
    (mm, on the working grid; :data:`FAR` where nothing was drawn) to its drawn slices under ``_drawn_distance``
    (neither is written out).
    """
    import torch

    torch.set_num_threads(1)
    clock = Clock()
    config = bench_config("demo", _overrides(args, continual=name == "ours-continual"))
    method = get_method(config.method)
    from dil_core.params import make_trainer

    trainer = make_trainer(config.training)
    learner = None
    minutes = {"physician": 0.0}
    if config.continual.enabled:
        c = config.continual
        learner = ContinualLearner(trainer, batch=c.batch, gate_every=c.gate_every, holdout_every=c.holdout_every,
                                   holdout_size=c.holdout_size, share=c.share, flips=config.training.test_time_flips,
                                   ema=c.ema, seed_share=c.seed_share, rng=config.training.seed)

    def physician(reviews: int, slices: int) -> None:
        m = reviews * config.annotator.review_minutes + slices * config.annotator.minutes_per_slice
        minutes["physician"] += m
        if learner is not None:
            learner.idle(m)

    per_scan: list[dict] = []
    targets: list[np.ndarray] = []  # the final masks on the working grid, as the learner got them
    distances: list[np.ndarray] = []
    t0 = [time.perf_counter()]

    def on_scan(outcome: ScanOutcome) -> None:
        case = stream[len(per_scan)]
        s = outcome.session
        row = scan_row(outcome, case, method, args.rho, time.perf_counter() - t0[0])
        row["reviewed_only"] = outcome.reviewed_only
        if learner is not None:
            target = np.clip(to_grid(s.preprocessing, method.mask(s).astype(np.float32), order=1), 0.0, 1.0)
            learner.add(FinishedScan(case.case_id, s.image_grid, target, seed=len(per_scan) < args.seed_scans))
            targets.append(target)
            if keep_model:
                far = np.minimum(distance_to_drawn(s.image.shape, s.drawn, spacing=s.spacing), FAR)
                distances.append(to_grid(s.preprocessing, far.astype(np.float32), order=1))
            row.update(learner_steps=learner.steps, promotions=learner.promotions)
        per_scan.append(row)
        t0[0] = time.perf_counter()
        print(f"[{clock()} s] {name} scan {len(per_scan)}/{len(stream)} {case.case_id}: labor {row['labor']:.3f}"
              + (f", learner steps {learner.steps}, promotions {learner.promotions}" if learner is not None else ""),
              flush=True)

    run_campaign(stream, config, trainer=trainer, on_scan=on_scan, physician=physician)
    out = summarise(name, per_scan)
    out["physician_minutes"] = minutes["physician"]
    out["wall_s"] = clock()
    out["segmenter_eval"] = stats(evaluate(trainer.model, evals, flips=config.training.test_time_flips)) if evals else None
    if keep_model:
        out["_model"] = trainer.model
        out["_drawn_distance"] = distances
    if learner is not None:
        out["learner"] = {
            "steps": learner.steps, "seconds": round(learner.seconds, 1), "seconds_per_step": learner.seconds_per_step,
            "share": learner.share, "steps_owed": learner.owed, "promotions": learner.promotions,
            "gates": [g.__dict__ for g in learner.gates],
            # the candidate as it ended, beside the champion the campaign predicts with (how much the gate held back)
            "candidate_eval": stats(evaluate(learner.candidate, evals, flips=config.training.test_time_flips))
            if evals else None,
        }
        out["final_mask_dice"] = stats([row["dice"] for row in per_scan])  # the labels it learned from
        out["_targets"] = targets  # for the reference trained offline on them; not written out
    return out


def run_offline(stream: list[CampaignCase], evals: list[CampaignCase], args: argparse.Namespace,
                targets: list[np.ndarray] | None = None) -> dict:
    """A segmenter trained offline on the stream: the reference for the final segmenter.

    On the stream's full ground truth (``offline``), or with ``targets`` on the campaign's own final masks
    (``offline-final-masks``): what the same training makes of the labels a continual learner has.
    """
    import torch

    name = "offline" if targets is None else "offline-final-masks"
    if not evals:
        return {"name": name, "skipped": "no evaluation split (--eval 0)", "segmenter_eval": None}

    torch.set_num_threads(1)
    clock = Clock()
    labels = [c.gt_grid for c in stream] if targets is None else targets
    model = build_segmenter("unet", channels=args.channels, seed=args.seed)
    model, losses = train_offline(model, [(c.image_grid, t) for c, t in zip(stream, labels, strict=True)],
                                  learning_rate=1e-3, epochs=args.offline_epochs, device=args.device, seed=args.seed)
    return {"name": name, "epochs": args.offline_epochs, "steps": args.offline_epochs * len(stream),
            "segmenter_eval": stats(evaluate(model, evals, flips=True)), "wall_s": clock(), "final_loss": losses[-1]}


def blocks(per_scan: list[dict], size: int) -> list[dict]:
    """Mean labor and the share of scans accepted without drawing, per block of ``size`` scans."""
    out = []
    for lo in range(0, len(per_scan), size):
        chunk = per_scan[lo : lo + size]
        out.append({
            "scans": f"{lo + 1}-{lo + len(chunk)}",
            "mean_labor": float(np.mean([s["labor"] for s in chunk])),
            "accepted_without_drawing": float(np.mean([s["labor"] == 0 for s in chunk])),
        })
    return out


def _cases(args: argparse.Namespace) -> tuple[list[CampaignCase], list[CampaignCase], list[str], list[str]]:
    reader = bench_config("demo", {"training": {"grid": list(args.grid)}})
    if args.dataset == "hippocampus":
        root = HIPPO
        eval_ids, stream_ids = splits(args.eval, args.stream + args.offset)
        stream_ids = stream_ids[args.offset :]
    else:
        root = SHARED / args.dataset
        ids = sorted(p.name.removesuffix(".nii.gz") for p in (root / "labels").glob("*.nii.gz"))
        order = [ids[i] for i in np.random.default_rng(args.seed).permutation(len(ids))]
        eval_ids, stream_ids = order[: args.eval], order[args.eval : args.eval + args.offset + args.stream][args.offset :]
    load = [campaign_case(c, root / "images" / f"{c}.nii.gz", root / "labels" / f"{c}.nii.gz", reader)
            for c in eval_ids + stream_ids]
    return load[len(eval_ids):], load[: len(eval_ids)], stream_ids, eval_ids


def parse_args(argv: list[str] | None = None, *, description: str | None = None,
               extra: Callable[[argparse.ArgumentParser], object] | None = None) -> argparse.Namespace:
    """The benchmark's options (``physician_loop.py --continual`` runs the same configuration through ``dil serve``).

    Another benchmark on the same stream gives its own ``description`` and adds its options with ``extra``.
    """
    p = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    p.add_argument("--dataset", default="hippocampus", help="a folder of ../shared/data with images/ and labels/")
    p.add_argument("--stream", type=int, default=80)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--eval", type=int, default=20)
    p.add_argument("--plane", default="coronal")
    p.add_argument("--rho", type=float, default=0.85)
    p.add_argument("--seed-scans", type=int, default=5)
    p.add_argument("--rho-seed", type=float, default=0.9)
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--grid", type=int, nargs=3, default=[32, 48, 32])
    p.add_argument("--patch", type=int, nargs=3, default=None,
                   help="training.patch: train on patches of this size, predict by sliding window")
    p.add_argument("--end-steps", type=int, default=100, help="ours: steps when a scan finishes")
    p.add_argument("--minutes-per-slice", type=float, default=1.5)
    p.add_argument("--review-minutes", type=float, default=0.5)
    p.add_argument("--share", type=float, default=1.0, help="share of the measured steps the learner gets")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--gate-every", type=int, default=50)
    p.add_argument("--ema", type=float, default=None,
                   help="continual.ema, the decay of the moving average the gate promotes (default: the config's, "
                        "0.99; 0: the weights as trained)")
    p.add_argument("--seed-share", type=float, default=None,
                   help="continual.seed_share: the share of each batch drawn from the seed scans (default: none)")
    p.add_argument("--offline-epochs", type=int, default=30)
    p.add_argument("--configs", nargs="+", choices=["ours", "ours-continual"], default=["ours", "ours-continual"],
                   help="the stream configurations to run (ours-continual always: the offline references use its masks)")
    p.add_argument("--late-from", type=int, default=41, help="first scan (1-based) of the late part of the stream")
    p.add_argument("--block", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--smoke", action="store_true", help="tiny sizes (stream 4, eval 2, small UNet)")
    if extra is not None:
        extra(p)
    args = p.parse_args(argv)
    if "ours-continual" not in args.configs:
        p.error("--configs must include ours-continual (the learner and the final-mask reference come from it)")
    if args.smoke:
        args.stream, args.eval, args.seed_scans, args.channels = 4, 2, 1, [4, 8, 16]
        args.end_steps, args.gate_every, args.offline_epochs, args.share, args.workers = 4, 5, 1, 0.002, 1
        args.late_from, args.block = 3, 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not data_available(args.dataset):
        return skipped(NAME, args.out_dir, args.dataset)
    clock = Clock()
    stream, evals, stream_ids, eval_ids = _cases(args)
    names = args.configs
    if args.workers > 1:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futs = [pool.submit(run_config, n, stream, evals, args) for n in names]
            offline_fut = pool.submit(run_offline, stream, evals, args)
            pu = power_user(stream, args.rho)
            results = [f.result() for f in futs]
            offline = offline_fut.result()
    else:
        results = [run_config(n, stream, evals, args) for n in names]
        offline = run_offline(stream, evals, args)
        pu = power_user(stream, args.rho)
    targets = next(r for r in results if r["name"] == "ours-continual").pop("_targets")
    offline_masks = run_offline(stream, evals, args, targets=targets)
    late = args.late_from - 1
    for r in [*results, pu]:
        r["blocks"] = blocks(r["per_scan"], args.block)
        r["mean_labor_late"] = float(np.mean([s["labor"] for s in r["per_scan"][late:]])) if late < r["scans"] else None
        if r.get("segmenter_eval") and offline["segmenter_eval"]:
            r["dice_gap_to_offline"] = offline["segmenter_eval"]["mean"] - r["segmenter_eval"]["mean"]
    sizes = {
        "dataset": args.dataset, "stream": len(stream), "offset": args.offset, "eval": len(evals), "rho": args.rho,
        "plane": args.plane, "seed_scans": args.seed_scans, "rho_seed": args.rho_seed, "channels": args.channels,
        "grid": args.grid, "end_steps": args.end_steps, "minutes_per_slice": args.minutes_per_slice,
        "review_minutes": args.review_minutes, "share": args.share, "batch": args.batch,
        "gate_every": args.gate_every, "offline_epochs": args.offline_epochs, "late_from": args.late_from,
        "block": args.block, "ema": ema_of(args), "patch": args.patch, "seed_share": args.seed_share,
    }
    payload = {"benchmark": NAME, "sizes": sizes, "device": device_line(), "wall_s": clock(), "offline": offline,
               "offline_final_masks": offline_masks,
               "results": [*results, pu], "stream_ids": stream_ids, "eval_ids": eval_ids}
    md = [f"# Continuous training with time accounting ({args.dataset}, {len(stream)} scans)", "",
          f"Sizes: {sizes}", "", f"Device: {device_line()}; wall {clock()} s", ""]
    rows = []
    for r in [*results, pu]:
        seg = r.get("segmenter_eval")
        rows.append([r["name"], r["scans"], r["mean_labor"], r["mean_labor_late"] if r["mean_labor_late"] is not None
                     else "-", f"{r['reached']}/{r['scans']}", r["zero_labor_scans"],
                     seg["mean"] if seg else "-", r.get("dice_gap_to_offline", "-"), r.get("wall_s", "-")])
    md.append(md_table(["configuration", "scans", "mean labor", f"labor scans {args.late_from}+", "reached rho",
                        "accepted without drawing", "segmenter Dice (eval)", "gap to offline", "wall s"], rows))
    if offline["segmenter_eval"]:
        cont = next(r for r in results if r["name"] == "ours-continual")
        md += ["", f"Offline reference: {offline['steps']} steps on the stream's ground truth, "
               f"Dice {offline['segmenter_eval']['mean']:.3f} on the evaluation split. The same training on "
               f"ours-continual's final masks (their Dice against the ground truth: "
               f"{cont['final_mask_dice']['mean']:.3f}): {offline_masks['segmenter_eval']['mean']:.3f}."]
    md += ["", "Per block:", ""]
    md.append(md_table(["configuration", *[b["scans"] for b in results[0]["blocks"]]],
                       [[r["name"], *[f"{b['mean_labor']:.3f} / {b['accepted_without_drawing']:.2f}" for b in r["blocks"]]]
                        for r in [*results, pu]]))
    md += ["", "(mean labor / share accepted without drawing)"]
    cont = next(r for r in results if r["name"] == "ours-continual")["learner"]
    md += ["", f"Learner: {cont['steps']} steps in {cont['seconds']} s ({cont['seconds_per_step']:.3f} s per step, "
           f"measured in this run), share {cont['share']}, {cont['promotions']} promotions of "
           f"{len(cont['gates'])} gates; physician time "
           f"{next(r for r in results if r['name'] == 'ours-continual')['physician_minutes']:.0f} min."]
    if cont.get("candidate_eval"):
        md += ["", f"The candidate as it ended, beside the champion: Dice {cont['candidate_eval']['mean']:.3f} on "
               "the evaluation split."]
    write_outputs(NAME, payload, "\n".join(md) + "\n", out_dir=args.out_dir)
    for r in [*results, pu]:
        print(f"{r['name']}: mean labor {r['mean_labor']:.3f}, late {r['mean_labor_late']}, "
              f"Dice {(r.get('segmenter_eval') or {}).get('mean', '-')}", flush=True)
    print(f"wall {clock()} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
