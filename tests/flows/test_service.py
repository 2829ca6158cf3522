"""The round service as a physician meets it: a real ``dil serve`` process, its inbox and its HTTP API."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from dil.cli import main
from dil_core.geometry import Geometry
from dil_core.io import read_label, write_label
from dil_core.ledger import Ledger
from tests.flows.conftest import REPO, small_config
from tests.flows.test_campaign import _end

DEMO = REPO / "data" / "demo"

_KILL_AT = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import dil_core.session as target
original = target.ScanSession._update_proxy
def dying(self, *args, **kwargs):  # in round {at}'s propagation (a session rebuilt for a retried round lives on)
    if self.rounds == {at}:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *args, **kwargs)
target.ScanSession._update_proxy = dying
from dil.cli import main
sys.exit(main(["serve", {ws!r}]))
"""


def _env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_API_URL": str(PREFECT_API_URL.value())}


class Served:
    """A ``dil serve`` process on a workspace, and an HTTP client on its API."""

    def __init__(self, ws: Path, *, script: str | None = None) -> None:
        self.ws = ws
        args = [sys.executable, "-c", script] if script else [sys.executable, "-m", "dil", "serve", str(ws)]
        self.log = ws / f"serve-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen(args, env=_env(), cwd=REPO, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 240
        while True:
            with contextlib.suppress(OSError, ValueError, KeyError):
                info = json.loads((ws / "service" / "service.json").read_text(encoding="utf-8"))
                if info["pid"] == self.proc.pid:
                    self.http = httpx.Client(base_url=info["url"], timeout=60)
                    if self.http.get("/api/health").status_code == 200:
                        return
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text(encoding="utf-8")[-3000:]
            time.sleep(0.25)

    def status(self) -> dict[str, Any]:
        return {r["case"]: r for r in self.http.get("/api/status").json()["scans"]}

    def wait_phase(self, case: str, phase: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.status()[case]["phase"] == phase:
                    return
            except httpx.TransportError as err:  # the service died: its log says why
                raise AssertionError(f"{err}; service exit {self.proc.poll()}\n"
                                     + self.log.read_text(encoding="utf-8")[-3000:]) from err
            assert self.proc.poll() is None, self.log.read_text(encoding="utf-8")[-3000:]
            assert time.monotonic() < deadline, f"{case} never reached {phase!r}: {self.status()[case]}"
            time.sleep(0.1)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@contextlib.contextmanager
def served(ws: Path, **kw: Any) -> Iterator[Served]:
    s = Served(ws, **kw)
    try:
        yield s
    finally:
        s.stop()


def _drawn(ws: Path, case: str, number: int, out: Path) -> Path:
    """The physician: exactly the requested slices, drawn from the ground truth, saved as a label file."""
    req = json.loads((ws / "requests" / case / f"round-{number}" / "request.json").read_text(encoding="utf-8"))
    gt, geometry = read_label(DEMO / "labels" / f"{case}.nii.gz")
    labels = np.zeros(gt.shape, np.uint8)
    for s in req["slices"]:
        sl: list[Any] = [slice(None)] * 3
        sl[s["axis"]] = s["index"] if s["index"] is not None else _end(gt, s["axis"], s["find"])
        labels[tuple(sl)] = gt[tuple(sl)] > 0
    return write_label(out / f"{case}-r{number}.nii.gz", labels, geometry)


def _ledger(ws: Path) -> Ledger:
    return Ledger.open(f"sqlite:///{ws / 'ledger.db'}", create=False)


def _drawn_slices(ws: Path) -> dict[str, Any]:
    ledger = _ledger(ws)
    camp = ledger.get_campaign("test").id
    labor = {lab.case_id: (lab.slices, round(lab.fraction, 12)) for lab in ledger.labor_by_scan(camp)}
    return {s.case_id: ([sorted((a, sorted(v)) for a, v in sub.drawn.items()) for sub in ledger.list_submissions(s.id)],
                        labor[s.case_id]) for s in ledger.list_scans(camp)}


HUMAN = {"annotator": {"kind": "human"}, "stopping": {"rule": "accept"}, "guidance": {"first_round": "uniform"}}


def test_inbox_http_duplicates_and_refusals(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, 2, **HUMAN)
    ws = tmp_path / "ws"
    assert main(["campaign", "run", str(cfg)]) == 0
    case = "hippocampus_001"
    started = datetime.now(timezone.utc)
    with served(ws) as s:
        # the inbox: a label file saved into inbox/<case>/ is submitted by the service on its own; the same
        # file saved twice (under two names) for the round is counted once
        inbox = ws / "inbox" / case
        inbox.mkdir(parents=True, exist_ok=True)
        first = _drawn(ws, case, 1, tmp_path)
        staging = tmp_path / "staging"
        staging.mkdir()
        for name in (first.name, f"copy-{first.name}"):
            (staging / name).write_bytes(first.read_bytes())
        for name in (first.name, f"copy-{first.name}"):
            (staging / name).rename(inbox / name)
        s.wait_phase(case, "open (round 2)")
        assert (inbox / "submitted" / f"round-1-{first.name}").is_file() and not (inbox / first.name).exists()
        assert s.status()[case]["slices"] == 2
        requests = s.http.get("/api/requests").json()
        assert {(r["case"], r["round"]) for r in requests} == {(case, 2), ("hippocampus_003", 1)}
        mask = s.http.get(f"/api/requests/{case}/2/mask_seg.nii.gz")
        assert mask.status_code == 200 and mask.content[:2] == b"\x1f\x8b"
        second = _drawn(ws, case, 2, tmp_path)
        up = s.http.post(f"/api/scans/{case}/submissions", params={"filename": second.name, "wait": "true"},
                         content=second.read_bytes())
        assert up.status_code == 201 and up.json()["round"] == 2 and up.json()["next"]["round"] == 3
        assert up.json()["new"] and not up.json()["again"]
        # a bad file is refused, over HTTP and through the inbox, with nothing stored and the reason written
        stored = sorted((ws / "submissions" / case).iterdir())
        gt, geometry = read_label(DEMO / "labels" / f"{case}.nii.gz")
        wrong = write_label(tmp_path / "wrong.nii.gz", np.zeros(gt.shape, np.uint8),
                            Geometry(geometry.size, (2.0, 2.0, 2.0), geometry.origin, geometry.direction))
        bad = s.http.post(f"/api/scans/{case}/submissions", params={"filename": "wrong.nii.gz"},
                          content=wrong.read_bytes())
        assert bad.status_code == 422 and "spacing" in bad.json()["detail"]["message"]
        (inbox / "wrong.nii.gz").write_bytes(wrong.read_bytes())
        deadline = time.monotonic() + 60
        while not list((inbox / "rejected").glob("*.rejected.txt")) and time.monotonic() < deadline:
            time.sleep(0.2)
        (reason,) = list((inbox / "rejected").glob("*.rejected.txt"))
        assert "spacing" in reason.read_text(encoding="utf-8")
        assert sorted((ws / "submissions" / case).iterdir()) == stored
        assert s.status()[case]["phase"] == "open (round 3)" and s.status()[case]["slices"] == 4
        assert len(_ledger(ws).list_submissions(_ledger(ws).list_scans(1)[0].id)) == 2
        # each processed round is one named Prefect flow run, tagged with the campaign and the case; the
        # duplicate made none
        from prefect import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

        from prefect.client.schemas.filters import FlowRunFilterId

        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"case:{case}"])))
            runs = [r for r in runs if "campaign:test" in (r.tags or []) and r.created >= started]
            task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in runs])))
        names = sorted(r.name for r in runs)
        assert names == [f"{case}-round-1", f"{case}-round-2"], names
        # their tasks carry no tag: a tagged task run waits for the server's concurrency slots, and the physician
        # with it
        assert task_runs and all(not t.tags for t in task_runs), [(t.name, t.tags) for t in task_runs]
        # accept over HTTP; a second `dil serve` on the workspace refuses at once
        assert s.http.post(f"/api/scans/{case}/accept").json()["state"] == "passed"
        twice = subprocess.run([sys.executable, "-m", "dil", "serve", str(ws)], env=_env(), cwd=REPO,
                               capture_output=True, text=True, timeout=120)
        assert twice.returncode != 0 and "already running" in twice.stderr
    assert _drawn_slices(ws)[case][1][0] == 4


