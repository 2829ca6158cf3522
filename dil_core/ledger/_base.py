"""The ledger's shared private plumbing: sessions, the clock, row lookups and scan-state transitions.

:class:`_LedgerBase` is the base of every mixin the :class:`~dil_core.ledger.core.Ledger` is composed of
(:mod:`._campaigns`, :mod:`._rounds`, :mod:`._submissions`, :mod:`._models`); it holds only what more than
one of them needs. The attributes it declares are set by ``Ledger.__init__``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from dil_core.ledger._orm import CampaignRow, RoundRow, ScanRow
from dil_core.ledger.errors import LedgerError, LedgerStateError, RecordNotFoundError
from dil_core.ledger.records import (
    SCAN_TRANSITIONS,
    TERMINAL_STATES,
    CampaignRecord,
    RoundRecord,
    ScanRecord,
    ScanState,
)

#: How often a write that collided with a concurrent writer (an ``IntegrityError``) is tried again.
_MAX_RETRIES = 5


class _LedgerBase:
    """Sessions, clock and row lookups shared by the ledger's mixins.

    Private: see :class:`~dil_core.ledger.Ledger`.
    """

    _engine: Engine
    _clock: Callable[[], datetime]  # a Clock (dil_core.ledger.core.Clock)
    _sqlite: bool
    _reads: sessionmaker[Session]
    _writes: sessionmaker[Session]

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
