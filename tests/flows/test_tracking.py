"""MLflow tracking: store and artifacts inside the workspace, rounds as steps, registered versions, aliases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dil.tracking import Tracker, default_tracking_uri, flatten_round_metrics
from dil_core.models import build_segmenter
from tests.flows.conftest import REPO


@pytest.fixture()
def tracker(tmp_path: Path) -> Tracker:
    return Tracker.open(tmp_path / "ws", "camp")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Tracker:
    """One store for the bad-input tests (each raises before writing anything)."""
    return Tracker.open(tmp_path_factory.mktemp("bad") / "ws", "camp")


def _history(t: Tracker, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in t.client.get_metric_history(run_id, key))


def test_store_and_artifacts_live_in_the_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    tracker = Tracker.open(tmp_path / "ws", "camp")
    tracker.log_round("case_a", 1, {"labor_fraction": 0.1}, 0.1, 1)
    tracker.register_segmenter(build_segmenter("unet", channels=(4, 8), seed=0), case_id="case_a", rounds=1,
                               scans_seen=1)
    assert list(cwd.iterdir()) == []  # MLflow's default ./mlflow.db and ./mlruns are never used
    ws = (tmp_path / "ws").resolve()
    assert tracker.tracking_uri == default_tracking_uri(ws) == f"sqlite:///{ws / 'mlflow' / 'mlflow.db'}"
    assert (ws / "mlflow" / "mlflow.db").is_file()
    exp = tracker.client.get_experiment(tracker.experiment_id)
    assert exp.name == "dil/camp"
    assert exp.artifact_location == (ws / "mlflow" / "artifacts").as_uri()
    for key in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"):
        assert os.environ[key] == "true"
    # reopening finds the same experiment and campaign run
    again = Tracker.open(ws, "camp")
    assert again.experiment_id == tracker.experiment_id
    assert again.campaign_run_id() == tracker.campaign_run_id()


@pytest.mark.parametrize(
    ("metrics", "planes", "timings", "labor", "expected"),
    [
        ({"dice_gt_proxy": 0.75, "stop_value": None}, None, None, None, {"dice_gt_proxy": 0.75, "stop_value": None}),
        ({"slices_drawn": {"0": 3, "1": 2}}, {0: "sagittal", 1: "coronal"}, None, None,
         {"slices_drawn_sagittal": 3.0, "slices_drawn_coronal": 2.0}),
        ({"slices_drawn": {"2": 1}}, {0: "sagittal"}, None, None, {"slices_drawn_axis2": 1.0}),
        ({"note": "text", "flag": True, "n": 4}, None, {"train": 1.5, "propagate": 0.25}, 0.125,
         {"n": 4.0, "time_train_s": 1.5, "time_propagate_s": 0.25, "labor_fraction": 0.125}),
    ],
)
def test_flatten_round_metrics(metrics: dict, planes: dict | None, timings: dict | None, labor: float | None,
                               expected: dict) -> None:
    assert flatten_round_metrics(metrics, planes=planes, timings=timings, labor_fraction=labor) == expected


def test_rounds_are_steps_and_cumulative_labor_follows_the_campaign(tracker: Tracker) -> None:
    # two scans, interleaved as physicians would submit: campaign steps count rounds over the campaign
    assert tracker.log_round("case_a", 1, {"labor_fraction": 0.1, "dice_gt_proxy": 0.5, "missing": None}, 0.1, 1)
    assert tracker.log_round("case_b", 1, {"labor_fraction": 0.2}, 0.3, 2)
    assert tracker.log_round("case_a", 2, {"labor_fraction": 0.25, "dice_gt_proxy": 0.8}, 0.45, 3,
                             campaign_metrics={"scans_passed": 1})
    run_a, run_b, camp = tracker.scan_run_id("case_a"), tracker.scan_run_id("case_b"), tracker.campaign_run_id()
    assert _history(tracker, run_a, "labor_fraction") == [(1, 0.1), (2, 0.25)]
    assert _history(tracker, run_a, "dice_gt_proxy") == [(1, 0.5), (2, 0.8)]
    assert _history(tracker, run_a, "missing") == []
    assert _history(tracker, run_a, "cumulative_labor") == [(1, 0.1), (2, 0.45)]
    assert _history(tracker, run_b, "labor_fraction") == [(1, 0.2)]
    assert _history(tracker, camp, "cumulative_labor") == [(1, 0.1), (2, 0.3), (3, 0.45)]
    assert _history(tracker, camp, "scans_passed") == [(3, 1.0)]
    run = tracker.client.get_run(run_a)
    assert run.info.run_name == "case_a"
    assert {k: run.data.tags[k] for k in ("campaign", "case", "kind", "mlflow.parentRunId")} == {
        "campaign": "camp", "case": "case_a", "kind": "scan", "mlflow.parentRunId": camp
    }
    # a round processed again (after a crash) is not logged twice, also from a new process's tracker
    assert tracker.log_round("case_a", 2, {"labor_fraction": 9.0}, 9.0, 3) is False
    fresh = Tracker.open(Path(tracker.tracking_uri.removeprefix("sqlite:///")).parents[1], "camp")
    assert fresh.scan_run_id("case_a") == run_a
    assert fresh.log_round("case_a", 2, {"labor_fraction": 9.0}, 9.0, 3) is False
    assert _history(tracker, run_a, "labor_fraction") == [(1, 0.1), (2, 0.25)]


def test_register_versions_tags_and_aliases(tmp_path: Path, tracker: Tracker) -> None:
    m1 = build_segmenter("unet", channels=(4, 8, 16), seed=1)
    m2 = build_segmenter("unet", channels=(4, 8, 16), seed=2)
    tracker.log_round("case_a", 1, {"labor_fraction": 0.1}, 0.1, 1)
    v1 = tracker.register_segmenter(m1, case_id="case_a", rounds=3, scans_seen=1, state="passed",
                                    tags={"segmenter": "unet", "channels": "4,8,16"})
    # a trainer checkpoint on disk works too (its "model" entry is taken)
    ckpt = tmp_path / "trainer.pt"
    torch.save({"model": m2.state_dict(), "optimizer": {}, "steps": 5}, ckpt)
    v2 = tracker.register_segmenter(ckpt, case_id="case_b", rounds=5, scans_seen=2)
    assert (v1, v2) == (1, 2)
    assert tracker.register_segmenter(m2, case_id="case_a", rounds=3, scans_seen=1) == v1  # counted once
    mv = tracker.client.get_model_version(tracker.model_name, "1")
    assert {k: mv.tags[k] for k in ("campaign", "scan", "rounds", "scans_seen", "kind", "channels")} == {
        "campaign": "camp", "scan": "case_a", "rounds": "3", "scans_seen": "1", "kind": "scan", "channels": "4,8,16"
    }
    assert mv.source.startswith((tmp_path / "ws" / "mlflow" / "artifacts").resolve().as_uri())
    run = tracker.client.get_run(tracker.scan_run_id("case_a"))
    assert run.info.status == "FINISHED" and run.data.tags["state"] == "passed"
    # "latest" follows the newest version; "champion" is set explicitly
    assert tracker.alias_version("latest") == 2
    assert tracker.alias_version("champion") is None
    tracker.set_alias("champion", 1)
    assert tracker.alias_version("champion") == 1
    for name, version, model in (("latest", 2, m2), ("champion", 1, m1)):
        state = tracker.load_state(alias=name)
        assert state.keys() == model.state_dict().keys()
        assert all(torch.equal(state[k], model.state_dict()[k]) for k in state), (name, version)
    infos = tracker.versions()
    assert [(i.version, i.scan, i.rounds, i.scans_seen, i.aliases) for i in infos] == [
        (1, "case_a", 3, 1, ("champion",)), (2, "case_b", 5, 2, ("latest",))
    ]
    assert tracker.model_uri(2) == "models:/dil-camp-segmenter/2"


def test_parallel_first_use_creates_one_store(tmp_path: Path) -> None:
    """Several processes opening a fresh workspace at once: no migration race, one experiment, one campaign run."""
    ws = tmp_path / "ws"
    code = (
        "import sys; from dil.tracking import Tracker; t = Tracker.open(sys.argv[1], 'camp'); "
        "print(t.experiment_id, t.campaign_run_id())"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(ws)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-1500:] for o in outs]
    assert len({o[0].strip() for o in outs}) == 1


def test_two_threads_open_the_campaign_tracker_once(tmp_path: Path) -> None:
    """A service's round and learner threads asking for a fresh campaign's tracker at once get the same one."""
    import threading
    from types import SimpleNamespace

    from dil.tracking import tracker_for

    ctx = SimpleNamespace(workspace=SimpleNamespace(root=tmp_path / "ws"),
                          config=SimpleNamespace(name="camp", tracking=SimpleNamespace(mlflow_uri=None)))
    got: list[Tracker] = []
    start = threading.Barrier(2)

    def open_it() -> None:
        start.wait()
        got.append(tracker_for(ctx))

    threads = [threading.Thread(target=open_it) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert len(got) == 2 and got[0] is got[1]
    runs = got[0].client.search_runs([got[0].experiment_id], filter_string="tags.kind = 'campaign'")
    assert len(runs) == 1


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda t: t.log_round("c", 0, {}, 0.0, 1), "round_number"),
        (lambda t: t.log_round("c", 1, {}, 0.0, 0), "rounds_total"),
        (lambda t: t.log_round("c", 1, {}, -0.5, 1), "cumulative_labor"),
        (lambda t: t.log_round("c", 1, {}, float("nan"), 1), "cumulative_labor"),
        (lambda t: t.log_round("c", 1, {"dice": "high"}, 0.0, 1), "metrics\\['dice'\\]"),
        (lambda t: t.log_round("c", 1, {"bad key!": 1.0}, 0.0, 1), "metrics: keys"),
        (lambda t: t.log_round("", 1, {}, 0.0, 1), "case_id"),
        (lambda t: t.register_segmenter({"w": 1}, case_id="c", rounds=1, scans_seen=1), "model: expected"),
        (lambda t: t.register_segmenter(build_segmenter("unet", channels=(4, 8), seed=0), case_id=None,
                                        rounds=1, scans_seen=1), "case_id"),
        (lambda t: t.register_segmenter(build_segmenter("unet", channels=(4, 8), seed=0), case_id=None,
                                        rounds=None, scans_seen=1, kind="retrain"), "run_id"),
        (lambda t: t.register_segmenter(build_segmenter("unet", channels=(4, 8), seed=0), case_id="c",
                                        rounds=1, scans_seen=-1), "scans_seen"),
        (lambda t: t.register_segmenter(build_segmenter("unet", channels=(4, 8), seed=0), case_id="c",
                                        rounds=1, scans_seen=1, kind="online"), "kind"),
        (lambda t: t.load_state(), "exactly one"),
    ],
)
def test_bad_inputs(shared: Tracker, call, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        call(shared)
    assert shared.versions() == []


def test_bad_open_and_lookups(tmp_path: Path, shared: Tracker) -> None:
    tracker = shared
    for name in ("", "has space", "../up", "x" * 129):
        with pytest.raises(ValueError, match="campaign"):
            Tracker.open(tmp_path / "ws2", name)
    with pytest.raises(ValueError, match="tracking_uri"):
        Tracker.open(tmp_path / "ws2", "camp", "  ")
    with pytest.raises(FileNotFoundError, match="no weights file"):
        tracker.register_segmenter(tmp_path / "missing.pt", case_id="c", rounds=1, scans_seen=1)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a torch state dict"):
        tracker.register_segmenter(junk, case_id="c", rounds=1, scans_seen=1)
    with pytest.raises(LookupError, match="no alias"):
        tracker.load_state(alias="champion")
    with pytest.raises(LookupError, match="no version 7"):
        tracker.load_state(version=7)


# ------------------------------------------------------------------------------- hooks on a hand-built campaign
def _campaign_with_checkpoints(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The hand-built campaign of the report tests, untracked, with a checkpoint for each finished scan."""
    from dil_core.ledger import RoundStatus
    from flows.context import CampaignContext
    from tests.flows.test_report import build_campaign

    built = build_campaign(tmp_path, track=False)
    ctx = CampaignContext.open(built.ws)
    weights = {}
    for seed, scan in enumerate(sorted(ctx.ledger.list_scans(ctx.campaign_id), key=lambda s: s.position)):
        last = [r for r in ctx.ledger.list_rounds(scan.id) if r.status is RoundStatus.PROCESSED][-1]
        model = build_segmenter("unet", channels=(4, 8, 16), seed=seed)
        path = ctx.workspace.checkpoint(last.model_version)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "steps": 1}, path)
        weights[scan.case_id] = model.state_dict()
        if scan.state.value in ("passed", "at_quota"):  # the segmenter learned from it: that checkpoint
            ctx.ledger.mark_scan_learned(scan, last.model_version)
    return built, ctx, weights


