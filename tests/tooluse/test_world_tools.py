"""Tool-world tools on a private copy of the world: results, writes, explanatory errors,
schemas from signatures, SQL injection, rollback and the time limit."""

from __future__ import annotations

import json
import sqlite3

import pytest

from agentenv.envs.tooluse.base import ToolError
from agentenv.envs.tooluse.world.db import WorldConfig, build_world, dump, state_hash
from agentenv.envs.tooluse.world.expert import INJECTIONS
from agentenv.envs.tooluse.world.tools import DISTRACTOR_TOOLS, TOOLS, WORLD_TOOLS, run_tool

WORLD = build_world(WorldConfig())


@pytest.fixture
def db() -> sqlite3.Connection:
    conn = WORLD.copy()
    yield conn
    conn.close()


def call(db: sqlite3.Connection, tool: str, /, **arguments) -> dict:
    return json.loads(run_tool(db, tool, arguments))


def one(sql: str, *params) -> sqlite3.Row:
    return WORLD.query(sql, params)[0]


def test_schemas_come_from_signatures_and_hide_the_database() -> None:
    schema = TOOLS["list_orders"].tool.schema()["function"]
    assert schema["name"] == "list_orders"
    assert schema["description"].startswith("List a customer's orders")
    params = schema["parameters"]
    assert params["required"] == ["customer_id"] and params["additionalProperties"] is False
    assert set(params["properties"]) == {"customer_id", "status"}
    assert "db" not in json.dumps([t.tool.schema() for t in TOOLS.values()])
    assert {n for n, t in TOOLS.items() if t.writes} == {
        "cancel_order", "refund_order", "update_email", "place_order",
    }  # fmt: skip
    assert not set(WORLD_TOOLS) & set(DISTRACTOR_TOOLS)


def test_lookups(db) -> None:
    customer = one("SELECT * FROM customers LIMIT 1")
    found = call(db, "find_customer", name=customer["name"].lower())["customers"]
    assert customer["customer_id"] in [c["customer_id"] for c in found]
    got = call(db, "get_customer", customer_id=customer["customer_id"])
    assert got["email"] == customer["email"] and got["store_credit"].count(".") == 1
    orders = call(db, "list_orders", customer_id=customer["customer_id"])["orders"]
    assert [o["date"] for o in orders] == sorted((o["date"] for o in orders), reverse=True)
    order = call(db, "get_order", order_id=orders[0]["order_id"])
    total = sum(i["quantity"] * round(float(i["unit_price"]) * 100) for i in order["items"])
    assert order["total"] == f"{total // 100}.{total % 100:02d}" == orders[0]["total"]
    product = call(db, "search_products", query=order["items"][0]["name"][-4:])["products"]
    assert order["items"][0]["product_id"] in [p["product_id"] for p in product]
    assert isinstance(call(db, "get_product", product_id=product[0]["product_id"])["stock"], int)


def test_a_shared_name_finds_several_customers_and_the_city_narrows_it(db) -> None:
    row = one(
        "SELECT name, MIN(city) AS city FROM customers GROUP BY name HAVING COUNT(*) > 1 LIMIT 1"
    )
    assert len(call(db, "find_customer", name=row["name"])["customers"]) > 1
    (only,) = call(db, "find_customer", name=row["name"], city=row["city"].upper())["customers"]
    assert only["city"] == row["city"]


def test_cancel_restocks_and_only_pending_orders_cancel(db) -> None:
    order = one(
        "SELECT o.order_id, i.product_id, i.quantity FROM orders o JOIN order_items i "
        "USING (order_id) WHERE status = 'pending' LIMIT 1"
    )
    stock = call(db, "get_product", product_id=order["product_id"])["stock"]
    assert call(db, "cancel_order", order_id=order["order_id"], reason="duplicate")["status"] == (
        "cancelled"
    )
    assert (
        call(db, "get_product", product_id=order["product_id"])["stock"]
        == stock + order["quantity"]
    )
    with pytest.raises(ToolError, match="is cancelled; only pending orders can be cancelled"):
        run_tool(db, "cancel_order", {"order_id": order["order_id"], "reason": "duplicate"})


def test_refund_credits_the_customer_once(db) -> None:
    order = one("SELECT order_id, customer_id FROM orders WHERE status = 'delivered' LIMIT 1")
    before = call(db, "get_customer", customer_id=order["customer_id"])["store_credit"]
    refunded = call(db, "refund_order", order_id=order["order_id"], reason="damaged")["refunded"]
    after = call(db, "get_customer", customer_id=order["customer_id"])["store_credit"]
    assert round(float(after) - float(before), 2) == float(refunded)
    with pytest.raises(ToolError, match="only delivered orders can be refunded"):
        run_tool(db, "refund_order", {"order_id": order["order_id"], "reason": "damaged"})


def test_place_order_checks_stock_and_numbers_orders(db) -> None:
    customer = one("SELECT customer_id FROM customers LIMIT 1")["customer_id"]
    product = one("SELECT product_id, stock FROM inventory WHERE stock BETWEEN 2 AND 9 LIMIT 1")
    (count,) = db.execute("SELECT COUNT(*) FROM orders").fetchone()
    placed = call(db, "place_order", customer_id=customer, product_id=product[0], quantity=2)
    assert placed["order_id"] == f"O{5000 + count}" and placed["status"] == "pending"
    left = call(db, "get_product", product_id=product[0])["stock"]
    assert left == product["stock"] - 2
    with pytest.raises(ToolError, match=f"only {left} units"):
        run_tool(
            db, "place_order", {"customer_id": customer, "product_id": product[0], "quantity": 10}
        )
    with pytest.raises(ToolError, match="quantity must be 1 to 10"):
        run_tool(
            db, "place_order", {"customer_id": customer, "product_id": product[0], "quantity": 0}
        )


