"""WebShop goals: seeded synthetic goals over a catalogue, deterministic splits, and loaders for
the real WebShop files.

**Goals.** A goal is made from a target product: 1-3 of its attributes, one value for each of
up to ``max_options`` of its option names, and a price bound. The instruction follows
WebShop's synthetic style::

    i am looking for a sulfate free and vegan shampoo with scent: lavender, and size: 8 fl oz,
    and price lower than 40.00 dollars.

The product is named by its ``query`` (a generated product's noun). The price bound is
WebShop's rule, seeded: of the first ``price_candidates`` (4) multiples of ``price_step``
($10) strictly above the target's price, two are drawn and the larger kept (with one candidate,
it is the next multiple: the tightest bound). The weight is WebShop's rarity weight: the mean
over the goal's attributes of ``mean count / count`` (count = products with that attribute).

**Splits.** Every (attribute, ``product_category``) pair of the catalogue is *held out* when a
stable hash puts it below ``heldout_fraction`` and its attribute and its category each also
occur in pairs that are not held out. Goals of ``train`` and ``test`` ask only for attributes
of pairs that are not held out; goals of ``compositional`` ask for at least one held-out pair:
an attribute seen in training goals (in other categories) in a category seen in training goals
(with other attributes), never together. ``test`` targets are a seeded ``test_fraction`` of the
products; ``train`` goals never target them. ``train`` is unlimited (or ``train_size`` goals);
``test`` (``test_size``) and ``compositional`` (``compositional_size``) are finite lists of
distinct goals. Goal ids are ``"{split}-{k}"``; the id and the two configs determine the goal.

**Loaders** read the real WebShop files (``items_shuffle*.json``, ``items_ins_v2.json``,
``items_human_ins.json``) into :class:`~.products.Product` and :class:`~.products.Goal`;
a bad entry raises :class:`~agentenv.jsonl.DataFormatError` naming the file, the item (index
and asin) and the field.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from agentenv.jsonl import DataFormatError

from .catalog import CatalogConfig, generate_catalog, join_and, price_point
from .products import Goal, Product

__all__ = [
    "NO_PRICE_BOUND",
    "SPLITS",
    "WEBSHOP_PRICE_LIMIT",
    "DataFormatError",
    "GoalConfig",
    "GoalSpace",
    "InstructionEntry",
    "generate_goals",
    "goal_by_id",
    "goal_ids",
    "goal_space",
    "instruction_text",
    "load_attributes",
    "load_human_goals",
    "load_products",
    "loaded_price_upper",
    "option_text",
    "synthetic_goals",
    "parse_pricing",
    "price_text",
    "price_upper",
    "split_sizes",
]

SPLITS = ("train", "test", "compositional")
NO_PRICE_BOUND = 1_000_000.0
"""WebShop's ``price_upper`` when no bound is drawn (no price text in the instruction)."""
_TEMPLATES = (
    "i am looking for {a} {attrs} {noun}{opts}",
    "i need {a} {noun} that is {attrs}{opts}",
    "i want to buy {a} {attrs} {noun}{opts}",
    "find me {a} {noun} which is {attrs}{opts}",
    "i'm looking for {a} {attrs} {noun}{opts}",
)
_ID = re.compile(r"(train|test|compositional)-(\d+)")


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GoalConfig:
    """Knobs of the goals and splits.

    - ``seed`` (0): goals are a pure function of the catalogue and this config.
    - ``min_attributes``/``max_attributes`` (1/3): goal attributes (capped by what the target
      has).
    - ``max_options`` (3): the goal asks for a value of up to this many of the target's
      option names (0: no options; WebShop's synthetic goals ask for all).
    - ``price_candidates`` (4) and ``price_step`` (10.0): the price bound rule (tightness:
      1 candidate = the next multiple of the step above the price). With more than 4
      candidates a price distractor may fall under the bound.
    - ``test_size`` (500), ``compositional_size`` (200): finite split sizes; ``train_size``
      (None = unlimited).
    - ``test_fraction`` (0.1): share of products that are test targets.
    - ``heldout_fraction`` (0.15): share of (attribute, category) pairs held out for the
      compositional split.
    """

    seed: int = 0
    min_attributes: int = 1
    max_attributes: int = 3
    max_options: int = 3
    price_candidates: int = 4
    price_step: float = 10.0
    test_size: int = 500
    compositional_size: int = 200
    train_size: int | None = None
    test_fraction: float = 0.1
    heldout_fraction: float = 0.15

    def __post_init__(self) -> None:
        if not 1 <= self.min_attributes <= self.max_attributes:
            raise ValueError(
                f"need 1 <= min_attributes <= max_attributes, got "
                f"{self.min_attributes}, {self.max_attributes}"
            )
        if self.max_options < 0:
            raise ValueError(f"max_options must be >= 0, got {self.max_options}")
        if self.price_candidates < 1 or self.price_step <= 0:
            raise ValueError(
                f"need price_candidates >= 1 and price_step > 0, got "
                f"{self.price_candidates}, {self.price_step}"
            )
        for name in ("test_size", "compositional_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.train_size is not None and self.train_size < 0:
            raise ValueError(f"train_size must be >= 0 or None, got {self.train_size}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")


def split_sizes(goal_config: GoalConfig) -> dict[str, int | None]:
    """Split name → number of goals (``None``: unlimited), as ``TextEnv.splits()`` wants."""
    return {
        "train": goal_config.train_size,
        "test": goal_config.test_size,
        "compositional": goal_config.compositional_size,
    }


# ---------------------------------------------------------------------------------------------
# Prices and instruction text
# ---------------------------------------------------------------------------------------------
def price_upper(
    price: float, rng: np.random.Generator, candidates: int = 4, step: float = 10.0
) -> float:
    """WebShop's price bound, seeded: of the first ``candidates`` multiples of ``step``
    strictly above ``price``, draw two and keep the larger (one candidate: it)."""
    first = int(np.floor(price / step)) + 1
    bounds = [(first + i) * step for i in range(candidates)]
    if candidates == 1:
        return float(bounds[0])
    picks = rng.choice(candidates, size=2, replace=False)
    return float(bounds[int(picks.max())])


def price_text(bound: float) -> str:
    """``", and price lower than 40.00 dollars"`` (empty for :data:`NO_PRICE_BOUND`)."""
    return "" if bound >= NO_PRICE_BOUND else f", and price lower than {bound:.2f} dollars"


def option_text(options: Mapping[str, str]) -> str:
    """``" with color: navy blue, and size: large"`` (WebShop's), empty without options."""
    text = ", and ".join(f"{k}: {v}" for k, v in options.items())
    return f" with {text}" if text else ""


def instruction_text(
    noun: str,
    attributes: Sequence[str],
    options: Mapping[str, str],
    bound: float,
    template: int = 0,
) -> str:
    """The instruction of a synthetic goal, in one of the templates."""
    pattern = _TEMPLATES[template % len(_TEMPLATES)]
    attrs = join_and(list(attributes))
    first = pattern.split("{a} ", 1)[1]
    lead = attrs if first.startswith("{attrs}") else noun
    text = pattern.format(
        a="an" if lead[:1] in "aeiou" else "a", attrs=attrs, noun=noun, opts=option_text(options)
    )
    return f"{text}{price_text(bound)}."


# ---------------------------------------------------------------------------------------------
# Goal spaces: pools, held-out pairs, goals by id
# ---------------------------------------------------------------------------------------------
def _stable_unit(*parts: object) -> float:
    """A process-independent hash of ``parts`` in [0, 1)."""
    return zlib.crc32("|".join(map(str, parts)).encode()) / 2**32


def _heldout_pairs(products: Sequence[Product], config: GoalConfig) -> frozenset[tuple[str, str]]:
    """The held-out (attribute, product_category) pairs (see the module docstring)."""
    pairs = sorted({(a, p.product_category) for p in products for a in p.attributes})
    drawn = {pair for pair in pairs if _stable_unit(config.seed, *pair) < config.heldout_fraction}
    kept = [pair for pair in pairs if pair not in drawn]
    kept_attrs = Counter(a for a, _ in kept)
    kept_cats = Counter(c for _, c in kept)
    return frozenset(pair for pair in drawn if kept_attrs[pair[0]] and kept_cats[pair[1]])


class GoalSpace:
    """The goals of one catalogue and :class:`GoalConfig`: pools, held-out pairs and splits.

    ``goal(id)`` is deterministic; finite splits are materialised once (distinct goals).
    Works on any product list (generated or loaded).
    """

    def __init__(self, products: Sequence[Product], config: GoalConfig) -> None:
        self.products = tuple(products)
        self.config = config
        self.heldout = _heldout_pairs(self.products, config)
        counts = Counter(a for p in self.products for a in p.attributes)
        self._mean_count = sum(counts.values()) / max(len(counts), 1)
        self._counts = counts
        self._allowed = [self._attrs(p, held=False) for p in self.products]
        self._held = [self._attrs(p, held=True) for p in self.products]
        test_mask = [
            _stable_unit(config.seed, "test", p.asin) < config.test_fraction for p in self.products
        ]
        rng = np.random.default_rng([config.seed, 0x7E57])
        order = rng.permutation(len(self.products)).tolist()
        self.pools = {
            "train": [i for i in order if not test_mask[i] and self._allowed[i]],
            "test": [i for i in order if test_mask[i] and self._allowed[i]],
            "compositional": [i for i in order if not test_mask[i] and self._held[i]],
        }
        self._finite: dict[str, list[Goal]] = {}

    def _attrs(self, product: Product, held: bool) -> tuple[str, ...]:
        return tuple(
            a for a in product.attributes if ((a, product.product_category) in self.heldout) == held
        )

    # -- ids ---------------------------------------------------------------------------------
    def sizes(self) -> dict[str, int | None]:
        """Split name → size (``None``: unlimited)."""
        return split_sizes(self.config)

    def ids(self, split: str) -> list[str]:
        """The goal ids of finite ``split`` in order; ValueError for an unlimited one."""
        size = self._check_split(split)
        if size is None:
            raise ValueError(f"split {split!r} is unlimited: it has no list of goal ids")
        return [f"{split}-{k}" for k in range(size)]

    def goal(self, goal_id: str) -> Goal:
        """The goal named ``goal_id`` (``"{split}-{k}"``); KeyError if there is none."""
        match = _ID.fullmatch(goal_id)
        if match is None:
            raise KeyError(
                f"unknown goal id {goal_id!r}: goal ids look like 'train-17', 'test-3' or "
                f"'compositional-0'"
            )
        split, k = match[1], int(match[2])
        size = self.sizes()[split]
        if size is not None and k >= size:
            raise KeyError(f"unknown goal id {goal_id!r}: split {split!r} has {size} goals")
        if split == "train":
            return self._make("train", k, k)
        return self._finite_goals(split)[k]

    def goals(self, split: str, n: int | None = None) -> list[Goal]:
        """The first ``n`` goals of ``split`` (all of a finite split when ``n`` is None)."""
        size = self._check_split(split)
        if n is None and size is None:
            raise ValueError(f"split {split!r} is unlimited: say how many goals (n)")
        count = size if n is None else n if size is None else min(n, size)
        return [self.goal(f"{split}-{k}") for k in range(count)]

    def _check_split(self, split: str) -> int | None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; the splits are {SPLITS}")
        return self.sizes()[split]

    # -- making goals ------------------------------------------------------------------------
    def _finite_goals(self, split: str) -> list[Goal]:
        """The distinct goals of finite ``split`` (materialised once)."""
        if split not in self._finite:
            size = self.sizes()[split] or 0
            goals: list[Goal] = []
            seen: set[tuple] = set()
            for attempt in range(max(50 * size, 1000)):
                if len(goals) == size:
                    break
                goal = self._make(split, attempt, len(goals))
                key = (goal.asin, frozenset(goal.attributes), tuple(sorted(goal.options.items())))
                if key not in seen:
                    seen.add(key)
                    goals.append(goal)
            if len(goals) < size:
                raise ValueError(
                    f"only {len(goals)} distinct {split} goals exist in this catalogue of "
                    f"{len(self.products)} products; lower {split}_size or grow the catalogue"
                )
            self._finite[split] = goals
        return self._finite[split]

    def _make(self, split: str, draw: int, k: int) -> Goal:
        """Goal ``k`` of ``split`` from draw number ``draw`` (a pure function of both)."""
        pool = self.pools[split]
        if not pool:
            raise ValueError(
                f"no product can be a {split} target in this catalogue of "
                f"{len(self.products)} products"
            )
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, SPLITS.index(split), draw])
        index = pool[int(rng.integers(len(pool)))]
        product = self.products[index]
        allowed, held = self._allowed[index], self._held[index]
        want = int(rng.integers(cfg.min_attributes, cfg.max_attributes + 1))
        if split == "compositional":
            first = held[int(rng.integers(len(held)))]
            rest = [a for a in product.attributes if a != first]
            attrs = [first, *_sample(rng, rest, want - 1)]
        else:
            attrs = _sample(rng, list(allowed), want)
        names = _sample(rng, list(product.options), cfg.max_options)
        options = {
            name: product.options[name][int(rng.integers(len(product.options[name])))]
            for name in product.options
            if name in names
        }
        bound = price_upper(product.price, rng, cfg.price_candidates, cfg.price_step)
        text = instruction_text(
            product.query, attrs, options, bound, template=int(rng.integers(len(_TEMPLATES)))
        )
        return _goal(product, f"{split}-{k}", text, attrs, options, bound, self._weight(attrs))

    def _weight(self, attributes: Sequence[str]) -> float:
        """WebShop's rarity weight, scaled so that an attribute of mean frequency weighs 1."""
        if not attributes:
            return 1.0
        return sum(self._mean_count / self._counts[a] for a in attributes) / len(attributes)


