"""A scripted physician working many scans at once through the HTTP API of one or more round services.

It uses only what a physician's tool has: ``GET /api/requests``, the request folder's ``request.json`` and
``mask_seg.nii.gz``, ``POST /api/scans/<case>/submissions`` and ``/accept``. Every open request is answered
as soon as it appears (Dice(ground truth, mask) >= the request's quality bar: accept; else the requested
slices drawn from the ground truth), each submission to the next live service in turn, so that the services'
rounds of different scans overlap. Used by the scale-out test and ``bench/scale_out.py``.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dil_core.io import read_label, write_label
from dil_core.metrics import dice


REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"


def physicians_campaign(folder: Path, cases: Sequence[str], *, name: str, small: bool) -> Path:
    """configs/demo.yaml as a physicians' campaign on demo ``cases``, all open at once, no seed scans, on the
    CPU (``small``: a small segmenter that learns 4 steps per scan); the config file written in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["case_id,image"] + [f"{c},{DEMO / 'images' / f'{c}.nii.gz'}" for c in cases]
    (folder / "cohort.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text(encoding="utf-8"))
    data.update(name=name, cohort="cohort.csv", workspace="ws")
    data["annotator"] = {"kind": "human", "open_scans": len(cases)}
    data["stopping"].update(rule="accept", seed_scans=0)
    data["training"]["device"] = "cpu"
    if small:
        data["training"].update(channels=[4, 8, 16], buffer_b=4, buffer_b_star=8, replay_m=1)
        data["refine"]["end_steps"] = 4
    path = folder / "campaign.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def call(url: str, path: str, body: bytes | None = None, *, timeout: float = 60.0) -> Any:
    req = urllib.request.Request(url + path, data=body, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"{}")


def draw(request: dict[str, Any], truth: np.ndarray, geometry: Any, out: Path) -> Path:
    """The label file of a request: exactly its slices, from the ground truth."""
    labels = np.zeros(truth.shape, np.uint8)
    for s in request["slices"]:
        index = s["index"]
        if index is None:  # "the first / last slice showing the target": the physician scrolls to it
            hit = np.flatnonzero(truth.any(axis=tuple(a for a in range(3) if a != s["axis"])))
            index = int(hit[0] if s["find"] == "first" else hit[-1])
        sl: list[Any] = [slice(None)] * 3
        sl[s["axis"]] = index
        labels[tuple(sl)] = truth[tuple(sl)]
    return write_label(out, labels, geometry)


def truths_of(cohort: Sequence[tuple[str, Path]]) -> dict[str, tuple[np.ndarray, Any]]:
    out = {}
    for case, label in cohort:
        arr, geometry = read_label(label)
        out[case] = ((arr > 0).astype(np.uint8), geometry)
    return out


def work_concurrently(
    urls: Callable[[], list[str]], workspace: Path, truths: dict[str, tuple[np.ndarray, Any]], *,
    timeout: float = 1800.0, poll_s: float = 0.1,
) -> dict[str, Any]:
    """Answer every open request of every scan until all scans are done.

    ``urls`` returns the base URLs of the services alive now (asked again after a failed call). Returns the
    submissions made (case, round, service, seconds from the upload to the scan's next request) and accepts.
    """
    answered: dict[tuple[str, int], dict[str, Any]] = {}
    accepted: list[str] = []
    turn = 0
    tmp = Path(tempfile.mkdtemp(prefix="scripted-physician-"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = urls()
        if not live:
            raise RuntimeError("no round service answers")
        try:
            status = call(live[0], "/api/status")
            requests = call(live[0], "/api/requests")
        except (OSError, urllib.error.URLError):
            time.sleep(poll_s)
            continue
        rows = {r["case"]: r for r in status["scans"]}
        now = time.monotonic()
        for key, sub in answered.items():  # a submission is done once its scan moved past its round
            row = rows[key[0]]
            if sub["next_s"] is None and (row["phase"].startswith("done") or (row["round"] or 0) > key[1]):
                sub["next_s"] = now - sub["t"]
        if all(r["phase"].startswith("done") for r in rows.values()):
            break
        for req in requests:
            case, number = req["case"], req["round"]
            if (case, number) in answered or case in accepted:
                continue
            folder = workspace / "requests" / case / f"round-{number}"
            request = json.loads((folder / "request.json").read_text(encoding="utf-8"))
            truth, geometry = truths[case]
            mask, _ = read_label(folder / "mask_seg.nii.gz")
            if mask.any() and dice(truth, mask > 0) >= request["quality_bar"]:
                call(live[0], f"/api/scans/{case}/accept", b"")
                accepted.append(case)
                continue
            label = draw(request, truth, geometry, tmp / f"{case}-round-{number}.nii.gz")
            for _ in range(len(live) + 1):  # the next live service; another one if it does not answer
                url = live[turn % len(live)]
                turn += 1
                try:
                    call(url, f"/api/scans/{case}/submissions?filename={label.name}", label.read_bytes())
                except (OSError, urllib.error.URLError):
                    live = urls() or live
                    continue
                answered[(case, number)] = {"case": case, "round": number, "service": url,
                                            "t": time.monotonic(), "next_s": None}
                break
        time.sleep(poll_s)
    else:
        raise TimeoutError(f"the scans were not all done within {timeout:.0f} s")
    return {"submissions": [{k: v for k, v in s.items() if k != "t"} for s in answered.values()],
            "accepted": accepted, "status": status}
