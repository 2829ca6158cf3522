"""The campaign workspace: one folder holding the ledger, requests, submissions, state, Prefect and MLflow.

Importing this module changes nothing. :func:`prepare_environment` must run before Prefect or MLflow is
imported: it turns telemetry off and points Prefect's home inside the workspace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


@dataclass(frozen=True)
class Workspace:
    """Paths inside one campaign's workspace folder."""

    root: Path

    @property
    def ledger_url(self) -> str:
        return f"sqlite:///{self.root / 'ledger.db'}"

    @property
    def config_file(self) -> Path:
        return self.root / "campaign.yaml"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    def requests_dir(self, case_id: str, round_number: int) -> Path:
        return self.root / "requests" / case_id / f"round-{round_number}"

    def submissions_dir(self, case_id: str) -> Path:
        return self.root / "submissions" / case_id

    def inbox_dir(self, case_id: str) -> Path:
        """Where the simulated annotator writes its label files before submitting them."""
        return self.root / "inbox" / case_id

    def state_dir(self, case_id: str | None = None) -> Path:
        return self.root / "state" if case_id is None else self.root / "state" / "scans" / case_id

    def checkpoint(self, tag: str) -> Path:
        return self.root / "state" / "checkpoints" / f"trainer-{tag}.pt"

    def masks_dir(self) -> Path:
        return self.root / "masks"

    def exists(self) -> bool:
        return self.config_file.is_file()


def prepare_environment(workspace: Workspace | None) -> None:
    """Telemetry off; Prefect home (and its embedded database) inside the workspace.

    Values the user already set are kept, so a configured Prefect server (``PREFECT_API_URL``) wins.
    """
    for key, value in TELEMETRY_OFF.items():
        os.environ[key] = value
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    if workspace is not None:
        workspace.prefect_home.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("PREFECT_HOME", str(workspace.prefect_home))
        if "PREFECT_API_URL" not in os.environ:
            from dil.server import server_url

            url = server_url(workspace)
            if url is not None:  # the workspace's local server (dil server start): no start-up to pay
                os.environ["PREFECT_API_URL"] = url
