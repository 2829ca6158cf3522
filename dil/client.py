"""Talking to a workspace's running round service over its HTTP API, with the standard library only.

What the thin commands use when a service runs: ``dil submit`` hands the file to the service (which checks
and stores it with exactly the code it uses for the inbox and uploads), so the command needs neither the
ledger's database driver nor the image libraries, and answers in a fraction of a second.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from dil_core.workspace import Workspace

__all__ = ["ServiceError", "service_url", "upload", "wait_for_next", "wake"]


class ServiceError(ValueError):
    """The service refused a request; the message is its reason."""


def service_url(ws: Workspace) -> str | None:
    """The base URL of a running round service of the workspace (the default one first), or None."""
    records = [ws.service_dir / "service.json"]
    instances = ws.service_dir / "instances"
    if instances.is_dir():
        records += sorted(instances.glob("*.json"))
    for record in records:
        try:
            url = str(json.loads(record.read_text(encoding="utf-8"))["url"])
            with urllib.request.urlopen(f"{url}/api/health", timeout=1.0) as resp:
                if resp.status == 200:
                    return url
        except (OSError, ValueError, KeyError):
            continue
    return None


def _call(url: str, method: str = "GET", data: bytes | None = None, timeout: float = 60.0) -> Any:
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        try:
            detail = json.loads(err.read()).get("detail")
        except ValueError:
            detail = None
        message = detail.get("message") if isinstance(detail, dict) else detail
        raise ServiceError(str(message or err)) from err


def wake(ws: Workspace) -> bool:
    """Tell the round service new work is in the ledger; False when no service answers."""
    url = service_url(ws)
    if url is None:
        return False
    try:
        _call(f"{url}/api/wake", "POST", b"", timeout=2.0)
    except (OSError, ServiceError):
        return False
    return True


def upload(url: str, case_id: str, label_file: Path) -> dict[str, Any]:
    """Submit a label file through the service; its answer (round, new slices, next request).

    Raises
    ------
    ServiceError
        The file was refused (the message says why); nothing was stored.
    """
    query = urllib.parse.urlencode({"filename": label_file.name})
    path = urllib.parse.quote(case_id, safe="")
    return dict(_call(f"{url}/api/scans/{path}/submissions?{query}", "POST", label_file.read_bytes()))


def wait_for_next(url: str, case_id: str, round_number: int, *, timeout: float = 600.0) -> dict[str, Any]:
    """Wait until the scan's round ``round_number`` is processed; its status row (phase, request folder)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = {r["case"]: r for r in _call(f"{url}/api/status")["scans"]}
        row = rows[case_id]
        if row["phase"].startswith("done") or (row["round"] or 0) > round_number and row["phase"].startswith("open"):
            return dict(row)
        if time.monotonic() > deadline:
            raise TimeoutError(f"round {round_number} of {case_id!r} was not processed within {timeout:.0f} s")
        time.sleep(0.1)
