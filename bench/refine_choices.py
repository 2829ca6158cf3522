"""The measurements behind the choices of the ``refine`` method (``dil_core/refine.py``), one command.

1. **Interpolation.** Proxy Dice from k evenly spaced coronal slices (both end slices included) for MCI (3D
   Slicer's fill-between), plain SDF and sdf-aligned interpolation, on the first 20 stream scans.
2. **Segmenters after n scans.** A UNet 16-128 trained on the first n stream scans with full ground truth
   (100 steps per scan, replay of every earlier scan redrawn every 4 steps), n = 3, 5, 10; its Dice on the
   evaluation split without and with test-time flips, and the share of scans above rho.
3. **The mask from a prediction and a few slices.** With each of those segmenters (test-time flips), every
   evaluation scan is drawn one coronal slice at a time (the largest predicted section first, then the most
   uncertain slice) until its mask reaches rho; the mean slices needed for three masks: the blend of proxy and
   prediction, the corrected prediction alone, and the blend of proxy and corrected prediction (the method's).
4. **Where to draw.** The method itself (``dil_core.methods.refine`` through ``dil_core.stream.run_scan``, its default
   trust and set-aside), with the next slice chosen by the soft mask's entropy alone (``spread = 0``) or
   weighted away from drawn slices (``spread = 2``, the default): mean slices to rho with the same segmenters.

    .venv/bin/python bench/refine_choices.py [--smoke]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _campaign import bench_config
from _common import (
    RESULTS,
    Clock,
    data_available,
    device_line,
    load_case,
    make_trainer,
    md_table,
    predict_case,
    skipped,
    splits,
    write_outputs,
)
from scipy.special import entr

from dil_core.guidance import evenly_spaced
from dil_core.metrics import dice
from dil_core.models import predict
from dil_core.preprocess import from_grid
from dil_core.propagation import proxy_mask
from dil_core.refine import corrected_prediction, refined_mask, soft_mask
from dil_core import round as one_round
from dil_core.methods import get_method
from dil_core.params import session_params
from dil_core.session import ScanSession
from dil_core.stream import simulated
from dil_core.simulate import GroundTruthOracle

MASKS = ("blend", "corrected", "blend+corrected")
SPREADS = (0.0, 2.0)


def interpolation(cases, ks: list[int]) -> dict:
    out: dict[str, list[float]] = {}
    for backend in ("mci", "sdf", "sdf-aligned"):
        out[backend] = []
        for k in ks:
            ds = []
            for c in cases:
                o = GroundTruthOracle(c.gt)
                ax = c.axes[0]
                lo, hi = o.target_extent(ax)
                idx = frozenset(evenly_spaced(lo, hi, k))
                ds.append(dice(c.gt, proxy_mask(c.image, o.draw({ax: idx}), {ax: idx}, backend=backend).mask))
            out[backend].append(float(np.mean(ds)))
    return out


def slices_to_rho(case, pred: np.ndarray, kind: str, rho: float, cap: int) -> int:
    """Slices drawn until the mask passes rho (cap + 1 when it never does within ``cap``)."""
    o = GroundTruthOracle(case.gt)
    ax = case.axes[0]
    lo, hi = o.target_extent(ax)
    other = tuple(a for a in range(3) if a != ax)
    if dice(case.gt, refined_mask(None, pred, np.zeros_like(case.gt), {})) >= rho:
        return 0
    labels = np.zeros(case.gt.shape, np.uint8)
    drawn: set[int] = set()
    look = pred
    for n in range(1, cap + 1):
        cand = np.zeros(case.gt.shape[ax], bool)
        cand[lo : hi + 1] = True
        cand[list(drawn)] = False
        score = (look >= 0.5).sum(axis=other) if not drawn else (entr(look) + entr(1 - look)).sum(axis=other)
        k = int(np.argmax(np.where(cand, score, -1.0)))
        drawn.add(k)
        labels = np.maximum(labels, o.draw({ax: frozenset([k])}))
        dd = {ax: frozenset(drawn)}
        proxy = proxy_mask(case.image, labels, dd, backend="sdf-aligned").prob
        if kind == "blend":
            base = pred
        else:
            base = corrected_prediction(pred, labels, dd, length=6.0)
        use_proxy = None if kind == "corrected" else proxy
        mask = refined_mask(use_proxy, base, labels, dd, scale=3.0)
        blend = soft_mask(use_proxy, base, dd, scale=3.0)
        look = blend if kind == "blend" else 0.5 * (pred + blend)
        if dice(case.gt, mask) >= rho:
            return n
    return cap + 1


def session_slices_to_rho(case, pred_grid: np.ndarray, spread: float, rho: float, cap: int) -> int:
    """Slices the ``refine`` method (``configs/demo.yaml``) draws on the scan until its mask passes rho, through
    the product's round (``dil_core.round``), starting from this prediction; cap + 1 when it does not."""
    ax = case.axes[0]
    config = bench_config("demo", {"stopping": {"quota_gamma": cap, "n_inter": cap}, "refine": {"spread": spread},
                                   "training": {"device": "cpu"}})
    method = get_method("refine")
    session = ScanSession(case.image, preprocessing=case.prep, params=session_params(config, (ax,)),
                          spacing=case.spacing, case_id=case.case_id)
    one_round.restore(session, previous_prediction=pred_grid, rounds=[])  # the scan starts from this prediction
    item = simulated(session, case.gt, rho)
    while not item.judge(method.mask(session)).passed:
        if not session.within_budget():
            return cap + 1
        proposal = one_round.propose(session, method, rng=one_round.round_rng(0, 0, session.rounds + 1),
                                     extent=item.extent)
        requested = {a: v for a, v in proposal.slices.items() if v}
        if not requested and not proposal.ends:
            return cap + 1
        labels, drawn = item.annotator(requested, proposal.ends)
        # refine does not train during a scan: no trainer is needed for its rounds
        one_round.apply(session, method, labels, drawn, trainer=None, ends=proposal.ends)  # type: ignore[arg-type]
    return session.n_drawn


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rho", type=float, default=0.85)
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--smoke", action="store_true", help="tiny sizes")
    args = p.parse_args(argv)
    name = "refine_choices"
    if not data_available():
        return skipped(name, args.out_dir)
    clock = Clock()
    n_eval, n_interp, after, steps, channels, ks, cap = 20, 20, [3, 5, 10], 100, (16, 32, 64, 128), [4, 5, 6, 7], 14
    if args.smoke:
        n_eval, n_interp, after, steps, channels, ks, cap = 2, 2, [1, 2], 4, (4, 8, 16), [5], 3
    grid = (32, 48, 32)
    eval_ids, stream_ids = splits(20, 40)
    evals = [load_case(c, grid) for c in eval_ids[:n_eval]]
    stream = [load_case(c, grid) for c in stream_ids[: max(after)]]
    interp = interpolation([load_case(c, grid) for c in stream_ids[:n_interp]], ks)
    trainer = make_trainer(channels, seed=0, b=64, b_star=128)
    models: dict[str, dict] = {}
    for i, c in enumerate(stream, start=1):
        trainer.train_round(c.image_grid, c.gt_grid, np.ones_like(c.gt_grid), n_steps=steps, lambda_l=0.25, m=3,
                            resample_every=4)
        trainer.end_of_round_update((c.image_grid, c.gt_grid, np.ones_like(c.gt_grid)))
        if i not in after:
            continue
        t0 = time.perf_counter()
        plain = [predict_case(trainer.model, e) for e in evals]
        flipped_grid = [predict(trainer.model, e.image_grid, flips=True) for e in evals]
        flipped = [from_grid(e.prep, g, order=1).astype(np.float32) for e, g in zip(evals, flipped_grid, strict=True)]
        d_plain = np.array([dice(e.gt, q >= 0.5) for e, q in zip(evals, plain, strict=True)])
        d_flip = np.array([dice(e.gt, q >= 0.5) for e, q in zip(evals, flipped, strict=True)])
        need = {kind: float(np.mean([slices_to_rho(e, q, kind, args.rho, cap) for e, q in zip(evals, flipped,
                                                                                              strict=True)]))
                for kind in MASKS}
        by_spread = {str(sp): float(np.mean([session_slices_to_rho(e, q, sp, args.rho, cap) for e, q in
                                             zip(evals, flipped_grid, strict=True)])) for sp in SPREADS}
        models[str(i)] = {
            "dice": float(d_plain.mean()), "dice_flips": float(d_flip.mean()),
            "pass": float(np.mean(d_plain >= args.rho)), "pass_flips": float(np.mean(d_flip >= args.rho)),
            "slices_to_rho": need, "session_slices_to_rho_by_spread": by_spread, "seconds": round(time.perf_counter() - t0, 1),
        }
        print(f"[{clock()} s] after {i} scans: {models[str(i)]}", flush=True)
    payload = {"benchmark": name, "device": device_line(), "wall_s": clock(), "rho": args.rho,
               "sizes": {"eval": len(evals), "interpolation_scans": n_interp, "steps_per_scan": steps,
                         "channels": list(channels), "grid": list(grid), "cap": cap},
               "interpolation": {"k": ks, **interp}, "segmenters": models}
    md = f"# Choices of the refine method\n\nDevice: {device_line()}; wall {clock()} s\n\n"
    md += f"## 1. Proxy Dice from k evenly spaced coronal slices ({n_interp} stream scans)\n\n"
    md += md_table(["k", *interp], [[k, *(interp[b][j] for b in interp)] for j, k in enumerate(ks)])
    md += f"\n## 2-3. Segmenters trained on the first n stream scans with ground truth ({len(evals)} eval scans)\n\n"
    md += md_table(
        ["n", "Dice", "Dice (flips)", f">= {args.rho}", f">= {args.rho} (flips)",
         *(f"slices to rho: {m}" for m in MASKS), *(f"method, spread {sp:g}" for sp in SPREADS)],
        [[n, r["dice"], r["dice_flips"], r["pass"], r["pass_flips"], *(r["slices_to_rho"][m] for m in MASKS),
          *(r["session_slices_to_rho_by_spread"][str(sp)] for sp in SPREADS)]
         for n, r in models.items()],
    )
    write_outputs(name, payload, md, out_dir=args.out_dir or RESULTS)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