def _sample(rng: np.random.Generator, items: list[str], k: int) -> list[str]:
    """Up to ``k`` distinct items of ``items`` in their original order."""
    if k <= 0 or not items:
        return []
    picks = rng.choice(len(items), size=min(k, len(items)), replace=False)
    return [items[i] for i in sorted(picks.tolist())]


@functools.lru_cache(maxsize=16)
def goal_space(catalog_config: CatalogConfig, goal_config: GoalConfig) -> GoalSpace:
    """The goal space of a generated catalogue (memoised per pair of configs)."""
    return GoalSpace(generate_catalog(catalog_config), goal_config)


def goal_by_id(catalog_config: CatalogConfig, goal_config: GoalConfig, goal_id: str) -> Goal:
    """Goal ``goal_id`` (``"{split}-{k}"``) of the generated catalogue of ``catalog_config``."""
    return goal_space(catalog_config, goal_config).goal(goal_id)


def goal_ids(catalog_config: CatalogConfig, goal_config: GoalConfig, split: str) -> list[str]:
    """The goal ids of finite ``split``, in order (ValueError for an unlimited split)."""
    return goal_space(catalog_config, goal_config).ids(split)


def generate_goals(
    products: Sequence[Product],
    goal_config: GoalConfig,
    split: str = "train",
    n: int | None = None,
) -> list[Goal]:
    """The first ``n`` goals of ``split`` over any ``products`` (all of a finite split when
    ``n`` is None). Not memoised: prefer :func:`goal_space` for a generated catalogue."""
    return GoalSpace(products, goal_config).goals(split, n)


