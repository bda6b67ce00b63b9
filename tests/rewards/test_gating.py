"""G-RA (docs/credit-assignment.md, 'G-RA — worked example') and its multi-priority form."""

from __future__ import annotations

import numpy as np
import pytest

from agentenv.rewards import gating

OUTCOME = np.array([1.0, -0.5, 0.0])
TRAJ = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
TURN = np.array([0, 1, 2] * 3)
LOW = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.0, 0.1])


def test_reference_totals():
    np.testing.assert_allclose(
        gating.gated_accumulation(OUTCOME, LOW, TRAJ), [1.3, -0.5, 0.2], atol=1e-9
    )
    np.testing.assert_allclose(
        gating.direct_accumulation(OUTCOME, LOW, TRAJ), [1.3, -0.2, 0.2], atol=1e-9
    )


def test_strict_gate_closes_at_threshold():
    np.testing.assert_allclose(
        gating.gated_accumulation(OUTCOME, LOW, TRAJ, strict=True), [1.3, -0.5, 0.0], atol=1e-9
    )


def test_turn_placement_any_row_order():
    perm = np.array([8, 3, 0, 5, 1, 7, 2, 6, 4])
    got = gating.gated_turn_rewards(OUTCOME, LOW[perm], TRAJ[perm], TURN[perm])
    expected = np.array([0.1, 0.1, 1.1, 0, 0, -0.5, 0.1, 0, 0.1])
    np.testing.assert_allclose(got, expected[perm], atol=1e-9)


def test_multi_priority():
    # channel 2 counts only if channel 0 >= 0 and channel 1 >= 0.5
    got = gating.multi_priority_accumulation(
        [[1.0, 1.0, -1.0], [1.0, 0.0, 1.0], [0.25, 0.25, 0.25]], [0.0, 0.5]
    )
    np.testing.assert_allclose(got, [2.25, 1.0, -1.0])


def test_bad_inputs_name_the_field():
    with pytest.raises(ValueError, match="thresholds"):
        gating.multi_priority_accumulation([[1.0], [1.0]], [])
    with pytest.raises(ValueError, match="traj"):
        gating.gated_accumulation(OUTCOME, LOW, TRAJ + 5)


def test_swe_placeholders_gate_on_nonempty_patch():
    levels = gating.SWE_OUTCOME_REWARD
    outcome = np.array(
        [levels[k] for k in ("no_submit", "empty_patch", "tests_fail", "tests_pass")]
    )
    steps = np.full(4, gating.SWE_STEP_REWARD)
    got = gating.gated_accumulation(
        outcome, steps, np.arange(4), threshold=gating.SWE_GATE_THRESHOLD
    )
    np.testing.assert_allclose(got, [-1.0, -0.5, 0.1, 1.1])
