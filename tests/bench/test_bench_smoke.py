"""Each sec-3 benchmark runs at its --smoke size and writes JSON with the expected keys and sane values."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(name: str, tmp_path: Path, *extra: str) -> dict:
    rc = _load(name).main(["--smoke", "--out-dir", str(tmp_path), *extra])
    assert rc == 0
    data = json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8"))
    assert (tmp_path / f"{name}.md").read_text(encoding="utf-8").startswith("# ")
    assert "skipped" not in data
    assert "wall_s" in data and "CPU" in data["device"]
    return data


def _unit(x: float) -> bool:
    return isinstance(x, float) and 0.0 <= x <= 1.0 and not math.isnan(x)


def test_dynamic_learning_smoke(shared_data: Path, tmp_path: Path) -> None:
    data = _run("dynamic_learning", tmp_path)
    assert set(data["results"]) == {
        "offline",
        "dynamic",
        "dynamic+RP",
        "dynamic+LS",
        "dynamic+RP+LS",
    }
    for row in data["results"].values():
        assert _unit(row["mean_over_orders"])
        assert set(row["pooled_scans"]) == {"mean", "std", "min", "max", "n"}
        assert (
            row["pooled_scans"]["min"]
            <= row["pooled_scans"]["mean"]
            <= row["pooled_scans"]["max"]
        )
        assert (
            row["pooled_scans"]["n"] == data["sizes"]["eval"] * data["sizes"]["orders"]
        )
    assert not set(data["eval_ids"]) & set(data["stream_ids"])


def test_interactive_smoke(shared_data: Path, tmp_path: Path) -> None:
    data = _run("interactive", tmp_path)
    steps = data["sizes"]["steps"]
    assert "random" in data["results"] and "warm+MG+WL" in data["results"]
    for row in data["results"].values():
        assert len(row["proxy_dice_mean"]) == steps and all(
            _unit(v) for v in row["proxy_dice_mean"]
        )
        labor = row["labor_mean"]
        assert all(
            b > a for a, b in itertools.pairwise(labor)
        )  # every step adds slices


def test_dynamic_interactive_smoke(shared_data: Path, tmp_path: Path) -> None:
    data = _run("dynamic_interactive", tmp_path)
    n = data["sizes"]["stream"]
    assert set(data["curves"]) == {
        "dice_gt_proxy",
        "dice_gt_prediction",
        "dice_proxy_prediction",
    }
    assert all(
        len(v) == n and all(_unit(x) for x in v) for v in data["curves"].values()
    )
    assert _unit(data["eval_dice"]["mean"])
    assert (tmp_path / "dynamic_interactive.png").stat().st_size > 0


def test_labor_to_rho_smoke(shared_data: Path, tmp_path: Path) -> None:
    data = _run("labor_to_rho", tmp_path, "--only", "paper-random-mci", "ours")
    names = [r["name"] for r in data["results"]]
    assert names == ["paper-random-mci", "ours", "power-user-sdf-aligned", "power-user"]
    for r in data["results"]:
        assert r["scans"] == len(r["per_scan"]) >= 1
        assert 0.0 <= r["mean_labor"] and r["reached"] <= r["scans"]
        assert (
            min(s["labor"] for s in r["per_scan"]) <= r["mean_labor"] <= r["max_labor"]
        )
        assert len(r["cumulative_mean"]) == r["scans"]
        # a scan that reached rho has its mask's Dice >= rho; labor counts every requested slice
        for s in r["per_scan"]:
            assert s["reached"] == (s["dice"] >= data["sizes"]["rho"])
    power = data["results"][-1]
    assert power["reached"] == power["scans"] and power[
        "ratio_to_power_user"
    ] == pytest.approx(1.0)
    assert (tmp_path / "labor_to_rho.png").stat().st_size > 0


def test_refine_choices_smoke(shared_data: Path, tmp_path: Path) -> None:
    data = _run("refine_choices", tmp_path)
    interp = data["interpolation"]
    assert set(interp) == {"k", "mci", "sdf", "sdf-aligned"}
    assert all(_unit(v) for b in ("mci", "sdf", "sdf-aligned") for v in interp[b])
    assert data["segmenters"]
    for row in data["segmenters"].values():
        assert _unit(row["dice"]) and _unit(row["dice_flips"]) and _unit(row["pass_flips"])
        cap = data["sizes"]["cap"]
        assert set(row["slices_to_rho"]) == {"blend", "corrected", "blend+corrected"}
        assert all(0 <= v <= cap + 1 for v in row["slices_to_rho"].values())
        assert set(row["session_slices_to_rho_by_spread"]) == {"0.0", "2.0"}
        assert all(0 <= v <= cap + 1 for v in row["session_slices_to_rho_by_spread"].values())


def test_segmenters_smoke(shared_data: Path, tmp_path: Path) -> None:
    data = _run("segmenters", tmp_path)
    assert set(data["results"]) == {"unet", "dynunet", "unet, same time"}
    for row in data["results"].values():
        assert _unit(row["dice"]["mean"]) and row["dice"]["n"] == data["eval_scans"]
        assert row["steps"] == row["epochs"] * data["train_scans"] and row["seconds_per_step"] > 0
        assert row["parameters"] > 0 and all(math.isfinite(v) for v in row["loss_first_last"])
    assert data["results"]["unet"]["epochs"] == data["results"]["dynunet"]["epochs"] == data["epochs"]


def test_continuous_smoke(shared_data: Path, tmp_path: Path) -> None:
    data = _run("continuous", tmp_path)
    by_name = {r["name"]: r for r in data["results"]}
    assert set(by_name) == {"ours", "ours-continual", "power-user"}
    stream = data["sizes"]["stream"]
    for r in by_name.values():
        assert r["scans"] == stream and len(r["blocks"]) == math.ceil(stream / data["sizes"]["block"])
        assert all(_unit(b["mean_labor"]) and _unit(b["accepted_without_drawing"]) for b in r["blocks"])
        late = [s["labor"] for s in r["per_scan"][data["sizes"]["late_from"] - 1:]]
        assert r["mean_labor_late"] == pytest.approx(sum(late) / len(late))
    learner = by_name["ours-continual"]["learner"]
    # the learner ran the steps its own measured rate allows in the physician's minutes, times the share (the
    # first step measures the rate, fractions carry over)
    assert by_name["ours-continual"]["physician_minutes"] > 0
    assert learner["steps"] >= 1 and abs(learner["steps"] - max(1.0, learner["steps_owed"])) <= 1.0
    assert learner["promotions"] == sum(g["promoted"] for g in learner["gates"])
    assert _unit(learner["candidate_eval"]["mean"])
    assert all(_unit(r["segmenter_eval"]["mean"]) for r in (by_name["ours"], by_name["ours-continual"]))
    assert _unit(data["offline"]["segmenter_eval"]["mean"]) and data["offline"]["steps"] > 0
    # the same offline training on the continual campaign's own final masks (the labels it learned from)
    masks = data["offline_final_masks"]
    assert masks["name"] == "offline-final-masks" and masks["steps"] == data["offline"]["steps"]
    assert _unit(masks["segmenter_eval"]["mean"])
    assert by_name["ours-continual"]["final_mask_dice"]["n"] == stream
    assert not {"_targets", "_model"} & set(by_name["ours-continual"])  # kept in memory, never written out


def test_continuous_runs_the_continual_configuration_alone(shared_data: Path, tmp_path: Path) -> None:
    data = _run("continuous", tmp_path, "--configs", "ours-continual")
    assert [r["name"] for r in data["results"]] == ["ours-continual", "power-user"]
    assert data["offline_final_masks"]["name"] == "offline-final-masks"


def test_continuous_refuses_configs_without_the_continual_one(shared_data: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _load("continuous").main(["--smoke", "--configs", "ours", "--out-dir", str(tmp_path)])
    assert "--configs must include ours-continual" in capsys.readouterr().err
    assert not (tmp_path / "continuous.json").exists()


@pytest.mark.parametrize(
    ("variant", "scans", "truth_on"),
    [
        ("ground-truth", ["a", "b", "c"], {"a", "b", "c"}),
        ("final-masks", ["a", "b", "c"], set()),
        ("without-accepted", ["a", "c"], set()),
        ("gt-on-drawn", ["a", "b", "c"], {"a", "c"}),
        ("gt-on-accepted", ["a", "b", "c"], {"b"}),
    ],
)
def test_label_ceiling_labellings(variant: str, scans: list[str], truth_on: set[str]) -> None:
    """Scans a and c were drawn on, b accepted without drawing: who trains, and on which labels."""
    import numpy as np
    from types import SimpleNamespace

    shape = (2, 2, 2)
    stream = [SimpleNamespace(case_id=c, image_grid=np.zeros(shape, np.float32), gt_grid=np.full(shape, 1.0))
              for c in "abc"]
    masks = [np.full(shape, 0.25, np.float32)] * 3
    out = _load("label_ceiling").labelled(stream, masks, [False, True, False], variant)
    assert [s.case_id for s in out] == scans
    assert {s.case_id for s in out if s.target_grid[0, 0, 0] == 1.0} == truth_on
    assert all(s.target_grid[0, 0, 0] == 0.25 for s in out if s.case_id not in truth_on)
    assert all(s.weight_grid is None for s in out)


@pytest.mark.parametrize(
    ("variant", "on_drawn", "far"),
    [
        ("weighted-exp", 1.0, 0.25 + 0.75 * 2.718281828459045**-2),  # 0.25 + 0.75 exp(-6 / 3)
        ("weighted-drawn", 5.0, 1.0),
    ],
)
def test_label_ceiling_weighted_labellings(variant: str, on_drawn: float, far: float) -> None:
    """Scans a and c were drawn on (a drawn slice at x = 0, the next voxels 6 mm away), b accepted."""
    import numpy as np
    from types import SimpleNamespace

    lc = _load("label_ceiling")
    shape = (2, 2, 2)
    stream = [SimpleNamespace(case_id=c, image_grid=np.zeros(shape, np.float32), gt_grid=np.ones(shape)) for c in "abc"]
    drawn = np.zeros(shape, np.float32)
    drawn[1] = 6.0
    distances = [drawn, np.full(shape, 1000.0, np.float32), drawn]
    masks = [np.full(shape, 0.25, np.float32)] * 3
    out = lc.labelled(stream, masks, [False, True, False], variant, distances)
    assert [s.case_id for s in out] == ["a", "b", "c"]
    assert all(s.target_grid[0, 0, 0] == 0.25 for s in out)  # final masks throughout
    for s in (out[0], out[2]):
        assert s.weight_grid[0, 0, 0] == pytest.approx(on_drawn) and s.weight_grid[1, 0, 0] == pytest.approx(far)
    assert np.array_equal(out[1].weight_grid, np.ones(shape))  # accepted: nothing drawn, every voxel alike
    with pytest.raises(ValueError, match="give distances"):
        lc.labelled(stream, masks, [False, True, False], variant)


def test_label_ceiling_volume_ratios() -> None:
    """A mask twice its ground truth's volume, one as large, and an empty one (soft grids, taken at 0.5)."""
    import numpy as np
    from types import SimpleNamespace

    gt = np.zeros((2, 2, 4), np.float32)
    gt[..., :2] = 0.8
    stream = [SimpleNamespace(gt_grid=gt)] * 3
    masks = [np.full(gt.shape, 0.6, np.float32), gt[..., ::-1].copy(), np.full(gt.shape, 0.4, np.float32)]
    assert _load("label_ceiling").volume_ratios(stream, masks) == [2.0, 1.0, 0.0]


