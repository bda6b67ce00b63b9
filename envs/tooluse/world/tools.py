"""The tool world's tools: typed Python functions over a session's database.

Each tool takes the database connection as its first argument ``db`` (hidden from the model:
schemas come from :func:`~agentenv.envs.tooluse.schema.function_tool` with ``skip=("db",)``),
checks its arguments, runs parameterized SQL only (a value is never part of a statement's text,
so ``' OR '1'='1`` is just a name nobody has) and returns a JSON-ready dict. A failure the model
should read raises :class:`~agentenv.envs.tooluse.base.ToolError` with what went wrong and what
to do instead.

:func:`run_tool` is the one way in: it checks the call against the tool's schema, runs the tool
in a transaction (a failing write leaves nothing behind) under a time limit (SQLite's progress
handler aborts a statement past ``timeout`` seconds) and returns the result as compact JSON.

Tools in :data:`WORLD_TOOLS` are what tasks need; :data:`DISTRACTOR_TOOLS` work too but no task
needs them (they are shown to test tool selection).
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from agentenv.envs.tooluse.base import ToolError
from agentenv.envs.tooluse.schema import Tool, check_arguments, function_tool
from agentenv.envs.tooluse.world.db import CATEGORIES, CITIES, TODAY, dollars

MAX_ROWS = 10
"""Most rows a listing tool returns (the rest are counted, not shown)."""
MAX_TEXT = 200
"""Longest string argument a tool accepts."""
MAX_QUANTITY = 10
"""Most units one order may ask for."""
DEFAULT_TIMEOUT = 1.0
"""Seconds one tool call's SQL may run before SQLite interrupts it."""
_PROGRESS_OPS = 200  # SQLite VM instructions between deadline checks

Status = Literal["pending", "shipped", "delivered", "cancelled", "refunded"]
Category = Literal["kitchen", "garden", "office", "toys", "sports", "books"]
CancelReason = Literal["customer_request", "out_of_stock", "duplicate"]
RefundReason = Literal["damaged", "wrong_item", "not_needed"]
_EMAIL = re.compile(r"^[a-z0-9._+-]{1,64}@[a-z0-9-]{1,63}(\.[a-z0-9-]{1,63})+$")


def _text(value: str, what: str) -> str:
    if len(value) > MAX_TEXT:
        raise ToolError(f"{what} is {len(value)} characters long; at most {MAX_TEXT}")
    return value.strip()


