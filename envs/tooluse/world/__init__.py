"""The executable tool world: a seeded shop database on SQLite (customers, orders, products,
inventory, refunds), typed tools over it, composable multi-call tasks with gold calls found by
replay, τ-bench final-state rewards and ToolRL per-call credit (``tooluse-v0``)."""
