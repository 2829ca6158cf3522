from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dil_core.config import CampaignConfig, ConfigError, load_config, parse_config
from dil_core.typing import Plane

REPO = Path(__file__).resolve().parents[2]
BASE = {"name": "t", "cohort": "c.csv", "workspace": "ws"}


@pytest.mark.parametrize("name", ["demo.yaml", "demo-paper.yaml", "paper.yaml"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(REPO / "configs" / name)
    assert isinstance(cfg, CampaignConfig)
    assert cfg.cohort.is_absolute() and cfg.workspace.is_absolute()
    assert cfg.stopping.rho == 0.85


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = parse_config(dict(BASE), base_dir=tmp_path)
    assert cfg.cohort == (tmp_path / "c.csv").resolve()
    assert cfg.guidance.planes == (Plane.CORONAL, Plane.SAGITTAL)
    assert cfg.training.buffer_b_star > cfg.training.buffer_b
    with pytest.raises(Exception):  # frozen
        cfg.stopping.rho = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"stopping": {"rho": 1.2}}, "stopping.rho"),
        ({"stopping": {"rho": 0}}, "stopping.rho"),
        ({"guidance": {"tau": 0}}, "guidance.tau"),
        ({"guidance": {"w1": -0.1}}, "guidance.w1"),
        ({"guidance": {"planes": ["axial", "axial"]}}, "guidance.planes"),
        ({"guidance": {"planes": ["oblique"]}}, "guidance.planes"),
        ({"training": {"lambda_l": 2}}, "training.lambda_l"),
        ({"training": {"lambda_y": -1}}, "training.lambda_y"),
        ({"training": {"buffer_b": 8, "buffer_b_star": 8}}, "buffer_b_star"),
        ({"training": {"replay_m": 9}}, "replay_m"),
        ({"training": {"learning_rate": 0}}, "training.learning_rate"),
        ({"training": {"segmenter": "resnet"}}, "training.segmenter"),
        ({"training": {"grid": [48, 60, 48]}}, "training.grid"),
        ({"training": {"segmenter": "dynunet", "channels": [8, 16]}}, "dynunet needs at least 3 levels"),
        ({"training": {"device": "tpu"}}, "training.device"),
        ({"training": {"weight_scheme": "gauss"}}, "training.weight_scheme"),
        ({"stopping": {"quota_gamma": 0}}, "stopping.quota_gamma"),
        ({"stopping": {"n_inter": 0}}, "stopping.n_inter"),
        ({"bogus": 1}, "bogus"),
        ({"training": {"lr": 0.1}}, "training.lr"),
        ({"name": "a/b"}, "name"),
        ({"annotator": {"kind": "human"}}, "stopping.rule"),
        ({"refine": {"spread": -1}}, "refine.spread"),
        ({"refine": {"trust": 1.5}}, "refine.trust"),
        ({"refine": {"fallback_after": 0}}, "refine.fallback_after"),
    ],
)
def test_bad_values_name_the_key(override: dict, key: str) -> None:
    data = {**BASE, **override}
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config(data, source="x.yaml")


def test_unknown_key_says_unknown() -> None:
    with pytest.raises(ConfigError, match="bogus: unknown key"):
        parse_config({**BASE, "bogus": 1})


def test_load_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text(yaml.safe_dump([1, 2]), encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(lst)
    missing = tmp_path / "m.yaml"
    missing.write_text("name: x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="cohort"):
        load_config(missing)


def test_the_names_a_config_may_use_are_the_registries() -> None:
    from dil_core.guidance import GUIDANCE_STRATEGIES
    from dil_core.names import GUIDANCE_STRATEGY_NAMES, PROPAGATION_BACKEND_NAMES
    from dil_core.propagation import PROPAGATION_BACKENDS

    assert sorted(GUIDANCE_STRATEGIES) == list(GUIDANCE_STRATEGY_NAMES)
    assert sorted(PROPAGATION_BACKENDS) == list(PROPAGATION_BACKEND_NAMES)


def test_unknown_strategy_and_backend_names_are_refused_at_load() -> None:
    base = {"name": "x", "cohort": "c.csv", "workspace": "w"}
    with pytest.raises(ConfigError, match="guidance.strategy.*unknown guidance strategy 'modle'"):
        parse_config({**base, "guidance": {"strategy": "modle"}})
    with pytest.raises(ConfigError, match="propagation.backend.*unknown propagation backend 'ants'"):
        parse_config({**base, "propagation": {"backend": "ants"}})
