"""WebShopEnv: buy the product an instruction describes in a WebShop-like store, with WebShop's
text protocol and reward (``webshop-v0``).

The agent reads WebShop's pages as text (``observation_mode="text"``: visible texts joined with
``" [SEP] "``, :mod:`.pages`) and acts with ``search[keywords]`` (on the search page) or
``click[value]`` (a button, product ASIN or option value the page shows). An action may be bare,
inside verl-agent's ``<action>…</action>`` (the first such block is read), or on the message's
last line after some reasoning. An action that cannot be applied is not silent as in WebShop:
the observation explains it and lists what is available, ``action_valid`` is False, the page is
unchanged. ``buy now`` ends the episode; one without a purchase after ``max_turns`` actions is
truncated (reward 0).

Each episode holds one session of the ``webshop`` service (:mod:`.server`): the catalogue and
its BM25 index are shared by every session of the service process.

Reward (WebShop, Yao et al. 2022, arXiv 2207.01206): ``score`` = ``r_type · (n_att + n_opt +
r_price) / (|A| + |O| + 1)`` on purchase (:func:`agentenv.rewards.webshop.webshop_reward`);
``success`` = 1 iff ``score == 1.0``. ``reward="score"`` (default) pays the score,
``reward="success"`` pays success only (verl-agent's ``won``). Components in
``info["reward_components"]`` (weight 0 apart from the paid one):

- every turn: ``format`` (1 if the action was valid); ``target_in_results`` (1 on the first
  turn a results page lists the goal's product), ``target_opened`` (1 on the first turn the
  goal product's page opens), ``options_progress`` (the turn's increase of the best ``k / n``
  reached so far, ``k`` of the ``n`` goal option values chosen on the goal product's page):
  each adds up over an episode to its episode-level value, for process rewards, G-RA gating and
  SPA;
- on purchase: ``score``, ``success``, ``r_type``, ``r_att``, ``r_option``, ``r_price``,
  ``title_score`` (WebShop's verbose info; the full breakdown is ``info["reward_breakdown"]``).

``info["available_actions"]`` is WebShop's ``get_available_actions()`` (``has_search_bar``,
``clickables``), ``info["admissible_actions"]`` the same as action strings, ``info["progress"]``
the raw progress state. The anchor (GiGPO) is the canonical page state ``(kind, query, page,
asin, options)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any, ClassVar, Literal

from agentenv.env import (
    ACTION_VALID,
    ANCHOR,
    GROUND_TRUTH,
    REWARD_COMPONENTS,
    SPLIT_OPTION,
    SUCCESS,
    SYSTEM_PROMPT,
    TASK_ID,
    TASK_OPTION,
    TextEnv,
)
from agentenv.envs.webshop.catalog import CatalogConfig, generate_catalog
from agentenv.envs.webshop.pages import MAX_ACTION_CHARS, PRODUCT_WINDOW, Page
from agentenv.envs.webshop.products import Goal
from agentenv.envs.webshop.search import catalog_digest
from agentenv.envs.webshop.server import goal_body
from agentenv.envs.webshop.tasks import GoalConfig, goal_by_id, goal_ids, split_sizes
from agentenv.launch import connect
from agentenv.retry import DEFAULT_TIMEOUT, RetryPolicy
from agentenv.service import ServiceClient
from agentenv.sessions import ServiceSession, SessionHolder, check_served

SERVICE_FACTORY = "agentenv.envs.webshop.server:create_app"
AVAILABLE_ACTIONS = "available_actions"
"""(reset, step) WebShop's ``get_available_actions()``: ``{"has_search_bar", "clickables"}``."""
ADMISSIBLE_ACTIONS = "admissible_actions"
"""(reset, step) The page's actions as strings (``search[<keywords>]``, ``click[...]``)."""
REWARD_BREAKDOWN = "reward_breakdown"
"""(purchase step) WebShop's verbose reward info (:class:`~agentenv.rewards.webshop.PurchaseReward`)."""
PROGRESS = "progress"
"""(reset, step) The session's progress state (target listed / opened, options matched)."""
MAX_TURNS = 15
"""verl-agent's / GiGPO's ``env.max_steps`` for WebShop."""
REWARDS = ("score", "success")
SYSTEM_PROMPT_TEXT = """\
You are shopping in WebShop, an online store, for the product the instruction describes. Each \
observation is the current web page as text, its parts separated by [SEP].
Write exactly one action per message:
- search[keywords] searches the store; only the search page has a search bar.
- click[value] clicks something the page shows: a product ID on a results page, next > or \
< prev to page through results or go back, back to search, an option value on a product page \
to choose it, description, features or reviews to read more, or buy now to buy the open \
product with the options chosen (this ends the episode).
Values are case-insensitive. You may put the action between <action> and </action>. \
You have at most {max_turns} actions."""
_CHECKED: set[tuple[tuple[str, ...], str]] = set()
"""(service URLs, catalogue config) pairs whose catalogue check passed in this process."""
_PURCHASE_COMPONENTS = ("r_type", "r_att", "r_option", "r_price", "title_score")


