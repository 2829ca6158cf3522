"""Continuous training: rolling hold-out, strong augmentation, the candidate and the champion gate, time accounting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dil_core.config import ConfigError, parse_config
from dil_core.continual import ContinualLearner, FinishedScan, holdout_split, strong_augment, warmup_ema
from dil_core.methods import check_config, get_method
from dil_core.stream import run_stream, simulated
from tests.dil_core._sessions import refine_params, session, sphere, trainer

torch.set_num_threads(1)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def _scan(name: str, seed: int, n: int = 16, radius: float = 5.0) -> FinishedScan:
    g = np.indices((n, n, n)) - (n - 1) / 2
    target = ((g**2).sum(0) <= radius**2).astype(np.float32)
    image = (target + 0.3 * np.random.default_rng(seed).standard_normal(target.shape)).astype(np.float32)
    return FinishedScan(name, image, target)


# --- the rolling hold-out -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "val"),
    [(0, []), (4, []), (5, [4]), (12, [4, 9]), (15, [9, 14]), (20, [14, 19])],
)
def test_holdout_split_every_fifth_scan_the_last_two(n: int, val: list[int]) -> None:
    train, held = holdout_split(n, every=5, size=2)
    assert held == val
    assert sorted(train + held) == list(range(n))
    if n == 15:
        assert 4 in train  # scan 4 left the hold-out when scan 14 joined it, and trains again


def test_holdout_split_refuses_bad_sizes() -> None:
    with pytest.raises(ValueError, match="holdout_every"):
        holdout_split(3, every=1, size=1)


# --- augmentation ---------------------------------------------------------------------------------------------


def test_strong_augment_keeps_shape_and_range_and_is_seeded() -> None:
    s = _scan("a", 0)
    img, tgt = strong_augment(s.image_grid, s.target_grid, rng=3)
    assert img.shape == tgt.shape == (16, 16, 16) and img.dtype == tgt.dtype == np.float32
    assert 0.0 <= tgt.min() and tgt.max() <= 1.0
    again = strong_augment(s.image_grid, s.target_grid, rng=3)
    assert np.array_equal(img, again[0]) and np.array_equal(tgt, again[1])
    # a sphere's volume survives flips, turns and a small affine within the scaling: (1 +- 0.1)^3
    assert 0.7 * s.target_grid.sum() <= tgt.sum() <= 1.35 * s.target_grid.sum()
    outputs = {strong_augment(s.image_grid, s.target_grid, rng=k)[0].tobytes() for k in range(6)}
    assert len(outputs) > 1  # it does change the samples


def test_strong_augment_moves_weights_with_the_target() -> None:
    """Weights equal to the target come out equal to the augmented target: the same flips, turns and affine."""
    s = _scan("a", 0)
    for k in range(6):
        img, tgt, wgt = strong_augment(s.image_grid, s.target_grid, rng=k, weight=s.target_grid * 3.0)
        assert np.allclose(wgt, 3.0 * tgt, atol=1e-5)
        plain = strong_augment(s.image_grid, s.target_grid, rng=k)
        assert np.array_equal(img, plain[0]) and np.array_equal(tgt, plain[1])  # the weights change nothing else


def test_finished_scan_refuses_bad_weights() -> None:
    s = _scan("a", 0)
    for bad in (np.ones((4, 4, 4)), np.zeros_like(s.target_grid), np.full_like(s.target_grid, -1.0),
                np.full_like(s.target_grid, np.nan)):
        with pytest.raises(ValueError, match="finished scan 'a': weights"):
            FinishedScan("a", s.image_grid, s.target_grid, bad)
    assert np.array_equal(s.weights, np.ones_like(s.target_grid))


def test_learner_trains_with_the_scans_weights() -> None:
    """Explicit ones train exactly as no weights; weights that silence the target's half change the step."""
    s = _scan("a", 0)
    silenced = np.ones_like(s.target_grid)
    silenced[:8] = 0.0
    losses = []
    for weights in (None, np.ones_like(s.target_grid), silenced):
        learner = ContinualLearner(trainer(0), batch=1, gate_every=100, rng=0)
        learner.add(FinishedScan("a", s.image_grid, s.target_grid, weights))
        losses.append([learner.step() for _ in range(3)])
    assert losses[0] == losses[1]
    assert losses[2] != losses[0]


