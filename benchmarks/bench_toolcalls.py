"""Tool-call parsing throughput, and what rendering tool turns through the template costs.

Two tables, each with its baseline measured in the same process:

- **parsing**: messages/s and calls/s of each parser family on assistant messages of 1 to 4
  calls (each with a few arguments), against ``json.loads`` of the same calls' JSON — the floor
  any parser that reads JSON pays;
- **between turns**: the ids fed after a turn, rendered by difference through the chat template
  (:func:`agentenv.rollout.between_turns_ids`), for a plain observation and for two tool
  results, against tokenizing the resulting text alone (the part no renderer can skip).

    python benchmarks/bench_toolcalls.py              # writes benchmarks/results/toolcalls.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from report import machine, write_report
from rich.console import Console
from rich.table import Table
from transformers import AutoTokenizer

from agentenv.models import tiny
from agentenv.policies.base import Completion
from agentenv.rollout import between_turns_ids, messages_text
from agentenv.toolcalls import (
    AssistantMessage,
    ToolCall,
    parse_hermes,
    parse_llama3_json,
    parse_pythonic,
)

OUT = Path(__file__).parent / "results" / "toolcalls.json"


def _calls(rng: random.Random) -> list[ToolCall]:
    return [
        ToolCall(
            rng.choice(["lookup_order", "search_products", "refund", "update_address"]),
            {
                "order_id": rng.randrange(10**6),
                "reason": rng.choice(["damaged", "late", "wrong size"]),
                "items": [rng.randrange(100) for _ in range(rng.randrange(1, 4))],
                "notify": rng.random() < 0.5,
            },
        )
        for _ in range(rng.randrange(1, 5))
    ]


def _texts(calls: list[ToolCall]) -> dict[str, str]:
    def args(c: ToolCall) -> str:
        return ", ".join(f"{k}={json.dumps(v)}" for k, v in c.arguments.items())

    return {
        "hermes": "\n".join(
            f"<tool_call>\n{json.dumps({'name': c.name, 'arguments': c.arguments})}\n</tool_call>"
            for c in calls
        ),
        "llama3_json": "; ".join(
            json.dumps({"name": c.name, "parameters": c.arguments}) for c in calls
        ),
        "pythonic": "[" + ", ".join(f"{c.name}({args(c)})" for c in calls) + "]",
        "json.loads (baseline)": json.dumps(
            [{"name": c.name, "arguments": c.arguments} for c in calls]
        ),
    }


def _rate(fn: Callable[[str], Any], texts: list[str], seconds: float) -> float:
    """Texts per second of ``fn`` over ``texts``, repeated for at least ``seconds``."""
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for text in texts:
            fn(text)
        done += len(texts)
    return done / elapsed


def parsing(n: int, seconds: float) -> list[dict[str, Any]]:
    rng = random.Random(0)
    messages = [_calls(rng) for _ in range(n)]
    per_call = sum(map(len, messages)) / n
    parsers = {
        "hermes": parse_hermes,
        "llama3_json": parse_llama3_json,
        "pythonic": parse_pythonic,
        "json.loads (baseline)": json.loads,
    }
    baseline = None
    rows = []
    for name, parse in parsers.items():
        texts = [_texts(m)[name] for m in messages]
        rate = _rate(parse, texts, seconds)
        baseline = rate if name.startswith("json") else baseline
        rows.append({"parser": name, "messages_per_s": rate, "calls_per_s": rate * per_call})
    for row in rows:
        row["x_baseline_time"] = baseline / row["messages_per_s"]
    return rows


def between_turns(seconds: float) -> list[dict[str, Any]]:
    tokenizer = AutoTokenizer.from_pretrained(tiny())
    done = Completion(token_ids=[1], text="", logprobs=[0.0], finish_reason="eos")
    calls = AssistantMessage(
        "", (ToolCall("lookup_order", {"order_id": 1}, "c0"), ToolCall("refund", {}, "c1"))
    )
    cases = {
        "plain observation": (
            [{"role": "user", "content": "Doc 1 (Title: X) some text " * 8}],
            None,
        ),
        "two tool results": (
            [
                {
                    "role": "tool",
                    "tool_call_id": "c0",
                    "content": json.dumps({"order": 1, "status": "shipped"}),
                },
                {"role": "tool", "tool_call_id": "c1", "content": "refunded 12.50"},
            ],
            calls,
        ),
    }
    rows = []
    for name, (messages, assistant) in cases.items():
        text = messages_text(tokenizer, messages, assistant)
        render = _rate(
            lambda _, m=messages, a=assistant: between_turns_ids(tokenizer, m, done, assistant=a),
            ["x"],
            seconds,
        )
        tokenize = _rate(lambda t: tokenizer(t, add_special_tokens=False), [text], seconds)
        rows.append(
            {
                "observation": name,
                "turns_per_s": render,
                "tokenize_only_per_s": tokenize,
                "x_tokenize_time": tokenize / render,
                "microseconds_per_turn": 1e6 / render,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    console = Console()
    parse_rows = parsing(args.messages, args.seconds)
    table = Table("parser", "messages/s", "calls/s", "time × json.loads", title="tool-call parsing")
    for r in parse_rows:
        table.add_row(
            r["parser"],
            f"{r['messages_per_s']:,.0f}",
            f"{r['calls_per_s']:,.0f}",
            f"{r['x_baseline_time']:.2f}",
        )
    console.print(table)
    turn_rows = between_turns(args.seconds)
    table = Table(
        "observation", "turns/s", "µs/turn", "time × tokenizing alone", title="ids between turns"
    )
    for r in turn_rows:
        table.add_row(
            r["observation"],
            f"{r['turns_per_s']:,.0f}",
            f"{r['microseconds_per_turn']:.0f}",
            f"{r['x_tokenize_time']:.2f}",
        )
    console.print(table)
    out = write_report(
        args.out, {"machine": machine(), "parsing": parse_rows, "between_turns": turn_rows}
    )
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
