"""The campaign ledger: the one source of truth for scans, rounds, submissions, labor, stops and models."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, func, inspect, select, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dil_core.ledger import _convert as cv
from dil_core.ledger._engine import SQLITE_BEGIN_OPTION, make_engine, resolve_url
from dil_core.ledger._orm import (
    SCHEMA_VERSION,
    TABLE_NAMES,
    Base,
    CampaignRow,
    LaborRowORM,
    ModelVersionRow,
    RoundRow,
    ScanRow,
    SchemaVersionRow,
    StopDecisionRow,
    SubmissionRow,
)
from dil_core.ledger.errors import (
    LedgerError,
    LedgerNotFoundError,
    LedgerSchemaError,
    LedgerStateError,
    RecordNotFoundError,
)
from dil_core.ledger.records import (
    SCAN_TRANSITIONS,
    TERMINAL_STATES,
    CampaignRecord,
    LaborRow,
    ModelVersionRecord,
    RoundRecord,
    RoundStatus,
    ScanLabor,
    ScanRecord,
    ScanState,
    StatusSummary,
    StopRecord,
    SubmissionRecord,
)

#: A source of timezone-aware timestamps.
Clock = Callable[[], datetime]

#: Scan states from which :meth:`Ledger.open_round` may send a labeling request.
_ROUND_OPENABLE = frozenset({ScanState.QUEUED, ScanState.RUNNING, ScanState.WAITING_FOR_LABELS})
_MAX_RETRIES = 5


def utc_now() -> datetime:
    """The default clock: the current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