def test_seed_share_samples_seed_scans_by_their_share() -> None:
    """Two seed scans and three others at share 0.5: each seed 1/4, each other 1/6; alike without a share."""
    scans = [FinishedScan(f"s{i}", _scan("x", i).image_grid, _scan("x", i).target_grid, seed=i < 2) for i in range(5)]
    learner = ContinualLearner(trainer(0), batch=2, seed_share=0.5, rng=0)
    assert np.allclose(learner.sampling(scans), [1 / 4, 1 / 4, 1 / 6, 1 / 6, 1 / 6])
    assert learner.sampling(scans[:2]) is None and learner.sampling(scans[2:]) is None  # one group only
    assert ContinualLearner(trainer(0), rng=0).sampling(scans) is None
    with pytest.raises(ValueError, match="seed_share"):
        ContinualLearner(trainer(0), seed_share=1.5)


def test_seed_share_one_trains_on_the_seed_scans_only() -> None:
    """At share 1 every batch holds the one seed scan (twice: batch 2), never the others."""
    learner = ContinualLearner(trainer(0), batch=2, seed_share=1.0, holdout_every=100, rng=0)
    seed = _scan("seed", 0)
    learner.add(FinishedScan("seed", seed.image_grid, seed.target_grid, seed=True))
    for i in range(1, 4):
        learner.add(_scan(f"s{i}", i))
    seen: list[str] = []
    original = learner._augmented
    learner._augmented = lambda scan: (seen.append(scan.case_id), original(scan))[1]  # type: ignore[method-assign]
    for _ in range(4):
        learner.step()
    assert seen == ["seed"] * 8


# --- the learner and the gate ---------------------------------------------------------------------------------


def test_gate_promotes_while_there_is_no_holdout() -> None:
    champion = trainer(0)
    learner = ContinualLearner(champion, batch=1, gate_every=5, rng=0)
    learner.add(_scan("s0", 0))
    assert learner.train(5) == 5
    gate = learner.gates[-1]
    assert gate.promoted and gate.candidate is None and gate.holdout == () and gate.n_train == 1
    assert _same_weights(champion.model, learner.model) and champion.steps >= 1


def test_gate_keeps_the_champion_unless_the_candidate_is_strictly_better() -> None:
    champion = trainer(0)
    learner = ContinualLearner(champion, batch=2, gate_every=1000, holdout_every=2, holdout_size=1, rng=0)
    for i in range(2):
        learner.add(_scan(f"s{i}", i))
    train, val = learner.split()
    assert [s.case_id for s in train] == ["s0"] and [s.case_id for s in val] == ["s1"]
    same = learner.gate()  # the candidate has not trained: same weights, same Dice, not promoted
    assert same.candidate == same.champion and not same.promoted
    before = {k: v.clone() for k, v in champion.model.state_dict().items()}
    learner.train(150)
    better = learner.gate()
    assert better.holdout == ("s1",) and better.candidate > better.champion and better.promoted
    assert better.candidate > 0.8  # the candidate learned the sphere from s0 and segments the unseen s1
    assert _same_weights(champion.model, learner.model)
    assert not all(torch.equal(before[k], v) for k, v in champion.model.state_dict().items())


def test_candidate_never_trains_on_the_holdout() -> None:
    champion = trainer(0)
    learner = ContinualLearner(champion, batch=4, gate_every=1000, holdout_every=2, holdout_size=1, rng=0)
    learner.add(_scan("train", 0))
    learner.add(FinishedScan("held", np.full((16, 16, 16), 7.0, np.float32), np.ones((16, 16, 16), np.float32)))
    seen: list[float] = []
    original = learner.split

    def spy():
        train, val = original()
        seen.extend(float(s.image_grid.max()) for s in train)
        return train, val

    learner.split = spy  # type: ignore[method-assign]
    learner.train(3)
    assert seen and max(seen) < 7.0  # only the training scan was drawn


