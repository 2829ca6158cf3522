"""Minimum labor to rho (paper sec 3.5, Table 7, Figure 8) on a hippocampus stream, against the Slicer power user.

Every scan of a stream (Algorithm 5) is labeled, 1+1 slices (coronal + sagittal) per round, until
Dice(ground truth, the scan's mask) >= rho (simulation's stop rule), or the quota runs out. Labor is eq 4 with
every *requested* slice counted, empty ones included (the annotator had to look at them). Configurations:

``paper-random-ants``   random target slices + ANTs affine proxy, no model in the loop (the paper's dynam+Inter
                        baseline; its segmenter does not influence the proxy, so it is not trained here).
``paper-random-mci``    the same with morphological contour interpolation (reference).
``paper-mg``            the paper's best: model guidance (Algorithm 4, eq 17, w1 = 0.5), replay, weighted loss
                        (eq 9-11), label smoothing, training n_f steps per round; proxy mask alone as the mask.
``ours``                DIL's method ``refine`` as ``configs/demo.yaml`` runs it (``dil_core/methods/refine.py``), through
                        the same round as ``dil campaign run`` (``bench/_campaign.py``, ``dil_core.round``): the
                        prediction (UNet 16-128, test-time flips) is checked before any slice
                        is asked for (a scan whose F(X) passes costs nothing); coronal slices only, one per round,
                        where the prediction's cross-section is largest and then where the mask is least sure,
                        away from drawn slices (``--ours-spread``; evenly spaced while the prediction disagrees
                        with the drawing); the mask is the prediction corrected slice by slice by the drawn
                        slices, blended with the sdf-aligned proxy near them; the segmenter trains once per scan on its final mask (end steps, replay
                        of every scan so far). The first ``--seed-scans`` scans are labeled to ``--rho-seed``
                        (seed masks for the segmenter).
``ours-no-seed``        the same without the seed scans.
``power-user``          evenly spaced target slices on one plane including both end slices + MCI, the fewest
                        k >= 2 that reach rho on each scan (fixed plane: the better of the two over the stream).
``power-user-sdf-aligned``  the same slices with sdf-aligned interpolation instead of MCI (a reference: what the
                        better interpolation alone saves).

The final segmenter of each model-based configuration is evaluated on the fixed evaluation split and
compared with the offline model of ``dynamic_learning.py`` (same stream scans, full ground truth).

    .venv/bin/python bench/labor_to_rho.py [--stream 40] [--offset 0] [--ants-scans 20] [--workers 2] [--smoke]

``--offset K`` takes the stream from K scans further along the same seeded permutation (scans the default
stream never saw; the evaluation split stays the same).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _campaign import CampaignCase, bench_config, campaign_case, run_campaign
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
from _labor import plot_cumulative as _plot
from _labor import power_user, summarise

from dil_core.config import CampaignConfig
from dil_core.labor import ScanLabor
from dil_core.methods import get_method
from dil_core.metrics import dice
from dil_core.session import ScanSession
from dil_core.stream import ScanOutcome


@dataclass(frozen=True)
class Config:
    """A benchmark configuration: a campaign config (``configs/<base>.yaml`` with overrides), or no model."""

    name: str
    base: str
    overrides: dict = field(default_factory=dict)
    train: bool = True
    max_scans: int | None = None

    def campaign(self) -> CampaignConfig:
        return bench_config(self.base, self.overrides)


def _weights(spec: str) -> dict:
    """``none`` or ``exp:LENGTH:FLOOR`` (the confidence map the segmenter trains with on a finished scan)."""
    if spec == "none":
        return {"weight_scheme": "none"}
    kind, length, floor = spec.split(":")
    return {"weight_scheme": kind, "weight_length": float(length), "weight_floor": float(floor)}


#: Labeled until rho: the quota never binds (a scan stops when nothing is left to ask on its planes).
_UNTIL_RHO = {"quota_gamma": 400, "n_inter": 200}


def configs(args: argparse.Namespace) -> list[Config]:
    training = {"device": "cpu", "grid": list(args.grid), "seed": args.seed}
    ours = Config("ours", "demo", {
        "stopping": {"seed_scans": args.seed_scans, "rho_seed": args.rho_seed, "rho": args.rho},
        "training": {**training, "channels": list(args.ours_channels), **_weights(args.ours_weights)},
        "refine": {"end_steps": args.ours_end_steps, "spread": args.ours_spread,
                   "fallback_after": args.fallback_after or None},
    })
    paper = {
        "stopping": {**_UNTIL_RHO, "rho": args.rho},
        "guidance": {"w1": 0.5},
        "training": {**training, "channels": list(args.channels), "n_f": args.n_f},
    }
    random_ = {**paper, "guidance": {"strategy": "random", "first_round": "random"},
               "training": {**paper["training"], "n_f": 0}}
    return [
        Config("paper-random-ants", "demo-paper", {**random_, "propagation": {"backend": "ants-affine"}}, train=False,
               max_scans=args.ants_scans),
        Config("paper-random-mci", "demo-paper", random_, train=False),
        Config("paper-mg", "demo-paper", paper),
        ours,
        Config("ours-no-seed", "demo", {**ours.overrides, "stopping": {**ours.overrides["stopping"], "seed_scans": 0}}),
    ]


DEFAULT_CONFIGS = ("paper-random-ants", "paper-random-mci", "paper-mg", "ours", "ours-no-seed")


def _scan_row(outcome: ScanOutcome, case: CampaignCase, rho: float, prior: float, seconds: float) -> dict:
    session = outcome.session
    targets = case.targets
    axes = session.params.axes
    drawn = {a: len(session.drawn.get(a, ())) for a in axes}
    d = float(outcome.decision.value) if outcome.decision is not None and outcome.decision.value is not None else 0.0
    return {
        "case_id": case.case_id,
        "drawn": drawn,
        "targets": {a: targets[a] for a in axes},
        "labor": ScanLabor(case.case_id, drawn, {a: targets[a] for a in axes}).fraction,
        "rounds": session.rounds,
        "dice": d,
        "reached": bool(d >= rho),
        "dice_prior_prediction": prior,
        "seconds": round(seconds, 2),
    }


def run_config(cfg: Config, stream: list[CampaignCase], evals: list[CampaignCase], args: argparse.Namespace) -> dict:
    """One configuration along the stream, as ``dil campaign run`` would run its config (same round, same order)."""
    import torch

    torch.set_num_threads(1)
    clock = Clock()
    stream = stream[: cfg.max_scans] if cfg.max_scans else stream
    config = cfg.campaign()
    method = get_method(config.method)
    per_scan: list[dict] = []
    t0 = [time.perf_counter()]

    def on_scan(outcome: ScanOutcome) -> None:
        per_scan.append(scan_row(outcome, stream[len(per_scan)], method, args.rho, time.perf_counter() - t0[0]))
        t0[0] = time.perf_counter()

    _, trainer = run_campaign(stream, config, on_scan=on_scan)
    out = summarise(cfg.name, per_scan)
    out["config"] = {"name": cfg.name, "base": cfg.base, "overrides": cfg.overrides}
    out["wall_s"] = clock()
    flips = config.training.test_time_flips
    out["segmenter_eval"] = stats(evaluate(trainer.model, evals, flips=flips)) if cfg.train else None
    return out


def scan_row(outcome: ScanOutcome, case: CampaignCase, method, rho: float, seconds: float) -> dict:
    """A finished scan's row, with the Dice of the prediction its review looked at (0 on a cold start)."""
    s = outcome.session
    prior = dice(case.gt, method.mask(_fresh_view(s))) if s.previous_prediction is not None else 0.0
    return _scan_row(outcome, case, rho, prior, seconds)


