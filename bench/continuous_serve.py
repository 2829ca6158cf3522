"""Continuous training through ``dil serve``, with a paced scripted physician, against its simulation.

The scripted physician of ``bench/physician_loop.py`` works the stream of ``bench/continuous.py`` (the same
scans, campaign config and learner settings, ``continual.enabled``) through the public interface only: the
request files, ``dil submit``, the inbox and the HTTP API. It takes the time the simulation counts, 0.5 minutes
to look at each request's mask and 1.5 per slice drawn, at ``60 * share`` seconds of wall time per physician
minute (``--pace`` sets another), and meanwhile the service's learner trains on the whole machine. The
simulation of the same stream (``ours-continual`` and ``ours`` of ``continuous.py``) runs after it, unless
``--human-only``.

Reported: labor per scan, over scans 41-80 and per block of 20, for the service and the simulation; the
learner's steps and promotions (from ``/api/status``); the service's final champion scored on the evaluation
split; seconds from a stored submission to its scan's next request (ledger timestamps).

    .venv/bin/python bench/continuous_serve.py [--scans 80] [--share 0.05] [--ema 0.99] [--human-only]
        [--rho-seed 0.94 --seed-share 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import continuous
import numpy as np
from _common import HIPPO, SHARED, data_available, evaluate, md_table, skipped, stats
from physician_loop import RESULTS, _human

from flows.context import open_context

NAME = "continuous_serve"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Continuous training through ``dil serve``, against ``bench/continuous.py``'s simulation of the same stream.

    The scripted physician works the stream of ``continuous.py`` (the same scans, config and learner settings)
    and takes its time as the simulation counts it, at ``60 * share`` seconds per physician minute: in that
    time the service's learner has the whole machine, so it runs about the steps the simulation hands out
    (its measured rate times ``share``). The service's final champion is then scored on the evaluation split.
    """
    cargs = continuous.parse_args(
        ["--stream", str(args.scans), "--share", str(args.share), "--workers", "1"]
        + (["--ema", str(args.ema)] if args.ema is not None else []) + (["--smoke"] if args.smoke else [])
        + (["--rho-seed", str(args.rho_seed)] if args.rho_seed is not None else [])
        + (["--seed-share", str(args.seed_share)] if args.seed_share is not None else []))
    stream, evals, stream_ids, eval_ids = continuous._cases(cargs)
    root = HIPPO if cargs.dataset == "hippocampus" else SHARED / cargs.dataset
    cases = [(c, root / "images" / f"{c}.nii.gz", root / "labels" / f"{c}.nii.gz") for c in stream_ids]
    pace = 60.0 * cargs.share if args.pace is None else args.pace
    with tempfile.TemporaryDirectory(prefix="dil-physician-continual-") as tmp_s:
        tmp = Path(tmp_s)
        human = _human(tmp, cases, base="demo", name="continual",
                       overrides=continuous._overrides(cargs, not args.without_continual), timeout=args.timeout,
                       pace=pace)
        ctx = open_context(human["workspace"])
        trainer = ctx.trainer()
        human["segmenter"] = ctx.trainer_tag
        human["segmenter_eval"] = stats(evaluate(trainer.model, evals, flips=True)) if evals else None
    print("human:", json.dumps({k: v for k, v in human.items() if k != "scans"}), flush=True)
    names = () if args.human_only else ("ours-continual", "ours")
    with ProcessPoolExecutor(max_workers=2) as pool:  # after the service is gone: the two share the machine
        simulated = dict(zip(names, pool.map(continuous.run_config, names, *([x] * len(names) for x in
                                                                               (stream, evals, cargs))), strict=True))
    late = cargs.late_from - 1
    labor = [human["scans"][c]["labor"] for c in stream_ids]
    human["mean_labor_late"] = float(np.mean(labor[late:])) if late < len(labor) else None
    human["blocks"] = continuous.blocks([{"labor": x} for x in labor], cargs.block)
    for r in simulated.values():
        r["mean_labor_late"] = float(np.mean([x["labor"] for x in r["per_scan"][late:]])) if late < r["scans"] else None
        r["blocks"] = continuous.blocks(r["per_scan"], cargs.block)
        r.get("learner", {}).pop("gates", None)
        r.pop("_targets", None)
    return {"pace_s_per_physician_minute": pace, "stream_ids": stream_ids, "eval_ids": eval_ids,
            "options": {**{k: v for k, v in vars(cargs).items() if k != "out_dir"},
                        "without_continual": args.without_continual}, "human": human,
            "simulated": simulated}


