"""WebShop's purchase reward (Yao et al., "WebShop: Towards Scalable Real-World Web Interaction
with Grounded Language Agents", arXiv 2207.01206, §3.2; ``web_agent_site/engine/goal.py`` at
princeton-nlp/WebShop HEAD). Pure functions of the purchased product, the goal, the price paid
and the options chosen.

With ``A`` the goal's attributes, ``O`` its option values and ``y`` the purchase::

    total = r_type · (n_att + n_opt + r_price) / (|A| + |O| + 1)          ∈ [0, 1]

- ``n_att`` (:func:`attribute_matches`): goal attributes ``a`` with
  ``token_set_ratio(p, a) > 85`` for some product attribute ``p``, or else ``a`` a substring of
  the lower-cased title, joined bullet points or description;
- ``n_opt`` (:func:`option_matches`): goal option values ``o`` with
  ``token_set_ratio(c, o) > 85`` for some chosen value ``c``, both passed through
  :func:`normalize_color` first (no substring fallback: HEAD's matcher has none);
- ``r_price`` (:func:`price_reward`): ``price <= price_upper``;
- ``r_type`` (:func:`type_reward`): 1.0; 0.5 unless ``query_match`` (same scraping query) or
  ``category_match`` (≥ 2 shared levels of ``product_category`` split on ``›``) or
  ``title_score > 0.2``; 0.1 if ``title_score < 0.1``; 0.0 if ``title_score == 0``, where
  ``title_score = |N(purchased title) ∩ N(goal name)| / |N(goal name)|`` (0.2 if the goal name has
  no nouns).

``token_set_ratio`` is thefuzz's (≥ 0.20, a wrapper over rapidfuzz): both strings go through
thefuzz's ``full_process`` (non-ASCII dropped, lower-cased, non-alphanumerics to spaces) and the
score is rounded to an integer before the ``> 85`` test, as thefuzz returns it.

**Deviation: the noun step.** WebShop takes ``N`` = the tokens spaCy tags NOUN or PROPN. spaCy
and its models are not installable offline, so :func:`title_nouns` uses a deterministic rule:
the lower-cased alphabetic tokens of two or more letters that are not English function words,
colour words (:data:`COLOR_SET`), common descriptive adjectives or units (:data:`NOT_NOUNS`).
It differs from spaCy in that verbs and adjectives outside the list count as nouns (so
``|N(goal name)|`` is usually larger and ``title_score`` of a partial match lower), tokens with
digits never count (spaCy tags some of them NOUN), and a colour word never counts (spaCy tags
``"black"`` a NOUN in some titles). A purchase of the goal's own product always has
``title_score = 1`` under both rules.

**Edge cases kept from the original.** An option value the goal lists but the product lacks
cannot be matched; a goal whose ``price_upper`` is not positive has no price term (``r_price``
None, counted 0, as ``None`` cannot be added in the original).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

try:  # the ``webshop`` extra
    from rapidfuzz import fuzz, process, utils
except ImportError:  # pragma: no cover - exercised only without the extra
    fuzz = process = utils = None

__all__ = [
    "COLOR_SET",
    "MATCH_THRESHOLD",
    "PurchaseReward",
    "TypeReward",
    "attribute_matches",
    "normalize_color",
    "option_matches",
    "price_reward",
    "title_nouns",
    "title_score",
    "token_set_ratio",
    "type_reward",
    "webshop_reward",
]

MATCH_THRESHOLD = 85
"""A fuzzy match needs ``token_set_ratio > MATCH_THRESHOLD`` (goal.py's constant)."""

COLOR_SET: tuple[str, ...] = (
    "alabaster", "apricot", "aqua", "ash", "asphalt", "azure", "banana", "beige", "black",
    "blue", "blush", "bordeaux", "bronze", "brown", "burgundy", "camel", "camo", "caramel",
    "champagne", "charcoal", "cheetah", "chestnut", "chocolate", "christmas", "coffee",
    "cognac", "copper", "coral", "cranberry", "cream", "crystal", "dark", "denim", "eggplant",
    "elephant", "espresso", "fuchsia", "gold", "granite", "grape", "graphite", "grass", "gray",
    "green", "grey", "heather", "indigo", "ivory", "ivy", "khaki", "lavender", "lemon",
    "leopard", "light", "lilac", "lime", "magenta", "maroon", "mauve", "merlot", "midnight",
    "mint", "mocha", "multicolor", "mushroom", "mustard", "natural", "navy", "nude", "olive",
    "orange", "peach", "pewter", "pink", "plum", "purple", "rainbow", "red", "rose", "royal",
    "rust", "sand", "sapphire", "seashell", "silver", "skull", "slate", "steel", "stone",
    "stonewash", "sunflower", "tan", "taupe", "teal", "tiger", "turquoise", "violet", "walnut",
    "wheat", "white", "wine", "yellow",
)  # fmt: skip
"""WebShop's colour list (``web_agent_site/engine/normalize.py``), in its order: the first of
them found as a substring wins."""

_FUNCTION_WORDS = (
    "a", "an", "the", "and", "or", "nor", "but", "so", "yet", "for", "of", "in", "on", "at",
    "to", "from", "by", "with", "without", "within", "into", "onto", "over", "under", "up",
    "down", "off", "out", "about", "above", "below", "after", "before", "between", "through",
    "during", "per", "via", "as", "than", "then", "that", "this", "these", "those", "there",
    "here", "it", "its", "it's", "they", "them", "their", "we", "our", "you", "your", "he",
    "she", "his", "her", "i", "me", "my", "is", "are", "was", "were", "be", "been", "being",
    "am", "do", "does", "did", "has", "have", "had", "will", "would", "can", "could", "shall",
    "should", "may", "might", "must", "not", "no", "all", "any", "each", "every", "both",
    "either", "neither", "some", "such", "only", "own", "same", "other", "more", "most", "less",
    "least", "very", "too", "just", "also", "plus", "vs", "amp"
)  # fmt: skip
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS)
"""Closed-class English words (determiners, prepositions, conjunctions, pronouns, auxiliaries)."""

