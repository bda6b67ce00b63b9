"""Scripted policies for WebShopEnv: an expert that shops like a careful person who knows the
goal, and a random baseline.

The expert is stateless: from the goal and the chat so far it reads the last page (its kind from
WebShop's page texts) and its own earlier valid actions, then

- on the search page: searches the next query it has not tried: the instruction from its
  article on (``i need a tv stand that is solid wood with size: x-large, and price lower than
  540.00 dollars.`` → ``tv stand that is solid wood with size: x-large``), the whole
  instruction (the price clause dropped), the goal product's name, its name with the goal's
  attributes, and the goal's query;
- on a results page: opens the goal product if listed, else goes to the next page, else back
  to search (for the next query);
- on the goal product's page: chooses each goal option value the page offers that it has not
  chosen since opening the page, then buys; on another product's page or a sub-page: goes back.

It writes queries, product IDs and option values exactly as the page shows them, each after a
space as every text of the page follows its separator ``" [SEP] "`` (``search[ tv stand …]``,
``click[ B0U3VG30Y4]``; the env strips the space and reads values case-insensitively), so that
the argument is a span of the page to a byte-level tokenizer too: the same tokens, not the
space-less first word a ``[`` would leave.

:func:`closed_book` is an imperfect demonstrator for SFT data (``sft.demonstrators``,
``closed-book``): the expert, but it buys the goal product without choosing its options.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from agentenv.envs.webshop.pages import (
    BACK_TO_SEARCH,
    BUY_NOW,
    NEXT_PAGE,
    PREV_PAGE,
    SEP,
    parse_action,
)
from agentenv.envs.webshop.products import Goal

INVALID_PREFIX = "Invalid action:"
_PRICE_CLAUSE = re.compile(r",?\s*and price lower than [\d.]+ dollars", re.IGNORECASE)
_LEAD = re.compile(r"^(?:\S+\s+){0,4}?an?\s+")
"""The instruction's lead up to its article, within its first five words (``i am looking for
a``, ``find me an``); an instruction without one keeps its words."""
_JUNK = ("click[", "search[]", "click[[[x]]]", "buy now", "<action>click[</action>", "")

Messages = Sequence[dict[str, str]]


def page_text(observation: str) -> str:
    """The page part of an observation: an invalid action's explanation and an appended
    ``Available actions:`` line are dropped."""
    if observation.startswith(INVALID_PREFIX) and "\n\n" in observation:
        observation = observation.split("\n\n", 1)[1]
    return observation.split("\nAvailable actions:", 1)[0]


def page_kind(page: str) -> str:
    """``start``, ``results``, ``item``, ``sub`` or ``done`` of a page text."""
    parts = page.split(SEP)
    if parts[0] == "WebShop":
        return "start"
    if parts[0].startswith("Thank you for shopping"):
        return "done"
    if any(p.startswith("Page ") and "(Total results:" in p for p in parts):
        return "results"
    return "item" if parts[-1] == "Buy Now" else "sub"


def _last_observation(messages: Messages) -> str:
    return next((m["content"] for m in reversed(messages) if m.get("role") != "assistant"), "")


def valid_actions(messages: Messages) -> list[tuple[str, str]]:
    """The earlier actions whose answer was not an invalid-action explanation, as ``(verb[arg],
    the page text it was taken on)`` pairs."""
    out = []
    page = ""
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            page = page_text(message.get("content", ""))
            continue
        answer = next(
            (m["content"] for m in messages[i + 1 :] if m.get("role") != "assistant"), None
        )
        action = parse_action(message.get("content", ""))
        if action is not None and answer is not None and not answer.startswith(INVALID_PREFIX):
            out.append((str(action), page))
    return out


def queries(goal: Goal) -> list[str]:
    """The searches the expert tries, in order."""
    instruction = _PRICE_CLAUSE.sub("", goal.instruction)
    tail = _LEAD.sub("", instruction, count=1).rstrip(".")
    extended = " ".join([goal.name, *goal.attributes, *goal.options.values()])
    candidates = [tail, instruction, goal.name, extended, goal.query]
    return [q for q in dict.fromkeys(" ".join(c.lower().split()) for c in candidates) if q]


def _searches(actions: list[tuple[str, str]]) -> int:
    return sum(a.startswith("search[") for a, _ in actions)


def _open_asin(actions: list[tuple[str, str]]) -> tuple[str, int]:
    """The last product (ASIN, upper case) opened from a results page, and the index of that
    click (-1: none)."""
    for i in range(len(actions) - 1, -1, -1):
        action, page = actions[i]
        arg = action[len("click[") : -1] if action.startswith("click[") else ""
        if arg and page_kind(page) == "results" and arg.upper() in page.split(SEP):
            return arg.upper(), i
    return "", -1


def _copied(verb: str, text: str) -> str:
    """``verb[ text]``: the argument after a space, tokenized as the page shows it."""
    return f"{verb}[ {text}]"


def _shop_item(goal: Goal, page: str, actions: list[tuple[str, str]]) -> str:
    asin, at = _open_asin(actions)
    if asin != goal.asin.upper():
        return f"click[{PREV_PAGE}]"
    shown = {" ".join(p.lower().split()): p.strip() for p in page.split(SEP)}
    chosen = {a.lower() for a, _ in actions[at + 1 :]}
    for value in goal.options.values():
        text = shown.get(" ".join(value.lower().split()))
        if text is not None and f"click[{text.lower()}]" not in chosen:
            return _copied("click", text)
    return f"click[{BUY_NOW}]"


def _shop_results(goal: Goal, page: str) -> str:
    parts = page.split(SEP)
    if goal.asin in parts:
        return _copied("click", goal.asin.upper())
    if "Next >" in parts:
        return f"click[{NEXT_PAGE}]"
    return f"click[{BACK_TO_SEARCH}]"


def solve(task: Goal, messages: Messages) -> str:
    """The expert's next action for goal ``task`` given the chat so far."""
    page = page_text(_last_observation(messages))
    kind = page_kind(page)
    actions = valid_actions(messages)
    if kind == "start":
        options = queries(task)
        return _copied("search", options[min(_searches(actions), len(options) - 1)])
    if kind == "results":
        return _shop_results(task, page)
    if kind == "item":
        return _shop_item(task, page, actions)
    if kind == "sub":
        return f"click[{PREV_PAGE}]"
    return f"click[{BUY_NOW}]"  # the episode is over: any action


