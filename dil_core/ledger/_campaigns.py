"""Campaigns, their scans and the scans' states: the ledger's queue (part of :class:`~dil_core.ledger.Ledger`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from dil_core.ledger import _convert as cv
from dil_core.ledger._base import _MAX_RETRIES, _LedgerBase
from dil_core.ledger._orm import LaborRowORM, CampaignRow, ScanRow
from dil_core.ledger.errors import LedgerError, LedgerStateError
from dil_core.ledger.records import (
    TERMINAL_STATES,
    CampaignRecord,
    ScanRecord,
    ScanState,
)


class _CampaignsMixin(_LedgerBase):
    """Create and read campaigns; queue, claim and move scans (private; see :class:`~dil_core.ledger.Ledger`)."""

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
        """Record the number of target slices per axis (Eq 3-4's denominators) once known.

        Labor has one definition (DESIGN: eq 3-4): on each plane, the slices drawn over the target slices of
        that plane, from the ground truth when known, else from the scan's final mask. A scan without ground
        truth learns its target slices when it finishes; its labor rows, counted against the image's slices
        until then, are recomputed here in the same transaction, so status, report and MLflow agree.
        """
        with self._write() as session:
            row = self._scan_row(session, scan, lock=True)
            row.target_slices_json = cv.target_slices(target_slices, row.geometry_json["size"])
            targets = {int(a): int(n) for a, n in row.target_slices_json.items()}
            for labor in session.scalars(select(LaborRowORM).where(LaborRowORM.scan_id == row.id)):
                labor.fraction = labor.slices / max(targets.get(labor.axis, 1), 1)
            session.flush()
            return cv.scan_record(row)
