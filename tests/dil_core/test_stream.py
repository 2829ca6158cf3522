"""Algorithms 3 and 5 in one process on the one round: review first, F_prev fixed per scan, learning."""

from __future__ import annotations

import torch

from dil_core.methods import get_method
from dil_core.stream import run_scan, run_stream, simulated
from tests.dil_core._sessions import params, refine_params, session, sphere, trainer

torch.set_num_threads(1)


def test_run_scan_reaches_rho_on_a_sphere_and_is_reproducible() -> None:
    def once():
        image, gt = sphere()
        p = params((0, 1), stopping={"quota_gamma": 12, "n_inter": 6}, propagation={"backend": "mci"},
                   training={"n_f": 2, "replay_m": 1, "buffer_b": 2, "buffer_b_star": 4})
        item = simulated(session(image, p), gt, 0.8)
        return run_scan(item.session, get_method("paper"), trainer(), item.annotator, judge=item.judge, seed=0,
                        extent=item.extent), item

    outcome, item = once()
    assert outcome.state == "passed" and outcome.decision.passed and not outcome.reviewed_only
    assert item.judge(get_method("paper").mask(outcome.session)).value >= 0.8
    assert outcome.session.n_drawn <= 12 and outcome.session.rounds == len(outcome.rounds) >= 1
    assert all(r.losses for r in outcome.rounds)
    again, _ = once()
    assert again.session.drawn == outcome.session.drawn
    assert [r.drawn for r in again.rounds] == [r.drawn for r in outcome.rounds]


def test_run_stream_fixes_f_prev_per_scan() -> None:
    image, gt = sphere()
    p = params((0, 1), stopping={"quota_gamma": 6, "n_inter": 2}, propagation={"backend": "sdf"},
               training={"n_f": 1, "replay_m": 1, "buffer_b": 2, "buffer_b_star": 4})
    items = [simulated(session(image, p, position=i), gt, 0.99) for i in range(2)]
    outcomes = run_stream(items, get_method("paper"), trainer(1), seed=1)
    first, second = (o.session for o in outcomes)
    assert first.previous_prediction is None  # cold start: no F_prev
    assert second.previous_prediction is not None and second.previous_prediction.shape == (16, 16, 16)
    assert all(o.session.rounds == 2 for o in outcomes) and outcomes[0].state == "at_quota"


def test_refine_stream_learns_and_the_next_scan_costs_nothing() -> None:
    # two spheres of the same kind: the first is drawn slice by slice (cold start, no training during the
    # scan), then the segmenter trains once on its final mask; the second one's prediction passes as it is
    image, gt = sphere(seed=0)
    image2, gt2 = sphere(seed=1)
    p = refine_params()
    tr = trainer(0)
    outcomes = run_stream(
        [simulated(session(image, p, position=0), gt, 0.8), simulated(session(image2, p, position=1), gt2, 0.8)],
        get_method("refine"), tr, seed=0,
    )
    first, second = outcomes
    assert first.session.previous_prediction is None and first.session.rounds >= 2
    assert tr.steps == 2 * 60  # end_steps once per scan, nothing during the rounds
    assert second.reviewed_only and second.session.rounds == 0 and second.session.n_drawn == 0
    assert second.state == "passed" and second.decision.value >= 0.8
