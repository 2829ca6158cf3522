"""The round service (``dil serve WORKSPACE``): one long-lived process that keeps a workspace's rounds moving.

It keeps the libraries imported and the segmenter, the scans' sessions and their preprocessing warm, and
loops over what the ledger says is to do:

* **inbox**: a label file saved into ``inbox/<case>/`` is submitted like ``dil submit`` does (same checks,
  counted once); a refused file is moved to ``inbox/<case>/rejected/`` with a ``.rejected.txt`` beside it
  saying why, a stored one to ``inbox/<case>/submitted/`` (:mod:`dil.inbox`);
* **rounds**: every submitted round is claimed in the ledger and processed as a Prefect flow run
  (``<case>-round-<k>``, tagged with the campaign and the case) against the workspace's Prefect server or the
  configured ``PREFECT_API_URL``;
* **learning**: a background thread lets the segmenter learn from each finished scan, in the order they
  finished, without holding up other scans' rounds; with ``continual.enabled`` it then trains the candidate
  of :mod:`flows.continual` while nothing else is to do, pausing as soon as a submission arrives;
* **the queue**: once nothing waits to be learned from, queued scans open (at most ``annotator.open_scans``
  at a time) with the newest segmenter's prediction, and an open first request that has received nothing
  yet is refreshed when a newer segmenter exists.

Nothing is held in memory that the ledger does not also hold: a ``kill -9`` at any point and a restart lose
nothing and process nothing twice (a round's claim lapses, the round is processed again from the same state
with the same randomness). A second ``dil serve`` on the same working folder refuses to start (a lock on
``service.lock`` in it, released by the operating system when the process dies).

**Several services on one campaign** (scale-out): each runs with its own working folder (``--work-dir``: its
lock, address and uploads) against one PostgreSQL ledger and a workspace folder every one of them sees
(scans, submissions, requests, checkpoints). A round is claimed in the ledger (a row lock with SKIP LOCKED and a
lease), so two services never process one round, and a dead service's round is taken over: at once when it ran
on this machine, when its lease lapses otherwise. An inbox file is taken by renaming it (:mod:`dil.inbox`).
Opening queued scans is held by the ledger lease ``queue:<campaign>``, learning by ``learn:<campaign>`` (and
the ``gpu`` tag's concurrency limit): one service learns while the others go on with rounds, and every one
predicts with the newest checkpoint the ledger names. Every service registers in ``service/instances/``.

The HTTP API (:mod:`dil.api`) runs in the same process, on 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dil.inbox import submit_inbox
from dil.physician import Campaign
from dil_core.ledger import worker_gone
from dil_core.workspace import Workspace

__all__ = ["RoundService", "ServiceAlreadyRunning", "acquire_service_lock", "check_work_dir"]

_log = logging.getLogger("dil.service")


class ServiceAlreadyRunning(RuntimeError):
    """Another round service holds the workspace."""


def check_work_dir(ws: Workspace, work_dir: Path | None, ledger_url: str | None) -> Path:
    """The service's working folder: ``service/`` of the workspace by default.

    Raises
    ------
    ValueError
        Another working folder on a workspace whose ledger is its own SQLite file: several services need a
        database server (``tracking.ledger_url``).
    """
    if work_dir is None or Path(work_dir).resolve() == ws.service_dir.resolve():
        return ws.service_dir
    if ledger_url is None or ledger_url.startswith("sqlite"):
        raise ValueError(
            f"--work-dir {work_dir}: several round services on one campaign need a PostgreSQL ledger "
            "(tracking.ledger_url: postgresql+psycopg://...); this workspace's ledger is its SQLite file"
        )
    return Path(work_dir).resolve()


def acquire_service_lock(ws: Workspace, work_dir: Path | None = None) -> Any:
    """Hold ``service.lock`` in the working folder (default ``service/``) for this process's life (the
    operating system releases it on any exit).

    Raises
    ------
    ServiceAlreadyRunning
        Another process holds it.
    """
    folder = work_dir or ws.service_dir
    folder.mkdir(parents=True, exist_ok=True)
    fh = open(folder / "service.lock", "a+")  # noqa: SIM115 (held for the process's life)
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        info = folder / "service.json"
        holder = info.read_text(encoding="utf-8").strip() if info.is_file() else "{}"
        raise ServiceAlreadyRunning(
            f"a round service is already running for {ws.root} in {folder} ({holder}); use it, stop it first, "
            "or give this one its own --work-dir"
        ) from None
    return fh


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RoundService:
    """The round service of one workspace (see the module docstring).

    Parameters
    ----------
    ctx : flows.context.CampaignContext
        The workspace's warm context (:func:`flows.context.open_context`).
    port : int
        HTTP port; 0 picks a free one.
    host : str
        Address the HTTP API listens on: 127.0.0.1 (this machine only, the default) or, in a container or on
        a lab network, 0.0.0.0 (the address recorded for clients is then this machine's name).
    poll_s : float
        Seconds between looks at the inbox and the ledger when nothing wakes the service earlier.
    lease_s : float
        How long a round's claim lasts (renewed while it is processed).
    work_dir : Path, optional
        The service's own folder (lock, address, uploads); ``service/`` of the workspace by default.
        Several services on one campaign each need their own (see the module docstring).

    Raises
    ------
    ServiceAlreadyRunning
        Another ``dil serve`` runs in this working folder.
    """

    def __init__(
        self, ctx: Any, *, port: int = 0, poll_s: float = 0.5, lease_s: float = 60.0, lock: Any = None,
        work_dir: Path | None = None, host: str = "127.0.0.1",
    ) -> None:
        self.ctx = ctx
        self.ws = ctx.workspace
        self.work_dir = check_work_dir(self.ws, work_dir, ctx.config.tracking.ledger_url)
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._lock_fh = lock if lock is not None else acquire_service_lock(self.ws, self.work_dir)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._learn_wake = threading.Event()
        self._learning = threading.Lock()
        self._busy = threading.Event()  # a submission arrived or a round runs: continual training pauses
        self._bell = threading.Event()  # the learner thread looks again: scans to learn, or the service fell idle
        self.host = host
        self.port = port or _free_port()
        shown = socket.getfqdn() if host in ("0.0.0.0", "::") else host
        self.url = f"http://{shown}:{self.port}"
        self.camp = Campaign(self.ws, ctx.config, ctx.ledger, ctx.campaign_id)
        from flows.runners import RoundRunner

        self.runner = RoundRunner(ctx.config.propagation)
        self._server: Any = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the HTTP API and the learner; write ``service/service.json`` once the API answers."""
        import uvicorn

        from dil.api import build_app
        from flows.campaign import ensure_gpu_limit, owns_prefect

        ensure_gpu_limit(reset=owns_prefect(self.ctx))  # a killed predecessor's training slot is released
        self._take_over_dead_claims()
        self.warm_up()

        app = build_app(self.camp, self.wake, uploads=self.work_dir / "uploads")
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # the main thread handles signals
        api = threading.Thread(target=self._server.run, name="dil-api", daemon=True)
        learner = threading.Thread(target=self._learn_loop, name="dil-learner", daemon=True)
        self._threads = [api, learner]
        api.start()
        learner.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not api.is_alive():
                raise RuntimeError(f"the HTTP API did not start on {self.host}:{self.port}")
            time.sleep(0.05)
        record = json.dumps({"pid": os.getpid(), "url": self.url, "worker": self.worker,
                             "work_dir": str(self.work_dir)})
        for path in (self.work_dir / "service.json", self._instance_record()):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(record, encoding="utf-8")
            tmp.replace(path)

    def _instance_record(self) -> Path:
        """This service's entry in ``service/instances/`` (how clients find any service of the workspace)."""
        return self.ws.service_dir / "instances" / f"{self.worker.replace(':', '-')}.json"

    def warm_up(self) -> None:
        """Pay the first-use costs before the first submission: the tracking store, the segmenter, the open
        scans' sessions (their images, preprocessing and proxies), the propagation backend's libraries."""
        from dil.tracking import tracker_for
        from dil_core.ledger import ScanState
        from dil_core.propagation import proxy_mask

        with contextlib.suppress(Exception):  # tracking never stops the service (it catches up later)
            tracker_for(self.ctx)
        self.ctx.trainer()
        self.runner.warm_up()  # propagation.task_runner dask: the cluster's workers, ANTs loaded in each
        backend = self.ctx.config.propagation.backend
        for scan in self.ctx.ledger.list_scans(self.ctx.campaign_id,
                                                state=[ScanState.WAITING_FOR_LABELS, ScanState.RUNNING]):
            session = self.ctx.session(scan)
            if not backend.startswith("ants"):  # one tiny propagation loads the backend's libraries
                labels = np.zeros(session.image.shape, np.uint8)
                proxy_mask(session.image, labels, {session.params.axes[0]: frozenset({0})}, backend=backend)
                backend = "ants"  # once is enough

    def _take_over_dead_claims(self) -> None:
        """Release the claims of workers on this machine whose process is gone (a ``kill -9``, a crash).

        Claims of workers elsewhere lapse with their lease.
        """
        for _scan, rnd in self.ctx.ledger.submitted_rounds(self.ctx.campaign_id):
            worker = rnd.claimed_by
            if worker and worker != self.worker and worker_gone(worker):
                self.ctx.ledger.release_round(rnd.id, worker)

    def stop(self) -> None:
        """Stop after the current step; the API and the learner end with it."""
        self._stop.set()
        self._wake.set()
        self._learn_wake.set()
        self._bell.set()
        if self._server is not None:
            self._server.should_exit = True
        for t in self._threads:
            t.join(timeout=60)
        (self.work_dir / "service.json").unlink(missing_ok=True)
        self._instance_record().unlink(missing_ok=True)
        self.runner.close()
        self._lock_fh.close()

    def wake(self) -> None:
        """Look at the inbox and the ledger now."""
        self._busy.set()
        self._wake.set()

    def run_forever(self) -> None:
        """Start, then loop until interrupted (Ctrl-C or SIGTERM)."""
        import signal

        signal.signal(signal.SIGTERM, lambda *_: self._stop.set() or self._wake.set())
        self.start()
        try:
            while not self._stop.is_set():
                if not self.step():
                    if self._busy.is_set():
                        self._busy.clear()  # nothing to do: continual training may go on, from now
                        self._bell.set()
                    self._wake.wait(self.poll_s)
                    self._wake.clear()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # -- one pass ------------------------------------------------------------------------------------------
    def step(self) -> bool:
        """One pass over the inbox, the submitted rounds and the queue; True if anything was done."""
        did = self.submit_inbox()
        did = self.process_submitted() or did
        try:
            did = self.maintain_queue() or did
        except Exception:  # the queue is opened again on the next pass; the service goes on with rounds
            _log.exception("opening or refreshing requests failed; retried on the next pass")
        return did

    def submit_inbox(self) -> bool:
        """Submit the label files saved into ``inbox/<case>/`` (see :mod:`dil.inbox`)."""
        return submit_inbox(self.ctx, self.worker)

    def process_submitted(self) -> bool:
        """Claim and process every submitted round, oldest first, each as a Prefect flow run."""
        from prefect import tags

        from flows.round import round_flow

        did = False
        for scan, rnd in self.ctx.ledger.submitted_rounds(self.ctx.campaign_id):
            if rnd.claimed_by and rnd.claimed_by != self.worker and worker_gone(rnd.claimed_by):
                self.ctx.ledger.release_round(rnd.id, rnd.claimed_by)  # its service died: take it over now
            if not self.ctx.ledger.claim_round(rnd.id, self.worker, lease_s=self.lease_s):
                continue
            self._busy.set()  # continual training pauses before its next step
            did = True
            try:
                with self._renewing(rnd.id), self.ctx.lock, tags(f"campaign:{self.ctx.config.name}",
                                                                    f"case:{scan.case_id}"):
                    options: dict[str, Any] = {"flow_run_name": f"{scan.case_id}-round-{rnd.number}"}
                    runner = self.runner.task_runner()
                    if runner is not None:
                        options["task_runner"] = runner
                    round_flow.with_options(**options)(str(self.ws.root), scan.case_id, learn=False)
            except Exception:
                _log.exception("round %s of %s failed; it stays submitted for another try", rnd.number, scan.case_id)
                self.ctx.ledger.release_round(rnd.id, self.worker)
                self.ctx.forget(scan.id)
                self.ctx.drop_trainer()
        if did:
            self._learn_wake.set()
            self._bell.set()
        return did

    @contextlib.contextmanager
    def _renewing(self, round_id: int) -> Iterator[None]:
        """Renew the claim of ``round_id`` every third of its lease while the round is processed."""
        done = threading.Event()

        def renew() -> None:
            while not done.wait(self.lease_s / 3):
                self.ctx.ledger.claim_round(round_id, self.worker, lease_s=self.lease_s)

        beat = threading.Thread(target=renew, name="dil-claim", daemon=True)
        beat.start()
        try:
            yield
        finally:
            done.set()
            beat.join()

    def maintain_queue(self) -> bool:
        """Open queued scans and refresh untouched first requests, once nothing waits to be learned from."""
        from flows.campaign import fill_queue, refresh_untouched

        if self.ctx.ledger.scans_to_learn(self.ctx.campaign_id):
            self._learn_wake.set()
            self._bell.set()
            return False
        lease = f"queue:{self.ctx.campaign_id}"  # one service opens and refreshes at a time
        if not self.ctx.ledger.acquire_lease(lease, self.worker, lease_s=120.0):
            return False
        try:
            with self.ctx.lock:
                latest = self.ctx.latest_model_tag()
                if latest is not None:
                    self.ctx.prune_checkpoints(keep=latest)
                refreshed = refresh_untouched(self.ctx)
                opened = fill_queue(self.ctx)
        finally:
            self.ctx.ledger.release_lease(lease, self.worker)
        return bool(refreshed or opened)

    def _pause_training(self) -> bool:
        return self._stop.is_set() or self._busy.is_set() or self._learn_wake.is_set()

    def _learn_loop(self) -> None:
        from flows.continual import ContinualTraining
        from flows.round import learn_flow

        continual = ContinualTraining(self.ctx, self.worker) if self.ctx.config.continual.enabled else None
        while not self._stop.is_set():
            self._bell.wait(self.poll_s * 4)
            self._bell.clear()
            self._learn_wake.clear()
            try:
                if self.ctx.ledger.scans_to_learn(self.ctx.campaign_id):
                    learn_flow(str(self.ws.root))
                    self._wake.set()  # the queue may open now
                if continual is not None and not self._pause_training():
                    continual.run(self._pause_training)  # between submissions, until one arrives
            except Exception:
                _log.exception("learning from finished scans failed; retried on the next pass")
                time.sleep(self.poll_s)
        if continual is not None:
            with contextlib.suppress(Exception):
                continual.save()
