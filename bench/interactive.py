"""Interactive segmentation vs labor (paper sec 3.3-3.4, Tables 3-5) on hippocampus evaluation scans.

Each evaluation scan gets 6 rounds of 1 coronal + 1 sagittal slice (the simulated user draws the ground truth on
them); after every round, the proxy mask's Dice to the ground truth (and the segmenter's). Settings:

``random``            cold start, random target slices, no segmenter in the loop (the "bad interaction" user)
``cold+MG``           a fresh segmenter per scan trained n_f steps per round on the proxy, model guidance
                      (Algorithm 4, eq 17) from round 2, no weighting (W = 1)
``cold+MG+WL``        the same with the weighted loss (eq 9-11, W = exp(-d))
``warm+MG+WL``        a segmenter pre-trained offline on the training stream (full ground truth), fine-tuned per
                      scan, guiding from round 1
``cold+MG+WL dynam``  Table 5: the evaluation scans as a stream, the segmenter carried over with replay
``warm+MG+WL dynam``  the same from the warm segmenter

    .venv/bin/python bench/interactive.py [--scans 15] [--steps 6] [--backend mci] [--smoke]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _campaign import bench_config, campaign_case
from _common import (
    HIPPO,
    Clock,
    data_available,
    device_line,
    md_table,
    skipped,
    splits,
    write_outputs,
)

from dil_core import round as one_round
from dil_core.methods import get_method
from dil_core.metrics import dice
from dil_core.params import make_trainer, session_params
from dil_core.planes import axis_of
from dil_core.replay import ReplayBuffer
from dil_core.session import ScanSession
from dil_core.simulate import GroundTruthOracle

SETTINGS = {
    # name: (strategy, weight scheme, warm, dynamic, train)
    "random": ("random", "none", False, False, False),
    "cold+MG": ("model", "none", False, False, True),
    "cold+MG+WL": ("model", "exp", False, False, True),
    "warm+MG+WL": ("model", "exp", True, False, True),
    "cold+MG+WL dynam": ("model", "exp", False, True, True),
    "warm+MG+WL dynam": ("model", "exp", True, True, True),
}


def _config(args, strategy: str = "model", scheme: str = "none", dynamic: bool = False, train: bool = True):  # noqa: ANN001, ANN202
    """The paper's method (``configs/demo-paper.yaml``) with this setting's strategy, loss weights and replay."""
    return bench_config("demo-paper", {
        "stopping": {"quota_gamma": 2 * args.steps, "n_inter": args.steps},
        "guidance": {"strategy": strategy, "first_round": "random", "planes": ["coronal", "sagittal"], "w1": 0.5},
        "propagation": {"backend": args.backend},
        "training": {"n_f": args.n_f if train else 0, "weight_scheme": scheme, "replay_m": 2 if dynamic else 0,
                     "lambda_l": 0.5 if dynamic else 1.0, "channels": list(args.channels), "grid": list(args.grid),
                     "device": "cpu", "seed": args.seed, "buffer_b": 8, "buffer_b_star": 16},
    })


def offline_model(stream, args):
    trainer = make_trainer(_config(args).training.model_copy(update={"seed": args.seed + 7}))
    n = len(stream)
    trainer.buffer = ReplayBuffer(n, n + 1, rng=args.seed)
    samples = [(c.image_grid, c.gt_grid, np.ones_like(c.gt_grid)) for c in stream]
    for s in samples:
        trainer.buffer.update(s)
    rng = np.random.default_rng(args.seed)
    m = min(2, n - 1)
    for _ in range(args.warm_steps):
        trainer.train_round(
            *samples[int(rng.integers(n))], n_steps=1, lambda_l=1.0 / (m + 2), m=m
        )
    return trainer.model


def run_setting(name, evals, warm_state, args) -> list[dict]:
    """The setting's rounds on each evaluation scan, through the product's round (``dil_core.round``)."""
    strategy, scheme, warm, dynamic, train = SETTINGS[name]
    config = _config(args, strategy, scheme, dynamic, train)
    method = get_method(config.method)
    per_scan = []
    trainer = None
    for position, case in enumerate(evals):
        if trainer is None or not dynamic:
            trainer = make_trainer(config.training)
            if warm:
                trainer.model.load_state_dict(copy.deepcopy(warm_state))
                trainer.steps = args.warm_steps  # it has trained: its prediction guides from round 1
        oracle = GroundTruthOracle(case.gt)
        axes = (axis_of("coronal", case.geometry), axis_of("sagittal", case.geometry))
        extent = {a: oracle.target_extent(a) for a in axes}
        session = ScanSession(case.image, preprocessing=case.prep, params=session_params(config, axes),
                              spacing=case.spacing, case_id=case.case_id, position=position)
        one_round.begin(session, method, trainer)
        targets = oracle.target_slice_counts()
        curve, pred_curve, labor = [], [], []
        for _ in range(args.steps):
            rng = one_round.round_rng(args.seed, position, session.rounds + 1)
            proposal = one_round.propose(session, method, rng=rng, extent=extent)
            requested = {a: v for a, v in proposal.slices.items() if v}
            one_round.apply(session, method, oracle.draw(requested), requested, trainer=trainer)
            curve.append(dice(case.gt, session.proxy.mask))
            pred_curve.append(
                dice(case.gt, session.prediction >= 0.5) if train else float("nan")
            )
            labor.append(session.labor(targets))
        one_round.finish(session, method, trainer)
        per_scan.append(
            {
                "case_id": case.case_id,
                "proxy_dice": curve,
                "prediction_dice": pred_curve,
                "labor": labor,
            }
        )
    return per_scan


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scans", type=int, default=15)
    p.add_argument(
        "--stream",
        type=int,
        default=40,
        help="training scans for the warm (offline) segmenter",
    )
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--n-f", type=int, default=20)
    p.add_argument("--warm-steps", type=int, default=800)
    p.add_argument("--backend", default="mci")
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--grid", type=int, nargs=3, default=[32, 48, 32])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument(
        "--smoke", action="store_true", help="tiny sizes (2 scans, 2 steps, small UNet)"
    )
    args = p.parse_args(argv)
    if args.smoke:
        (
            args.scans,
            args.stream,
            args.steps,
            args.n_f,
            args.warm_steps,
            args.channels,
        ) = 2, 3, 2, 2, 4, [4, 8, 16]
    name = "interactive"
    if not data_available():
        return skipped(name, args.out_dir)
    clock = Clock()
    grid = tuple(args.grid)
    eval_ids, stream_ids = splits(20, args.stream)
    reader = _config(args)

    def read(case_id: str):  # noqa: ANN202
        return campaign_case(case_id, HIPPO / "images" / f"{case_id}.nii.gz", HIPPO / "labels" / f"{case_id}.nii.gz",
                             reader)

    evals = [read(c) for c in eval_ids[: args.scans]]
    stream = [read(c) for c in stream_ids]
    warm_state = offline_model(stream, args).state_dict()
    results = {}
    for setting in SETTINGS:
        per_scan = run_setting(setting, evals, warm_state, args)
        results[setting] = {
            "proxy_dice_mean": np.mean(
                [s["proxy_dice"] for s in per_scan], axis=0
            ).tolist(),
            "proxy_dice_std": np.std(
                [s["proxy_dice"] for s in per_scan], axis=0
            ).tolist(),
            "prediction_dice_mean": np.mean(
                [s["prediction_dice"] for s in per_scan], axis=0
            ).tolist(),
            "labor_mean": np.mean([s["labor"] for s in per_scan], axis=0).tolist(),
            "per_scan": per_scan,
        }
        print(
            f"[{clock()} s] {setting}: "
            + " ".join(f"{v:.3f}" for v in results[setting]["proxy_dice_mean"]),
            flush=True,
        )
    sizes = {
        "scans": len(evals),
        "steps": args.steps,
        "slices_per_step": "1 coronal + 1 sagittal",
        "n_f": args.n_f,
        "backend": args.backend,
        "warm_offline_steps": args.warm_steps,
        "warm_stream": len(stream),
        "channels": args.channels,
        "grid": list(grid),
        "seed": args.seed,
    }
    payload = {
        "benchmark": name,
        "paper": "Tables 3-5",
        "sizes": sizes,
        "device": device_line(),
        "wall_s": clock(),
        "results": results,
        "eval_ids": eval_ids[: args.scans],
    }
    steps = range(1, args.steps + 1)
    labor = results["random"]["labor_mean"]
    md = f"# Interactive segmentation vs labor (Tables 3-5)\n\nSizes: {sizes}\n\nDevice: {device_line()}; wall {clock()} s\n\n"
    md += "Proxy Dice (mean over scans) after step s of 1+1 slices; labor = mean fraction of full contouring\n\n"
    md += md_table(
        ["setting", *[f"{s}+{s} ({labor[s - 1]:.2f})" for s in steps]],
        [[k, *v["proxy_dice_mean"]] for k, v in results.items()],
    )
    md += "\nSegmenter Dice F(X) on the same scan after step s\n\n"
    md += md_table(
        ["setting", *[f"{s}+{s}" for s in steps]],
        [[k, *v["prediction_dice_mean"]] for k, v in results.items() if k != "random"],
    )
    write_outputs(name, payload, md, out_dir=args.out_dir)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
