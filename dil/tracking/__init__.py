"""MLflow tracking of a campaign: per-round metrics, cumulative labor, and the segmenter's registered versions.

One MLflow experiment per campaign (``dil/<campaign>``), organised so that a scan's rounds are steps:

* a **campaign run** (run name ``campaign``, tag ``kind=campaign``) holds the cumulative labor of the whole
  campaign at step = rounds processed in the campaign so far (the paper's Figure 8 as a metric curve);
* one **scan run** per scan (run name = case id, tags ``campaign``, ``case``, ``kind=scan``), nested under the
  campaign run, holds that scan's per-round metrics at step = round number;
* a **registered model** ``dil-<campaign>-segmenter``: every segmenter that learned from a finished scan
  (F_prev of Algorithm 5) or comes out of a retraining is a version. MLflow resolves the reserved alias
  ``latest`` to the newest version by itself; ``champion`` is moved by the retraining flow only.

:mod:`dil.tracking.store` holds the :class:`Tracker` (runs and metrics), :mod:`dil.tracking.registry` its
registry methods, :mod:`dil.tracking.hooks` the :class:`MlflowTracking` installed into the flows.
"""

from __future__ import annotations

from dil.tracking._common import (
    ModelVersionInfo,
    default_tracking_uri,
    flatten_round_metrics,
    processed_rounds,
)
from dil.tracking.hooks import (
    CHAMPION,
    MlflowTracking,
    install,
    sync_campaign,
    tracker_for,
)
from dil.tracking.store import Tracker

__all__ = [
    "CHAMPION",
    "MlflowTracking",
    "ModelVersionInfo",
    "Tracker",
    "default_tracking_uri",
    "flatten_round_metrics",
    "install",
    "processed_rounds",
    "sync_campaign",
    "tracker_for",
]
