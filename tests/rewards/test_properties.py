"""Invariants of the estimators, by property-based tests."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agentenv.rewards import advantages as adv
from agentenv.rewards import gating

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def batches(draw, min_group=1):
    """Random groups of trajectories of random lengths, with rewards, anchors and a permutation."""
    n_groups = draw(st.integers(1, 4))
    rows = []
    traj_id = 0
    for g in range(n_groups):
        for _ in range(draw(st.integers(min_group, 4))):
            length = draw(st.integers(1, 5))
            for t in range(length):
                rows.append((g, traj_id, t))
            traj_id += 1
    n = len(rows)
    group, traj, turn = (np.array(c) for c in zip(*rows, strict=True))
    reals = st.floats(-2, 2, allow_nan=False).map(lambda x: round(x, 3))
    rewards = np.array(draw(st.lists(reals, min_size=n, max_size=n)))
    anchors = np.array(draw(st.lists(st.sampled_from("abc"), min_size=n, max_size=n)))
    perm = np.array(draw(st.permutations(range(n))))
    return group, traj, turn, rewards, anchors, perm


def _turn_estimators(group, traj, turn, r, anchors):
    last = np.zeros(len(traj), bool)
    for t in np.unique(traj):
        idx = np.flatnonzero(traj == t)
        last[idx[np.argmax(turn[idx])]] = True
    outcome = np.zeros(len(traj))
    for t in np.unique(traj):
        outcome[traj == t] = r[traj == t].sum()
    ig = np.where(last, np.nan, r)
    return {
        "returns": adv.discounted_returns(r, traj, turn, gamma=0.9),
        "igpo": adv.igpo(r, last, group, traj, turn, gamma=0.9),
        "igpo_sep": adv.igpo(r, last, group, traj, turn, norm="separate"),
        "gigpo": adv.gigpo(r, group, traj, turn, anchors),
        "gigpo_steps": adv.gigpo(r, group, traj, turn, anchors, episode_stat="steps", std=None),
        "hgpo": adv.hgpo(r, group, traj, turn, anchors, history=2, episode_weight=0.5),
        "a2tgpo": np.concatenate(adv.a2tgpo(ig, outcome, group, traj, turn)),
        "empg": adv.empg(r, np.abs(r) + 0.1, traj, turn),
        "gae": np.concatenate(adv.gae(r, np.abs(r), traj, turn, gamma=0.9, lam=0.8)),
        "gated_rows": gating.gated_turn_rewards(
            np.arange(traj.max() + 1) - 1.0, r, traj, turn, threshold=0.0
        ),
    }


@SETTINGS
@given(batches())
def test_row_order_invariance(batch):
    group, traj, turn, r, anchors, perm = batch
    base = _turn_estimators(group, traj, turn, r, anchors)
    shuffled = _turn_estimators(group[perm], traj[perm], turn[perm], r[perm], anchors[perm])
    for name, values in base.items():
        n = len(traj)
        expected = np.concatenate([v[perm] for v in np.split(values, len(values) // n)])
        np.testing.assert_allclose(shuffled[name], expected, atol=1e-9, err_msg=name)


@SETTINGS
@given(batches())
def test_ids_are_labels_not_values(batch):
    group, traj, turn, r, anchors, _ = batch
    base = _turn_estimators(group, traj, turn, r, anchors)
    relabelled = _turn_estimators(group * 7 + 3, traj * 5 + 11, turn * 3 + 2, r, anchors)
    for name in base:
        if name in ("gated_rows",):  # indexes outcome by traj id
            continue
        np.testing.assert_allclose(relabelled[name], base[name], atol=1e-9, err_msg=name)


@SETTINGS
@given(
    st.lists(st.integers(2, 6), min_size=1, max_size=5),
    st.floats(-3, 3, allow_nan=False),
)
def test_identical_rewards_give_zero_advantage(sizes, value):
    group = np.repeat(np.arange(len(sizes)), sizes)
    scores = np.full(len(group), value)
    for method in (adv.grpo, adv.drgrpo, adv.rloo):
        np.testing.assert_allclose(method(scores, group), 0.0, atol=1e-9)
    np.testing.assert_allclose(adv.grpo(scores, group, std="population"), 0.0, atol=1e-9)
    first, later = adv.mt_grpo(scores, scores, group, np.arange(len(group)) % 2 == 0)
    np.testing.assert_allclose(np.r_[first, later], 0.0, atol=1e-9)
    # turn level: every trajectory gets the same rewards on the same anchors
    traj = np.repeat(np.arange(len(group)), 3)
    turn = np.tile(np.arange(3), len(group))
    g = np.repeat(group, 3)
    r = np.tile([0.0, 0.5, value], len(group))
    anchors = np.tile(["s0", "s1", "s2"], len(group))
    np.testing.assert_allclose(adv.gigpo(r, g, traj, turn, anchors), 0.0, atol=1e-9)
    np.testing.assert_allclose(adv.hgpo(r, g, traj, turn, anchors), 0.0, atol=1e-9)
    last = turn == 2
    np.testing.assert_allclose(
        adv.igpo(r, last, g, traj, turn, norm="separate")[last], 0.0, atol=1e-9
    )


@SETTINGS
@given(batches(min_group=2))
def test_gigpo_all_distinct_anchors_is_episode_term(batch):
    group, traj, turn, r, _, _ = batch
    distinct = [f"state-{i}" for i in range(len(traj))]
    for stat in ("trajectory", "steps"):
        full = adv.gigpo(r, group, traj, turn, distinct, episode_stat=stat, omega=1.0)
        episode = adv.gigpo(r, group, traj, turn, distinct, episode_stat=stat, omega=0.0)
        np.testing.assert_allclose(full, episode, atol=1e-12)


@SETTINGS
@given(batches(), st.floats(0.0, 1.0))
def test_gra_with_open_gate_equals_direct(batch, high):
    _, traj, _, r, _, _ = batch
    outcome = np.full(traj.max() + 1, high)
    np.testing.assert_allclose(
        gating.gated_accumulation(outcome, r, traj, threshold=0.0),
        gating.direct_accumulation(outcome, r, traj),
        atol=1e-12,
    )


@SETTINGS
@given(batches())
def test_returns_match_loop(batch):
    _, traj, turn, r, _, perm = batch
    got = adv.discounted_returns(r[perm], traj[perm], turn[perm], gamma=0.7)
    expected = np.zeros(len(r))
    for t in np.unique(traj):
        idx = np.flatnonzero(traj == t)
        idx = idx[np.argsort(turn[idx])]
        running = 0.0
        for i in idx[::-1]:
            running = r[i] + 0.7 * running
            expected[i] = running
    np.testing.assert_allclose(got, expected[perm], atol=1e-9)


@SETTINGS
@given(batches(min_group=2))
def test_hgpo_level_zero_is_gigpo_step_term(batch):
    group, traj, turn, r, anchors, _ = batch
    h = adv.hgpo(r, group, traj, turn, anchors, history=0, std=None)
    step = adv.gigpo(r, group, traj, turn, anchors, std=None) - adv.gigpo(
        r, group, traj, turn, anchors, std=None, omega=0.0
    )
    np.testing.assert_allclose(h, step, atol=1e-9)


@SETTINGS
@given(batches(), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_gae_matches_loop(batch, gamma, lam):
    _, traj, turn, r, _, perm = batch
    v = np.cos(r + turn)
    end = np.sin(traj.astype(float))
    got, ret = adv.gae(
        r[perm],
        v[perm],
        traj[perm],
        turn[perm],
        gamma=gamma,
        lam=lam,
        end_value=end[perm],
        whiten=False,
    )
    expected = np.zeros(len(r))
    for t in np.unique(traj):
        idx = np.flatnonzero(traj == t)
        idx = idx[np.argsort(turn[idx])]
        running, following = 0.0, end[idx[0]]
        for i in idx[::-1]:
            running = r[i] + gamma * following - v[i] + gamma * lam * running
            following = v[i]
            expected[i] = running
    np.testing.assert_allclose(got, expected[perm], atol=1e-9)
    np.testing.assert_allclose(ret, (expected + v)[perm], atol=1e-9)
