"""Credit methods reachable from a config, on the tiny model and search-v0: EMPG on the
rollout's per-turn entropy, the LLM judge, the implicit PRM (PRIME, OPRL) and SPA's progress head.

The randomly initialised tiny model solves no task, so tests that need outcomes that differ
within a group give half of each group a solved episode's outcome (last turn's reward 1,
``success``) on real rollouts."""

import json
import math

import numpy as np
import pytest
import torch

from agentenv.policies.base import Completion
from agentenv.rollout import RolloutEngine, group_requests
from agentenv.train import checkpoint as ckpt
from agentenv.train.config import ConfigError, load_config
from agentenv.train.credit import CreditAssigner
from agentenv.train.episodes import rollout_config
from agentenv.train.learner import build_learner
from agentenv.train.loop import CREDIT_STATE, train
from agentenv.train.losses import token_logprobs_and_entropy
from agentenv.train.metrics import read_metrics
from agentenv.train.model import model_path
from agentenv.trajectory import Trajectory, read_jsonl, write_jsonl
from tests.train.test_train import ENV_KWARGS
from tests.train.test_train import small_config as base_config

JUDGE = {"policy": "tiny", "options": {"mode": "expected"}}


def small_config(tmp_path, total_steps=1, **algorithm):
    return base_config(
        tmp_path,
        total_steps=total_steps,
        checkpoint={"every": 1, "keep": 3},
        algorithm=algorithm,
    )


async def rollouts(cfg, group_size=4):
    """The policy of ``cfg`` and its episodes of two tasks, ``group_size`` each."""
    learner = build_learner(cfg, model_path(cfg), total_optimizer_steps=1)
    engine = RolloutEngine(learner.policy, rollout_config(cfg))
    trajectories = await engine.run(group_requests("search-v0", [0, 1], group_size, ENV_KWARGS))
    assert all(t.trainable and t.num_turns == 2 for t in trajectories)
    return learner, trajectories


def solve_half(trajectories: list[Trajectory]) -> list[bool]:
    """Give the first half of each group a solved episode's outcome; return who was solved."""
    seen: dict[str, int] = {}
    size = len(trajectories) // len({t.group_id for t in trajectories})
    solved = []
    for t in trajectories:
        k = seen[t.group_id] = seen.get(t.group_id, -1) + 1
        t.success = k < size // 2
        t.turns[-1].reward = float(t.success)
        solved.append(t.success)
    return solved


def assigner(cfg, learner, **algorithm):
    config = load_config({**cfg, "algorithm": algorithm})
    return CreditAssigner.for_run(config, model_path(config), learner.model, pad_id=learner.pad_id)


async def advantages(cfg, learner, trajectories, **algorithm):
    credit_assigner = assigner(cfg, learner, **algorithm)
    try:
        return (await credit_assigner(trajectories, learner.policy)).advantages
    finally:
        await credit_assigner.aclose()


def train_rows(run_dir):
    """The run's train rows without wall times (``*_s``, ``tokens_per_s``)."""
    return [
        {k: v for k, v in row.items() if not k.endswith("_s")}
        for row in read_metrics(run_dir, "train")
    ]


def resumed_from_first_checkpoint(run_dir):
    """The rows of ``run_dir`` after replaying it from its step-1 checkpoint."""
    (run_dir / "checkpoints" / "latest").write_text("step-000001")
    train(None, resume=run_dir)
    return train_rows(run_dir)


# ---------------------------------------------------------------------------------------------
# EMPG: the rollout's per-turn entropy
# ---------------------------------------------------------------------------------------------
async def test_rollout_records_each_turns_exact_mean_entropy(tmp_path):
    cfg = load_config(small_config(tmp_path))
    learner, trajectories = await rollouts(cfg, group_size=2)
    await learner.policy.aclose()
    vocab = learner.model.config.vocab_size
    for t in trajectories:
        arrays = t.arrays()
        ids = torch.from_numpy(arrays["token_ids"])[None]
        with torch.no_grad():
            logits = learner.model(input_ids=ids).logits
        _, entropy = token_logprobs_and_entropy(logits, ids)
        for turn in t.turns:
            assert turn.entropy is not None and 0 < turn.entropy <= math.log(vocab)
            tokens = (arrays["turn_ids"] == turn.index) & (arrays["loss_mask"] == 1)
            expected = float(entropy[0, torch.from_numpy(tokens)].mean())
            assert turn.entropy == pytest.approx(expected, abs=1e-4)

    path = tmp_path / "t.jsonl"
    write_jsonl(trajectories, path)
    again = list(read_jsonl(path))
    assert [u.entropy for t in again for u in t.turns] == [
        u.entropy for t in trajectories for u in t.turns
    ]
    old = json.loads(path.read_text().splitlines()[0])
    for turn in old["turns"]:
        del turn["entropy"]
    path.write_text(json.dumps(old) + "\n")
    assert [u.entropy for u in next(read_jsonl(path)).turns] == [None, None]