_NOT_NOUNS = (
    "new", "premium", "natural", "organic", "original", "classic", "professional", "portable",
    "large", "small", "medium", "big", "mini", "extra", "super", "ultra", "long", "short",
    "tall", "high", "low", "heavy", "soft", "hard", "thin", "thick", "wide", "narrow", "slim",
    "fast", "quick", "easy", "best", "great", "good", "perfect", "fresh", "pure", "free",
    "waterproof", "durable", "lightweight", "adjustable", "compatible", "multi", "multipurpose",
    "reusable", "rechargeable", "wireless", "electric", "automatic", "universal", "deluxe",
    "luxury", "vintage", "modern", "casual", "comfortable", "cute", "cool", "warm", "hot",
    "cold", "dry", "wet", "clean", "safe", "strong", "full", "double", "single", "non", "anti",
    "ideal", "unique", "elegant", "stylish", "fashion", "fashionable", "oz", "fl", "ml", "lb",
    "lbs", "kg", "mg", "cm", "mm", "ft", "inch", "inches", "pcs", "pc", "ct", "count", "xl",
    "xxl", "xs"
)  # fmt: skip
NOT_NOUNS = frozenset(_NOT_NOUNS)
"""Descriptive adjectives and units frequent in product titles: never nouns under the rule."""

_WORD = re.compile(r"[a-z]+")
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def _require_rapidfuzz() -> None:
    if fuzz is None:
        raise ImportError(
            "the WebShop reward needs rapidfuzz: pip install 'rl-agentenv[webshop]' "
            "(or pip install rapidfuzz)"
        )


def full_process(text: str) -> str:
    """thefuzz's ``utils.full_process(text, force_ascii=True)``: non-ASCII characters dropped,
    lower-cased, every run of non-alphanumerics turned into one space, stripped."""
    ascii_text = text.encode("ascii", "ignore").decode("ascii").lower()
    return _NOT_ALNUM.sub(" ", ascii_text).strip()


def token_set_ratio(a: str, b: str) -> int:
    """thefuzz's ``fuzz.token_set_ratio(a, b)``: rapidfuzz's token-set ratio of the processed
    strings, rounded to an integer in [0, 100]."""
    _require_rapidfuzz()
    return int(round(fuzz.token_set_ratio(full_process(a), full_process(b))))


def _ratio_matrix(rows: Sequence[str], columns: Sequence[str]) -> np.ndarray:
    """``token_set_ratio(r, c)`` for every pair, vectorised (rapidfuzz ``cdist``), rounded."""
    _require_rapidfuzz()
    if not rows or not columns:
        return np.zeros((len(rows), len(columns)))
    scores = process.cdist(
        [full_process(r) for r in rows],
        [full_process(c) for c in columns],
        scorer=fuzz.token_set_ratio,
    )
    return np.rint(scores.astype(np.float64))


def normalize_color(value: str) -> str:
    """The first colour of :data:`COLOR_SET` that is a substring of ``value``, else ``value``
    (``"black forest"`` → ``"black"``, ``"violet lavender"`` → ``"lavender"``: list order)."""
    return next((color for color in COLOR_SET if color in value), value)


def title_nouns(name: str) -> list[str]:
    """The noun rule replacing spaCy's NOUN/PROPN tags: lower-cased alphabetic tokens of at
    least two letters that are not :data:`FUNCTION_WORDS`, :data:`COLOR_SET` or
    :data:`NOT_NOUNS` (see the module docs for how it differs)."""
    return [
        w
        for w in _WORD.findall(name.lower())
        if len(w) > 1 and w not in FUNCTION_WORDS and w not in NOT_NOUNS and w not in COLOR_SET
    ]


def title_score(purchased_name: str, goal_name: str) -> float:
    """``|N(purchased) ∩ N(goal)| / |N(goal)|`` over distinct nouns; 0.2 when the goal name has
    none (goal.py)."""
    desired = title_nouns(goal_name)
    if not desired:
        return 0.2
    return len(set(title_nouns(purchased_name)) & set(desired)) / len(desired)


