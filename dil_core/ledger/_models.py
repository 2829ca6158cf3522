"""Model versions of a campaign, its labor (Eq 3-4) and its status summary.

Part of :class:`~dil_core.ledger.Ledger`.
"""

from __future__ import annotations

import os

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dil_core.ledger import _convert as cv
from dil_core.ledger._base import _MAX_RETRIES, _LedgerBase
from dil_core.ledger._orm import (
    LaborRowORM,
    ModelVersionRow,
    RoundRow,
    ScanRow,
    SubmissionRow,
)
from dil_core.ledger.errors import LedgerError, LedgerStateError, RecordNotFoundError
from dil_core.ledger.records import (
    CampaignRecord,
    ModelVersionRecord,
    ScanLabor,
    ScanState,
    StatusSummary,
)


class _ModelsMixin(_LedgerBase):
    """Register and look up model versions; sum labor; summarize a campaign.

    Private: see :class:`~dil_core.ledger.Ledger`.
    """

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
        checkpoint: str | None = None,
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
        checkpoint : str, optional
            The workspace trainer checkpoint holding these weights, when the campaign is to predict with
            them from now on (a promoted retraining): :meth:`latest_model_tag` then names it.

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
        checkpoint_s = cv.optional_text(checkpoint, "checkpoint", max_len=200)
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
                        checkpoint=checkpoint_s,
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
