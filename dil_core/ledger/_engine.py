"""Engines for the ledger: a SQLite file in the workspace (WAL, foreign keys on) or PostgreSQL by URL."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from dil_core.ledger.errors import LedgerNotFoundError

#: File name of the ledger inside a workspace folder.
LEDGER_FILENAME = "ledger.db"
#: Execution option that makes a SQLite transaction start with ``BEGIN IMMEDIATE`` (writes).
SQLITE_BEGIN_OPTION = "dil_sqlite_begin"
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_SQLITE_BUSY_TIMEOUT_S = 30.0
_PG_CONNECT_TIMEOUT_S = 10


def _json_dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def resolve_url(url_or_path: str | os.PathLike[str] | URL, *, create: bool) -> URL:
    """Turn a URL, a SQLite file path or a workspace folder into a database URL.

    A folder (existing, or a suffix-less path) means ``<folder>/ledger.db``; with ``create=True`` a missing
    folder is made. ``postgresql://`` and ``postgres://`` mean the psycopg 3 driver.
    """
    if isinstance(url_or_path, URL):
        url = url_or_path
    elif isinstance(url_or_path, str) and "://" in url_or_path:
        try:
            url = make_url(url_or_path)
        except ArgumentError as err:
            raise ValueError(f"url_or_path: not a database URL: {url_or_path!r}") from err
    elif isinstance(url_or_path, (str, os.PathLike)):
        path = Path(url_or_path)
        if str(url_or_path) == "":
            raise ValueError("url_or_path: must be a database URL, a SQLite file or a workspace folder, got ''")
        if path.is_dir() or (not path.exists() and path.suffix.lower() not in _SQLITE_SUFFIXES):
            if create:
                path.mkdir(parents=True, exist_ok=True)
            path = path / LEDGER_FILENAME
        return URL.create("sqlite", database=str(path.absolute()))
    else:
        raise TypeError(f"url_or_path: expected a URL string, a path or a sqlalchemy URL, got {url_or_path!r}")

    backend = url.get_backend_name()
    if backend == "postgres":
        url = url.set(drivername="postgresql+psycopg")
    elif backend == "postgresql" and "+" not in url.drivername:
        url = url.set(drivername="postgresql+psycopg")
    elif backend not in ("sqlite", "postgresql"):
        raise ValueError(
            f"url_or_path: backend {backend!r} is not supported; use sqlite:///<file> or postgresql+psycopg://..."
        )
    return url


def is_memory_sqlite(url: URL) -> bool:
    """Whether ``url`` names an in-memory SQLite database."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def make_engine(url: URL, *, create: bool, schema: str | None, echo: bool = False) -> Engine:
    """Create the engine for ``url`` with the ledger's connection settings.

    Raises
    ------
    LedgerNotFoundError
        ``create=False`` and the SQLite file does not exist.
    ValueError
        ``schema`` given for SQLite, or not a plain SQL identifier.
    """
    backend = url.get_backend_name()
    if schema is not None:
        if backend != "postgresql":
            raise ValueError(f"schema: only PostgreSQL ledgers have schemas, got schema={schema!r} for {backend}")
        if not isinstance(schema, str) or not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema: must be a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*), got {schema!r}")
    if backend == "sqlite":
        return _sqlite_engine(url, create=create, echo=echo)
    engine = create_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        json_serializer=_json_dumps,
        connect_args={"connect_timeout": _PG_CONNECT_TIMEOUT_S},
    )
    if schema is not None:
        engine = engine.execution_options(schema_translate_map={None: schema})
    return engine


def _sqlite_engine(url: URL, *, create: bool, echo: bool) -> Engine:
    memory = is_memory_sqlite(url)
    if not memory:
        path = Path(str(url.database))
        if not create and not path.is_file():
            raise LedgerNotFoundError(f"no ledger at {path} (create=False)")
        if create and not path.parent.is_dir():
            raise LedgerNotFoundError(f"folder of the ledger file does not exist: {path.parent}")
    kwargs: dict[str, Any] = {"echo": echo, "json_serializer": _json_dumps}
    if memory:
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        kwargs.update(connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S})
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, emit BEGIN (so reads are transactional too).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        if not memory:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute(f"PRAGMA busy_timeout = {int(_SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine
