"""The campaign workspace: one folder holding the ledger, requests, inbox, submissions, state and stores.

Plain paths; nothing here reads or writes. The service, the CLI and the flows all name a workspace's files
through :class:`Workspace`, so the layout is written down once::

    campaign.yaml            the validated config the campaign runs with
    ledger.db                the ledger (SQLite; PostgreSQL by tracking.ledger_url)
    requests/<case>/round-<k>/   labeling requests (request.json, mask, proxy and prediction label maps)
    inbox/<case>/            label files a physician saves here are submitted by the round service
    submissions/<case>/      stored submissions, content-addressed, immutable
    masks/<case>_seg.nii.gz  final masks
    state/                   checkpoints and per-scan arrays (F_prev, predictions)
    prefect/, mlflow/        the embedded Prefect home and MLflow store
    service/                 the round service's lock, address and log
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Workspace"]


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

    @property
    def service_dir(self) -> Path:
        return self.root / "service"

    def requests_dir(self, case_id: str, round_number: int | None = None) -> Path:
        folder = self.root / "requests" / case_id
        return folder if round_number is None else folder / f"round-{round_number}"

    def submissions_dir(self, case_id: str) -> Path:
        return self.root / "submissions" / case_id

    def inbox_dir(self, case_id: str | None = None) -> Path:
        """Where a physician saves label files for the round service to submit (one folder per scan)."""
        return self.root / "inbox" if case_id is None else self.root / "inbox" / case_id

    def state_dir(self, case_id: str | None = None) -> Path:
        return self.root / "state" if case_id is None else self.root / "state" / "scans" / case_id

    def checkpoint(self, tag: str) -> Path:
        return self.root / "state" / "checkpoints" / f"trainer-{tag}.pt"

    def continual_gates(self) -> Path:
        """Every gate of the continual learner, one JSON line each (``flows/continual.py``)."""
        return self.root / "state" / "continual-gates.jsonl"

    def masks_dir(self) -> Path:
        return self.root / "masks"

    def final_mask(self, case_id: str) -> Path:
        return self.masks_dir() / f"{case_id}_seg.nii.gz"

    def exists(self) -> bool:
        return self.config_file.is_file()
