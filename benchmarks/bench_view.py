"""The trajectory viewer on a 10,000-episode evaluation run, in headless Chromium.

The run is synthetic but written by agentenv's own writers (``evaluate.result_row`` with
``transcript.build_transcript``, token text decoded by the tiny model's tokenizer): episodes of
1–5 turns, a 200-token prompt, 20–60-token actions and 60–200-token observations, about 10 KB a
row. Measured:

- index: :func:`agentenv.view.runs.open_run` in this process (summaries read up to the
  transcripts);
- served open: from spawning ``agentenv.view.app`` under uvicorn on 127.0.0.1 (a fresh Python
  process: imports, index, health) to the first page of the episode list rendered in the browser
  (the browser started beforehand);
- episode open: from clicking a row to its chat and tokens rendered (the one transcript read);
- paging: five pages of the list, with the number of transcripts fetched meanwhile (none: the
  list needs only summaries);
- HTML export: time and size of ``--html`` with every episode embedded, and its open time from
  disk to the first page rendered.

    python benchmarks/bench_view.py [--episodes 10000] [--repeat 3]

Prints a table and writes ``benchmarks/results/view.json``. Needs Debian's chromium and
chromium-driver (``scripts/browser.sh``) and the dev extra (selenium).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from report import machine, write_report
from rich.console import Console
from rich.table import Table
from selenium.webdriver.common.by import By
from transformers import AutoTokenizer

from agentenv.evaluate import result_row
from agentenv.launch import LocalServer
from agentenv.models import tiny
from agentenv.trajectory import Trajectory, Turn
from agentenv.transcript import build_transcript
from agentenv.view.app import FACTORY
from agentenv.view.export import export_html
from agentenv.view.runs import open_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.view import browser as web  # noqa: E402  (the browser helper of the viewer's tests)

DISTINCT = 200
"""Distinct transcripts; rows reuse them with their own ids, rewards and outcomes."""

WORDS = [
    "search",
    "answer",
    "the",
    "capital",
    "of",
    "mayor",
    "employer",
    "document",
    "river",
    "founded",
    "city",
    "museum",
    "born",
    "library",
    "Kelvaria",
    "Druceil",
    "Bousoudrix",
    "information",
    "query",
    "result",
    "title",
    "page",
    "first",
    "second",
]


# ---------------------------------------------------------------------------------------------
# the synthetic run
# ---------------------------------------------------------------------------------------------
def synthetic_trajectory(rng: np.random.Generator, vocab: int) -> Trajectory:
    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS, size=n))

    traj = Trajectory("t", "g", "search-v0", "task", seed=0)
    traj.messages = [
        {"role": "system", "content": text(90)},
        {"role": "user", "content": "Question: " + text(14)},
    ]
    traj.append_tokens(rng.integers(3, vocab, 200).tolist(), trainable=False, turn=-1)
    for turn in range(int(rng.integers(1, 6))):
        action, observation = int(rng.integers(20, 61)), int(rng.integers(60, 201))
        traj.append_tokens(
            rng.integers(3, vocab, action).tolist(),
            trainable=True,
            turn=turn,
            logprobs=(-rng.exponential(2.0, action)).tolist(),
        )
        traj.append_tokens(rng.integers(3, vocab, observation).tolist(), trainable=False, turn=turn)
        traj.messages += [
            {"role": "assistant", "content": f"<search> {text(action // 3)} </search>"},
            {"role": "user", "content": f"<information> {text(observation // 2)} </information>"},
        ]
        traj.turns.append(
            Turn(turn, "", "", 0.0, {"format": 0.0, "retrieval_hit": 0.0}, True, ("search", turn))
        )
    return traj


def write_run(folder: Path, episodes: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    tokenizer = AutoTokenizer.from_pretrained(tiny())
    pool = [synthetic_trajectory(rng, len(tokenizer)) for _ in range(DISTINCT)]
    transcripts = [build_transcript(t, tokenizer) for t in pool]
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "results.jsonl").open("w") as f:
        for i in range(episodes):
            k = i % DISTINCT
            traj = pool[k]
            traj.seed, traj.task_id = 1_000_000 + i // 4, f"test-{i // 4}"
            traj.group_id = f"search-v0:test-{i // 4}"
            success = bool(rng.random() < 0.3)
            traj.success, traj.status = success, "done" if rng.random() < 0.8 else "truncated"
            traj.reason = "" if traj.status == "done" else "max_turns"
            traj.turns[-1].reward = float(success)
            row = result_row(traj, i % 4, float(i) / 100, transcripts[k])
            f.write(json.dumps(row) + "\n")
    return folder


# ---------------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------------
def first_page(driver, url: str) -> float:
    """Seconds from asking for ``url`` to the first page of the list rendered."""
    start = time.perf_counter()
    driver.get(url)
    web.wait_for(lambda: len(web.rows(driver)) == 100, "the first page", timeout=120)
    return time.perf_counter() - start


def served_open(driver, run: Path) -> dict[str, float]:
    start = time.perf_counter()
    server = LocalServer(FACTORY, {"source": str(run)}).start()
    healthy = time.perf_counter() - start
    try:
        page = first_page(driver, server.url + "/")
        opened = time.perf_counter() - start
        click = time.perf_counter()
        web.rows(driver)[3].click()
        web.wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".tok"), "an episode")
        episode = time.perf_counter() - click
        driver.get(server.url + "/#/list")
        web.wait_for(lambda: len(web.rows(driver)) == 100, "the list")
        before = episode_requests(driver)
        paging = []
        for _ in range(5):
            first = web.rows(driver)[0].text
            t0 = time.perf_counter()
            driver.find_element(By.ID, "next-page").click()
            web.wait_for(lambda first=first: web.rows(driver)[0].text != first, "the next page")
            paging.append(time.perf_counter() - t0)
        fetched = episode_requests(driver) - before
    finally:
        server.stop()
    return {
        "server_healthy_s": healthy,
        "first_page_s": page,
        "open_s": opened,
        "episode_open_s": episode,
        "next_page_s": statistics.median(paging),
        "transcripts_fetched_while_paging": fetched,
    }


def episode_requests(driver) -> int:
    return driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter((e) => e.name.includes('/api/episodes/')).length"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "view.json"))
    args = parser.parse_args()
    if web.missing():
        raise SystemExit(web.missing())
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_run(Path(tmp) / "run", args.episodes)
        size = (folder / "results.jsonl").stat().st_size
        index = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            run = open_run(folder)
            index.append(time.perf_counter() - t0)
        driver = web.start_browser()
        try:
            served = [served_open(driver, folder) for _ in range(args.repeat)]
            t0 = time.perf_counter()
            export = export_html(run, Path(tmp) / "run.html")
            export_s = time.perf_counter() - t0
            static = [first_page(driver, export.path.as_uri()) for _ in range(args.repeat)]
        finally:
            driver.quit()

    def median(key: str) -> float:
        return statistics.median(s[key] for s in served)

    results = {
        "episodes": args.episodes,
        "results_jsonl_mb": size / 1e6,
        "index_s": statistics.median(index),
        "served": {key: median(key) for key in served[0]},
        "served_runs": served,
        "export": {
            "seconds": export_s,
            "mb": export.bytes / 1e6,
            "embedded": export.embedded,
            "open_s": statistics.median(static),
        },
    }
    table = Table(title=f"agentenv view: {args.episodes:,} episodes ({size / 1e6:.0f} MB of rows)")
    table.add_column("measure")
    table.add_column("median", justify="right")
    rows = [
        ("index the run (open_run, in process)", f"{results['index_s']:.2f} s"),
        ("server start → healthy (fresh process)", f"{median('server_healthy_s'):.2f} s"),
        ("server start → first page rendered", f"{median('open_s'):.2f} s"),
        ("  of which the page (request → 100 rows)", f"{median('first_page_s'):.2f} s"),
        ("click → episode rendered", f"{median('episode_open_s'):.3f} s"),
        ("next page of the list", f"{median('next_page_s'):.3f} s"),
        ("transcripts fetched over 5 pages", str(median("transcripts_fetched_while_paging"))),
        ("HTML export (all episodes embedded)", f"{export_s:.1f} s, {export.bytes / 1e6:.1f} MB"),
        ("HTML export: file open → first page rendered", f"{results['export']['open_s']:.2f} s"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    results["machine"] = machine()
    console.print(f"wrote {write_report(args.out, results)}")


if __name__ == "__main__":
    main()
