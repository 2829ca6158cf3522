"""The parts scale-out stands on, one at a time: inbox claims, working folders, leases, the fan-out, Dask."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prefect import flow

from dil.inbox import claim_file, hand_back_stale_claims
from dil.service import check_work_dir
from dil_core.config import PropagationConfig
from dil_core.io import read_label, read_scan
from dil_core.ledger import Ledger, worker_gone
from dil_core.propagation import proxy_mask
from dil_core.workspace import Workspace
from flows.runners import RoundRunner
from tasks.rounds import FAN_OUT_TASKS, fan_out
from tests.flows.conftest import REPO

DEMO = REPO / "data" / "demo"


def _dead_worker() -> str:
    """``host:pid`` of a process of this machine that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}"


def test_an_inbox_file_goes_to_exactly_one_service(tmp_path: Path) -> None:
    folder = tmp_path / "inbox" / "case1"
    folder.mkdir(parents=True)
    (folder / "labels.nii.gz").write_bytes(b"x")
    first = claim_file(folder / "labels.nii.gz", "host-a:11")
    assert first is not None and first.parent.name == ".claimed" and first.read_bytes() == b"x"
    assert claim_file(folder / "labels.nii.gz", "host-b:22") is None
    assert not (folder / "labels.nii.gz").exists()


def test_a_claim_left_by_a_dead_service_is_handed_back(tmp_path: Path) -> None:
    folder = tmp_path / "case1"
    folder.mkdir()
    for name, worker in (("dead.nii.gz", _dead_worker()), ("alive.nii.gz", f"{socket.gethostname()}:{os.getpid()}"),
                         ("remote.nii.gz", "other-host:1")):
        (folder / name).write_bytes(b"x")
        assert claim_file(folder / name, worker) is not None
    back = hand_back_stale_claims(folder, "me:1")
    assert [p.name for p in back] == ["dead.nii.gz"]  # a live service's claim, and a remote one, stay
    assert (folder / "dead.nii.gz").is_file()
    later = hand_back_stale_claims(folder, "me:1", stale_s=0.0)  # a claim older than stale_s goes back too
    assert sorted(p.name for p in later) == ["alive.nii.gz", "remote.nii.gz"]
    assert not any((folder / ".claimed").iterdir())


def test_several_services_need_a_server_ledger(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    assert check_work_dir(ws, None, None) == ws.service_dir
    assert check_work_dir(ws, ws.service_dir, None) == ws.service_dir
    for url in (None, f"sqlite:///{tmp_path / 'ledger.db'}"):
        with pytest.raises(ValueError, match="PostgreSQL ledger"):
            check_work_dir(ws, tmp_path / "s1", url)
    assert check_work_dir(ws, tmp_path / "s1", "postgresql+psycopg://u@h/db") == (tmp_path / "s1").resolve()


def test_a_lease_held_by_a_dead_local_process_is_taken_over(tmp_path: Path) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}", create=True)
    dead = _dead_worker()
    assert worker_gone(dead) and not worker_gone(f"{socket.gethostname()}:{os.getpid()}")
    assert not worker_gone("other-host:1")  # another machine's holder lapses with its lease, never earlier
    assert ledger.acquire_lease("learn:1", dead, lease_s=600)
    assert ledger.acquire_lease("learn:1", "svc:2", lease_s=600)  # its holder died: taken over at once
    assert ledger.acquire_lease("queue:1", "other-host:1", lease_s=600)
    assert not ledger.acquire_lease("queue:1", "svc:2", lease_s=600)


def _slice_sum(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return a + 10 * b + 100 * c


@flow(persist_result=False)
def _fanned(n: int) -> list[np.ndarray]:
    cols = [[np.full(2, i + k) for i in range(n)] for k in range(3)]
    return fan_out(_slice_sum, *cols)


@pytest.mark.parametrize("n", [0, 1, FAN_OUT_TASKS - 1, FAN_OUT_TASKS, 3 * FAN_OUT_TASKS + 5])
def test_fan_out_returns_every_registration_in_order(n: int) -> None:
    got = _fanned(n)
    want = [_slice_sum(np.full(2, i), np.full(2, i + 1), np.full(2, i + 2)) for i in range(n)]
    assert len(got) == n and all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


@flow(persist_result=False)
def _proxy(image: np.ndarray, labels: np.ndarray, drawn: dict, dask: bool) -> np.ndarray:
    return proxy_mask(image, labels, drawn, backend="ants-affine", map_fn=fan_out if dask else map).mask


def test_registrations_on_a_dask_cluster_give_the_same_proxy() -> None:
    case = "hippocampus_001"
    image = read_scan(DEMO / "images" / f"{case}.nii.gz").array
    truth = (read_label(DEMO / "labels" / f"{case}.nii.gz")[0] > 0).astype(np.uint8)
    hit = np.flatnonzero(truth.any(axis=(0, 2)))
    drawn = {1: frozenset({int(hit[2]), int(hit[-3])})}
    alone = _proxy(image, truth, drawn, False)
    runner = RoundRunner(PropagationConfig(backend="ants-affine", task_runner="dask", dask_workers=1))
    assert RoundRunner(PropagationConfig()).task_runner() is None  # threads: Prefect's default runner
    try:
        on_dask = _proxy.with_options(task_runner=runner.task_runner())(image, truth, drawn, True)
        assert runner.address().startswith("tcp://")
    finally:
        runner.close()
    assert alone.any() and np.array_equal(on_dask, alone)
