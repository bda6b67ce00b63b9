"""WebShop's pages as a state machine: parse an action, move between pages, render the page as
WebShop's ``observation_mode="text"`` does, and list what is clickable. Pure: no I/O (the shop
it browses is a :class:`Shop`, an in-memory catalogue and search engine).

Pages (Yao et al. 2022, arXiv 2207.01206; ``web_agent_site/templates`` and
``envs/web_agent_text_env.py``), visible texts joined with ``" [SEP] "``:

- **start** — ``WebShop [SEP] Instruction: [SEP] <instr> [SEP] Search``; the search bar takes
  ``search[keywords]``.
- **results** — ``Instruction: [SEP] <instr> [SEP] Back to Search [SEP] Page N (Total results:
  M) [SEP] < Prev [SEP] Next > [SEP] <ASIN> [SEP] <title> [SEP] <price> …``: the top
  :data:`~agentenv.envs.webshop.search.SEARCH_RETURN_N` hits, :data:`PRODUCT_WINDOW` a page by
  default (``Browser.results_per_page``);
  ``< Prev`` only after page 1, ``Next >`` only while more hits follow.
- **item** — ``… Back to Search [SEP] < Prev [SEP] <option name> [SEP] <value> … [SEP] <title>
  [SEP] Price: <price> [SEP] Rating: N.A. [SEP] Description [SEP] Features [SEP] Reviews [SEP]
  Buy Now``.
- **description** / **features** / **reviews** — ``… Back to Search [SEP] < Prev [SEP] <text>``
  (the description, the bullet points, nothing: WebShop's reviews are never loaded).
- **done** — ``Thank you for shopping with us! [SEP] Purchased [SEP] asin [SEP] <ASIN> [SEP]
  options [SEP] <JSON> [SEP] Your score (min 0.0, max 1.0) [SEP] <score>``. WebShop's done page
  also holds a hidden block with the target (ASIN, attributes, options, price bound); it is left
  out here.

Navigation: ``back to search`` → start (the goal kept); ``next >`` / ``< prev`` page through
results; an ASIN opens its item page with no option chosen; ``< prev`` on an item page → the
results page it came from (options dropped), on a sub-page → the item page (options kept); an
option value records ``options[name] = value`` (one per name, the last click wins; a value shared
by two option names sets the later name, as WebShop's ``text_to_clickable`` does); ``buy now``
ends the episode, chosen options or not.

Where WebShop is silent, this module explains: an action that does not parse, a click on
something not clickable (``click[search]`` included), a search on a page without the search
bar (WebShop's text env searches from any page) and any action after ``buy now`` return an
:class:`Outcome` with ``valid=False`` and the reason, the state unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from agentenv.envs.webshop.products import Product

SEP = " [SEP] "
PRODUCT_WINDOW = 10
"""Products per results page (WebShop's ``PRODUCT_WINDOW``)."""
BACK_TO_SEARCH = "back to search"
NEXT_PAGE = "next >"
PREV_PAGE = "< prev"
BUY_NOW = "buy now"
SUB_PAGES = ("description", "features", "reviews")
MAX_SHOWN_CHARS = 80
"""An invalid action is quoted in its explanation up to this many characters."""
MAX_KEYWORD_CHARS = 1000
"""Search keywords are cut to this many characters."""
MAX_ACTION_CHARS = 16_384
"""A longer message is refused unread (an action is short; this bounds the parser's work)."""

PageKind = Literal["start", "results", "item", "description", "features", "reviews", "done"]
_ACTION = re.compile(r"\s*(search|click)\s*\[(.*)\]\s*", re.DOTALL | re.IGNORECASE)
_TAGGED = re.compile(r"<action>(.*?)</action>", re.DOTALL | re.IGNORECASE)
_PREFIX = re.compile(r"^\s*action\s*:\s*", re.IGNORECASE)


class Shop(Protocol):
    """The catalogue and search engine a browser reads (:class:`~.search.ProductIndex`)."""

    def product(self, asin: str) -> Product | None: ...

    def search(self, keywords: str) -> Sequence[str]: ...


@dataclass(frozen=True)
class Page:
    """The canonical state of one shopping session, history-free and hashable.

    ``query``: the keywords of the last search (results and item pages remember it for
    ``< prev``); ``page``: the results page number (1-based; 0 on the start page); ``asin``: the
    open product; ``options``: the chosen ``(name, value)`` pairs, sorted by name.
    """

    kind: PageKind = "start"
    query: str = ""
    page: int = 0
    asin: str = ""
    options: tuple[tuple[str, str], ...] = ()

    def anchor(self) -> tuple[str, str, int, str, tuple[tuple[str, str], ...]]:
        """``(kind, query, page, asin, options)``: equal for identical page states (GiGPO)."""
        return (self.kind, self.query, self.page, self.asin, self.options)

    @property
    def chosen(self) -> dict[str, str]:
        return dict(self.options)


@dataclass(frozen=True)
class Action:
    """A parsed action: ``verb`` is ``"search"`` or ``"click"``, ``arg`` its lower-cased,
    whitespace-collapsed argument."""

    verb: str
    arg: str

    def __str__(self) -> str:
        return f"{self.verb}[{self.arg}]"


@dataclass(frozen=True)
class Outcome:
    """What one action did: the new page, whether it was valid (and why not), and the
    purchase when it was ``buy now``."""

    page: Page
    valid: bool
    error: str = ""
    bought: bool = False


def action_candidates(message: str) -> list[str]:
    """The texts of a message that may hold its action, in order: the content of its first
    ``<action>…</action>`` (verl-agent's format) if it has one; else the whole message, then its
    last non-empty line (an action after some reasoning). A leading ``Action:`` (ReAct) is
    dropped from each."""
    tagged = _TAGGED.search(message)
    if tagged:
        texts = [tagged.group(1)]
    else:
        lines = [line for line in message.splitlines() if line.strip()]
        texts = [message, *lines[-1:]] if len(lines) > 1 else [message]
    return [_PREFIX.sub("", text).strip() for text in texts]


def parse_action(message: str) -> Action | None:
    """``search[keywords]`` or ``click[value]`` (verb case-insensitive; the argument is
    everything between the first ``[`` and the last ``]``, lower-cased, whitespace collapsed)
    in the first of :func:`action_candidates` that is one; None if none is."""
    for text in action_candidates(message):
        match = _ACTION.fullmatch(text)
        if match is not None:
            return Action(match.group(1).lower(), " ".join(match.group(2).lower().split()))
    return None


def shown(text: str) -> str:
    """``text`` quoted for an explanation, cut to :data:`MAX_SHOWN_CHARS`."""
    text = " ".join(text.split())
    if len(text) > MAX_SHOWN_CHARS:
        text = text[:MAX_SHOWN_CHARS] + f"… ({len(text)} chars)"
    return repr(text)


def price_tag(pricing: Sequence[float]) -> str:
    """WebShop's price text: ``$19.99``, ``$5.0 to $9.0`` (Python float reprs), ``$100.0`` when
    there is no price."""
    if not pricing:
        return "$100.0"
    if len(pricing) == 1:
        return f"${float(pricing[0])}"
    return f"${float(pricing[0])} to ${float(pricing[1])}"


@dataclass
class Browser:
    """One session's browser over a :class:`Shop`: the :class:`Page` it shows and the hits of
    its last search. :meth:`act` applies an action; :meth:`render` and :meth:`available_actions`
    describe the page."""

    shop: Shop
    instruction: str
    page: Page = field(default_factory=Page)
    hits: tuple[str, ...] = ()
    score: float | None = None
    results_per_page: int = PRODUCT_WINDOW
    """Products a results page lists (WebShop's :data:`PRODUCT_WINDOW`)."""

    # -- what the page offers -----------------------------------------------------------------
    def product(self) -> Product | None:
        return self.shop.product(self.page.asin) if self.page.asin else None

    def page_asins(self) -> list[str]:
        """The ASINs listed on the current results page (upper case), else none."""
        if self.page.kind != "results":
            return []
        start = (self.page.page - 1) * self.results_per_page
        return list(self.hits[start : start + self.results_per_page])

    def _option_clicks(self) -> dict[str, str]:
        """Option value → option name on an item page (the later name wins a shared value)."""
        product = self.product()
        if product is None or self.page.kind != "item":
            return {}
        return {value: name for name, values in product.options.items() for value in values}

    def clickables(self, *, as_shown: bool = False) -> list[str]:
        """WebShop's ``get_available_actions()["clickables"]``: buttons, product links and
        option values, product links lower-cased as WebShop lists them, or spelled as the page
        shows them when ``as_shown`` (the start page's search button is left out: clicking it
        is not an action). Clicks match either spelling."""
        kind = self.page.kind
        if kind == "results":
            buttons = [BACK_TO_SEARCH]
            if self.page.page > 1:
                buttons.append(PREV_PAGE)
            if self.page.page * self.results_per_page < len(self.hits):
                buttons.append(NEXT_PAGE)
            asins = self.page_asins()
            return buttons + (asins if as_shown else [a.lower() for a in asins])
        if kind == "item":
            values = list(dict.fromkeys(self._option_clicks()))
            return [BACK_TO_SEARCH, PREV_PAGE, *SUB_PAGES, BUY_NOW, *values]
        if kind in SUB_PAGES:
            return [BACK_TO_SEARCH, PREV_PAGE]
        return []

    def has_search_bar(self) -> bool:
        return self.page.kind == "start"

    def available_actions(self) -> dict[str, Any]:
        """``{"has_search_bar": bool, "clickables": [...]}`` (WebShop's
        ``get_available_actions``)."""
        return {"has_search_bar": self.has_search_bar(), "clickables": self.clickables()}

    def admissible_actions(self) -> list[str]:
        """The page's actions as action strings (verl-agent's admissible list), spelled as the
        page shows them: what an agent reads here it can copy."""
        search = ["search[<keywords>]"] if self.has_search_bar() else []
        return search + [f"click[{c}]" for c in self.clickables(as_shown=True)]

    # -- acting -------------------------------------------------------------------------------
    def act(self, message: str, length: int | None = None) -> Outcome:
        """Apply one action; an invalid one leaves the page as it is and says why. ``length``:
        the message's full length when ``message`` is a cut of it (a client need not send more
        than :data:`MAX_ACTION_CHARS` + 1 characters)."""
        length = max(len(message), length or 0)
        if self.page.kind == "done":
            return self._invalid("the episode is over: the purchase is made; reset to shop again")
        if length > MAX_ACTION_CHARS:
            return self._invalid(
                f"the message is {length} characters long, over the limit of "
                f"{MAX_ACTION_CHARS}; an action is search[keywords] or click[value]"
            )
        action = parse_action(message)
        if action is None:
            return self._invalid(
                f"{shown(message)} is not an action; write search[keywords] or click[value]"
            )
        if action.verb == "search":
            return self._search(action.arg)
        return self._click(action.arg)

    def _invalid(self, reason: str) -> Outcome:
        return Outcome(self.page, False, reason)

    def _move(self, page: Page, *, bought: bool = False) -> Outcome:
        self.page = page
        return Outcome(page, True, bought=bought)

    def _search(self, keywords: str) -> Outcome:
        if not self.has_search_bar():
            return self._invalid(
                "there is no search bar on this page; click[back to search] to search again"
            )
        keywords = " ".join(keywords[:MAX_KEYWORD_CHARS].split())
        if not keywords:
            return self._invalid("search[...] needs keywords, e.g. search[red running shoes]")
        self.hits = tuple(self.shop.search(keywords))
        return self._move(Page("results", keywords, 1))

    def _click(self, value: str) -> Outcome:
        page = self.page
        if value not in self.clickables():
            if page.kind == "start":
                return self._invalid(
                    f"{shown(value)} is not clickable on the search page; write "
                    "search[keywords] to search"
                )
            return self._invalid(f"{shown(value)} is not clickable on this page")
        if value == BACK_TO_SEARCH:
            self.hits = ()
            return self._move(Page())
        if page.kind == "results":
            return self._click_results(value)
        if page.kind == "item":
            return self._click_item(value)
        return self._move(replace(page, kind="item"))  # < prev on a sub-page

    def _click_results(self, value: str) -> Outcome:
        page = self.page
        if value == NEXT_PAGE:
            return self._move(replace(page, page=page.page + 1))
        if value == PREV_PAGE:
            return self._move(replace(page, page=page.page - 1))
        return self._move(replace(page, kind="item", asin=value.upper(), options=()))

    def _click_item(self, value: str) -> Outcome:
        page = self.page
        if value == PREV_PAGE:
            return self._move(replace(page, kind="results", asin="", options=()))
        if value in SUB_PAGES:
            return self._move(replace(page, kind=value))
        if value == BUY_NOW:
            return self._move(replace(page, kind="done"), bought=True)
        chosen = page.chosen
        chosen[self._option_clicks()[value]] = value
        return self._move(replace(page, options=tuple(sorted(chosen.items()))))

    # -- rendering ----------------------------------------------------------------------------
    def render(self) -> str:
        """The page as WebShop's text mode shows it."""
        kind = self.page.kind
        if kind == "start":
            return SEP.join(["WebShop", "Instruction:", self.instruction, "Search"])
        if kind == "done":
            return self._render_done()
        head = ["Instruction:", self.instruction, "Back to Search"]
        if kind == "results":
            return SEP.join(head + self._render_results())
        product = self.product()
        assert product is not None  # item and sub-pages always hold a catalogue product
        if kind == "item":
            return SEP.join([*head, "< Prev", *self._render_item(product)])
        body = {
            "description": [product.description],
            "features": list(product.bullet_points),
            "reviews": [],
        }[kind]
        return SEP.join([*head, "< Prev", *body])

    def _render_results(self) -> list[str]:
        page = self.page
        parts = [f"Page {page.page} (Total results: {len(self.hits)})"]
        if page.page > 1:
            parts.append("< Prev")
        if page.page * self.results_per_page < len(self.hits):
            parts.append("Next >")
        for asin in self.page_asins():
            product = self.shop.product(asin)
            if product is not None:
                parts += [asin, product.title, price_tag(product.pricing)]
        return parts

    @staticmethod
    def _render_item(product: Product) -> list[str]:
        parts: list[str] = []
        for name, values in product.options.items():
            parts += [name, *values]
        return parts + [
            product.title,
            f"Price: {price_tag(product.pricing)}",
            "Rating: N.A.",
            "Description",
            "Features",
            "Reviews",
            "Buy Now",
        ]

    def _render_done(self) -> str:
        score = "" if self.score is None else str(self.score)
        return SEP.join(
            [
                "Thank you for shopping with us!",
                "Purchased",
                "asin",
                self.page.asin,
                "options",
                json.dumps(self.page.chosen),
                "Your score (min 0.0, max 1.0)",
                score,
            ]
        )

    def explain(self, outcome: Outcome) -> str:
        """The observation of an invalid action: the reason, what the page offers, then the
        page itself."""
        offers = ", ".join(self.admissible_actions()) or "none (the episode is over)"
        return f"Invalid action: {outcome.error}. Available actions: {offers}.\n\n{self.render()}"
