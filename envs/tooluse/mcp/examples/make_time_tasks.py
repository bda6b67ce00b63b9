"""Generate ``time_tasks.jsonl``: seeded timezone-conversion tasks for ``mcp-server-time``.

``convert_time`` converts a wall-clock time *today* in the source zone, so its answer depends on
the date wherever daylight saving time applies. Every zone used here keeps one UTC offset all
year (checked against this machine's tz database, 2024-2035, before anything is written), so a
task's answer (the target's ``HH:MM``) is the same on every day. The date and weekday of the
result do change, and no task asks for them.

Each task's ``check`` requires the exact ``convert_time`` call and a final answer with exactly
one ``HH:MM`` time, the right one. ``gold_calls`` holds the call (for the scripted expert).

    python -m agentenv.envs.tooluse.mcp.examples.make_time_tasks [--n 64] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

OUT = Path(__file__).resolve().parent / "time_tasks.jsonl"
ZONES: dict[str, str] = {
    "UTC": "UTC",
    "Tokyo": "Asia/Tokyo",
    "Kolkata": "Asia/Kolkata",
    "Shanghai": "Asia/Shanghai",
    "Dubai": "Asia/Dubai",
    "Singapore": "Asia/Singapore",
    "Kathmandu": "Asia/Kathmandu",
    "Nairobi": "Africa/Nairobi",
    "Bogota": "America/Bogota",
    "Jakarta": "Asia/Jakarta",
    "Brisbane": "Australia/Brisbane",
    "Phoenix": "America/Phoenix",
    "Honolulu": "Pacific/Honolulu",
    "Karachi": "Asia/Karachi",
    "Lima": "America/Lima",
    "Lagos": "Africa/Lagos",
    "Seoul": "Asia/Seoul",
    "Bangkok": "Asia/Bangkok",
    "Buenos Aires": "America/Argentina/Buenos_Aires",
    "Riyadh": "Asia/Riyadh",
    "Manila": "Asia/Manila",
    "Johannesburg": "Africa/Johannesburg",
    "Sao Paulo": "America/Sao_Paulo",
    "Tehran": "Asia/Tehran",
    "Dhaka": "Asia/Dhaka",
    "Yangon": "Asia/Yangon",
    "Darwin": "Australia/Darwin",
    "Kabul": "Asia/Kabul",
    "Caracas": "America/Caracas",
}
"""City → IANA zone; every zone has one UTC offset all year."""
TEMPLATES = (
    "It is {time} in {src} ({src_tz}). What time is it in {dst} ({dst_tz})?",
    "A call starts at {time} {src} time ({src_tz}). What is the local time in {dst} ({dst_tz})?",
    "Convert {time} from {src_tz} to {dst_tz}.",
    "My flight leaves {src} ({src_tz}) at {time} local time. What time is that in {dst} "
    "({dst_tz})?",
)
ANSWER_FORMAT = " Answer with the time only, as HH:MM (24-hour)."


def fixed_offset(zone: str) -> timedelta:
    """The one UTC offset ``zone`` has from 2024 to 2035; a ``ValueError`` if it has several."""
    info = ZoneInfo(zone)
    offsets = {
        datetime(year, month, day, 12, tzinfo=UTC).astimezone(info).utcoffset()
        for year in range(2024, 2036)
        for month in range(1, 13)
        for day in (1, 15)
    }
    if len(offsets) != 1:
        raise ValueError(f"{zone} changes its UTC offset ({sorted(map(str, offsets))})")
    return offsets.pop()


def answer_regex(hhmm: str) -> str:
    """Exactly one ``H:MM``-like time in the answer, and it is ``hhmm``."""
    return rf"^(?!(?:.*?\d{{1,2}}:\d{{2}}){{2}})(?:.*\D)?{hhmm}(?!\d)"


def make_task(index: int, rng: np.random.Generator, offsets: dict[str, timedelta]) -> dict:
    """Task number ``index`` (the rng draws its cities, time and wording)."""
    src, dst = rng.choice(sorted(ZONES), size=2, replace=False)
    minutes = int(rng.integers(0, 24 * 12)) * 5
    time = f"{minutes // 60:02d}:{minutes % 60:02d}"
    delta = offsets[ZONES[dst]] - offsets[ZONES[src]]
    total = minutes + int(delta.total_seconds() // 60)
    answer = f"{total % 1440 // 60:02d}:{total % 60:02d}"
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    prompt = template.format(time=time, src=src, dst=dst, src_tz=ZONES[src], dst_tz=ZONES[dst])
    call = {
        "name": "convert_time",
        "arguments": {"source_timezone": ZONES[src], "time": time, "target_timezone": ZONES[dst]},
    }
    return {
        "id": f"time-{index:03d}",
        "prompt": prompt + ANSWER_FORMAT,
        "answer": answer,
        "check": {"calls_include": [call], "answer_regex": answer_regex(answer)},
        "gold_calls": [call],
        "tools": ["convert_time"],
        "meta": {"day_shift": total // 1440},
    }


def make_tasks(n: int = 64, seed: int = 0, test_fraction: float = 0.25) -> list[dict]:
    """``n`` tasks; the last ``round(test_fraction * n)`` are the ``test`` split."""
    offsets = {zone: fixed_offset(zone) for zone in ZONES.values()}
    rng = np.random.default_rng(seed)
    n_test = round(test_fraction * n)
    tasks = [make_task(i, rng, offsets) for i in range(n)]
    for i, task in enumerate(tasks):
        task["split"] = "test" if i >= n - n_test else "train"
    return tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    lines = [json.dumps(t, ensure_ascii=False) for t in make_tasks(args.n, args.seed)]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} tasks to {args.out}")


if __name__ == "__main__":
    main()
