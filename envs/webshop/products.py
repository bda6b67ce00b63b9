"""The shop's data model: products and goals, in the shape of WebShop's loaded catalogue.

WebShop (Yao et al. 2022, arXiv 2207.01206) loads ``items_shuffle.json`` into products with a
``Title``, ``Description``, ``BulletPoints``, ``Price``, ``options`` and ``Attributes``, and
builds goals (instruction, attributes, options, price bound) over them. These two dataclasses
hold the same fields, whether the catalogue is generated (:mod:`.catalog`) or loaded from the
real files (:mod:`.tasks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Product:
    """One product.

    - ``asin``: its id (10 characters, upper case, e.g. ``B0A1B2C3D4``); clicked lower-cased.
    - ``title``, ``description``, ``bullet_points``: the item page's text.
    - ``category``: the top category (``"beauty"``); ``product_category``: the hierarchy
      joined with ``" › "`` (``"Beauty & Personal Care › Hair Care › Shampoo"``);
      ``query``: the search query the product was "scraped" with (WebShop's ``query``).
    - ``pricing``: one price, or the two ends of a price range (dollars); ``price``: the
      price a purchase is charged (a fixed point of the range: prices are deterministic).
    - ``options``: option name → its values, lower case (``{"color": ["black", "navy"],
      "size": ["small", "large"]}``); names in display order.
    - ``attributes``: lower-case attribute phrases the reward matches goal attributes against.
    """

    asin: str
    title: str
    description: str
    bullet_points: tuple[str, ...]
    category: str
    product_category: str
    query: str
    pricing: tuple[float, ...]
    price: float
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)
    attributes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Goal:
    """What the shopper wants: WebShop's goal fields.

    ``asin`` is the product the goal was made from (one solution; others may score 1.0 too).
    ``instruction`` is the text shown ("i need a ..., and price lower than 40.00 dollars").
    ``attributes`` and ``options`` (option name → wanted value) are what the reward checks,
    with ``price_upper`` the price bound; ``name``, ``query``, ``category`` and
    ``product_category`` are the target's, for the reward's type match. ``id`` is the goal's
    task id (deterministic).
    """

    id: str
    asin: str
    instruction: str
    attributes: tuple[str, ...]
    options: dict[str, str]
    price_upper: float
    name: str
    query: str
    category: str
    product_category: str
    weight: float = 1.0
