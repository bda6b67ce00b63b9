"""Credit assignment in the trainer: process rewards, G-RA gating and PPO's values on a turn
table."""

import numpy as np

from agentenv.train.config import AlgorithmConfig
from agentenv.train.credit import add_process_rewards, compute_credit, gate_rewards
from agentenv.train.value import TurnValues
from agentenv.trajectory import Trajectory, Turn, TurnTable


def test_gra_step_rewards_count_with_their_process_reward_weight():
    """A format bonus of 0.1 per valid turn, gated on the answer: the outcome of a solved
    two-turn episode stays 1 (not 1 − 2·0.9), and the bonus is paid only when solved."""
    em = np.array([0.0, 1.0, 0.0, 0.0, 0.0])  # episode 0 solved in 2 turns, 1 failed, 2 guessed
    table = TurnTable(
        group=np.zeros(5, dtype=int),
        traj=np.array([0, 0, 1, 1, 2]),
        turn=np.array([0, 1, 0, 1, 0]),
        reward=em.copy(),
        action_valid=np.ones(5, dtype=bool),
        anchor=[""] * 5,
        components={"format": np.ones(5), "em": em},
        outcome=np.array([1.0, 0.0, 0.0]),
        traj_group=np.zeros(3, dtype=int),
    )
    weights = {"format": 0.1}
    gated = gate_rewards(add_process_rewards(table, weights), 1.0, ["format"], weights)
    assert np.allclose(gated.outcome, [1.2, 0.0, 0.0])
    assert np.allclose(gated.reward, [0.1, 1.1, 0.0, 0.0, 0.0])


async def test_ppo_credit_reads_the_values_and_bootstraps_only_truncated_ends():
    """Two one-group episodes: τ0 answered (terminal), τ1 ran out of turns (truncated)."""
    trajectories = [
        Trajectory("t0", "q", "e", "q", turns=[Turn(0, "a", "o", 0.0), Turn(1, "a", "o", 1.0)]),
        Trajectory("t1", "q", "e", "q", turns=[Turn(0, "a", "o", 0.5)], status="truncated"),
    ]
    values = TurnValues(values=np.array([0.2, 0.4, 0.1]), end_values=np.array([9.0, 0.3]))
    options = {"gamma": 0.9, "lam": 0.8, "whiten": False}
    plain = AlgorithmConfig(estimator="ppo", options=options)
    credit = await compute_credit(plain, trajectories, None, values=values)
    end = credit.table.components["end_value"]
    np.testing.assert_allclose(end, [0.0, 0.0, 0.3])  # τ0's last-token value is not a bootstrap
    np.testing.assert_allclose(credit.table.components["value"], values.values)
    # δ = [0 + 0.9·0.4 − 0.2, 1 − 0.4], [0.5 − 0.1]
    np.testing.assert_allclose(credit.advantages, [0.16 + 0.72 * 0.6, 0.6, 0.4])
    np.testing.assert_allclose(credit.returns, credit.advantages + values.values)
    boot = AlgorithmConfig(estimator="ppo", options={**options, "bootstrap": True})
    credit = await compute_credit(boot, trajectories, None, values=values)
    np.testing.assert_allclose(credit.advantages, [0.16 + 0.72 * 0.6, 0.6, 0.4 + 0.9 * 0.3])
    record = credit.per_trajectory("ppo")[1]
    assert record["components"] == {"value": [0.1], "end_value": [0.3]}
