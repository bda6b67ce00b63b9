"""A seeded, procedural WebShop-like catalogue: products with a category hierarchy, option grids,
prices and near-duplicate distractors.

The taxonomy (:data:`TAXONOMY`) has 11 top categories, each with 3 sub-categories of 3 leaves;
``product_category`` is ``"Top › Sub › Leaf"``. A leaf names one or two product nouns (the
``query`` of its products, and the last words of their titles: the reward's type match compares
title nouns). A top category has a pool of attribute phrases ("sulfate free", "water
resistant"; several are shared between categories) and a price band; a sub-category lists the
option kinds its products may offer (color, size, pack, flavor, ...; at most one per option
name). Colours come from a fixed list of compound names ("navy blue", "matte black",
"black | white") so that the reward's colour normalisation has work to do.

A product draws a leaf, a noun, a brand (pronounceable invented words), an adjective, 2-4
attributes, 0-3 option names with 2-6 values each, and a price (a log-uniform draw in its
category's band, in cents) or, for ``range_rate`` of products, a price range. ``price`` is
always a deterministic point of ``pricing``: the price itself, or the midpoint of the range
(:func:`price_point`). Titles, descriptions and 3-5 bullet points are rendered from the drawn
fields and mention the attributes.

A ``distractor_rate`` share of the catalogue are *near-duplicates*: a copy of another product
(same brand, noun, leaf and adjective) that differs in exactly one thing, recorded in
:func:`catalog_variants`: one attribute replaced by another of the pool (``"attribute"``), one
value of one option replaced by an unused value of that option (``"option"``), or a price
raised by more than $40 (``"price"``: above any price bound a default goal on the original can
have, see :class:`~.tasks.GoalConfig`). The products are then shuffled, and each gets a unique
10-character ASIN (``"B0"`` + 8 base-36 characters).

Everything is a pure function of :class:`CatalogConfig` (numpy ``PCG64`` streams seeded from
it; no Python ``hash``), and :func:`generate_catalog` is memoised per config in-process.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .products import Product

CATEGORY_SEP = " › "
"""Separator of the levels of ``Product.product_category`` (WebShop's)."""

# ---------------------------------------------------------------------------------------------
# Option kinds: option name and its values (in display order)
# ---------------------------------------------------------------------------------------------
COLORS = (
    "black", "white", "matte black", "jet black", "navy blue", "sky blue", "royal blue", "red",
    "wine red", "burgundy", "dark brown", "light brown", "beige", "khaki", "grey", "light grey",
    "heather grey", "charcoal", "silver", "rose gold", "gold", "green", "olive green",
    "army green", "mint green", "pink", "hot pink", "light pink", "purple", "lavender",
    "yellow", "mustard yellow", "orange", "coral", "teal", "ivory", "black | white",
    "grey | blue", "multicolor", "clear",
)  # fmt: skip
"""The fixed colour list: compound names, some with WebShop's ``" | "`` (from ``"/"``)."""

OPTION_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "color": ("color", COLORS),
    "apparel_size": ("size", ("x-small", "small", "medium", "large", "x-large", "xx-large", "3x-large")),
    "shoe_size": ("size", ("6", "6.5", "7", "7.5", "8", "8.5", "9", "9.5", "10", "10.5", "11", "12")),
    "pet_size": ("size", ("x-small", "small", "medium", "large", "x-large")),
    "volume": ("size", ("1 fl oz", "1.7 fl oz", "3.4 fl oz", "6.8 fl oz", "8 fl oz", "12 fl oz", "16.9 fl oz", "33.8 fl oz")),
    "food_size": ("size", ("4 ounce", "8 ounce", "12 ounce", "16 ounce", "1 pound", "2 pound", "5 pound")),
    "furniture_size": ("size", ("small", "medium", "large", "x-large")),
    "bed_size": ("size", ("twin", "twin xl", "full", "queen", "king", "california king")),
    "cookware_size": ("size", ("8 inch", "9.5 inch", "10 inch", "11 inch", "12 inch", "14 inch")),
    "tent_size": ("size", ("1 person", "2 person", "4 person", "6 person", "8 person")),
    "pieces": ("size", ("100 pieces", "300 pieces", "500 pieces", "1000 pieces", "1500 pieces")),
    "paper_size": ("size", ("a5", "a4", "letter", "legal", "8.5 x 11 inch")),
    "capacity": ("capacity", ("16gb", "32gb", "64gb", "128gb", "256gb", "512gb")),
    "cable_length": ("length", ("1 ft", "3 ft", "6 ft", "10 ft", "15 ft")),
    "weight": ("weight", ("5 pounds", "10 pounds", "15 pounds", "20 pounds", "25 pounds", "30 pounds")),
    "scent": ("scent", ("lavender", "unscented", "coconut", "rose", "citrus", "vanilla", "eucalyptus mint", "sandalwood", "fresh linen")),
    "flavor": ("flavor", ("original", "chocolate", "vanilla", "strawberry", "peanut butter", "sea salt", "barbecue", "honey roasted", "mixed berry", "lemon", "mango")),
    "pack": ("pack", ("1 count", "2 count", "3 count", "pack of 4", "pack of 6", "pack of 12", "pack of 24")),
    "style": ("style", ("classic", "modern", "standard", "deluxe", "premium", "pro")),
}  # fmt: skip
"""Option kind → (option name shown on the item page, its values in display order)."""


