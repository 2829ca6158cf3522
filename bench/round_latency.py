"""Latency of one labeling round, stage by stage, on a hippocampus scan and a BraTS scan.

Each scan runs several rounds through the campaign's own code path (the simulated annotator writes a label
file, ``submit_label_file`` validates and stores it, ``process_round`` propagates, trains, predicts, checks,
proposes and writes the next request) inside one Prefect flow, and once more as a physician would: a fresh
``dil submit`` process (it stores the file; the round service runs the round). Writes JSON (medians per stage,
peak memory). ``bench/physician_loop.py`` measures the whole loop against ``dil serve``.

    .venv/bin/python bench/round_latency.py [--rounds 5] [--out bench/results/round_latency.json] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("DIL_SHARED_DATA", REPO.parent / "shared" / "data"))

from dil.environment import prepare_environment  # noqa: E402


def _config(tmp: Path, name: str, image: Path, label: Path, grid: list[int], backend: str, rounds: int) -> Path:
    import yaml

    (tmp / f"{name}.csv").write_text(f"case_id,image,ground_truth\n{name},{image},{label}\n", encoding="utf-8")
    cfg = {
        "name": name,
        "cohort": f"{name}.csv",
        "workspace": f"ws-{name}",
        "stopping": {"rho": 0.99, "quota_gamma": 4 * rounds + 8, "n_inter": rounds + 2},
        "propagation": {"backend": backend},
        "training": {"grid": grid, "device": "cpu"},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _run_case(cfg_path: Path, rounds: int) -> dict:
    from dil_core.config import load_config
    from dil_core.io import write_label
    from dil_core.simulate import GroundTruthOracle
    from flows.campaign import init_workspace
    from dil_core.submission import submit_label_file
    from flows.context import CampaignContext
    from flows.round import open_next_round, process_round
    from prefect import flow

    cfg = load_config(cfg_path)
    ws = init_workspace(cfg)
    ctx = CampaignContext.open(ws.root)
    case = ctx.ledger.list_scans(ctx.campaign_id)[0].case_id
    records: list[dict] = []

    @flow(name="latency-bench", persist_result=False)
    def drive() -> None:
        scan = ctx.scan(case)
        t0 = time.perf_counter()
        open_next_round(ctx, scan, 1)
        first_request = time.perf_counter() - t0
        for _ in range(rounds):
            scan = ctx.scan(case)
            rnd = ctx.ledger.current_round(scan.id)
            if rnd is None:
                break
            data = ctx.scan_data(scan)
            labels, _ = GroundTruthOracle(data.ground_truth).answer(rnd.requested, rnd.ends)
            folder = ws.root / "oracle"
            folder.mkdir(parents=True, exist_ok=True)
            path = write_label(folder / f"r{rnd.number}.nii.gz", labels, data.geometry)
            t0 = time.perf_counter()
            submit_label_file(ctx.ledger, ws, ctx.campaign_id, case, path)
            t_submit = time.perf_counter() - t0
            t0 = time.perf_counter()
            result = process_round(ctx, case)
            total = time.perf_counter() - t0
            stages = dict(result["seconds"])
            stages["validation_and_storage"] = t_submit
            stages["round_total"] = total
            stages["orchestration_and_ledger"] = total - sum(v for k, v in result["seconds"].items())
            records.append(stages)
        records.insert(0, {"first_request": first_request})

    drive()
    rounds_only = records[1:]
    keys = sorted({k for r in rounds_only for k in r})
    medians = {k: statistics.median(r[k] for r in rounds_only if k in r) for k in keys}
    return {"case": case, "rounds": len(rounds_only), "median_seconds": medians, "per_round": rounds_only,
            "first_request_seconds": records[0]["first_request"], "workspace": str(ws.root)}


def _fresh_submit(ws_root: Path, case: str) -> float | None:
    """Wall time of `dil submit` in a new process (embedded Prefect start-up included)."""
    from dil_core.io import write_label
    from dil_core.simulate import GroundTruthOracle
    from flows.context import CampaignContext

    ctx = CampaignContext.open(ws_root)
    scan = ctx.scan(case)
    rnd = ctx.ledger.current_round(scan.id)
    if rnd is None:
        return None
    data = ctx.scan_data(scan)
    labels, _ = GroundTruthOracle(data.ground_truth).answer(rnd.requested, rnd.ends)
    (ws_root / "oracle").mkdir(exist_ok=True)
    path = write_label(ws_root / "oracle" / "fresh.nii.gz", labels, data.geometry)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dil", "submit", str(ws_root), case, str(path)], check=True,
                   capture_output=True, cwd=REPO)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="2 rounds, hippocampus only")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "round_latency.json")
    args = parser.parse_args()
    rounds = 2 if args.smoke else args.rounds
    prepare_environment(None)
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="dil-bench-prefect-"))
    import torch

    torch.set_num_threads(1)
    results: dict = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                     "torch_threads": 1, "rounds": rounds, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="dil-latency-") as tmp_s:
        tmp = Path(tmp_s)
        hippo_img = REPO / "data" / "demo" / "images" / "hippocampus_001.nii.gz"
        hippo_lab = REPO / "data" / "demo" / "labels" / "hippocampus_001.nii.gz"
        cases = [("hippocampus", hippo_img, hippo_lab, [48, 64, 48])]
        brats = sorted((SHARED / "brats2015" / "images").glob("*")) if SHARED.is_dir() else []
        if brats and not args.smoke:
            lab = SHARED / "brats2015" / "labels" / brats[0].name
            cases.append(("brats", brats[0], lab, [64, 64, 48]))
        for name, img, lab, grid in cases:
            cfg = _config(tmp, name, img, lab, grid, "mci", rounds)
            res = _run_case(cfg, rounds)
            res["fresh_process_submit_seconds"] = _fresh_submit(Path(res["workspace"]), res["case"])
            res.pop("workspace")
            results["cases"][name] = res
            print(name, json.dumps(res["median_seconds"], indent=1), "fresh `dil submit`:",
                  res["fresh_process_submit_seconds"])
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"peak memory {results['peak_rss_mib']:.0f} MiB; wrote {args.out}")


if __name__ == "__main__":
    main()
