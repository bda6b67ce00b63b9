"""Information gain on a tiny real model, checked against a hand-rolled teacher-forced pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agentenv.models import tiny
from agentenv.policies.hf import HFPolicy
from agentenv.rewards import info_gain as ig
from agentenv.trajectory import Trajectory, Turn, TurnTable

CORPUS = [
    "Question: who wrote the novel? <think>search</think><search>author of the novel</search>"
    "<information>Doc 1 (Title: Novel) written by Ada Byron.</information>"
    "<answer>Ada Byron</answer> Now there's enough information to answer"
] * 10


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    folder = tiny(
        tmp_path_factory.mktemp("tiny") / "m",
        texts=CORPUS,
        vocab_size=320,
        hidden_size=32,
        intermediate_size=64,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
    )
    return HFPolicy.from_pretrained(folder, device="cpu", dtype="float32")


class CountingPolicy:
    """Forwards to a real policy and records the batch size of every ``score`` call."""

    def __init__(self, inner):
        self.inner, self.tokenizer, self.name, self.calls = inner, inner.tokenizer, "count", []

    async def generate(self, prompts, sampling, *, contexts=None):
        return await self.inner.generate(prompts, sampling, contexts=contexts)

    async def score(self, prompts, continuations):
        self.calls.append(len(prompts))
        return await self.inner.score(prompts, continuations)

    async def aclose(self):
        pass


def _trajectory(tok, i, searches, status="done"):
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": f"Question {i}: who wrote the novel?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    prompt = tok.encode(prompt, add_special_tokens=False)
    t = Trajectory(traj_id=f"t{i}", group_id="g", env_id="search", task_id="q", status=status)
    t.token_ids, t.loss_mask, t.turn_ids, t.logprobs = (
        list(prompt),
        [0] * len(prompt),
        [-1] * len(prompt),
        [0.0] * len(prompt),
    )
    t.prompt_length = len(prompt)
    actions = [f"<search>{q}</search>" for q in searches] + (
        ["<answer>Ada Byron</answer>"] if status == "done" else []
    )
    for turn, action in enumerate(actions):
        t.append_tokens(tok.encode(action, add_special_tokens=False), trainable=True, turn=turn)
        obs = f"<|im_end|>\n<|im_start|>user\n<information>Doc {turn}: {action}</information><|im_end|>\n<|im_start|>assistant\n"
        t.append_tokens(tok.encode(obs, add_special_tokens=False), trainable=False, turn=turn)
        t.turns.append(Turn(index=turn, action=action, observation=obs, reward=0.0))
    return t


def _hand_rolled(model, tok, context, answer, config):
    """exp(mean log p(answer tokens)) by a plain forward pass over context + pseudo-answer."""
    ids, span = ig.pseudo_answer(tok, answer, config)
    extra = (
        tok.encode(config.context_suffix, add_special_tokens=False) if config.context_suffix else []
    )
    full = torch.tensor([list(context) + extra + ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(full).logits[0].double(), -1)
    start = len(context) + len(extra)
    positions = torch.arange(start + span.start, start + span.stop)
    return float(logp[positions - 1, full[0, positions]].mean())


def test_reference_math():
    """docs/credit-assignment.md, 'Information gain — worked example'."""
    assert np.exp(np.mean(np.log([0.2, 0.8]))) == pytest.approx(0.4)
    lp = np.log([0.1, 0.4, 0.5])
    np.testing.assert_allclose(ig.information_gains(lp), [0.3, 0.1], atol=1e-9)
    np.testing.assert_allclose(
        ig.information_gains(lp, "log_prob_diff"), [1.386294, 0.223144], atol=1e-5
    )


def test_pseudo_answer_span(policy):
    tok = policy.tokenizer
    ids, span = ig.pseudo_answer(tok, "Ada Byron", ig.InfoGainConfig())
    assert "Ada Byron" in tok.decode(ids[span])
    assert "enough" not in tok.decode(ids[span])


@pytest.mark.parametrize(
    ("mode", "baseline", "suffix"),
    [("prob_diff", "prompt", ""), ("log_prob_diff", "first_turn", "<think>")],
)
async def test_matches_hand_rolled(policy, mode, baseline, suffix):
    tok = policy.tokenizer
    config = ig.InfoGainConfig(mode=mode, baseline=baseline, context_suffix=suffix)
    trajs = [
        _trajectory(tok, 0, ["author"]),
        _trajectory(tok, 1, ["novel author", "Ada"]),
        _trajectory(tok, 2, ["who", "what", "x"], status="truncated"),
    ]
    answers = ["Ada Byron", ["Ada Byron", "Byron"], "Ada Byron<|answer_split|>Lovelace"]
    counting = CountingPolicy(policy)
    result = await ig.information_gain(counting, trajs, answers, config)

    first = 1 if baseline == "first_turn" else 0
    ig_turns = [1, 2, 3]  # the answer turn of a done episode earns none
    assert len(counting.calls) == max(ig_turns) + 1 - first  # one score call per context position
    for traj, gains, m in zip(trajs, result.gains, ig_turns, strict=True):
        contexts = ig.turn_contexts(traj)
        lp = [
            _hand_rolled(policy.model, tok, contexts[j], "Ada Byron", config) for j in range(m + 1)
        ]
        expected = np.full(traj.num_turns, np.nan)
        if m > first:
            values = np.exp(lp) if mode == "prob_diff" else np.array(lp)
            expected[first:m] = np.diff(values[first:])
        np.testing.assert_allclose(gains, expected, atol=1e-5, equal_nan=True)

    for traj, answer in zip(trajs, answers, strict=True):
        traj.metadata["ground_truth"] = answer
    flat = await ig.info_gain_rewards(policy, trajs, config=config)
    np.testing.assert_allclose(flat, result.flat(), atol=1e-9, equal_nan=True)
    trajs[0].metadata["ground_truth"] = {"answer": 1}
    with pytest.raises(ValueError, match="ground_truth"):
        await ig.info_gain_rewards(policy, trajs, config=config)

    ig.attach_information_gain(trajs, result)
    table = TurnTable.from_trajectories(trajs)
    np.testing.assert_allclose(table.components["info_gain"], result.flat(), equal_nan=True)


async def test_answer_logprob_is_one_call(policy):
    counting = CountingPolicy(policy)
    values = await ig.answer_logprob(counting, [[1, 2, 3], [4, 5]], ["a", "b"])
    assert counting.calls == [2] and values.shape == (2,) and np.all(values < 0)
    with pytest.raises(ValueError, match="answers"):
        await ig.answer_logprob(counting, [[1]], [])
