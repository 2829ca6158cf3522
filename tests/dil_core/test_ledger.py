"""Tests of the campaign ledger's lifecycle, API-wide input checks and stored files (SQLite and PostgreSQL).

Opening, schema versions and the clock (``core.py``), several instances on one database, bad inputs to
every method, labor rows, and content-addressed submission files (``files.py``). Fixtures: ``conftest.py``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from dil_core.ledger import (
    LEDGER_FILENAME,
    SCHEMA_VERSION,
    LaborRow,
    Ledger,
    LedgerError,
    LedgerNotFoundError,
    LedgerSchemaError,
    RecordNotFoundError,
    ScanState,
    file_suffix,
    sha256_file,
    store_submission_file,
)
from tests.dil_core.conftest import (
    GEOMETRY,
    Backend,
    _camp_scan,
    _postgres_url,  # noqa: F401 - used by tests/flows/test_campaign.py
    _submit,
)


# ------------------------------------------------------------------------------------------------ opening
def test_open_creates_tables_and_reopens(backend: Backend) -> None:
    first = backend.open()
    first.create_campaign("hippo")
    again = backend.open(create=False)
    assert [c.name for c in again.list_campaigns()] == ["hippo"]
    if backend.name == "sqlite":
        assert (Path(backend.target) / LEDGER_FILENAME).is_file()
        with first.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_open_missing_without_create(backend: Backend) -> None:
    with pytest.raises(LedgerNotFoundError, match="create=False"):
        backend.open(create=False)
    if backend.name == "sqlite":
        assert not (Path(backend.target) / LEDGER_FILENAME).exists()


@pytest.mark.parametrize(
    ("sql", "match"),
    [
        ("UPDATE schema_version SET version = {newer}", "newer than this version of DIL"),
        ("UPDATE schema_version SET version = 0", "older than"),
        ("DELETE FROM schema_version", "empty schema_version"),
        ("DROP TABLE schema_version", "no schema_version"),
    ],
)
def test_schema_version_refusal(backend: Backend, sql: str, match: str) -> None:
    backend.open().create_campaign("hippo")
    backend.execute(sql.format(newer=SCHEMA_VERSION + 1))
    with pytest.raises(LedgerSchemaError, match=match):
        backend.open()


def test_open_paths_and_urls(tmp_path: Path) -> None:
    file_ledger = Ledger.open(tmp_path / "custom.sqlite")
    assert file_ledger.url.endswith("custom.sqlite")
    file_ledger.close()
    (tmp_path / "ws").mkdir()
    with Ledger.open(tmp_path / "ws") as folder_ledger:
        assert folder_ledger.url == f"sqlite:///{tmp_path / 'ws' / LEDGER_FILENAME}"
    with Ledger.open(f"sqlite:///{tmp_path / 'ws' / LEDGER_FILENAME}", create=False) as by_url:
        assert by_url.list_campaigns() == []
    with Ledger.open("sqlite://") as memory:
        memory.create_campaign("m")
        assert memory.get_campaign("m").name == "m"


@pytest.mark.parametrize(
    ("target", "kwargs", "error", "match"),
    [
        ("mysql://u@h/db", {}, ValueError, "not supported"),
        ("", {}, ValueError, "url_or_path"),
        (42, {}, TypeError, "url_or_path"),
        ("sqlite:///{tmp}/x.db", {"schema": "s"}, ValueError, "only PostgreSQL"),
        ("postgresql+psycopg://u@127.0.0.1:1/db", {"schema": "bad name"}, ValueError, "identifier"),
        ("sqlite:///{tmp}/missing/x.db", {}, LedgerNotFoundError, "folder"),
    ],
)
def test_open_bad_inputs(tmp_path: Path, target: Any, kwargs: dict[str, Any], error: type, match: str) -> None:
    if isinstance(target, str):
        target = target.format(tmp=tmp_path)
    with pytest.raises(error, match=match):
        Ledger.open(target, **kwargs)


def test_clock_must_be_aware(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="clock"):
        Ledger.open(tmp_path, clock=42)  # type: ignore[arg-type]
    naive = Ledger.open(tmp_path, clock=lambda: datetime(2025, 1, 1))
    with pytest.raises(LedgerError, match="timezone-aware"):
        naive.create_campaign("x")
    assert naive.list_campaigns() == []
    naive.close()


# ----------------------------------------------------------------------------------- several instances
def test_two_instances_see_each_others_writes(backend: Backend) -> None:
    one, two = backend.open(), backend.open()
    scan = _camp_scan(one)
    assert two.get_scan(scan.id) == scan
    rnd = two.open_round(scan.id, {0: [1]})
    assert one.current_round(scan) == rnd
    _submit(one, scan, rnd, "x", [LaborRow(0, "sagittal", 1, 0.3)])
    assert two.cumulative_labor("hippo") == pytest.approx(0.3)
    assert two.get_scan(scan).state is ScanState.RUNNING


# -------------------------------------------------------------------------------------------- bad inputs
BAD_INPUTS: list[tuple[str, Callable[[Ledger, Any, Any], Any], type[BaseException], str]] = [
    ("empty campaign name", lambda L, s, r: L.create_campaign(" "), ValueError, "name"),
    ("config not JSON", lambda L, s, r: L.create_campaign("x", {"a": object()}), ValueError, "config"),
    ("config NaN", lambda L, s, r: L.create_campaign("x", {"a": float("nan")}), ValueError, "config"),
    ("unknown campaign", lambda L, s, r: L.add_scan("nope", "c", "/i", GEOMETRY), RecordNotFoundError, "nope"),
    ("campaign bool", lambda L, s, r: L.list_scans(True), ValueError, "campaign"),
    ("empty case id", lambda L, s, r: L.add_scan("hippo", "", "/i", GEOMETRY), ValueError, "case_id"),
    ("empty image path", lambda L, s, r: L.add_scan("hippo", "c", "", GEOMETRY), ValueError, "image_path"),
    ("geometry 2D", lambda L, s, r: L.add_scan("hippo", "c", "/i", {"size": [3, 4]}), ValueError, "geometry"),
    ("geometry zero", lambda L, s, r: L.add_scan("hippo", "c", "/i", {"size": [3, 0, 4]}), ValueError, "geometry"),
    ("geometry type", lambda L, s, r: L.add_scan("hippo", "c", "/i", [1, 2, 3]), ValueError, "geometry"),
    ("target > size", lambda L, s, r: L.set_target_slices(s, {2: 9}), ValueError, "target_slices"),
    ("target axis", lambda L, s, r: L.set_target_slices(s, {3: 1}), ValueError, "axis"),
    ("unknown state", lambda L, s, r: L.set_scan_state(s, "done"), ValueError, "unknown scan state"),
    ("list state", lambda L, s, r: L.list_scans("hippo", "done"), ValueError, "unknown scan state"),
    ("mask w/o end", lambda L, s, r: L.set_scan_state(s, "running", final_mask_path="/m"), ValueError, "terminal"),
    ("unknown scan", lambda L, s, r: L.get_scan(9999), RecordNotFoundError, "9999"),
    ("scan as str", lambda L, s, r: L.get_scan("a"), ValueError, "scan"),
    ("no slices", lambda L, s, r: L.open_round(s, {0: []}), ValueError, "at least one"),
    ("index high", lambda L, s, r: L.open_round(s, {0: [10]}), ValueError, r"\[0, 10\)"),
    ("index neg", lambda L, s, r: L.open_round(s, {2: [-1]}), ValueError, r"\[0, 8\)"),
    ("axis 3", lambda L, s, r: L.open_round(s, {3: [1]}), ValueError, "axis"),
    ("float index", lambda L, s, r: L.open_round(s, {0: [1.5]}), ValueError, "integer"),
    ("plane name", lambda L, s, r: L.open_round(s, {0: [1]}, planes={0: "frontal"}), ValueError, "planes"),
    ("plane axis", lambda L, s, r: L.open_round(s, {0: [1]}, planes={1: "axial"}), ValueError, "no requested"),
    ("scores len", lambda L, s, r: L.open_round(s, {0: [1]}, {0: [1.0] * 3}), ValueError, "one score per slice"),
    ("scores nan", lambda L, s, r: L.open_round(s, {0: [1]}, {0: [float("nan")] * 10}), ValueError, "finite"),
    ("bad sha", lambda L, s, r: L.record_submission(s, r, "xyz", "/p", "n", {0: [1]}, []), ValueError, "sha256"),
    ("drawn out", lambda L, s, r: L.record_submission(s, r, "a" * 64, "/p", "n", {1: [12]}, []), ValueError, "drawn"),
    ("drawn str", lambda L, s, r: L.record_submission(s, r, "a" * 64, "/p", "n", {1: "12"}, []), ValueError, "drawn"),
    ("no path", lambda L, s, r: L.record_submission(s, r, "a" * 64, "", "n", {0: [1]}, []), ValueError, "stored_path"),
    ("labor axis twice", lambda L, s, r: L.record_submission(
        s, r, "a" * 64, "/p", "n", {0: [1]}, [LaborRow(0, "sagittal", 1, 0.1)] * 2), ValueError, "one row per axis"),
    ("labor key", lambda L, s, r: L.record_submission(
        s, r, "a" * 64, "/p", "n", {0: [1]}, [{"axis": 0}]), ValueError, "labor_rows"),
    ("labor type", lambda L, s, r: L.record_submission(s, r, "a" * 64, "/p", "n", {0: [1]}, "x"), ValueError, "labor"),
    ("round of other scan", lambda L, s, r: L.record_submission(
        L.find_scan("hippo", "other"), r, "a" * 64, "/p", "n", {0: [1]}, []), ValueError, "belongs"),
    ("unknown round", lambda L, s, r: L.mark_round_processed(9999), RecordNotFoundError, "9999"),
    ("metrics inf", lambda L, s, r: L.mark_round_processed(r, {"d": float("inf")}), ValueError, "metrics"),
    ("stop value", lambda L, s, r: L.record_stop(s, r, "dice", float("nan"), True), ValueError, "value"),
    ("stop passed", lambda L, s, r: L.record_stop(s, r, "dice", 0.5, 1), ValueError, "passed"),
    ("stop rule", lambda L, s, r: L.record_stop(s, r, "", 0.5, True), ValueError, "rule"),
    ("stop finish", lambda L, s, r: L.record_stop(s, r, "d", 0.5, True, finish="running"), ValueError, "terminal"),
    ("stop mask", lambda L, s, r: L.record_stop(s, r, "d", 0.5, True, final_mask_path="/m"), ValueError, "finish"),
    ("model uri", lambda L, s, r: L.register_model_version("hippo", "", scans_seen=0, rounds_seen=0), ValueError, "uri"),
    ("model count", lambda L, s, r: L.register_model_version(
        "hippo", "/m", scans_seen=-1, rounds_seen=0), ValueError, "scans_seen"),
    ("model version 0", lambda L, s, r: L.register_model_version(
        "hippo", "/m", scans_seen=0, rounds_seen=0, version=0), ValueError, "version"),
    ("model both", lambda L, s, r: L.get_model_version("hippo", version=1, alias="a"), ValueError, "at most one"),
]


@pytest.mark.parametrize(("case", "call", "error", "match"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs(
    ledger: Ledger, case: str, call: Callable[[Ledger, Any, Any], Any], error: type[BaseException], match: str
) -> None:
    scan = _camp_scan(ledger)
    _camp_scan(ledger, "other")
    rnd = ledger.open_round(scan, {0: [1]})
    before = ledger.status_summary("hippo")
    with pytest.raises(error, match=match):
        call(ledger, scan, rnd)
    assert ledger.status_summary("hippo") == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"axis": 3, "plane": "axial", "slices": 1, "fraction": 0.1}, "axis"),
        ({"axis": True, "plane": "axial", "slices": 1, "fraction": 0.1}, "axis"),
        ({"axis": 0, "plane": "oblique", "slices": 1, "fraction": 0.1}, "plane"),
        ({"axis": 0, "plane": "axial", "slices": -1, "fraction": 0.1}, "slices"),
        ({"axis": 0, "plane": "axial", "slices": 1, "fraction": -0.1}, "fraction"),
        ({"axis": 0, "plane": "axial", "slices": 1, "fraction": float("nan")}, "fraction"),
        ({"axis": 0, "plane": "axial", "slices": 1, "fraction": "a"}, "fraction"),
        ({"axis": 0, "plane": "axial", "slices": 1.0, "fraction": 0.1}, "slices"),
        ({"axis": 0, "plane": "axial", "slices": 1, "fraction": True}, "fraction"),
    ],
)
def test_labor_row_bad_inputs(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LaborRow(**kwargs)


# ---------------------------------------------------------------------------------------- stored files
@pytest.mark.parametrize(
    ("name", "suffix"),
    [("a.nii.gz", ".nii.gz"), ("A.NII.GZ", ".NII.GZ"), ("seg.nrrd", ".nrrd"), ("x.seg.nrrd", ".nrrd"),
     ("m.mha", ".mha"), ("noext", ""), ("we ird.n$i", "")],
)
def test_file_suffix(name: str, suffix: str) -> None:
    assert file_suffix(name) == suffix


def test_store_submission_file(tmp_path: Path) -> None:
    src = tmp_path / "drawn by me.nii.gz"
    payload = b"\x1f\x8b fake label volume" * 1000
    src.write_bytes(payload)
    sha, stored = store_submission_file(src, tmp_path / "ws" / "submissions")
    assert sha == hashlib.sha256(payload).hexdigest() == sha256_file(src)
    assert stored == tmp_path / "ws" / "submissions" / f"{sha}.nii.gz"
    assert stored.read_bytes() == payload
    again = store_submission_file(src, tmp_path / "ws" / "submissions")
    assert again == (sha, stored)
    assert sorted(p.name for p in stored.parent.iterdir()) == [stored.name]


def test_store_submission_file_crash_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "label.nrrd"
    src.write_bytes(b"data")

    def crash(*args: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        store_submission_file(src, tmp_path / "subs")
    assert list((tmp_path / "subs").iterdir()) == []


@pytest.mark.parametrize("bad", ["missing.nii", "."])
def test_store_submission_file_bad_inputs(tmp_path: Path, bad: str) -> None:
    with pytest.raises(FileNotFoundError, match="src"):
        store_submission_file(tmp_path / bad, tmp_path / "subs")
    with pytest.raises(FileNotFoundError, match="path"):
        sha256_file(tmp_path / bad)