def closed_book(task: Goal, messages: Messages) -> str:
    """A hasty shopper (the ``closed-book`` demonstrator): searches and opens the goal product as
    :func:`solve` does, then buys it at once without choosing any option. It fails every goal
    that asks for an option value; mixed into SFT data it stands for the habit RL must break,
    buying before choosing the options."""
    page = page_text(_last_observation(messages))
    if page_kind(page) == "item" and _open_asin(valid_actions(messages))[0] == task.asin.upper():
        return f"click[{BUY_NOW}]"
    return solve(task, messages)


def random_action(task: Goal, messages: Messages, rng: np.random.Generator) -> str:
    """A random baseline: on the search page a search of 1-4 random instruction words; on other
    pages a click on a random text of the page (buttons, product IDs and option values are among
    them, titles and prices are not clickable); 10% malformed actions."""
    if rng.random() < 0.1:
        return _JUNK[int(rng.integers(len(_JUNK)))]
    page = page_text(_last_observation(messages))
    if page_kind(page) == "start":
        words = re.findall(r"\w+", task.instruction) or ["shop"]
        picked = rng.choice(words, size=int(rng.integers(1, 5)))
        return f"search[{' '.join(picked)}]"
    parts = [p for p in page.split(SEP) if p] or [BACK_TO_SEARCH]
    return f"click[{parts[int(rng.integers(len(parts)))].lower()}]"
