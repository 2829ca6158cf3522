"""The process environment every ``dil`` command prepares before Prefect or MLflow is imported.

Telemetry off in everything the project starts, Prefect's home inside the workspace, and the workspace's
Prefect server (``dil server start``, or the one the round service started) when one is running. Importing
this module changes nothing.
"""

from __future__ import annotations

import os

from dil.server import server_url
from dil.telemetry import TELEMETRY_OFF
from dil_core.workspace import Workspace

__all__ = ["TELEMETRY_OFF", "prepare_environment"]

#: Set by the user before any ``dil`` code ran (then it wins over the workspace's).
_USER_PREFECT_HOME = os.environ.get("PREFECT_HOME")


def prepare_environment(workspace: Workspace | None, *, prefect_api_url: str | None = None) -> None:
    """Telemetry off; Prefect home (and its embedded database) inside the workspace.

    Values the user already set are kept, so a configured ``PREFECT_API_URL`` wins, then the campaign
    config's ``tracking.prefect_api_url`` (``prefect_api_url``), then the workspace's running local server.
    """
    for key, value in TELEMETRY_OFF.items():
        os.environ[key] = value
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    if "PREFECT_API_URL" not in os.environ and prefect_api_url:
        os.environ["PREFECT_API_URL"] = prefect_api_url
    if workspace is not None:
        os.environ["PREFECT_HOME"] = _USER_PREFECT_HOME or str(workspace.prefect_home)
        if "PREFECT_API_URL" not in os.environ:
            url = server_url(workspace)
            if url is not None:  # the workspace's local server: no start-up to pay
                os.environ["PREFECT_API_URL"] = url
