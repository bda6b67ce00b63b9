"""Scripted policies for SearchEnv: an expert that follows the question's relation chain, and a
random baseline.

The expert is stateless: from the task's start entity and relation chain and the documents already
shown in ``messages`` it resolves as many hops as it can, then searches for the first unresolved
fact (``"<entity> <the fact's sentence words>"``, rephrased on retries) or answers.
"""

from __future__ import annotations

import re

import numpy as np

from agentenv.envs.search.env import LAST_TURN_NOTE, SEARCH_REFUSED, THINK_INSTRUCTION
from agentenv.envs.search.tasks import RELATIONS, Relation, Task
from agentenv.rewards.format import search_r1_action

_DOC_LINE = re.compile(r"^Doc \d+\(Title: (.*?)\) (.*)$", re.MULTILINE)
_INFORMATION = re.compile(r"<information>(.*?)</information>", re.DOTALL)


def documents(messages: list[dict[str, str]]) -> list[tuple[str, str]]:
    """``(title, text)`` of every document shown so far, in order."""
    out = []
    for message in messages:
        if message.get("role") == "assistant":
            continue
        for block in _INFORMATION.findall(message.get("content", "")):
            out.extend(_DOC_LINE.findall(block))
    return out


def lookup(docs: list[tuple[str, str]], entity: str, relation: Relation) -> str | None:
    """The value of ``relation`` for ``entity`` stated in one of the entity's own documents."""
    for title, text in docs:
        if title == entity or title.startswith(f"{entity} ("):
            value = relation.extract(text)
            if value is not None:
                return value
    return None


def _queries(entity: str, relation: Relation) -> list[str]:
    return [
        f"{entity} {relation.keywords}",
        f"{entity} {relation.noun}",
        f"{entity} {relation.keywords} {relation.noun}",
        entity,
    ]


def _must_answer(messages: list[dict[str, str]]) -> bool:
    last = next((m["content"] for m in reversed(messages) if m.get("role") != "assistant"), "")
    return LAST_TURN_NOTE in last or SEARCH_REFUSED in last


def _searches(messages: list[dict[str, str]]) -> list[str]:
    queries = []
    for message in messages:
        if message.get("role") == "assistant":
            kind, content = search_r1_action(message.get("content", ""))
            if kind == "search":
                queries.append(content)
    return queries


def _thinks(messages: list[dict[str, str]]) -> bool:
    """Whether to reason in ``<think>``: unless a system prompt exists and does not ask for it."""
    system = next((m["content"] for m in messages if m.get("role") == "system"), None)
    return system is None or THINK_INSTRUCTION in system


def search_action(query: str) -> str:
    """``<search> query </search>``. The spaces inside the tags give the query's first word the
    same byte-level BPE token it has mid-sentence in the question (`` Name``, not ``Name``), so
    copying a name from the question is an identity map on tokens, which a small model learns
    quickly; the env strips them."""
    return f"<search> {query} </search>"


def answer_action(answer: str) -> str:
    """``<answer> answer </answer>``, spaced like :func:`search_action` so the answer's tokens
    match the document text it is copied from."""
    return f"<answer> {answer} </answer>"


def solve(task: Task, messages: list[dict[str, str]]) -> str:
    """The expert's next action for ``task`` given the chat so far."""
    if not task.chain:
        return _solve_public(task, messages)
    docs = documents(messages)
    entity = task.start
    for key in task.chain:
        relation = RELATIONS[key]
        value = lookup(docs, entity, relation)
        if value is None:
            if _must_answer(messages):
                return answer_action(entity)
            candidates = _queries(entity, relation)
            asked = set(_searches(messages))
            query = next((q for q in candidates if q not in asked), candidates[0])
            search = search_action(query)
            if not _thinks(messages):
                return search
            return f"<think>I need the {relation.noun} of {entity}.</think>\n{search}"
        entity = value
    return answer_action(entity)


def _solve_public(task: Task, messages: list[dict[str, str]]) -> str:
    """Without a relation chain: search the question once, then answer the top title."""
    docs = documents(messages)
    if not docs and not _must_answer(messages):
        return search_action(task.question)
    return answer_action(docs[0][0] if docs else "")


def closed_book(task: Task, messages: list[dict[str, str]]) -> str:
    """A demonstrator that answers at once from memory, without searching. It has no memory of
    a generated world, so it names the question's entity: always wrong, as an untrained model's
    guess is. Mixed into SFT data (``sft.demonstrators``) it stands for the habit RL must break:
    answering without using the tool."""
    return answer_action(task.start)


def random_action(task: Task, messages: list[dict[str, str]], rng: np.random.Generator) -> str:
    """A random baseline: a search of random question words (50%), an answer of random question
    words (30%), or a malformed message (20%)."""
    words = re.findall(r"\w+", task.question) or ["nothing"]
    picked = " ".join(rng.choice(words, size=int(rng.integers(1, 4))))
    roll = rng.random()
    if roll < 0.5:
        return f"<search>{picked}</search>"
    if roll < 0.8:
        return f"<answer>{picked}</answer>"
    malformed = (f"<search>{picked}", f"search: {picked}", f"<answer>{picked}</search>", "")
    return malformed[int(rng.integers(len(malformed)))]
