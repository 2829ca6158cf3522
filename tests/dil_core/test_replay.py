"""Tests for dil_core.replay: the buffer update of Algorithm 1 and random retrieval."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from dil_core.replay import ReplayBuffer


def test_hand_run_seed_0():
    # b = 2, b* = 3, seed 0. The generator's draws, in order, are
    #   t=0..2: B* not full, append; selections [0], [0, 1], [0, 1]
    #   t=3: j = 0 -> B*[0] = 3;            selection [2, 0]
    #   t=4: j = 3 = b* -> sample dropped;   selection [1, 2]
    #   t=5: j = 2 -> B*[2] = 5;             selection [1, 2]
    # then retrieve(1) picks position 1 of B and retrieve(2) both, in the order shown.
    expected = [
        (True, [0], [0]),
        (True, [0, 1], [0, 1]),
        (True, [0, 1, 2], [0, 1]),
        (True, [3, 1, 2], [2, 3]),
        (False, [3, 1, 2], [1, 2]),
        (True, [3, 1, 5], [1, 5]),
    ]
    rb = ReplayBuffer(2, 3, rng=0)
    for t, (stored, aux, buf) in enumerate(expected):
        assert rb.update(t) is stored
        assert rb.auxiliary == aux
        assert rb.buffer == buf
    assert rb.retrieve(1) == [5]
    assert rb.retrieve(2) == [1, 5]
    assert (rb.n_seen, rb.n_dropped) == (6, 1)


def test_fills_auxiliary_buffer_first():
    rb = ReplayBuffer(3, 5, rng=1)
    for t in range(5):
        assert rb.update(t)
        assert rb.auxiliary == list(range(t + 1))
        assert len(rb) == min(3, t + 1)
        assert set(rb.buffer) <= set(range(t + 1))


def test_same_seed_same_result_and_other_seed_differs():
    def run(seed: int) -> list:
        rb = ReplayBuffer(3, 6, rng=seed)
        out = []
        for t in range(40):
            rb.update(t)
            out.append((tuple(rb.auxiliary), tuple(rb.buffer), tuple(rb.retrieve(2))))
        return out

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_generator_is_used_as_given():
    a = ReplayBuffer(2, 4, rng=np.random.default_rng(3))
    b = ReplayBuffer(2, 4, rng=3)
    for t in range(20):
        a.update(t)
        b.update(t)
    assert a.buffer == b.buffer


@pytest.mark.parametrize(("b", "b_star"), [(1, 2), (2, 3), (4, 10)])
def test_capacity_never_exceeded(b, b_star):
    rb = ReplayBuffer(b, b_star, rng=0)
    for t in range(100):
        rb.update(t)
        assert len(rb.auxiliary) == min(t + 1, b_star)
        assert len(rb) == min(b, t + 1)
        assert len(set(rb.buffer)) == len(rb)  # distinct entries
        assert set(rb.buffer) <= set(rb.auxiliary)
        got = rb.retrieve(b)
        assert len(got) == len(rb) and len(set(got)) == len(got) and set(got) <= set(rb.buffer)


def test_retrieve_edge_cases():
    rb = ReplayBuffer(3, 5, rng=0)
    assert rb.retrieve(2) == []  # empty buffer
    rb.update("a")
    assert rb.retrieve(0) == []
    assert rb.retrieve(3) == ["a"]  # fewer than m while B holds fewer


def test_newer_samples_more_likely_hand_computed_rates():
    # With B* full, each update overwrites a given slot with probability 1/(b*+1) = 0.2, and stores the new
    # sample with probability b*/(b*+1) = 0.8. After T = 12 updates with b* = 4:
    #   sample t >= 4 is in B* with probability 0.8 ** (T - t);  t < 4 with 0.8 ** (T - b*).
    # B holds b = 2 of the 4 entries, so P(in B) = P(in B*) / 2.
    b, b_star, T, runs = 2, 4, 12, 4000
    in_aux = np.zeros(T)
    in_buf = np.zeros(T)
    dropped = 0
    for seed in range(runs):
        rb = ReplayBuffer(b, b_star, rng=seed)
        for t in range(T):
            rb.update(t)
        in_aux[rb.auxiliary] += 1
        in_buf[rb.buffer] += 1
        dropped += rb.n_dropped
    expected = np.array([0.8 ** (T - max(t, b_star)) for t in range(T)])
    sigma = np.sqrt(expected * (1 - expected) / runs)
    np.testing.assert_array_less(np.abs(in_aux / runs - expected), 4 * sigma + 1e-9)
    np.testing.assert_array_less(np.abs(in_buf / runs - expected / 2), 4 * sigma + 1e-9)
    assert np.all(np.diff(expected[b_star:]) > 0)  # newer -> more likely (t = b*-1 and b* tie)
    assert in_aux[-1] > in_aux[T // 2] > in_aux[0]
    # dropped with probability 1/(b*+1) on each of the T - b* updates to a full B*
    rate = dropped / (runs * (T - b_star))
    assert abs(rate - 0.2) < 4 * np.sqrt(0.2 * 0.8 / (runs * (T - b_star)))


def test_state_dict_round_trip_continues_identically():
    a = ReplayBuffer(2, 5, rng=11)
    for t in range(9):
        a.update(t)
    b = ReplayBuffer(2, 5, rng=999)
    b.load_state_dict(a.state_dict())
    assert (b.auxiliary, b.buffer, b.n_seen, b.n_dropped) == (a.auxiliary, a.buffer, a.n_seen, a.n_dropped)
    for t in range(9, 30):
        assert a.update(t) == b.update(t)
        assert a.retrieve(2) == b.retrieve(2)
    assert a.auxiliary == b.auxiliary


def test_pickle_round_trip_with_array_samples():
    a = ReplayBuffer(1, 2, rng=0)
    for t in range(4):
        a.update((np.full((2, 2, 2), t, np.float32), np.zeros((2, 2, 2)), np.ones((2, 2, 2))))
    b = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(b.buffer[0][0], a.buffer[0][0])
    a.update("x")
    b.update("x")
    assert [s if isinstance(s, str) else int(s[0][0, 0, 0]) for s in a.auxiliary] == [
        s if isinstance(s, str) else int(s[0][0, 0, 0]) for s in b.auxiliary
    ]


def test_state_dict_with_another_bit_generator():
    a = ReplayBuffer(1, 3, rng=np.random.Generator(np.random.MT19937(5)))
    for t in range(6):
        a.update(t)
    b = ReplayBuffer(1, 3)
    b.load_state_dict(a.state_dict())
    assert [b.update(t) for t in range(6, 20)] == [a.update(t) for t in range(6, 20)]


@pytest.mark.parametrize(
    ("b", "b_star", "match"),
    [(0, 3, "b must be"), (2, 2, "b_star must be > b"), (3, 1, "b_star must be > b"), (1.5, 3, "b must be"),
     (1, "4", "b_star must be")],
)
def test_bad_sizes(b, b_star, match):
    with pytest.raises(ValueError, match=match):
        ReplayBuffer(b, b_star)


@pytest.mark.parametrize(("m", "match"), [(-1, "m must be"), (3, "m must be <= b"), (1.0, "m must be")])
def test_bad_retrieve(m, match):
    rb = ReplayBuffer(2, 4)
    rb.update(0)
    with pytest.raises(ValueError, match=match):
        rb.retrieve(m)


def test_bad_state():
    a = ReplayBuffer(2, 4, rng=0)
    a.update(0)
    with pytest.raises(ValueError, match="sizes"):
        ReplayBuffer(2, 5).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="missing"):
        ReplayBuffer(2, 4).load_state_dict({"b": 2})
    broken = a.state_dict() | {"selected": [3]}
    with pytest.raises(ValueError, match="selection"):
        ReplayBuffer(2, 4).load_state_dict(broken)