# ---------------------------------------------------------------------------------------------
# The taxonomy
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TopCategory:
    """A top category: ``key`` (``Product.category``), its display name (first level of
    ``product_category``), its attribute pool, price band (dollars) and sub-categories
    (name → (option kinds, leaf name → nouns))."""

    key: str
    display: str
    attributes: tuple[str, ...]
    price_band: tuple[float, float]
    subs: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]]


TAXONOMY: tuple[TopCategory, ...] = (
    TopCategory(
        "beauty", "Beauty & Personal Care",
        ("sulfate free", "paraben free", "cruelty free", "long lasting", "natural ingredients",
         "for dry skin", "for sensitive skin", "fragrance free", "vegan", "travel size",
         "easy to use", "dermatologist tested", "oil free", "anti aging", "non toxic",
         "high quality", "hyaluronic acid", "alcohol free"),
        (4.0, 60.0),
        {
            "Hair Care": (("scent", "volume", "pack"), {"Shampoo": ("shampoo",), "Conditioner": ("conditioner",), "Hair Styling": ("hair spray", "hair gel")}),
            "Skin Care": (("scent", "volume", "pack"), {"Moisturizers": ("face moisturizer", "face cream"), "Sunscreens": ("sunscreen",), "Serums": ("face serum",)}),
            "Makeup": (("color", "pack"), {"Lipsticks": ("lipstick",), "Foundations": ("foundation",), "Eye Makeup": ("eyeliner", "mascara")}),
        },
    ),
    TopCategory(
        "electronics", "Electronics",
        ("wireless", "noise cancelling", "water resistant", "long battery life", "fast charging",
         "easy to carry", "high definition", "usb c", "plug and play", "lightweight", "durable",
         "compact", "ergonomic design", "easy to install", "high quality", "bluetooth"),
        (8.0, 300.0),
        {
            "Headphones & Audio": (("color", "style"), {"Headphones": ("headphones",), "Earbuds": ("earbuds",), "Speakers": ("speaker", "soundbar")}),
            "Computer Accessories": (("color", "cable_length", "pack"), {"Keyboards": ("keyboard",), "Mice": ("mouse",), "Cables": ("usb cable", "charging cable")}),
            "Camera & Photo": (("color", "capacity"), {"Tripods": ("tripod",), "Memory Cards": ("memory card",), "Camera Bags": ("camera bag",)}),
        },
    ),
    TopCategory(
        "fashion", "Clothing, Shoes & Jewelry",
        ("machine washable", "slim fit", "relaxed fit", "moisture wicking", "breathable",
         "quick drying", "cotton", "soft material", "long sleeve", "short sleeve",
         "button closure", "elastic waist", "non slip", "lightweight", "high waist",
         "classic fit", "water resistant"),
        (10.0, 120.0),
        {
            "Men": (("color", "apparel_size"), {"T-Shirts": ("t-shirt",), "Jeans": ("jeans",), "Jackets": ("jacket",)}),
            "Women": (("color", "apparel_size"), {"Dresses": ("dress",), "Leggings": ("leggings",), "Blouses": ("blouse",)}),
            "Shoes": (("color", "shoe_size"), {"Sneakers": ("sneakers", "running shoes"), "Boots": ("boots",), "Sandals": ("sandals",)}),
        },
    ),
    TopCategory(
        "food", "Grocery & Gourmet Food",
        ("gluten free", "sugar free", "non gmo", "organic", "keto friendly", "low calorie",
         "high protein", "dairy free", "vegan", "kosher", "caffeine free",
         "no artificial flavors", "individually wrapped", "ready to eat", "plant based",
         "low sodium"),
        (3.0, 50.0),
        {
            "Snacks": (("flavor", "food_size", "pack"), {"Chips": ("potato chips",), "Protein Bars": ("protein bar",), "Nuts": ("mixed nuts",)}),
            "Beverages": (("flavor", "pack"), {"Coffee": ("ground coffee", "coffee pods"), "Tea": ("green tea", "herbal tea"), "Sparkling Water": ("sparkling water",)}),
            "Pantry Staples": (("food_size", "pack"), {"Pasta": ("pasta",), "Olive Oil": ("olive oil",), "Honey": ("honey",)}),
        },
    ),
    TopCategory(
        "furniture", "Furniture",
        ("easy to assemble", "solid wood", "space saving", "storage space", "mid century",
         "metal frame", "easy to clean", "heavy duty", "for living room", "for bedroom",
         "wood finish", "high density foam", "non slip", "modern design", "durable",
         "upholstered"),
        (40.0, 800.0),
        {
            "Living Room": (("color", "furniture_size"), {"Sofas": ("sofa", "loveseat"), "Coffee Tables": ("coffee table",), "TV Stands": ("tv stand",)}),
            "Bedroom": (("color", "bed_size"), {"Beds": ("bed frame",), "Dressers": ("dresser",), "Nightstands": ("nightstand",)}),
            "Home Office": (("color", "style"), {"Desks": ("desk",), "Office Chairs": ("office chair",), "Bookcases": ("bookcase",)}),
        },
    ),
    TopCategory(
        "kitchen", "Home & Kitchen",
        ("dishwasher safe", "bpa free", "non stick", "stainless steel", "easy to clean",
         "heat resistant", "microwave safe", "food grade", "leak proof", "large capacity",
         "easy to use", "durable", "eco friendly", "space saving", "high quality",
         "rust resistant"),
        (6.0, 150.0),
        {
            "Cookware": (("color", "cookware_size"), {"Frying Pans": ("frying pan", "skillet"), "Pots": ("stock pot",), "Bakeware": ("baking sheet",)}),
            "Kitchen Storage": (("color", "pack"), {"Food Containers": ("food container",), "Water Bottles": ("water bottle",), "Lunch Boxes": ("lunch box",)}),
            "Small Appliances": (("color", "style"), {"Blenders": ("blender",), "Coffee Makers": ("coffee maker",), "Toasters": ("toaster",)}),
        },
    ),
    TopCategory(
        "sports", "Sports & Outdoors",
        ("lightweight", "water resistant", "non slip", "durable", "breathable", "portable",
         "adjustable", "easy to carry", "quick drying", "foldable", "heavy duty",
         "moisture wicking", "uv protection", "easy to assemble", "high density"),
        (10.0, 200.0),
        {
            "Exercise & Fitness": (("color", "weight"), {"Yoga Mats": ("yoga mat",), "Dumbbells": ("dumbbell",), "Resistance Bands": ("resistance band",)}),
            "Outdoor Recreation": (("color", "tent_size"), {"Tents": ("tent",), "Backpacks": ("hiking backpack",), "Sleeping Bags": ("sleeping bag",)}),
            "Cycling": (("color", "apparel_size"), {"Bike Helmets": ("bike helmet",), "Bike Lights": ("bike light",), "Cycling Gloves": ("cycling gloves",)}),
        },
    ),
    TopCategory(
        "toys", "Toys & Games",
        ("educational", "non toxic", "for kids", "age 3 and up", "battery operated",
         "easy to assemble", "durable", "bpa free", "washable", "gift idea", "stem learning",
         "soft", "portable", "creative play"),
        (6.0, 90.0),
        {
            "Building Toys": (("pieces", "color"), {"Building Blocks": ("building blocks",), "Magnetic Tiles": ("magnetic tiles",), "Construction Sets": ("construction set",)}),
            "Stuffed Animals": (("color", "furniture_size"), {"Plush Toys": ("plush toy",), "Teddy Bears": ("teddy bear",), "Plush Pillows": ("plush pillow",)}),
            "Puzzles & Games": (("pieces", "style"), {"Jigsaw Puzzles": ("jigsaw puzzle",), "Board Games": ("board game",), "Card Games": ("card game",)}),
        },
    ),
    TopCategory(
        "pets", "Pet Supplies",
        ("for small dogs", "for large dogs", "for cats", "grain free", "natural ingredients",
         "easy to clean", "durable", "non toxic", "machine washable", "waterproof",
         "adjustable", "chew resistant", "high protein", "non slip"),
        (5.0, 80.0),
        {
            "Dogs": (("color", "pet_size"), {"Dog Collars": ("dog collar",), "Dog Beds": ("dog bed",), "Dog Toys": ("dog toy",)}),
            "Cats": (("color", "pack"), {"Cat Litter": ("cat litter",), "Cat Trees": ("cat tree",), "Cat Toys": ("cat toy",)}),
            "Pet Food": (("flavor", "food_size"), {"Dog Food": ("dog food",), "Cat Food": ("cat food",), "Pet Treats": ("pet treats",)}),
        },
    ),
    TopCategory(
        "office", "Office Products",
        ("refillable", "quick drying", "acid free", "smooth writing", "heavy duty",
         "easy to use", "durable", "assorted colors", "waterproof", "eco friendly", "compact",
         "lightweight", "fine point", "recycled paper"),
        (3.0, 60.0),
        {
            "Writing Supplies": (("color", "pack"), {"Pens": ("gel pen", "ballpoint pen"), "Markers": ("marker",), "Pencils": ("pencil",)}),
            "Paper Products": (("paper_size", "pack"), {"Notebooks": ("notebook",), "Sticky Notes": ("sticky notes",), "Printer Paper": ("printer paper",)}),
            "Desk Organizers": (("color", "style"), {"Organizers": ("desk organizer",), "File Folders": ("file folder",), "Staplers": ("stapler",)}),
        },
    ),
    TopCategory(
        "garden", "Patio, Lawn & Garden",
        ("weather resistant", "rust resistant", "solar powered", "easy to install",
         "uv resistant", "heavy duty", "waterproof", "durable", "lightweight", "outdoor use",
         "eco friendly", "adjustable", "easy to assemble"),
        (8.0, 200.0),
        {
            "Gardening": (("color", "pack"), {"Planters": ("planter", "flower pot"), "Garden Hoses": ("garden hose",), "Pruning Shears": ("pruning shears",)}),
            "Outdoor Lighting": (("color", "pack"), {"Solar Lights": ("solar light",), "String Lights": ("string lights",), "Lanterns": ("lantern",)}),
            "Patio Furniture": (("color", "style"), {"Patio Chairs": ("patio chair",), "Hammocks": ("hammock",), "Umbrellas": ("patio umbrella",)}),
        },
    ),
)  # fmt: skip
"""The category hierarchy with attribute pools, price bands, option kinds and leaf nouns."""