def test_idle_turns_minutes_into_the_measured_steps() -> None:
    learner = ContinualLearner(trainer(0), batch=1, gate_every=10_000, share=0.5, rng=0)
    assert learner.idle(10.0) == 0  # nothing finished yet: nothing to train on
    learner.add(_scan("s0", 0))
    learner.steps, learner.seconds = 10, 10.0  # pretend 1 s per step was measured
    assert learner.idle(0.1) == 3  # 6 s of physician time, half of it: 3 steps
    learner.steps, learner.seconds = 10, 20.0  # 2 s per step
    assert learner.idle(0.05) == 0  # 0.75 steps owed: none yet
    assert learner.idle(0.05) == 1  # the fractions carry over
    with pytest.raises(ValueError, match="minutes"):
        learner.idle(-1.0)


def test_idle_measures_the_rate_with_a_first_step() -> None:
    ticks = iter([10.0, 10.25])  # an injected clock: the step starts at 10 s and ends at 10.25 s
    learner = ContinualLearner(trainer(0), batch=1, gate_every=10_000, rng=0, clock=lambda: next(ticks))
    learner.add(_scan("s0", 0))
    assert learner.seconds_per_step is None
    assert learner.idle(0.0) == 1 and learner.seconds_per_step == 0.25


def test_train_stops_when_asked() -> None:
    learner = ContinualLearner(trainer(0), batch=1, gate_every=10_000, rng=0)
    learner.add(_scan("s0", 0))
    calls = iter(range(100))
    assert learner.train(50, should_stop=lambda: next(calls) >= 4) == 4


def test_a_pause_puts_the_gate_off_until_training_goes_on() -> None:
    learner = ContinualLearner(trainer(0), batch=1, gate_every=3, rng=0)
    learner.add(_scan("s0", 0))
    asked = {"n": 0}

    def stop_at_the_gate() -> bool:  # a round arrives while the third step runs: asked before the gate
        asked["n"] += 1
        return asked["n"] > 3

    assert learner.train(10, should_stop=stop_at_the_gate) == 3
    assert learner.gates == []  # the gate waits: a round never waits for it
    assert learner.train(1) == 1
    assert [g.step for g in learner.gates] == [3]  # it came first, before the next step


def test_state_round_trip_continues_identically() -> None:
    a = ContinualLearner(trainer(0), batch=1, gate_every=10_000, rng=0)
    a.add(_scan("s0", 0))
    a.train(2)
    b = ContinualLearner(trainer(0), batch=1, gate_every=10_000, rng=99)
    b.add(_scan("s0", 0))
    b.load_state_dict(a.state_dict())
    assert b.steps == 2 and _same_weights(a.model, b.model)
    a.train(2)
    b.train(2)
    assert _same_weights(a.model, b.model)


def test_learner_refuses_a_scan_of_another_grid() -> None:
    learner = ContinualLearner(trainer(0))
    learner.add(_scan("s0", 0))
    with pytest.raises(ValueError, match="grid"):
        learner.add(_scan("s1", 1, n=24))


# --- config and the stream --------------------------------------------------------------------------------------


def test_config_continual_needs_refine_and_drops_end_steps() -> None:
    base = {"name": "t", "cohort": "c.csv", "workspace": "w"}
    with pytest.raises(ConfigError, match="continual.enabled: .* method 'paper'"):
        check_config(parse_config({**base, "continual": {"enabled": True}}))
    assert check_config(parse_config({**base, "method": "refine", "continual": {"enabled": True}})).name == "refine"
    p = refine_params(continual={"enabled": True})
    assert p.end_steps == 0 and refine_params().end_steps == 60