def test_without_exact_entropies_a_turn_gets_the_sampled_tokens_estimate():
    done = Completion([5, 6], "ab", [-1.0, -2.0], "eos")
    assert done.mean_entropy == pytest.approx(1.5)
    exact = Completion([5, 6], "ab", [-1.0, -2.0], "eos", entropies=[0.5, 0.7])
    assert exact.mean_entropy == pytest.approx(0.6)
    assert Completion([], "", [], "length").mean_entropy is None
    assert Completion([5], "a", [float("nan")], "eos").mean_entropy is None
    assert Completion([5], "a", [0.0], "eos").mean_entropy == 0.0  # a scripted action


async def test_empg_from_config_amplifies_confident_turns_and_damps_uncertain_ones(tmp_path):
    """``algorithm.estimator: empg`` with nothing else named reads the rollout's entropies.
    Within a trajectory (one GRPO advantage A), the more confident turn ends up further from
    the less confident one in A's direction (ζ = 0 isolates g(H))."""
    cfg = small_config(tmp_path)
    learner, trajectories = await rollouts(load_config(cfg))
    solved = solve_half(trajectories)
    try:
        base = await advantages(cfg, learner, trajectories)
        empg = await advantages(cfg, learner, trajectories, estimator="empg", options={"zeta": 0.0})
        default = await advantages(cfg, learner, trajectories, estimator="empg")
    finally:
        await learner.policy.aclose()
    assert np.all(np.isfinite(empg)) and not np.allclose(empg, base)
    assert not np.allclose(default, empg)  # the future-clarity bonus
    for i, t in enumerate(trajectories):
        a = base[2 * i]
        assert a == base[2 * i + 1] and (a > 0) == solved[i]
        confident, uncertain = sorted((0, 1), key=lambda k: t.turns[k].entropy)
        spread = empg[2 * i + confident] - empg[2 * i + uncertain]
        assert np.sign(spread) == np.sign(a)


def test_empg_trains_from_a_config(tmp_path):
    run_dir = train(small_config(tmp_path, estimator="empg"))
    (row,) = read_metrics(run_dir, "train")
    assert row["optimizer_steps"] == 1 and row["grad_norm"] > 0


# ---------------------------------------------------------------------------------------------
# LLM judge
# ---------------------------------------------------------------------------------------------
def test_judge_run_logs_its_reward(tmp_path):
    run_dir = train(small_config(tmp_path, judge=JUDGE))
    (row,) = read_metrics(run_dir, "train")
    assert 0 < row["reward/judge"] < 2  # two turns, each scored in [0, 1]
    assert row["judge_failures"] == 0 and row["judge_requests"] == 8
    saved = [json.loads(line) for line in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    assert all(len(t["metadata"]["credit"]["components"]["judge"]) == 2 for t in saved)


async def test_a_judge_that_cannot_be_loaded_is_named(tmp_path):
    cfg = load_config(small_config(tmp_path, judge={"policy": str(tmp_path / "nowhere")}))
    with pytest.raises(ConfigError, match="algorithm.judge.policy: bad policy spec"):
        CreditAssigner.for_run(cfg, model_path(cfg), torch.nn.Linear(1, 1), pad_id=0)


# ---------------------------------------------------------------------------------------------
# implicit PRM
# ---------------------------------------------------------------------------------------------
def test_prime_run_logs_and_resumes_with_its_state(tmp_path):
    """The second step's PRM loss and rewards come out the same when the run is replayed from
    the first checkpoint: the PRM and its optimizer were restored."""
    run_dir = train(small_config(tmp_path, total_steps=2, prm={"kind": "prime", "lr": 1e-3}))
    rows = train_rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["prm_loss"] > 0 and r["reward/prm"] != 0 for r in rows)
    state = ckpt.load_extra_state(ckpt.latest_checkpoint(run_dir))[CREDIT_STATE]["prm"]
    assert {"model", "optimizer", "scheduler"} <= state.keys()
    assert resumed_from_first_checkpoint(run_dir) == rows


def test_oprl_run_without_a_success_has_no_pair_to_learn_from(tmp_path):
    run_dir = train(small_config(tmp_path, prm={"kind": "oprl"}))
    (row,) = read_metrics(run_dir, "train")
    assert row["success"] == 0 and row["prm_loss"] == 0
    assert abs(row["reward/prm"]) < 1e-4  # π_φ is still the rollout policy


