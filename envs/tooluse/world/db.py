"""The tool world's database: a seeded procedural shop (customers, products, inventory, orders,
order items, refunds) in SQLite.

:func:`build_world` builds one template database per :class:`WorldConfig` (cached per process);
:meth:`World.copy` gives an episode its own in-memory copy (``sqlite3`` ``backup``), so writes of
one copy are never visible in another. :func:`state_hash` is the canonical digest of a
database's content (every table's rows, sorted by primary key): two databases hash equal iff
they hold the same rows, whatever order the writes came in.

Money is stored in integer cents and shown as dollars with two decimals (``"12.50"``). Every
customer belongs to one entity split (``train`` or ``test``, :attr:`WorldConfig.test_fraction`
of them ``test``), decided by a hash of the id: test tasks only ask about test customers.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from agentenv.rewards.toolcall import canonical_state_hash

SCHEMA = """
CREATE TABLE customers (
    customer_id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL UNIQUE,
    city TEXT NOT NULL, tier TEXT NOT NULL, store_credit INTEGER NOT NULL, split TEXT NOT NULL
);
CREATE TABLE products (
    product_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, category TEXT NOT NULL,
    price INTEGER NOT NULL
);
CREATE TABLE inventory (product_id TEXT PRIMARY KEY REFERENCES products, stock INTEGER NOT NULL);
CREATE TABLE orders (
    order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES customers,
    date TEXT NOT NULL, status TEXT NOT NULL
);
CREATE TABLE order_items (
    order_id TEXT NOT NULL REFERENCES orders, product_id TEXT NOT NULL REFERENCES products,
    quantity INTEGER NOT NULL, unit_price INTEGER NOT NULL, PRIMARY KEY (order_id, product_id)
);
CREATE TABLE refunds (
    order_id TEXT PRIMARY KEY REFERENCES orders, amount INTEGER NOT NULL, reason TEXT NOT NULL
);
"""
TABLES: tuple[str, ...] = (
    "customers", "products", "inventory", "orders", "order_items", "refunds",
)  # fmt: skip
"""Every table, in dump order (each is dumped sorted by its primary key)."""
_KEYS = {
    "customers": "customer_id", "products": "product_id", "inventory": "product_id",
    "orders": "order_id", "order_items": "order_id, product_id", "refunds": "order_id",
}  # fmt: skip

STATUSES: tuple[str, ...] = ("pending", "shipped", "delivered", "cancelled", "refunded")
TIERS: tuple[str, ...] = ("basic", "silver", "gold")
CATEGORIES: tuple[str, ...] = ("kitchen", "garden", "office", "toys", "sports", "books")
CITIES: tuple[str, ...] = (
    "Lyon", "Porto", "Leeds", "Graz", "Turin", "Ghent", "Bergen", "Tartu", "Split", "Cork",
    "Basel", "Malmo",
)  # fmt: skip
FIRST_NAMES: tuple[str, ...] = (
    "Maria", "Jonas", "Aiko", "Omar", "Lena", "Pavel", "Sofia", "Tariq", "Ingrid", "Mateo",
    "Nadia", "Elias", "Chloe", "Ravi", "Freya", "Hugo", "Amara", "Felix", "Yara", "Bruno",
    "Greta", "Ilya", "Zoe", "Kenji", "Alma", "Theo", "Mina", "Oscar", "Leila", "Anton",
)  # fmt: skip
LAST_NAMES: tuple[str, ...] = (
    "Lopez", "Berg", "Tanaka", "Haddad", "Novak", "Costa", "Meier", "Quinn", "Sato", "Roux",
    "Varga", "Lind", "Okafor", "Dias", "Moreau", "Kovac", "Hale", "Ibsen", "Marsh", "Petit",
    "Rossi", "Stone", "Weber", "Young", "Zamora",
)  # fmt: skip
_ADJECTIVES = (
    "Blue", "Compact", "Classic", "Deluxe", "Foldable", "Golden", "Mini", "Rustic", "Smart",
    "Sturdy", "Silent", "Vintage",
)  # fmt: skip
_NOUNS = {
    "kitchen": ("Kettle", "Toaster", "Blender", "Skillet", "Teapot", "Grater"),
    "garden": ("Trowel", "Hose", "Planter", "Shears", "Lantern", "Birdhouse"),
    "office": ("Stapler", "Desk Lamp", "Notebook", "Monitor Stand", "Pen Set", "Chair Mat"),
    "toys": ("Kite", "Puzzle", "Robot", "Yo-yo", "Train Set", "Rubber Duck"),
    "sports": ("Yoga Mat", "Dumbbell", "Jump Rope", "Water Bottle", "Racket", "Helmet"),
    "books": ("Atlas", "Cookbook", "Novel", "Field Guide", "Diary", "Sketchbook"),
}
TODAY = "2025-01-15"
"""The world's date: new orders are dated today; existing ones are from 2024."""


