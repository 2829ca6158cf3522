"""Shared fixtures: the real data in ../shared/data (skipped cleanly where absent) and the demo cohort."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DIL_SHARED_DATA", REPO.parent / "shared" / "data"))
DEMO_DATA = REPO / "data" / "demo"

os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# One ITK thread: reproducible ANTs registrations, and ITK filters beside SimpleITK stay memory-safe.
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
# Tests run against one session-wide Prefect test server, not a per-workspace local server.
os.environ.setdefault("DIL_LOCAL_SERVER", "off")


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """Commands set process-wide variables (Prefect's home and API, tracking): each test gets back the
    environment it started with, so nothing one test configured reaches the next or its subprocesses."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; the test is skipped where it is not there."""
    if not (SHARED_DATA / "hippocampus" / "images").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_data() -> Path:
    """The bundled demo cohort (``data/demo``)."""
    if not (DEMO_DATA / "images").is_dir():
        pytest.fail(f"bundled demo cohort missing at {DEMO_DATA}")
    return DEMO_DATA


@pytest.fixture(scope="session")
def prefect_backend() -> Iterator[None]:
    """One Prefect test server for the whole session (its start-up is paid once)."""
    from dil.environment import prepare_environment

    prepare_environment(None)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