def _work(ws: Path, tmp: Path, case: str, rounds: int, *, kill: bool = False) -> None:
    """Draw ``rounds`` requests of ``case`` through the inbox; with ``kill`` the service dies in the 2nd round."""
    script = _KILL_AT.format(repo=str(REPO), at=2, ws=str(ws)) if kill else None
    s = Served(ws, script=script)
    try:
        for number in range(1, rounds + 1):
            label = _drawn(ws, case, number, tmp)
            (ws / "inbox" / case).mkdir(parents=True, exist_ok=True)
            (ws / "inbox" / case / label.name).write_bytes(label.read_bytes())
            if kill and number == 2:
                assert s.proc.wait(timeout=120) == -signal.SIGKILL
                break
            s.wait_phase(case, f"open (round {number + 1})")
    finally:
        s.stop()
    if kill:  # restarted: the stored submission is processed once, then the physician goes on
        with served(ws) as s:
            s.wait_phase(case, "open (round 3)")
            for number in range(3, rounds + 1):
                label = _drawn(ws, case, number, tmp)
                (ws / "inbox" / case / label.name).write_bytes(label.read_bytes())
                s.wait_phase(case, f"open (round {number + 1})")


def test_sigkill_of_the_service_mid_round_then_restart_gives_the_same_rounds(tmp_path: Path) -> None:
    runs = {}
    for name in ("straight", "killed"):
        folder = tmp_path / name
        folder.mkdir()
        assert main(["campaign", "run", str(small_config(folder, 1, **HUMAN))]) == 0
        _work(folder / "ws", folder, "hippocampus_001", 4, kill=name == "killed")
        runs[name] = _drawn_slices(folder / "ws")
    assert runs["killed"] == runs["straight"]
    ledger = _ledger(tmp_path / "killed" / "ws")
    scan = ledger.list_scans(ledger.get_campaign("test").id)[0]
    assert [r.status.value for r in ledger.list_rounds(scan.id)] == ["processed"] * 4 + ["requested"]
    assert len(ledger.list_stops(scan.id)) == 4  # one decision per round: nothing was processed twice


