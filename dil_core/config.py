"""Campaign configuration: YAML parsed once into frozen, validated pydantic models.

Every parameter of the paper has a default and a checked range. Unknown keys and out-of-range values are
rejected with a :class:`ConfigError` that names the key. The flows read a :class:`CampaignConfig` and pass
plain typed values into the core; nothing below the flow boundary sees a dict or a path to a config.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dil_core.names import GUIDANCE_STRATEGY_NAMES, PROPAGATION_BACKEND_NAMES
from dil_core.typing import Plane

__all__ = [
    "AnnotatorConfig",
    "CampaignConfig",
    "ConfigError",
    "ContinualConfig",
    "GuidanceConfig",
    "PropagationConfig",
    "RefineConfig",
    "StoppingConfig",
    "TrackingConfig",
    "TrainingConfig",
    "load_config",
    "parse_config",
]

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message names the key."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class StopRule(str, Enum):
    """How a scan is judged done. ``ground_truth`` is for simulation only."""

    GROUND_TRUTH = "ground_truth"
    ACCEPT = "accept"
    ESTIMATED = "estimated"
    CONSECUTIVE = "consecutive"


class StoppingConfig(_Frozen):
    """Algorithm 3's loop bounds and the quality bar.

    rho: Dice a scan's mask must reach. quota_gamma: most slices per scan over all planes (gamma).
    n_inter: most rounds per scan. rule: how rho is judged (ground truth in simulation; in real use the
    annotator's accept, or an estimated Dice). seed_scans, rho_seed: the first ``seed_scans`` scans of the
    cohort are labeled as on a cold start (no prediction shown) to the higher bar ``rho_seed``: careful
    masks for the segmenter to start from (method ``refine``).
    """

    rho: float = Field(0.85, gt=0.0, lt=1.0)
    seed_scans: int = Field(0, ge=0, le=100_000)
    rho_seed: float = Field(0.9, gt=0.0, lt=1.0)
    quota_gamma: int = Field(40, ge=1, le=10_000)
    n_inter: int = Field(20, ge=1, le=1_000)
    rule: StopRule = StopRule.GROUND_TRUTH


class GuidanceConfig(_Frozen):
    """Where the next slices go (Algorithm 4, eq. 17).

    strategy: registered guidance strategy. tau: slices per plane per round. planes: clinical planes drawn on.
    w1: weight of the proxy/prediction disagreement against the distance to drawn slices (eq. 17).
    first_round: strategy for a round with no trained segmenter yet (Algorithm 5 line 9 uses random).
    """

    strategy: str = "model"
    first_round: str = "random"
    tau: int = Field(1, ge=1, le=64)
    planes: tuple[Plane, ...] = (Plane.CORONAL, Plane.SAGITTAL)
    w1: Probability = 0.5

    @field_validator("strategy", "first_round")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        if name not in GUIDANCE_STRATEGY_NAMES:
            raise ValueError(f"unknown guidance strategy {name!r}; known: {', '.join(GUIDANCE_STRATEGY_NAMES)}")
        return name

    @field_validator("planes")
    @classmethod
    def _planes_unique(cls, planes: tuple[Plane, ...]) -> tuple[Plane, ...]:
        if not planes:
            raise ValueError("at least one plane is required")
        if len(set(planes)) != len(planes):
            raise ValueError(f"planes must be distinct, got {[p.value for p in planes]}")
        return planes


class PropagationConfig(_Frozen):
    """Proxy mask construction (Algorithm 2). backend: a registered propagation backend.

    task_runner: where the per-slice registrations of an ``ants*`` backend run: ``threads`` (Prefect's thread
    pool in the round's process) or ``dask`` (prefect-dask's DaskTaskRunner: the cluster at ``dask_address``,
    a ``tcp://host:port`` scheduler, or a local cluster of ``dask_workers`` single-threaded processes that the
    round service starts once).
    """

    backend: str = "mci"
    task_runner: Literal["threads", "dask"] = "threads"
    dask_address: str | None = Field(None, pattern=r"^(tcp|tls|inproc|ucx)://\S+$")
    dask_workers: int = Field(2, ge=1, le=1024)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, name: str) -> str:
        if name not in PROPAGATION_BACKEND_NAMES:
            raise ValueError(f"unknown propagation backend {name!r}; known: {', '.join(PROPAGATION_BACKEND_NAMES)}")
        return name


class TrainingConfig(_Frozen):
    """The segmenter and its online training (sec. 2.1-2.2, Algorithm 1, eqs. 2, 9-12)."""

    segmenter: Literal["unet", "vnet", "dynunet"] = "unet"
    channels: tuple[int, ...] = (16, 32, 64, 128)
    grid: tuple[int, int, int] = (48, 64, 48)
    n_f: int = Field(20, ge=0, le=10_000)
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    buffer_b: int = Field(8, ge=1, le=10_000)
    buffer_b_star: int = Field(16, ge=2, le=100_000)
    replay_m: int = Field(2, ge=0, le=10_000)
    lambda_l: Probability = 0.5
    lambda_y: Probability = 0.8
    weight_scheme: Literal["exp", "constant", "none"] = "exp"
    omega: float = Field(1.0, gt=0.0, le=1_000.0)
    weight_length: float = Field(1.0, gt=0.0, le=1_000.0)
    weight_floor: float = Field(0.0, ge=0.0, lt=1.0)
    test_time_flips: bool = False
    #: Train on random patches of this size (half of them centred on the target) and predict with a sliding
    #: window of it; None: whole grids. For a fine grid on a large scan (left atrium, BraTS).
    patch: tuple[int, int, int] | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = Field(0, ge=0)

    @field_validator("channels")
    @classmethod
    def _channels(cls, channels: tuple[int, ...]) -> tuple[int, ...]:
        if len(channels) < 2 or any(c < 1 for c in channels):
            raise ValueError(f"channels must be at least two positive integers, got {list(channels)}")
        return channels

    @field_validator("grid")
    @classmethod
    def _grid(cls, grid: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(g < 8 or g % 8 for g in grid):
            raise ValueError(f"grid sizes must be multiples of 8 and >= 8, got {list(grid)}")
        return grid

    @model_validator(mode="after")
    def _buffers(self) -> TrainingConfig:
        if self.buffer_b_star <= self.buffer_b:
            raise ValueError(
                f"buffer_b_star must be greater than buffer_b (Algorithm 1), got b*={self.buffer_b_star}, "
                f"b={self.buffer_b}"
            )
        if self.replay_m > self.buffer_b:
            raise ValueError(f"replay_m must be at most buffer_b, got m={self.replay_m}, b={self.buffer_b}")
        if self.segmenter == "vnet" and any(g % 16 for g in self.grid):
            raise ValueError(f"grid sizes must be multiples of 16 for vnet, got {list(self.grid)}")
        if self.segmenter == "dynunet" and len(self.channels) < 3:
            raise ValueError(f"channels: dynunet needs at least 3 levels, got {list(self.channels)}")
        if self.patch is not None:
            divisor = 16 if self.segmenter == "vnet" else 2 ** (len(self.channels) - 1)
            if any(p < divisor or p % divisor or p > g for p, g in zip(self.patch, self.grid, strict=True)):
                raise ValueError(
                    f"patch sizes must be multiples of {divisor} (the segmenter's divisor) and at most the grid "
                    f"{list(self.grid)}, got {list(self.patch)}"
                )
        return self


class RefineConfig(_Frozen):
    """The ``refine`` method (``dil_core.refine``): the prediction refined by the drawn slices.

    blend_scale: length (mm) over which a drawn slice's proxy outweighs the prediction, ``exp(-d / scale)``.
    end_steps: optimiser steps on a scan's final mask when it finishes (the only training of the method).
    resample_every: the replayed samples are drawn afresh every this many of those steps.
    trust: while the prediction's Dice with the drawn slices is below this, slices are chosen by
    ``guidance.first_round`` (the prediction is not followed); set_aside: below this the mask is the proxy alone;
    fallback_after: so it is once this many slices are drawn and the prediction is still below ``trust``
    (None: never).
    correction_length: slices over which a drawn slice's correction of the prediction fades.
    spread: the next slice is chosen where the mask is least sure, weighted by ``1 - exp(-d / spread)`` for a
    slice ``d`` slices from the nearest drawn one (0: unweighted).
    """

    blend_scale: float = Field(3.0, gt=0.0, le=1_000.0)
    end_steps: int = Field(100, ge=0, le=100_000)
    resample_every: int = Field(4, ge=1, le=100_000)
    trust: Probability = 0.75
    set_aside: Probability = 0.5
    fallback_after: int | None = Field(None, ge=1, le=100_000)
    correction_length: float = Field(6.0, gt=0.0, le=1_000.0)
    spread: float = Field(2.0, ge=0.0, le=1_000.0)


class ContinualConfig(_Frozen):
    """Continuous training between submissions (``dil_core.continual``).

    enabled: the round service trains a candidate segmenter on every finished scan's final mask while it
    waits for submissions, and the campaign predicts with the ``champion`` the gate promotes (the method's
    own end-of-scan steps are then not taken: every champion is a state of the one candidate).
    batch: finished scans per step; gate_every: steps between gates; holdout_every / holdout_size: every
    ``holdout_every``-th finished scan validates, the last ``holdout_size`` of them form the rolling hold-out;
    checkpoint_every: steps between checkpoints of the candidate; share: share of the steps this machine could
    run in a physician's minutes that a simulated campaign hands out (the service trains whenever it is idle);
    ema: the gate measures and promotes a moving average of the candidate's weights with this decay (None: the
    weights as trained). 0.99 by default: lower labor than the weights as trained on both organs measured
    (``bench/README.md`` section 8). seed_share: the share of each batch drawn from the seed scans (labeled to
    ``stopping.rho_seed``) while other finished scans train too; None: every training scan alike.
    """

    enabled: bool = False
    batch: int = Field(2, ge=1, le=256)
    gate_every: int = Field(50, ge=1, le=100_000)
    holdout_every: int = Field(5, ge=2, le=10_000)
    holdout_size: int = Field(3, ge=1, le=10_000)
    checkpoint_every: int = Field(200, ge=1, le=1_000_000)
    share: float = Field(1.0, gt=0.0, le=1.0)
    ema: float | None = Field(0.99, gt=0.0, lt=1.0)
    seed_share: float | None = Field(None, ge=0.0, le=1.0)


class AnnotatorConfig(_Frozen):
    """Who draws: the ground-truth oracle (simulation) or a physician through requests and submissions.

    knows_extent: in simulation, whether guidance is told the target's extent on each plane (the paper's
    protocol: its simulated user draws target slices); without it (and always with physicians) a method that
    needs the extent asks for the first and last slice showing the target. open_scans: with physicians, how
    many scans have a request open at a time (a rolling queue: the next scan
    opens when one finishes, with the segmenter that has learned from it). minutes_per_slice, review_minutes:
    physician time of one drawn slice and of reviewing one scan's mask (the report's and ``dil status``'s
    minutes; a scan accepted without drawing costs its review).
    """

    kind: Literal["simulated", "human"] = "simulated"
    knows_extent: bool = True
    open_scans: int = Field(2, ge=1, le=10_000)
    minutes_per_slice: float = Field(1.5, ge=0.0, le=1_000.0)
    review_minutes: float = Field(0.5, ge=0.0, le=1_000.0)


class TrackingConfig(_Frozen):
    """Where state goes. None means the embedded default inside the workspace."""

    ledger_url: str | None = None
    mlflow_uri: str | None = None

    @field_validator("ledger_url", "mlflow_uri")
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        # campaign.yaml is copied into the workspace: a password written there would be readable by whoever
        # reads the workspace; the database drivers take it from the environment instead
        if url is not None and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:[^/@]+@", url):
            raise ValueError(
                "holds a password: write the URL without it and give the password in the environment "
                "(PGPASSWORD for PostgreSQL, MLFLOW_TRACKING_PASSWORD for an MLflow server)"
            )
        return url
    prefect_api_url: str | None = None


class CampaignConfig(_Frozen):
    """A labeling campaign. Relative paths are resolved against the config file's folder."""

    name: str = Field(..., min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    cohort: Path
    workspace: Path
    annotator: AnnotatorConfig = AnnotatorConfig()
    stopping: StoppingConfig = StoppingConfig()
    guidance: GuidanceConfig = GuidanceConfig()
    propagation: PropagationConfig = PropagationConfig()
    training: TrainingConfig = TrainingConfig()
    tracking: TrackingConfig = TrackingConfig()
    final_mask: Literal["proxy", "proxy+prediction"] = "proxy"
    #: A name of ``dil_core.methods.METHODS``; what a method cannot be combined with is checked there
    #: (:func:`dil_core.methods.check_config`) when a campaign opens.
    method: Literal["paper", "refine"] = "paper"
    refine: RefineConfig = RefineConfig()
    continual: ContinualConfig = ContinualConfig()

    @model_validator(mode="after")
    def _stop_rule_fits_annotator(self) -> CampaignConfig:
        if self.annotator.kind == "human" and self.stopping.rule is StopRule.GROUND_TRUTH:
            raise ValueError(
                "stopping.rule: 'ground_truth' needs the simulated annotator; with annotator.kind 'human' "
                "use 'accept' or 'estimated'"
            )
        return self


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        value = e.get("input")
        shown = "" if e["type"] == "missing" or isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {key}: {msg}{shown}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], *, base_dir: Path | None = None, source: str = "") -> CampaignConfig:
    """Validate a configuration mapping; resolve relative ``cohort`` and ``workspace`` against ``base_dir``.

    Raises
    ------
    ConfigError
        Naming each bad key, the rule and the bad value.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration {source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        cfg = CampaignConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from err
    if base_dir is not None:
        updates = {
            k: (base_dir / getattr(cfg, k)).resolve()
            for k in ("cohort", "workspace")
            if not getattr(cfg, k).is_absolute()
        }
        cfg = cfg.model_copy(update=updates)
    return cfg


def load_config(path: str | Path) -> CampaignConfig:
    """Read a YAML campaign configuration.

    Raises
    ------
    ConfigError
        If the file is missing or not valid YAML, or any key is unknown or out of range.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read configuration {path}: {err.strerror or err}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"configuration {path} is not valid YAML: {err}") from err
    return parse_config(data or {}, base_dir=path.resolve().parent, source=str(path))
