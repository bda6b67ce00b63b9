"""The tool-call rewards of ``agentenv.rewards.toolcall``: ToolRL correctness against values
worked out by hand from the paper's formula, the per-turn credit, facts and state digests."""

from __future__ import annotations

import itertools

import pytest

from agentenv.rewards import toolcall as rt
from agentenv.toolcalls import ToolCall


def c(tool: str, /, **arguments) -> dict:
    return {"name": tool, "arguments": arguments}


GOLD = [c("get_order", order_id="O1"), c("cancel_order", order_id="O1", reason="duplicate")]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([], [], 1.0),
        (["x"], [], 0.0),
        (["a", "b"], ["b", "a"], 1.0),  # same multiset
        (["a", "b"], ["a", "b", "c"], 2 / 3),
        (["a", "a", "b"], ["a", "c"], 1 / 4),  # overlap 1 over 3 + 2 - 1
    ],
)
def test_multiset_match(a, b, expected) -> None:
    assert rt.multiset_match(a, b) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("gold", "predicted", "normalized", "reward"),
    [
        # exact list equality: +3
        (GOLD, GOLD, 1.0, 3.0),
        # M(names) = 2/3; get_order: keys 1 + values 1 = 2; cancel_order: keys 1 + reason 1 = 2;
        # score = 14/3, S_max = 1 + 2 + 3 = 6 -> 7/9, 6 * 7/9 - 3 = 5/3
        (
            GOLD,
            [
                c("get_order", order_id="O1"),
                c("cancel_order", order_id="O2", reason="duplicate"),
                c("get_store_hours", city="Lyon"),
            ],
            7 / 9,
            5 / 3,
        ),
        # keys M([name], [name, city]) = 1/2 plus 1 exact value: score 1 + 1.5, S_max 3 -> 5/6, 2
        ([c("find_customer", name="A")], [c("find_customer", name="A", city="Lyon")], 5 / 6, 2.0),
        # no name in common: 0 -> -3
        ([c("get_order", order_id="O1")], [c("get_product", product_id="P1")], 0.0, -3.0),
        # order-free: each gold call takes its best unused same-name call -> full score
        (
            [c("get_order", order_id="O1"), c("get_order", order_id="O2")],
            [c("get_order", order_id="O2"), c("get_order", order_id="O1")],
            1.0,
            3.0,
        ),
        # a match must score above 0: keys M([], [x]) = 0 takes nothing; score 1, S_max 2
        ([c("list_categories")], [c("list_categories", x=1)], 0.5, 0.0),
        # a value of another type is not equal (True is not 1): keys 1, values 0 -> 2/3
        ([c("f", flag=1)], [c("f", flag=True)], 2 / 3, 1.0),
        # no call needed: silence is exact, any call is -3; a needed call not made is -3
        ([], [], 1.0, 3.0),
        ([], [c("get_order", order_id="O1")], 0.0, -3.0),
        (GOLD, [], 0.0, -3.0),
        # unparsable output
        (GOLD, None, 0.0, -3.0),
    ],
)
def test_toolrl_correctness_golden(gold, predicted, normalized, reward) -> None:
    assert rt.toolrl_score(gold, predicted) == pytest.approx(normalized)
    assert rt.toolrl_correctness(gold, predicted) == pytest.approx(reward)


def test_toolrl_reads_tool_calls_and_the_parameters_key() -> None:
    as_calls = [ToolCall("get_order", {"order_id": "O1"})]
    as_toolrl = [{"name": "get_order", "parameters": {"order_id": "O1"}}]
    assert rt.toolrl_score(as_toolrl, as_calls) == 1.0


def test_call_credit_adds_up_to_the_final_score_and_pays_once() -> None:
    turns = [
        [c("get_order", order_id="O1")],
        [c("cancel_order", order_id="O2", reason="duplicate")],
        [c("cancel_order", order_id="O1", reason="duplicate")],
        [c("get_order", order_id="O1")],  # a repeat: negative credit
    ]
    before: list = []
    credits = []
    for turn in turns:
        credits.append(rt.call_credit(GOLD, before, turn))
        before += turn
    assert sum(credits) == pytest.approx(rt.toolrl_score(GOLD, before))
    assert credits[0] > 0 and credits[1] > 0
    assert credits[3] < 0
    for repeats in range(1, 4):
        assert rt.call_credit(GOLD, GOLD, GOLD[:1] * repeats) < 0


def test_format_validity() -> None:
    assert rt.format_validity("", 2, 2) == 1.0
    assert rt.format_validity("", 0, 0) == 1.0  # a final answer
    assert rt.format_validity("bad JSON", 0, 0) == 0.0
    assert rt.format_validity("", 2, 1) == 0.0


@pytest.mark.parametrize(
    ("answer", "facts", "whole", "expected"),
    [
        ("Order O5123 is Delivered.", ["delivered", "O5123"], True, 1.0),
        ("The refund was $1,250.00.", ["1250.00"], True, 1.0),
        ("Order O5007 is pending.", ["7"], True, 0.0),
        ("Order O5007 is pending.", ["7"], False, 1.0),  # τ-bench's plain substring
        ("It is pending.", ["pending", "O5007"], True, 0.5),
        ("anything", [], True, 1.0),
        (None, ["x"], True, 0.0),
        ("mail: maria.lopez3@example.com!", ["maria.lopez3@example.com"], True, 1.0),
    ],
)
def test_facts_in_answer(answer, facts, whole, expected) -> None:
    assert rt.facts_in_answer(answer, facts, whole_words=whole) == expected


def test_canonical_state_hash_ignores_row_order_only() -> None:
    rows = [("C1", "Ann", 100), ("C2", "Bo", None), ("C3", "Cy", 5)]
    digests = {rt.canonical_state_hash({"t": list(p)}) for p in itertools.permutations(rows)}
    assert len(digests) == 1
    (digest,) = digests
    assert rt.canonical_state_hash({"t": [*rows[:2], ("C3", "Cy", 6)]}) != digest
    assert rt.canonical_state_hash({"u": rows}) != digest
    assert rt.state_match(digest, digest) == 1.0
    assert rt.state_match(digest, "x") == rt.state_match("", "") == 0.0
