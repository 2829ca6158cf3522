"""The campaign ledger: the one source of truth for scans, rounds, submissions, labor, stops and models.

:class:`Ledger` is composed of one mixin per idea: campaigns, scans and their states (:mod:`._campaigns`),
rounds and stop decisions (:mod:`._rounds`), submissions (:mod:`._submissions`), and model versions, labor
and the status summary (:mod:`._models`); their shared plumbing is :mod:`._base`. This module holds the class
itself and its lifecycle: opening, schema check or creation, closing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timezone
from types import TracebackType

from sqlalchemy import Engine, inspect, select, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dil_core.ledger._campaigns import _CampaignsMixin
from dil_core.ledger._engine import SQLITE_BEGIN_OPTION, make_engine, resolve_url
from dil_core.ledger._migrate import migrate
from dil_core.ledger._models import _ModelsMixin
from dil_core.ledger._orm import SCHEMA_VERSION, TABLE_NAMES, Base, SchemaVersionRow
from dil_core.ledger._rounds import _RoundsMixin
from dil_core.ledger._submissions import _SubmissionsMixin
from dil_core.ledger._work import _WorkMixin
from dil_core.ledger.errors import LedgerNotFoundError, LedgerSchemaError

#: A source of timezone-aware timestamps.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The default clock: the current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


class Ledger(_CampaignsMixin, _RoundsMixin, _SubmissionsMixin, _ModelsMixin, _WorkMixin):
    """Campaign state in a SQL database (SQLite in the workspace by default, PostgreSQL by URL).

    Every public write is one transaction (``with session.begin()``): a crash between two calls never leaves
    a half-written submission, and the same label file submitted twice for a scan is counted once (a
    ``UNIQUE(scan_id, sha256)`` constraint backs the check, also against concurrent writers). Reads and
    writes return plain records (:mod:`dil_core.ledger.records`), never ORM objects.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        Engine on the ledger database; :meth:`open` builds one with the right settings.
    clock : callable, optional
        Returns the current time as a timezone-aware ``datetime``; every timestamp the ledger writes comes
        from it. Default: :func:`utc_now`.
    create : bool
        Create the tables (schema version :data:`SCHEMA_VERSION`) when the database has none.

    Raises
    ------
    LedgerNotFoundError
        ``create=False`` and the database holds no ledger.
    LedgerSchemaError
        The ledger's schema version is not :data:`SCHEMA_VERSION`, or the database holds some ledger tables
        but no schema version.

    References
    ----------
    DESIGN.md, "Contracts: Ledger"; labor of Eq 3-4 is stored per submission and plane and summed on read.
    """

    def __init__(self, engine: Engine, *, clock: Clock | None = None, create: bool = True) -> None:
        if clock is not None and not callable(clock):
            raise TypeError(f"clock: must be a callable returning a datetime, got {clock!r}")
        self._engine = engine
        self._clock: Clock = clock or utc_now
        self._sqlite = engine.dialect.name == "sqlite"
        self._reads = sessionmaker(engine, expire_on_commit=False)
        writer = engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"}) if self._sqlite else engine
        self._writes = sessionmaker(writer, expire_on_commit=False)
        self._prepare(create=create)

    # ------------------------------------------------------------------------------------------ lifecycle
    @classmethod
    def open(
        cls,
        url_or_path: str | os.PathLike[str] | URL,
        *,
        create: bool = True,
        schema: str | None = None,
        clock: Clock | None = None,
        echo: bool = False,
    ) -> Ledger:
        """Open (and by default create) a ledger.

        Parameters
        ----------
        url_or_path : str, path or URL
            ``sqlite:///<file>``, ``postgresql+psycopg://user@host/db`` (``postgresql://`` means psycopg 3),
            a SQLite file (``.db``/``.sqlite``/``.sqlite3``), or a workspace folder, meaning
            ``<folder>/ledger.db``.
        create : bool
            Create the ledger (and a missing workspace folder, and ``schema``) when absent; with ``False`` a
            missing ledger raises :class:`LedgerNotFoundError`.
        schema : str, optional
            PostgreSQL schema holding the ledger's tables (default: the connection's ``search_path``), so a
            ledger can share a database with MLflow or Prefect.
        clock : callable, optional
            Source of timestamps (see :class:`Ledger`).
        echo : bool
            Log SQL statements.

        Returns
        -------
        Ledger

        Raises
        ------
        LedgerNotFoundError, LedgerSchemaError
            See :class:`Ledger`.
        ValueError
            Unsupported backend, bad ``schema`` name.
        """
        url = resolve_url(url_or_path, create=create)
        engine = make_engine(url, create=create, schema=schema, echo=echo)
        try:
            if schema is not None and create:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            return cls(engine, clock=clock, create=create)
        except BaseException:
            engine.dispose()
            raise

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for tools; the ledger's methods are the supported way to write)."""
        return self._engine

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def schema(self) -> str | None:
        """The PostgreSQL schema holding the tables, if one was named."""
        mapping = self._engine.get_execution_options().get("schema_translate_map") or {}
        return mapping.get(None)

    @property
    def _where(self) -> str:
        return self.url if self.schema is None else f"{self.url} (schema {self.schema})"

    def close(self) -> None:
        """Release the connection pool."""
        self._engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.url!r})" if self.schema is None else f"Ledger({self.url!r}, schema={self.schema!r})"

    def _prepare(self, *, create: bool) -> None:
        for attempt in range(2):
            try:
                with self._write() as session:
                    self._check_or_create(session, create=create)
                return
            except (IntegrityError, DBAPIError):
                if attempt:  # a second opener raced us to create the tables: the first try settles it
                    raise

    def _check_or_create(self, session: Session, *, create: bool) -> None:
        conn = session.connection()
        schema = conn.schema_for_object(SchemaVersionRow.__table__)
        inspector = inspect(conn)
        if inspector.has_table(SchemaVersionRow.__tablename__, schema=schema):
            found = session.scalar(select(SchemaVersionRow.version).where(SchemaVersionRow.id == 1))
            if found is None:
                raise LedgerSchemaError(f"ledger at {self._where} has an empty schema_version table")
            if found > SCHEMA_VERSION:
                raise LedgerSchemaError(
                    f"ledger at {self._where} has schema version {found}, newer than this version of DIL "
                    f"understands ({SCHEMA_VERSION}); upgrade DIL to open it"
                )
            if found < SCHEMA_VERSION:
                try:
                    migrate(conn, found, SCHEMA_VERSION, schema)
                except KeyError as err:
                    raise LedgerSchemaError(
                        f"ledger at {self._where} has schema version {found}, older than {SCHEMA_VERSION}; "
                        "no migration exists for it"
                    ) from err
                session.execute(
                    update(SchemaVersionRow).where(SchemaVersionRow.id == 1).values(version=SCHEMA_VERSION)
                )
            return
        present = [name for name in TABLE_NAMES if inspector.has_table(name, schema=schema)]
        if present:
            raise LedgerSchemaError(
                f"database at {self._where} holds ledger tables {present} but no schema_version: not a DIL ledger"
            )
        if not create:
            raise LedgerNotFoundError(f"no ledger at {self._where} (create=False)")
        Base.metadata.create_all(conn)
        session.add(SchemaVersionRow(id=1, version=SCHEMA_VERSION))


__all__ = ["Clock", "Ledger", "utc_now"]
