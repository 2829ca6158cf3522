"""Work the ledger hands out: submitted rounds to process (claimed, with a lease), finished scans for the
segmenter to learn from in the order they finished, and requests revised before anyone answered them (part of
:class:`~dil_core.ledger.Ledger`).

A claim is a row update inside one transaction (``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, the
write lock of a SQLite ``BEGIN IMMEDIATE``): of two workers claiming the same round, one gets it. A claim
lapses at ``claim_expires``, so a dead worker's round is taken over; a finished round keeps its last claim as
a record of who processed it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from datetime import timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError

from dil_core.ledger import _convert as cv
from dil_core.ledger._base import _LedgerBase
from dil_core.ledger._orm import LeaseRow, ModelVersionRow, RoundRow, ScanRow
from dil_core.ledger.errors import LedgerStateError
from dil_core.ledger.records import (
    CampaignRecord,
    RoundRecord,
    RoundStatus,
    ScanRecord,
    ScanState,
)

_FINISHED = (ScanState.PASSED, ScanState.AT_QUOTA)


def worker_gone(worker: str) -> bool:
    """Whether a claim or lease holder ``host:pid`` is a process of this machine that has ended.

    A holder on another machine is never judged gone here: its claim or lease lapses when it expires.
    """
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return True
    except PermissionError:
        return False
    return False


class _WorkMixin(_LedgerBase):
    """Claims of submitted rounds; the segmenter's learning from finished scans (private; see ``Ledger``)."""

    # ----------------------------------------------------------------------------------------------- claims
    def submitted_rounds(self, campaign: int | str | CampaignRecord) -> list[tuple[ScanRecord, RoundRecord]]:
        """Every submitted (not yet processed) round of the campaign, oldest first, claimed or not."""
        with self._read() as session:
            camp = self._campaign_row(session, campaign)
            rows = session.execute(
                select(ScanRow, RoundRow)
                .join(RoundRow, RoundRow.scan_id == ScanRow.id)
                .where(ScanRow.campaign_id == camp.id, RoundRow.status == RoundStatus.SUBMITTED)
                .order_by(RoundRow.created_at, RoundRow.id)
            ).all()
            return [(cv.scan_record(s), cv.round_record(r)) for s, r in rows]

    def claim_round(self, rnd: int | RoundRecord, worker: str, *, lease_s: float = 120.0) -> bool:
        """Claim a submitted round for ``worker`` for ``lease_s`` seconds; False if another holds it or it is
        not submitted any more. Claiming again by the same worker renews the lease."""
        worker = cv.text(worker, "worker", max_len=200)
        if not lease_s > 0:
            raise ValueError(f"lease_s: must be > 0, got {lease_s!r}")
        round_id = self._ref_id(rnd, "rnd", RoundRecord)
        with self._write() as session:
            now = self._now()
            stmt = select(RoundRow).where(
                RoundRow.id == round_id,
                RoundRow.status == RoundStatus.SUBMITTED,
                or_(RoundRow.claimed_by.is_(None), RoundRow.claimed_by == worker, RoundRow.claim_expires < now),
            )
            row = session.scalar(stmt.with_for_update(skip_locked=True))
            if row is None:
                return False
            row.claimed_by = worker
            row.claim_expires = now + timedelta(seconds=float(lease_s))
            return True

    def release_round(self, rnd: int | RoundRecord, worker: str) -> None:
        """Give up ``worker``'s claim of a round that is still submitted (after a failure, for another try)."""
        round_id = self._ref_id(rnd, "rnd", RoundRecord)
        with self._write() as session:
            row = session.get(RoundRow, round_id, with_for_update=True)
            if row is not None and row.status is RoundStatus.SUBMITTED and row.claimed_by == worker:
                row.claimed_by = None
                row.claim_expires = None

    # --------------------------------------------------------------------------------------------- leases
    def acquire_lease(self, name: str, holder: str, *, lease_s: float = 120.0) -> bool:
        """Hold the named lease for ``lease_s`` seconds; False while another holder's lease runs (unless that
        holder is a process of this machine that has ended: :func:`worker_gone`). The same holder renews it."""
        name = cv.text(name, "name", max_len=200)
        holder = cv.text(holder, "holder", max_len=200)
        with self._write() as session:
            now = self._now()
            row = session.get(LeaseRow, name, with_for_update=True)
            if row is not None and row.holder != holder and row.expires > now and not worker_gone(row.holder):
                return False
            if row is None:
                session.add(LeaseRow(name=name, holder=holder, expires=now + timedelta(seconds=float(lease_s))))
            else:
                row.holder, row.expires = holder, now + timedelta(seconds=float(lease_s))
            try:
                session.flush()
            except IntegrityError:  # another holder inserted it first
                return False
            return True

    def release_lease(self, name: str, holder: str) -> None:
        """Give up a lease this holder has."""
        with self._write() as session:
            row = session.get(LeaseRow, name, with_for_update=True)
            if row is not None and row.holder == holder:
                session.delete(row)

    # ------------------------------------------------------------------------------------------- learning
    def scans_to_learn(self, campaign: int | str | CampaignRecord) -> list[ScanRecord]:
        """Finished scans (passed or at quota) the segmenter has not learned from yet, in the order they finished."""
        with self._read() as session:
            camp = self._campaign_row(session, campaign)
            rows = session.scalars(
                select(ScanRow)
                .where(ScanRow.campaign_id == camp.id, ScanRow.state.in_(_FINISHED), ScanRow.learned_at.is_(None))
                .order_by(ScanRow.finished_at, ScanRow.id)
            ).all()
            return [cv.scan_record(r) for r in rows]

    def mark_scan_learned(self, scan: int | ScanRecord, tag: str | None) -> ScanRecord:
        """The segmenter has learned from the finished scan; ``tag`` names the checkpoint that holds it.

        Raises
        ------
        LedgerStateError
            The scan is not finished.
        """
        version = None if tag is None else cv.text(str(tag), "tag", max_len=200)
        with self._write() as session:
            row = self._scan_row(session, scan, lock=True)
            if ScanState(row.state) not in _FINISHED:
                raise LedgerStateError(f"scan {row.case_id!r} is {ScanState(row.state).value}: not finished")
            row.learned_at = self._now()
            row.learned_tag = version
            session.flush()
            return cv.scan_record(row)

    def latest_model_tag(self, campaign: int | str | CampaignRecord) -> str | None:
        """The newest segmenter checkpoint of the campaign, the one it predicts with: the latest of the last
        round that trained, the last scan learned from and the last promoted retraining (None: the segmenter
        has not trained yet)."""
        with self._read() as session:
            camp = self._campaign_row(session, campaign)
            rnd = session.execute(
                select(RoundRow.processed_at, RoundRow.model_version)
                .join(ScanRow, ScanRow.id == RoundRow.scan_id)
                .where(ScanRow.campaign_id == camp.id, RoundRow.model_version.is_not(None),
                       RoundRow.status == RoundStatus.PROCESSED)
                .order_by(RoundRow.processed_at.desc(), RoundRow.id.desc())
                .limit(1)
            ).first()
            learned = session.execute(
                select(ScanRow.learned_at, ScanRow.learned_tag)
                .where(ScanRow.campaign_id == camp.id, and_(ScanRow.learned_at.is_not(None),
                                                            ScanRow.learned_tag.is_not(None)))
                .order_by(ScanRow.learned_at.desc(), ScanRow.id.desc())
                .limit(1)
            ).first()
            promoted = session.execute(
                select(ModelVersionRow.created_at, ModelVersionRow.checkpoint)
                .where(ModelVersionRow.campaign_id == camp.id, ModelVersionRow.checkpoint.is_not(None))
                .order_by(ModelVersionRow.created_at.desc(), ModelVersionRow.id.desc())
                .limit(1)
            ).first()
            found = [x for x in (rnd, learned, promoted) if x is not None]
            return None if not found else max(found, key=lambda x: x[0])[1]

    # ------------------------------------------------------------------------------------- revised requests
    def revise_request(
        self,
        rnd: int | RoundRecord,
        requested: Mapping[int, Iterable[int]],
        scores: Mapping[int, Iterable[float]] | None = None,
        *,
        planes: Mapping[int, str] | None = None,
        ends: Mapping[int, Iterable[str]] | None = None,
    ) -> RoundRecord:
        """Replace the slices a *requested* round asks for (a request refreshed with a newer segmenter).

        Raises
        ------
        LedgerStateError
            The round is not ``requested`` (it has a submission, or is processed).
        ValueError
            No slices, indices outside the scan, bad scores.
        """
        round_id = self._ref_id(rnd, "rnd", RoundRecord)
        with self._write() as session:
            row = session.get(RoundRow, round_id, with_for_update=True)
            if row is None:
                raise LedgerStateError(f"rnd: no round with id {round_id} in the ledger")
            if row.status is not RoundStatus.REQUESTED:
                raise LedgerStateError(
                    f"round {row.number} of scan {row.scan_id} is {row.status.value}: only a request still "
                    "waiting for labels can be revised"
                )
            scan_row = self._scan_row(session, row.scan_id, lock=True)
            size = scan_row.geometry_json["size"]
            end_names = cv.ends(ends)
            req = {a: s for a, s in cv.slices(requested, "requested", size).items() if s or a in end_names}
            for axis in end_names:
                req.setdefault(axis, frozenset())
            if not req:
                raise ValueError("requested: at least one slice must be requested")
            row.requested_json = cv.requested_json(req, cv.planes(planes, req), end_names)
            row.proposal_scores_json = cv.scores(scores, size)
            row.created_at = self._now()
            session.flush()
            return cv.round_record(row)

    # ---------------------------------------------------------------------------------------------- reopen
    def reopen_scan(self, scan: int | ScanRecord) -> ScanRecord:
        """Undo a finished scan (an accept, a pass, its quota): it waits for labels again, without its final
        mask, and the segmenter is to forget it.

        In the same transaction every scan the segmenter learned from is marked not learned: the learner then
        learns them again, in the order they finished, from a fresh segmenter (or the last promoted
        retraining), so that no checkpoint holds the reopened scan any more.

        Raises
        ------
        LedgerStateError
            The scan is not finished.
        """
        with self._write() as session:
            row = self._scan_row(session, scan, lock=True)
            state = ScanState(row.state)
            if state not in _FINISHED:
                raise LedgerStateError(f"scan {row.case_id!r} is {state.value}: only a finished scan can be reopened")
            self._transition(row, ScanState.WAITING_FOR_LABELS, self._now())
            row.final_mask_path = None
            for other in session.scalars(
                select(ScanRow).where(ScanRow.campaign_id == row.campaign_id, ScanRow.learned_at.is_not(None))
            ):
                other.learned_at = None
                other.learned_tag = None
            session.flush()
            return cv.scan_record(row)
