"""Scheduled retraining: the split, the deployment and its cron schedule, one retraining end to end, champion rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.retrain import retrain_deployment, retrain_flow, split_cases
from tests.flows.test_report import PLAN, Built, build_campaign

FINISHED = sorted(c for c, (_, state) in PLAN.items() if state)


@pytest.fixture(autouse=True)
def _mlflow_tracking() -> Iterator[None]:
    """The flows called here directly, as `dil retrain` runs them: with the MLflow tracking installed."""
    from dil.tracking import install
    from flows.hooks import install_tracking

    install()
    yield
    install_tracking(None)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    from flows.context import CampaignContext

    b = build_campaign(tmp_path_factory.mktemp("retrain"))
    ctx = CampaignContext.open(b.ws)  # the online segmenter's newest checkpoint, as a campaign leaves it
    ctx.save_trainer(ctx.load_trainer(None), ctx.latest_model_tag(), cache=False)
    ctx.ledger.close()
    return b


@pytest.mark.parametrize(
    ("n", "fraction", "n_val"),
    [(2, 0.25, 1), (2, 0.9, 1), (4, 0.25, 1), (5, 0.5, 2), (10, 0.25, 2), (10, 0.3, 3), (3, 0.99, 2)],
)
def test_split_sizes(n: int, fraction: float, n_val: int) -> None:
    cases = [f"c{i:02d}" for i in range(n)]
    train, val = split_cases(cases, val_fraction=fraction, seed=0)
    assert len(val) == n_val and len(train) == n - n_val
    assert sorted(train + val) == cases and not set(train) & set(val)


def test_split_same_seed_same_result() -> None:
    cases = [f"c{i:02d}" for i in range(12)]
    assert split_cases(cases, val_fraction=0.25, seed=3) == split_cases(list(reversed(cases)), val_fraction=0.25, seed=3)
    others = {tuple(split_cases(cases, val_fraction=0.25, seed=s)[1]) for s in range(6)}
    assert len(others) > 1  # the seed matters


@pytest.mark.parametrize(
    ("cases", "fraction", "match"),
    [(["a"], 0.25, "at least 2"), (["a", "a"], 0.25, "at least 2"), (["a", "b"], 0.0, "val_fraction"),
     (["a", "b"], 1.0, "val_fraction"), (["a", "b"], True, "val_fraction")],
)
def test_split_bad_inputs(cases: list[str], fraction: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        split_cases(cases, val_fraction=fraction, seed=0)


def test_deployment_has_its_cron_schedule(built: Built) -> None:
    from prefect.client.orchestration import get_client

    deployment = retrain_deployment(built.ws, "0 2 * * *", epochs=3)
    deployment_id = deployment.apply()
    with get_client(sync_client=True) as client:
        stored = client.read_deployment(deployment_id)
        assert stored.name == "handmade-retrain"
        assert client.read_flow(stored.flow_id).name == "dil-retrain"
        assert [s.schedule.cron for s in stored.schedules] == ["0 2 * * *"]
        assert [s.active for s in stored.schedules] == [True]
        assert stored.schedules[0].schedule.timezone == "UTC"
        assert stored.parameters == {"workspace": str(built.ws.resolve()), "epochs": 3, "val_fraction": 0.25, "seed": 0}
        assert stored.entrypoint.endswith("flows/retrain.py:retrain_flow")
    # applying again with another schedule replaces it (one deployment, one schedule)
    again = retrain_deployment(built.ws, "30 3 * * 1-5").apply()
    assert again == deployment_id
    with get_client(sync_client=True) as client:
        assert [s.schedule.cron for s in client.read_deployment(deployment_id).schedules] == ["30 3 * * 1-5"]


@pytest.mark.parametrize("cron", ["every night", "0 2 * *", "61 2 * * *", ""])
def test_bad_cron(built: Built, cron: str) -> None:
    with pytest.raises(ValueError, match="cron"):
        retrain_deployment(built.ws, cron)


def test_deployment_needs_a_workspace(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a DIL workspace"):
        retrain_deployment(tmp_path, "0 2 * * *")


def test_retraining_end_to_end_and_champion_rules(built: Built) -> None:
    from dil.tracking import Tracker
    from dil_core.ledger import Ledger

    first = retrain_flow(str(built.ws), epochs=3, seed=0)
    assert first["status"] == "registered"
    assert sorted(first["train_cases"] + first["val_cases"]) == FINISHED
    assert len(first["val_cases"]) == 1 and len(first["losses"]) == 3
    assert 0.0 <= first["val_dice"] <= 1.0
    assert first["val_dice"] == pytest.approx(sum(first["val_dice_per_case"].values()) / len(first["val_cases"]))
    n_scan_versions = len(built.versions)
    assert first["version"] == n_scan_versions + 1
    assert first["champion_before"] is None and first["promoted"] is True  # no champion yet: it becomes one

    tracker = Tracker.open(built.ws, "handmade")
    assert tracker.alias_version("champion") == first["version"]
    assert tracker.alias_version("latest") == first["version"]
    info = {v.version: v for v in tracker.versions()}[first["version"]]
    assert info.kind == "retrain" and info.scans_seen == 2
    assert info.val_dice == pytest.approx(first["val_dice"], abs=1e-6)
    (run,) = tracker.client.search_runs([tracker.experiment_id], "tags.kind = 'retrain'")
    assert run.info.status == "FINISHED" and run.data.tags["kind"] == "retrain"
    assert run.data.metrics["val_dice"] == pytest.approx(first["val_dice"])
    ledger = Ledger.open(f"sqlite:///{built.ws / 'ledger.db'}", create=False)
    mirrored = ledger.get_model_version("handmade", alias="champion")
    assert mirrored is not None and mirrored.version == first["version"]
    assert mirrored.uri == f"models:/dil-handmade-segmenter/{first['version']}"
    ledger.close()

    # same seed, same data: the same segmenter, which does not beat the champion (equal is not better)
    second = retrain_flow(str(built.ws), epochs=3, seed=0)
    assert second["val_dice"] == pytest.approx(first["val_dice"], abs=1e-6)
    assert second["champion_before"] == first["version"]
    assert second["champion_val_dice"] == pytest.approx(first["val_dice"], abs=1e-6)
    assert second["promoted"] is False
    assert tracker.alias_version("champion") == first["version"]
    assert tracker.alias_version("latest") == second["version"] == first["version"] + 1

    # a champion that predicts nothing (Dice 0 on every validation scan) is beaten by any non-empty prediction
    import torch

    from dil_core.models import build_segmenter

    empty = build_segmenter("unet", channels=(4, 8, 16), seed=0)
    with torch.no_grad():
        for p in empty.parameters():
            p.zero_()
        last_bias = [p for name, p in empty.named_parameters() if name.endswith("bias")][-1]
        last_bias.fill_(-50.0)
    run_id = tracker.client.create_run(tracker.experiment_id, run_name="empty", tags={"kind": "retrain"}).info.run_id
    weak = tracker.register_segmenter(empty, case_id=None, rounds=None, scans_seen=0, kind="retrain", run_id=run_id,
                                      tags={"segmenter": "unet", "channels": "4,8,16"})
    tracker.set_alias("champion", weak)
    third = retrain_flow(str(built.ws), epochs=3, seed=0)
    assert third["champion_before"] == weak and third["champion_val_dice"] == 0.0
    assert third["promoted"] is (third["val_dice"] > 0.0)
    assert tracker.alias_version("champion") == (third["version"] if third["promoted"] else weak)


def test_retraining_skips_with_fewer_than_two_finished_scans(tmp_path: Path) -> None:
    from dil_core.ledger import Ledger

    b = build_campaign(tmp_path, track=False)
    ledger = Ledger.open(f"sqlite:///{b.ws / 'ledger.db'}", create=False)
    for scan in ledger.list_scans("handmade"):
        if scan.case_id != "hippocampus_001" and scan.final_mask_path:
            Path(scan.final_mask_path).unlink()  # a final mask that is gone does not count
    ledger.close()
    result = retrain_flow(str(b.ws), epochs=1)
    assert result["status"] == "skipped" and "1 finished scan" in result["reason"]
    assert not (b.ws / "mlflow" / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"epochs": 0}, "epochs"), ({"epochs": 1.5}, "epochs"), ({"val_fraction": 1.0}, "val_fraction"),
     ({"seed": -1}, "seed"), ({"learning_rate": 0.0}, "learning_rate")],
)
def test_retrain_bad_inputs(built: Built, kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        retrain_flow.fn(str(built.ws), **kwargs)
