"""The ledger's tables (SQLAlchemy 2 typed ORM). Private: the public API returns records, not rows."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from dil_core.ledger.records import RoundStatus, ScanState

#: Version of the table layout below; a ledger with a newer one is refused, an older one is migrated
#: (:mod:`dil_core.ledger._migrate`). 2: scans learned_at/learned_tag, rounds claimed_by/claim_expires,
#: submissions unique per (round, content) instead of (scan, content), model_versions checkpoint, leases.
SCHEMA_VERSION = 2


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps naive UTC, PostgreSQL ``timestamptz``)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"ledger timestamps must be timezone-aware, got naive {value!r}")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _values(enum_cls: type[Any]) -> list[str]:
    return [member.value for member in enum_cls]


_SCAN_STATE = Enum(
    ScanState,
    name="scan_state",
    native_enum=False,
    create_constraint=True,
    length=32,
    values_callable=_values,
    validate_strings=True,
)
_ROUND_STATUS = Enum(
    RoundStatus,
    name="round_status",
    native_enum=False,
    create_constraint=True,
    length=32,
    values_callable=_values,
    validate_strings=True,
)


class Base(DeclarativeBase):
    """Declarative base of the ledger tables."""


class SchemaVersionRow(Base):
    __tablename__ = "schema_version"
    __table_args__ = (CheckConstraint("id = 1", name="ck_schema_version_single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)


class CampaignRow(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    config_json: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ScanRow(Base):
    __tablename__ = "scans"
    __table_args__ = (
        UniqueConstraint("campaign_id", "case_id", name="uq_scans_campaign_case"),
        Index("ix_scans_campaign_state_position", "campaign_id", "state", "position"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), nullable=False)
    case_id: Mapped[str] = mapped_column(String(200), nullable=False)
    image_path: Mapped[str] = mapped_column(Text, nullable=False)
    ground_truth_path: Mapped[str | None] = mapped_column(Text)
    geometry_json: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    preprocessing_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    state: Mapped[ScanState] = mapped_column(_SCAN_STATE, nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    final_mask_path: Mapped[str | None] = mapped_column(Text)
    target_slices_json: Mapped[dict[str, int] | None] = mapped_column(JSON)
    # When the segmenter learned from the finished scan, and the checkpoint that holds it.
    learned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    learned_tag: Mapped[str | None] = mapped_column(String(200))


class RoundRow(Base):
    __tablename__ = "rounds"
    __table_args__ = (
        UniqueConstraint("scan_id", "number", name="uq_rounds_scan_number"),
        CheckConstraint("number >= 1", name="ck_rounds_number_positive"),
        # At most one round per scan that is not processed yet ("exactly one open round").
        Index(
            "uq_rounds_one_open_per_scan",
            "scan_id",
            unique=True,
            sqlite_where=text("status != 'processed'"),
            postgresql_where=text("status != 'processed'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"), nullable=False)
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[RoundStatus] = mapped_column(_ROUND_STATUS, nullable=False)
    requested_json: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    proposal_scores_json: Mapped[dict[str, list[float]] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    metrics_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    model_version: Mapped[str | None] = mapped_column(String(200))
    # A worker processing the submitted round holds it until claim_expires (a dead worker's claim lapses).
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claim_expires: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SubmissionRow(Base):
    __tablename__ = "submissions"
    __table_args__ = (
        # The same file submitted twice for a round counts once (an empty file may answer several rounds).
        UniqueConstraint("round_id", "sha256", name="uq_submissions_round_sha256"),
        CheckConstraint("n_drawn >= 0", name="ck_submissions_n_drawn"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), nullable=False)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    stored_path: Mapped[str] = mapped_column(Text, nullable=False)
    original_name: Mapped[str] = mapped_column(Text, nullable=False)
    drawn_json: Mapped[dict[str, list[int]]] = mapped_column(JSON, nullable=False)
    n_drawn: Mapped[int] = mapped_column(Integer, nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class LaborRowORM(Base):
    __tablename__ = "labor"
    __table_args__ = (
        UniqueConstraint("submission_id", "axis", name="uq_labor_submission_axis"),
        CheckConstraint("axis IN (0, 1, 2)", name="ck_labor_axis"),
        CheckConstraint("slices >= 0", name="ck_labor_slices"),
        CheckConstraint("fraction >= 0", name="ck_labor_fraction"),
        Index("ix_labor_scan", "scan_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"), nullable=False)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), nullable=False)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), nullable=False)
    axis: Mapped[int] = mapped_column(Integer, nullable=False)
    plane: Mapped[str] = mapped_column(String(32), nullable=False)
    slices: Mapped[int] = mapped_column(Integer, nullable=False)
    fraction: Mapped[float] = mapped_column(Float, nullable=False)


class StopDecisionRow(Base):
    __tablename__ = "stop_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"), nullable=False)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"))
    rule: Mapped[str] = mapped_column(String(64), nullable=False)
    value: Mapped[float | None] = mapped_column(Float)
    passed: Mapped[bool] = mapped_column(Boolean, nullable=False)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("campaign_id", "version", name="uq_model_versions_campaign_version"),
        UniqueConstraint("campaign_id", "alias", name="uq_model_versions_campaign_alias"),
        CheckConstraint("version >= 1", name="ck_model_versions_version_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    uri: Mapped[str] = mapped_column(Text, nullable=False)
    scans_seen: Mapped[int] = mapped_column(Integer, nullable=False)
    rounds_seen: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    alias: Mapped[str | None] = mapped_column(String(100))
    # The workspace trainer checkpoint with these weights, when the campaign predicts with them (a promoted
    # retraining).
    checkpoint: Mapped[str | None] = mapped_column(String(200))


#: Names of every table the ledger owns (used to tell a foreign database from a DIL ledger).
class LeaseRow(Base):
    """A named lease one worker holds until it expires (e.g. ``learn:<campaign id>``: one learner at a time)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200), nullable=False)
    expires: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


TABLE_NAMES: tuple[str, ...] = tuple(Base.metadata.tables)