@pytest.mark.parametrize("kind", ["prime", "oprl"])
async def test_prm_learns_the_outcomes_and_changes_the_advantages(tmp_path, kind):
    """Trained on a batch's outcomes for a few steps, the PRM's implicit reward is higher on
    the solved episodes; its rewards change the advantages, by nothing at weight 0."""
    cfg = small_config(tmp_path)
    learner, trajectories = await rollouts(load_config(cfg))
    solved = np.repeat(solve_half(trajectories), 2)
    prm = {"kind": kind, "lr": 1e-3}
    credit_assigner = assigner(cfg, learner, prm=prm)
    try:
        base = await advantages(cfg, learner, trajectories)
        muted = await advantages(cfg, learner, trajectories, prm={**prm, "weight": 0.0})
        for _ in range(4):
            credit = await credit_assigner(trajectories, learner.policy)
    finally:
        await learner.policy.aclose()
    reward = credit.table.components["prm"]
    assert credit.metrics["prm_loss"] > 0
    assert reward[solved].mean() > reward[~solved].mean()
    assert not np.allclose(credit.advantages, base)
    np.testing.assert_array_equal(muted, base)


# ---------------------------------------------------------------------------------------------
# SPA progress head
# ---------------------------------------------------------------------------------------------
def test_spa_run_logs_and_resumes_with_its_head(tmp_path):
    run_dir = train(small_config(tmp_path, total_steps=2, spa={"enabled": True}))
    rows = train_rows(run_dir)
    assert all(np.isfinite(r["spa_loss"]) and "reward/spa" in r for r in rows)
    state = ckpt.load_extra_state(ckpt.latest_checkpoint(run_dir))[CREDIT_STATE]["spa"]
    assert state["fits"] == 2
    assert resumed_from_first_checkpoint(run_dir) == rows


async def test_spa_contributions_sum_to_the_return_and_change_the_advantages(tmp_path):
    cfg = small_config(tmp_path)
    learner, trajectories = await rollouts(load_config(cfg))
    solved = np.array(solve_half(trajectories), dtype=float)
    credit_assigner = assigner(cfg, learner, spa={"enabled": True})
    try:
        base = await advantages(cfg, learner, trajectories)
        muted = await advantages(cfg, learner, trajectories, spa={"enabled": True, "weight": 0})
        credit = await credit_assigner(trajectories, learner.policy)
    finally:
        await learner.policy.aclose()
    spa = credit.table.components["spa"]
    np.testing.assert_allclose(spa.reshape(-1, 2).sum(-1), solved, atol=0.05)
    assert credit.metrics["spa_loss"] < 1e-3
    assert not np.allclose(credit.advantages, base)
    np.testing.assert_array_equal(muted, base)


# ---------------------------------------------------------------------------------------------
# rubric
# ---------------------------------------------------------------------------------------------
RUBRIC = {
    "functions": {
        "brevity": {"function": "tests.train.rubric_functions:brevity"},
        "turns": {"function": "tests.train.rubric_functions:turns_used", "weight": 0.0},
        "broken": {"function": "tests.train.rubric_functions:broken", "weight": 2.0},
    }
}


def test_rubric_run_logs_every_function_and_counts_failures(tmp_path):
    run_dir = train(small_config(tmp_path, rubric=RUBRIC))
    (row,) = read_metrics(run_dir, "train")
    assert 0 < row["rubric/brevity"] <= 1 and row["rubric/turns"] == 2.0  # two turns, no success
    assert row["rubric/broken"] == 0.0 and row["rubric_failures"] == 4  # 4 episodes
    assert row["reward/rubric"] == pytest.approx(row["rubric/brevity"])  # weight 0 and a failure
    saved = [json.loads(line) for line in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    for t in saved:
        first, last = t["metadata"]["credit"]["components"]["rubric"]
        assert first == 0.0 and last > 0  # the episode's score sits on its last turn


@pytest.mark.parametrize(("section", "scores"), [("judge", JUDGE), ("rubric", RUBRIC)])
async def test_judge_and_rubric_scores_change_the_advantages_by_their_weight(
    tmp_path, section, scores
):
    cfg = small_config(tmp_path)
    learner, trajectories = await rollouts(load_config(cfg))
    try:
        base = await advantages(cfg, learner, trajectories)
        scored = await advantages(cfg, learner, trajectories, **{section: scores})
        muted = await advantages(cfg, learner, trajectories, **{section: {**scores, "weight": 0}})
    finally:
        await learner.policy.aclose()
    assert not np.allclose(scored, base)
    np.testing.assert_array_equal(muted, base)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.train.rubric_functions:nope", "has no function 'nope'"),
        ("no_such_module:f", "no module named 'no_such_module'"),
        ("brevity", "expected MODULE:FUNCTION"),
    ],
)
def test_a_rubric_function_that_cannot_be_imported_is_named(tmp_path, path, message):
    bad = {"functions": {"b": {"function": path}}}
    with pytest.raises(ConfigError, match=f"algorithm.rubric.functions.b.function.*{message}"):
        load_config(small_config(tmp_path, rubric=bad))