def test_rolling_queue_gives_the_third_scan_a_prediction(tmp_path: Path) -> None:
    refine = dict(
        method="refine",
        guidance={"strategy": "refine", "first_round": "bisect", "planes": ["coronal"]},
        propagation={"backend": "sdf-aligned"},
        training={"n_f": 0, "buffer_b": 4, "buffer_b_star": 8, "replay_m": 1, "test_time_flips": True},
        refine={"end_steps": 6},
        annotator={"kind": "human", "open_scans": 2},
        stopping={"rule": "accept", "quota_gamma": 40, "n_inter": 40},
    )
    cfg = small_config(tmp_path, 3, **refine)
    ws = tmp_path / "ws"
    assert main(["campaign", "run", str(cfg)]) == 0
    first, second, third = "hippocampus_001", "hippocampus_003", "hippocampus_004"
    assert (ws / "requests" / first / "round-1").is_dir() and (ws / "requests" / second / "round-1").is_dir()
    assert not (ws / "requests" / third).exists()  # at most two scans open at a time
    with served(ws) as s:
        for number in (1, 2, 3):
            label = _drawn(ws, first, number, tmp_path)
            up = s.http.post(f"/api/scans/{first}/submissions", params={"filename": label.name, "wait": "true"},
                             content=label.read_bytes())
            assert up.status_code == 201
        assert s.http.post(f"/api/scans/{first}/accept").status_code == 200
        deadline = time.monotonic() + 180
        while not (ws / "requests" / third / "round-1" / "request.json").is_file():
            assert time.monotonic() < deadline and s.proc.poll() is None, s.log.read_text(encoding="utf-8")[-3000:]
            time.sleep(0.2)
        # the third scan opens once the segmenter has learned from the first, with its prediction in the request
        assert (ws / "requests" / third / "round-1" / "prediction_seg.nii.gz").is_file()
        request = json.loads((ws / "requests" / third / "round-1" / "request.json").read_text(encoding="utf-8"))
        assert request["segmenter"] is not None and request["segmenter"] == s.http.get("/api/status").json()["segmenter"]
        # the second scan's untouched first request was refreshed with the same segmenter
        refreshed = json.loads((ws / "requests" / second / "round-1" / "request.json").read_text(encoding="utf-8"))
        assert refreshed["segmenter"] == request["segmenter"]
        assert (ws / "requests" / second / "round-1" / "prediction_seg.nii.gz").is_file()
        assert s.status()[third]["phase"] == "open (round 1)" and s.status()[first]["learned"]