def _expected_cumulative(built, ctx) -> list[float]:  # type: ignore[no-untyped-def]
    from tests.flows.test_report import PLAN

    out, total = [], 0.0
    for case, (n, _) in PLAN.items():  # built scan by scan, in this order
        for _ in range(n):
            total += 1 / built.targets[case]["coronal"] + 1 / built.targets[case]["sagittal"]
            out.append(total)
    return out


def test_sync_campaign_replays_the_ledger_once(tmp_path: Path) -> None:
    from dil.tracking import sync_campaign, tracker_for
    from tests.flows.test_report import PLAN

    built, ctx, weights = _campaign_with_checkpoints(tmp_path)
    n_rounds = sum(n for n, _ in PLAN.values())
    assert sync_campaign(ctx) == n_rounds
    assert sync_campaign(ctx) == 0  # idempotent
    t = tracker_for(ctx)
    history = _history(t, t.campaign_run_id(), "cumulative_labor")
    assert [s for s, _ in history] == list(range(1, n_rounds + 1))
    assert [v for _, v in history] == pytest.approx(_expected_cumulative(built, ctx))
    for case, (n, state) in PLAN.items():
        run_id = t.scan_run_id(case)
        assert _history(t, run_id, "dice_gt_proxy") == [(i, pytest.approx(0.5 + 0.1 * i)) for i in range(1, n + 1)]
        assert [s for s, _ in _history(t, run_id, "slices_drawn_coronal")] == list(range(1, n + 1))
        assert t.client.get_run(run_id).info.status == ("FINISHED" if state else "RUNNING")
    finished = [c for c, (_, s) in PLAN.items() if s]
    infos = t.versions()
    assert [(v.scan, v.rounds, v.scans_seen) for v in infos] == [(c, PLAN[c][0], k + 1) for k, c in enumerate(finished)]
    for info in infos:
        state = t.load_state(version=info.version)
        assert all(torch.equal(state[k], weights[info.scan][k]) for k in state)
    mirrored = ctx.ledger.list_model_versions(ctx.campaign_id)
    assert [(m.version, m.uri, m.alias) for m in mirrored] == [
        (v.version, t.model_uri(v.version), "latest" if v is infos[-1] else None) for v in infos
    ]


