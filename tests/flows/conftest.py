"""One Prefect test server for the whole session (its start-up is paid once)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def _prefect(prefect_backend: None) -> Iterator[None]:
    yield


def small_config(tmp_path: Path, n_cases: int = 3, **overrides: object) -> Path:
    """A campaign config on the first ``n_cases`` demo scans, sized to run in seconds on a CPU."""
    demo = REPO / "data" / "demo"
    lines = ["case_id,image,ground_truth"]
    for img in sorted((demo / "images").glob("*.nii.gz"))[:n_cases]:
        cid = img.name.removesuffix(".nii.gz")
        lines.append(f"{cid},{img},{demo / 'labels' / img.name}")
    (tmp_path / "cohort.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg: dict = {
        "name": "test",
        "cohort": "cohort.csv",
        "workspace": "ws",
        "stopping": {"rho": 0.8, "quota_gamma": 16, "n_inter": 8},
        "training": {"channels": [4, 8, 16], "grid": [32, 48, 32], "n_f": 3, "buffer_b": 2, "buffer_b_star": 4,
                     "replay_m": 1, "device": "cpu"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path