@dataclass(frozen=True)
class Leaf:
    """A leaf category, flattened: its top category, path, nouns and option kinds."""

    top: TopCategory
    path: str
    nouns: tuple[str, ...]
    option_kinds: tuple[str, ...]


LEAVES: tuple[Leaf, ...] = tuple(
    Leaf(top, CATEGORY_SEP.join((top.display, sub, leaf)), nouns, kinds)
    for top in TAXONOMY
    for sub, (kinds, leaves) in top.subs.items()
    for leaf, nouns in leaves.items()
)
NOUNS: frozenset[str] = frozenset(n for leaf in LEAVES for n in leaf.nouns)
"""Every product noun of the generated catalogue (the ``query`` of its products)."""
NOUN_WORDS: frozenset[str] = frozenset(w for n in NOUNS for w in n.split())
"""The words of :data:`NOUNS`: a noun lexicon for titles of generated products."""

_ADJECTIVES = (
    "premium", "classic", "professional", "ultra", "deluxe", "essential", "everyday",
    "advanced", "original", "modern", "portable", "elegant", "simple", "smart", "compact",
    "vintage", "signature", "pure", "natural", "superior",
)  # fmt: skip
_BENEFITS = (
    "made for everyday use",
    "tested for quality and safety",
    "built to last for years",
    "a favourite of thousands of customers",
    "designed with care",
    "great value for the price",
)
_FILLERS = (
    "Makes a great gift for family and friends.",
    "Backed by a 12-month satisfaction guarantee.",
    "Designed for everyday use at home or on the go.",
    "Carefully packaged to arrive in perfect condition.",
    "Our customer service team is happy to help with any question.",
    "Each unit is inspected before it leaves the warehouse.",
)
_ONSETS = ("b", "br", "c", "d", "dr", "f", "g", "gl", "k", "l", "m", "n", "p", "pr", "r", "s",
           "st", "t", "tr", "v", "z", "zh", "qu", "h")  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "io", "y")
