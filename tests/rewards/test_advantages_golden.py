"""The worked examples of docs/credit-assignment.md as golden tests, atol 1e-5."""

from __future__ import annotations

import numpy as np
import pytest

from agentenv.rewards import advantages as adv

ATOL = 1e-5


def close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=ATOL, rtol=0)


# --- docs/credit-assignment.md, 'Outcome estimators — worked example' -----------------------------
def test_outcome_estimators_reference_example():
    r, g = [1.0, 0.0, 0.5], [7, 7, 7]
    close(adv.grpo(r, g), [0.999998, -0.999998, 0.0])
    close(adv.drgrpo(r, g), [0.5, -0.5, 0.0])
    close(adv.rloo(r, g), [0.75, -0.75, 0.0])


def test_outcome_singleton_rule():
    r, g = [2.0, 1.0, 3.0], [0, 1, 1]
    close(adv.grpo(r, g)[0], 2.0 / (1 + 1e-6))  # verl: mean 0, std 1
    assert adv.grpo(r, g, singleton="zero")[0] == 0.0
    assert adv.rloo(r, g)[0] == 2.0
    assert adv.drgrpo(r, g, singleton="zero")[0] == 0.0


# --- docs/credit-assignment.md, 'IGPO — worked example' -------------------------------------------
# rows deliberately shuffled: traj, turn, reward, is_outcome
IGPO_ROWS = [
    (2, 1, -0.1, False),
    (0, 2, 1.0, True),
    (1, 0, -0.05, False),
    (0, 0, 0.3, False),
    (2, 2, 0.5, True),
    (1, 1, 0.0, True),
    (0, 1, 0.1, False),
    (2, 0, 0.2, False),
]


def _igpo(**kw):
    traj, turn, r, is_out = (np.array(c) for c in zip(*IGPO_ROWS, strict=True))
    a = adv.igpo(r, is_out, np.zeros_like(traj), traj, turn, **kw)
    return {(int(t), int(u)): v for t, u, v in zip(traj, turn, a, strict=True)}


def _per_traj(table):
    return [[table[(t, u)] for u in range(3) if (t, u) in table] for t in range(3)]


def test_igpo_joint():
    got = _per_traj(_igpo())
    close(got[0], [1.964372, 1.799144, 2.221393])
    close(got[1], [-1.578841, -0.715986])
    close(got[2], [-0.385531, -0.257021, 0.752703])


def test_igpo_joint_gamma():
    close(_per_traj(_igpo(gamma=0.9))[0], [1.584532, 1.577005, 2.221393])


def test_igpo_separate_zero_boundary():
    got = _per_traj(_igpo(norm="separate"))
    close(got[0], [2.694669, 1.291557, 1.224742])
    close(got[1], [-2.160150, -1.224742])
    close(got[2], [-0.534519, -1.269482, 0.0])


# --- docs/credit-assignment.md, 'G-RA — worked example' -------------------------------------------
def test_gra_then_grpo():
    close(adv.grpo([1.3, -0.5, 0.2], [0, 0, 0]), [1.065340, -0.918397, -0.146944])
    close(adv.grpo([1.3, -0.2, 0.2], [0, 0, 0]), [1.115765, -0.815367, -0.300398])


def test_gra_turn_returns():
    traj = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    turn = [0, 1, 2] * 3
    r = [0.1, 0.1, 1.1, 0, 0, -0.5, 0.1, 0, 0.1]
    close(
        adv.discounted_returns(r, traj, turn, gamma=1.0),
        [1.3, 1.2, 1.1, -0.5, -0.5, -0.5, 0.2, 0.1, 0.1],
    )


# --- docs/credit-assignment.md, 'GiGPO — worked example' ------------------------------------------
GI_TRAJ = np.array([0, 0, 0, 1, 1, 1, 2, 2])
GI_TURN = np.array([0, 1, 2, 0, 1, 2, 0, 1])
GI_R = np.array([0, 0, 1, 0, 0, 0, 0, 1.0])
GI_ANCHOR = ["A", "B", "C", "A", "A", "B", "A", "B"]
GI_G = np.zeros(8, dtype=int)