# ---------------------------------------------------------------------------------------------
# Loaders for the real WebShop files
# ---------------------------------------------------------------------------------------------
WEBSHOP_PRICE_LIMIT = 990.0
"""WebShop's price bounds are multiples of 10 up to 990; a product priced 980 or more gets no
bound (``price_upper = 1000000`` and no price text). The loaders keep this rule."""
_SKIP_ASIN_LEN = 10


@dataclass(frozen=True)
class InstructionEntry:
    """One entry of ``items_ins_v2.json``: the product's attributes, and the synthetic
    instruction with the attributes it asks for (``None``/empty where absent)."""

    attributes: tuple[str, ...] = ()
    instruction: str | None = None
    instruction_attributes: tuple[str, ...] = ()


def _read_json(path: str | Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            f"{path}:{exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno})"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not valid UTF-8 (byte offset {exc.start})") from None


def _field(row: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``row[key]``, which must exist and be of ``kind``; DataFormatError naming it if not."""
    if key not in row:
        raise DataFormatError(f"{where}: missing field {key!r}")
    value = row[key]
    if not isinstance(value, kind):
        raise DataFormatError(
            f"{where}: field {key!r} must be {_kind_name(kind)}, got {type(value).__name__}"
        )
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


def _strings(value: Any, where: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataFormatError(f"{where}: field {key!r} must be a list of strings")
    return tuple(value)


def parse_pricing(text: str | None, where: str = "pricing") -> tuple[float, ...]:
    """WebShop's ``pricing`` string (``"$12.99"`` or ``"$5.00 - $9.50"``) as one price or the
    two ends of a range; ``(100.0,)`` when empty or missing (WebShop's default)."""
    if not text:
        return (100.0,)
    parts = text.split("$")[1:]
    prices = []
    for part in parts[:2]:
        digits = re.sub(r"[^\d.]", "", part)
        try:
            prices.append(float(digits))
        except ValueError:
            raise DataFormatError(f"{where}: field 'pricing' has no price in {text!r}") from None
    if not prices:
        raise DataFormatError(f"{where}: field 'pricing' must look like '$a' or '$a - $b'")
    return tuple(prices)


def _options(value: Any, where: str) -> dict[str, tuple[str, ...]]:
    """``customization_options`` as WebShop loads it: lower-case names and values, "/" as
    " | "; a null option is dropped."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DataFormatError(f"{where}: field 'customization_options' must be an object or null")
    options: dict[str, tuple[str, ...]] = {}
    for name, contents in value.items():
        if contents is None:
            continue
        key = f"customization_options.{name}"
        if not isinstance(contents, list):
            raise DataFormatError(f"{where}: field {key!r} must be a list or null")
        values = []
        for j, content in enumerate(contents):
            if not isinstance(content, dict) or not isinstance(content.get("value"), str):
                raise DataFormatError(f"{where}: field '{key}[{j}].value' must be a string")
            values.append(content["value"].strip().replace("/", " | ").lower())
        options[name.lower()] = tuple(values)
    return options


def _product(row: Any, where: str, entry: InstructionEntry | None) -> Product:
    if not isinstance(row, dict):
        raise DataFormatError(f"{where}: expected a JSON object")
    bullets = row.get("small_description") or []
    bullets = [bullets] if isinstance(bullets, str) else bullets
    description = row.get("full_description") or ""
    if not isinstance(description, str):
        raise DataFormatError(f"{where}: field 'full_description' must be a string or null")
    pricing = row.get("pricing")
    if pricing is not None and not isinstance(pricing, str):
        raise DataFormatError(f"{where}: field 'pricing' must be a string or null")
    prices = parse_pricing(pricing, where)
    return Product(
        asin=row["asin"],
        title=_field(row, "name", str, where),
        description=description,
        bullet_points=_strings(bullets, where, "small_description"),
        category=_field(row, "category", str, where),
        product_category=_field(row, "product_category", str, where),
        query=_field(row, "query", str, where).lower().strip(),
        pricing=prices,
        price=price_point(prices),
        options=_options(row.get("customization_options"), where),
        attributes=entry.attributes if entry else (),
    )


def load_products(
    path: str | Path,
    attributes: Mapping[str, InstructionEntry] | None = None,
    num_products: int | None = None,
) -> list[Product]:
    """The products of a WebShop ``items_shuffle*.json`` file (the first ``num_products``).

    Fields as B.7: ``name`` → title, ``full_description`` → description, ``small_description``
    → bullet points, ``pricing`` → pricing and ``price`` (the midpoint of a range: WebShop
    draws ``random.uniform``), ``customization_options`` → options (lower case, "/" → " | ").
    ``attributes`` (from :func:`load_attributes`) gives each product its ``Attributes``
    (empty where absent: WebShop's ``['DUMMY_ATTR']`` never matches either). Items with asin
    ``"nan"``, longer than 10 characters, or seen before are skipped, as WebShop does.
    """
    data = _read_json(path)
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of products")
    if num_products is not None:
        data = data[:num_products]
    products: list[Product] = []
    seen: set[str] = set()
    for i, row in enumerate(data):
        asin = row.get("asin") if isinstance(row, dict) else None
        where = f"{path}: item {i} (asin {asin!r})"
        if not isinstance(asin, str):
            raise DataFormatError(f"{where}: field 'asin' must be a string")
        if asin == "nan" or len(asin) > _SKIP_ASIN_LEN or asin in seen:
            continue
        seen.add(asin)
        products.append(_product(row, where, (attributes or {}).get(asin)))
    return products


def load_attributes(path: str | Path) -> dict[str, InstructionEntry]:
    """``items_ins_v2.json``: asin → its attributes and synthetic instruction."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected a JSON object keyed by asin")
    entries = {}
    for asin, row in data.items():
        where = f"{path}: asin {asin!r}"
        if not isinstance(row, dict):
            raise DataFormatError(f"{where}: expected a JSON object")
        instruction = row.get("instruction")
        if instruction is not None and not isinstance(instruction, str):
            raise DataFormatError(f"{where}: field 'instruction' must be a string or null")
        entries[asin] = InstructionEntry(
            attributes=_strings(row.get("attributes") or [], where, "attributes"),
            instruction=instruction,
            instruction_attributes=_strings(
                row.get("instruction_attributes") or [], where, "instruction_attributes"
            ),
        )
    return entries


def loaded_price_upper(price: float, rng: np.random.Generator, config: GoalConfig) -> float:
    """WebShop's bound for loaded data: :func:`price_upper` among multiples up to
    :data:`WEBSHOP_PRICE_LIMIT`; :data:`NO_PRICE_BOUND` when fewer than two are left."""
    first = int(np.floor(price / config.price_step)) + 1
    room = int(np.floor(WEBSHOP_PRICE_LIMIT / config.price_step)) - first + 1
    candidates = min(config.price_candidates, room)
    if candidates < min(2, config.price_candidates):
        return NO_PRICE_BOUND
    return price_upper(price, rng, candidates, config.price_step)


def _option_names(product: Product, values: Sequence[str]) -> dict[str, str]:
    """Human goal options (a list of values) keyed by the product option offering each value
    (``"option 2"`` where none does; the reward compares values only)."""
    options: dict[str, str] = {}
    for j, value in enumerate(values):
        name = next(
            (n for n, vs in product.options.items() if value.lower() in vs and n not in options),
            f"option {j + 1}",
        )
        options[name] = value
    return options


def load_human_goals(
    path: str | Path, products: Sequence[Product], goal_config: GoalConfig | None = None
) -> list[Goal]:
    """The human goals of ``items_human_ins.json`` over ``products`` (B.6, WebShop's
    ``get_human_goals``): per product in order, one goal per instruction with non-empty
    ``instruction_attributes``; ids ``"human-{k}"``, weight 1. The price bound is WebShop's
    rule, seeded by ``goal_config.seed`` and the goal's index."""
    config = goal_config or GoalConfig()
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected a JSON object keyed by asin")
    goals: list[Goal] = []
    for product in products:
        entries = data.get(product.asin)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise DataFormatError(f"{path}: asin {product.asin!r}: expected a list of entries")
        for j, entry in enumerate(entries):
            where = f"{path}: asin {product.asin!r} entry {j}"
            if not isinstance(entry, dict):
                raise DataFormatError(f"{where}: expected a JSON object")
            attrs = _strings(
                _field(entry, "instruction_attributes", list, where),
                where,
                "instruction_attributes",
            )
            if not attrs:
                continue
            opts = _strings(
                _field(entry, "instruction_options", list, where), where, "instruction_options"
            )
            instruction = _field(entry, "instruction", str, where)
            rng = np.random.default_rng([config.seed, 0x4B, len(goals)])
            bound = loaded_price_upper(product.price, rng, config)
            goals.append(
                _loaded_goal(product, f"human-{len(goals)}", instruction.strip("."), attrs,
                             _option_names(product, opts), bound)
            )  # fmt: skip
    return goals


def _goal(
    product: Product,
    goal_id: str,
    instruction: str,
    attrs: Sequence[str],
    options: dict[str, str],
    bound: float,
    weight: float = 1.0,
) -> Goal:
    """The goal ``goal_id`` on ``product``: the target's name, query and categories are its."""
    return Goal(
        id=goal_id,
        asin=product.asin,
        instruction=instruction,
        attributes=tuple(attrs),
        options=options,
        price_upper=bound,
        name=product.title,
        query=product.query,
        category=product.category,
        product_category=product.product_category,
        weight=weight,
    )


def _loaded_goal(
    product: Product,
    goal_id: str,
    text: str,
    attrs: tuple[str, ...],
    options: dict[str, str],
    bound: float,
    weight: float = 1.0,
) -> Goal:
    """A goal of a loaded instruction, with WebShop's price clause appended."""
    return _goal(product, goal_id, f"{text}{price_text(bound)}", attrs, options, bound, weight)


def synthetic_goals(
    products: Sequence[Product],
    instructions: Mapping[str, InstructionEntry],
    goal_config: GoalConfig | None = None,
) -> list[Goal]:
    """WebShop's synthetic goals (``get_synthetic_goals``) over loaded products: for each
    product with an instruction in ``instructions`` (and instruction attributes), one goal per
    combination of all its option values (names sorted), one seeded price bound per product;
    weight = mean over the goal's attributes of 1 / (goals asking for it). Ids
    ``"synthetic-{k}"``."""
    config = goal_config or GoalConfig()
    goals: list[Goal] = []
    for index, product in enumerate(products):
        entry = instructions.get(product.asin)
        if entry is None or not entry.instruction or not entry.instruction_attributes:
            continue
        bound = loaded_price_upper(
            product.price, np.random.default_rng([config.seed, 0x5E, index]), config
        )
        names = sorted(product.options)
        for combo in itertools.product(*(product.options[n] for n in names)):
            options = dict(zip(names, combo, strict=True))
            text = f"{entry.instruction}{option_text(options)}"
            goals.append(
                _loaded_goal(product, f"synthetic-{len(goals)}", text,
                             entry.instruction_attributes, options, bound)
            )  # fmt: skip
    counts = Counter(a for g in goals for a in g.attributes)
    return [
        replace(g, weight=sum(1.0 / counts[a] for a in g.attributes) / len(g.attributes))
        for g in goals
    ]
