"""A small hand-made catalogue for the WebShop tests (three distinct products and look-alikes)."""

from __future__ import annotations

from agentenv.envs.webshop.products import Goal, Product


def product(asin: str, title: str, **fields) -> Product:
    base = {
        "description": f"{title}. A fine product.",
        "bullet_points": (f"{title} bullet", "second bullet"),
        "category": "beauty",
        "product_category": "Beauty & Personal Care › Hair Care › Shampoo",
        "query": "shampoo",
        "pricing": (10.0,),
        "price": 10.0,
        "options": {},
        "attributes": (),
    }
    base.update(fields)
    return Product(asin=asin, title=title, **base)


SHAMPOO = product(
    "B000000001",
    "Herbal Shampoo for Dry Hair",
    pricing=(12.5,),
    price=12.5,
    options={"size": ("8 oz", "16 oz"), "scent": ("lavender", "mint")},
    attributes=("sulfate free", "for dry hair"),
)
BOOTS = product(
    "B000000002",
    "Leather Hiking Boots",
    category="fashion",
    product_category="Clothing, Shoes & Jewelry › Men › Shoes › Boots",
    query="hiking boots",
    pricing=(40.0, 60.0),
    price=50.0,
    options={"color": ("black forest", "dark brown"), "size": ("9", "10", "11")},
    attributes=("waterproof", "rubber sole"),
)
LAMP = product(
    "B000000003",
    "Desk Lamp with USB Port",
    category="home",
    product_category="Tools & Home Improvement › Lighting › Lamps",
    query="desk lamp",
    pricing=(25.99,),
    price=25.99,
    options={},
    attributes=("dimmable",),
)


def catalogue(extra: int = 60) -> list[Product]:
    """Three distinct products and ``extra`` shampoo look-alikes (enough for 5 results pages)."""
    fillers = [
        product(f"B1{i:08d}", f"Shampoo number {i} for all hair", pricing=(5.0 + i,), price=5.0 + i)
        for i in range(extra)
    ]
    return [SHAMPOO, BOOTS, LAMP, *fillers]


def goal_for(target: Product, options: dict[str, str], **fields) -> Goal:
    base = {
        "id": f"goal-{target.asin}",
        "asin": target.asin,
        "instruction": f"i want {target.title.lower()}, and price lower than 60.00 dollars",
        "attributes": target.attributes,
        "price_upper": 60.0,
        "name": target.title,
        "query": target.query,
        "category": target.category,
        "product_category": target.product_category,
    }
    base.update(fields)
    return Goal(options=options, **base)