def test_live_rounds_are_logged_and_tracking_never_fails_the_round(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    from dil.tracking import MlflowTracking, tracker_for
    from tests.flows.test_report import PLAN

    _, ctx, weights = _campaign_with_checkpoints(tmp_path)
    hook = MlflowTracking()
    versions = []
    for case, (n, state) in PLAN.items():
        for i in range(1, n + 1):
            extra = {"slices_drawn": {"0": i}, "seconds": {"training": 2.5, "propagation": 0.5}}
            hook.round_processed(ctx, case, i, extra if case == "hippocampus_001" else None)
        if state:
            versions.append(hook.segmenter_learned(ctx, case, ctx.scan(case).learned_tag))
    assert versions == [1, 2, 3]
    t = tracker_for(ctx)
    run_id = t.scan_run_id("hippocampus_001")
    assert _history(t, run_id, "time_training_s") == [(i, 2.5) for i in (1, 2, 3)]
    assert _history(t, run_id, "slices_drawn_sagittal") == [(i, float(i)) for i in (1, 2, 3)]
    assert _history(t, t.campaign_run_id(), "scans_passed")[-1] == (sum(n for n, _ in PLAN.values()), 2.0)
    assert hook.champion(ctx) is None
    t.set_alias("champion", 2)
    version, state = hook.champion(ctx)
    assert version == 2 and all(torch.equal(state[k], weights["hippocampus_003"][k]) for k in state)
    # a round that is not in the ledger: a warning, no exception, nothing logged
    with caplog.at_level("WARNING", logger="dil.tracking"):
        hook.round_processed(ctx, "hippocampus_001", 99, None)
    assert "MLflow tracking of hippocampus_001 round 99 failed" in caplog.text
    assert [s for s, _ in _history(t, run_id, "time_training_s")] == [1, 2, 3]
