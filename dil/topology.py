"""The scale-out topology of ``deploy/compose.yaml`` as plain processes on one machine (``deploy/local.sh``).

One folder holds what every machine of a real deployment would see on shared storage: the workspace (scans'
requests, submissions, checkpoints, final masks), MLflow's artifact root, and each process's log and working
folder. PostgreSQL holds the three databases (``<prefix>_ledger``, ``<prefix>_prefect``, ``<prefix>_mlflow``,
created when missing); the processes are

* a Prefect server on the ``_prefect`` database,
* an MLflow tracking server on the ``_mlflow`` database, artifacts under ``mlflow-artifacts/``,
* N round services (``dil serve --work-dir services/s<i>``), each with its own HTTP API,
* optionally M Prefect process workers (``dil worker``) for the campaign's deployments.

The campaign config given is copied with its ``tracking`` section pointing at them and the workspace under
the folder, then opened (``dil campaign run``). ``topology.json`` in the folder records every process and
address; ``down`` stops them.

    python -m dil.topology up DIR --config campaign.yaml [--services 2] [--workers 0] [--pg URL] [--prefix P]
    python -m dil.topology down DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dil.telemetry import TELEMETRY_OFF

__all__ = ["Topology", "create_database", "drop_database"]

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as resp:
            return resp.status == 200
    except OSError:
        return False


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"database name {name!r}: use lower-case letters, digits and '_' (at most 63)")
    return name


def _admin(pg: str) -> Any:
    import psycopg

    return psycopg.connect(pg.replace("postgresql+psycopg://", "postgresql://") + "/postgres", autocommit=True)


def create_database(pg: str, name: str) -> bool:
    """Create database ``name`` on the server ``pg`` if it does not exist; True if it was created."""
    with _admin(pg) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (_check_name(name),)).fetchone():
            return False
        conn.execute(f'CREATE DATABASE "{name}"')
        return True


def drop_database(pg: str, name: str) -> None:
    """Drop database ``name`` (its connections are closed first)."""
    with _admin(pg) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                     (_check_name(name),))
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@dataclass
class Process:
    role: str
    pid: int
    log: str
    url: str | None = None
    work_dir: str | None = None


@dataclass
class Topology:
    """A running local topology (see the module docstring)."""

    root: Path
    workspace: Path
    pg: str
    prefix: str
    prefect_api_url: str
    mlflow_uri: str
    ledger_url: str
    processes: list[Process] = field(default_factory=list)

    # -- starting ------------------------------------------------------------------------------------------
    @classmethod
    def up(cls, root: Path, config: Path, *, services: int = 2, workers: int = 0, pg: str = DEFAULT_PG,
           prefix: str | None = None, timeout: float = 300.0, serve_args: tuple[str, ...] = ()) -> Topology:
        """Create the databases, start the servers, open the campaign and start its services and workers."""
        root = Path(root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        data = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
        prefix = _check_name(prefix or f"dil_{re.sub(r'[^a-z0-9_]', '_', str(data['name']).lower())}")
        for db in ("ledger", "prefect", "mlflow"):
            create_database(pg, f"{prefix}_{db}")
        (root / "logs").mkdir(exist_ok=True)
        prefect_port, mlflow_port = _free_port(), _free_port()
        topo = cls(
            root=root, workspace=root / "workspace", pg=pg, prefix=prefix,
            prefect_api_url=f"http://127.0.0.1:{prefect_port}/api", mlflow_uri=f"http://127.0.0.1:{mlflow_port}",
            ledger_url=f"{pg}/{prefix}_ledger",
        )
        try:
            topo._start("prefect-server", [
                sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port),
            ], env={
                "PREFECT_HOME": str(root / "prefect-server"),
                "PREFECT_API_DATABASE_CONNECTION_URL": f"{pg.replace('+psycopg', '+asyncpg')}/{prefix}_prefect",
                "PREFECT_UI_API_URL": topo.prefect_api_url,
            }, url=topo.prefect_api_url)
            topo._start("mlflow-server", [
                sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                "--workers", "1", "--backend-store-uri", f"{pg}/{prefix}_mlflow",
                "--artifacts-destination", str(root / "mlflow-artifacts"),
            ], url=topo.mlflow_uri)
            topo._wait(f"{topo.prefect_api_url}/health", "prefect-server", timeout)
            topo._wait(f"{topo.mlflow_uri}/health", "mlflow-server", timeout)
            topo._open_campaign(data, Path(config).resolve().parent)
            for i in range(services):
                topo.start_service(i, serve_args)
            for i in range(workers):
                topo._start(f"worker-{i}", [sys.executable, "-m", "dil", "worker", str(topo.workspace),
                                            "--name", f"{prefix}-worker-{i}"])
            for p in topo.processes:
                if p.role.startswith("service"):
                    topo._wait_service(p, timeout)
        except BaseException:
            topo.down()
            raise
        topo.save()
        return topo

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, **TELEMETRY_OFF, **(extra or {})}
        env.pop("PREFECT_API_URL", None)  # each process takes it from the campaign config
        env.pop("PREFECT_HOME", None)
        env.setdefault("PYTHONIOENCODING", "utf-8")  # the logs are UTF-8 whatever the locale
        env.setdefault("PYTHONUTF8", "1")  # and so are the files the children write
        return env

    def _start(self, role: str, cmd: list[str], *, env: dict[str, str] | None = None, url: str | None = None,
               work_dir: Path | None = None) -> Process:
        log = self.root / "logs" / f"{role}.log"
        with open(log, "ab") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self._env(env), start_new_session=True)
        rec = Process(role, proc.pid, str(log), url, str(work_dir) if work_dir else None)
        self.processes.append(rec)
        self.save()
        return rec

    def _alive(self, pid: int) -> bool:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _wait(self, url: str, role: str, timeout: float) -> None:
        proc = next(p for p in self.processes if p.role == role)
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if not self._alive(proc.pid) or time.monotonic() > deadline:
                raise RuntimeError(f"{role} did not start; see {proc.log}")
            time.sleep(0.5)

    def _open_campaign(self, data: dict[str, Any], base: Path) -> None:
        cohort = Path(data["cohort"])
        data = {**data, "cohort": str(cohort if cohort.is_absolute() else (base / cohort).resolve()),
                "workspace": str(self.workspace)}
        data["tracking"] = {**(data.get("tracking") or {}), "ledger_url": self.ledger_url,
                            "mlflow_uri": self.mlflow_uri, "prefect_api_url": self.prefect_api_url}
        path = self.root / "campaign.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        done = subprocess.run([sys.executable, "-m", "dil", "campaign", "run", str(path)], check=False, env=self._env(),
                              capture_output=True, encoding="utf-8", errors="replace")
        (self.root / "logs" / "campaign-run.log").write_text(done.stdout + done.stderr, encoding="utf-8")
        if done.returncode != 0:
            raise RuntimeError(f"dil campaign run failed: {(done.stderr or done.stdout).strip()[-2000:]}")

    def start_service(self, i: int, serve_args: tuple[str, ...] = ()) -> Process:
        """Start round service ``i`` (its working folder ``services/s<i>``); it answers once warm."""
        work = self.root / "services" / f"s{i}"
        return self._start(f"service-{i}", [sys.executable, "-m", "dil", "serve", str(self.workspace),
                                            "--work-dir", str(work), *serve_args], work_dir=work)

    def _wait_service(self, p: Process, timeout: float) -> None:
        record = Path(str(p.work_dir)) / "service.json"
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = json.loads(record.read_text(encoding="utf-8"))
                if info["pid"] == p.pid and _healthy(f"{info['url']}/api/health"):
                    p.url = info["url"]
                    self.save()
                    return
            except (OSError, ValueError, KeyError):
                pass
            if not self._alive(p.pid) or time.monotonic() > deadline:
                raise RuntimeError(f"{p.role} did not start; see {p.log}")
            time.sleep(0.25)

    # -- using -----------------------------------------------------------------------------------------------
    def services(self) -> list[Process]:
        return [p for p in self.processes if p.role.startswith("service") and self._alive(p.pid)]

    def kill(self, role: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (default: kill -9) to a process's group."""
        p = next(p for p in self.processes if p.role == role)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, sig)
        deadline = time.monotonic() + 30
        while self._alive(p.pid) and time.monotonic() < deadline:
            time.sleep(0.1)

    def save(self) -> None:
        record = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        tmp = self.root / "topology.json.tmp"
        tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
        tmp.replace(self.root / "topology.json")

    @classmethod
    def load(cls, root: Path) -> Topology:
        info = json.loads((Path(root) / "topology.json").read_text(encoding="utf-8"))
        procs = [Process(**p) for p in info.pop("processes")]
        return cls(**{**info, "root": Path(info["root"]), "workspace": Path(info["workspace"])}, processes=procs)

    def down(self, *, drop: bool = False) -> None:
        """Stop every process (services first, the servers last); ``drop`` also drops the databases."""
        for p in sorted(self.processes, key=lambda p: p.role.endswith("server")):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.processes:
            deadline = time.monotonic() + 30
            while self._alive(p.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        if drop:
            for db in ("ledger", "prefect", "mlflow"):
                drop_database(self.pg, f"{self.prefix}_{db}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dil.topology", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="start the topology in DIR")
    up.add_argument("dir", type=Path)
    up.add_argument("--config", type=Path, required=True, help="campaign YAML (its tracking section is replaced)")
    up.add_argument("--services", type=int, default=2)
    up.add_argument("--workers", type=int, default=0, help="Prefect process workers for the deployments")
    up.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL server (SQLAlchemy URL without a database)")
    up.add_argument("--prefix", default=None, help="database name prefix (default dil_<campaign>)")
    down = sub.add_parser("down", help="stop the topology in DIR")
    down.add_argument("dir", type=Path)
    down.add_argument("--drop", action="store_true", help="also drop its databases")
    args = p.parse_args(argv)
    if args.action == "up":
        topo = Topology.up(args.dir, args.config, services=args.services, workers=args.workers, pg=args.pg,
                           prefix=args.prefix)
        print(f"Prefect server  {topo.prefect_api_url.removesuffix('/api')}")
        print(f"MLflow server   {topo.mlflow_uri}")
        print(f"ledger          {topo.ledger_url}")
        print(f"workspace       {topo.workspace}")
        for proc in topo.processes:
            if proc.role.startswith("service"):
                print(f"{proc.role:<15} {proc.url}")
        print(f"stop with: python -m dil.topology down {topo.root}")
    else:
        Topology.load(args.dir).down(drop=args.drop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