def test_stream_reports_physician_work_and_the_learner_takes_over_learning() -> None:
    p = refine_params(continual={"enabled": True})
    champion = trainer(0)
    learner = ContinualLearner(champion, batch=1, gate_every=20, rng=0)
    work: list[tuple[int, int]] = []
    items = []
    for i in range(2):
        image, gt = sphere(seed=i)
        items.append(simulated(session(image, p, position=i), gt, 0.8))

    def on_scan(outcome) -> None:
        s = outcome.session
        from dil_core.preprocess import to_grid

        target = to_grid(s.preprocessing, get_method("refine").mask(s).astype(np.float32), order=1)
        learner.add(FinishedScan(s.case_id or str(s.position), s.image_grid, np.clip(target, 0, 1)))
        learner.train(60)

    outcomes = run_stream(items, get_method("refine"), champion, seed=0, on_scan=on_scan,
                          physician=lambda reviews, slices: work.append((reviews, slices)))
    first = outcomes[0]
    # scan 0 starts cold (no review); each of its requests is one review and the slices drawn for it
    assert work[: first.session.rounds] == [(1, n) for n in _slices_per_round(first)]
    assert sum(s for _, s in work[: first.session.rounds]) == first.session.n_drawn > 0
    assert first.finish_losses == ()  # the method's end-of-scan steps are the learner's now
    assert learner.steps == 120 and learner.promotions == 6  # no hold-out yet with 2 scans: every gate promotes
    second = outcomes[1]
    assert second.session.previous_prediction is not None  # scan 1 starts from the promoted champion
    assert work[first.session.rounds] == (1, 0)  # its prediction was reviewed first


def _slices_per_round(outcome) -> list[int]:
    return [sum(len(v) for v in r.new.values()) for r in outcome.rounds]


def test_learner_trains_on_patches_when_the_segmenter_has_them() -> None:
    from dil_core.models import build_segmenter
    from dil_core.replay import ReplayBuffer
    from dil_core.training import Trainer

    net = build_segmenter("unet", channels=(4, 8), seed=0, patch=(8, 8, 8))
    learner = ContinualLearner(Trainer(net, ReplayBuffer(2, 4), device="cpu"), batch=2, gate_every=1000, rng=0)
    learner.add(_scan("s0", 0))
    seen: list[tuple[int, ...]] = []
    hook = learner.model.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    assert np.isfinite(learner.step())
    hook.remove()
    assert seen == [(2, 1, 8, 8, 8)]


def test_config_patch_must_fit_the_grid_and_the_divisor() -> None:
    base = {"name": "t", "cohort": "c.csv", "workspace": "w"}
    ok = parse_config({**base, "training": {"grid": [64, 96, 64], "patch": [32, 48, 32]}})
    assert ok.training.patch == (32, 48, 32)
    with pytest.raises(ConfigError, match="patch sizes"):
        parse_config({**base, "training": {"grid": [32, 48, 32], "patch": [64, 48, 32]}})
    with pytest.raises(ConfigError, match="multiples of 8"):
        parse_config({**base, "training": {"grid": [64, 96, 64], "patch": [36, 48, 32]}})


def test_ema_candidate_is_the_moving_average_and_is_what_gets_promoted() -> None:
    champion = trainer(0)
    learner = ContinualLearner(champion, batch=1, gate_every=10_000, ema=0.9, rng=0)
    learner.add(_scan("s0", 0))
    learner.step()  # the first update copies the weights
    first = {k: v.clone() for k, v in learner.model.state_dict().items()}
    assert all(torch.equal(first[k], v) for k, v in learner.candidate.state_dict().items())
    learner.step()  # one step averaged so far: the warm-up decay is 2 / 11, below 0.9
    second = learner.model.state_dict()
    for k, v in learner.candidate.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, 2 / 11 * first[k] + 9 / 11 * second[k], atol=1e-6)
    assert not _same_weights(learner.candidate, learner.model)
    learner.promote()
    assert _same_weights(champion.model, learner.candidate)
    with pytest.raises(ValueError, match="ema"):
        ContinualLearner(trainer(0), ema=1.0)


def test_warmup_ema_decay_by_hand() -> None:
    update = warmup_ema(0.99)
    avg, cur = torch.zeros(2), torch.ones(2)
    update([avg], [cur], torch.tensor(0))  # decay min(0.99, 1/10): moves 90% of the way
    assert torch.allclose(avg, torch.full((2,), 0.9))
    update([avg], [cur], torch.tensor(8))  # decay 9/18: halfway to 1
    assert torch.allclose(avg, torch.full((2,), 0.95))
    avg.zero_()
    update([avg], [cur], torch.tensor(10_000))  # decay 0.99 from n = 890 on
    assert torch.allclose(avg, torch.full((2,), 0.01))
    counter = torch.tensor([3])
    update([counter], [torch.tensor([7])], torch.tensor(5))  # integer buffers take the model's value
    assert counter.item() == 7
