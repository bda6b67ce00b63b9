"""The shop service: one process holds one catalogue and its BM25 index; each session is one
shopper's browser over them (its page, its search hits, its goal).

Built with :func:`agentenv.sessions.session_app` (``POST /sessions``, ``/sessions/{id}/reset``,
``/sessions/{id}/step``, ``DELETE /sessions/{id}``, the session cap, idle reaping), plus
``GET /catalog`` (the catalogue's digest, size and config, so an env can check a remote service
serves its shop).

- ``POST /sessions/{id}/reset`` with ``{"goal": {Goal fields}}`` (and optionally
  ``"results_per_page"``, default :data:`~agentenv.envs.webshop.pages.PRODUCT_WINDOW`) starts a
  shopping episode on the start page for that goal (the client sends the goal, so generated and
  loaded goals work alike); answers a :func:`page_body`.
- ``POST /sessions/{id}/step`` with ``{"action": str}`` (and ``"length"``, the full length of
  a message the client cut) applies one action
  (:meth:`~agentenv.envs.webshop.pages.Browser.act`); answers a :func:`page_body` with
  ``valid``, ``error``, ``done``, ``reward`` and, after ``buy now``, ``breakdown`` (WebShop's
  verbose reward info, :func:`agentenv.rewards.webshop.webshop_reward`).

A bad action is an answer (``valid: false`` and the reason), never an HTTP error; a malformed
request (a step body without a string ``action``, a goal that is not one) gets 422, a step before
any reset 409, a body over ``max_body_bytes`` 413.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI, HTTPException

from agentenv.envs.webshop.catalog import CatalogConfig, generate_catalog
from agentenv.envs.webshop.pages import PRODUCT_WINDOW, SUB_PAGES, Browser
from agentenv.envs.webshop.products import Goal, Product
from agentenv.envs.webshop.search import ProductIndex
from agentenv.rewards.webshop import option_matches, webshop_reward
from agentenv.sessions import IDLE_TIMEOUT, MAX_SESSIONS, session_app

MAX_BODY_BYTES = 256 * 1024
"""Largest request body: far above any action the browser reads (16 KiB) plus a goal."""


def goal_body(goal: Goal) -> dict[str, Any]:
    """A goal as a JSON object (the reset body's ``goal``)."""
    return asdict(goal)


def goal_from_body(body: Any) -> Goal:
    """The :class:`Goal` of a JSON object; 422 naming the problem if it is not one."""
    if not isinstance(body, Mapping):
        raise HTTPException(422, 'a reset body is {"goal": {Goal fields}}')
    try:
        options = body.get("options", {})
        if not isinstance(options, Mapping):
            raise TypeError("options must be an object")
        return Goal(
            id=str(body["id"]),
            asin=str(body["asin"]),
            instruction=str(body["instruction"]),
            attributes=tuple(str(a) for a in body.get("attributes", ())),
            options={str(k): str(v) for k, v in options.items()},
            price_upper=float(body["price_upper"]),
            name=str(body.get("name", "")),
            query=str(body.get("query", "")),
            category=str(body.get("category", "")),
            product_category=str(body.get("product_category", "")),
            weight=float(body.get("weight", 1.0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise HTTPException(422, f"invalid goal: {type(exc).__name__}: {exc}") from None


@dataclass
class ShopSession:
    """One session: its browser and goal (None until the first reset)."""

    browser: Browser | None = None
    goal: Goal | None = None


def progress(browser: Browser, goal: Goal) -> dict[str, Any]:
    """Where the session stands towards its goal, for process rewards: the target listed on
    the results page shown, the target's page (or a sub-page) open, and how many of the goal's
    option values the chosen options match (the reward's own matcher) on the open product."""
    page = browser.page
    on_product = page.kind == "item" or page.kind in SUB_PAGES
    wanted = list(goal.options.values())
    matched = option_matches(list(page.chosen.values()), wanted) if on_product else 0
    return {
        "target_in_results": goal.asin in browser.page_asins(),
        "target_opened": on_product and page.asin == goal.asin,
        "options_matched": matched,
        "options_total": len(wanted),
    }


def page_body(browser: Browser, goal: Goal) -> dict[str, Any]:
    """The session's page: ``observation`` (text), ``page`` (the canonical state),
    ``available_actions`` (WebShop's ``get_available_actions``), ``admissible_actions`` and
    ``progress``."""
    page = browser.page
    return {
        "observation": browser.render(),
        "page": {**asdict(page), "options": [list(kv) for kv in page.options]},
        "available_actions": browser.available_actions(),
        "admissible_actions": browser.admissible_actions(),
        "progress": progress(browser, goal),
    }


class ShopBackend:
    """Sessions over one shared :class:`ProductIndex` (read-only; sessions share nothing else)."""

    def __init__(self, index: ProductIndex) -> None:
        self.index = index

    async def create(self, options: dict[str, Any]) -> ShopSession:
        return ShopSession()

    async def reset(self, session: ShopSession, body: dict[str, Any]) -> dict[str, Any]:
        goal = goal_from_body(body.get("goal"))
        per_page = body.get("results_per_page", PRODUCT_WINDOW)
        if not isinstance(per_page, int) or isinstance(per_page, bool) or per_page < 1:
            raise HTTPException(422, f"results_per_page must be an integer >= 1, got {per_page!r}")
        session.goal = goal
        session.browser = Browser(self.index, goal.instruction, results_per_page=per_page)
        return {**page_body(session.browser, goal), "done": False}

    async def step(self, session: ShopSession, body: dict[str, Any]) -> dict[str, Any]:
        action, length = body.get("action"), body.get("length")
        if not isinstance(action, str) or not (length is None or isinstance(length, int)):
            raise HTTPException(422, 'a step body is {"action": str, "length": int (optional)}')
        browser, goal = session.browser, session.goal
        if browser is None or goal is None:
            raise HTTPException(409, "reset the session with a goal before stepping")
        outcome = browser.act(action, length)
        reply: dict[str, Any] = {"valid": outcome.valid, "error": outcome.error, "reward": 0.0}
        if outcome.bought:
            reply.update(self._purchase(browser, goal))
        body_out = page_body(browser, goal)
        if not outcome.valid:
            body_out["observation"] = browser.explain(outcome)
        return {**body_out, **reply, "done": browser.page.kind == "done"}

    def _purchase(self, browser: Browser, goal: Goal) -> dict[str, Any]:
        product = browser.product()
        assert product is not None  # buy now is only clickable on a product's page
        result = webshop_reward(product, goal, product.price, browser.page.chosen)
        browser.score = result.total
        return {"reward": result.total, "breakdown": result.as_dict()}

    async def close(self, session: ShopSession) -> None:
        session.browser = session.goal = None


def shop_app(
    index: ProductIndex,
    *,
    config: dict[str, Any] | None = None,
    max_sessions: int = MAX_SESSIONS,
    idle_timeout: float = IDLE_TIMEOUT,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The shop service over ``index`` (``config`` is what ``GET /catalog`` reports)."""
    backend = ShopBackend(index)
    app = session_app(
        "webshop",
        backend,
        max_sessions=max_sessions,
        idle_timeout=idle_timeout,
        max_body_bytes=max_body_bytes,
    )
    app.state.index = index

    @app.get("/catalog")
    async def catalog() -> dict[str, Any]:
        return {"digest": index.digest, "num_products": len(index), "config": config or {}}

    return app


def create_app(
    *,
    cache_dir: str | None = None,
    max_sessions: int = MAX_SESSIONS,
    idle_timeout: float = IDLE_TIMEOUT,
    max_body_bytes: int = MAX_BODY_BYTES,
    **catalog: Any,
) -> FastAPI:
    """The shop service of the generated catalogue of ``catalog`` knobs
    (:class:`~agentenv.envs.webshop.catalog.CatalogConfig`)."""
    if catalog.get("categories") is not None:  # JSON gives a list; the config is hashable
        catalog["categories"] = tuple(catalog["categories"])
    config = CatalogConfig(**catalog)
    products: list[Product] = generate_catalog(config)
    index = ProductIndex(products, cache_dir)
    return shop_app(
        index,
        config=asdict(config),
        max_sessions=max_sessions,
        idle_timeout=idle_timeout,
        max_body_bytes=max_body_bytes,
    )
