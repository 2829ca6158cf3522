"""The inbox: label files a physician saves into ``inbox/<case>/`` are submitted by a round service.

A file still being written (changed in the last half second) or hidden (a name starting with ``.``) waits.
Every other file is first **claimed** by renaming it into ``inbox/<case>/.claimed/`` under the service's name:
with several services watching one workspace exactly one rename succeeds. Then it is submitted like
``dil submit`` does (same checks, counted once); a refused file is moved to ``inbox/<case>/rejected/`` with a
``.rejected.txt`` beside it saying why, a stored one to ``inbox/<case>/submitted/``. A file a service claimed
and never finished (it died) is handed back to the inbox: at once when that service ran on this machine, after
:data:`CLAIM_STALE_S` otherwise. Submitting again is harmless: a file stored already is counted once.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from dil_core.ledger import LedgerStateError, worker_gone
from dil_core.submission import submit_label_file
from dil_core.validation import SubmissionError
from dil_core.workspace import Workspace

__all__ = ["CLAIM_STALE_S", "claim_file", "hand_back_stale_claims", "submit_inbox"]

_log = logging.getLogger("dil.inbox")

#: An inbox file claimed this long ago by a service that did not finish it is handed back to the inbox.
CLAIM_STALE_S = 120.0
_SEP = "--"


def _tag(worker: str) -> str:
    return worker.replace(":", "-")


def claim_file(path: Path, worker: str) -> Path | None:
    """Rename an inbox file into ``.claimed/`` for ``worker``; None if another service took it first."""
    aside = path.parent / ".claimed"
    aside.mkdir(exist_ok=True)
    target = aside / f"{_tag(worker)}{_SEP}{path.name}"
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return None
    os.utime(target)  # the claim's age, for a hand-back if this service dies
    return target


def hand_back_stale_claims(folder: Path, worker: str, *, stale_s: float = CLAIM_STALE_S) -> list[Path]:
    """Move files other services claimed and did not finish back into ``folder``; the paths handed back."""
    aside = folder / ".claimed"
    if not aside.is_dir():
        return []
    back = []
    for path in aside.iterdir():
        owner, _, name = path.name.partition(_SEP)
        if not name or owner == _tag(worker):
            continue
        host, _, pid = owner.rpartition("-")
        try:
            if time.time() - path.stat().st_mtime > stale_s or worker_gone(f"{host}:{pid}"):
                os.rename(path, folder / name)
                back.append(folder / name)
        except FileNotFoundError:
            continue  # another service handed it back first
    return back


def _submit_one(ctx: Any, ws: Workspace, case: str, path: Path, name: str) -> None:
    folder = path.parent.parent
    try:
        got = submit_label_file(ctx.ledger, ws, ctx.campaign_id, case, path)
    except (SubmissionError, LookupError, LedgerStateError) as err:
        aside = folder / "rejected"
        aside.mkdir(exist_ok=True)
        target = aside / f"{time.strftime('%Y%m%dT%H%M%S')}-{name}"
        shutil.move(str(path), target)
        target.with_name(target.name + ".rejected.txt").write_text(f"{err}\n", encoding="utf-8")
        _log.warning("inbox file %s refused: %s", folder / name, err)
        return
    done = folder / "submitted"
    done.mkdir(exist_ok=True)
    shutil.move(str(path), done / f"round-{got.round}-{name}")


def submit_inbox(ctx: Any, worker: str) -> bool:
    """Submit the label files saved into the workspace's ``inbox/<case>/`` (oldest first); True if any."""
    ws = ctx.workspace
    root = ws.inbox_dir()
    if not root.is_dir():
        return False
    did = False
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        hand_back_stale_claims(folder, worker)
        try:
            files = sorted((f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")),
                           key=lambda f: f.stat().st_mtime)
        except FileNotFoundError:
            continue
        for path in files:
            try:
                if time.time() - path.stat().st_mtime < 0.5:
                    continue  # still being written
            except FileNotFoundError:
                continue  # another service took it
            claimed = claim_file(path, worker)
            if claimed is not None:
                did = True
                _submit_one(ctx, ws, folder.name, claimed, path.name)
    return did
