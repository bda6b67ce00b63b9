"""Warm-up text for a search agent built from scratch: other worlds' documents, read.

A model trained from random weights cannot read its context: it has never had to copy a name
from a question into a query or a value from a document into an answer. Before SFT, the trainer
(``pretrain`` in the training config) runs language modelling on text that needs exactly this:

- every document of a few *other* generated worlds, in the observation format
  (``Doc 1(Title: t) text``), and
- reading examples: the document that answers a one-hop question, the question, and the answer
  in the protocol's tags, ``Doc 1(Title: t) text\\nWhat is …?\\n<answer> value </answer>``.

The worlds have seeds :data:`PRETRAINING_WORLD_SEED` + k, so no name or fact of a world an env
plays (seed 0 unless configured) is in this text: held-out questions stay held out.
"""

from __future__ import annotations

from typing import Any

from agentenv.envs.search.tasks import WorldConfig, build_world, doc_text, doc_title

PRETRAINING_WORLD_SEED = 1_000_000


def pretraining_texts(
    n: int, *, seed: int = 0, num_entities: int = WorldConfig.num_entities, **_: Any
) -> list[str]:
    """All documents of the worlds needed (8,000 reading examples each), plus ``n`` reading
    examples spread over them.

    Deterministic in ``seed``. Extra keyword arguments (the env's other kwargs) are ignored.
    """
    per_world = 8_000
    texts: list[str] = []
    for w in range(max(1, -(-n // per_world))):
        world = build_world(WorldConfig(PRETRAINING_WORLD_SEED + seed * 1_000 + w, num_entities))
        by_id = {doc.id: doc for doc in world.docs}
        texts += [_observed(doc.contents) for doc in world.docs]
        for k in range(min(per_world, n - w * per_world)):
            task = world.task("train", 1, k)
            doc = by_id[task.gold_doc_ids[0]]
            texts.append(
                f"{_observed(doc.contents)}\n{task.question}\n"
                f"<answer> {task.golden_answers[0]} </answer>"
            )
    return texts


def _observed(contents: str) -> str:
    """A document as the env shows it (the first hit of an ``<information>`` block)."""
    return f"Doc 1(Title: {doc_title(contents)}) {' '.join(doc_text(contents).split())}"
