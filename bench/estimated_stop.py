"""How often does the estimated-Dice stop rule stop a scan that is truly below rho?

Without ground truth, the ``estimated`` rule stops a scan when two consecutive masks agree:
``Dice(mask_{i-1}, mask_i) >= rho``. This replays every scan of a finished simulated campaign (its stored
submissions, round by round, through the same proxy-mask propagation), and for each scan finds the round at
which the estimated rule would have stopped; a *false stop* is a stop at a round whose mask is below rho
against the ground truth. Writes JSON and a markdown table.

    .venv/bin/python bench/estimated_stop.py workspaces/demo [--rho 0.85] [--out bench/results/estimated_stop]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dil.environment import prepare_environment  # noqa: E402
from dil_core.workspace import Workspace  # noqa: E402


def replay(workspace: Path) -> list[dict]:
    """Per scan, per round: Dice(previous mask, mask) and Dice(ground truth, mask).

    Each round's state is rebuilt with :func:`dil_core.round.restore` from the stored submissions of the rounds
    up to it (and the prediction stored with it), exactly as the round service rebuilds a scan.
    """
    from dil_core import round as one_round
    from dil_core.io import read_label
    from dil_core.metrics import dice
    from flows.context import CampaignContext

    ctx = CampaignContext.open(workspace)
    out = []
    for scan in sorted(ctx.ledger.list_scans(ctx.campaign_id), key=lambda s: s.position):
        data = ctx.scan_data(scan)
        if data.ground_truth is None:
            continue
        fprev = ctx.previous_prediction_path(scan)
        previous_prediction = np.load(fprev) if fprev.is_file() else None
        stored: list = []
        previous = None
        rounds = []
        for rnd in ctx.processed_rounds(scan):
            subs = ctx.submissions(scan, rnd.id)
            if not subs:
                continue  # closed by an accept
            stored.append([((read_label(s.stored_path)[0] > 0).astype(np.uint8), s.drawn) for s in subs])
            pred_path = ctx.prediction_path(scan, rnd.number)
            session = one_round.restore(
                ctx.new_session(scan), previous_prediction=previous_prediction, rounds=stored,
                prediction_grid=np.load(pred_path) if pred_path.is_file() else None,
            )
            mask = ctx.method.mask(session)
            agreement = None
            if session.prediction is not None:
                agreement = dice(mask, session.prediction >= 0.5, empty=0.0)
            rounds.append({
                "round": rnd.number,
                "slices": session.n_drawn,
                "dice_consecutive": None if previous is None else dice(previous, mask, empty=0.0),
                "dice_proxy_prediction": agreement,
                "dice_gt": dice(data.ground_truth, mask, empty=0.0),
            })
            previous = mask
        out.append({"case": scan.case_id, "rounds": rounds})
    return out


ESTIMATES = {
    "consecutive masks": "dice_consecutive",
    "proxy vs prediction": "dice_proxy_prediction",
}


def evaluate(scans: list[dict], rho: float, key: str) -> dict:
    stops = []
    for s in scans:
        stop = next((r for r in s["rounds"] if r[key] is not None and r[key] >= rho), None)
        truth = next((r for r in s["rounds"] if r["dice_gt"] >= rho), None)
        stops.append({
            "case": s["case"],
            "stop_round": None if stop is None else stop["round"],
            "dice_gt_at_stop": None if stop is None else stop["dice_gt"],
            "false_stop": stop is not None and stop["dice_gt"] < rho,
            "truth_round": None if truth is None else truth["round"],
        })
    stopped = [s for s in stops if s["stop_round"] is not None]
    late = [s["stop_round"] - s["truth_round"] for s in stopped if s["truth_round"] is not None]
    return {
        "estimate": key,
        "rho": rho,
        "scans": len(stops),
        "stopped": len(stopped),
        "false_stops": sum(s["false_stop"] for s in stops),
        "false_stop_rate": (sum(s["false_stop"] for s in stops) / len(stopped)) if stopped else None,
        "mean_rounds_late": float(np.mean(late)) if late else None,
        "per_scan": stops,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--rho", type=float, nargs="+", default=[0.85, 0.9, 0.95])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "estimated_stop")
    args = parser.parse_args()
    prepare_environment(Workspace(args.workspace.resolve()))
    scans = replay(args.workspace.resolve())
    evaluations = [evaluate(scans, r, key) for key in ESTIMATES.values() for r in args.rho]
    results = {"workspace": str(args.workspace), "evaluations": evaluations, "scans": scans}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    lines = [
        "| estimate | threshold | scans | stopped by the rule | false stops (truly below 0.85) | rate | mean rounds after the true pass |",
        "|---|---|---|---|---|---|---|",
    ]
    for ev in results["evaluations"]:
        # a false stop is judged against rho = the rule's own threshold; also report against 0.85
        below = sum(1 for s in ev["per_scan"] if s["dice_gt_at_stop"] is not None and s["dice_gt_at_stop"] < 0.85)
        rate = f"{below / ev['stopped']:.2f}" if ev["stopped"] else "-"
        late = "-" if ev["mean_rounds_late"] is None else f"{ev['mean_rounds_late']:.1f}"
        name = next(k for k, v in ESTIMATES.items() if v == ev["estimate"])
        lines.append(f"| {name} | {ev['rho']} | {ev['scans']} | {ev['stopped']} | {below} | {rate} | {late} |")
    table = "\n".join(lines)
    args.out.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