def _like(value: str) -> str:
    """A LIKE pattern matching ``value`` anywhere, with ``%``, ``_`` and ``\\`` escaped."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _order_total(db: sqlite3.Connection, order_id: str) -> int:
    (total,) = db.execute(
        "SELECT COALESCE(SUM(quantity * unit_price), 0) FROM order_items WHERE order_id = ?",
        (order_id,),
    ).fetchone()
    return int(total)


def _customer(db: sqlite3.Connection, customer_id: str) -> sqlite3.Row:
    row = db.execute(
        "SELECT * FROM customers WHERE customer_id = ?", (_text(customer_id, "customer_id"),)
    ).fetchone()
    if row is None:
        raise ToolError(
            f"no customer with id {customer_id!r}; ids look like 'C1042' "
            "(find_customer gives a customer's id)"
        )
    return row


def _order(db: sqlite3.Connection, order_id: str) -> sqlite3.Row:
    row = db.execute(
        "SELECT * FROM orders WHERE order_id = ?", (_text(order_id, "order_id"),)
    ).fetchone()
    if row is None:
        raise ToolError(
            f"no order with id {order_id!r}; ids look like 'O5123' "
            "(list_orders gives a customer's orders)"
        )
    return row


def _product(db: sqlite3.Connection, product_id: str) -> sqlite3.Row:
    row = db.execute(
        "SELECT p.*, i.stock FROM products p JOIN inventory i USING (product_id) "
        "WHERE product_id = ?",
        (_text(product_id, "product_id"),),
    ).fetchone()
    if row is None:
        raise ToolError(
            f"no product with id {product_id!r}; ids look like 'P123' "
            "(search_products finds products by name)"
        )
    return row


def _listing(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    out: dict[str, Any] = {key: rows[:MAX_ROWS]}
    if len(rows) > MAX_ROWS:
        out["more"] = len(rows) - MAX_ROWS
    return out


# ---------------------------------------------------------------------------------------------
# Read tools
# ---------------------------------------------------------------------------------------------
def find_customer(db: sqlite3.Connection, name: str, city: str | None = None) -> dict[str, Any]:
    """Find customers by name (case-insensitive, full or partial), optionally in one city.

    Args:
        name: the customer's name or part of it, e.g. "Maria Lopez".
        city: only customers of this city.
    """
    name = _text(name, "name")
    if not name:
        raise ToolError("name is empty; give the customer's name, e.g. 'Maria Lopez'")
    sql = "SELECT customer_id, name, city FROM customers WHERE name LIKE ? ESCAPE '\\'"
    params: list[Any] = [_like(name)]
    if city is not None:
        sql += " AND city = ? COLLATE NOCASE"
        params.append(_text(city, "city"))
    rows = [dict(r) for r in db.execute(sql + " ORDER BY customer_id", params)]
    if not rows:
        where = f" in {city}" if city else ""
        raise ToolError(f"no customer named like {name!r}{where}")
    return _listing(rows, "customers")


def get_customer(db: sqlite3.Connection, customer_id: str) -> dict[str, Any]:
    """Get a customer's details: name, email, city, tier and store credit.

    Args:
        customer_id: the customer's id, e.g. "C1042".
    """
    row = _customer(db, customer_id)
    return {
        "customer_id": row["customer_id"],
        "name": row["name"],
        "email": row["email"],
        "city": row["city"],
        "tier": row["tier"],
        "store_credit": dollars(row["store_credit"]),
    }


def list_orders(
    db: sqlite3.Connection, customer_id: str, status: Status | None = None
) -> dict[str, Any]:
    """List a customer's orders, most recent first.

    Args:
        customer_id: the customer's id, e.g. "C1042".
        status: only orders with this status.
    """
    _customer(db, customer_id)
    sql = "SELECT order_id, date, status FROM orders WHERE customer_id = ?"
    params: list[Any] = [customer_id.strip()]
    if status is not None:
        sql += " AND status = ?"
        params.append(status)
    rows = [dict(r) for r in db.execute(sql + " ORDER BY date DESC, order_id DESC", params)]
    for row in rows:
        row["total"] = dollars(_order_total(db, row["order_id"]))
    return _listing(rows, "orders")


def get_order(db: sqlite3.Connection, order_id: str) -> dict[str, Any]:
    """Get an order: its customer, date, status, items and total.

    Args:
        order_id: the order's id, e.g. "O5123".
    """
    row = _order(db, order_id)
    items = [
        {
            "product_id": r["product_id"],
            "name": r["name"],
            "quantity": r["quantity"],
            "unit_price": dollars(r["unit_price"]),
        }
        for r in db.execute(
            "SELECT i.*, p.name FROM order_items i JOIN products p USING (product_id) "
            "WHERE order_id = ? ORDER BY product_id",
            (row["order_id"],),
        )
    ]
    return {
        "order_id": row["order_id"],
        "customer_id": row["customer_id"],
        "date": row["date"],
        "status": row["status"],
        "items": items,
        "total": dollars(_order_total(db, row["order_id"])),
    }


def search_products(
    db: sqlite3.Connection,
    query: str,
    category: Category | None = None,
    max_price: float | None = None,
) -> dict[str, Any]:
    """Search products by name (case-insensitive, partial match).

    Args:
        query: words of the product's name, e.g. "kettle".
        category: only products of this category.
        max_price: only products costing at most this many dollars.
    """
    query = _text(query, "query")
    sql = "SELECT product_id, name, category, price FROM products WHERE name LIKE ? ESCAPE '\\'"
    params: list[Any] = [_like(query)]
    if category is not None:
        sql += " AND category = ?"
        params.append(category)
    if max_price is not None:
        sql += " AND price <= ?"
        params.append(round(max_price * 100))
    rows = [
        {**dict(r), "price": dollars(r["price"])}
        for r in db.execute(sql + " ORDER BY product_id", params)
    ]
    if not rows:
        raise ToolError(f"no product matches {query!r}; try fewer or shorter words")
    return _listing(rows, "products")


def get_product(db: sqlite3.Connection, product_id: str) -> dict[str, Any]:
    """Get a product's name, category, price and units in stock.

    Args:
        product_id: the product's id, e.g. "P123".
    """
    row = _product(db, product_id)
    return {
        "product_id": row["product_id"],
        "name": row["name"],
        "category": row["category"],
        "price": dollars(row["price"]),
        "stock": row["stock"],
    }


# ---------------------------------------------------------------------------------------------
# Write tools
# ---------------------------------------------------------------------------------------------
def cancel_order(db: sqlite3.Connection, order_id: str, reason: CancelReason) -> dict[str, Any]:
    """Cancel a pending order; its items go back into stock.

    Args:
        order_id: the order's id, e.g. "O5123".
        reason: why the order is cancelled.
    """
    row = _order(db, order_id)
    if row["status"] != "pending":
        raise ToolError(
            f"order {row['order_id']} is {row['status']}; only pending orders can be cancelled"
        )
    for item in db.execute(
        "SELECT product_id, quantity FROM order_items WHERE order_id = ?", (row["order_id"],)
    ).fetchall():
        db.execute(
            "UPDATE inventory SET stock = stock + ? WHERE product_id = ?",
            (item["quantity"], item["product_id"]),
        )
    db.execute("UPDATE orders SET status = 'cancelled' WHERE order_id = ?", (row["order_id"],))
    return {"order_id": row["order_id"], "status": "cancelled", "reason": reason}


def refund_order(db: sqlite3.Connection, order_id: str, reason: RefundReason) -> dict[str, Any]:
    """Refund a delivered order in full, as store credit of its customer.

    Args:
        order_id: the order's id, e.g. "O5123".
        reason: why the order is refunded.
    """
    row = _order(db, order_id)
    if row["status"] != "delivered":
        raise ToolError(
            f"order {row['order_id']} is {row['status']}; only delivered orders can be refunded"
        )
    amount = _order_total(db, row["order_id"])
    db.execute("INSERT INTO refunds VALUES (?, ?, ?)", (row["order_id"], amount, reason))
    db.execute("UPDATE orders SET status = 'refunded' WHERE order_id = ?", (row["order_id"],))
    db.execute(
        "UPDATE customers SET store_credit = store_credit + ? WHERE customer_id = ?",
        (amount, row["customer_id"]),
    )
    return {"order_id": row["order_id"], "status": "refunded", "refunded": dollars(amount)}


def update_email(db: sqlite3.Connection, customer_id: str, email: str) -> dict[str, Any]:
    """Change a customer's email address.

    Args:
        customer_id: the customer's id, e.g. "C1042".
        email: the new address, e.g. "maria@example.org".
    """
    row = _customer(db, customer_id)
    email = _text(email, "email").lower()
    if not _EMAIL.match(email):
        raise ToolError(f"{email!r} is not an email address like 'name@example.org'")
    taken = db.execute(
        "SELECT customer_id FROM customers WHERE email = ? AND customer_id != ?",
        (email, row["customer_id"]),
    ).fetchone()
    if taken is not None:
        raise ToolError(f"{email} is already the address of another customer")
    db.execute("UPDATE customers SET email = ? WHERE customer_id = ?", (email, row["customer_id"]))
    return {"customer_id": row["customer_id"], "email": email}


def place_order(
    db: sqlite3.Connection, customer_id: str, product_id: str, quantity: int
) -> dict[str, Any]:
    """Place a new order of one product for a customer (it starts pending).

    Args:
        customer_id: the customer's id, e.g. "C1042".
        product_id: the product's id, e.g. "P123".
        quantity: units to order, 1 to 10.
    """
    customer = _customer(db, customer_id)
    product = _product(db, product_id)
    if not 1 <= quantity <= MAX_QUANTITY:
        raise ToolError(f"quantity must be 1 to {MAX_QUANTITY}, got {quantity}")
    if product["stock"] < quantity:
        raise ToolError(
            f"only {product['stock']} units of {product['name']} are in stock; "
            f"cannot order {quantity}"
        )
    (number,) = db.execute("SELECT COUNT(*) FROM orders").fetchone()
    order_id = f"O{5000 + number}"
    db.execute(
        "INSERT INTO orders VALUES (?, ?, ?, 'pending')",
        (order_id, customer["customer_id"], TODAY),
    )
    db.execute(
        "INSERT INTO order_items VALUES (?, ?, ?, ?)",
        (order_id, product["product_id"], quantity, product["price"]),
    )
    db.execute(
        "UPDATE inventory SET stock = stock - ? WHERE product_id = ?",
        (quantity, product["product_id"]),
    )
    return {
        "order_id": order_id,
        "status": "pending",
        "total": dollars(quantity * product["price"]),
    }


# ---------------------------------------------------------------------------------------------
# Utilities and distractors
# ---------------------------------------------------------------------------------------------
_OPERATORS: dict[type, Callable[..., float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _evaluate(node: ast.AST, depth: int = 0) -> float:
    if depth > 50:
        raise ToolError("the expression is nested too deeply")
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        if abs(node.value) > 1e12:
            raise ToolError("numbers must be at most 1e12")
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left, depth + 1), _evaluate(node.right, depth + 1)
        if isinstance(node.op, ast.Div) and right == 0:
            raise ToolError("division by zero")
        return _OPERATORS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand, depth + 1))
    raise ToolError("only numbers, + - * / and parentheses are allowed")


def calculate(db: sqlite3.Connection, expression: str) -> dict[str, Any]:
    """Evaluate an arithmetic expression of numbers, + - * / and parentheses.

    Args:
        expression: e.g. "3 * 24.99".
    """
    expression = _text(expression, "expression")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        raise ToolError(f"{expression!r} is not an arithmetic expression") from None
    value = _evaluate(tree.body)
    if abs(value) > 1e12:
        raise ToolError("the result is too large")
    return {"expression": expression, "result": f"{value:.2f}"}


def get_store_hours(db: sqlite3.Connection, city: str) -> dict[str, Any]:
    """Opening hours of the shop's store in a city.

    Args:
        city: the city, e.g. "Lyon".
    """
    city = _text(city, "city").title()
    if city not in CITIES:
        raise ToolError(f"no store in {city!r}; stores: {', '.join(CITIES)}")
    opens = 8 + CITIES.index(city) % 3
    return {"city": city, "hours": f"{opens:02d}:00-{opens + 10:02d}:00"}


def shipping_quote(db: sqlite3.Connection, city: str, weight_kg: float) -> dict[str, Any]:
    """Quote the shipping cost of a parcel to a city.

    Args:
        city: the destination city, e.g. "Lyon".
        weight_kg: the parcel's weight in kilograms (0 to 30).
    """
    city = _text(city, "city").title()
    if city not in CITIES:
        raise ToolError(f"no shipping to {city!r}; cities: {', '.join(CITIES)}")
    if not 0 < weight_kg <= 30:
        raise ToolError(f"weight_kg must be above 0 and at most 30, got {weight_kg}")
    cents = 499 + round(weight_kg * 120) + 50 * CITIES.index(city)
    return {"city": city, "weight_kg": weight_kg, "cost": dollars(cents)}


def list_categories(db: sqlite3.Connection) -> dict[str, Any]:
    """List the product categories."""
    return {"categories": list(CATEGORIES)}


def get_exchange_rate(
    db: sqlite3.Connection, currency: Literal["EUR", "GBP", "JPY"]
) -> dict[str, Any]:
    """The exchange rate of the dollar into another currency (today's fixed rate).

    Args:
        currency: the other currency.
    """
    rates = {"EUR": "0.92", "GBP": "0.79", "JPY": "151.20"}
    return {"currency": currency, "per_dollar": rates[currency]}


@dataclass(frozen=True)
class ToolSpec:
    """A tool of the world: the function, its schema and whether it writes."""

    fn: Callable[..., dict[str, Any]]
    tool: Tool
    writes: bool = False


def _specs(*fns: Callable[..., dict[str, Any]], writes: bool = False) -> dict[str, ToolSpec]:
    return {fn.__name__: ToolSpec(fn, function_tool(fn, skip=("db",)), writes) for fn in fns}


WORLD_TOOLS: dict[str, ToolSpec] = {
    **_specs(find_customer, get_customer, list_orders, get_order, search_products, get_product),
    **_specs(cancel_order, refund_order, update_email, place_order, writes=True),
    **_specs(calculate),
}
DISTRACTOR_TOOLS: dict[str, ToolSpec] = _specs(
    get_store_hours, shipping_quote, list_categories, get_exchange_rate
)
TOOLS: dict[str, ToolSpec] = {**WORLD_TOOLS, **DISTRACTOR_TOOLS}
"""Every tool by name."""


@contextmanager
def time_limit(db: sqlite3.Connection, seconds: float) -> Iterator[None]:
    """Interrupt any statement of ``db`` still running ``seconds`` from now."""
    deadline = time.monotonic() + seconds
    db.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_OPS)
    try:
        yield
    finally:
        db.set_progress_handler(None, 0)


def _not_finite(arguments: Mapping[str, Any]) -> list[str]:
    return [
        f"{key} must be a finite number, got {value!r}"
        for key, value in arguments.items()
        if isinstance(value, float) and not math.isfinite(value)
    ]


def run_tool(
    db: sqlite3.Connection,
    name: str,
    arguments: Mapping[str, Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """Run tool ``name`` on ``db`` and return its result as compact JSON.

    Raises :class:`ToolError` for an unknown tool, arguments its schema refuses, a failure of
    the tool, or a call running past ``timeout`` seconds; a write that fails is rolled back.
    """
    spec = TOOLS.get(name)
    if spec is None:
        raise ToolError(f"unknown tool {name!r}; the tools are: {', '.join(TOOLS)}")
    if not isinstance(arguments, Mapping):
        raise ToolError(f"arguments must be a JSON object, got {type(arguments).__name__}")
    problems = check_arguments(spec.tool, arguments) + _not_finite(arguments)
    if problems:
        raise ToolError(f"bad arguments for {name}: " + "; ".join(problems))
    try:
        with time_limit(db, timeout), db:
            result = spec.fn(db, **arguments)
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            raise ToolError(f"{name} took longer than {timeout:g} s and was stopped") from None
        raise ToolError(f"{name} failed: {exc}") from None
    except sqlite3.Error as exc:
        raise ToolError(f"{name} failed: {exc}") from None
    except UnicodeEncodeError:
        raise ToolError(f"{name}: arguments hold characters that are not valid text") from None
    except (ValueError, OverflowError, ArithmeticError) as exc:
        raise ToolError(f"{name} failed: {exc}") from None
    return json.dumps(result, ensure_ascii=False, separators=(", ", ": "))
