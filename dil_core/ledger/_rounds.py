"""Rounds (labeling requests, Alg 3/4) and stop decisions of a scan (part of :class:`~dil_core.ledger.Ledger`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dil_core.ledger import _convert as cv
from dil_core.ledger._base import _LedgerBase
from dil_core.ledger._orm import RoundRow, StopDecisionRow
from dil_core.ledger.errors import LedgerStateError, RecordNotFoundError
from dil_core.ledger.records import (
    TERMINAL_STATES,
    RoundRecord,
    RoundStatus,
    ScanRecord,
    ScanState,
    StopRecord,
)

#: Scan states from which :meth:`Ledger.open_round` may send a labeling request.
_ROUND_OPENABLE = frozenset({ScanState.QUEUED, ScanState.RUNNING, ScanState.WAITING_FOR_LABELS})


class _RoundsMixin(_LedgerBase):
    """Open, read and close rounds; record stopping-rule decisions (private; see :class:`~dil_core.ledger.Ledger`)."""

    # ------------------------------------------------------------------------------------------- helpers
    @staticmethod
    def _open_round_row(session: Session, scan_id: int) -> RoundRow | None:
        return session.scalar(
            select(RoundRow).where(RoundRow.scan_id == scan_id, RoundRow.status != RoundStatus.PROCESSED)
        )

    # --------------------------------------------------------------------------------------------- rounds
    def open_round(
        self,
        scan: int | ScanRecord,
        requested: Mapping[int, Iterable[int]],
        scores: Mapping[int, Iterable[float]] | None = None,
        *,
        planes: Mapping[int, str] | None = None,
        ends: Mapping[int, Iterable[str]] | None = None,
    ) -> RoundRecord:
        """Open the scan's next round: the labeling request (Alg 3/4), and the scan waits for labels.

        A scan has at most one open (not yet processed) round; a unique partial index guards this against
        concurrent writers too.

        Parameters
        ----------
        scan : int or ScanRecord
        requested : mapping of int to iterable of int
            Array axis -> slice indices to draw (at least one slice, or one end below, in all).
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
            end_names = cv.ends(ends)
            req = {a: s for a, s in cv.slices(requested, "requested", size).items() if s or a in end_names}
            for axis in end_names:
                req.setdefault(axis, frozenset())
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
                requested_json=cv.requested_json(req, names, end_names),
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