_CODAS = ("", "n", "x", "r", "l", "s", "m", "k", "th", "v")
_ALPHABET = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
_ASIN_SPACE = 36**8
_CENTS = np.array([0.99, 0.99, 0.49, 0.95, 0.0, 0.79])
VARIANT_KINDS = ("attribute", "option", "price")
"""What a near-duplicate distractor changes (one of them)."""
PRICE_DISTRACTOR_MIN_RAISE = 41.0
"""A price distractor costs at least this much more than its original: more than the
largest default goal bound (the fourth multiple of $10 above the price) allows."""


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CatalogConfig:
    """Knobs of a generated catalogue.

    - ``seed`` (0): the catalogue is a pure function of this config.
    - ``num_products`` (1000): products in all, distractors included (1 to a few 100k).
    - ``distractor_rate`` (0.2): share of the products that are near-duplicates of another
      product, differing in one attribute, one option value or the price.
    - ``min_attributes``/``max_attributes`` (2/4): attributes per product.
    - ``max_options`` (3): option names per product are drawn from 0..this (capped by its
      sub-category's option kinds); ``min_option_values``/``max_option_values`` (2/6): values
      per option (capped by the kind's list).
    - ``range_rate`` (0.25): share of products priced with a range ``(low, high)``.
    - ``categories`` (None = all): the top category keys (:data:`TAXONOMY`) to draw from.
    """

    seed: int = 0
    num_products: int = 1000
    distractor_rate: float = 0.2
    min_attributes: int = 2
    max_attributes: int = 4
    max_options: int = 3
    min_option_values: int = 2
    max_option_values: int = 6
    range_rate: float = 0.25
    categories: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.num_products < 1:
            raise ValueError(f"num_products must be >= 1, got {self.num_products}")
        if not 0 <= self.distractor_rate < 1:
            raise ValueError(f"distractor_rate must be in [0, 1), got {self.distractor_rate}")
        if not 1 <= self.min_attributes <= self.max_attributes <= 8:
            raise ValueError(
                f"need 1 <= min_attributes <= max_attributes <= 8, got "
                f"{self.min_attributes}, {self.max_attributes}"
            )
        if not 0 <= self.max_options <= 3:
            raise ValueError(f"max_options must be in 0..3, got {self.max_options}")
        if not 1 <= self.min_option_values <= self.max_option_values:
            raise ValueError(
                f"need 1 <= min_option_values <= max_option_values, got "
                f"{self.min_option_values}, {self.max_option_values}"
            )
        if not 0 <= self.range_rate <= 1:
            raise ValueError(f"range_rate must be in [0, 1], got {self.range_rate}")
        if self.categories is not None:  # a list (say from JSON) becomes a hashable tuple
            object.__setattr__(self, "categories", tuple(self.categories))
        known = {t.key for t in TAXONOMY}
        if self.categories is not None and (not self.categories or set(self.categories) - known):
            raise ValueError(
                f"categories must be a non-empty subset of {sorted(known)}, got {self.categories}"
            )


