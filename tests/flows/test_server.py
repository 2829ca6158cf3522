"""The workspace's local Prefect server: started once, found by later commands, stopped by a command."""

from __future__ import annotations

from pathlib import Path

import pytest

from dil.cli import main
from dil.server import server_url
from dil_core.workspace import Workspace
from tests.flows.conftest import small_config


def test_local_server_start_status_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = small_config(tmp_path, 1, annotator={"kind": "human"}, stopping={"rule": "accept"})
    assert main(["init", str(cfg)]) == 0
    ws = tmp_path / "ws"
    assert main(["server", "status", str(ws)]) == 0
    assert "not running" in capsys.readouterr().out
    try:
        assert main(["server", "start", str(ws)]) == 0
        url = server_url(Workspace(ws))
        assert url is not None and url.startswith("http://127.0.0.1:")
        assert main(["server", "start", str(ws)]) == 0  # a second start reuses the running server
        assert server_url(Workspace(ws)) == url
    finally:
        assert main(["server", "stop", str(ws)]) == 0
    assert server_url(Workspace(ws)) is None
    assert main(["server", "status", str(tmp_path / "nowhere")]) == 2