@dataclass(frozen=True)
class WorldConfig:
    """Knobs of a generated world.

    Attributes:
        seed: the world's random seed.
        num_customers: customers (20 to 5,000).
        num_products: products (12 to 72, unique names).
        test_fraction: share of customers whose tasks belong to the test splits.
        ambiguous_fraction: share of customers given the name of an earlier customer of
            another city (the world's ambiguous lookups).
    """

    seed: int = 0
    num_customers: int = 300
    num_products: int = 60
    test_fraction: float = 0.2
    ambiguous_fraction: float = 0.15

    def __post_init__(self) -> None:
        if not 20 <= self.num_customers <= 5000:
            raise ValueError(f"num_customers must be in [20, 5000], got {self.num_customers}")
        if not 12 <= self.num_products <= len(_ADJECTIVES) * 6:
            raise ValueError(f"num_products must be in [12, 72], got {self.num_products}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0.0 <= self.ambiguous_fraction <= 0.5:
            raise ValueError(
                f"ambiguous_fraction must be in [0, 0.5], got {self.ambiguous_fraction}"
            )


def dollars(cents: int) -> str:
    """``1250`` → ``"12.50"``."""
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def entity_split(customer_id: str, seed: int, test_fraction: float) -> str:
    """``"test"`` or ``"train"``: a stable hash of the world seed and the id."""
    digest = hashlib.sha256(f"{seed}:{customer_id}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def connect_memory() -> sqlite3.Connection:
    """A new, private in-memory database connection (rows as :class:`sqlite3.Row`)."""
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def dump(conn: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    """Every table's rows as tuples, sorted by primary key."""
    cursor = conn.cursor()
    cursor.row_factory = None
    return {t: cursor.execute(f"SELECT * FROM {t} ORDER BY {_KEYS[t]}").fetchall() for t in TABLES}


def state_hash(conn: sqlite3.Connection) -> str:
    """The canonical sha256 of the database's content (:func:`canonical_state_hash`)."""
    return canonical_state_hash(dump(conn))


@dataclass
class World:
    """One generated world: the template database and its fingerprint (its state hash)."""

    config: WorldConfig
    template: sqlite3.Connection
    fingerprint: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def copy(self) -> sqlite3.Connection:
        """A private in-memory copy of the template."""
        conn = connect_memory()
        with self._lock:
            self.template.backup(conn)
        return conn

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        """Rows of a read-only query on the template (task generation reads the world so)."""
        with self._lock:
            return self.template.execute(sql, params).fetchall()


@cache
def build_world(config: WorldConfig) -> World:
    """The world of ``config`` (built once per process)."""
    rng = np.random.default_rng([config.seed, 7])
    conn = connect_memory()
    conn.executescript(SCHEMA)
    products = _insert_products(conn, rng, config.num_products)
    for row in _customers(rng, config):
        conn.execute("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?)", row)
        _insert_orders(conn, rng, row[0], products)
    conn.commit()
    world = World(config, conn)
    world.fingerprint = state_hash(conn)
    return world


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _insert_products(
    conn: sqlite3.Connection, rng: np.random.Generator, count: int
) -> list[tuple[str, int]]:
    names = [(c, f"{a} {n}") for c in CATEGORIES for n in _NOUNS[c] for a in _ADJECTIVES]
    chosen = rng.permutation(len(names))[:count]
    products = []
    for number, index in enumerate(sorted(chosen)):
        category, name = names[index]
        product_id = f"P{100 + number}"
        price = int(rng.integers(5, 300)) * 100 + int(rng.choice([0, 49, 99, 50]))
        stock = 0 if rng.random() < 0.1 else int(rng.integers(1, 60))
        conn.execute(
            "INSERT INTO products VALUES (?, ?, ?, ?)", (product_id, name, category, price)
        )
        conn.execute("INSERT INTO inventory VALUES (?, ?)", (product_id, stock))
        products.append((product_id, price))
    return products


def _customers(rng: np.random.Generator, config: WorldConfig) -> Iterator[tuple[object, ...]]:
    used: dict[str, set[str]] = {}  # name -> cities
    for number in range(config.num_customers):
        customer_id = f"C{1000 + number}"
        name = ""
        if used and rng.random() < config.ambiguous_fraction:
            name = sorted(used)[int(rng.integers(len(used)))]
        while not name or (name in used and len(used[name]) >= len(CITIES)):
            name = f"{_pick(rng, FIRST_NAMES)} {_pick(rng, LAST_NAMES)}"
        city = _pick(rng, tuple(c for c in CITIES if c not in used.get(name, ())))
        used.setdefault(name, set()).add(city)
        email = f"{name.lower().replace(' ', '.')}{number}@example.com"
        tier = _pick(rng, TIERS)
        credit = int(rng.integers(0, 50)) * 100
        split = entity_split(customer_id, config.seed, config.test_fraction)
        yield customer_id, name, email, city, tier, credit, split


def _insert_orders(
    conn: sqlite3.Connection,
    rng: np.random.Generator,
    customer_id: str,
    products: list[tuple[str, int]],
) -> None:
    count = int(rng.integers(1, 7))
    days = sorted(rng.choice(360, size=count, replace=False))
    for day in days:
        (next_number,) = conn.execute("SELECT COUNT(*) FROM orders").fetchone()
        order_id = f"O{5000 + next_number}"
        date = str(np.datetime64("2024-01-01") + int(day))
        status = _pick(rng, STATUSES)
        conn.execute(
            "INSERT INTO orders VALUES (?, ?, ?, ?)", (order_id, customer_id, date, status)
        )
        picked = rng.choice(len(products), size=int(rng.integers(1, 4)), replace=False)
        for index in sorted(picked):
            product_id, price = products[index]
            quantity = int(rng.integers(1, 4))
            conn.execute(
                "INSERT INTO order_items VALUES (?, ?, ?, ?)",
                (order_id, product_id, quantity, price),
            )
        if status == "refunded":
            (total,) = conn.execute(
                "SELECT SUM(quantity * unit_price) FROM order_items WHERE order_id = ?",
                (order_id,),
            ).fetchone()
            conn.execute("INSERT INTO refunds VALUES (?, ?, ?)", (order_id, total, "damaged"))