def _phases(groups: dict[str, Any], by: str) -> str:
    def pair(v: dict[str, Any]) -> str:
        return f"{v['median'] or 0:.2f} / {v['p95'] or 0:.2f}"

    return md_table(
        [by, "handed in -> stored", "stored -> next request written", "of which queued + round + request (medians)",
         "written -> seen in status", "whole wait", "GET /api/status", "n"],
        [[key, pair(v["hand_in"]), pair(v["stored_to_written"]),
          " + ".join(f"{v[k]['median'] or 0:.2f}" for k in ("queued", "computed", "next_request")),
          pair(v["written_to_seen"]), pair(v["total"]), pair(v["status_call"]), v["total"]["n"]]
         for key, v in groups.items()])


def report(payload: dict[str, Any]) -> str:
    human, sim, o = payload["human"], payload["simulated"], payload["options"]

    def row(name: str, r: dict[str, Any], zero: int, steps: Any) -> list[Any]:
        return [name, len(r["per_scan"]) if "per_scan" in r else len(r["scans"]), r["mean_labor"],
                "-" if r["mean_labor_late"] is None else r["mean_labor_late"], zero, round(r["physician_minutes"]),
                steps, r["segmenter_eval"]["mean"] if r.get("segmenter_eval") else "-"]

    mode = "continual off" if o.get("without_continual") else "continual"
    rows = [row(f"human mode (`dil serve`), {mode}", human,
                sum(1 for r in human["scans"].values() if r["slices"] == 0), (human["continual"] or {}).get("steps"))]
    rows += [row(f"simulated, {n}", r, r["zero_labor_scans"], (r.get("learner") or {}).get("steps", "-"))
             for n, r in sim.items()]
    header = ["configuration", "scans", "mean labor", f"scans {o['late_from']}+", "accepted without drawing",
              "physician min", "learner steps", "segmenter Dice (eval)"]
    blocks = [[name, *[f"{b['mean_labor']:.3f} / {b['accepted_without_drawing']:.2f}" for b in r["blocks"]]]
              for name, r in [("human mode", human), *[(f"simulated, {n}", r) for n, r in sim.items()]]]
    lat, ema = human["stored_to_next_request_s"], continuous.ema_of(argparse.Namespace(**o))
    return "\n".join([
        "# Continuous training through `dil serve` against its simulation", "",
        f"Device: CPU ({os.cpu_count()} cores); wall {payload['wall_s']} s; the scripted physician took "
        f"{payload['pace_s_per_physician_minute']:.1f} s per physician minute (share {o['share']}, EMA {ema}).",
        "", md_table(header, rows), "Per block (mean labor / share accepted without drawing):", "",
        md_table(["configuration", *[b["scans"] for b in human["blocks"]]], blocks),
        f"Human mode: stored -> next request median {lat['median']:.2f} s, p95 {lat['p95']:.2f} s, max "
        f"{lat['max']:.2f} s ({lat['n']} submissions); the service's champion at the end: {human['segmenter']}.",
        "", "Where the physician's wait goes (median / p95 s), per hand-in channel and per round of the scan:", "",
        _phases(human["wait_phases_s"], "channel"), _phases(human["wait_phases_by_round_s"], "round"),
    ]) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scans", type=int, default=80, help="the stream's length (continuous.py --stream)")
    p.add_argument("--share", type=float, default=0.05, help="continual.share, and the pace: 60 * share s per minute")
    p.add_argument("--ema", type=float, default=None, help="continual.ema (as continuous.py: 0 turns it off)")
    p.add_argument("--rho-seed", type=float, default=None, help="stopping.rho_seed (as continuous.py; default 0.9)")
    p.add_argument("--seed-share", type=float, default=None, help="continual.seed_share (as continuous.py)")
    p.add_argument("--pace", type=float, default=None, help="seconds of wall time per physician minute")
    p.add_argument("--human-only", action="store_true", help="the service's run alone, no simulation")
    p.add_argument("--without-continual", action="store_true",
                   help="the service with continual training off (the control for the physician's wait)")
    p.add_argument("--timeout", type=float, default=7200.0)
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--smoke", action="store_true", help="continuous.py's smoke sizes")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if not data_available():
        return skipped(NAME, args.out_dir)
    t0 = time.monotonic()
    payload = {"benchmark": NAME, **run(args)}
    payload["wall_s"] = round(time.monotonic() - t0, 1)
    out = args.out_dir or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    md = report(payload)
    (out / f"{NAME}.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
