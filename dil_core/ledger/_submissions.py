"""Submissions: stored label files of a round, with their drawn slices and labor.

Part of :class:`~dil_core.ledger.Ledger`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dil_core.ledger import _convert as cv
from dil_core.ledger._base import _LedgerBase
from dil_core.ledger._orm import LaborRowORM, SubmissionRow
from dil_core.ledger.errors import LedgerError, LedgerStateError
from dil_core.ledger.records import (
    TERMINAL_STATES,
    LaborRow,
    RoundRecord,
    RoundStatus,
    ScanRecord,
    ScanState,
    SubmissionRecord,
)


class _SubmissionsMixin(_LedgerBase):
    """Record a round's submission once per file, and read submissions back.

    Private: see :class:`~dil_core.ledger.Ledger`.
    """

    # ------------------------------------------------------------------------------------------- helpers
    def _submission_with_labor(self, session: Session, row: SubmissionRow) -> SubmissionRecord:
        labor = session.scalars(select(LaborRowORM).where(LaborRowORM.submission_id == row.id)).all()
        return cv.submission_record(row, labor)

    def _find_submission(self, session: Session, round_id: int, sha: str) -> SubmissionRow | None:
        return session.scalar(
            select(SubmissionRow).where(SubmissionRow.round_id == round_id, SubmissionRow.sha256 == sha)
        )

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

        Store the file first (:func:`store_submission_file`), then call this. The identity of a submission is
        (scan, round, content): the same content (``sha256``) submitted again for the same round, even
        concurrently, returns the first record and adds no labor; the same bytes answering a later round (an
        all-empty file, say) are a new submission. A new submission closes the round for submissions (``submitted``) and moves the scan from
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
            False when the same file was already recorded for the round.

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
                existing = self._find_submission(session, round_row.id, sha)
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
            round_id = self._ref_id(rnd, "rnd", RoundRecord)
            with self._read() as session:
                existing = self._find_submission(session, round_id, sha)
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
