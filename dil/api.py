"""The round service's HTTP API on 127.0.0.1: what a 3D Slicer module, a web viewer or a script talks to.

Endpoints (JSON unless said otherwise; every path is under ``/api``):

``GET  /api/health``                                  ``{"status": "ok"}`` while the service runs
``GET  /api/status``                                  the campaign: per scan its phase, rounds, labor, minutes;
                                                      the newest segmenter and the scans it is learning from;
                                                      the continual learner's steps, gates and promotions
``GET  /api/requests``                                open labeling requests: case, round, slices, files
``GET  /api/requests/{case}/{round}/{file}``          a request's file: ``request.json``, ``mask_seg.nii.gz``,
                                                      ``proxy_seg.nii.gz``, ``prediction_seg.nii.gz``
``GET  /api/scans/{case}/image``                      the scan itself (its file as it was queued)
``POST /api/scans/{case}/submissions?filename=F``     upload a label file (the request body, raw bytes; ``F``
                                                      gives its format by its suffix, e.g. ``drawn.nii.gz``);
                                                      201 stored, 200 the same file again (counted once), 422
                                                      refused with the reason; ``&wait=true`` answers once the
                                                      round is processed, with the next request
``POST /api/scans/{case}/accept``                     accept the mask of the scan's open request as final
``POST /api/wake``                                    new work is in the ledger (``dil submit`` calls it)

A refused upload stores nothing. Uploads are written under the service's ``uploads/`` folder (``service/uploads/``
by default) and removed once submitted.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse

from dil.physician import Campaign, continual_status, scan_rows, wait_for_next
from dil_core.ledger import RoundStatus
from dil_core.ledger.files import file_suffix
from dil_core.requests import read_request
from dil_core.submission import accept_request, submit_label_file
from dil_core.validation import SubmissionError

__all__ = ["MAX_UPLOAD_BYTES", "build_app"]

#: Largest upload taken (bytes): a label volume of a 512 x 512 x 2000 scan at one byte per voxel.
MAX_UPLOAD_BYTES = 512 * 512 * 2000
_REQUEST_FILES = ("request.json", "mask_seg.nii.gz", "proxy_seg.nii.gz", "prediction_seg.nii.gz")


def _scan(camp: Campaign, case: str) -> Any:
    scan = camp.ledger.find_scan(camp.campaign_id, case)
    if scan is None:
        raise HTTPException(404, f"the campaign has no scan {case!r}")
    return scan


def _open_requests(camp: Campaign) -> list[dict[str, Any]]:
    out = []
    for scan in sorted(camp.ledger.list_scans(camp.campaign_id), key=lambda s: s.position):
        rnd = camp.ledger.current_round(scan.id)
        if rnd is None or rnd.status is not RoundStatus.REQUESTED:
            continue
        folder = camp.workspace.requests_dir(scan.case_id, rnd.number)
        try:
            request = read_request(folder)
        except ValueError:
            continue  # being written
        files = [f for f in _REQUEST_FILES if (folder / f).is_file()]
        out.append({
            "case": scan.case_id, "round": rnd.number, "slices": request["slices"],
            "quality_bar": request.get("quality_bar"), "segmenter": request.get("segmenter"),
            "files": {f: f"/api/requests/{scan.case_id}/{rnd.number}/{f}" for f in files},
            "image": f"/api/scans/{scan.case_id}/image",
        })
    return out


def build_app(camp: Campaign, wake: Callable[[], None], *, uploads: Path | None = None) -> FastAPI:
    """The API of one workspace; ``wake`` tells the service's loop that work has arrived; ``uploads`` is where
    an upload is written before it is checked (default ``service/uploads/``)."""
    app = FastAPI(title="DIL round service", version="1", docs_url="/api/docs", openapi_url="/api/openapi.json")
    uploads = uploads or camp.workspace.service_dir / "uploads"

    @app.get("/api/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "campaign": camp.config.name}

    @app.post("/api/wake", status_code=202)
    def wake_up() -> dict[str, str]:
        wake()
        return {"status": "woken"}

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        rows = scan_rows(camp)
        return {
            "campaign": camp.config.name, "scans": rows,
            "mean_labor": sum(r["labor"] for r in rows) / len(rows) if rows else 0.0,
            "segmenter": camp.ledger.latest_model_tag(camp.campaign_id),
            "learning": [s.case_id for s in camp.ledger.scans_to_learn(camp.campaign_id)],
            "continual": continual_status(camp),
        }

    @app.get("/api/requests")
    def requests() -> list[dict[str, Any]]:
        return _open_requests(camp)

    @app.get("/api/requests/{case}/{number}/{name}")
    def request_file(case: str, number: int, name: str) -> FileResponse:
        _scan(camp, case)
        if name not in _REQUEST_FILES:
            raise HTTPException(404, f"a request holds {', '.join(_REQUEST_FILES)}; not {name!r}")
        path = camp.workspace.requests_dir(case, number) / name
        if not path.is_file():
            raise HTTPException(404, f"request {number} of {case!r} has no {name}")
        return FileResponse(path, filename=name)

    @app.get("/api/scans/{case}/image")
    def image(case: str) -> FileResponse:
        path = Path(_scan(camp, case).image_path)
        if not path.is_file():
            raise HTTPException(404, f"the image of {case!r} is not at {path} any more")
        return FileResponse(path, filename=path.name)

    @app.post("/api/scans/{case}/submissions")
    async def upload(case: str, request: Request, filename: str = "labels.nii.gz", wait: bool = False) -> JSONResponse:
        _scan(camp, case)
        suffix = file_suffix(filename)
        if not suffix:
            raise HTTPException(422, f"filename {filename!r} has no label-file suffix (.nii.gz, .nii, .nrrd, .mha)")
        uploads.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=uploads)
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_UPLOAD_BYTES:
                        raise HTTPException(413, f"upload larger than {MAX_UPLOAD_BYTES} bytes")
                    out.write(chunk)
            named = Path(tmp).with_name(f"{Path(tmp).stem.split('.')[0]}-{Path(filename).name}")
            os.replace(tmp, named)
            tmp = str(named)
            try:
                got = await asyncio.to_thread(
                    submit_label_file, camp.ledger, camp.workspace, camp.campaign_id, case, Path(tmp)
                )
            except SubmissionError as err:
                raise HTTPException(422, {"problem": err.problem, "message": str(err)}) from err
        finally:
            Path(tmp).unlink(missing_ok=True)
        wake()
        body: dict[str, Any] = {
            "case": case, "round": got.round, "stored": got.created, "submission": got.submission_id,
            "new": got.new, "again": got.again, "empty": got.empty, "next_request": str(got.next_request),
        }
        if wait:
            body["next"] = await asyncio.to_thread(wait_for_next, camp, case, got.round)
        return JSONResponse(body, status_code=201 if got.created else 200)

    @app.post("/api/scans/{case}/accept")
    def accept(case: str) -> dict[str, Any]:
        _scan(camp, case)
        try:
            path = accept_request(camp.ledger, camp.workspace, camp.campaign_id, case)
        except ValueError as err:
            raise HTTPException(409, str(err)) from err
        wake()
        return {"case": case, "state": "passed", "final_mask": str(path)}

    return app
