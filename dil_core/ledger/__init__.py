"""The campaign ledger: one SQL database holding all campaign state (DESIGN.md, "Contracts: Ledger").

SQLite in the workspace by default (``<workspace>/ledger.db``, WAL, foreign keys on), PostgreSQL by URL
(``postgresql+psycopg://...``). Tables: campaigns, scans, rounds, submissions, labor, stop_decisions,
model_versions, and schema_version. Files are not stored in the database: :func:`store_submission_file` puts
a submitted label file at a content-addressed path first, then :meth:`Ledger.record_submission` records its
path, hash, drawn slices and labor in one transaction.

Examples
--------
>>> ledger = Ledger.open(workspace)                                    # doctest: +SKIP
>>> ledger.create_campaign("hippo", {"rho": 0.85}, exist_ok=True)     # doctest: +SKIP
>>> scan = ledger.add_scan("hippo", "hippocampus_001", image, geometry)  # doctest: +SKIP
>>> rnd = ledger.open_round(scan, {0: [10, 20], 2: [15]}, planes={0: "sagittal", 2: "axial"})  # doctest: +SKIP
>>> sha, path = store_submission_file(label_file, workspace / "submissions")  # doctest: +SKIP
>>> sub, created = ledger.record_submission(scan, rnd, sha, path, label_file.name, drawn, labor)  # doctest: +SKIP
"""

from __future__ import annotations

from dil_core.ledger._engine import LEDGER_FILENAME
from dil_core.ledger._orm import SCHEMA_VERSION
from dil_core.ledger._work import worker_gone
from dil_core.ledger.core import Clock, Ledger, utc_now
from dil_core.ledger.errors import (
    LedgerError,
    LedgerNotFoundError,
    LedgerSchemaError,
    LedgerStateError,
    RecordNotFoundError,
)
from dil_core.ledger.files import file_suffix, sha256_file, store_submission_file
from dil_core.ledger.records import (
    SCAN_TRANSITIONS,
    TERMINAL_STATES,
    CampaignRecord,
    LaborRow,
    ModelVersionRecord,
    RoundRecord,
    RoundStatus,
    ScanLabor,
    ScanRecord,
    ScanState,
    StatusSummary,
    StopRecord,
    SubmissionRecord,
)

__all__ = [
    "LEDGER_FILENAME",
    "SCAN_TRANSITIONS",
    "SCHEMA_VERSION",
    "TERMINAL_STATES",
    "CampaignRecord",
    "Clock",
    "LaborRow",
    "Ledger",
    "LedgerError",
    "LedgerNotFoundError",
    "LedgerSchemaError",
    "LedgerStateError",
    "ModelVersionRecord",
    "RecordNotFoundError",
    "RoundRecord",
    "RoundStatus",
    "ScanLabor",
    "ScanRecord",
    "ScanState",
    "StatusSummary",
    "StopRecord",
    "SubmissionRecord",
    "file_suffix",
    "sha256_file",
    "store_submission_file",
    "utc_now",
    "worker_gone",
]
