"""The physician's loop through the public interface, against ``dil serve``, compared with the simulated campaign.

A scripted physician, this process, works the demo cohort in human mode using only what a physician (or a 3D
Slicer module) has: the request files, ``dil submit``, the inbox folder and the HTTP API. For each open request
(the scan earliest in the queue first; a first request only once the round service has learned from every
finished scan, as a physician who picks up the next scan when it is ready) it reads ``mask_seg.nii.gz``: if
Dice(ground truth, mask) >= the request's quality bar it accepts (as a physician's review would), else it draws
exactly the requested slices from the ground truth and hands the label file in, rotating between the inbox,
an HTTP upload and a ``dil submit`` process. The simulated campaign of the same config runs in the same
benchmark (``bench/_campaign.py``, the product's round in one process).

Reported: every scan passed?, labor per scan and mean in both modes; seconds from a submission being stored to
its next request being written (ledger timestamps), median and 95th percentile; wall time of a ``dil submit``
process; where each wait went (``wait_events``, and their phases per hand-in channel and per round: see
:func:`_wait_events`); and the same latencies for a BraTS-size scan (240x240x155) when ``../shared/data`` is there.

    .venv/bin/python bench/physician_loop.py [--scans 24] [--brats-rounds 6] [--smoke]

``bench/continuous_serve.py`` drives continuous training through ``dil serve`` with the same physician, paced.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
SHARED = Path(os.environ.get("DIL_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "bench" / "results"
DEMO = REPO / "data" / "demo"

from dil_core.io import read_label, write_label  # noqa: E402
from dil_core.metrics import dice  # noqa: E402


def _env() -> dict[str, str]:
    env = {**os.environ, "DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)}
    env.pop("PREFECT_API_URL", None)
    return env


def _dil(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dil", *args], capture_output=True, text=True, env=_env(),
                          cwd=REPO, check=check)


def _config(tmp: Path, cases: list[tuple[str, Path, Path]], *, base: str, name: str, human: bool,
            overrides: dict | None = None) -> Path:
    lines = ["case_id,image,ground_truth"] + [f"{c},{i},{lab}" for c, i, lab in cases]
    (tmp / f"{name}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = yaml.safe_load((REPO / "configs" / f"{base}.yaml").read_text(encoding="utf-8"))
    data.update(name=name, cohort=f"{name}.csv", workspace=f"ws-{name}")
    data["training"]["device"] = "cpu"
    if human:
        data["annotator"] = {"kind": "human", "open_scans": 2}
        data["stopping"]["rule"] = "accept"
    for key, value in (overrides or {}).items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class Service:
    """``dil serve`` as its own process; the physician talks to it over HTTP."""

    def __init__(self, ws: Path) -> None:
        self.ws = ws
        self.log = open(ws / "serve.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "dil", "serve", str(ws)], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=_env(), cwd=REPO, start_new_session=True)
        deadline = time.monotonic() + 300
        while True:
            try:
                info = json.loads((ws / "service" / "service.json").read_text(encoding="utf-8"))
                if info["pid"] == self.proc.pid:
                    self.url = info["url"]
                    self.get("/api/health")
                    break
            except (OSError, ValueError, KeyError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dil serve did not start; see {ws / 'serve.log'}")
            time.sleep(0.5)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: bytes = b"") -> Any:
        req = urllib.request.Request(self.url + path, data=body, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def _draw(ws: Path, request: dict, truth: np.ndarray, geometry: Any, out: Path) -> Path:
    labels = np.zeros(truth.shape, np.uint8)
    for s in request["slices"]:
        sl: list[Any] = [slice(None)] * 3
        index = s["index"]
        if index is None:  # "the first / last slice showing the target": the physician scrolls to it
            hit = np.flatnonzero(truth.any(axis=tuple(a for a in range(3) if a != s["axis"])))
            index = int(hit[0] if s["find"] == "first" else hit[-1])
        sl[s["axis"]] = index
        labels[tuple(sl)] = truth[tuple(sl)]
    return write_label(out, labels, geometry)


def physician(service: Service, truths: dict[str, tuple[np.ndarray, Any]], *, timeout: float, pace: float = 0.0,
              review_minutes: float = 0.5, minutes_per_slice: float = 1.5) -> dict[str, Any]:
    """Work every scan to its end through the public interface; returns what it did and how long it waited.

    With ``pace`` > 0 the physician takes time as the simulation counts it: ``review_minutes`` to look at each
    request's mask and ``minutes_per_slice`` per slice drawn, at ``pace`` seconds of wall time per minute.
    """
    ws = service.ws
    channel = 0
    submit_walls: list[float] = []
    waits: list[float] = []
    events: list[dict[str, Any]] = []
    minutes = 0.0
    deadline = time.monotonic() + timeout
    tmp = Path(tempfile.mkdtemp(prefix="physician-"))
    while time.monotonic() < deadline:
        status = service.get("/api/status")
        if all(r["phase"].startswith("done") for r in status["scans"]):
            break
        order = {r["case"]: i for i, r in enumerate(status["scans"])}
        open_requests = sorted(service.get("/api/requests"), key=lambda r: order[r["case"]])
        ready = [r for r in open_requests if r["round"] > 1 or (not status["learning"]
                 and r["segmenter"] in (None, status["segmenter"]))]
        if not ready:
            time.sleep(0.2)
            continue
        req = ready[0]
        case, number = req["case"], req["round"]
        folder = ws / "requests" / case / f"round-{number}"
        request = json.loads((folder / "request.json").read_text(encoding="utf-8"))
        truth, geometry = truths[case]
        mask, _ = read_label(folder / "mask_seg.nii.gz")
        shown = request.get("segmenter") is not None or number > 1  # a seed scan's first request shows no mask
        if mask.any() and dice(truth, mask > 0) >= request["quality_bar"]:
            minutes += review_minutes
            time.sleep(pace * review_minutes)
            service.post(f"/api/scans/{case}/accept")
            continue
        label = _draw(ws, request, truth, geometry, tmp / f"{case}-round-{number}.nii.gz")
        work = (review_minutes if shown else 0.0) + minutes_per_slice * len(request["slices"])
        minutes += work
        time.sleep(pace * work)
        t0, w0 = time.monotonic(), time.time()
        kind = ("inbox", "http", "cli")[channel % 3]
        channel += 1
        if kind == "inbox":
            inbox = ws / "inbox" / case
            inbox.mkdir(parents=True, exist_ok=True)
            shutil.copy(label, inbox / f".{label.name}.part")
            (inbox / f".{label.name}.part").rename(inbox / label.name)
        elif kind == "http":
            service.post(f"/api/scans/{case}/submissions?filename={label.name}", label.read_bytes())
        else:
            t_cli = time.monotonic()
            _dil("submit", str(ws), case, str(label))
            submit_walls.append(time.monotonic() - t_cli)
        polls: list[float] = []
        while time.monotonic() < deadline:  # until the scan's next request (or its end) is there
            t_poll = time.monotonic()
            rows = {r["case"]: r for r in service.get("/api/status")["scans"]}
            polls.append(time.monotonic() - t_poll)
            phase = rows[case]["phase"]
            if phase.startswith("done") or phase == f"open (round {number + 1})":
                break
            time.sleep(0.05)
        waits.append(time.monotonic() - t0)
        events.append({"case": case, "round": number, "channel": kind, "start": w0, "seen": time.time(),
                       "polls": len(polls), "poll_s": float(np.median(polls)) if polls else None})
    shutil.rmtree(tmp, ignore_errors=True)
    return {"submit_process_seconds": submit_walls, "physician_wait_seconds": waits, "physician_minutes": minutes,
            "events": events}


def _submissions(ws: Path) -> Iterator[tuple[str, Any, Any, Any]]:
    """Every stored submission of the workspace's campaign: (case, its round, the submission, the next round
    or None), from the ledger."""
    from dil_core.config import load_config
    from dil_core.ledger import Ledger

    cfg = load_config(ws / "campaign.yaml")
    ledger = Ledger.open(cfg.tracking.ledger_url or f"sqlite:///{ws / 'ledger.db'}", create=False)
    for scan in ledger.list_scans(ledger.get_campaign(cfg.name).id):
        rounds = {r.id: r for r in ledger.list_rounds(scan.id)}
        by_number = {r.number: r for r in rounds.values()}
        for sub in ledger.list_submissions(scan.id):
            rnd = rounds[sub.round_id]
            yield scan.case_id, rnd, sub, by_number.get(rnd.number + 1)


def _ledger_latencies(ws: Path) -> list[float]:
    """Seconds from each stored submission to the scan's next request being opened (from the ledger)."""
    return [(nxt.created_at - sub.received_at).total_seconds() for _, _, sub, nxt in _submissions(ws) if nxt]