class PurchasedLike(Protocol):
    """What the reward reads of a product (:class:`agentenv.envs.webshop.products.Product`)."""

    title: str
    description: str
    bullet_points: Sequence[str]
    attributes: Sequence[str]
    query: str
    product_category: str


class GoalLike(Protocol):
    """What the reward reads of a goal (:class:`agentenv.envs.webshop.products.Goal`)."""

    attributes: Sequence[str]
    options: Mapping[str, str]
    price_upper: float
    name: str
    query: str
    product_category: str


@dataclass(frozen=True)
class TypeReward:
    """``r_type`` and what decided it (goal.py's ``get_type_reward``)."""

    r_type: float
    query_match: bool
    category_match: bool
    title_score: float


def _category_levels(product_category: str) -> set[str]:
    return {level.strip() for level in product_category.split("›")}


def type_reward(purchased: PurchasedLike, goal: GoalLike) -> TypeReward:
    """``r_type``: 1.0; 0.5 without a query, category (≥ 2 shared levels) or title match
    (``title_score > 0.2``); 0.1 if ``title_score < 0.1``; 0.0 if ``title_score == 0``."""
    query_match = purchased.query == goal.query
    shared = _category_levels(purchased.product_category) & _category_levels(goal.product_category)
    category_match = len(shared) >= 2
    score = title_score(purchased.title, goal.name)
    r_type = 1.0
    if not (query_match or category_match or score > 0.2):
        r_type = 0.5
    if score < 0.1:
        r_type = 0.1
    if score == 0.0:
        r_type = 0.0
    return TypeReward(r_type, query_match, category_match, score)


def attribute_matches(purchased: PurchasedLike, goal_attributes: Sequence[str]) -> int:
    """Goal attributes matched by the product: a fuzzy match (``> 85``) against one of its
    attributes, else a substring of its lower-cased title, bullet points or description."""
    if not goal_attributes:
        return 0
    fuzzy = (_ratio_matrix(goal_attributes, purchased.attributes) > MATCH_THRESHOLD).any(axis=1)
    texts = (
        purchased.title.lower(),
        " ".join(purchased.bullet_points).lower(),
        purchased.description.lower(),
    )
    found = [
        bool(f) or any(a in text for text in texts)
        for a, f in zip(goal_attributes, fuzzy, strict=True)
    ]
    return int(sum(found))


def option_matches(chosen: Sequence[str], goal_options: Sequence[str]) -> int:
    """Goal option values matched by a chosen value: ``token_set_ratio > 85`` after
    :func:`normalize_color` of both."""
    if not goal_options or not chosen:
        return 0
    wanted = [normalize_color(o) for o in goal_options]
    picked = [normalize_color(c) for c in chosen]
    return int((_ratio_matrix(wanted, picked) > MATCH_THRESHOLD).any(axis=1).sum())


def price_reward(price: float, price_upper: float) -> bool | None:
    """``price <= price_upper``; None when the goal sets no bound (``price_upper <= 0``)."""
    return bool(price <= price_upper) if price_upper > 0 else None


@dataclass(frozen=True)
class PurchaseReward:
    """The total and goal.py's verbose breakdown (``r_option``/``w_option`` None without goal
    options, ``r_price``/``w_price`` None without a price bound)."""

    total: float
    r_type: float
    r_att: float
    w_att: float
    r_option: float | None
    w_option: float | None
    r_price: bool | None
    w_price: float | None
    query_match: bool
    category_match: bool
    title_score: float
    num_attr_matches: int
    num_option_matches: int

    @property
    def success(self) -> bool:
        """WebShop's success: the score is exactly 1.0."""
        return self.total == 1.0

    def as_dict(self) -> dict[str, float | bool | int | None]:
        return asdict(self)


def webshop_reward(
    purchased: PurchasedLike,
    goal: GoalLike,
    price: float,
    options: Mapping[str, str],
) -> PurchaseReward:
    """WebShop's reward of buying ``purchased`` at ``price`` with ``options`` (option name →
    chosen value) for ``goal``: ``r_type · (n_att + n_opt + r_price) / (|A| + |O| + 1)``."""
    kind = type_reward(purchased, goal)
    goal_options = list(goal.options.values())
    n_att = attribute_matches(purchased, goal.attributes)
    n_opt = option_matches(list(options.values()), goal_options)
    r_price = price_reward(price, goal.price_upper)
    denominator = len(goal.attributes) + len(goal_options) + 1
    total = (n_att + n_opt + int(bool(r_price))) / denominator * kind.r_type
    return PurchaseReward(
        total=total,
        r_type=kind.r_type,
        r_att=n_att / len(goal.attributes) if goal.attributes else 0.0,
        w_att=len(goal.attributes) / denominator,
        r_option=n_opt / len(goal_options) if goal_options else None,
        w_option=len(goal_options) / denominator if goal_options else None,
        r_price=r_price,
        w_price=1 / denominator if r_price is not None else None,
        query_match=kind.query_match,
        category_match=kind.category_match,
        title_score=kind.title_score,
        num_attr_matches=n_att,
        num_option_matches=n_opt,
    )