def test_label_ceiling_smoke(shared_data: Path, tmp_path: Path) -> None:
    """The learner's recipe on each labelling of one campaign's stream; the scans each labelling trains on."""
    data = _run("label_ceiling", tmp_path)
    by_name = {v["name"]: v for v in data["variants"]}
    assert set(by_name) == {"ground-truth", "final-masks", "without-accepted", "gt-on-drawn", "gt-on-accepted",
                            "weighted-exp", "weighted-drawn"}
    campaign = data["campaign"]
    stream = data["sizes"]["stream"]
    drawn = stream - campaign["accepted_without_drawing"]
    assert by_name["without-accepted"]["scans"] == drawn
    assert all(v["scans"] == stream for n, v in by_name.items() if n != "without-accepted")
    assert all(v["steps"] == data["sizes"]["steps"] and _unit(v["segmenter_eval"]["mean"]) for v in by_name.values())
    assert campaign["final_mask_dice"]["n"] == stream and campaign["final_mask_dice_drawn"]["n"] == drawn
    assert campaign["volume_ratio_drawn"]["n"] == drawn and campaign["volume_ratio_accepted"]["n"] == stream - drawn
    by_threshold = campaign["segmenter_by_threshold"]
    assert set(by_threshold) == {"eval", "stream"}
    assert all(list(d) == ["0.40", "0.45", "0.50", "0.55", "0.60"] and all(map(_unit, d.values()))
               for d in by_threshold.values())
    # at 0.5 the calibration check measures what the campaign's own evaluation measured
    assert by_threshold["eval"]["0.50"] == pytest.approx(campaign["segmenter_eval"]["mean"])
    assert _unit(data["offline"]["segmenter_eval"]["mean"])


