"""Scale-out for real: two round services, a Prefect server, MLflow on a server, one PostgreSQL ledger.

The topology of ``deploy/compose.yaml`` as local processes (:mod:`dil.topology`, what ``deploy/local.sh``
starts), on databases this test creates. A scripted physician works 6 demo scans at once through the HTTP
APIs of both services; one service is killed with SIGKILL while it holds a round. Then the retraining runs as
a deployment on the work pool, and a round the services never saw is processed by a pool worker.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from dil.cli import main
from dil.topology import Topology
from dil_core.ledger import Ledger
from dil_core.ledger.records import RoundStatus
from tests.dil_core.conftest import _postgres_url
from tests.flows.conftest import REPO
from tests.flows.test_service import Served

sys.path.insert(0, str(REPO / "bench"))
from _scripted import draw, physicians_campaign, truths_of, work_concurrently  # noqa: E402

DEMO = REPO / "data" / "demo"
CASES = ("hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006", "hippocampus_007",
         "hippocampus_008")
LATE = "hippocampus_011"

pytestmark = pytest.mark.postgres


def _config(folder: Path) -> Path:
    """Physicians' campaign of DIL's method on the 6 scans, all open at once, a small segmenter."""
    return physicians_campaign(folder, CASES, name="scaleout", small=True)


def _flow_runs(api: str, flow: str) -> list[dict[str, Any]]:
    body = {"flows": {"name": {"any_": [flow]}}, "limit": 200}
    return list(httpx.post(f"{api}/flow_runs/filter", json=body, timeout=30).json())


def _processed(ledger: Ledger, campaign_id: int) -> dict[str, Any]:
    """Rounds the ledger shows processed with a submission, by flow-run name, and the submissions per scan."""
    rounds: dict[str, Any] = {}
    subs: dict[str, int] = {}
    for scan in ledger.list_scans(campaign_id):
        with_subs = {s.round_id for s in ledger.list_submissions(scan.id)}
        subs[scan.case_id] = len(ledger.list_submissions(scan.id))
        for r in ledger.list_rounds(scan.id):
            if r.status is RoundStatus.PROCESSED and r.id in with_subs:
                rounds[f"{scan.case_id}-round-{r.number}"] = r
    return {"rounds": rounds, "submissions": subs}


def _killer(topo: Topology, ledger: Ledger, campaign_id: int, role: str, after: int, out: dict) -> None:
    """kill -9 ``role`` once ``after`` rounds are processed and it holds the claim of a submitted round."""
    victim = next(p for p in topo.processes if p.role == role)
    worker = f"{socket.gethostname()}:{victim.pid}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if len(_processed(ledger, campaign_id)["rounds"]) >= after:
            for scan, rnd in ledger.submitted_rounds(campaign_id):
                if rnd.claimed_by == worker:
                    topo.kill(role)
                    out.update(name=f"{scan.case_id}-round-{rnd.number}", worker=worker)
                    return
        time.sleep(0.01)


def test_two_services_one_campaign_with_a_kill(tmp_path: Path) -> None:
    pg_url = _postgres_url()
    if pg_url is None:
        pytest.skip("no PostgreSQL server answers")
    pg = pg_url.rsplit("/", 1)[0]
    prefix = f"dil_t{uuid.uuid4().hex[:10]}"
    topo = Topology.up(tmp_path / "stack", _config(tmp_path / "cfg"), services=2, workers=1, pg=pg, prefix=prefix)
    try:
        ledger = Ledger.open(topo.ledger_url, create=False)
        campaign_id = ledger.get_campaign("scaleout").id
        truths = truths_of([(c, DEMO / "labels" / f"{c}.nii.gz") for c in (*CASES, LATE)])
        killed: dict[str, str] = {}
        killer = threading.Thread(target=_killer, args=(topo, ledger, campaign_id, "service-1", 8, killed),
                                  daemon=True)
        killer.start()
        done = work_concurrently(lambda: [p.url for p in topo.services() if p.url], topo.workspace, truths,
                                 timeout=900)
        killer.join(timeout=5)

        # every scan passed; service-1 was killed while it held a round, and the other one went on
        rows = {r["case"]: r for r in done["status"]["scans"]}
        assert all(r["state"] == "passed" for r in rows.values()), rows
        assert killed, "service-1 never held a round after the 8th: the kill was not exercised"
        assert [p.role for p in topo.services()] == ["service-0"]
        by_service = {s["service"] for s in done["submissions"]}
        assert len(by_service) == 2  # the physician's submissions went to both services

        # exactly once: one completed round flow run per processed round, none for anything else; every
        # submission the physician made is stored once
        seen = _processed(ledger, campaign_id)
        completed = [r["name"] for r in _flow_runs(topo.prefect_api_url, "dil-round")
                     if r["state_type"] == "COMPLETED"]
        assert sorted(completed) == sorted(seen["rounds"]), (completed, sorted(seen["rounds"]))
        assert sum(seen["submissions"].values()) == len(done["submissions"])
        assert killed["name"] in seen["rounds"]
        taken_over = seen["rounds"][killed["name"]].claimed_by
        survivor = f"{socket.gethostname()}:{next(p for p in topo.processes if p.role == 'service-0').pid}"
        assert taken_over in (survivor, killed["worker"])  # by the survivor, or finished just before the kill

        # the segmenter learns from every scan, one at a time (a lease the killed service held is taken over),
        # and the MLflow server's registry has each version
        from mlflow import MlflowClient

        deadline = time.monotonic() + 300
        while ledger.scans_to_learn(campaign_id):
            assert time.monotonic() < deadline, "the segmenter never learned from every scan"
            time.sleep(0.5)

        # the ledger marks a scan learned, then the service registers the version: the last one may be on its way
        client = MlflowClient(tracking_uri=topo.mlflow_uri, registry_uri=topo.mlflow_uri)
        while len(versions := client.search_model_versions("name='dil-scaleout-segmenter'")) < len(CASES):
            assert time.monotonic() < deadline, f"only {len(versions)} segmenter versions reached MLflow"
            time.sleep(0.5)
        assert len(versions) == len(CASES)

        # the same scans, one service on the embedded default: the same labor, scan by scan
        single_cfg = tmp_path / "single" / "campaign.yaml"
        _config(single_cfg.parent)
        assert main(["campaign", "run", str(single_cfg)]) == 0
        single_ws = single_cfg.parent / "ws"
        served = Served(single_ws)
        try:
            alone = work_concurrently(lambda: [str(served.http.base_url).rstrip("/")], single_ws, truths,
                                      timeout=900)
        finally:
            served.stop()
        assert {c: r["labor"] for c, r in rows.items()} == {r["case"]: r["labor"] for r in alone["status"]["scans"]}

        # the retraining as a deployment on the work pool, run by `dil worker`: champion alias on the server
        env = {**topo._env(), "PREFECT_API_URL": topo.prefect_api_url}
        run = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "dil-retrain/scaleout",
                              "-p", "epochs=2", "--watch", "--watch-timeout", "600"], check=False, env=env,
                             capture_output=True, encoding="utf-8", errors="replace", timeout=700)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "champion" in client.get_registered_model("dil-scaleout-segmenter").aliases

        # a round no service processes: a scan added, its first request opened by the service, the service
        # stopped, the file submitted, and the round sent to the pool with `dil resume --pool`
        image = DEMO / "images" / f"{LATE}.nii.gz"
        subprocess.run([sys.executable, "-m", "dil", "add", str(topo.workspace), str(image)], env=topo._env(),
                       check=True, capture_output=True)
        deadline = time.monotonic() + 300
        while not (topo.workspace / "requests" / LATE / "round-1" / "request.json").is_file():
            assert time.monotonic() < deadline, "the added scan's first request never opened"
            time.sleep(0.2)
        topo.kill("service-0", 15)
        request = json.loads((topo.workspace / "requests" / LATE / "round-1" / "request.json").read_text(encoding="utf-8"))
        label = draw(request, *truths[LATE], tmp_path / f"{LATE}-round-1.nii.gz")
        for args in (["submit", str(topo.workspace), LATE, str(label)], ["resume", str(topo.workspace), "--pool"]):
            got = subprocess.run([sys.executable, "-m", "dil", *args], check=False, env=topo._env(), capture_output=True,
                                 encoding="utf-8", errors="replace", timeout=300)
            assert got.returncode == 0, got.stderr
        scan = ledger.find_scan(campaign_id, LATE)
        deadline = time.monotonic() + 300
        while ledger.list_rounds(scan.id)[0].status is not RoundStatus.PROCESSED:
            assert time.monotonic() < deadline, (topo.root / "logs" / "worker-0.log").read_text(encoding="utf-8")[-3000:]
            time.sleep(0.5)
        while True:  # the flow run ends after the ledger's commit (the next request, tracking)
            runs = [r for r in _flow_runs(topo.prefect_api_url, "dil-round") if r["name"] == f"{LATE}-round-1"]
            if [r["state_type"] for r in runs] == ["COMPLETED"]:
                break
            assert time.monotonic() < deadline, runs
            time.sleep(0.5)
        assert len(ledger.list_rounds(scan.id)) == 2  # the worker opened the scan's next request
    finally:
        topo.down(drop=True)
