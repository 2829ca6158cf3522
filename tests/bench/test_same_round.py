"""The benchmarks measure what the product runs: the same demo scans through ``dil campaign run`` (ledger,
files, Prefect flows) and through the benchmarks' in-memory driver give identical slices, labor and masks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from dil.cli import main
from dil_core.config import load_config
from dil_core.io import read_label
from dil_core.ledger import Ledger
from dil_core.methods import get_method

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from _campaign import campaign_case, run_campaign  # noqa: E402

DEMO = REPO / "data" / "demo"
N_SCANS = 6

# Each method as its demo config runs it, at a size that takes seconds per scan on a CPU.
SMALL = {
    "demo": {"stopping": {"seed_scans": 2}, "refine": {"end_steps": 12},
             "training": {"channels": [4, 8, 16], "buffer_b": 8, "buffer_b_star": 16, "device": "cpu"}},
    "demo-paper": {"training": {"channels": [4, 8, 16], "n_f": 3, "device": "cpu"}},
}


def _write_config(tmp_path: Path, base: str) -> Path:
    cases = sorted((DEMO / "images").glob("*.nii.gz"))[:N_SCANS]
    lines = ["case_id,image,ground_truth"] + [
        f"{p.name.removesuffix('.nii.gz')},{p},{DEMO / 'labels' / p.name}" for p in cases
    ]
    (tmp_path / "cohort.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = yaml.safe_load((REPO / "configs" / f"{base}.yaml").read_text(encoding="utf-8"))
    for key, value in SMALL[base].items():
        data[key] = {**data.get(key, {}), **value}
    data.update(name=f"same-{base}", cohort="cohort.csv", workspace="ws")
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.usefixtures("prefect_backend")
@pytest.mark.parametrize("base", ["demo", "demo-paper"])
def test_product_and_benchmark_driver_agree(tmp_path: Path, base: str) -> None:
    path = _write_config(tmp_path, base)
    assert main(["campaign", "run", str(path)]) == 0
    config = load_config(tmp_path / "ws" / "campaign.yaml")
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ws' / 'ledger.db'}", create=False)
    campaign = ledger.get_campaign(config.name)
    scans = sorted(ledger.list_scans(campaign.id), key=lambda s: s.position)
    labor = {lab.scan_id: lab for lab in ledger.labor_by_scan(campaign.id)}

    cases = [campaign_case(s.case_id, Path(s.image_path), Path(s.ground_truth_path), config) for s in scans]
    outcomes, _ = run_campaign(cases, config)

    for scan, outcome, case in zip(scans, outcomes, cases, strict=True):
        product_drawn: dict[int, set[int]] = {}
        for sub in ledger.list_submissions(scan.id):
            for axis, idx in sub.drawn.items():
                product_drawn.setdefault(axis, set()).update(idx)
        bench_drawn = {a: set(v) for a, v in outcome.session.drawn.items() if v}
        assert product_drawn == bench_drawn, scan.case_id
        assert labor[scan.id].slices == outcome.session.n_drawn, scan.case_id
        assert labor[scan.id].fraction == pytest.approx(outcome.session.labor(case.targets), abs=1e-12)
        assert scan.state.value == outcome.state, scan.case_id
        final, _ = read_label(scan.final_mask_path)
        bench_mask = get_method(config.method).mask(outcome.session)
        np.testing.assert_array_equal(final > 0, bench_mask > 0, err_msg=scan.case_id)
    assert all(o.state == "passed" for o in outcomes)
    assert sum(len(o.rounds) for o in outcomes) > N_SCANS  # real rounds happened, not only reviews
