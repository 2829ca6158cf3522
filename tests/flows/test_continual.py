"""Continuous training on a campaign's own finished scans: the gate's champions land in the ledger and MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dil.cli import main
from dil_core.ledger import ScanState
from flows.context import CampaignContext
from flows.continual import ContinualTraining
from tests.flows.conftest import small_config

torch.set_num_threads(1)

_CONTINUAL = {
    "method": "refine",
    "guidance": {"strategy": "refine", "first_round": "bisect", "planes": ["coronal"]},
    "propagation": {"backend": "sdf-aligned"},
    "stopping": {"rho": 0.8, "quota_gamma": 30, "n_inter": 30, "seed_scans": 1, "rho_seed": 0.8},
    "annotator": {"knows_extent": False},
    "training": {"weight_scheme": "none", "n_f": 0},
    "continual": {"enabled": True, "batch": 1, "gate_every": 4, "holdout_every": 2, "holdout_size": 1,
                  "checkpoint_every": 6},
}


def test_continual_training_publishes_champions_and_resumes(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, n_cases=4, **_CONTINUAL)
    assert main(["campaign", "run", str(cfg)]) == 0
    ws = tmp_path / "ws"
    ctx = CampaignContext.open(ws)
    finished = ctx.ledger.list_scans(ctx.campaign_id, state=[ScanState.PASSED, ScanState.AT_QUOTA])
    assert len(finished) == 4
    assert ctx.latest_model_tag() is None  # the method's end-of-scan steps are off: nothing trained yet

    training = ContinualTraining(ctx, "test:1")
    ran = training.run(lambda: False, max_steps=12)
    learner = training.learner
    assert ran == 12 and learner is not None and learner.steps == 12
    order = sorted(finished, key=lambda s: (s.finished_at, s.id))
    assert [s.case_id for s in learner.finished] == [s.case_id for s in order]
    train, val = learner.split()
    assert [s.case_id for s in val] == [order[3].case_id]  # every 2nd scan validates, the last one is held out
    assert order[1].case_id in [s.case_id for s in train]  # scan 2 left the hold-out when scan 4 came

    gates = [json.loads(line) for line in (ws / "state" / "continual-gates.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [g["step"] for g in gates] == [4, 8, 12]
    assert all(g["holdout"] == [order[3].case_id] and g["candidate"] is not None for g in gates)
    promoted = [g for g in gates if g["promoted"]]
    for g in promoted:
        assert g["candidate"] > g["champion"]
    for g in gates:
        if not g["promoted"]:
            assert g["candidate"] <= g["champion"]
    versions = ctx.ledger.list_model_versions(ctx.campaign_id)
    assert promoted  # seeded: the candidate improves on the untrained champion at the first gate
    # the newest checkpoint the ledger names is the last champion, on disk, with alias champion
    last = promoted[-1]["checkpoint"]
    assert last == f"cont-{promoted[-1]['step']}" and ctx.latest_model_tag() == last
    assert (ws / "state" / "checkpoints" / f"trainer-{last}.pt").is_file()
    champions = [v for v in versions if v.alias == "champion"]
    assert len(versions) == len(promoted) and len(champions) == 1 and champions[0].checkpoint == last
    held = ctx.tracking.champion(ctx)  # MLflow's alias points at the same weights
    assert held is not None
    weights = torch.load(ws / "state" / "checkpoints" / f"trainer-{last}.pt", weights_only=False)["model"]
    assert all(torch.equal(weights[k], held[1][k]) for k in weights)
    ctx.trainer()
    assert ctx.trainer_tag == last  # the campaign's rounds predict with the champion

    # the candidate was checkpointed at step 6 and again when training stopped at 12: a restarted service goes
    # on from it
    assert (ws / "state" / "checkpoints" / "continual-candidate.pt").is_file()
    again = ContinualTraining(CampaignContext.open(ws), "test:2")
    resumed = again.sync()
    assert resumed.steps == 12
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(),
                                                  learner.model.state_dict().values(), strict=True))


def test_continual_training_marks_the_seed_scans_for_seed_share(tmp_path: Path) -> None:
    """The scan labeled to rho_seed (the first, seed_scans 1) is the learner's seed scan; the share is the config's."""
    continual = {**_CONTINUAL["continual"], "seed_share": 0.75}
    cfg = small_config(tmp_path, n_cases=3, **{**_CONTINUAL, "continual": continual})
    assert main(["campaign", "run", str(cfg)]) == 0
    ctx = CampaignContext.open(tmp_path / "ws")
    learner = ContinualTraining(ctx, "test:1").sync()
    positions = {s.case_id: s.position for s in ctx.ledger.list_scans(ctx.campaign_id)}
    assert learner.seed_share == 0.75
    assert [s.seed for s in learner.finished] == [positions[s.case_id] == 0 for s in learner.finished]
    assert sum(s.seed for s in learner.finished) == 1
    train, _ = learner.split()
    p = learner.sampling(train)
    assert p is not None and p[[s.seed for s in train].index(True)] == 0.75


def test_continual_training_stops_when_asked_and_waits_for_its_lease(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, n_cases=2, **_CONTINUAL)
    assert main(["campaign", "run", str(cfg)]) == 0
    ctx = CampaignContext.open(tmp_path / "ws")
    asks = iter(range(100))
    training = ContinualTraining(ctx, "test:1")
    assert training.run(lambda: next(asks) >= 3) == 2  # asked before each chunk and each step
    assert ctx.ledger.acquire_lease(f"continual:{ctx.campaign_id}", "other:1", lease_s=60.0)
    assert ContinualTraining(ctx, "test:2").run(lambda: False, max_steps=5) == 0  # another service trains


def test_a_refresh_never_overwrites_a_request_a_submission_reached_first(tmp_path: Path) -> None:
    from dil_core.submission import submit_label_file
    from flows.campaign import refresh_untouched
    from flows.round import restart_first_request
    from tests.flows.test_service import _drawn

    human = {**_CONTINUAL, "annotator": {"kind": "human", "open_scans": 2},
             "stopping": {"rule": "accept", "quota_gamma": 30, "n_inter": 30, "seed_scans": 0}}
    cfg = small_config(tmp_path, n_cases=2, **human)
    assert main(["campaign", "run", str(cfg)]) == 0
    ws = tmp_path / "ws"
    ctx = CampaignContext.open(ws)
    first, second = (s for s in ctx.ledger.list_scans(ctx.campaign_id))
    rounds = {s.case_id: ctx.ledger.current_round(s.id) for s in (first, second)}
    # a newer segmenter appears (as a promoted champion would)
    newer = ctx.load_trainer(None)
    newer.steps = 1  # a segmenter that has trained: scans start from its prediction
    ctx.save_trainer(newer, "newer", cache=False)
    ctx.ledger.register_model_version(ctx.campaign_id, "file:newer", scans_seen=0, rounds_seen=0, alias="champion",
                                      checkpoint="newer")
    # the physician's submission for the first scan lands just before the refresh reaches it
    submit_label_file(ctx.ledger, ctx.workspace, ctx.campaign_id, first.case_id, _drawn(ws, first.case_id, 1, tmp_path))
    folder = ws / "requests" / first.case_id / "round-1"
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    fprev = ctx.previous_prediction_path(first)
    fprev_before = fprev.read_bytes() if fprev.is_file() else None
    assert restart_first_request(ctx, ctx.scan(first.case_id), rounds[first.case_id]) is False
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    assert (fprev.read_bytes() if fprev.is_file() else None) == fprev_before
    assert ctx.scan_model_tag(first) is None  # still the request the physician answered
    # the untouched second scan is refreshed with the newer segmenter
    assert refresh_untouched(ctx) == [second.case_id]
    request = json.loads((ws / "requests" / second.case_id / "round-1" / "request.json").read_text(encoding="utf-8"))
    assert request["segmenter"] == "newer" and ctx.scan_model_tag(second) == "newer"
