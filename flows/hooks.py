"""Hooks the shell around the flows installs: tracking (MLflow) is injected here, never imported by a flow.

A flow reports what happened through ``ctx.tracking``, an object with the :class:`Tracking` methods. The
default, :class:`NoTracking`, records nothing (the ledger alone is the source of truth). ``dil`` installs its
MLflow tracking with :func:`install_tracking` before it runs a flow; a deployment's entry point in ``dil``
does the same in the worker process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

__all__ = ["NoTracking", "Tracking", "install_tracking", "tracking_for"]


class Tracking(Protocol):
    """What the flows tell the tracking store. Implementations must never fail a round (log and go on)."""

    def round_processed(self, ctx: Any, case_id: str, round_number: int, metrics: Mapping[str, Any] | None) -> None:
        """A round (or an accept) is in the ledger."""
        ...

    def segmenter_learned(self, ctx: Any, case_id: str, tag: str) -> int | None:
        """The segmenter checkpoint ``tag`` has learned from the finished scan ``case_id``; its version, if any."""
        ...

    def champion(self, ctx: Any) -> tuple[int, dict[str, Any]] | None:
        """The version and state dict the ``champion`` alias names, or None."""
        ...

    def register_retrained(
        self, ctx: Any, model: Any, *, train_cases: list[str], val_cases: list[str], params: Mapping[str, Any],
        metrics: Mapping[str, float], losses: list[float], promoted: bool, kind: str = "retrain",
    ) -> tuple[int, str]:
        """Record a retraining (run, metrics, model version; ``champion`` moved if promoted); (version, uri).

        ``kind`` names who trained it: ``retrain`` (the scheduled retraining) or ``continual`` (the gate of
        continuous training)."""
        ...


class NoTracking:
    """Tracking that records nothing (the default until the shell installs one)."""

    def round_processed(self, ctx: Any, case_id: str, round_number: int, metrics: Mapping[str, Any] | None) -> None:
        return None

    def segmenter_learned(self, ctx: Any, case_id: str, tag: str) -> int | None:
        return None

    def champion(self, ctx: Any) -> tuple[int, dict[str, Any]] | None:
        return None

    def register_retrained(self, ctx: Any, model: Any, **kwargs: Any) -> tuple[int, str]:
        raise RuntimeError("retraining registers its segmenter in a tracking store; none is installed")


_factory: Callable[[Any], Tracking] | None = None


def install_tracking(factory: Callable[[Any], Tracking] | None) -> None:
    """Use ``factory(ctx)`` as every campaign context's tracking from now on (None: back to no tracking)."""
    global _factory
    _factory = factory


def tracking_for(ctx: Any) -> Tracking:
    """The tracking a newly opened context gets."""
    return NoTracking() if _factory is None else _factory(ctx)
