"""Minimum labor to rho (paper sec 3.5, Table 7, Figure 8) on a hippocampus stream, against the Slicer power user.

Every scan of a stream (Algorithm 5) is labeled, 1+1 slices (coronal + sagittal) per round, until
Dice(ground truth, the scan's mask) >= rho (simulation's stop rule), or the quota runs out. Labor is eq 4 with
every *requested* slice counted, empty ones included (the annotator had to look at them). Configurations:

``paper-random-ants``   random target slices + ANTs affine proxy, no model in the loop (the paper's dynam+Inter
                        baseline; its segmenter does not influence the proxy, so it is not trained here).
``paper-random-mci``    the same with morphological contour interpolation (reference).
``paper-mg``            the paper's best: model guidance (Algorithm 4, eq 17, w1 = 0.5), replay, weighted loss
                        (eq 9-11), label smoothing, training n_f steps per round; proxy mask alone as the mask.
``ours-blend``          ours: the segmenter's prediction is checked before any slice is asked for (a scan whose
                        F(X) passes rho costs 0 slices: the physician reviews and accepts it); slices on the
                        coronal plane only (the cheaper plane per slice), chosen by model guidance from the start
                        (F_prev, w1 = 0.9); F(X)'s threshold calibrated on the drawn slices; the mask blends the
                        interpolated proxy with F(X) by distance to the drawn slices (F(X) outside the drawn
                        span, components connected to the drawing); the segmenter trains at the end of each scan
                        on its accepted mask, with replay.
``ours-blend-ft``       the same, plus n_f fine-tuning steps per round on the current mask (W high near the drawn
                        slices), so that the drawn slices correct F(X) on the whole scan.
``ours-guarded``        ours-blend-ft, plus: evenly spaced slices before the segmenter has trained, and while F(X)
                        agrees poorly with the drawn slices (Dice on them < 0.75) the mask is the proxy alone and
                        the next slices are evenly spaced (the power user's way), so a weak model costs nothing.
``ours-blend-2p``, ``ours-blend-uniform``, ``ours-blend-uncertainty``: variants (two planes; evenly spaced or
                        most-uncertain slices), run with ``--only``.
``power-user``          evenly spaced target slices on one plane including both end slices + MCI, the fewest
                        k >= 2 that reach rho on each scan (fixed plane: the better of the two over the stream).

The final segmenter of each model-based configuration is evaluated on the fixed evaluation split and
compared with the offline model of ``dynamic_learning.py`` (same stream scans, full ground truth).

    .venv/bin/python bench/labor_to_rho.py [--stream 40] [--ants-scans 20] [--workers 2] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import (
    RESULTS,
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
from scipy import ndimage

from dil_core.guidance import evenly_spaced
from dil_core.labor import ScanLabor, cumulative_labor
from dil_core.metrics import dice
from dil_core.models import predict
from dil_core.preprocess import to_grid
from dil_core.propagation import proxy_mask
from dil_core.session import ScanSession, SessionParams, final_mask
from dil_core.simulate import GroundTruthOracle
from dil_core.training import smoothed_target
from dil_core.weights import distance_to_drawn


@dataclass(frozen=True)
class Config:
    name: str
    backend: str = "mci"
    strategy: str = "model"
    first_round: str = "random"
    final: str = "proxy"  # proxy | proxy+prediction | blend
    precheck: bool = False  # check F(X) before asking for any slice
    guide_from_start: bool = False  # use F_prev for guidance in round 1
    n_f: int = 20  # training steps per round (0: no in-scan training)
    end_steps: int = 0  # training steps on the accepted mask at the end of a scan
    m: int = 2
    lambda_l: float = 0.5
    lambda_y: float = 0.8
    weight_scheme: str = "exp"
    w1: float = 0.5
    blend_scale: float = 3.0  # voxels: proxy weight exp(-d / scale) in the blend
    calibrate: bool = (
        False  # shift F(X)'s threshold to agree best with the drawn slices
    )
    beyond: int | None = (
        None  # slices beyond the drawn span where F(X) may add foreground (None: any)
    )
    ft_steps: int = 0  # in-scan fine-tuning steps per round on the current mask, W = exp(-d / scale) + 0.1
    trust: float | None = (
        None  # F(X) vs drawn slices Dice below this: proxy-only mask and evenly spaced slices
    )
    planes: str = "both"  # both | coronal | sagittal: where slices are requested
    train: bool = True
    max_scans: int | None = None


def configs(args: argparse.Namespace) -> list[Config]:
    return [
        Config(
            "paper-random-ants",
            backend="ants-affine",
            strategy="random",
            train=False,
            n_f=0,
            max_scans=args.ants_scans,
        ),
        Config(
            "paper-random-mci", backend="mci", strategy="random", train=False, n_f=0
        ),
        Config("paper-mg", backend="mci", strategy="model", n_f=args.n_f),
        Config(
            "ours-guarded",
            backend="mci",
            strategy="model",
            first_round="uniform",
            w1=0.9,
            final="blend",
            precheck=True,
            guide_from_start=True,
            n_f=0,
            ft_steps=args.n_f,
            end_steps=args.end_steps,
            calibrate=True,
            planes="coronal",
            trust=0.75,
        ),
        Config(
            "ours-blend-2p",
            backend="mci",
            strategy="model",
            w1=0.9,
            final="blend",
            precheck=True,
            guide_from_start=True,
            n_f=0,
            end_steps=args.end_steps,
            blend_scale=2.0,
        ),
        Config(
            "ours-blend",
            backend="mci",
            strategy="model",
            w1=0.9,
            final="blend",
            precheck=True,
            guide_from_start=True,
            n_f=0,
            end_steps=args.end_steps,
            calibrate=True,
            planes="coronal",
        ),
        Config(
            "ours-blend-uniform",
            backend="mci",
            strategy="uniform",
            final="blend",
            precheck=True,
            guide_from_start=True,
            n_f=0,
            end_steps=args.end_steps,
            calibrate=True,
            planes="coronal",
        ),
        Config(
            "ours-blend-uncertainty",
            backend="mci",
            strategy="uncertainty",
            final="blend",
            precheck=True,
            guide_from_start=True,
            n_f=0,
            end_steps=args.end_steps,
            calibrate=True,
            planes="coronal",
        ),
        Config(
            "ours-blend-ft",
            backend="mci",
            strategy="model",
            w1=0.9,
            final="blend",
            precheck=True,
            guide_from_start=True,
            n_f=0,
            ft_steps=args.n_f,
            end_steps=args.end_steps,
            calibrate=True,
            planes="coronal",
        ),
    ]


DEFAULT_CONFIGS = (
    "paper-random-ants",
    "paper-random-mci",
    "paper-mg",
    "ours-blend",
    "ours-blend-ft",
)


def _calibrated(
    pred: np.ndarray, labels: np.ndarray, drawn: dict[int, frozenset[int]]
) -> np.ndarray:
    """Shift F(X) so that its 0.5 cut is the threshold that best reproduces the drawn slices (Dice on them)."""
    on = np.zeros(pred.shape, dtype=bool)
    for axis, idx in drawn.items():
        index: list = [slice(None)] * 3
        index[axis] = sorted(idx)
        on[tuple(index)] = True
    truth = labels[on] > 0
    p = pred[on]
    best_t, best_d = 0.5, dice(truth, p >= 0.5)
    for t in np.arange(0.1, 0.91, 0.05):
        d = dice(truth, p >= t)
        if d > best_d + 1e-9 or (
            abs(d - best_d) <= 1e-9 and abs(t - 0.5) < abs(best_t - 0.5)
        ):
            best_t, best_d = float(t), d
    return np.clip(pred + (0.5 - best_t), 0.0, 1.0)


def _blend(
    session: ScanSession,
    scale: float,
    calibrate: bool = False,
    beyond: int | None = None,
) -> np.ndarray:
    """Soft proxy and F(X) weighted by distance to the drawn slices; F(X) alone outside the drawn span."""
    pred = session.prediction
    proxy = session.proxy
    if proxy is None:
        if pred is None:
            return np.zeros(session.image.shape, np.uint8)
        return _connected_to(pred >= 0.5, None).astype(np.uint8)
    if pred is None:
        return final_mask(proxy.mask, None, session.labels, session.drawn, mode="proxy")
    drawn = {a: v for a, v in session.drawn.items() if v}
    if calibrate:
        pred = _calibrated(pred, session.labels, drawn)
    w = np.exp(-distance_to_drawn(session.image.shape, drawn) / scale)
    soft = w * proxy.prob + (1.0 - w) * pred
    inside = _span(session.image.shape, drawn)
    soft = np.where(inside, soft, pred)
    if beyond is not None:
        soft = soft * _span(session.image.shape, drawn, pad=beyond)
    fused = final_mask(
        (soft >= 0.5).astype(np.uint8),
        None,
        session.labels,
        session.drawn,
        mode="proxy",
    )
    return _connected_to(fused > 0, session.labels > 0).astype(np.uint8)


def _connected_to(mask: np.ndarray, seeds: np.ndarray | None) -> np.ndarray:
    """Components of ``mask`` touching ``seeds`` (the drawn foreground); the largest one where none is drawn."""
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    if seeds is not None and seeds.any():
        keep = np.unique(lab[seeds & mask])
        keep = keep[keep > 0]
        if keep.size:
            return np.isin(lab, keep)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _span(
    shape: tuple[int, ...], drawn: dict[int, frozenset[int]], pad: int = 0
) -> np.ndarray:
    inside = np.ones(shape, dtype=bool)
    for axis, idx in drawn.items():
        line = np.zeros(shape[axis], dtype=bool)
        line[max(min(idx) - pad, 0) : max(idx) + 1 + pad] = True
        view = [1, 1, 1]
        view[axis] = shape[axis]
        inside &= line.reshape(view)
    return inside


def _agreement(session: ScanSession) -> float:
    """Dice of F(X) >= 0.5 with the drawn slices, on the drawn slices (1.0 when nothing is drawn)."""
    drawn = {a: v for a, v in session.drawn.items() if v}
    if not drawn or session.prediction is None:
        return 1.0
    on = np.zeros(session.image.shape, dtype=bool)
    for axis, idx in drawn.items():
        index: list = [slice(None)] * 3
        index[axis] = sorted(idx)
        on[tuple(index)] = True
    return dice(session.labels[on] > 0, session.prediction[on] >= 0.5)


def _mask(session: ScanSession, cfg: Config) -> np.ndarray:
    if (
        cfg.final == "blend"
        and cfg.trust is not None
        and _agreement(session) < cfg.trust
    ):
        if session.params.strategy != "uniform":
            session.params = replace(session.params, strategy="uniform")
        return final_mask(
            session.proxy.mask, None, session.labels, session.drawn, mode="proxy"
        )
    if cfg.final == "blend":
        return _blend(session, cfg.blend_scale, cfg.calibrate, cfg.beyond)
    proxy = (
        session.proxy.mask
        if session.proxy is not None
        else np.zeros(session.image.shape, np.uint8)
    )
    return final_mask(
        proxy, session.prediction, session.labels, session.drawn, mode=cfg.final
    )  # type: ignore[arg-type]


def run_config(
    cfg: Config, stream: list[Case], evals: list[Case], args: argparse.Namespace
) -> dict:
    import torch

    torch.set_num_threads(1)
    clock = Clock()
    stream = stream[: cfg.max_scans] if cfg.max_scans else stream
    trainer = make_trainer(tuple(args.channels), seed=args.seed, b=8, b_star=16)
    rng = np.random.default_rng(args.seed)
    trained = False
    per_scan: list[dict] = []
    for case in stream:
        t0 = time.perf_counter()
        oracle = GroundTruthOracle(case.gt)
        targets = oracle.target_slice_counts()
        max_rounds = max(targets[a] for a in case.axes)
        axes = (
            case.axes
            if cfg.planes == "both"
            else (case.axes[0] if cfg.planes == "coronal" else case.axes[1],)
        )
        extent = {a: oracle.target_extent(a) for a in axes}
        params = SessionParams(
            axes=axes,
            tau=1,
            quota_gamma=2 * max_rounds + 2,
            n_inter=max_rounds + 1,
            rho=args.rho,
            backend=cfg.backend,
            strategy=cfg.strategy,
            first_round=cfg.first_round,
            w1=cfg.w1,
            n_f=cfg.n_f,
            lambda_l=cfg.lambda_l,
            lambda_y=cfg.lambda_y,
            m=cfg.m,
            weight_scheme=cfg.weight_scheme,
        )
        prev = (
            predict(trainer.model, case.image_grid) if trained and cfg.train else None
        )
        session = ScanSession(
            case.image,
            preprocessing=case.prep,
            params=params,
            previous_prediction=prev,
            spacing=case.spacing,
            case_id=case.case_id,
        )
        if prev is not None and (cfg.guide_from_start or cfg.precheck or cfg.n_f == 0):
            session.set_prediction(prev)
        dice_prior = (
            dice(case.gt, session.prediction >= 0.5)
            if session.prediction is not None
            else 0.0
        )
        current = (
            _mask(session, cfg)
            if cfg.precheck and session.prediction is not None
            else None
        )
        d = dice(case.gt, current) if current is not None else 0.0
        while d < args.rho and session.within_budget():
            proposal = session.propose(rng=rng, extent=extent)
            requested = {a: s for a, s in proposal.slices.items() if s}
            if (
                not requested
            ):  # every target slice of the plane(s) is drawn: the drawing is the mask
                current = final_mask(
                    session.proxy.mask,
                    None,
                    session.labels,
                    session.drawn,
                    mode="proxy",
                )
                d = dice(case.gt, current)
                break
            session.add_labels(oracle.draw(requested), requested)
            session.rounds += 1
            session.update_proxy()
            if cfg.train and cfg.n_f > 0:
                image, target, weight = session.training_sample()
                trainer.train_round(
                    image,
                    target,
                    weight,
                    n_steps=cfg.n_f,
                    lambda_l=cfg.lambda_l,
                    m=cfg.m,
                )
                trainer.end_of_round_update((image, target, weight))
                session.set_prediction(predict(trainer.model, image))
                trained = True
            current = _mask(session, cfg)
            d = dice(case.gt, current)
            if cfg.train and cfg.ft_steps > 0 and trained and d < args.rho:
                near = np.exp(
                    -distance_to_drawn(
                        case.image.shape, {a: v for a, v in session.drawn.items() if v}
                    )
                    / cfg.blend_scale
                )
                weight = to_grid(case.prep, (0.1 + near).astype(np.float32), order=1)
                target = to_grid(case.prep, current.astype(np.float32), order=1).clip(
                    0, 1
                )
                trainer.train_round(
                    case.image_grid,
                    target,
                    weight,
                    n_steps=cfg.ft_steps,
                    lambda_l=cfg.lambda_l,
                    m=cfg.m,
                )
                session.set_prediction(predict(trainer.model, case.image_grid))
                current = _mask(session, cfg)
                d = dice(case.gt, current)
        if cfg.train and cfg.end_steps > 0 and current is not None:
            target = to_grid(case.prep, current.astype(np.float32), order=1)
            target = smoothed_target(prev, target, lambda_y=1.0).astype(np.float32)
            weight = np.ones_like(target)
            trainer.train_round(
                case.image_grid,
                target,
                weight,
                n_steps=cfg.end_steps,
                lambda_l=cfg.lambda_l,
                m=cfg.m,
            )
            trainer.end_of_round_update((case.image_grid, target, weight))
            trained = True
        drawn = {a: len(session.drawn.get(a, ())) for a in case.axes}
        per_scan.append(
            {
                "case_id": case.case_id,
                "drawn": drawn,
                "targets": {a: targets[a] for a in case.axes},
                "labor": ScanLabor(
                    case.case_id, drawn, {a: targets[a] for a in case.axes}
                ).fraction,
                "rounds": session.rounds,
                "dice": d,
                "reached": bool(d >= args.rho),
                "dice_prior_prediction": dice_prior,
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
    out = summarise(cfg.name, per_scan)
    out["config"] = asdict(cfg)
    out["wall_s"] = clock()
    out["segmenter_eval"] = stats(evaluate(trainer.model, evals)) if cfg.train else None
    return out


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


def power_user(stream: list[Case], rho: float) -> dict:
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
                    case.image, oracle.draw({axis: idx}), {axis: idx}, backend="mci"
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
    out = summarise("power-user", per_axis[better])
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


def _plot(results: list[dict], path: Path) -> None:
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stream", type=int, default=40)
    p.add_argument("--eval", type=int, default=20)
    p.add_argument(
        "--ants-scans",
        type=int,
        default=20,
        help="scans of the stream for the (slow) ANTs baseline",
    )
    p.add_argument("--rho", type=float, default=0.85)
    p.add_argument("--n-f", type=int, default=20)
    p.add_argument("--end-steps", type=int, default=40)
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 64])
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
        args.stream, args.eval, args.ants_scans, args.n_f, args.end_steps = (
            3,
            2,
            1,
            2,
            2,
        )
        args.channels, args.workers = [4, 8, 16], 1
    name = "labor_to_rho"
    if not data_available():
        return skipped(name, args.out_dir)
    clock = Clock()
    grid = tuple(args.grid)
    eval_ids, stream_ids = splits(args.eval, args.stream)
    evals = [load_case(c, grid) for c in eval_ids]
    stream = [load_case(c, grid) for c in stream_ids]
    wanted = args.only if args.only is not None else DEFAULT_CONFIGS
    cfgs = [c for c in configs(args) if c.name in wanted]
    results: list[dict] = []
    if args.workers > 1:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futs = [pool.submit(run_config, c, stream, evals, args) for c in cfgs]
            pu = power_user(stream, args.rho)
            results = [f.result() for f in futs]
    else:
        results = [run_config(c, stream, evals, args) for c in cfgs]
        pu = power_user(stream, args.rho)
    for r in results:
        print(
            f"[{clock()} s] {r['name']}: mean labor {r['mean_labor']:.3f} reached {r['reached']}/{r['scans']}",
            flush=True,
        )
    results.append(pu)
    offline = _offline_reference(args.out_dir)
    pu_by_case = {s["case_id"]: s["labor"] for s in pu["per_scan"]}
    for r in results:
        same = [pu_by_case[s["case_id"]] for s in r["per_scan"]]
        r["power_user_mean_labor_same_scans"] = float(np.mean(same))
        r["ratio_to_power_user"] = r["mean_labor"] / float(np.mean(same))
    sizes = {
        "stream": len(stream),
        "eval": len(evals),
        "ants_scans": args.ants_scans,
        "rho": args.rho,
        "slices_per_round": "1 coronal + 1 sagittal",
        "n_f": args.n_f,
        "end_steps": args.end_steps,
        "channels": args.channels,
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
        data = json.loads(path.read_text())
        return float(data["results"]["offline"]["mean_over_orders"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


if __name__ == "__main__":
    raise SystemExit(main())
