"""Telemetry off in everything the project starts (DESIGN.md): the variables, in one place."""

from __future__ import annotations

__all__ = ["TELEMETRY_OFF"]

#: Set in every process DIL runs or starts (MLflow needs the word ``true``).
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