def _gigpo(**kw):
    return adv.gigpo(GI_R, GI_G, GI_TRAJ, GI_TURN, GI_ANCHOR, gamma=0.95, **kw)


def test_gigpo_step_returns():
    close(
        adv.discounted_returns(GI_R, GI_TRAJ, GI_TURN, gamma=0.95),
        [0.9025, 0.95, 1.0, 0, 0, 0, 0.95, 1.0],
    )


@pytest.mark.parametrize(
    ("stat", "std", "a1", "a2"),
    [
        ("steps", None, 0.375, -0.625),
        ("steps", "unbiased", 0.724567, -1.207612),
        ("trajectory", None, 0.333333, -0.666667),
        ("trajectory", "unbiased", 0.577349, -1.154699),
    ],
)
def test_gigpo_episode_term(stat, std, a1, a2):
    got = _gigpo(omega=0.0, episode_stat=stat, std=std)
    close(got, [a1, a1, a1, a2, a2, a2, a1, a1])


def test_gigpo_combined_mean_norm():
    got = _gigpo(episode_stat="steps", std=None)
    close(got, [0.814375, 0.675, 0.375, -1.088125, -1.088125, -1.275, 0.861875, 0.725])


def test_gigpo_combined_mean_std_norm():
    got = _gigpo(episode_stat="steps", std="unbiased")
    close(got, [1.545640, 1.256980, 0.724567, -2.073067, -2.073067, -2.361174, 1.634405, 1.345716])


def test_gigpo_similarity_clusters_near_duplicates():
    anchors = ["kitchen: a mug", "kitchen: a mug.", "garage", "kitchen: a mug"]
    r = np.array([1.0, 0.0, 0.0, 0.5])
    one = adv.gigpo(r, [0] * 4, [0, 1, 2, 3], [0] * 4, anchors, similarity=0.9, omega=1.0)
    exact = adv.gigpo(r, [0] * 4, [0, 1, 2, 3], [0] * 4, anchors, omega=1.0)
    # with clustering, the row-1 anchor joins rows 0 and 3; exact matching leaves it alone
    ep = adv.gigpo(r, [0] * 4, [0, 1, 2, 3], [0] * 4, anchors, omega=0.0)
    assert exact[1] == pytest.approx(ep[1])
    assert one[1] != pytest.approx(ep[1])
    assert one[2] == pytest.approx(ep[2])


# --- docs/credit-assignment.md, 'A²TGPO — worked example' -----------------------------------------
def test_a2tgpo_reference():
    nan = np.nan
    traj = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    turn = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    ig = np.array([0.3, 0.1, nan, -0.1, 0.2, nan, 0.1, nan])
    em = np.array([1, 1, 1, 0, 0, 0, 1, 1.0])
    perm = np.array([5, 2, 7, 0, 3, 6, 1, 4])
    a, c = adv.a2tgpo(ig[perm], em[perm], np.zeros(8, int), traj[perm], turn[perm])
    inv = np.argsort(perm)
    close(
        a[inv],
        [0.754784, 0.407112, 0.707105, -1.461889, -1.114217, -1.414211, 0.707105, 0.707105],
    )
    close(c[inv], [1.163738, 0.861367, 1, 0.836262, 1.138633, 1, 1.0, 1])
    lo, hi = 1 - 3e-3 * c[inv][0], 1 + 4e-3 * c[inv][0]
    close([lo, hi], [0.996509, 1.004655])


# --- docs/credit-assignment.md, 'EMPG — worked example' -------------------------------------------
def test_empg_reference():
    traj = [0, 0, 1, 1, 1, 2]
    turn = [0, 1, 0, 1, 2, 0]
    base = [1.0, 1.0, -1.0, -1.0, -1.0, 0.5]
    ent = [0.2, 1.0, 0.6, 1.4, 0.2, 1.4]
    got = adv.empg(base, ent, traj, turn)
    close(got, [1.630558, 0.843030, -0.981058, -0.390346, -1.446726, 0.344541])