def _clean(text: str) -> str:
    """``text`` with lone surrogates replaced: what a JSON request body can carry."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _step_body(action: str) -> dict[str, Any]:
    """The step request of ``action``: cut past :data:`MAX_ACTION_CHARS` (the browser refuses
    it anyway), with its full length."""
    return {"action": _clean(action[: MAX_ACTION_CHARS + 1]), "length": len(action)}


def _anchor(page: dict[str, Any]) -> tuple:
    options = tuple(tuple(kv) for kv in page["options"])
    return Page(page["kind"], page["query"], page["page"], page["asin"], options).anchor()


def _known(cls: type, values: dict[str, Any] | None, what: str) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = set(values or {}) - names
    if unknown:
        raise ValueError(f"unknown {what} knob(s) {sorted(unknown)}; known: {sorted(names)}")
    return dict(values or {})


class WebShopEnv(SessionHolder, TextEnv):
    """Buy the instructed product in a WebShop-like store (WebShop's text protocol and reward).

    Args:
        service: where the shop service runs: ``None`` (in-process, shared by the envs of one
            catalogue), ``"local"`` (a uvicorn subprocess on 127.0.0.1 per catalogue) or base
            URL(s) of ``agentenv serve webshop`` (its catalogue must be this env's: checked on
            first use).
        split: the split the seed draws from when reset gets no ``options={"split": ...}``
            (:func:`agentenv.envs.webshop.tasks.split_sizes`).
        num_products, catalog_seed: the catalogue's size and seed; ``catalog``: any other
            :class:`~agentenv.envs.webshop.catalog.CatalogConfig` knobs.
        goals: :class:`~agentenv.envs.webshop.tasks.GoalConfig` knobs.
        max_turns: actions per episode (15, verl-agent's); the episode is truncated after the
            last one without a purchase.
        reward: ``"score"`` (WebShop's score) or ``"success"`` (1 iff the score is 1.0).
        show_actions: append ``Available actions: ...`` to every observation (verl-agent puts
            the admissible actions in its prompt); off, observations are WebShop's page texts.
        results_per_page: products a results page lists (WebShop's 10); fewer make shorter
            pages for a small model.
        timeout: seconds per attempt of a service call.
    """

    description = "Buy the instructed product in a WebShop-like store (WebShop text protocol)"
    stop_strings = ("</action>",)
    reward_components: ClassVar[tuple[str, ...]] = (
        "format", "target_in_results", "target_opened", "options_progress", "score", "success",
        *_PURCHASE_COMPONENTS,
    )  # fmt: skip
    transient_attributes: ClassVar[tuple[str, ...]] = ("_client", "_session")

    def __init__(
        self,
        *,
        service: str | list[str] | None = None,
        split: str = "train",
        num_products: int = CatalogConfig.num_products,
        catalog_seed: int = CatalogConfig.seed,
        catalog: dict[str, Any] | None = None,
        goals: dict[str, Any] | None = None,
        max_turns: int = MAX_TURNS,
        reward: Literal["score", "success"] = "score",
        show_actions: bool = False,
        results_per_page: int = PRODUCT_WINDOW,
        timeout: float = DEFAULT_TIMEOUT,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(render_mode=render_mode)
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        if results_per_page < 1:
            raise ValueError(f"results_per_page must be >= 1, got {results_per_page}")
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        knobs = _known(CatalogConfig, catalog, "catalog")
        if "categories" in knobs and knobs["categories"] is not None:
            knobs["categories"] = tuple(knobs["categories"])
        knobs.update(num_products=num_products, seed=catalog_seed)
        self.catalog_config = CatalogConfig(**knobs)
        self.goal_config = GoalConfig(**_known(GoalConfig, goals, "goal"))
        self.check_split(split)
        self.split = split
        self.service = service
        self.max_turns = max_turns
        self.reward_name = reward
        self.show_actions = show_actions
        self.results_per_page = results_per_page
        self.retry = RetryPolicy(timeout=timeout)
        self.system_prompt = SYSTEM_PROMPT_TEXT.format(max_turns=max_turns)
        self._actions: list[str] = []
        self._best = {"target_in_results": 0.0, "target_opened": 0.0, "options_progress": 0.0}

    # -- tasks --------------------------------------------------------------------------------
    def splits(self) -> dict[str, int | None]:
        return split_sizes(self.goal_config)

    def task_ids(self, split: str) -> list[str]:
        if self.check_split(split) is None:
            return super().task_ids(split)
        return list(goal_ids(self.catalog_config, self.goal_config, split))

    def get_task(self, task: str | Goal) -> Goal:
        """The goal named ``task`` (a :class:`Goal` is returned as is)."""
        if isinstance(task, Goal):
            return task
        return goal_by_id(self.catalog_config, self.goal_config, str(task))

    def _draw(self, split: str) -> Goal:
        index = self.draw_index(split)
        if self.check_split(split) is not None:
            return self.get_task(goal_ids(self.catalog_config, self.goal_config, split)[index])
        return self.get_task(f"{split}-{index}")

    # -- service ------------------------------------------------------------------------------
    @property
    def service_config(self) -> dict[str, Any]:
        """The service's ``create_app`` config: the catalogue's knobs."""
        config = asdict(self.catalog_config)
        if config.get("categories") is not None:
            config["categories"] = list(config["categories"])
        return config

    async def _connect(self) -> ServiceClient:
        if self._client is None:
            config = self.service_config
            client = await connect(SERVICE_FACTORY, self.service, config=config, retry=self.retry)
            key = (tuple(client.base_urls), json.dumps(config, sort_keys=True))
            if self.service not in (None, "in-process", "local") and key not in _CHECKED:
                await check_served(
                    client,
                    "/catalog",
                    "digest",
                    catalog_digest(generate_catalog(self.catalog_config)),
                    data="catalogue",
                    config=self.catalog_config,
                )
                _CHECKED.add(key)
            self._client = client
        return self._client

    async def _open_session(self) -> tuple[ServiceSession, dict[str, Any]]:
        """A fresh session on the episode's goal, with the episode's valid actions so far
        replayed (an env copied mid-episode gets its page back so)."""
        session = await ServiceSession.open(await self._connect())
        body = await session.reset(
            {"goal": goal_body(self.task), "results_per_page": self.results_per_page}
        )
        for action in self._actions:
            body = await session.step(_step_body(action))
        self._session = session
        return session, body

    # -- episode ------------------------------------------------------------------------------
    def _observation(self, body: dict[str, Any]) -> str:
        text = body["observation"]
        if self.show_actions and body[ADMISSIBLE_ACTIONS]:
            text += "\nAvailable actions: " + ", ".join(body[ADMISSIBLE_ACTIONS])
        return text

    @staticmethod
    def _page_info(body: dict[str, Any]) -> dict[str, Any]:
        return {
            ANCHOR: _anchor(body["page"]),
            AVAILABLE_ACTIONS: body[AVAILABLE_ACTIONS],
            ADMISSIBLE_ACTIONS: body[ADMISSIBLE_ACTIONS],
            PROGRESS: body[PROGRESS],
        }

    async def _areset(self, *, seed: int | None, options: dict[str, Any]) -> tuple[str, dict]:
        task = options.get(TASK_OPTION)
        self.task = (
            self.get_task(task)
            if task is not None
            else self._draw(options.get(SPLIT_OPTION) or self.split)
        )
        await self._release()
        self._actions = []
        self._best = dict.fromkeys(self._best, 0.0)
        _, body = await self._open_session()
        info = {
            TASK_ID: self.task.id,
            GROUND_TRUTH: goal_body(self.task),
            SYSTEM_PROMPT: self.system_prompt,
            **self._page_info(body),
        }
        return self._observation(body), info

    def _progress_components(self, progress: dict[str, Any]) -> dict[str, float]:
        """This turn's increase of each monotone episode-level progress value."""
        total = progress["options_total"]
        opened = bool(progress["target_opened"])
        now = {
            "target_in_results": float(bool(progress["target_in_results"])),
            "target_opened": float(opened),
            "options_progress": progress["options_matched"] / total if opened and total else 0.0,
        }
        out = {}
        for key, value in now.items():
            out[key] = max(0.0, value - self._best[key])
            self._best[key] = max(self._best[key], value)
        return out

    async def _astep(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self._session is None:
            session, _ = await self._open_session()
        else:
            session = self._session
        body = await session.step(_step_body(action))
        valid = bool(body["valid"])
        if valid:
            self._actions.append(action)
        components = {"format": float(valid), **self._progress_components(body[PROGRESS])}
        terminated = bool(body["done"])
        truncated = not terminated and self.turn + 1 >= self.max_turns
        info = self._page_info(body)
        success = False
        if terminated:
            breakdown = body["breakdown"]
            success = breakdown["total"] == 1.0
            components.update(score=float(breakdown["total"]), success=float(success))
            components.update({k: float(breakdown[k] or 0.0) for k in _PURCHASE_COMPONENTS})
            info[REWARD_BREAKDOWN] = breakdown
        if terminated or truncated:
            await self._release()
        reward = components.get("score" if self.reward_name == "score" else "success", 0.0)
        info.update({REWARD_COMPONENTS: components, ACTION_VALID: valid, SUCCESS: success})
        return self._observation(body), reward, terminated, truncated, info
