"""Warm-up text for a WebShop agent built from scratch: other catalogues' pages, read and acted on.

A model trained from random weights has never had to copy part of an instruction into a search,
a product ID off a results page or an option value of the instruction on a product page. Before
SFT, the trainer (``pretrain`` in the training config) runs language modelling on reading
examples that need exactly this: a page as the env shows it, then the scripted expert's action
on it, ``<page>\\n<action>`` (the start page and ``search[...]``, a results page and
``click[<ASIN>]``, a product page and ``click[<option value>]`` or ``click[buy now]``).

A ``drill_fraction`` share of the texts are copy drills, ``<items> [SEP] <items>``: a run of
2-24 ASINs, title words and option values of the same catalogues, then the same run again.
Their lengths vary, so only an induction circuit (attend to the earlier occurrence of the
current token, copy what followed it; Olsson et al., 2022, "In-context Learning and Induction
Heads", arXiv:2209.11895) predicts the repeat: a copy at a fixed offset cannot.

The pages come from expert-played training goals of *other* catalogues, seeds
:data:`PRETRAINING_CATALOG_SEED` + k (the env's other catalogue, goal and page knobs kept), so
no product, ASIN or goal of the catalogue an env plays (seed 0 unless configured) is in this
text: held-out goals stay held out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agentenv.envs.webshop import expert
from agentenv.envs.webshop.catalog import CatalogConfig, generate_catalog
from agentenv.envs.webshop.env import MAX_TURNS, WebShopEnv
from agentenv.envs.webshop.pages import PRODUCT_WINDOW, SEP

PRETRAINING_CATALOG_SEED = 1_000_000
EPISODES_PER_CATALOG = 2_000
DRILL_ITEMS = (2, 24)
"""Items of a copy drill's run: uniform in this range (inclusive)."""


def pretraining_texts(
    n: int,
    *,
    seed: int = 0,
    num_products: int = CatalogConfig.num_products,
    catalog: dict[str, Any] | None = None,
    goals: dict[str, Any] | None = None,
    max_turns: int = MAX_TURNS,
    show_actions: bool = False,
    results_per_page: int = PRODUCT_WINDOW,
    drill_fraction: float = 0.5,
    **_: Any,
) -> list[str]:
    """``n`` texts: reading examples ``<page>\\n<expert action>`` from expert-played episodes
    of catalogues other than the env's (:data:`EPISODES_PER_CATALOG` training goals each), and
    a ``drill_fraction`` share of copy drills over the same catalogues' items.

    Pages are shown as the env with these knobs shows them. Deterministic in ``seed``. The
    env's other keyword arguments (``catalog_seed``, ``reward``, ``service``, …) are ignored.
    """
    n_drills = round(n * drill_fraction)
    texts: list[str] = []
    drills: list[str] = []
    rng = np.random.default_rng(seed)
    for w in range(n):
        if len(texts) >= n - n_drills and len(drills) >= n_drills:
            break
        catalog_seed = PRETRAINING_CATALOG_SEED + seed * 1_000 + w
        items = _items(num_products, catalog_seed, catalog)
        drills += [_drill(items, rng) for _ in range(n_drills - len(drills))]
        if len(texts) >= n - n_drills:
            continue
        env = WebShopEnv(
            num_products=num_products,
            catalog_seed=catalog_seed,
            catalog=catalog,
            goals=goals,
            max_turns=max_turns,
            show_actions=show_actions,
            results_per_page=results_per_page,
        )
        try:
            for k in range(EPISODES_PER_CATALOG):
                if len(texts) >= n - n_drills:
                    break
                texts += _episode(env, k, max_turns)
        finally:
            env.close()
    return texts[: n - n_drills] + drills


def _items(num_products: int, catalog_seed: int, catalog: dict[str, Any] | None) -> list[str]:
    """The ASINs, title words and option values of a catalogue, as a page shows them."""
    knobs = dict(catalog or {})
    if knobs.get("categories") is not None:
        knobs["categories"] = tuple(knobs["categories"])
    products = generate_catalog(
        CatalogConfig(num_products=num_products, seed=catalog_seed, **knobs)
    )
    words = {w for p in products for w in p.title.split()}
    values = {v for p in products for vs in p.options.values() for v in vs}
    return sorted({p.asin for p in products} | words | values)


def _drill(items: list[str], rng: np.random.Generator) -> str:
    """A run of random ``items`` (:data:`DRILL_ITEMS` of them), then the same run again."""
    run = SEP.join(rng.choice(items, size=int(rng.integers(DRILL_ITEMS[0], DRILL_ITEMS[1] + 1))))
    return f"{run}{SEP}{run}"


def _episode(env: WebShopEnv, seed: int, max_turns: int) -> list[str]:
    """``<page>\\n<action>`` of every turn of the expert's episode on training goal ``seed``."""
    observation, info = env.reset(seed=seed, options={"split": "train"})
    messages = [
        {"role": "system", "content": str(info.get("system_prompt", ""))},
        {"role": "user", "content": observation},
    ]
    texts = []
    for _ in range(max_turns):
        action = expert.solve(env.task, messages)
        texts.append(f"{observation}\n{action}")
        observation, _, terminated, truncated, _ = env.step(action)
        messages += [
            {"role": "assistant", "content": action},
            {"role": "user", "content": observation},
        ]
        if terminated or truncated:
            break
    return texts