def _wait_events(ws: Path, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where each of the physician's waits went (seconds): handing the file in until the ledger stores it,
    stored until the next request is written, written until ``/api/status`` shows it; the middle one split into
    the wait for the round to start (stored -> processed, less the round's computation), the computation
    (propagation, after-round step, stop check: the round's own timings) and the next request (processed ->
    written: guidance, prediction and files); and the median ``GET /api/status`` while it waited."""
    times: dict[tuple[str, int], tuple[float, float | None, float | None, float]] = {}
    for case, rnd, sub, nxt in _submissions(ws):
        laps = (rnd.metrics or {}).get("seconds") or {}
        times[(case, rnd.number)] = (
            sub.received_at.timestamp(), nxt.created_at.timestamp() if nxt else None,
            rnd.processed_at.timestamp() if rnd.processed_at else None,
            float(laps.get("round", 0.0)) + float(laps.get("stop_check", 0.0)))
    out = []
    for e in events:
        if (e["case"], e["round"]) not in times:
            continue
        stored, written, processed, computed = times[(e["case"], e["round"])]
        row = {"case": e["case"], "round": e["round"], "channel": e["channel"], "hand_in": stored - e["start"],
               "total": e["seen"] - e["start"], "status_call": e["poll_s"]}
        if written is not None and processed is not None:  # the scan went on (else it ended with this round)
            row.update(stored_to_written=written - stored, queued=processed - stored - computed, computed=computed,
                       next_request=written - processed, written_to_seen=e["seen"] - written)
        out.append(row)
    return out


def wait_phases(rows: list[dict[str, Any]], by: str) -> dict[str, Any]:
    """Median, p95 and count of each phase of :func:`_wait_events`, per value of ``by`` (channel, round)."""
    names = ("hand_in", "stored_to_written", "queued", "computed", "next_request", "written_to_seen", "total",
             "status_call")
    out: dict[str, Any] = {}
    for key in sorted({r[by] for r in rows}):
        group = [r for r in rows if r[by] == key]
        out[str(key)] = {}
        for name in names:
            values = [r[name] for r in group if r.get(name) is not None]
            out[str(key)][name] = {"median": _pct(values, 50), "p95": _pct(values, 95), "n": len(values)}
    return out


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _human(tmp: Path, cases: list[tuple[str, Path, Path]], *, base: str, name: str, overrides: dict | None,
           timeout: float, pace: float = 0.0) -> dict[str, Any]:
    cfg = _config(tmp, cases, base=base, name=name, human=True, overrides=overrides)
    ws = tmp / f"ws-{name}"
    t0 = time.monotonic()
    _dil("campaign", "run", str(cfg))
    service = Service(ws)
    try:
        truths = {}
        for case, _img, lab in cases:
            arr, geometry = read_label(lab)
            truths[case] = ((arr > 0).astype(np.uint8), geometry)
        a = yaml.safe_load(cfg.read_text(encoding="utf-8"))["annotator"]
        loop = physician(service, truths, timeout=timeout, pace=pace, review_minutes=a.get("review_minutes", 0.5),
                         minutes_per_slice=a.get("minutes_per_slice", 1.5))
        status = service.get("/api/status")
    finally:
        service.stop()
    latencies = _ledger_latencies(ws)
    walls = loop["submit_process_seconds"]
    return {
        "wall_s": round(time.monotonic() - t0, 1),
        "scans": {r["case"]: {"state": r["state"], "labor": r["labor"], "slices": r["slices"], "rounds": r["rounds"]}
                  for r in status["scans"]},
        "mean_labor": status["mean_labor"],
        "all_passed": all(r["state"] == "passed" for r in status["scans"]),
        "stored_to_next_request_s": {"median": _pct(latencies, 50), "p95": _pct(latencies, 95), "n": len(latencies),
                                     "max": max(latencies) if latencies else None},
        "physician_wait_s": {"median": _pct(loop["physician_wait_seconds"], 50),
                             "p95": _pct(loop["physician_wait_seconds"], 95)},
        "wait_events": (rows := _wait_events(ws, loop["events"])),
        "wait_phases_s": wait_phases(rows, "channel"),
        "wait_phases_by_round_s": wait_phases(rows, "round"),
        "dil_submit_process_s": {"median": _pct(walls, 50), "max": max(walls) if walls else None, "n": len(walls)},
        "physician_minutes": loop["physician_minutes"],
        "continual": status.get("continual"),
        "workspace": str(ws),
    }


def _simulated(cases: list[tuple[str, Path, Path]], *, base: str, overrides: dict | None) -> dict[str, Any]:
    from _campaign import bench_config, campaign_case, run_campaign

    config = bench_config(base, {"training": {"device": "cpu"}, **(overrides or {})})
    read = [campaign_case(c, i, lab, config) for c, i, lab in cases]
    t0 = time.monotonic()
    outcomes, _ = run_campaign(read, config)
    per = {c.case_id: {"state": o.state, "labor": o.session.labor(c.targets), "slices": o.session.n_drawn}
           for c, o in zip(read, outcomes, strict=True)}
    return {"wall_s": round(time.monotonic() - t0, 1), "scans": per,
            "mean_labor": float(np.mean([v["labor"] for v in per.values()])),
            "all_passed": all(v["state"] == "passed" for v in per.values())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scans", type=int, default=24)
    p.add_argument("--brats-rounds", type=int, default=6)
    p.add_argument("--timeout", type=float, default=5400.0)
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--smoke", action="store_true", help="3 scans, a small segmenter, no BraTS")
    args = p.parse_args(argv)
    overrides = None
    if args.smoke:
        args.scans, args.brats_rounds = 3, 0
        overrides = {"stopping": {"seed_scans": 1}, "refine": {"end_steps": 6},
                     "training": {"channels": [4, 8, 16], "device": "cpu"}}
    import torch

    torch.set_num_threads(1)
    images = sorted((DEMO / "images").glob("*.nii.gz"))[: args.scans]
    cases = [(p.name.removesuffix(".nii.gz"), p, DEMO / "labels" / p.name) for p in images]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dil-physician-") as tmp_s:
        tmp = Path(tmp_s)
        human = _human(tmp, cases, base="demo", name="human", overrides=overrides, timeout=args.timeout)
        print("human:", json.dumps({k: v for k, v in human.items() if k != "scans"}), flush=True)
        sim = _simulated(cases, base="demo", overrides=overrides)
        print("simulated:", json.dumps({k: v for k, v in sim.items() if k != "scans"}), flush=True)
        brats = None
        volumes = sorted((SHARED / "brats2015" / "images").glob("*.nii*")) if SHARED.is_dir() else []
        if volumes and args.brats_rounds:
            lab = SHARED / "brats2015" / "labels" / volumes[0].name
            case = volumes[0].name.split(".")[0]
            brats = _human(tmp, [(case, volumes[0], lab)], base="demo", name="brats", timeout=1800,
                           overrides={"stopping": {"seed_scans": 1, "rho_seed": 0.99, "quota_gamma": args.brats_rounds,
                                                   "n_inter": args.brats_rounds}})
            print("brats:", json.dumps({k: v for k, v in brats.items() if k != "scans"}), flush=True)
    payload = {
        "benchmark": "physician_loop",
        "device": f"CPU ({os.cpu_count()} cores), torch {torch.__version__}",
        "wall_s": round(time.monotonic() - t0, 1),
        "scans": args.scans,
        "human": human,
        "simulated": sim,
        "labor_difference": human["mean_labor"] - sim["mean_labor"],
        "brats": brats,
    }
    out = args.out_dir or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "physician_loop.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    lat, sub = human["stored_to_next_request_s"], human["dil_submit_process_s"]
    md = ["# The physician's loop against `dil serve` (human mode) vs the simulated campaign", "",
          f"Device: {payload['device']}; wall {payload['wall_s']} s", "",
          "| | scans | all passed | mean labor | stored -> next request median / p95 s | `dil submit` s |",
          "|---|---|---|---|---|---|",
          f"| human mode (`dil serve`) | {len(human['scans'])} | {human['all_passed']} | {human['mean_labor']:.3f} | "
          f"{lat['median']:.2f} / {lat['p95']:.2f} | {sub['median'] or 0:.2f} (max {sub['max'] or 0:.2f}) |",
          f"| simulated (`dil campaign run`) | {len(sim['scans'])} | {sim['all_passed']} | {sim['mean_labor']:.3f} | - | - |"]
    if brats:
        bl = brats["stored_to_next_request_s"]
        md.append(f"| BraTS 240x240x155, human mode | 1 | - | {brats['mean_labor']:.3f} | "
                  f"{bl['median']:.2f} / {bl['p95']:.2f} | {brats['dil_submit_process_s']['median'] or 0:.2f} |")
    (out / "physician_loop.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