# ---------------------------------------------------------------------------------------------
# Drawn fields of one product, before rendering
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Spec:
    leaf: Leaf
    noun: str
    brand: str
    adjective: str
    attributes: tuple[str, ...]
    options: dict[str, tuple[str, ...]]
    option_kinds: tuple[str, ...]
    pricing: tuple[float, ...]
    style: int  # picks the text templates


@dataclass(frozen=True)
class _Catalog:
    products: tuple[Product, ...]
    variants: dict[str, tuple[str, str]]


def price_point(pricing: Sequence[float]) -> float:
    """The price a purchase is charged: the single price, the midpoint of a range (rounded to
    cents), or 100.0 without pricing (WebShop's default). Deterministic, unlike WebShop's
    ``random.uniform(low, high)``."""
    if not pricing:
        return 100.0
    if len(pricing) == 1:
        return float(pricing[0])
    return round((float(pricing[0]) + float(pricing[1])) / 2, 2)


def _brands(rng: np.random.Generator, k: int) -> list[str]:
    """``k`` distinct pronounceable brand names (two or three syllables)."""
    names: dict[str, None] = {}
    while len(names) < k:
        m = 2 * k
        syl = rng.integers(2, 4, size=m)
        parts = [
            rng.integers(len(_ONSETS), size=(m, 3)),
            rng.integers(len(_VOWELS), size=(m, 3)),
        ]
        codas = rng.integers(len(_CODAS), size=m)
        for i in range(m):
            word = "".join(_ONSETS[parts[0][i, j]] + _VOWELS[parts[1][i, j]] for j in range(syl[i]))
            names.setdefault((word + _CODAS[codas[i]]).capitalize())
            if len(names) == k:
                break
    return list(names)