def test_update_email_validates(db) -> None:
    a, b = WORLD.query("SELECT customer_id, email FROM customers LIMIT 2")
    assert call(db, "update_email", customer_id=a[0], email="New.Me@Example.org")["email"] == (
        "new.me@example.org"
    )
    with pytest.raises(ToolError, match="is not an email address"):
        run_tool(db, "update_email", {"customer_id": a[0], "email": "nope"})
    with pytest.raises(ToolError, match="already the address of another customer"):
        run_tool(db, "update_email", {"customer_id": a[0], "email": b["email"]})


@pytest.mark.parametrize(
    ("expression", "expected"), [("3 * 24.99", "74.97"), ("(1 + 2) / 4", "0.75"), ("-2--3", "1.00")]
)
def test_calculate(db, expression: str, expected: str) -> None:
    assert call(db, "calculate", expression=expression)["result"] == expected


@pytest.mark.parametrize(
    "expression",
    ["__import__('os').system('true')", "2 ** 10", "1 / 0", "9" * 30, "x + 1", "(" * 150 + "1"],
)
def test_calculate_refuses_anything_but_arithmetic(db, expression: str) -> None:
    with pytest.raises(ToolError):
        run_tool(db, "calculate", {"expression": expression})


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("no_such_tool", {}, "unknown tool 'no_such_tool'; the tools are: find_customer"),
        ("get_order", {}, "missing required argument 'order_id'"),
        ("get_order", {"order_id": 5001}, "order_id must be string, got integer 5001"),
        ("get_order", {"order_id": "O5001", "x": 1}, "unexpected argument 'x'"),
        ("list_orders", {"customer_id": "C1000", "status": "lost"}, "status matches none"),
        ("get_order", {"order_id": "O1"}, "no order with id 'O1'; ids look like 'O5123'"),
        ("get_customer", {"customer_id": "x" * 500}, "at most 200"),
        ("search_products", {"query": "kettle", "max_price": float("nan")}, "finite number"),
        ("place_order", {"customer_id": "C1000", "product_id": "P100", "quantity": 2.5}, "integer"),
        ("shipping_quote", {"city": "Atlantis", "weight_kg": 1}, "no shipping to 'Atlantis'"),
    ],
)
def test_bad_calls_explain_themselves(db, name: str, arguments: dict, message: str) -> None:
    with pytest.raises(ToolError, match=message.replace("(", r"\(").replace("'", "'")):
        run_tool(db, name, arguments)
    assert state_hash(db) == WORLD.fingerprint


@pytest.mark.parametrize("attack", INJECTIONS)
def test_sql_injection_through_arguments_is_just_text(db, attack: str) -> None:
    for name, key in [
        ("find_customer", "name"),
        ("get_customer", "customer_id"),
        ("get_order", "order_id"),
        ("search_products", "query"),
        ("list_orders", "customer_id"),
        ("cancel_order", "order_id"),
    ]:
        arguments = {key: attack, **({"reason": "duplicate"} if name == "cancel_order" else {})}
        try:
            result = run_tool(db, name, arguments)
        except ToolError as exc:
            assert "no " in str(exc) or "empty" in str(exc)
        else:  # a LIKE search for "%" or "_" matches the literal character only
            assert name in ("find_customer", "search_products") and attack in ("%", "_")
            raise AssertionError(f"{name}({attack!r}) matched: {result[:100]}")
    assert state_hash(db) == WORLD.fingerprint
    assert {t: len(rows) for t, rows in dump(db).items()} == {
        t: len(rows) for t, rows in dump(WORLD.template).items()
    }


def test_a_write_that_fails_midway_is_rolled_back(db) -> None:
    order = one(
        "SELECT order_id FROM orders WHERE status = 'pending' AND order_id IN "
        "(SELECT order_id FROM order_items GROUP BY order_id HAVING COUNT(*) > 1) LIMIT 1"
    )["order_id"]
    db.execute(
        "CREATE TRIGGER boom BEFORE UPDATE OF status ON orders "
        "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    before = state_hash(db)
    with pytest.raises(ToolError, match="cancel_order failed: disk on fire"):
        run_tool(db, "cancel_order", {"order_id": order, "reason": "duplicate"})
    assert state_hash(db) == before  # the restocks before the failing update are undone


def test_a_call_past_its_time_limit_is_stopped(db) -> None:
    with pytest.raises(ToolError, match="took longer than 1e-06 s and was stopped"):
        run_tool(db, "search_products", {"query": "a"}, timeout=1e-6)
    assert call(db, "search_products", query="a")["products"]


def test_copies_of_the_world_never_share_writes() -> None:
    a, b = WORLD.copy(), WORLD.copy()
    order = one("SELECT order_id FROM orders WHERE status = 'delivered' LIMIT 1")["order_id"]
    run_tool(a, "refund_order", {"order_id": order, "reason": "damaged"})
    assert json.loads(run_tool(b, "get_order", {"order_id": order}))["status"] == "delivered"
    assert state_hash(b) == WORLD.fingerprint == state_hash(WORLD.template) != state_hash(a)
