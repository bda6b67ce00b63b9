"""Tasks of the tool world: seeded, composable requests with gold calls found by replay.

A task is one user request of 1 to 3 *parts*, each an instance of a template (look up an email,
cancel the latest pending order, place an order, …; :data:`TEMPLATES`). A part's gold calls form
a chain whose later arguments come from earlier results: a :class:`Ref` names an earlier call of
the task's plan and the path to a value in its JSON result (a :class:`Where` picks a list
element, e.g. the customer of the right city when a name is shared). Generating a task replays
its plan on a fresh copy of the world (:func:`~agentenv.envs.tooluse.world.tools.run_tool`),
which yields the gold calls with concrete arguments, the facts the final answer must state and
the gold final state (τ-bench's check).

Difficulty knobs (:class:`TaskConfig`): the number of gold calls, the number of parts, distractor
tools shown next to the needed ones, the share of lookups by an ambiguous name, and the share of
irrelevance tasks (no tool is needed; any call fails the task).

Splits (deterministic; a task id is ``"{split}-{index}"``):

- ``train`` (unlimited): customers of the world's train entities;
- ``test`` (finite): the same template combinations on the test entities;
- ``compositional`` (finite, test entities): tasks of at least two parts whose templates include
  a *held-out pair* (:data:`HELD_OUT_PAIRS`): every template occurs in train, those pairs never
  do, so the combinations of templates (and tool chains) of this split never occur in train.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

import numpy as np

from agentenv.envs.tooluse.world.db import World, WorldConfig, build_world, state_hash
from agentenv.envs.tooluse.world.tools import MAX_ROWS, TOOLS, WORLD_TOOLS, run_tool
from agentenv.toolcalls import ToolCall

SPLITS: tuple[str, ...] = ("train", "test", "compositional")
_SPLIT_CODE = {"train": 1, "test": 2, "compositional": 3}
_ATTEMPTS = 400


# ---------------------------------------------------------------------------------------------
# Plans: calls whose arguments may refer to earlier results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Where:
    """In a list, the first element whose ``key`` equals ``value``."""

    key: str
    value: Any


@dataclass(frozen=True)
class Ref:
    """The value at ``path`` in the JSON result of call ``step`` of the plan."""

    step: int
    path: tuple[str | int | Where, ...]


@dataclass(frozen=True)
class Fmt:
    """``template.format(*values of refs)``: an argument built from earlier results."""

    template: str
    refs: tuple[Ref, ...]


@dataclass(frozen=True)
class PlanCall:
    """One gold call of a plan: literal arguments, :class:`Ref` or :class:`Fmt` values."""

    name: str
    arguments: tuple[tuple[str, Any], ...]

    def steps(self) -> set[int]:
        """The plan steps this call's arguments depend on."""
        out: set[int] = set()
        for _, value in self.arguments:
            refs = value.refs if isinstance(value, Fmt) else (value,)
            out |= {r.step for r in refs if isinstance(r, Ref)}
        return out


def resolve(value: Any, results: Sequence[Any]) -> Any:
    """``value`` with its references filled from ``results`` (the parsed results of the plan's
    calls so far); :class:`LookupError` when a referenced result is missing or lacks the path."""
    if isinstance(value, Fmt):
        return value.template.format(*(resolve(r, results) for r in value.refs))
    if not isinstance(value, Ref):
        return value
    if value.step >= len(results):
        raise LookupError(f"the result of call {value.step} is not there yet")
    node = results[value.step]
    for key in value.path:
        node = _follow(node, key)
    return node


def _follow(node: Any, key: str | int | Where) -> Any:
    if isinstance(key, Where):
        if isinstance(node, list):
            for item in node:
                if isinstance(item, dict) and item.get(key.key) == key.value:
                    return item
        raise LookupError(f"no element with {key.key} = {key.value!r}")
    if isinstance(key, int) and isinstance(node, list) and -len(node) <= key < len(node):
        return node[key]
    if isinstance(key, str) and isinstance(node, dict) and key in node:
        return node[key]
    raise LookupError(f"no {key!r} in the result")