def test_submit_without_a_service_imports_no_heavy_library(tmp_path: Path) -> None:
    from tests.flows.test_battery import CASE, _human, _ledger, _scan
    from tests.flows.test_campaign import _draw_request

    ws = _human(tmp_path)
    label = _draw_request(ws, CASE, 1, tmp_path)
    script = ("import sys\nfrom dil.cli import main\nrc = main(['submit', sys.argv[1], sys.argv[2], sys.argv[3]])\n"
              "print('heavy:', sorted(m for m in ('torch', 'monai', 'prefect', 'mlflow') if m in sys.modules))\n"
              "sys.exit(rc)\n")
    run = subprocess.run([sys.executable, "-c", script, str(ws), CASE, str(label)], capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    assert "heavy: []" in run.stdout
    assert "dil serve" in run.stdout + run.stderr  # says how to start the service
    ledger, _ = _ledger(ws)
    assert len(ledger.list_submissions(_scan(ws).id)) == 1  # stored, for the service to process


def test_continual_training_between_submissions_publishes_the_champion_scans_predict_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refine = dict(
        method="refine",
        guidance={"strategy": "refine", "first_round": "bisect", "planes": ["coronal"]},
        propagation={"backend": "sdf-aligned"},
        training={"n_f": 0, "buffer_b": 4, "buffer_b_star": 8, "replay_m": 1},
        annotator={"kind": "human", "open_scans": 2},
        stopping={"rule": "accept", "quota_gamma": 40, "n_inter": 40},
        continual={"enabled": True, "batch": 1, "gate_every": 5, "holdout_every": 5, "checkpoint_every": 10},
    )
    cfg = small_config(tmp_path, 3, **refine)
    ws = tmp_path / "ws"
    assert main(["campaign", "run", str(cfg)]) == 0
    first, second, third = "hippocampus_001", "hippocampus_003", "hippocampus_004"
    gates = ws / "state" / "continual-gates.jsonl"

    def lines() -> list[dict[str, Any]]:
        return [json.loads(x) for x in gates.read_text(encoding="utf-8").splitlines()] if gates.is_file() else []

    with served(ws) as s:
        for number in (1, 2):
            label = _drawn(ws, first, number, tmp_path)
            up = s.http.post(f"/api/scans/{first}/submissions", params={"filename": label.name, "wait": "true"},
                             content=label.read_bytes())
            assert up.status_code == 201
        assert not lines()  # nothing finished yet: nothing to train on
        assert s.http.post(f"/api/scans/{first}/accept").status_code == 200
        deadline = time.monotonic() + 180
        while not any(g["promoted"] for g in lines()):  # the service trains while the physician is away
            assert time.monotonic() < deadline and s.proc.poll() is None, s.log.read_text(encoding="utf-8")[-3000:]
            time.sleep(0.2)
        # a submission while training runs is processed at once (training pauses for it)
        label = _drawn(ws, second, 1, tmp_path)
        up = s.http.post(f"/api/scans/{second}/submissions", params={"filename": label.name, "wait": "true"},
                         content=label.read_bytes())
        assert up.status_code == 201 and up.json()["next"]["round"] == 2
        count = len(lines())
        deadline = time.monotonic() + 180
        while len(lines()) <= count:  # and goes on after it
            assert time.monotonic() < deadline and s.proc.poll() is None, s.log.read_text(encoding="utf-8")[-3000:]
            time.sleep(0.2)
        # the third scan's untouched first request is (re)made with the newest champion
        champion = [g["checkpoint"] for g in lines() if g["promoted"]]
        deadline = time.monotonic() + 180
        while True:
            path = ws / "requests" / third / "round-1" / "request.json"
            request = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            if str(request.get("segmenter")).startswith("cont-"):
                break
            assert time.monotonic() < deadline and s.proc.poll() is None, s.log.read_text(encoding="utf-8")[-3000:]
            time.sleep(0.2)
        assert request["segmenter"] in [g["checkpoint"] for g in lines() if g["promoted"]]
        assert champion and (ws / "requests" / third / "round-1" / "prediction_seg.nii.gz").is_file()
        learner = s.http.get("/api/status").json()["continual"]  # what the HTTP API tells of the learner
        seen = lines()
        assert learner["gates"] >= len(seen) and learner["steps"] >= seen[-1]["step"] > 0
        assert learner["promotions"] >= len([g for g in seen if g["promoted"]]) >= 1
        assert str(learner["champion"]).startswith("cont-")
    ledger = _ledger(ws)
    versions = ledger.list_model_versions(ledger.get_campaign("test").id)
    assert [v.checkpoint for v in versions if v.alias == "champion"] == [[g["checkpoint"] for g in lines()
                                                                          if g["promoted"]][-1]]
    assert (ws / "state" / "checkpoints" / "continual-candidate.pt").is_file()
    capsys.readouterr()
    assert main(["status", str(ws)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"continual training: {lines()[-1]['step']} steps, {len(lines())} gates" in out
    assert f"champion {[g['checkpoint'] for g in lines() if g['promoted']][-1]}" in out
