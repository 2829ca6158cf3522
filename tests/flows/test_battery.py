"""Bad input and crashes, tried as a hostile user would, on the demo scans. One test per trial:

====  ============================================================  ==========================================
 #    trial                                                         expected
====  ============================================================  ==========================================
 1    ``.nhdr`` + ``.raw`` / ``.mhd`` + ``.raw`` submissions         stored as one self-contained file; the
                                                                    round runs
 2    the file changes between the check and the copy               the checked bytes are the stored bytes
 3    NaN / infinity in a float NIfTI (ITK reads them as 0)         refused, naming the values
 4    a gzip bomb (a valid header, gigabytes of zeros after it)     only the scan's size is ever inflated
 5    two processes on one round; identical concurrent submits      processed once, one stop decision
 6    ``dil resume`` with one scan that cannot be processed         every other scan processed; exit 1
 7    refused files, an accept the ledger refuses                   no copies, no mask left behind
 8    a scan at its quota                                           has a final mask; can be accepted
 9    ``dil init`` with a bad cohort                                nothing written; a corrected init works
 10   a case id of 300 bytes in 100 characters                      refused by name at init
 11   an unreachable PostgreSQL ledger                              one line, no files left behind
 12   ``dil server start`` killed before the server answered        the next start finds it, no second server
 13   workspace permissions; a password in a config                 0600 / 0700; the password refused
 14   ``tracking.prefect_api_url``                                  used by every command that runs flows
====  ============================================================  ==========================================
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from dil.cli import main
from dil_core.geometry import Geometry
from dil_core.io import read_label, write_label
from dil_core.ledger import Ledger
from tests.flows.conftest import REPO, small_config
from tests.flows.test_campaign import _draw_request

DEMO = REPO / "data" / "demo"
CASE = "hippocampus_001"
HUMAN = {"annotator": {"kind": "human"}, "stopping": {"rule": "accept"}, "guidance": {"first_round": "uniform"}}


def _human(tmp_path: Path, n: int = 1, **changes: Any) -> Path:
    cfg = small_config(tmp_path, n, **{**HUMAN, **changes})
    assert main(["campaign", "run", str(cfg)]) == 0
    return tmp_path / "ws"


def _ledger(ws: Path) -> tuple[Ledger, int]:
    ledger = Ledger.open(f"sqlite:///{ws / 'ledger.db'}", create=False)
    return ledger, ledger.get_campaign("test").id


def _scan(ws: Path, case: str = CASE) -> Any:
    ledger, camp = _ledger(ws)
    return ledger.find_scan(camp, case)


# 1 ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("header", "data"), [(".nhdr", ".raw"), (".mhd", ".raw")])
def test_detached_header_submissions_are_stored_whole(tmp_path: Path, header: str, data: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ws = _human(tmp_path)
    labels, geometry = read_label(_draw_request(ws, CASE, 1, tmp_path))
    image = sitk.GetImageFromArray(np.transpose(labels, (2, 1, 0)).copy())
    geometry.apply_to(image)
    detached = tmp_path / "drawn" / f"labels{header}"
    detached.parent.mkdir()
    sitk.WriteImage(image, str(detached))
    assert any(p.suffix == data for p in detached.parent.iterdir())  # the voxels are in a file of their own
    assert main(["submit", str(ws), CASE, str(detached)]) == 0
    shutil.rmtree(detached.parent)  # the physician's files go away; the stored submission must not need them
    assert main(["resume", str(ws)]) == 0
    capsys.readouterr()
    ledger, _ = _ledger(ws)
    (sub,) = ledger.list_submissions(_scan(ws).id)
    assert Path(sub.stored_path).is_file() and Path(sub.stored_path).suffix in (".nrrd", ".mha")
    assert ledger.current_round(_scan(ws).id).number == 2  # the round ran: the scan is not stuck


# 2 ------------------------------------------------------------------------------------------------------------
def test_the_checked_copy_is_the_stored_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dil_core.submission as submission

    ws = _human(tmp_path)
    label = _draw_request(ws, CASE, 1, tmp_path)
    original = label.read_bytes()
    real = submission.validate_submission
    seen: list[Path] = []

    def changing(path: Any, geometry: Any) -> Any:
        seen.append(Path(path))
        label.write_bytes(b"changed after the copy")  # the physician's tool rewrites the file meanwhile
        return real(path, geometry)

    monkeypatch.setattr(submission, "validate_submission", changing)
    assert main(["submit", str(ws), CASE, str(label)]) == 0
    (sub,) = _ledger(ws)[0].list_submissions(_scan(ws).id)
    assert seen and seen[0].parent == ws / "submissions" / CASE and seen[0] != label
    assert Path(sub.stored_path).read_bytes() == original


# 3 ------------------------------------------------------------------------------------------------------------
def test_nan_and_infinity_in_a_nifti_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = _human(tmp_path)
    labels, geometry = read_label(_draw_request(ws, CASE, 1, tmp_path))
    values = labels.astype(np.float32)
    values[0, 0, 0], values[1, 1, 1] = np.nan, np.inf
    image = sitk.GetImageFromArray(np.transpose(values, (2, 1, 0)).copy())
    geometry.apply_to(image)
    sitk.WriteImage(image, str(tmp_path / "nan.nii.gz"))
    assert not np.isnan(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "nan.nii.gz")))).any()  # ITK: 0
    assert main(["submit", str(ws), CASE, str(tmp_path / "nan.nii.gz")]) == 1
    assert "2 NaN or infinite" in capsys.readouterr().err
    assert _ledger(ws)[0].list_submissions(_scan(ws).id) == []


# 4 ------------------------------------------------------------------------------------------------------------
def test_a_gzip_bomb_is_never_inflated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dil_core import validation

    labels, geometry = read_label(DEMO / "labels" / f"{CASE}.nii.gz")
    plain = tmp_path / "plain.nii"
    write_label(plain, (labels > 0).astype(np.uint8), geometry)
    body = plain.read_bytes()
    bomb = tmp_path / "bomb.nii.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as out:
        out.write(body)
        zeros = bytes(1 << 20)
        for _ in range(256):  # 256 MiB of zeros after the voxels, about 256 KiB compressed
            out.write(zeros)
    assert bomb.stat().st_size < 2 << 20
    read = {"bytes": 0}
    real_open = gzip.open

    class Counting:
        def __init__(self, stream: Any) -> None:
            self.stream = stream

        def read(self, n: int = -1) -> bytes:
            chunk = self.stream.read(n)
            read["bytes"] += len(chunk)
            return chunk

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.stream.close()

    hdr = bytearray(body[:352])
    struct.pack_into("<8h", hdr, 40, 3, 1000, 1000, 1000, 1, 1, 1, 1)
    big = tmp_path / "big.nii.gz"
    with gzip.open(big, "wb") as out:
        out.write(bytes(hdr))
    import dil_core.nifti as nifti
    monkeypatch.setattr(nifti.gzip, "open", lambda *a, **k: Counting(real_open(*a, **k)))
    mask = validation.validate_submission(bomb, geometry)
    assert mask.shape == labels.shape
    assert read["bytes"] <= len(body) + 1024  # the header's size, never the 256 MiB behind it
    # a header that promises more voxels than the scan has is refused before any voxel is read
    with pytest.raises(validation.SubmissionError, match="size"):
        validation.validate_submission(big, geometry)


# 5 ------------------------------------------------------------------------------------------------------------
def test_one_round_is_processed_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import datetime, timedelta, timezone

    from dil_core.ledger._orm import RoundRow

    ws = _human(tmp_path)
    label = _draw_request(ws, CASE, 1, tmp_path)
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(main(["submit", str(ws), CASE, str(label)])))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [0, 0] and len(_ledger(ws)[0].list_submissions(_scan(ws).id)) == 1
    ledger, _ = _ledger(ws)
    rnd = ledger.current_round(_scan(ws).id)
    with ledger._write() as session:  # another machine's worker holds the round, for one more second
        row = session.get(RoundRow, rnd.id)
        row.claimed_by, row.claim_expires = "elsewhere:1", datetime.now(timezone.utc) + timedelta(seconds=1)
    assert main(["resume", str(ws)]) == 0  # waits for the claim, then processes the round itself, once
    assert main(["resume", str(ws)]) == 0  # nothing left to do
    capsys.readouterr()
    assert len(ledger.list_stops(_scan(ws).id)) == 1
    assert [r.status.value for r in ledger.list_rounds(_scan(ws).id)] == ["processed", "requested"]


# 6 ------------------------------------------------------------------------------------------------------------
def test_resume_processes_every_scan_and_reports_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = _human(tmp_path, 2)
    other = "hippocampus_003"
    for case in (CASE, other):
        assert main(["submit", str(ws), case, str(_draw_request(ws, case, 1, tmp_path))]) == 0
    (broken,) = _ledger(ws)[0].list_submissions(_scan(ws).id)
    Path(broken.stored_path).write_bytes(b"not a label file any more")  # the disk lost it
    capsys.readouterr()
    assert main(["resume", str(ws)]) == 1
    err = capsys.readouterr().err
    assert CASE in err and "1 scan(s) could not be processed" in err.replace("\n", " ")
    ledger, _ = _ledger(ws)
    assert ledger.current_round(_scan(ws, other).id).number == 2  # the other scan went on
    assert ledger.current_round(_scan(ws).id).status.value == "submitted"  # kept for another try


# 7, 8 ---------------------------------------------------------------------------------------------------------
def test_refusals_leave_nothing_and_a_scan_at_quota_can_be_accepted(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ws = _human(tmp_path, stopping={"rule": "accept", "quota_gamma": 2, "n_inter": 1})
    gt, geometry = read_label(DEMO / "labels" / f"{CASE}.nii.gz")
    wrong = write_label(tmp_path / "wrong.nii.gz", np.zeros(gt.shape, np.uint8),
                        Geometry(geometry.size, (2.0, 2.0, 2.0), geometry.origin, geometry.direction))
    assert main(["submit", str(ws), CASE, str(wrong)]) == 1
    assert not any((ws / "submissions" / CASE).iterdir())
    assert main(["submit", str(ws), CASE, str(_draw_request(ws, CASE, 1, tmp_path))]) == 0
    assert main(["accept", str(ws), CASE, "--yes"]) == 1  # a submission waits: the ledger refuses the accept
    assert "not processed yet" in " ".join(capsys.readouterr().err.split())
    assert not (ws / "masks").exists() or not any((ws / "masks").iterdir())
    assert main(["resume", str(ws)]) == 0  # one round is this scan's quota
    scan = _scan(ws)
    assert scan.state.value == "at_quota" and Path(scan.final_mask_path).is_file()
    assert main(["accept", str(ws), CASE, "--yes"]) == 0
    assert _scan(ws).state.value == "passed"


# 9, 10 --------------------------------------------------------------------------------------------------------
def test_a_failed_init_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = small_config(tmp_path, 2)
    lines = (tmp_path / "cohort.csv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "cohort.csv").write_text("\n".join([*lines, "missing_case,/nowhere/missing.nii.gz,"]) + "\n", encoding="utf-8")
    assert main(["init", str(cfg)]) == 1
    assert "missing" in capsys.readouterr().err
    assert not (tmp_path / "ws" / "campaign.yaml").exists() and not (tmp_path / "ws" / "ledger.db").exists()
    long_id = "é" * 100  # 100 characters, 200 bytes
    img = DEMO / "images" / f"{CASE}.nii.gz"
    (tmp_path / "cohort.csv").write_text(f"case_id,image,ground_truth\n{long_id},{img},\n", encoding="utf-8")
    assert main(["init", str(cfg)]) == 1
    assert "bytes" in capsys.readouterr().err and not (tmp_path / "ws" / "campaign.yaml").exists()
    (tmp_path / "cohort.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["init", str(cfg)]) == 0  # corrected, the same workspace initialises
    assert (tmp_path / "ws" / "campaign.yaml").is_file()


# 11 -----------------------------------------------------------------------------------------------------------
def test_an_unreachable_postgresql_ledger_is_one_line(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, 1, tracking={"ledger_url": "postgresql+psycopg://dil@127.0.0.1:1/nowhere"})
    run = subprocess.run([sys.executable, "-m", "dil", "init", str(cfg)], capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert run.returncode == 1
    assert run.stderr.strip().startswith("error: the ledger's database:") and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "ws").exists() or not (tmp_path / "ws" / "campaign.yaml").exists()


# 12 -----------------------------------------------------------------------------------------------------------
def test_a_cut_short_server_start_is_found_by_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dil.server as server
    from dil_core.workspace import Workspace

    ws = Workspace(tmp_path)
    started: list[Any] = []
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    sleeper2 = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        class FakePopen:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                started.append(args)
                self.pid = sleeper.pid

            def poll(self) -> None:
                return None

        monkeypatch.setattr(server.subprocess, "Popen", FakePopen)
        monkeypatch.setattr(server, "_healthy", lambda url, timeout=2.0: False)
        with pytest.raises(RuntimeError, match="did not answer"):
            server.start_server(ws, timeout=1.0)  # the starter gives up (as if killed) ...
        assert not (ws.prefect_home / "server.json").exists()  # ... and takes its record with it
        server._write_record(ws, {"pid": sleeper2.pid, "url": "http://127.0.0.1:9/api"})  # a start cut short
        monkeypatch.setattr(server, "_healthy", lambda url, timeout=2.0: True)
        assert server.start_server(ws) == "http://127.0.0.1:9/api"  # found and waited for
        assert len(started) == 1  # no second server on the same database
    finally:
        sleeper.kill()
        sleeper2.kill()


# 13 -----------------------------------------------------------------------------------------------------------
def test_workspace_files_are_private_and_passwords_stay_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = os.umask(0o022)
    try:
        ws = _human(tmp_path)
    finally:
        os.umask(old)
    for name in ("ledger.db", "campaign.yaml"):
        assert stat.S_IMODE((ws / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((ws / "requests").stat().st_mode) == 0o700
    cfg = yaml.safe_load((tmp_path / "campaign.yaml").read_text(encoding="utf-8"))
    cfg["tracking"] = {"ledger_url": "postgresql+psycopg://dil:secret@127.0.0.1/dil"}
    (tmp_path / "pw.yaml").write_text(yaml.safe_dump({**cfg, "workspace": "ws2"}), encoding="utf-8")
    assert main(["init", str(tmp_path / "pw.yaml")]) == 1
    assert "PGPASSWORD" in capsys.readouterr().err and not (tmp_path / "ws2").exists()


# 14 -----------------------------------------------------------------------------------------------------------
def test_the_configured_prefect_api_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dil.console import heavy_context

    cfg = small_config(tmp_path, 1, tracking={"prefect_api_url": "http://127.0.0.1:4321/api"})
    assert main(["init", str(cfg)]) == 0
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    heavy_context(tmp_path / "ws")
    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4321/api"
    monkeypatch.delenv("PREFECT_API_URL")
