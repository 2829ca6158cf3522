"""Errors raised by the campaign ledger."""

from __future__ import annotations


class LedgerError(RuntimeError):
    """Base class of every error the ledger raises on purpose."""


class LedgerNotFoundError(LedgerError, FileNotFoundError):
    """No ledger where one was expected (``create=False``)."""


class LedgerSchemaError(LedgerError):
    """The ledger's schema version is not the one this code understands."""


class LedgerStateError(LedgerError):
    """The write is not allowed in the campaign's current state (a transition, an open round)."""


class RecordNotFoundError(LedgerError, LookupError):
    """A campaign, scan or round that the ledger does not hold."""
