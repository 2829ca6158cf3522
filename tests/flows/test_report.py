"""The labor-cost report: numbers against a hand-built campaign, the page in headless Chromium, bad inputs.

``build_campaign`` writes a small finished campaign by hand through the Ledger API (no segmenter is trained):
three demo scans finished (3, 2 and 4 rounds of one coronal + one sagittal slice each; final masks are copies
of the ground truth) and one scan in progress, with per-round metrics, stop decisions, MLflow round logs and a
registered segmenter version per finished scan. The retraining tests use it too.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.flows.conftest import REPO

DEMO = REPO / "data" / "demo"

#: case -> (processed rounds, final state or None for a scan still in progress)
PLAN: dict[str, tuple[int, str | None]] = {
    "hippocampus_001": (3, "passed"),
    "hippocampus_003": (2, "passed"),
    "hippocampus_004": (4, "at_quota"),
    "hippocampus_006": (1, None),
}
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0",
]


@dataclass
class Built:
    ws: Path
    targets: dict[str, dict[str, int]]
    versions: dict[str, int]


def _metrics(i: int, axes: dict[str, int]) -> dict:
    """Hand-set round metrics: Dice values rise by 0.1 (proxy), 0.1 (prediction), 0.05 (proxy vs prediction)."""
    return {
        "slices_drawn": {str(a): i for a in axes.values()},
        "dice_gt_proxy": round(0.5 + 0.1 * i, 6),
        "dice_gt_prediction": round(0.4 + 0.1 * i, 6),
        "dice_proxy_prediction": round(0.6 + 0.05 * i, 6),
        "dice_gt_mask": round(0.5 + 0.1 * i, 6),
        "stop_value": round(0.5 + 0.1 * i, 6),
    }


def build_campaign(tmp_path: Path, *, track: bool = True) -> Built:
    """A campaign in ``tmp_path/ws`` built by hand through the Ledger API (see the module docstring)."""
    import yaml

    from dil.tracking import Tracker, flatten_round_metrics, processed_rounds
    from dil_core.config import parse_config
    from dil_core.io import read_label, read_scan, write_label
    from dil_core.labor import target_slice_counts
    from dil_core.ledger import Ledger, store_submission_file
    from dil_core.models import build_segmenter
    from dil_core.planes import axis_of
    from dil_core.preprocess import fit_preprocessor

    lines = ["case_id,image,ground_truth"]
    for case in PLAN:
        lines.append(f"{case},{DEMO / 'images' / (case + '.nii.gz')},{DEMO / 'labels' / (case + '.nii.gz')}")
    (tmp_path / "cohort.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg_dict = {
        "name": "handmade",
        "cohort": "cohort.csv",
        "workspace": "ws",
        "stopping": {"rho": 0.8, "quota_gamma": 16, "n_inter": 8},
        "training": {"channels": [4, 8, 16], "grid": [32, 48, 32], "n_f": 1, "buffer_b": 2, "buffer_b_star": 4,
                     "replay_m": 1, "device": "cpu", "learning_rate": 0.01},
    }
    (tmp_path / "campaign.yaml").write_text(yaml.safe_dump(cfg_dict), encoding="utf-8")
    cfg = parse_config(cfg_dict, base_dir=tmp_path)
    ws = cfg.workspace
    ws.mkdir(parents=True)
    shutil.copyfile(tmp_path / "campaign.yaml", ws / "campaign.yaml")
    ledger = Ledger.open(f"sqlite:///{ws / 'ledger.db'}", create=True)
    campaign = ledger.create_campaign("handmade", cfg.model_dump(mode="json"))
    for case in PLAN:  # as flows.campaign.add_scan queues a scan
        image = read_scan(DEMO / "images" / f"{case}.nii.gz")
        gt, _ = read_label(DEMO / "labels" / f"{case}.nii.gz")
        g = image.geometry
        ledger.add_scan(
            campaign.id, case, str(DEMO / "images" / f"{case}.nii.gz"),
            {"size": list(g.size), "spacing": list(g.spacing), "origin": list(g.origin), "direction": list(g.direction)},
            ground_truth_path=str(DEMO / "labels" / f"{case}.nii.gz"),
            preprocessing=fit_preprocessor(image.array, grid=cfg.training.grid).to_dict(),
            target_slices=target_slice_counts(gt),
        )
    tracker = Tracker.open(ws, "handmade") if track else None
    model = build_segmenter("unet", channels=(4, 8, 16), seed=0)
    targets: dict[str, dict[str, int]] = {}
    versions: dict[str, int] = {}
    finished = 0
    for case, (n_rounds, state) in PLAN.items():
        scan = ledger.find_scan(campaign.id, case)
        gt, geometry = read_label(DEMO / "labels" / f"{case}.nii.gz")
        gt = (gt > 0).astype(np.uint8)
        axes = {p: axis_of(p, geometry) for p in ("coronal", "sagittal")}
        targets[case] = {p: int(scan.target_slices[a]) for p, a in axes.items()}
        picks = {}
        for p, a in axes.items():
            other = tuple(b for b in range(3) if b != a)
            idx = np.flatnonzero(gt.any(axis=other))
            picks[a] = [int(v) for v in np.linspace(idx[0], idx[-1], n_rounds + 2)[1:-1].round()]
        for i in range(1, n_rounds + 1):
            requested = {a: (picks[a][i - 1],) for a in axes.values()}
            rnd = ledger.open_round(scan.id, requested, planes={a: p for p, a in axes.items()})
            label = np.zeros_like(gt)
            for a, (k,) in requested.items():
                sl = [slice(None)] * 3
                sl[a] = k
                label[tuple(sl)] = gt[tuple(sl)]
            (ws / "inbox" / case).mkdir(parents=True, exist_ok=True)
            path = write_label(ws / "inbox" / case / f"round-{i}.nii.gz", label, geometry)
            sha, stored = store_submission_file(path, ws / "submissions" / case)
            rows = [
                {"axis": a, "plane": p, "slices": 1, "fraction": 1 / targets[case][p]} for p, a in axes.items()
            ]
            ledger.record_submission(scan.id, rnd.id, sha, stored, path.name, {a: list(v) for a, v in requested.items()}, rows)
            metrics = _metrics(i, axes)
            last = i == n_rounds and state is not None
            if last:
                (ws / "masks").mkdir(exist_ok=True)
                final = shutil.copyfile(DEMO / "labels" / f"{case}.nii.gz", ws / "masks" / f"{case}_seg.nii.gz")
                ledger.record_stop(scan.id, rnd.id, "ground_truth", metrics["dice_gt_mask"], state == "passed",
                                   finish=state, final_mask_path=str(final))
            else:
                ledger.record_stop(scan.id, rnd.id, "ground_truth", metrics["dice_gt_mask"], False)
            ledger.mark_round_processed(rnd.id, metrics, f"s{scan.id}-r{i}")
            if tracker is not None:
                tracker.log_round(
                    case, i,
                    flatten_round_metrics(metrics, planes=rnd.planes, timings={"propagate": 0.01, "train": 0.5},
                                          labor_fraction=sum(i / targets[case][p] for p in axes)),
                    cumulative_labor=ledger.cumulative_labor(campaign.id),
                    rounds_total=processed_rounds(ledger, campaign.id),
                )
            if last:
                finished += 1
                if tracker is not None:
                    v = tracker.register_segmenter(
                        model, case_id=case, rounds=n_rounds, scans_seen=finished, state=state,
                        tags={"segmenter": "unet", "channels": "4,8,16"},
                    )
                    ledger.register_model_version(campaign.id, tracker.model_uri(v), scans_seen=finished,
                                                  rounds_seen=processed_rounds(ledger, campaign.id), version=v)
                    versions[case] = v
        if state is None:
            ledger.open_round(scan.id, {axes["coronal"]: (picks[axes["coronal"]][-1],)},
                              planes={axes["coronal"]: "coronal"})
    ledger.close()
    return Built(ws, targets, versions)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build_campaign(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def written(built: Built) -> tuple[Path, Path]:
    from dil.report import write_report

    return write_report(built.ws, minutes_per_slice=2.0)


def _csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as fh:
        return {row["case_id"]: row for row in csv.DictReader(fh)}


# ------------------------------------------------------------------------------------------------ numbers
def test_csv_rows_match_the_hand_built_campaign(built: Built, written: tuple[Path, Path]) -> None:
    html_path, csv_path = written
    assert html_path == built.ws / "report" / "report.html" and csv_path == built.ws / "report" / "scans.csv"
    rows = _csv(csv_path)
    assert list(rows) == list(PLAN)
    for case, (n, state) in PLAN.items():
        row = rows[case]
        t = built.targets[case]
        # one coronal and one sagittal slice per processed round; an open request is no labor until submitted
        drawn_c, drawn_s = n, n
        assert row["state"] == (state or "waiting_for_labels")
        assert int(row["rounds"]) == n
        assert (int(row["slices_coronal"]), int(row["slices_sagittal"])) == (drawn_c, drawn_s)
        assert int(row["slices_total"]) == drawn_c + drawn_s
        assert float(row["labor_fraction"]) == pytest.approx(drawn_c / t["coronal"] + drawn_s / t["sagittal"], abs=1e-6)
        assert (int(row["target_slices_coronal"]), int(row["target_slices_sagittal"])) == (t["coronal"], t["sagittal"])
        full = (t["coronal"] + t["sagittal"]) / 2
        assert float(row["full_contouring_slices"]) == pytest.approx(full, abs=1e-3)
        assert float(row["minutes_spent"]) == pytest.approx(2.0 * (drawn_c + drawn_s))
        if state is None:
            assert row["slices_saved"] == "" and row["minutes_saved"] == ""
        else:
            assert float(row["slices_saved"]) == pytest.approx(full - 2 * n, abs=1e-3)
            assert float(row["minutes_saved"]) == pytest.approx(2.0 * (full - 2 * n), abs=1e-3)
            assert float(row["dice_gt_mask"]) == pytest.approx(0.5 + 0.1 * n)
            assert int(row["segmenter_version_registered"]) == built.versions[case]
        assert float(row["dice_gt_proxy"]) == pytest.approx(0.5 + 0.1 * n)
        assert float(row["dice_proxy_prediction"]) == pytest.approx(0.6 + 0.05 * n)
    # F_prev: the first scan starts cold, each later one with the version the previous scan registered
    assert rows["hippocampus_001"]["segmenter_version_at_start"] == ""
    assert int(rows["hippocampus_003"]["segmenter_version_at_start"]) == built.versions["hippocampus_001"]
    assert int(rows["hippocampus_004"]["segmenter_version_at_start"]) == built.versions["hippocampus_003"]
    assert int(rows["hippocampus_006"]["segmenter_version_at_start"]) == built.versions["hippocampus_004"]


def test_table7_and_savings(built: Built) -> None:
    from dil.report import collect, table7

    data = collect(built.ws, minutes_per_slice=1.5)
    order = [s.case_id for s in data.finished]
    assert order == ["hippocampus_001", "hippocampus_003", "hippocampus_004"]
    rows = table7(data)
    # 3 finished scans: ceil(0.2*3)=1, ceil(0.4*3)=2, ceil(0.6*3)=2, ceil(0.8*3)=3, 3
    assert [r["scans"] for r in rows] == [1, 2, 2, 3, 3]
    rounds = [PLAN[c][0] for c in order]
    for r in rows:
        k = r["scans"]
        assert r["drawn_coronal"] == r["drawn_sagittal"] == sum(rounds[:k])
        assert r["full_coronal"] == sum(built.targets[c]["coronal"] for c in order[:k])
        assert r["full_sagittal"] == sum(built.targets[c]["sagittal"] for c in order[:k])
    sv = data.savings()
    full = sum((built.targets[c]["coronal"] + built.targets[c]["sagittal"]) / 2 for c in order)
    assert sv["finished"] == 3 and sv["full_contourings"] == 3
    assert sv["slices_drawn"] == 2 * sum(rounds)
    assert sv["slices_saved"] == pytest.approx(full - 2 * sum(rounds))
    assert sv["minutes_saved"] == pytest.approx(1.5 * (full - 2 * sum(rounds)))
    labor = sum(PLAN[c][0] * (1 / built.targets[c]["coronal"] + 1 / built.targets[c]["sagittal"]) for c in order)
    assert sv["labor"] == pytest.approx(labor)
    assert sv["labor_saved"] == pytest.approx(3 - labor)
    assert data.versions_source == "MLflow registry"
    assert [v["version"] for v in data.versions] == sorted(built.versions.values())
    assert "latest" in data.versions[-1]["aliases"]


@pytest.mark.parametrize(
    ("values", "round_number", "expected"),
    [
        # cumulative averages over scans of the metric at that round; scans without that round are skipped
        ([[0.2, 0.4], [0.6], [0.5, 1.0]], 1, ([1, 2, 3], [0.2, 0.4, 1.3 / 3])),
        ([[0.2, 0.4], [0.6], [0.5, 1.0]], 2, ([1, 3], [0.4, 0.7])),
        ([[0.2, 0.4], [0.6], [0.5, 1.0]], None, ([1, 2, 3], [0.4, 0.5, 2.0 / 3])),
        ([[None], [0.5]], 1, ([2], [0.5])),
    ],
)
def test_cumulative_dice_table(values: list, round_number: int | None, expected: tuple) -> None:
    from dil.report import ScanRow, _cumulative_dice

    scans = [
        ScanRow(i, f"c{i}", "passed", len(v), {}, 0.0, None, {}, [{"dice_gt_proxy": x} for x in v], None, None, None, None)
        for i, v in enumerate(values)
    ]
    xs, ys = _cumulative_dice(scans, "dice_gt_proxy", round_number)
    assert xs == expected[0]
    assert ys == pytest.approx(expected[1])


def test_report_without_mlflow_uses_the_ledger(tmp_path: Path) -> None:
    from dil.report import collect, write_report

    b = build_campaign(tmp_path, track=False)
    data = collect(b.ws)
    assert data.versions_source == "ledger" and data.versions == []
    assert not (b.ws / "mlflow" / "mlflow.db").exists()  # the report creates no MLflow store
    html_path, _ = write_report(b.ws)
    assert "No segmenter version registered yet" in html_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("minutes", [0, -1.0, float("nan"), float("inf"), "2", True])
def test_bad_minutes_per_slice(built: Built, minutes: object) -> None:
    from dil.report import write_report

    with pytest.raises(ValueError, match="minutes_per_slice"):
        write_report(built.ws, minutes_per_slice=minutes)  # type: ignore[arg-type]


def test_not_a_workspace(tmp_path: Path) -> None:
    from dil.report import write_report

    with pytest.raises(FileNotFoundError, match="not a DIL workspace"):
        write_report(tmp_path)


# ----------------------------------------------------------------------------------------------- the page
def test_page_is_self_contained(written: tuple[Path, Path]) -> None:
    page = written[0].read_text(encoding="utf-8")
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in page and "https://" not in page
    for title in ("Scans finished over time", "paper Figure 8", "paper Table 7", "paper Figures 4-5", "Segmenter versions"):
        assert title in page


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.skip(
            "chromium is not installed and could not be installed here: `make test` installs Debian's chromium "
            "package (apt-get install -y chromium) when it runs as root"
        )
    return path


def _open_in_chromium(page: Path, tmp_path: Path, *extra: str) -> tuple[str, str]:
    proc = subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "--virtual-time-budget=10000", *extra, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def _console(stderr: str) -> list[str]:
    """Every message the page wrote to the console (Chromium logs them all as ``CONSOLE`` lines)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_report_renders_in_headless_chromium(written: tuple[Path, Path], tmp_path: Path) -> None:
    page = written[0]
    dom, log = _open_in_chromium(page, tmp_path, "--dump-dom")
    assert 'data-rendered="ok"' in dom, "the page's load check did not pass"
    assert 'data-figures="3"' in dom
    assert _console(log) == []
    shot = page.with_name("report.png")
    _, log = _open_in_chromium(page, tmp_path, "--hide-scrollbars", "--window-size=1200,4200", f"--screenshot={shot}")
    assert _console(log) == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 4200)


def test_chromium_check_catches_a_broken_page(tmp_path: Path) -> None:
    """The same check fails on a page with an undecodable figure and an external image (blocked by the CSP)."""
    from dil.report import _CSP, _SCRIPT

    bad = tmp_path / "bad.html"
    bad.write_text(
        f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<script>{_SCRIPT}</script></head><body><img alt='broken' src='data:image/png;base64,AAAA'>"
        "<img alt='external' src='http://example.invalid/x.png'></body></html>", encoding="utf-8")
    dom, log = _open_in_chromium(bad, tmp_path, "--dump-dom")
    assert 'data-rendered="failed"' in dom
    messages = " ".join(_console(log))
    assert "figures failed to render: broken; external" in messages
    assert "Content Security Policy" in messages

