"""A local Prefect server kept alive for one workspace, so that a physician's ``dil submit`` does not pay
Prefect's start-up each time.

Without it every ``dil submit`` process starts Prefect's temporary server (10-17 s on this project's
2-core reference machine, more under load; see bench/results/round_latency.json). ``dil server start``
starts ``prefect server start`` on 127.0.0.1 with the workspace's Prefect home, in its own session, and
records its address in ``prefect/server.json``; every later ``dil`` command on that workspace uses it.
``dil server stop`` stops it. Human-annotator campaigns start it on the first ``dil submit``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from dil.telemetry import TELEMETRY_OFF
from dil_core.workspace import Workspace

__all__ = ["server_url", "start_server", "stop_server"]


def _record(ws: Workspace) -> Path:
    return ws.prefect_home / "server.json"


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def server_url(ws: Workspace) -> str | None:
    """The API URL of the workspace's running local server, or None."""
    path = _record(ws)
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not _alive(int(info.get("pid", -1))) or not _healthy(info["url"]):
        return None
    return str(info["url"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_record(ws: Workspace, info: dict[str, object]) -> None:
    tmp = _record(ws).with_suffix(".tmp")
    tmp.write_text(json.dumps(info), encoding="utf-8")
    tmp.replace(_record(ws))


def start_server(ws: Workspace, *, timeout: float = 180.0) -> str:
    """Start the workspace's local Prefect server (or return the running one's URL).

    Starting is serialised by a lock on ``prefect/server.lock``, and the new server's pid is recorded before
    anyone waits for it: a process killed while the server starts leaves a record that the next start finds
    (it waits for that server, or replaces it if it died), never a second server on the same database.

    Raises
    ------
    RuntimeError
        If the server does not answer within ``timeout`` seconds (its log is in ``prefect/server.log``).
    """
    ws.prefect_home.mkdir(parents=True, exist_ok=True)
    with open(ws.prefect_home / "server.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        url = server_url(ws)
        if url is not None:
            return url
        try:
            info = json.loads(_record(ws).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
        pid = int(info.get("pid", -1))
        if pid > 0 and _alive(pid) and info.get("url"):
            proc_url = str(info["url"])  # a start that was cut short: wait for that server
            return _wait_healthy(ws, proc_url, pid, None, timeout)
        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update(TELEMETRY_OFF)
        env["PREFECT_HOME"] = str(ws.prefect_home)
        # the UI the server serves must call this server's API, not the default port 4200
        env["PREFECT_UI_API_URL"] = url
        env["PREFECT_UI_URL"] = url.removesuffix("/api")
        log = open(ws.prefect_home / "server.log", "ab")  # noqa: SIM115 (handed to the child)
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
        log.close()
        _write_record(ws, {"pid": proc.pid, "url": url})
        return _wait_healthy(ws, url, proc.pid, proc, timeout)


def _wait_healthy(ws: Workspace, url: str, pid: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (proc is not None and proc.poll() is not None) or not _alive(pid):
            _record(ws).unlink(missing_ok=True)
            raise RuntimeError(f"the local Prefect server exited; see {ws.prefect_home / 'server.log'}")
        if _healthy(url):
            return url
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    _record(ws).unlink(missing_ok=True)
    raise RuntimeError(f"the local Prefect server did not answer within {timeout:.0f} s; see {ws.prefect_home / 'server.log'}")


def stop_server(ws: Workspace) -> bool:
    """Stop the workspace's local server; False if none was running."""
    path = _record(ws)
    if not path.is_file():
        return False
    info = json.loads(path.read_text(encoding="utf-8"))
    pid = int(info.get("pid", -1))
    running = _alive(pid)
    if running:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            running = False
        for _ in range(40):
            if not _alive(pid):
                break
            time.sleep(0.25)
    path.unlink(missing_ok=True)
    return running


def deployment_server(ws: Workspace) -> str:
    """The Prefect server deployments and work pools live on: ``PREFECT_API_URL`` if set, else the workspace's
    local server (started and left running; ``dil server stop`` stops it). The embedded API runs no scheduler
    and no work pools."""
    url = os.environ.get("PREFECT_API_URL") or start_server(ws)
    os.environ["PREFECT_API_URL"] = url
    return url


def serve_deployments(ws: Workspace, deployments: list[object]) -> None:
    """Serve Prefect deployments (e.g. the nightly retraining) until interrupted.

    Cron schedules are created by a Prefect server's scheduler, which the embedded API does not run: without
    a configured ``PREFECT_API_URL`` the workspace's local server is started (and left running for later
    commands; ``dil server stop`` stops it).
    """
    from prefect import serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = deployment_server(ws)
    with temporary_settings({PREFECT_API_URL: url}):
        serve(*deployments, pause_on_shutdown=False)  # type: ignore[arg-type]


def start_service(ws: Workspace, *, timeout: float = 300.0) -> str:
    """Start ``dil serve`` for the workspace as a detached process; returns its HTTP URL once it answers.

    Raises
    ------
    RuntimeError
        If the service exits or does not answer within ``timeout`` seconds (its log: ``service/service.log``).
    """
    ws.service_dir.mkdir(parents=True, exist_ok=True)
    log = open(ws.service_dir / "service.log", "ab")  # noqa: SIM115 (handed to the child)
    env = dict(os.environ)
    env.update(TELEMETRY_OFF)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dil", "serve", str(ws.root)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + timeout
    record = ws.service_dir / "service.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the round service exited (code {proc.returncode}); see {ws.service_dir / 'service.log'}")
        try:
            info = json.loads(record.read_text(encoding="utf-8"))
            if int(info.get("pid", -1)) == proc.pid and _healthy(f"{info['url']}/api"):
                return str(info["url"])
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.25)
    os.killpg(proc.pid, signal.SIGTERM)
    raise RuntimeError(f"the round service did not answer within {timeout:.0f} s; see {ws.service_dir / 'service.log'}")