class Ledger:
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
                raise LedgerSchemaError(
                    f"ledger at {self._where} has schema version {found}, older than {SCHEMA_VERSION}; "
                    "no migration exists for it"
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

    # ------------------------------------------------------------------------------------------- helpers
    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._writes() as session, session.begin():
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._reads() as session, session.begin():
            yield session

    def _now(self) -> datetime:
        now = self._clock()
        if not isinstance(now, datetime) or now.tzinfo is None:
            raise LedgerError(f"clock: must return a timezone-aware datetime, got {now!r}")
        return now

    @staticmethod
    def _ref_id(ref: Any, name: str, record_type: type) -> int:
        if isinstance(ref, record_type):
            return int(ref.id)  # type: ignore[attr-defined]
        if isinstance(ref, bool) or not isinstance(ref, int):
            raise ValueError(f"{name}: expected an id (int) or a {record_type.__name__}, got {ref!r}")
        return ref

    def _campaign_row(self, session: Session, campaign: Any) -> CampaignRow:
        if isinstance(campaign, CampaignRecord):
            campaign = campaign.id
        if isinstance(campaign, str):
            row = session.scalar(select(CampaignRow).where(CampaignRow.name == campaign))
        elif isinstance(campaign, int) and not isinstance(campaign, bool):
            row = session.get(CampaignRow, campaign)
        else:
            raise ValueError(f"campaign: expected a name, an id or a CampaignRecord, got {campaign!r}")
        if row is None:
            raise RecordNotFoundError(f"campaign: no campaign {campaign!r} in the ledger")
        return row

    def _scan_row(self, session: Session, scan: Any, *, lock: bool = False) -> ScanRow:
        scan_id = self._ref_id(scan, "scan", ScanRecord)
        row = session.get(ScanRow, scan_id, with_for_update=lock or None)
        if row is None:
            raise RecordNotFoundError(f"scan: no scan with id {scan_id} in the ledger")
        return row

    def _round_row(self, session: Session, rnd: Any, scan_row: ScanRow, *, lock: bool = False) -> RoundRow:
        round_id = self._ref_id(rnd, "round", RoundRecord)
        row = session.get(RoundRow, round_id, with_for_update=lock or None)
        if row is None:
            raise RecordNotFoundError(f"round: no round with id {round_id} in the ledger")
        if row.scan_id != scan_row.id:
            raise ValueError(
                f"round: round {round_id} belongs to scan {row.scan_id}, not to scan {scan_row.id} "
                f"({scan_row.case_id!r})"
            )
        return row

    @staticmethod
    def _open_round_row(session: Session, scan_id: int) -> RoundRow | None:
        return session.scalar(
            select(RoundRow).where(RoundRow.scan_id == scan_id, RoundRow.status != RoundStatus.PROCESSED)
        )

    def _transition(self, row: ScanRow, target: ScanState, now: datetime) -> None:
        current = ScanState(row.state)
        if target == current:
            return
        if target not in SCAN_TRANSITIONS[current]:
            allowed = sorted(s.value for s in SCAN_TRANSITIONS[current])
            raise LedgerStateError(
                f"scan {row.case_id!r}: cannot go from {current.value} to {target.value}; allowed: {allowed}"
            )
        row.state = target
        row.finished_at = now if target in TERMINAL_STATES else None

    def _submission_with_labor(self, session: Session, row: SubmissionRow) -> SubmissionRecord:
        labor = session.scalars(select(LaborRowORM).where(LaborRowORM.submission_id == row.id)).all()
        return cv.submission_record(row, labor)

    def _find_submission(self, session: Session, scan_id: int, sha: str) -> SubmissionRow | None:
        return session.scalar(
            select(SubmissionRow).where(SubmissionRow.scan_id == scan_id, SubmissionRow.sha256 == sha)
        )

    # ------------------------------------------------------------------------------------------ campaigns
    def create_campaign(
        self, name: str, config: Mapping[str, Any] | None = None, *, exist_ok: bool = False
    ) -> CampaignRecord:
        """Create a campaign.

        Parameters
        ----------
        name : str
            Unique campaign name (at most 200 characters).
        config : mapping, optional
            The campaign's configuration as JSON (e.g. a pydantic model's ``model_dump(mode="json")``).
        exist_ok : bool
            Return the existing campaign of that name if its config is the same.

        Returns
        -------
        CampaignRecord

        Raises
        ------
        LedgerStateError
            The name is taken (``exist_ok=False``), or taken with a different config.
        ValueError
            Empty name, config not JSON.
        """
        name = cv.text(name, "name", max_len=200)
        cfg = cv.json_mapping({} if config is None else config, "config", optional=False)
        for _ in range(_MAX_RETRIES):
            try:
                with self._write() as session:
                    row = session.scalar(select(CampaignRow).where(CampaignRow.name == name))
                    if row is None:
                        row = CampaignRow(name=name, config_json=cfg, created_at=self._now())
                        session.add(row)
                        session.flush()
                    elif not exist_ok:
                        raise LedgerStateError(f"name: a campaign named {name!r} exists already")
                    elif row.config_json != cfg:
                        raise LedgerStateError(f"name: campaign {name!r} exists with a different config")
                    return cv.campaign_record(row)
            except IntegrityError:
                continue  # created concurrently: look again
        raise LedgerError(f"could not create campaign {name!r}: concurrent writers kept colliding")

    def get_campaign(self, campaign: int | str) -> CampaignRecord:
        """The campaign with this name or id; :class:`RecordNotFoundError` if none."""
        with self._read() as session:
            return cv.campaign_record(self._campaign_row(session, campaign))

    def list_campaigns(self) -> list[CampaignRecord]:
        """All campaigns, oldest first."""
        with self._read() as session:
            rows = session.scalars(select(CampaignRow).order_by(CampaignRow.id)).all()
            return [cv.campaign_record(r) for r in rows]

    # ---------------------------------------------------------------------------------------------- scans
    def add_scan(
        self,
        campaign: int | str | CampaignRecord,
        case_id: str,
        image_path: str | os.PathLike[str],
        geometry: Any,
        *,
        ground_truth_path: str | os.PathLike[str] | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        target_slices: Mapping[int, int] | None = None,
    ) -> ScanRecord:
        """Queue a scan at the end of the campaign's queue; idempotent on ``case_id``.

        Adding a case that is already there returns the existing scan unchanged.

        Parameters
        ----------
        campaign : str, int or CampaignRecord
            Campaign name or id.
        case_id : str
            Case identifier, unique within the campaign.
        image_path : path
            The scan's image.
        geometry : Geometry or mapping
            :class:`dil_core.geometry.Geometry` or its dict; ``size`` (3 positive ints) is required.
        ground_truth_path : path, optional
            Full ground-truth label (simulation and evaluation only).
        preprocessing : mapping, optional
            How the image was preprocessed, as JSON.
        target_slices : mapping of int to int, optional
            Axis -> number of target slices on that plane (Eq 3-4's denominator), when known.

        Returns
        -------
        ScanRecord

        Raises
        ------
        LedgerStateError
            The case exists with a different ``image_path``.
        RecordNotFoundError
            Unknown campaign.
        ValueError
            Empty ``case_id``/``image_path``, bad geometry or target slices.
        """
        case_id = cv.text(case_id, "case_id", max_len=200)
        image = cv.text(image_path, "image_path")
        truth = cv.optional_text(ground_truth_path, "ground_truth_path")
        geom = cv.geometry(geometry)
        prep = cv.json_mapping(preprocessing, "preprocessing", optional=True)
        target = cv.target_slices(target_slices, geom["size"])
        for _ in range(_MAX_RETRIES):
            try:
                with self._write() as session:
                    camp = self._campaign_row(session, campaign)
                    row = session.scalar(
                        select(ScanRow).where(ScanRow.campaign_id == camp.id, ScanRow.case_id == case_id)
                    )
                    if row is not None:
                        if row.image_path != image:
                            raise LedgerStateError(
                                f"case_id: case {case_id!r} is already in campaign {camp.name!r} with image "
                                f"{row.image_path!r}, not {image!r}"
                            )
                        return cv.scan_record(row)
                    last = session.scalar(select(func.max(ScanRow.position)).where(ScanRow.campaign_id == camp.id))
                    row = ScanRow(
                        campaign_id=camp.id,
                        case_id=case_id,
                        image_path=image,
                        ground_truth_path=truth,
                        geometry_json=geom,
                        preprocessing_json=prep,
                        state=ScanState.QUEUED,
                        position=0 if last is None else last + 1,
                        added_at=self._now(),
                        target_slices_json=target,
                    )
                    session.add(row)
                    session.flush()
                    return cv.scan_record(row)
            except IntegrityError:
                continue  # the same case added concurrently: the next pass returns it
        raise LedgerError(f"could not add scan {case_id!r}: concurrent writers kept colliding")

    def get_scan(self, scan: int | ScanRecord) -> ScanRecord:
        """The scan with this id (fresh from the ledger); :class:`RecordNotFoundError` if none."""
        with self._read() as session:
            return cv.scan_record(self._scan_row(session, scan))

    def find_scan(self, campaign: int | str | CampaignRecord, case_id: str) -> ScanRecord | None:
        """The scan of ``case_id`` in the campaign, or None."""
        with self._read() as session:
            camp = self._campaign_row(session, campaign)
            row = session.scalar(
                select(ScanRow).where(ScanRow.campaign_id == camp.id, ScanRow.case_id == case_id)
            )
            return None if row is None else cv.scan_record(row)

    def list_scans(
        self,
        campaign: int | str | CampaignRecord,
        state: ScanState | str | Iterable[ScanState | str] | None = None,
    ) -> list[ScanRecord]:
        """Scans of the campaign in queue order, optionally only those in ``state`` (one or several)."""
        if state is None:
            states = None
        elif isinstance(state, str):
            states = [cv.scan_state(state)]
        else:
            states = [cv.scan_state(s) for s in state]
        with self._read() as session:
            camp = self._campaign_row(session, campaign)
            query = select(ScanRow).where(ScanRow.campaign_id == camp.id)
            if states is not None:
                query = query.where(ScanRow.state.in_(states))
            rows = session.scalars(query.order_by(ScanRow.position, ScanRow.id)).all()
            return [cv.scan_record(r) for r in rows]

    def next_queued_scan(
        self, campaign: int | str | CampaignRecord, *, claim: bool = False
    ) -> ScanRecord | None:
        """The first queued scan in queue order, or None.

        Parameters
        ----------
        campaign : str, int or CampaignRecord
        claim : bool
            Atomically move it to ``running`` (so two workers never take the same scan).
        """
        query = select(ScanRow).where(ScanRow.state == ScanState.QUEUED).order_by(ScanRow.position, ScanRow.id)
        if not claim:
            with self._read() as session:
                camp = self._campaign_row(session, campaign)
                row = session.scalar(query.where(ScanRow.campaign_id == camp.id).limit(1))
                return None if row is None else cv.scan_record(row)
        with self._write() as session:
            camp = self._campaign_row(session, campaign)
            row = session.scalar(
                query.where(ScanRow.campaign_id == camp.id).limit(1).with_for_update(skip_locked=True)
            )
            if row is None:
                return None
            self._transition(row, ScanState.RUNNING, self._now())
            session.flush()
            return cv.scan_record(row)

    def set_scan_state(
        self,
        scan: int | ScanRecord,
        state: ScanState | str,
        *,
        final_mask_path: str | os.PathLike[str] | None = None,
    ) -> ScanRecord:
        """Move a scan to ``state`` along :data:`SCAN_TRANSITIONS` (the same state again is a no-op).

        Entering ``passed``, ``at_quota`` or ``failed`` stamps ``finished_at``; reopening clears it.

        Parameters
        ----------
        scan : int or ScanRecord
        state : ScanState or str
        final_mask_path : path, optional
            Where the scan's final mask was written (only with a terminal state).

        Returns
        -------
        ScanRecord
            The scan after the change.

        Raises
        ------
        LedgerStateError
            The transition is not allowed.
        ValueError
            Unknown state; ``final_mask_path`` with a non-terminal state.
        """
        target = cv.scan_state(state)
        final = cv.optional_text(final_mask_path, "final_mask_path")
        if final is not None and target not in TERMINAL_STATES:
            raise ValueError(f"final_mask_path: only with a terminal state, got state={target.value}")
        with self._write() as session:
            row = self._scan_row(session, scan, lock=True)
            self._transition(row, target, self._now())
            if final is not None:
                row.final_mask_path = final
            session.flush()
            return cv.scan_record(row)

    def set_target_slices(self, scan: int | ScanRecord, target_slices: Mapping[int, int]) -> ScanRecord:
        """Record the number of target slices per axis (Eq 3-4's denominators) once known."""
        with self._write() as session:
            row = self._scan_row(session, scan, lock=True)
            row.target_slices_json = cv.target_slices(target_slices, row.geometry_json["size"])
            session.flush()
            return cv.scan_record(row)

    # --------------------------------------------------------------------------------------------- rounds
    def open_round(
        self,
        scan: int | ScanRecord,
        requested: Mapping[int, Iterable[int]],
        scores: Mapping[int, Iterable[float]] | None = None,
        *,
        planes: Mapping[int, str] | None = None,
    ) -> RoundRecord:
        """Open the scan's next round: the labeling request (Alg 3/4), and the scan waits for labels.

        A scan has at most one open (not yet processed) round; a unique partial index guards this against
        concurrent writers too.

        Parameters
        ----------
        scan : int or ScanRecord
        requested : mapping of int to iterable of int
            Array axis -> slice indices to draw (at least one slice in all).
        scores : mapping of int to sequence of float, optional
            Array axis -> guidance score of every slice along it (Alg 4's residual sums), for replay.
        planes : mapping of int to str, optional
            Array axis -> clinical plane name of the requested axes.

        Returns
        -------
        RoundRecord
            Status ``requested``, number one more than the scan's last round.

        Raises
        ------
        LedgerStateError
            The scan has an open round, or is finished.
        ValueError
            No slices requested, indices outside the scan, scores of the wrong length or not finite.
        """
        with self._write() as session:
            row = self._scan_row(session, scan, lock=True)
            size = row.geometry_json["size"]
            req = {a: s for a, s in cv.slices(requested, "requested", size).items() if s}
            if not req:
                raise ValueError("requested: at least one slice must be requested")
            names = cv.planes(planes, req)
            score_json = cv.scores(scores, size)
            state = ScanState(row.state)
            if state not in _ROUND_OPENABLE:
                raise LedgerStateError(f"scan {row.case_id!r} is {state.value}: no new rounds")
            current = self._open_round_row(session, row.id)
            if current is not None:
                raise LedgerStateError(
                    f"scan {row.case_id!r} has an open round ({current.number}, {current.status.value}); "
                    "process it before opening another"
                )
            last = session.scalar(select(func.max(RoundRow.number)).where(RoundRow.scan_id == row.id))
            rnd = RoundRow(
                scan_id=row.id,
                number=1 if last is None else last + 1,
                status=RoundStatus.REQUESTED,
                requested_json=cv.requested_json(req, names),
                proposal_scores_json=score_json,
                created_at=self._now(),
            )
            session.add(rnd)
            self._transition(row, ScanState.WAITING_FOR_LABELS, rnd.created_at)
            session.flush()
            return cv.round_record(rnd)

    def current_round(self, scan: int | ScanRecord) -> RoundRecord | None:
        """The scan's open round (``requested`` or ``submitted``), or None."""
        with self._read() as session:
            row = self._scan_row(session, scan)
            rnd = self._open_round_row(session, row.id)
            return None if rnd is None else cv.round_record(rnd)

    def list_rounds(self, scan: int | ScanRecord) -> list[RoundRecord]:
        """All rounds of the scan, in order."""
        with self._read() as session:
            row = self._scan_row(session, scan)
            rounds = session.scalars(select(RoundRow).where(RoundRow.scan_id == row.id).order_by(RoundRow.number))
            return [cv.round_record(r) for r in rounds]

    def mark_round_processed(
        self,
        rnd: int | RoundRecord,
        metrics: Mapping[str, Any] | None = None,
        model_version: str | int | None = None,
    ) -> RoundRecord:
        """Close a submitted round with its metrics (Dice estimates, timings, ...) and the model it trained.

        Raises
        ------
        LedgerStateError
            The round is not ``submitted`` (no submission yet, or already processed).
        ValueError
            Metrics not JSON with finite numbers.
        """
        metric_json = cv.json_mapping(metrics, "metrics", optional=True)
        version = None if model_version is None else cv.text(str(model_version), "model_version", max_len=200)
        round_id = self._ref_id(rnd, "rnd", RoundRecord)
        with self._write() as session:
            row = session.get(RoundRow, round_id, with_for_update=True)
            if row is None:
                raise RecordNotFoundError(f"rnd: no round with id {round_id} in the ledger")
            if row.status is not RoundStatus.SUBMITTED:
                raise LedgerStateError(
                    f"round {row.number} of scan {row.scan_id} is {row.status.value}, not submitted: "
                    "only a submitted round can be processed"
                )
            row.status = RoundStatus.PROCESSED
            row.processed_at = self._now()
            row.metrics_json = metric_json
            row.model_version = version
            session.flush()
            return cv.round_record(row)

    def close_round_without_submission(
        self,
        rnd: int | RoundRecord,
        metrics: Mapping[str, Any] | None = None,
        model_version: str | int | None = None,
    ) -> RoundRecord:
        """Close a *requested* round that got no submission: the annotator accepted the mask without drawing.

        The round becomes ``processed`` with no submission, so it adds no labor; a later round can open.

        Raises
        ------
        LedgerStateError
            The round is not ``requested`` (a submitted round is processed with :meth:`mark_round_processed`).
        ValueError
            Metrics not JSON with finite numbers.
        """
        metric_json = cv.json_mapping(metrics, "metrics", optional=True)
        version = None if model_version is None else cv.text(str(model_version), "model_version", max_len=200)
        round_id = self._ref_id(rnd, "rnd", RoundRecord)
        with self._write() as session:
            row = session.get(RoundRow, round_id, with_for_update=True)
            if row is None:
                raise RecordNotFoundError(f"rnd: no round with id {round_id} in the ledger")
            self._close_requested(row, metric_json, version, self._now())
            session.flush()
            return cv.round_record(row)

    @staticmethod
    def _close_requested(row: RoundRow, metrics: Any, version: str | None, now: datetime) -> None:
        if row.status is not RoundStatus.REQUESTED:
            raise LedgerStateError(
                f"round {row.number} of scan {row.scan_id} is {row.status.value}, not requested: only a "
                "round still waiting for labels can be closed without a submission"
            )
        row.status = RoundStatus.PROCESSED
        row.processed_at = now
        row.metrics_json = metrics
        row.model_version = version

    # ---------------------------------------------------------------------------------------- submissions
    def record_submission(
        self,
        scan: int | ScanRecord,
        rnd: int | RoundRecord,
        sha256: str,
        stored_path: str | os.PathLike[str],
        original_name: str,
        drawn: Mapping[int, Iterable[int]],
        labor_rows: Iterable[LaborRow | Mapping[str, Any]],
    ) -> tuple[SubmissionRecord, bool]:
        """Record a stored label file, its drawn slices and its labor, in one transaction.

        Store the file first (:func:`store_submission_file`), then call this. The same content (``sha256``)
        submitted again for the scan, for any round and even concurrently, returns the first record and adds
        no labor. A new submission closes the round for submissions (``submitted``) and moves the scan from
        ``waiting_for_labels`` to ``running``.

        Parameters
        ----------
        scan : int or ScanRecord
        rnd : int or RoundRecord
            The scan's open round, in status ``requested``.
        sha256 : str
            Content hash of the stored file (64 hex digits).
        stored_path : path
            Where the file is stored.
        original_name : str
            The file name the annotator submitted.
        drawn : mapping of int to iterable of int
            Array axis -> indices of the slices drawn (requested or not).
        labor_rows : iterable of LaborRow or mapping
            Labor per plane (Eq 3-4), at most one row per axis.

        Returns
        -------
        submission : SubmissionRecord
        created : bool
            False when the same file was already recorded for the scan.

        Raises
        ------
        LedgerStateError
            The round is not open for submissions, or the scan is finished.
        ValueError
            Bad hash, drawn indices outside the scan, bad labor rows, round of another scan.
        """
        sha = cv.sha256_hex(sha256)
        stored = cv.text(stored_path, "stored_path")
        original = cv.text(original_name, "original_name")
        rows = cv.labor_rows(labor_rows)
        scan_id = self._ref_id(scan, "scan", ScanRecord)
        try:
            with self._write() as session:
                scan_row = self._scan_row(session, scan_id, lock=True)
                round_row = self._round_row(session, rnd, scan_row, lock=True)
                existing = self._find_submission(session, scan_id, sha)
                if existing is not None:
                    return self._submission_with_labor(session, existing), False
                drawn_sets = cv.slices(drawn, "drawn", scan_row.geometry_json["size"])
                if round_row.status is not RoundStatus.REQUESTED:
                    raise LedgerStateError(
                        f"round {round_row.number} of scan {scan_row.case_id!r} is {round_row.status.value}, "
                        "not open for submissions"
                    )
                state = ScanState(scan_row.state)
                if state in TERMINAL_STATES:
                    raise LedgerStateError(f"scan {scan_row.case_id!r} is {state.value}: no more submissions")
                now = self._now()
                sub = SubmissionRow(
                    round_id=round_row.id,
                    scan_id=scan_id,
                    sha256=sha,
                    stored_path=stored,
                    original_name=original,
                    drawn_json={str(a): sorted(s) for a, s in sorted(drawn_sets.items())},
                    n_drawn=sum(len(s) for s in drawn_sets.values()),
                    received_at=now,
                )
                session.add(sub)
                session.flush()
                labor = [
                    LaborRowORM(
                        scan_id=scan_id,
                        round_id=round_row.id,
                        submission_id=sub.id,
                        axis=r.axis,
                        plane=r.plane,
                        slices=r.slices,
                        fraction=r.fraction,
                    )
                    for r in rows
                ]
                session.add_all(labor)
                round_row.status = RoundStatus.SUBMITTED
                if state is ScanState.WAITING_FOR_LABELS:
                    self._transition(scan_row, ScanState.RUNNING, now)
                session.flush()
                return cv.submission_record(sub, labor), True
        except IntegrityError as err:
            # A concurrent writer recorded the same file first: count it once.
            with self._read() as session:
                existing = self._find_submission(session, scan_id, sha)
                if existing is not None:
                    return self._submission_with_labor(session, existing), False
            raise LedgerError(f"could not record submission {sha[:12]} for scan {scan_id}: {err.orig}") from err

    def list_submissions(self, scan: int | ScanRecord) -> list[SubmissionRecord]:
        """All submissions of the scan, in the order received."""
        with self._read() as session:
            row = self._scan_row(session, scan)
            subs = session.scalars(
                select(SubmissionRow).where(SubmissionRow.scan_id == row.id).order_by(SubmissionRow.id)
            ).all()
            return [self._submission_with_labor(session, s) for s in subs]

    # ------------------------------------------------------------------------------------------ stopping
    def record_stop(
        self,
        scan: int | ScanRecord,
        rnd: int | RoundRecord | None,
        rule: str,
        value: float | None,
        passed: bool,
        *,
        finish: ScanState | str | None = None,
        final_mask_path: str | os.PathLike[str] | None = None,
        close_round: bool = False,
        metrics: Mapping[str, Any] | None = None,
        model_version: str | int | None = None,
    ) -> StopRecord:
        """Record a stopping-rule decision; optionally finish the scan in the same transaction.

        Parameters
        ----------
        scan : int or ScanRecord
        rnd : int, RoundRecord or None
            The round the decision follows (None: before any round).
        rule : str
            Rule name (``dice_gt``, ``dice_estimate``, ``quota``, ``accepted``, ...), at most 64 characters.
        value : float or None
            The value compared with the bar (e.g. a Dice), if any.
        passed : bool
            Whether the rule says stop.
        finish : ScanState or str, optional
            Terminal state to move the scan to (``passed``, ``at_quota``, ``failed``).
        final_mask_path : path, optional
            The scan's final mask (with ``finish``).
        close_round : bool
            Also close ``rnd``, a *requested* round, without a submission (the annotator accepted the mask
            without drawing; see :meth:`close_round_without_submission`), with ``metrics`` and
            ``model_version``, in the same transaction.

        Raises
        ------
        LedgerStateError
            ``finish`` is not an allowed transition, or ``close_round`` on a round that is not requested.
        ValueError
            Empty rule, non-finite value, ``passed`` not a bool, ``finish`` not terminal.
        """
        rule = cv.text(rule, "rule", max_len=64)
        val = cv.finite_or_none(value, "value")
        if not isinstance(passed, bool):
            raise ValueError(f"passed: must be a bool, got {passed!r}")
        target = None if finish is None else cv.scan_state(finish, "finish")
        if target is not None and target not in TERMINAL_STATES:
            raise ValueError(f"finish: must be a terminal state {sorted(s.value for s in TERMINAL_STATES)}")
        final = cv.optional_text(final_mask_path, "final_mask_path")
        if final is not None and target is None:
            raise ValueError("final_mask_path: only together with finish")
        if close_round and rnd is None:
            raise ValueError("close_round: needs the round to close (rnd)")
        metric_json = cv.json_mapping(metrics, "metrics", optional=True)
        version = None if model_version is None else cv.text(str(model_version), "model_version", max_len=200)
        with self._write() as session:
            scan_row = self._scan_row(session, scan, lock=True)
            round_row = None if rnd is None else self._round_row(session, rnd, scan_row, lock=close_round)
            round_id = None if round_row is None else round_row.id
            now = self._now()
            if close_round:
                assert round_row is not None
                self._close_requested(round_row, metric_json, version, now)
            row = StopDecisionRow(
                scan_id=scan_row.id, round_id=round_id, rule=rule, value=val, passed=passed, decided_at=now
            )
            session.add(row)
            if target is not None:
                self._transition(scan_row, target, now)
                if final is not None:
                    scan_row.final_mask_path = final
            session.flush()
            return cv.stop_record(row)

    def list_stops(self, scan: int | ScanRecord) -> list[StopRecord]:
        """All stop decisions of the scan, oldest first."""
        with self._read() as session:
            row = self._scan_row(session, scan)
            stops = session.scalars(
                select(StopDecisionRow).where(StopDecisionRow.scan_id == row.id).order_by(StopDecisionRow.id)
            )
            return [cv.stop_record(s) for s in stops]

    # ------------------------------------------------------------------------------------- model versions
    def register_model_version(
        self,
        campaign: int | str | CampaignRecord,
        uri: str | os.PathLike[str],
        *,
        scans_seen: int,
        rounds_seen: int,
        alias: str | None = None,
        version: int | None = None,
    ) -> ModelVersionRecord:
        """Register a segmenter version (F_prev of Alg 5, or a retraining) of the campaign.

        Parameters
        ----------
        campaign : str, int or CampaignRecord
        uri : str or path
            Where the weights are (a file or an MLflow ``models:/`` URI).
        scans_seen, rounds_seen : int
            Scans and rounds the model was trained on (>= 0).
        alias : str, optional
            Alias to point at this version (moved from any other version of the campaign).
        version : int, optional
            Explicit version number (e.g. MLflow's); must exceed every existing one. Default: last + 1.

        Returns
        -------
        ModelVersionRecord

        Raises
        ------
        LedgerStateError
            ``version`` not greater than the latest one.
        ValueError
            Negative counts, empty uri or alias.
        """
        uri_s = cv.text(uri, "uri")
        scans_n = cv.integer(scans_seen, "scans_seen", minimum=0)
        rounds_n = cv.integer(rounds_seen, "rounds_seen", minimum=0)
        alias_s = cv.optional_text(alias, "alias", max_len=100)
        wanted = None if version is None else cv.integer(version, "version", minimum=1)
        for _ in range(_MAX_RETRIES):
            try:
                with self._write() as session:
                    camp = self._campaign_row(session, campaign)
                    last = session.scalar(
                        select(func.max(ModelVersionRow.version)).where(ModelVersionRow.campaign_id == camp.id)
                    )
                    number = (last or 0) + 1 if wanted is None else wanted
                    if last is not None and number <= last:
                        raise LedgerStateError(
                            f"version: versions of campaign {camp.name!r} increase; latest is {last}, got {number}"
                        )
                    if alias_s is not None:
                        self._clear_alias(session, camp.id, alias_s)
                    row = ModelVersionRow(
                        campaign_id=camp.id,
                        version=number,
                        uri=uri_s,
                        scans_seen=scans_n,
                        rounds_seen=rounds_n,
                        created_at=self._now(),
                        alias=alias_s,
                    )
                    session.add(row)
                    session.flush()
                    return cv.model_version_record(row)
            except IntegrityError as err:
                if wanted is not None:
                    raise LedgerStateError(
                        f"version: model version {wanted} was registered concurrently, or alias {alias_s!r} clashed"
                    ) from err
                continue  # a concurrent registration took the number: take the next
        raise LedgerError("could not register a model version: concurrent writers kept colliding")

    @staticmethod
    def _clear_alias(session: Session, campaign_id: int, alias: str) -> None:
        session.execute(
            update(ModelVersionRow)
            .where(ModelVersionRow.campaign_id == campaign_id, ModelVersionRow.alias == alias)
            .values(alias=None)
            .execution_options(synchronize_session=False)
        )

    def set_model_alias(self, campaign: int | str | CampaignRecord, version: int, alias: str) -> ModelVersionRecord:
        """Point ``alias`` at ``version`` (moving it from any other version of the campaign)."""
        alias_s = cv.text(alias, "alias", max_len=100)
        number = cv.integer(version, "version", minimum=1)
        with self._write() as session:
            camp = self._campaign_row(session, campaign)
            row = session.scalar(
                select(ModelVersionRow).where(
                    ModelVersionRow.campaign_id == camp.id, ModelVersionRow.version == number
                )
            )
            if row is None:
                raise RecordNotFoundError(f"version: campaign {camp.name!r} has no model version {number}")
            self._clear_alias(session, camp.id, alias_s)
            session.flush()
            session.refresh(row)
            row.alias = alias_s
            session.flush()
            return cv.model_version_record(row)

    def get_model_version(
        self, campaign: int | str | CampaignRecord, *, version: int | None = None, alias: str | None = None
    ) -> ModelVersionRecord | None:
        """A model version by number or alias, else the latest; None if there is none."""
        if version is not None and alias is not None:
            raise ValueError("version, alias: give at most one")
        with self._read() as session:
            camp = self._campaign_row(session, campaign)
            query = select(ModelVersionRow).where(ModelVersionRow.campaign_id == camp.id)
            if version is not None:
                query = query.where(ModelVersionRow.version == cv.integer(version, "version", minimum=1))
            elif alias is not None:
                query = query.where(ModelVersionRow.alias == cv.text(alias, "alias"))
            row = session.scalar(query.order_by(ModelVersionRow.version.desc()).limit(1))
            return None if row is None else cv.model_version_record(row)

    def list_model_versions(self, campaign: int | str | CampaignRecord) -> list[ModelVersionRecord]:
        """All model versions of the campaign, in version order."""
        with self._read() as session:
            camp = self._campaign_row(session, campaign)
            rows = session.scalars(
                select(ModelVersionRow)
                .where(ModelVersionRow.campaign_id == camp.id)
                .order_by(ModelVersionRow.version)
            )
            return [cv.model_version_record(r) for r in rows]

    # --------------------------------------------------------------------------------------------- labor
    def labor_by_scan(self, campaign: int | str | CampaignRecord) -> list[ScanLabor]:
        """Labor per scan (sums of its labor rows, Eq 3-4), every scan of the campaign in queue order."""
        with self._read() as session:
            camp = self._campaign_row(session, campaign)
            totals = session.execute(
                select(
                    ScanRow.id,
                    ScanRow.case_id,
                    ScanRow.state,
                    func.coalesce(func.sum(LaborRowORM.fraction), 0.0),
                    func.coalesce(func.sum(LaborRowORM.slices), 0),
                )
                .outerjoin(LaborRowORM, LaborRowORM.scan_id == ScanRow.id)
                .where(ScanRow.campaign_id == camp.id)
                .group_by(ScanRow.id, ScanRow.case_id, ScanRow.state, ScanRow.position)
                .order_by(ScanRow.position, ScanRow.id)
            ).all()
            per_plane: dict[int, dict[str, float]] = {}
            for scan_id, plane, fraction in session.execute(
                select(LaborRowORM.scan_id, LaborRowORM.plane, func.sum(LaborRowORM.fraction))
                .join(ScanRow, ScanRow.id == LaborRowORM.scan_id)
                .where(ScanRow.campaign_id == camp.id)
                .group_by(LaborRowORM.scan_id, LaborRowORM.plane)
                .order_by(LaborRowORM.scan_id, LaborRowORM.plane)
            ):
                per_plane.setdefault(scan_id, {})[plane] = float(fraction)
            return [
                ScanLabor(
                    scan_id=sid,
                    case_id=case,
                    state=ScanState(state),
                    fraction=float(fraction),
                    slices=int(n),
                    by_plane=per_plane.get(sid, {}),
                )
                for sid, case, state, fraction, n in totals
            ]

    def cumulative_labor(self, campaign: int | str | CampaignRecord) -> float:
        """Total labor of the campaign, in units of one full manual contouring (sum over all labor rows)."""
        with self._read() as session:
            camp = self._campaign_row(session, campaign)
            return float(self._labor_totals(session, camp.id)[0])

    @staticmethod
    def _labor_totals(session: Session, campaign_id: int) -> tuple[float, int]:
        fraction, slices = session.execute(
            select(func.coalesce(func.sum(LaborRowORM.fraction), 0.0), func.coalesce(func.sum(LaborRowORM.slices), 0))
            .join(ScanRow, ScanRow.id == LaborRowORM.scan_id)
            .where(ScanRow.campaign_id == campaign_id)
        ).one()
        return float(fraction), int(slices)

    def status_summary(self, campaign: int | str | CampaignRecord) -> StatusSummary:
        """Scans per state (every state listed), cumulative labor and slices, rounds, submissions, model."""
        with self._read() as session:
            camp = self._campaign_row(session, campaign)
            counts = {s.value: 0 for s in ScanState}
            for state, n in session.execute(
                select(ScanRow.state, func.count()).where(ScanRow.campaign_id == camp.id).group_by(ScanRow.state)
            ):
                counts[ScanState(state).value] = int(n)
            fraction, slices = self._labor_totals(session, camp.id)
            n_rounds = session.scalar(
                select(func.count()).select_from(RoundRow).join(ScanRow).where(ScanRow.campaign_id == camp.id)
            )
            n_subs = session.scalar(
                select(func.count())
                .select_from(SubmissionRow)
                .join(ScanRow, ScanRow.id == SubmissionRow.scan_id)
                .where(ScanRow.campaign_id == camp.id)
            )
            latest = session.scalar(
                select(func.max(ModelVersionRow.version)).where(ModelVersionRow.campaign_id == camp.id)
            )
            return StatusSummary(
                campaign=camp.name,
                counts=counts,
                n_scans=sum(counts.values()),
                cumulative_labor=fraction,
                cumulative_slices=slices,
                n_rounds=int(n_rounds or 0),
                n_submissions=int(n_subs or 0),
                latest_model_version=latest,
            )


__all__ = ["Clock", "Ledger", "utc_now"]