def test_seed_labels_smoke(shared_data: Path, tmp_path: Path) -> None:
    """The seed scans labeled to each bar, and the learner's recipe on their masks and on their ground truth."""
    data = _run("seed_labels", tmp_path)
    (bar,) = data["bars"]
    assert bar["rho_seed"] == 0.5 and len(bar["labor"]) == data["sizes"]["seed_scans"] == 1
    assert _unit(bar["mean_labor"]) and bar["mask_dice"]["mean"] >= 0.5  # a seed scan passes its bar
    for trained in (bar["segmenter"], data["ground_truth"]):
        assert trained["steps"] == data["sizes"]["steps"] and _unit(trained["segmenter_eval"]["mean"])
        assert trained["scans"] == 1


def test_continuous_serve_smoke(shared_data: Path, tmp_path: Path) -> None:
    """Continuous training through ``dil serve`` with a paced scripted physician, beside its simulation."""
    # half a second per physician minute: time enough for the learner's gates on a loaded machine
    assert _load("continuous_serve").main(["--smoke", "--pace", "0.5", "--out-dir", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "continuous_serve.json").read_text(encoding="utf-8"))
    md = (tmp_path / "continuous_serve.md").read_text(encoding="utf-8")
    human, sim = data["human"], data["simulated"]
    assert set(human["scans"]) == set(data["stream_ids"]) and human["all_passed"]
    assert set(sim) == {"ours-continual", "ours"} and all(r["scans"] == len(data["stream_ids"]) for r in sim.values())
    # the service's learner trained while the physician took its time, and the campaign predicts with its champion
    assert human["continual"]["steps"] > 0 and human["continual"]["promotions"] >= 1
    # (the service trains on between the last status and its stop: its champion at the end is as new or newer)
    assert human["segmenter"].startswith("cont-") and human["continual"]["champion"].startswith("cont-")
    assert int(human["segmenter"].removeprefix("cont-")) >= int(human["continual"]["champion"].removeprefix("cont-"))
    assert human["physician_minutes"] > 0 and data["pace_s_per_physician_minute"] == 0.5
    assert _unit(human["mean_labor"]) and _unit(human["segmenter_eval"]["mean"])
    assert human["mean_labor"] == pytest.approx(sum(r["labor"] for r in human["scans"].values()) / len(human["scans"]))
    assert "human mode (`dil serve`), continual" in md and "simulated, ours-continual" in md
    # where each wait went: handing the file in is a part of the whole wait, submission by submission
    phases = human["wait_phases_s"]
    assert phases and set(phases) <= {"inbox", "http", "cli"}
    for v in phases.values():
        assert 0 <= v["hand_in"]["median"] <= v["total"]["median"] and v["total"]["n"] >= 1
    assert "handed in -> stored" in md


def test_benchmark_without_its_data_is_skipped_naming_the_dataset(tmp_path: Path, monkeypatch, capsys) -> None:
    continuous = _load("continuous")
    common = sys.modules["_common"]
    absent = tmp_path / "absent"
    (absent / "hippocampus" / "images").mkdir(parents=True)  # images without labels: not usable
    monkeypatch.setattr(common, "SHARED", absent)
    assert not common.data_available()
    assert continuous.main(["--dataset", "left_atrium", "--out-dir", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "continuous.json").read_text(encoding="utf-8"))
    assert data == {"skipped": f"left_atrium data not found at {absent / 'left_atrium'}"}
    assert "skipped: left_atrium data not found" in capsys.readouterr().out