def _fresh_view(session):
    """The scan as it was before anything was drawn: its prediction alone (what the review looked at)."""
    view = ScanSession(session.image, preprocessing=session.preprocessing, params=session.params,
                       spacing=session.spacing, case_id=session.case_id, position=session.position)
    view._start(session.previous_prediction)
    return view


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stream", type=int, default=40)
    p.add_argument("--offset", type=int, default=0, help="take the stream this many scans further along")
    p.add_argument("--eval", type=int, default=20)
    p.add_argument(
        "--ants-scans",
        type=int,
        default=20,
        help="scans of the stream for the (slow) ANTs baseline",
    )
    p.add_argument("--rho", type=float, default=0.85)
    p.add_argument("--n-f", type=int, default=20)
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--ours-channels", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--ours-end-steps", type=int, default=100)
    p.add_argument("--seed-scans", type=int, default=5)
    p.add_argument("--rho-seed", type=float, default=0.9)
    p.add_argument(
        "--fallback-after",
        type=int,
        default=0,
        help="ours: slices drawn after which an untrusted prediction is set aside (0: never)",
    )
    p.add_argument(
        "--ours-spread",
        type=float,
        default=2.0,
        help="ours: slices over which the choice of the next slice is pushed away from drawn ones (0: off)",
    )
    p.add_argument("--ours-weights", default="none", help="none, or exp:LENGTH:FLOOR (eq. 11 with a length scale)")
    p.add_argument("--grid", type=int, nargs=3, default=[32, 48, 32])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="configurations to run (default: {})".format(", ".join(DEFAULT_CONFIGS)),
    )
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument(
        "--smoke", action="store_true", help="tiny sizes (stream 3, eval 2, small UNet)"
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.stream, args.eval, args.ants_scans, args.n_f = 3, 2, 1, 2
        args.channels, args.workers = [4, 8, 16], 1
        args.ours_channels, args.ours_end_steps, args.seed_scans = [4, 8, 16], 4, 1
    name = "labor_to_rho"
    if not data_available():
        return skipped(name, args.out_dir)
    clock = Clock()
    grid = tuple(args.grid)
    eval_ids, stream_ids = splits(args.eval, args.stream + args.offset)
    stream_ids = stream_ids[args.offset :]
    reader = bench_config("demo", {"training": {"grid": list(grid)}})  # every configuration has this grid
    evals = [campaign_case(c, HIPPO / "images" / f"{c}.nii.gz", HIPPO / "labels" / f"{c}.nii.gz", reader)
             for c in eval_ids]
    stream = [campaign_case(c, HIPPO / "images" / f"{c}.nii.gz", HIPPO / "labels" / f"{c}.nii.gz", reader)
              for c in stream_ids]
    wanted = args.only if args.only is not None else DEFAULT_CONFIGS
    cfgs = [c for c in configs(args) if c.name in wanted]
    results: list[dict] = []
    if args.workers > 1:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futs = [pool.submit(run_config, c, stream, evals, args) for c in cfgs]
            pu = power_user(stream, args.rho)
            pu_sdf = power_user(stream, args.rho, backend="sdf-aligned", name="power-user-sdf-aligned")
            results = [f.result() for f in futs]
    else:
        results = [run_config(c, stream, evals, args) for c in cfgs]
        pu = power_user(stream, args.rho)
        pu_sdf = power_user(stream, args.rho, backend="sdf-aligned", name="power-user-sdf-aligned")
    for r in results:
        print(
            f"[{clock()} s] {r['name']}: mean labor {r['mean_labor']:.3f} reached {r['reached']}/{r['scans']}",
            flush=True,
        )
    results += [pu_sdf, pu]
    offline = _offline_reference(args.out_dir)
    pu_by_case = {s["case_id"]: s["labor"] for s in pu["per_scan"]}
    for r in results:
        same = [pu_by_case[s["case_id"]] for s in r["per_scan"]]
        r["power_user_mean_labor_same_scans"] = float(np.mean(same))
        r["ratio_to_power_user"] = r["mean_labor"] / float(np.mean(same))
    sizes = {
        "stream": len(stream),
        "offset": args.offset,
        "eval": len(evals),
        "ants_scans": args.ants_scans,
        "rho": args.rho,
        "slices_per_round": "1 coronal + 1 sagittal (paper), 1 coronal (ours)",
        "n_f": args.n_f,
        "channels": args.channels,
        "ours_channels": args.ours_channels,
        "ours_end_steps": args.ours_end_steps,
        "seed_scans": args.seed_scans,
        "rho_seed": args.rho_seed,
        "fallback_after": args.fallback_after,
        "ours_spread": args.ours_spread,
        "grid": list(grid),
        "seed": args.seed,
        "candidates": "target extent on each plane (the simulated user knows where the target is)",
    }
    payload = {
        "benchmark": name,
        "paper": "Table 7, Figure 8",
        "sizes": sizes,
        "device": device_line(),
        "wall_s": clock(),
        "offline_reference": offline,
        "results": results,
        "stream_ids": stream_ids,
        "eval_ids": eval_ids,
    }
    out_dir = args.out_dir or RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot(results, out_dir / f"{name}.png")
    rows = []
    for r in results:
        seg = r.get("segmenter_eval")
        rows.append(
            [
                r["name"],
                r["scans"],
                r["mean_labor"],
                r["pooled_labor"],
                r["max_labor"],
                f"{r['reached']}/{r['scans']}",
                r["zero_labor_scans"],
                "+".join(str(r["slices"][k]) for k in sorted(r["slices"])),
                r["power_user_mean_labor_same_scans"],
                r["ratio_to_power_user"],
                seg["mean"] if seg else "-",
                r.get("wall_s", "-"),
            ]
        )
    md = f"# Labor to rho = {args.rho} (Table 7, Figure 8)\n\nSizes: {sizes}\n\nDevice: {device_line()}; wall {clock()} s\n\n"
    md += md_table(
        [
            "configuration",
            "scans",
            "mean labor",
            "pooled",
            "max",
            "reached rho",
            "0-labor scans",
            "slices (per axis)",
            "power user (same scans)",
            "ratio",
            "segmenter Dice (eval)",
            "wall s",
        ],
        rows,
    )
    md += f"\nPower user plane: {pu['plane']} (other plane mean labor {pu['other_plane_mean_labor']:.3f}; "
    md += f"best plane per scan {pu['per_scan_best_plane_mean_labor']:.3f}).\n"
    if offline:
        md += f"\nOffline reference (dynamic_learning.py, full ground truth, same stream): Dice {offline:.3f}\n"
    md += f"\n![cumulative labor]({name}.png)\n"
    write_outputs(name, payload, md, out_dir=args.out_dir)
    print(md)
    return 0


def _offline_reference(out_dir: Path | None) -> float | None:
    path = (out_dir or RESULTS) / "dynamic_learning.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return float(data["results"]["offline"]["mean_over_orders"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


if __name__ == "__main__":
    raise SystemExit(main())
