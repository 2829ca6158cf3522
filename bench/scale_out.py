"""Scale-out: rounds per minute and the physician's wait with 1 and 2 round services; ANTs over Dask.

**Services.** The topology of ``deploy/compose.yaml`` as local processes (:mod:`dil.topology`: a Prefect
server and an MLflow server on PostgreSQL, the ledger on PostgreSQL, N ``dil serve --work-dir`` services on one
workspace folder), once with 1 service and once with 2, on the same ``--scans`` demo scans all open at once
(physicians' campaign of configs/demo.yaml, no seed scans). A scripted physician (``bench/_scripted.py``)
answers every open request as soon as it appears, through the services' HTTP APIs in turn. Reported per
topology: rounds processed per minute (from the first submission to the last scan done), seconds from a
submission being stored to the scan's next request (ledger timestamps) and from the upload to the physician
seeing it, labor per scan (the two runs must agree), and whether every scan passed.

**Dask.** The ANTs propagation of one BraTS-size round (240x240x155, 4 drawn axial slices across the
tumour, every undrawn slice of the plane registered with ``ants-affine``) as a Prefect flow: the registrations in the
flow's process (``map``), as tasks on Prefect's thread pool, and as tasks on a Dask cluster
(``DaskTaskRunner``) of 1 and 2 single-threaded workers. Needs ``../shared/data/brats2015``.

    .venv/bin/python bench/scale_out.py [--scans 8] [--no-dask] [--pg postgresql+psycopg://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
SHARED = Path(os.environ.get("DIL_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "bench" / "results"
DEMO = REPO / "data" / "demo"
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

from _scripted import physicians_campaign, truths_of, work_concurrently  # noqa: E402

from dil.telemetry import TELEMETRY_OFF  # noqa: E402
from dil.topology import DEFAULT_PG, Topology  # noqa: E402
from dil_core.ledger import Ledger  # noqa: E402


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _ledger_figures(ledger: Ledger, campaign_id: int) -> dict[str, Any]:
    stored_to_next, received, processed = [], [], []
    for scan in ledger.list_scans(campaign_id):
        rounds = {r.id: r for r in ledger.list_rounds(scan.id)}
        by_number = {r.number: r for r in rounds.values()}
        for sub in ledger.list_submissions(scan.id):
            received.append(sub.received_at)
            rnd = rounds[sub.round_id]
            if rnd.processed_at is not None:
                processed.append(rnd.processed_at)
            nxt = by_number.get(rnd.number + 1)
            if nxt is not None:
                stored_to_next.append((nxt.created_at - sub.received_at).total_seconds())
    span = (max(processed) - min(received)).total_seconds() if processed else None
    return {"rounds": len(processed), "span_s": span, "stored_to_next": stored_to_next}


def run_topology(tmp: Path, cases: list[str], services: int, pg: str, small: bool) -> dict[str, Any]:
    prefix = f"dil_b{uuid.uuid4().hex[:10]}"
    t0 = time.monotonic()
    topo = Topology.up(tmp / f"stack-{services}", physicians_campaign(tmp / f"cfg-{services}", cases, name="scale", small=small),
                       services=services, pg=pg, prefix=prefix)
    started = time.monotonic() - t0
    try:
        truths = truths_of([(c, DEMO / "labels" / f"{c}.nii.gz") for c in cases])
        done = work_concurrently(lambda: [p.url for p in topo.services() if p.url], topo.workspace, truths,
                                 timeout=3600)
        ledger = Ledger.open(topo.ledger_url, create=False)
        figures = _ledger_figures(ledger, ledger.get_campaign("scale").id)
    finally:
        topo.down(drop=True)
    waits = [s["next_s"] for s in done["submissions"] if s["next_s"] is not None]
    lat = figures["stored_to_next"]
    rows = done["status"]["scans"]
    return {
        "services": services,
        "start_s": round(started, 1),
        "rounds": figures["rounds"],
        "rounds_per_minute": round(60 * figures["rounds"] / figures["span_s"], 2) if figures["span_s"] else None,
        "stored_to_next_request_s": {"median": _pct(lat, 50), "p95": _pct(lat, 95), "max": max(lat, default=None)},
        "upload_to_next_request_s": {"median": _pct(waits, 50), "p95": _pct(waits, 95)},
        "labor": {r["case"]: r["labor"] for r in rows},
        "mean_labor": statistics.fmean(r["labor"] for r in rows),
        "all_passed": all(r["state"] == "passed" for r in rows),
        "by_service": {u: sum(1 for s in done["submissions"] if s["service"] == u)
                       for u in {s["service"] for s in done["submissions"]}},
    }


def _propagate(image: np.ndarray, labels: np.ndarray, drawn: dict, map_fn: Any) -> tuple[float, Any]:
    from dil_core.propagation import proxy_mask

    t = time.perf_counter()
    result = proxy_mask(image, labels, drawn, backend="ants-affine", map_fn=map_fn)
    return time.perf_counter() - t, result


def run_dask(repeats: int = 2) -> dict[str, Any] | None:
    """The ANTs propagation of one BraTS-size round: in process, Prefect threads, Dask with 1 and 2 workers."""
    volumes = sorted((SHARED / "brats2015" / "images").glob("*.nii*")) if SHARED.is_dir() else []
    if not volumes:
        return None
    from prefect import flow

    from dil_core.config import PropagationConfig
    from dil_core.io import read_label, read_scan
    from flows.runners import RoundRunner
    from tasks.rounds import fan_out

    image = read_scan(volumes[0]).array
    truth = (read_label(SHARED / "brats2015" / "labels" / volumes[0].name)[0] > 0).astype(np.uint8)
    hit = np.flatnonzero(truth.any(axis=(0, 1)))
    drawn = {2: frozenset(int(k) for k in np.linspace(hit[0], hit[-1], 4).round())}
    one = flow(name="bench-propagation", persist_result=False)(_propagate)
    out: dict[str, Any] = {"scan": volumes[0].name, "shape": list(image.shape), "drawn": sorted(drawn[2]),
                           "seconds": {}}
    reference = None
    for name, map_fn in (("in_process", map), ("prefect_threads", fan_out)):
        times = []
        for _ in range(repeats):
            dt, result = one(image, truth, drawn, map_fn)
            times.append(round(dt, 2))
            if reference is None:
                reference = result.mask
                out["registrations"] = int(sum(result.recomputed.values()))
        out["seconds"][name] = times
    for workers in (1, 2):
        runner = RoundRunner(PropagationConfig(backend="ants-affine", task_runner="dask", dask_workers=workers))
        t = time.perf_counter()
        runner.warm_up()
        out[f"dask_{workers}_cluster_start_s"] = round(time.perf_counter() - t, 2)
        times = []
        try:
            for _ in range(repeats):
                dt, result = one.with_options(task_runner=runner.task_runner())(image, truth, drawn, fan_out)
                times.append(round(dt, 2))
                assert reference is not None and np.array_equal(result.mask, reference), "Dask changed the proxy"
        finally:
            runner.close()
        out["seconds"][f"dask_{workers}_workers"] = times
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scans", type=int, default=8)
    p.add_argument("--pg", default=DEFAULT_PG)
    p.add_argument("--no-dask", action="store_true")
    p.add_argument("--small", action="store_true", help="a small segmenter (a quick check of the benchmark)")
    p.add_argument("--out-dir", type=Path, default=None)
    args = p.parse_args(argv)
    os.environ.update(TELEMETRY_OFF)
    cases = sorted(p.name.removesuffix(".nii.gz") for p in (DEMO / "images").glob("*.nii.gz"))[: args.scans]
    t0 = time.monotonic()
    runs = []
    with tempfile.TemporaryDirectory(prefix="dil-scale-") as tmp_s:
        for services in (1, 2):
            runs.append(run_topology(Path(tmp_s), cases, services, args.pg, args.small))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "labor"}), flush=True)
    dask = None
    if not args.no_dask:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from dil.server import start_server, stop_server
        from dil_core.workspace import Workspace

        with tempfile.TemporaryDirectory(prefix="dil-dask-") as tmp_s:
            ws = Workspace(Path(tmp_s))
            url = start_server(ws)
            try:
                with temporary_settings({PREFECT_API_URL: url}):
                    dask = run_dask()
            finally:
                stop_server(ws)
        print(json.dumps(dask), flush=True)
    payload = {
        "benchmark": "scale_out",
        "device": f"CPU ({os.cpu_count()} cores), no GPU",
        "wall_s": round(time.monotonic() - t0, 1),
        "scans": len(cases),
        "topologies": runs,
        "same_labor": runs[0]["labor"] == runs[1]["labor"],
        "dask_propagation": dask,
    }
    out = args.out_dir or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale_out.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    md = ["# Scale-out: 1 vs 2 round services on one campaign (PostgreSQL ledger, Prefect and MLflow servers)", "",
          f"{payload['device']}; {len(cases)} demo scans open at once; wall {payload['wall_s']} s", "",
          "| services | rounds | rounds / min | stored -> next request median / p95 / max s | "
          "upload -> physician sees it median / p95 s | mean labor | all passed |",
          "|---|---|---|---|---|---|---|"]
    for r in runs:
        s, u = r["stored_to_next_request_s"], r["upload_to_next_request_s"]
        md.append(f"| {r['services']} | {r['rounds']} | {r['rounds_per_minute']} | {s['median']} / {s['p95']} / "
                  f"{s['max']:.2f} | {u['median']} / {u['p95']} | {r['mean_labor']:.3f} | {r['all_passed']} |")
    md.append(f"\nLabor per scan identical in both runs: {payload['same_labor']}")
    if dask:
        md += ["", f"ANTs propagation of one BraTS-size round ({dask['scan']}, {dask['registrations']} registrations, "
               "ants-affine), seconds per run:", "", "| where the registrations run | seconds |", "|---|---|"]
        md += [f"| {k.replace('_', ' ')} | {', '.join(map(str, v))} |" for k, v in dask["seconds"].items()]
    (out / "scale_out.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
