"""Credit assignment in the trainer: process rewards and G-RA gating on a turn table."""

import numpy as np

from agentenv.train.credit import add_process_rewards, gate_rewards
from agentenv.trajectory import TurnTable


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