def resolve_call(call: PlanCall, results: Sequence[Any]) -> ToolCall:
    """The concrete call of ``call`` given the results so far."""
    return ToolCall(call.name, {k: resolve(v, results) for k, v in call.arguments})


# ---------------------------------------------------------------------------------------------
# Tasks and knobs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskConfig:
    """Knobs of task generation (every one has a default).

    Attributes:
        min_calls, max_calls: range of gold calls per task (1 to 12); irrelevance tasks have 0.
        max_parts: most templates combined in one request (1 to 3; ``compositional`` needs 2+).
        distractors: tools shown beyond the ones the task needs (0 to 10).
        ambiguity: probability that a customer is looked up by a name other customers share
            (the request names the city; the lookup returns several customers).
        irrelevance: probability that a ``train``/``test`` task needs no tool at all.
        test_size, compositional_size: tasks of the finite splits.
    """

    min_calls: int = 1
    max_calls: int = 6
    max_parts: int = 3
    distractors: int = 2
    ambiguity: float = 0.3
    irrelevance: float = 0.1
    test_size: int = 500
    compositional_size: int = 300

    def __post_init__(self) -> None:
        if not 1 <= self.min_calls <= self.max_calls <= 12:
            raise ValueError(
                f"need 1 <= min_calls <= max_calls <= 12, got {self.min_calls}, {self.max_calls}"
            )
        if not 1 <= self.max_parts <= 3:
            raise ValueError(f"max_parts must be 1 to 3, got {self.max_parts}")
        if not 0 <= self.distractors <= 10:
            raise ValueError(f"distractors must be 0 to 10, got {self.distractors}")
        for name in ("ambiguity", "irrelevance"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.test_size < 1 or self.compositional_size < 1:
            raise ValueError("test_size and compositional_size must be positive")


@dataclass(frozen=True)
class Task:
    """One request of the tool world.

    Attributes:
        id: ``"{split}-{index}"``.
        split: ``train``, ``test`` or ``compositional``.
        prompt: the user's request (the first observation).
        plan: the gold calls with references to earlier results (what the expert follows).
        answer: what the final answer must state: :class:`Ref` into results, or literal text.
        gold_calls: the plan's calls with concrete arguments, from the replay.
        facts: the answer's strings, from the replay (τ-bench's required outputs).
        gold_state: the state digest after the replay (τ-bench's final-state check).
        tools: names of the tools shown, needed ones and distractors, in display order.
        templates: the templates of the parts, in order (``("irrelevance",)`` for none).
        no_tool: an irrelevance task: success requires making no call.
        ambiguous: lookups by a shared name.
    """

    id: str
    split: str
    prompt: str
    plan: tuple[PlanCall, ...]
    answer: tuple[Any, ...]
    gold_calls: tuple[ToolCall, ...]
    facts: tuple[str, ...]
    gold_state: str
    tools: tuple[str, ...]
    templates: tuple[str, ...]
    no_tool: bool = False
    ambiguous: int = 0

    @property
    def num_calls(self) -> int:
        return len(self.plan)

    def ground_truth(self) -> dict[str, Any]:
        """The reset info's ``ground_truth``: facts, gold calls and the gold state digest."""
        return {
            "facts": list(self.facts),
            "calls": [{"name": c.name, "arguments": c.arguments} for c in self.gold_calls],
            "state": self.gold_state,
        }


# ---------------------------------------------------------------------------------------------
# The world as generation sees it
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Order:
    order_id: str
    customer_id: str
    date: str
    status: str
    total: int
    products: frozenset[str]


@dataclass
class _Catalog:
    customers: dict[str, dict[str, Any]]
    name_matches: dict[str, int]
    orders: dict[str, list[_Order]]  # customer id -> orders, most recent first
    products: dict[str, dict[str, Any]]


@cache
def catalog(config: WorldConfig) -> _Catalog:
    """The world's rows that task generation picks from (read once per world)."""
    world = build_world(config)
    customers = {r["customer_id"]: dict(r) for r in world.query("SELECT * FROM customers")}
    names = [c["name"].lower() for c in customers.values()]
    matches = {c["name"]: sum(c["name"].lower() in n for n in names) for c in customers.values()}
    orders: dict[str, list[_Order]] = {cid: [] for cid in customers}
    rows = world.query(
        "SELECT o.*, SUM(i.quantity * i.unit_price) AS total, GROUP_CONCAT(i.product_id) AS ps "
        "FROM orders o JOIN order_items i USING (order_id) GROUP BY o.order_id "
        "ORDER BY o.date DESC, o.order_id DESC"
    )
    for r in rows:
        order = _Order(
            r["order_id"], r["customer_id"], r["date"], r["status"], r["total"],
            frozenset(r["ps"].split(",")),
        )  # fmt: skip
        orders[r["customer_id"]].append(order)
    products = {
        r["product_id"]: dict(r)
        for r in world.query("SELECT * FROM products JOIN inventory USING (product_id)")
    }
    return _Catalog(customers, matches, orders, products)


@dataclass
class Part:
    """One template instance: its sentence, its calls (steps offset into the task's plan) and
    the answer items it asks for."""

    template: str
    prompt: str
    calls: list[PlanCall]
    answer: list[Any]
    ambiguous: int = 0


@dataclass
class _Context:
    catalog: _Catalog
    rng: np.random.Generator
    entities: str  # "train" or "test"
    ambiguity: float
    offset: int = 0
    customers: set[str] = field(default_factory=set)
    products: set[str] = field(default_factory=set)

    def choice(self, items: Sequence[Any]) -> Any:
        return items[int(self.rng.integers(len(items)))]

    def _matches(self, cid: str) -> int:
        return self.catalog.name_matches[self.catalog.customers[cid]["name"]]

    def customer(self, need: Callable[[str], bool] = lambda cid: True) -> tuple[str, bool] | None:
        """A free customer of the split meeting ``need``: ``(id, looked up ambiguously)``."""
        free = [
            cid
            for cid, c in self.catalog.customers.items()
            if c["split"] == self.entities and cid not in self.customers and need(cid)
        ]
        shared = [c for c in free if 1 < self._matches(c) <= MAX_ROWS]
        unique = [c for c in free if self._matches(c) == 1]
        want_shared = self.rng.random() < self.ambiguity
        pool = (shared or unique) if want_shared else (unique or shared)
        if not pool:
            return None
        cid = self.choice(pool)
        self.customers.add(cid)
        return cid, cid in shared

    def product(self, need: Callable[[dict[str, Any]], bool] = lambda p: True) -> str | None:
        free = [
            pid for pid, p in self.catalog.products.items() if pid not in self.products and need(p)
        ]
        if not free:
            return None
        pid = self.choice(free)
        self.products.add(pid)
        return pid

    def step(self, index: int) -> int:
        """The plan index of the part's call ``index``."""
        return self.offset + index


def _lookup(ctx: _Context, cid: str, ambiguous: bool) -> tuple[str, PlanCall, Ref]:
    """How the request names the customer, the find_customer call and the id's reference."""
    customer = ctx.catalog.customers[cid]
    name, city = customer["name"], customer["city"]
    call = PlanCall("find_customer", (("name", name),))
    if ambiguous:
        return (
            f"{name} from {city}",
            call,
            Ref(ctx.step(0), ("customers", Where("city", city), "customer_id")),
        )
    return name, call, Ref(ctx.step(0), ("customers", 0, "customer_id"))


def _orders(ctx: _Context, cid: str, status: str | None = None) -> list[_Order]:
    orders = ctx.catalog.orders[cid]
    return [o for o in orders if status is None or o.status == status]


def _free_products(ctx: _Context, order: _Order) -> bool:
    return not (order.products & ctx.products)


# ---------------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------------
def order_status(ctx: _Context) -> Part | None:
    found = ctx.customer()
    if found is None:
        return None
    order = ctx.choice(_orders(ctx, found[0]))
    return Part(
        "order_status",
        f"What is the status of order {order.order_id}?",
        [PlanCall("get_order", (("order_id", order.order_id),))],
        [Ref(ctx.step(0), ("status",))],
    )


def customer_email(ctx: _Context) -> Part | None:
    found = ctx.customer()
    if found is None:
        return None
    who, find, cid = _lookup(ctx, *found)
    return Part(
        "customer_email",
        f"What email address do we have on file for {who}?",
        [find, PlanCall("get_customer", (("customer_id", cid),))],
        [Ref(ctx.step(1), ("email",))],
        int(found[1]),
    )


def product_stock(ctx: _Context) -> Part | None:
    pid = ctx.product()
    if pid is None:
        return None
    name = ctx.catalog.products[pid]["name"]
    ref = Ref(ctx.step(0), ("products", Where("name", name), "product_id"))
    return Part(
        "product_stock",
        f"How many units of the {name} do we have in stock?",
        [
            PlanCall("search_products", (("query", name),)),
            PlanCall("get_product", (("product_id", ref),)),
        ],
        [Ref(ctx.step(1), ("stock",))],
    )


def latest_order(ctx: _Context) -> Part | None:
    found = ctx.customer()
    if found is None:
        return None
    who, find, cid = _lookup(ctx, *found)
    return Part(
        "latest_order",
        f"Which is the most recent order of {who}, and what is its status?",
        [find, PlanCall("list_orders", (("customer_id", cid),))],
        [Ref(ctx.step(1), ("orders", 0, "order_id")), Ref(ctx.step(1), ("orders", 0, "status"))],
        int(found[1]),
    )


_CANCEL_REASONS = {"customer_request": "they changed their mind", "duplicate": "it was a duplicate"}
_REFUND_REASONS = {
    "damaged": "arrived damaged",
    "wrong_item": "held the wrong item",
    "not_needed": "is no longer needed",
}


def cancel_pending(ctx: _Context) -> Part | None:
    def ok(cid: str) -> bool:
        pending = _orders(ctx, cid, "pending")
        return bool(pending) and _free_products(ctx, pending[0])

    found = ctx.customer(ok)
    if found is None:
        return None
    ctx.products |= _orders(ctx, found[0], "pending")[0].products
    who, find, cid = _lookup(ctx, *found)
    reason = ctx.choice(sorted(_CANCEL_REASONS))
    listed = PlanCall("list_orders", (("customer_id", cid), ("status", "pending")))
    order = Ref(ctx.step(1), ("orders", 0, "order_id"))
    return Part(
        "cancel_pending",
        f"{who} wants their most recent pending order cancelled because "
        f"{_CANCEL_REASONS[reason]}. Please cancel it and tell me its order id.",
        [find, listed, PlanCall("cancel_order", (("order_id", order), ("reason", reason)))],
        [Ref(ctx.step(2), ("order_id",))],
        int(found[1]),
    )


def refund_delivered(ctx: _Context) -> Part | None:
    found = ctx.customer(lambda cid: bool(_orders(ctx, cid, "delivered")))
    if found is None:
        return None
    order = ctx.choice(_orders(ctx, found[0], "delivered"))
    reason = ctx.choice(sorted(_REFUND_REASONS))
    return Part(
        "refund_delivered",
        f"Order {order.order_id} {_REFUND_REASONS[reason]}. Please refund it and tell me how "
        "much was refunded.",
        [PlanCall("refund_order", (("order_id", order.order_id), ("reason", reason)))],
        [Ref(ctx.step(0), ("refunded",))],
    )


def update_email(ctx: _Context) -> Part | None:
    found = ctx.customer()
    if found is None:
        return None
    who, find, cid = _lookup(ctx, *found)
    first = ctx.catalog.customers[found[0]]["name"].split()[0].lower()
    domain = ctx.choice(["mail.example.org", "post.example.net"])
    email = f"{first}.{int(ctx.rng.integers(100, 1000))}@{domain}"
    return Part(
        "update_email",
        f"{who} has a new email address, {email}. Please update it and tell me their customer id.",
        [find, PlanCall("update_email", (("customer_id", cid), ("email", email)))],
        [Ref(ctx.step(1), ("customer_id",))],
        int(found[1]),
    )


def place_order(ctx: _Context) -> Part | None:
    quantity = int(ctx.rng.integers(1, 4))
    pid = ctx.product(lambda p: p["stock"] >= quantity)
    found = ctx.customer()
    if pid is None or found is None:
        return None
    name = ctx.catalog.products[pid]["name"]
    who, find, cid = _lookup(ctx, *found)
    product = Ref(ctx.step(1), ("products", Where("name", name), "product_id"))
    arguments = (("customer_id", cid), ("product_id", product), ("quantity", quantity))
    return Part(
        "place_order",
        f"{who} would like to order {quantity} x {name}. Please place the order and tell me "
        "the new order id and its total.",
        [find, PlanCall("search_products", (("query", name),)), PlanCall("place_order", arguments)],
        [Ref(ctx.step(2), ("order_id",)), Ref(ctx.step(2), ("total",))],
        int(found[1]),
    )


def refund_credit(ctx: _Context) -> Part | None:
    found = ctx.customer(lambda cid: bool(_orders(ctx, cid, "delivered")))
    if found is None:
        return None
    who, find, cid = _lookup(ctx, *found)
    reason = ctx.choice(sorted(_REFUND_REASONS))
    order = Ref(ctx.step(1), ("orders", 0, "order_id"))
    return Part(
        "refund_credit",
        f"The most recent delivered order of {who} {_REFUND_REASONS[reason]}. Refund it, then "
        "tell me their store credit.",
        [
            find,
            PlanCall("list_orders", (("customer_id", cid), ("status", "delivered"))),
            PlanCall("refund_order", (("order_id", order), ("reason", reason))),
            PlanCall("get_customer", (("customer_id", cid),)),
        ],
        [Ref(ctx.step(3), ("store_credit",))],
        int(found[1]),
    )


def compare_orders(ctx: _Context) -> Part | None:
    first, second = ctx.customer(), ctx.customer()
    if first is None or second is None:
        return None
    a, b = ctx.choice(_orders(ctx, first[0])), ctx.choice(_orders(ctx, second[0]))
    if a.total == b.total:
        return None
    bigger = 0 if a.total > b.total else 1
    return Part(
        "compare_orders",
        f"Which costs more, order {a.order_id} or order {b.order_id}? Tell me its id and total.",
        [
            PlanCall("get_order", (("order_id", a.order_id),)),
            PlanCall("get_order", (("order_id", b.order_id),)),
        ],
        [Ref(ctx.step(bigger), ("order_id",)), Ref(ctx.step(bigger), ("total",))],
    )


def price_quote(ctx: _Context) -> Part | None:
    pid = ctx.product()
    if pid is None:
        return None
    name = ctx.catalog.products[pid]["name"]
    quantity = int(ctx.rng.integers(2, 6))
    price = Ref(ctx.step(0), ("products", Where("name", name), "price"))
    return Part(
        "price_quote",
        f"How much would {quantity} units of the {name} cost in total?",
        [
            PlanCall("search_products", (("query", name),)),
            PlanCall("calculate", (("expression", Fmt(f"{quantity} * {{}}", (price,))),)),
        ],
        [Ref(ctx.step(1), ("result",))],
    )


Template = Callable[[_Context], Part | None]
TEMPLATES: dict[str, Template] = {
    t.__name__: t
    for t in (
        order_status, customer_email, product_stock, latest_order, cancel_pending,
        refund_delivered, update_email, place_order, refund_credit, compare_orders, price_quote,
    )
}  # fmt: skip
"""The templates tasks combine, by name."""
TEMPLATE_CALLS: dict[str, int] = {
    "order_status": 1, "customer_email": 2, "product_stock": 2, "latest_order": 2,
    "cancel_pending": 3, "refund_delivered": 1, "update_email": 2, "place_order": 3,
    "refund_credit": 4, "compare_orders": 2, "price_quote": 2,
}  # fmt: skip
"""Gold calls of each template."""
_ONCE = frozenset({"place_order"})  # new order ids depend on the order of placements


def _held_out(a: str, b: str) -> bool:
    digest = hashlib.sha256(f"held-out:{a}+{b}".encode()).digest()
    return digest[0] < 72


HELD_OUT_PAIRS: frozenset[frozenset[str]] = frozenset(
    frozenset(pair) for pair in itertools.combinations(sorted(TEMPLATES), 2) if _held_out(*pair)
)
"""Template pairs that occur together only in the ``compositional`` split (≈28% of pairs)."""

_CODE_WORDS = ("sunflower", "harbor", "quartz", "meadow", "lantern", "juniper", "comet")
_IRRELEVANT = (
    "Hi! I'm only testing this chat and need nothing looked up. Please reply with the code "
    "word {word}.",
    "Thanks, that was everything for today. No need to check anything: just confirm with the "
    "word {word}.",
    "Before we begin, please repeat the word {word} back to me. Do not look anything up.",
)


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------
def combination_allowed(templates: Sequence[str], split: str) -> bool:
    """Whether a task of these templates belongs to ``split``: no held-out pair in ``train``
    and ``test``, at least one in ``compositional``."""
    pairs = {frozenset(p) for p in itertools.combinations(set(templates), 2)}
    held = bool(pairs & HELD_OUT_PAIRS)
    return held if split == "compositional" else not held


def _combination(rng: np.random.Generator, config: TaskConfig, split: str) -> list[str]:
    names = sorted(TEMPLATES)
    low = 2 if split == "compositional" else 1
    attempts = _ATTEMPTS if low <= config.max_parts else 0
    for _ in range(attempts):
        parts = int(rng.integers(low, config.max_parts + 1))
        picked = [names[i] for i in rng.choice(len(names), size=parts, replace=False)]
        calls = sum(TEMPLATE_CALLS[t] for t in picked)
        if (
            config.min_calls <= calls <= config.max_calls
            and len(_ONCE.intersection(picked)) <= 1
            and combination_allowed(picked, split)
        ):
            return picked
    raise ValueError(
        f"no combination of templates fits split {split!r} with min_calls={config.min_calls}, "
        f"max_calls={config.max_calls}, max_parts={config.max_parts} (compositional tasks "
        "combine 2+ templates)"
    )


def _parts(
    rng: np.random.Generator, config: TaskConfig, split: str, catalog_: _Catalog
) -> list[Part]:
    entities = "train" if split == "train" else "test"
    for _ in range(_ATTEMPTS):
        ctx = _Context(catalog_, rng, entities, config.ambiguity)
        parts = []
        for name in _combination(rng, config, split):
            part = TEMPLATES[name](ctx)
            if part is None:
                break
            parts.append(part)
            ctx.offset += len(part.calls)
        else:
            return parts
    raise ValueError(f"the world has too few free entities for split {split!r}")


def _prompt(parts: Sequence[Part]) -> str:
    if len(parts) == 1:
        return parts[0].prompt
    lines = "\n".join(f"{i}. {p.prompt}" for i, p in enumerate(parts, 1))
    return f"Hello! I need help with {len(parts)} things:\n{lines}\nPlease answer all of them."


def _shown_tools(
    rng: np.random.Generator, needed: Sequence[str], distractors: int
) -> tuple[str, ...]:
    others = sorted(set(TOOLS) - set(needed))
    extra = [
        others[i]
        for i in rng.choice(len(others), size=min(distractors, len(others)), replace=False)
    ]
    shown = sorted(set(needed)) + extra
    return tuple(shown[i] for i in rng.permutation(len(shown)))


def replay(
    world: World, plan: Sequence[PlanCall], answer: Sequence[Any]
) -> tuple[list[ToolCall], list[str], str]:
    """Run ``plan`` on a fresh copy of ``world``: the concrete gold calls, the answer's facts and
    the final state digest. A plan that fails is a generator bug (:class:`RuntimeError`)."""
    conn = world.copy()
    try:
        results: list[Any] = []
        calls: list[ToolCall] = []
        for step in plan:
            call = resolve_call(step, results)
            try:
                results.append(json.loads(run_tool(conn, call.name, call.arguments)))
            except Exception as exc:
                raise RuntimeError(f"gold call {call} failed on replay: {exc}") from exc
            calls.append(call)
        facts = [str(resolve(item, results)) for item in answer]
        return calls, facts, state_hash(conn)
    finally:
        conn.close()


def _irrelevance(
    rng: np.random.Generator, task_id: str, split: str, world: World, config: TaskConfig
) -> Task:
    word = f"{_CODE_WORDS[int(rng.integers(len(_CODE_WORDS)))]}-{int(rng.integers(10, 100))}"
    prompt = _IRRELEVANT[int(rng.integers(len(_IRRELEVANT)))].format(word=word)
    world_tools = sorted(WORLD_TOOLS)
    needed = [world_tools[i] for i in rng.choice(len(world_tools), size=2, replace=False)]
    return Task(
        id=task_id,
        split=split,
        prompt=prompt,
        plan=(),
        answer=(word,),
        gold_calls=(),
        facts=(word,),
        gold_state=world.fingerprint,
        tools=_shown_tools(rng, needed, config.distractors),
        templates=("irrelevance",),
        no_tool=True,
    )


def generate(world_config: WorldConfig, config: TaskConfig, split: str, index: int) -> Task:
    """Task ``index`` of ``split`` (deterministic in the world, the knobs, split and index)."""
    rng = np.random.default_rng([world_config.seed, _SPLIT_CODE[split], index, 11])
    world = build_world(world_config)
    task_id = f"{split}-{index}"
    if split != "compositional" and rng.random() < config.irrelevance:
        return _irrelevance(rng, task_id, split, world, config)
    parts = _parts(rng, config, split, catalog(world_config))
    plan = tuple(c for p in parts for c in p.calls)
    answer = tuple(a for p in parts for a in p.answer)
    calls, facts, state = replay(world, plan, answer)
    return Task(
        id=task_id,
        split=split,
        prompt=_prompt(parts),
        plan=plan,
        answer=answer,
        gold_calls=tuple(calls),
        facts=tuple(facts),
        gold_state=state,
        tools=_shown_tools(rng, [c.name for c in plan], config.distractors),
        templates=tuple(p.template for p in parts),
        ambiguous=sum(p.ambiguous for p in parts),
    )


def split_sizes(config: TaskConfig) -> dict[str, int | None]:
    """``train`` unlimited, ``test`` and ``compositional`` finite."""
    return {"train": None, "test": config.test_size, "compositional": config.compositional_size}


def parse_task_id(task_id: str, config: TaskConfig) -> tuple[str, int]:
    """``(split, index)`` of ``"{split}-{index}"``; :class:`KeyError` naming the form if not."""
    split, _, number = str(task_id).rpartition("-")
    sizes = split_sizes(config)
    if split not in sizes or not number.isdigit():
        raise KeyError(f"unknown task id {task_id!r}; ids are '<split>-<index>', splits {SPLITS}")
    index, size = int(number), sizes[split]
    if size is not None and index >= size:
        raise KeyError(f"task id {task_id!r}: split {split!r} has {size} tasks (0 to {size - 1})")
    return split, index


@lru_cache(maxsize=8192)
def task_by_id(world_config: WorldConfig, config: TaskConfig, task_id: str) -> Task:
    """The task named ``task_id`` (generated once per process and knobs)."""
    split, index = parse_task_id(task_id, config)
    return generate(world_config, config, split, index)


def task_ids(config: TaskConfig, split: str) -> list[str]:
    """Ids of a finite split, in order."""
    size = split_sizes(config)[split]
    if size is None:
        raise ValueError(f"split {split!r} is unlimited")
    return [f"{split}-{i}" for i in range(size)]
