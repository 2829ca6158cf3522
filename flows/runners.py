"""Where a round's per-slice registrations run: Prefect's thread pool, or a Dask cluster (prefect-dask).

An ``ants*`` propagation backend runs one registration per undrawn slice (Algorithm 2), each a task
(:func:`tasks.rounds.fan_out`). With ``propagation.task_runner: dask`` the round flow runs on a
``DaskTaskRunner``: against the scheduler at ``propagation.dask_address`` when given (a cluster shared by
every worker of the campaign), else against a local cluster of ``propagation.dask_workers`` single-threaded
worker processes that a long-lived process (the round service) starts once and keeps, so that no round pays
a cluster's start-up or the workers' first import of ANTs.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from dil_core.config import PropagationConfig

__all__ = ["RoundRunner"]


class RoundRunner:
    """The task runner of a process's round flow runs (None: Prefect's default thread pool)."""

    def __init__(self, config: PropagationConfig) -> None:
        self.config = config
        self._cluster: Any = None

    @property
    def uses_dask(self) -> bool:
        return self.config.task_runner == "dask"

    def address(self) -> str:
        """The Dask scheduler's address (the local cluster is started on first use)."""
        if self.config.dask_address:
            return self.config.dask_address
        if self._cluster is None:
            from distributed import LocalCluster

            # one thread per worker process: ITK's own threads are 1 per process too (dil.environment), so the
            # cluster's processes are what runs registrations in parallel
            os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
            self._cluster = LocalCluster(
                n_workers=self.config.dask_workers, threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=40,
            )
        return str(self._cluster.scheduler_address)

    def task_runner(self) -> Any:
        """A fresh ``DaskTaskRunner`` on the cluster (a runner serves one flow run), or None."""
        if not self.uses_dask:
            return None
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=self.address())

    def warm_up(self) -> None:
        """Start the local cluster and load the registration libraries in each of its workers."""
        if not self.uses_dask:
            return
        from distributed import Client

        with Client(self.address(), timeout=60) as client:
            client.run(_import_ants)

    def close(self) -> None:
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()
            self._cluster = None


def _import_ants() -> None:
    import ants  # noqa: F401