# --- docs/credit-assignment.md, 'MT-GRPO — worked example' ----------------------------------------
def test_mt_grpo_reference():
    first, later = adv.mt_grpo(
        [0.7, 0.2, 0.0], [2.5, 0.5, 0.0], [0, 0, 0], [True, True, False], lam=1.0
    )
    close(first, [2.242901, -0.655209, -0.772724])
    close(later, [1.133808, -0.377936, -0.772724])


# --- docs/credit-assignment.md, 'PPO with turn-level GAE' -----------------------------------------
def test_gae_hand_worked_example():
    """γ = 0.9, λ = 0.8 (γλ = 0.72), rows shuffled.

    τ0, terminal: r = [0, 0, 1], V = [0.5, 0.6, 0.8], V_3 = 0
      δ = [0 + 0.9·0.6 − 0.5, 0 + 0.9·0.8 − 0.6, 1 + 0 − 0.8] = [0.04, 0.12, 0.2]
      A = [0.04 + 0.72·0.264, 0.12 + 0.72·0.2, 0.2] = [0.23008, 0.264, 0.2]
      R = A + V = [0.73008, 0.864, 1.0]
    τ1, truncated: r = [0.5, 0], V = [0.4, 0.2], bootstrap V_2 = 0.3
      δ = [0.5 + 0.9·0.2 − 0.4, 0 + 0.9·0.3 − 0.2] = [0.28, 0.07]
      A = [0.28 + 0.72·0.07, 0.07] = [0.3304, 0.07];  R = [0.7304, 0.27]
      without the bootstrap (V_2 = 0): δ_1 = −0.2, A = [0.136, −0.2], R = [0.536, 0.0]
    whitened (population std over the 5 turns, eps 1e-8):
      τ0 [0.129802, 0.523477, −0.219307], τ1 [1.294116, −1.728088]
    """
    rows = [  # traj, turn, reward, value, end value
        (1, 1, 0.0, 0.2, 0.3),
        (0, 2, 1.0, 0.8, 0.0),
        (0, 0, 0.0, 0.5, 0.0),
        (1, 0, 0.5, 0.4, 0.3),
        (0, 1, 0.0, 0.6, 0.0),
    ]
    traj, turn, r, v, end = (np.array(c) for c in zip(*rows, strict=True))
    kw = {"gamma": 0.9, "lam": 0.8}
    a, ret = adv.gae(r, v, traj, turn, end_value=end, whiten=False, **kw)
    close(a, [0.07, 0.2, 0.23008, 0.3304, 0.264])
    close(ret, [0.27, 1.0, 0.73008, 0.7304, 0.864])
    a, ret = adv.gae(r, v, traj, turn, whiten=False, **kw)
    close(a, [-0.2, 0.2, 0.23008, 0.136, 0.264])
    close(ret, [0.0, 1.0, 0.73008, 0.536, 0.864])
    white, ret_w = adv.gae(r, v, traj, turn, end_value=end, **kw)
    close(white, [-1.728088, -0.219307, 0.129802, 1.294116, 0.523477])
    close(ret_w, [0.27, 1.0, 0.73008, 0.7304, 0.864])  # targets are never whitened


def test_gae_lambda_one_is_return_minus_value_and_lambda_zero_is_td():
    traj, turn = [0, 0, 0, 1], [0, 1, 2, 0]
    r, v = [0.1, 0.0, 1.0, 0.5], [0.3, 0.2, 0.9, 0.4]
    a, ret = adv.gae(r, v, traj, turn, gamma=0.9, lam=1.0, whiten=False)
    close(ret, adv.discounted_returns(r, traj, turn, gamma=0.9))
    close(a, ret - np.array(v))
    td, _ = adv.gae(r, v, traj, turn, gamma=0.9, lam=0.0, whiten=False)
    close(td, [0.1 + 0.9 * 0.2 - 0.3, 0.9 * 0.9 - 0.2, 1.0 - 0.9, 0.5 - 0.4])


def test_gae_end_value_must_be_per_trajectory():
    with pytest.raises(ValueError, match="end_value: must be constant"):
        adv.gae([0, 1], [0, 0], [0, 0], [0, 1], end_value=[0.0, 1.0])
    with pytest.raises(ValueError, match="values: expected 2 rows"):
        adv.gae([0, 1], [0], [0, 0], [0, 1])
