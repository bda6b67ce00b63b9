"""compute_advantages over a TurnTable built from real Trajectory records."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from agentenv.rewards import advantages as adv
from agentenv.rewards.estimators import (
    ESTIMATORS,
    compute_advantages,
    compute_advantages_with_clip,
    value_targets,
)
from agentenv.trajectory import Trajectory, Turn, TurnTable


def _traj(i, group, rewards, anchors, ig):
    turns = [
        Turn(
            index=t,
            action=f"a{t}",
            observation=f"o{t}",
            reward=r,
            reward_components={"info_gain": g, "entropy": 0.1 * (t + i)},
            anchor=a,
        )
        for t, (r, a, g) in enumerate(zip(rewards, anchors, ig, strict=True))
    ]
    return Trajectory(traj_id=f"t{i}", group_id=group, env_id="e", task_id=group, turns=turns)


@pytest.fixture
def table():
    trajs = [
        _traj(0, "q1", [0, 0, 1.0], ["A", "B", "C"], [0.3, 0.1, 0]),
        _traj(1, "q1", [0, 0, 0.0], ["A", "A", "B"], [-0.05, 0, 0]),
        _traj(2, "q1", [0, 1.0], ["A", "B"], [0.2, 0]),
        _traj(3, "q2", [0.5], ["Z"], [0]),
        _traj(4, "q2", [0, 0.25], ["Z", "Y"], [0.1, 0]),
    ]
    return TurnTable.from_trajectories(trajs)


def test_every_estimator_runs(table):
    needs = {"empg": {"step_entropy": "entropy"}, "ppo": {"values": "entropy"}}
    for method in ESTIMATORS:
        opts = needs.get(method, {})
        values = compute_advantages(method, table, **opts)
        assert values.shape == table.traj.shape and np.isfinite(values).all(), method


def test_outcome_estimators_broadcast(table):
    got = compute_advantages("grpo", table)
    per_traj = adv.grpo(table.outcome, table.traj_group)
    np.testing.assert_allclose(got, per_traj[table.traj])


def test_gigpo_matches_direct_call(table):
    got = compute_advantages("gigpo", table, gamma=0.95, episode_stat="steps")
    direct = adv.gigpo(
        table.reward, table.group, table.traj, table.turn, table.anchor, episode_stat="steps"
    )
    np.testing.assert_allclose(got, direct)
    # q1 is docs/credit-assignment.md, 'GiGPO — worked example': τ1 t0, std unbiased, steps
    assert got[0] == pytest.approx(1.545640, abs=1e-5)


def test_igpo_uses_info_gain_component(table):
    got = compute_advantages("igpo", table)
    # q1 follows docs/credit-assignment.md, 'IGPO — worked example' but τ3 has one tool turn
    # and outcome 1, so the expected values come from the direct call
    last = np.array([0, 0, 1, 0, 0, 1, 0, 1, 1, 0, 1], bool)
    r = np.where(last, table.reward, table.components["info_gain"])
    np.testing.assert_allclose(got, adv.igpo(r, last, table.group, table.traj, table.turn))


def test_mt_grpo_first_and_later_turns(table):
    got = compute_advantages("mt_grpo", table)
    first, later = adv.mt_grpo(
        [0, 0, 0, 0, 0], [1.0, 0, 1.0, 0.5, 0.25], table.traj_group, [1, 1, 1, 0, 1]
    )
    assert got[0] == pytest.approx(first[0]) and got[1] == pytest.approx(later[0])
    assert got[8] == pytest.approx(first[3])


def test_a2tgpo_clip_scales(table):
    values, clip = compute_advantages_with_clip("a2tgpo", table)
    np.testing.assert_allclose(values, compute_advantages("a2tgpo", table))
    last = np.array([0, 0, 1, 0, 0, 1, 0, 1, 1, 0, 1], bool)
    assert np.all(clip[last] == 1.0) and np.all((clip > 0.7) & (clip < 1.3))
    _, ones = compute_advantages_with_clip("grpo", table)
    assert np.all(ones == 1.0)


def test_errors_are_clear(table):
    with pytest.raises(ValueError, match="unknown estimator"):
        compute_advantages("gae", table)
    with pytest.raises(ValueError, match="values: no reward component 'value'"):
        compute_advantages("ppo", table)
    with pytest.raises(ValueError, match="end_value: no reward component 'end_value'"):
        compute_advantages("ppo", table, values="entropy", bootstrap=True)
    with pytest.raises(ValueError, match="step_entropy"):
        compute_advantages("empg", table)
    with pytest.raises(ValueError, match="no reward component 'nope'"):
        compute_advantages("igpo", table, info_gain="nope")
    with pytest.raises(ValueError, match="bad options"):
        compute_advantages("grpo", table, gamma=0.9)


def test_ppo_reads_values_and_bootstrap_components(table):
    values = np.linspace(0.1, 0.6, table.traj.size)
    last = np.array([0, 0, 1, 0, 0, 1, 0, 1, 1, 0, 1], bool)
    end = np.where(table.traj == 4, 0.7, 0.0)  # trajectory 4 was truncated
    components = {**table.components, "value": values, "end_value": end}
    table = replace(table, components=components)
    got = compute_advantages("ppo", table, gamma=0.9, lam=0.95, whiten=False)
    direct, ret = adv.gae(table.reward, values, table.traj, table.turn, gamma=0.9, lam=0.95)
    np.testing.assert_allclose(got, ret - values)
    np.testing.assert_allclose(value_targets(table, gamma=0.9, lam=0.95), ret)
    boot = compute_advantages("ppo", table, gamma=0.9, lam=0.95, whiten=False, bootstrap=True)
    np.testing.assert_allclose(boot[table.traj != 4], got[table.traj != 4])
    assert boot[last & (table.traj == 4)] == pytest.approx(
        got[last & (table.traj == 4)] + 0.9 * 0.7
    )
    white = compute_advantages("ppo", table, gamma=0.9, lam=0.95)
    np.testing.assert_allclose(white, direct)
    assert white.mean() == pytest.approx(0.0, abs=1e-12)


def test_input_validation_names_fields():
    with pytest.raises(ValueError, match="duplicate"):
        adv.discounted_returns([1, 2], [0, 0], [1, 1], gamma=1.0)
    with pytest.raises(ValueError, match="spans several groups"):
        adv.gigpo([1, 2], [0, 1], [0, 0], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="non-finite"):
        adv.grpo([1.0, np.nan], [0, 0])
    with pytest.raises(ValueError, match="scores: expected a 1-D array"):
        adv.grpo([[1.0]], [0])
    with pytest.raises(ValueError, match="std"):
        adv.grpo([1.0, 2.0], [0, 0], std="sample")