def _asins(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct ASINs: ``"B0"`` + a seeded affine permutation of the indices, base 36."""
    mult = int(rng.integers(1, _ASIN_SPACE // 6)) * 6 + 1  # coprime to 36**8 = 2**16 * 3**8
    offset = int(rng.integers(_ASIN_SPACE))
    codes = (np.arange(n, dtype=object) * mult + offset) % _ASIN_SPACE
    codes = codes.astype(np.int64)
    digits = np.stack([(codes // 36**p) % 36 for p in range(7, -1, -1)], axis=1)
    chars = _ALPHABET[digits]
    return ["B0" + "".join(row) for row in chars.tolist()]


def _prices(rng: np.random.Generator, bands: np.ndarray, range_rate: float) -> list[tuple]:
    """Per product a price or a (low, high) range, in dollars with typical cents."""
    n = len(bands)
    logs = rng.uniform(np.log(bands[:, 0]), np.log(bands[:, 1]))
    low = np.floor(np.exp(logs)) + _CENTS[rng.integers(len(_CENTS), size=n)]
    low = np.maximum(low, 0.99)
    high = np.floor(low * rng.uniform(1.15, 2.0, size=n)) + 0.99
    ranged = rng.random(n) < range_rate
    return [
        (round(lo, 2), round(hi, 2)) if r else (round(lo, 2),)
        for lo, hi, r in zip(low.tolist(), high.tolist(), ranged.tolist(), strict=True)
    ]


def _pick_prefix(rng: np.random.Generator, pool: int, k: int, rows: int) -> list[list[int]]:
    """Per row, ``k`` distinct indices of ``range(pool)`` in a random order (a prefix of a
    random permutation: any shorter prefix is a uniform draw too)."""
    if rows == 0 or k == 0:
        return [[] for _ in range(rows)]
    return np.argsort(rng.random((rows, pool)), axis=1)[:, :k].tolist()


def _draw_option_values(
    rng: np.random.Generator, config: CatalogConfig, kinds: list[tuple[str, ...]]
) -> list[dict[str, tuple[str, ...]]]:
    """Per product, its options: for each of its option kinds, 2-6 distinct values of the
    kind's list (in list order). Drawn kind by kind, vectorised over the products."""
    options: list[dict[str, tuple[str, ...]]] = [{} for _ in kinds]
    slots: dict[str, list[int]] = {}
    for i, row in enumerate(kinds):
        for kind in row:
            slots.setdefault(kind, []).append(i)
    for kind, (name, choices) in OPTION_KINDS.items():
        rows = slots.get(kind, [])
        if not rows:
            continue
        hi = min(config.max_option_values, len(choices))
        m = rng.integers(min(config.min_option_values, hi), hi + 1, size=len(rows)).tolist()
        for i, picks, k in zip(
            rows, _pick_prefix(rng, len(choices), hi, len(rows)), m, strict=True
        ):
            options[i][name] = tuple(choices[c] for c in sorted(picks[:k]))
    # display order: the product's kinds in its leaf's order (drawn above in kind order)
    return [
        {OPTION_KINDS[k][0]: o[OPTION_KINDS[k][0]] for k in row}
        for row, o in zip(kinds, options, strict=True)
    ]


def _draw_subsets(
    rng: np.random.Generator, leaves: list[Leaf], leaf_idx: np.ndarray, config: CatalogConfig
) -> tuple[list[list[int]], list[tuple[str, ...]]]:
    """Per product, the indices of its attributes in its top category's pool (draw order) and
    its option kinds (a subset of its leaf's, in the leaf's order). Vectorised per leaf."""
    n = len(leaf_idx)
    n_attr = rng.integers(config.min_attributes, config.max_attributes + 1, size=n).tolist()
    n_opt = rng.choice(4, size=n, p=[0.15, 0.35, 0.35, 0.15]).tolist()
    attrs: list[list[int]] = [[] for _ in range(n)]
    kinds: list[tuple[str, ...]] = [() for _ in range(n)]
    for li, leaf in enumerate(leaves):
        rows = np.flatnonzero(leaf_idx == li).tolist()
        pool, kind_pool = len(leaf.top.attributes), leaf.option_kinds
        max_opt = min(config.max_options, len(kind_pool))
        attr_picks = _pick_prefix(rng, pool, min(config.max_attributes, pool), len(rows))
        kind_picks = _pick_prefix(rng, len(kind_pool), max_opt, len(rows))
        for r, a, o in zip(rows, attr_picks, kind_picks, strict=True):
            attrs[r] = a[: n_attr[r]]
            kinds[r] = tuple(kind_pool[j] for j in sorted(o[: n_opt[r]]))
    return attrs, kinds


def _draw_specs(rng: np.random.Generator, config: CatalogConfig, n: int) -> list[_Spec]:
    """The drawn fields of ``n`` original (non-distractor) products."""
    tops = set(config.categories or [t.key for t in TAXONOMY])
    leaves = [leaf for leaf in LEAVES if leaf.top.key in tops]
    leaf_idx = rng.integers(len(leaves), size=n)
    brands = _brands(rng, int(np.clip(n // 20, 40, 3000)))
    brand_idx = rng.integers(len(brands), size=n).tolist()
    adj_idx = rng.integers(len(_ADJECTIVES), size=n).tolist()
    noun_pick = rng.integers(1 << 30, size=n).tolist()
    style = rng.integers(1 << 30, size=n).tolist()
    bands = np.array([leaf.top.price_band for leaf in leaves], dtype=float)[leaf_idx]
    pricing = _prices(rng, bands, config.range_rate)
    attrs, kinds = _draw_subsets(rng, leaves, leaf_idx, config)
    options = _draw_option_values(rng, config, kinds)
    specs = []
    for i, li in enumerate(leaf_idx.tolist()):
        leaf = leaves[li]
        specs.append(
            _Spec(
                leaf=leaf,
                noun=leaf.nouns[noun_pick[i] % len(leaf.nouns)],
                brand=brands[brand_idx[i]],
                adjective=_ADJECTIVES[adj_idx[i]],
                attributes=tuple(leaf.top.attributes[a] for a in attrs[i]),
                options=options[i],
                option_kinds=kinds[i],
                pricing=pricing[i],
                style=style[i],
            )
        )
    return specs


def _variant(rng: np.random.Generator, spec: _Spec) -> tuple[_Spec, str]:
    """A near-duplicate of ``spec`` that differs in one attribute, option value or the price."""
    kinds = ["attribute", "price"] + (["option"] if spec.options else [])
    unused = [a for a in spec.leaf.top.attributes if a not in spec.attributes]
    if not unused:
        kinds.remove("attribute")
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "attribute":
        slot = int(rng.integers(len(spec.attributes)))
        attrs = list(spec.attributes)
        attrs[slot] = unused[int(rng.integers(len(unused)))]
        return replace(spec, attributes=tuple(attrs)), kind
    if kind == "option":
        slot = int(rng.integers(len(spec.options)))
        name = list(spec.options)[slot]
        all_values = OPTION_KINDS[spec.option_kinds[slot]][1]
        have = spec.options[name]
        free = [v for v in all_values if v not in have]
        if free:
            values = list(have)
            values[int(rng.integers(len(values)))] = free[int(rng.integers(len(free)))]
            order = {v: i for i, v in enumerate(all_values)}
            options = dict(spec.options)
            options[name] = tuple(sorted(values, key=order.__getitem__))
            return replace(spec, options=options), kind
        kind = "price"
    price = price_point(spec.pricing)
    raise_by = max(price * float(rng.uniform(0.3, 0.8)), PRICE_DISTRACTOR_MIN_RAISE)
    raise_by = float(np.ceil(raise_by))
    return replace(spec, pricing=tuple(round(p + raise_by, 2) for p in spec.pricing)), kind


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def _title_case(phrase: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in phrase.split())


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def join_and(items: Sequence[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _title(spec: _Spec) -> str:
    b, j, n = spec.brand, _title_case(spec.adjective), _title_case(spec.noun)
    a0 = _title_case(spec.attributes[0])
    a1 = _title_case(spec.attributes[1]) if len(spec.attributes) > 1 else j
    style = spec.style % 4
    if style == 0:
        return f"{b} {j} {a0} {n}"
    if style == 1:
        return f"{b} {n}, {a0}, {a1}"
    if style == 2:
        return f"{j} {a0} {n} by {b}"
    return f"{b} {a0} {j} {n} - {a1}"


def _description(spec: _Spec) -> str:
    attrs = join_and(spec.attributes)
    filler = _FILLERS[(spec.style >> 2) % len(_FILLERS)]
    if (spec.style >> 5) % 2:
        text = f"This {spec.adjective} {spec.noun} from {spec.brand} is {attrs}. {filler}"
    else:
        text = f"Meet the {spec.brand} {spec.noun}: {attrs}. {filler}"
    if spec.options:
        counts = [f"{len(v)} {k} options" for k, v in spec.options.items()]
        text += f" Choose from {join_and(counts)}."
    return text


def _bullets(spec: _Spec) -> tuple[str, ...]:
    bullets = [
        f"{a.upper()} - the {spec.noun} is {a}, "
        f"{_BENEFITS[(spec.style >> (6 + k)) % len(_BENEFITS)]}."
        for k, a in enumerate(spec.attributes)
    ]
    if spec.options:
        names = join_and(list(spec.options))
        bullets.append(f"MORE CHOICE - available in several {names} options to suit you.")
    extra = 3 + (spec.style >> 10) % 2
    k = spec.style >> 12
    while len(bullets) < extra:
        bullets.append(_FILLERS[(k + len(bullets)) % len(_FILLERS)])
    return tuple(bullets[:5])


def _render(spec: _Spec, asin: str) -> Product:
    return Product(
        asin=asin,
        title=_title(spec),
        description=_description(spec),
        bullet_points=_bullets(spec),
        category=spec.leaf.top.key,
        product_category=spec.leaf.path,
        query=spec.noun,
        pricing=spec.pricing,
        price=price_point(spec.pricing),
        options=spec.options,
        attributes=spec.attributes,
    )


# ---------------------------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _build(config: CatalogConfig) -> _Catalog:
    rng = np.random.default_rng([config.seed, 0xCA7A106])
    n = config.num_products
    n_dist = min(int(round(n * config.distractor_rate)), n - 1)
    specs = _draw_specs(rng, config, n - n_dist)
    bases = rng.integers(len(specs), size=n_dist)
    changes: list[tuple[int, str]] = []
    for b in bases.tolist():
        spec, kind = _variant(rng, specs[b])
        specs.append(spec)
        changes.append((b, kind))
    order = rng.permutation(n)
    asins = _asins(rng, n)
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    asin_of = [asins[p] for p in position.tolist()]  # asin of spec i
    products: list[Product | None] = [None] * n
    for i, spec in enumerate(specs):
        products[position[i]] = _render(spec, asin_of[i])
    variants = {asin_of[n - n_dist + d]: (asin_of[b], kind) for d, (b, kind) in enumerate(changes)}
    return _Catalog(tuple(p for p in products if p is not None), variants)


def generate_catalog(config: CatalogConfig) -> list[Product]:
    """The products of ``config`` (memoised per config; a fresh list each call)."""
    return list(_build(config).products)


def catalog_variants(config: CatalogConfig) -> dict[str, tuple[str, str]]:
    """Near-duplicate distractors of ``config``: asin → (asin of the original, what changed:
    one of :data:`VARIANT_KINDS`)."""
    return dict(_build(config).variants)


@functools.lru_cache(maxsize=8)
def _by_asin(config: CatalogConfig) -> dict[str, Product]:
    return {p.asin: p for p in _build(config).products}


def product_by_asin(config: CatalogConfig, asin: str) -> Product:
    """The product of ``config`` with id ``asin`` (upper or lower case); KeyError if none."""
    try:
        return _by_asin(config)[asin.upper()]
    except KeyError:
        raise KeyError(f"no product {asin!r} in the catalogue of {config}") from None


def product_json(product: Product) -> dict:
    """``product`` as a JSON-ready dict (tuples as lists)."""
    return {
        "asin": product.asin,
        "title": product.title,
        "description": product.description,
        "bullet_points": list(product.bullet_points),
        "category": product.category,
        "product_category": product.product_category,
        "query": product.query,
        "pricing": list(product.pricing),
        "price": product.price,
        "options": {k: list(v) for k, v in product.options.items()},
        "attributes": list(product.attributes),
    }


def catalog_digest(products: Iterable[Product]) -> str:
    """sha256 over the products' fields (order matters): a fingerprint of a catalogue."""
    h = hashlib.sha256()
    for p in products:
        h.update(json.dumps(product_json(p), sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()
